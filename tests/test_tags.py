"""Tags and summaries from hand-written captions in the captioner's register."""

from __future__ import annotations

import pytest

from mediasearch.indexing.tags import TagCount, aggregate_tags, extract_tags, singularise, summarise


def test_keywords_drop_stop_words_boilerplate_and_short_words() -> None:
    assert extract_tags("A picture of a cat sitting on a bed next to an old TV.") == [
        "cat",
        "bed",
        "old",
        "tv",
        "old tv",
    ]
    assert extract_tags("a close up of an image of a photo") == []
    assert extract_tags("") == []


def test_bigrams_are_adjacent_surviving_words_within_a_clause() -> None:
    tags = extract_tags("a man holding a tennis racket on a tennis court")
    assert tags == ["man", "tennis", "racket", "court", "tennis racket", "tennis court"]
    # A stop word or punctuation between two words breaks the phrase.
    assert "red blue" not in extract_tags("a red, blue car")
    assert "car street" not in extract_tags("a car on a street")
    # A verb after a noun is not a phrase's end; before one it is an adjective.
    assert extract_tags("a red car parked on the side of a street") == [
        "red",
        "car",
        "parked",
        "street",
        "red car",
    ]
    assert "parking lot" in extract_tags("a stuffed animal in a parking lot")
    assert "office building" in extract_tags("an office building")
    assert "man riding" not in extract_tags("a man riding a horse")


def test_plurals_are_singularised_conservatively() -> None:
    assert extract_tags("two dogs and three puppies near benches, boxes and buses") == [
        "dog",
        "puppy",
        "bench",
        "box",
        "bus",
    ]
    for plural, singular in {
        "dogs": "dog",
        "leaves": "leaf",
        "men": "man",
        "movies": "movie",
        "shoes": "shoe",
        "horses": "horse",
    }.items():
        assert singularise(plural) == singular
    for word in ("glass", "grass", "bus", "tennis", "cactus", "glasses", "people", "sports"):
        assert singularise(word) == word


def test_possessives_and_quantities() -> None:
    assert extract_tags("the man's hat") == ["man", "hat", "man hat"]
    assert extract_tags("a lot of people on a beach") == ["people", "beach"]
    assert extract_tags("a bunch of bananas") == ["banana"]


def test_each_tag_is_listed_once() -> None:
    assert extract_tags("a dog and a dog and dogs") == ["dog"]


CAPTIONS = [
    "a man riding a wave on top of a surfboard",
    "a man riding a surfboard on a wave",
    "a surfer riding a wave in the ocean",
    "a beach with people and umbrellas",
    "a man riding a wave on top of a surfboard",
]


def test_aggregate_counts_each_tag_once_per_frame() -> None:
    counts = aggregate_tags(["a dog and a dog and another dog", "a cat"], min_frames=1)
    assert TagCount(tag="dog", frames=1) in counts
    assert aggregate_tags(CAPTIONS) == [
        TagCount(tag="riding", frames=4),
        TagCount(tag="wave", frames=4),
        TagCount(tag="man", frames=3),
        TagCount(tag="surfboard", frames=3),
    ]


def test_aggregate_threshold_top_n_and_ties() -> None:
    assert [t.tag for t in aggregate_tags(CAPTIONS, min_frames=4)] == ["riding", "wave"]
    # Ties are alphabetical: riding and wave both have 4 frames.
    assert [t.tag for t in aggregate_tags(CAPTIONS, top_n=1)] == ["riding"]
    assert aggregate_tags(CAPTIONS, top_n=0) == []
    everything = aggregate_tags(CAPTIONS, top_n=100, min_frames=1)
    assert [t.frames for t in everything] == sorted((t.frames for t in everything), reverse=True)
    assert {"beach", "umbrella", "ocean", "surfer"} <= {t.tag for t in everything}
    with pytest.raises(ValueError):
        aggregate_tags(CAPTIONS, min_frames=0)


def test_aggregate_with_fewer_frames_than_the_threshold_needs_all_of_them() -> None:
    assert [t.tag for t in aggregate_tags(["a red car"], min_frames=2)] == ["car", "red", "red car"]
    assert aggregate_tags([]) == []


def test_summary_is_the_most_representative_caption() -> None:
    tags = aggregate_tags(CAPTIONS)
    # Both surfboard captions cover all four top tags; the one in two frames wins.
    assert summarise(CAPTIONS, tags) == "A man riding a wave on top of a surfboard."


def test_summary_adds_a_second_caption_only_for_new_topics() -> None:
    captions = ["a dog on a beach", "a dog running on a beach", "a red kite in the sky", "a kite in the sky"]
    tags = aggregate_tags(captions)
    assert [t.tag for t in tags] == ["beach", "dog", "kite", "sky"]
    # The two kite captions tie on tags and frames: the earlier one is taken.
    assert summarise(captions, tags) == "A dog on a beach. A red kite in the sky."
    assert summarise(captions, tags, max_captions=1) == "A dog on a beach."
    # Plain strings work as tags too, and duplicates differing in case or spacing count as one.
    assert summarise(["A dog  on a beach.", "a dog on a beach"], ["dog"]) == "A dog on a beach."


def test_summary_of_nothing_is_empty() -> None:
    assert summarise([], []) == ""
    assert summarise(["", "  "], []) == ""
    assert summarise(["a cat"], []) == "A cat."
