"""Tags and a one-line summary from image captions, with word lists instead of an NLP model.

Captioners write in a small, formulaic register ("a man riding a wave on top of a surfboard"), so a
stop-word list that also knows the captions' boilerplate (counts, positions, postures, "picture of")
leaves mostly the nouns, colours and activities worth searching for. Bigrams are two surviving words
that stood next to each other, which in that register are noun phrases: "red car", "tennis racket".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# English function words, then the captioner boilerplate that would otherwise top every video's tags.
STOP_WORDS: frozenset[str] = _words(
    """
    a an the and or but nor so yet of with without on in at to for from by into onto upon over under
    near next beside besides behind above below between among around across along through toward
    towards against about inside outside off out up down away together while during before after
    is are was were be been being am has have had having do does did doing can could will would
    shall should may might must it its this that these those there here where when what which
    who whom whose why how he she they them him her his hers their theirs our ours your yours my mine
    we you i me us one ones some any each every all both either neither other another such same
    own very too also just only even still then than not no yes
    two three four five six seven eight nine ten dozen several many much more most few lots bunch
    group groups couple pair various different assorted
    image images picture pictures photo photos photograph photographs shot view close closeup
    top bottom front back side middle edge end corner center centre area background foreground
    something thing things stuff item items object objects way kind type sort piece pieces
    sitting sits sit standing stands stand laying lays lay lying lies holding holds hold looking
    looks look posing poses pose using uses wearing wears shown seen displayed sitting filled
    covered made full appears seems
    large small big little huge tiny
    """
)

# Words whose final "s" is not a plural, or whose plural is the usual name for the thing.
_KEEP_AS_IS: frozenset[str] = _words(
    """
    glasses sunglasses jeans pants shorts trousers scissors goggles binoculars clothes stairs
    sports news series species physics electronics christmas canvas atlas gas bus lens
    tennis chess people police cattle sheep fish deer
    """
)
_IRREGULAR: dict[str, str] = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "geese": "goose",
    "mice": "mouse",
    "oxen": "ox",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "leaves": "leaf",
    "loaves": "loaf",
    "shelves": "shelf",
    "wolves": "wolf",
    "calves": "calf",
    "halves": "half",
    "scarves": "scarf",
    "buses": "bus",
    "gases": "gas",
    "lenses": "lens",
    "canvases": "canvas",
    "tomatoes": "tomato",
    "potatoes": "potato",
    "heroes": "hero",
    "volcanoes": "volcano",
    "mangoes": "mango",
    # "-ches" whose singular keeps the "e".
    "headaches": "headache",
    "niches": "niche",
    "caches": "cache",
    "moustaches": "moustache",
    "mustaches": "mustache",
    "quiches": "quiche",
    "avalanches": "avalanche",
}
# "-ies" words whose singular ends in "-ie", not "-y".
_IE_PLURALS: frozenset[str] = _words(
    "movies cookies brownies zombies selfies pies ties goalies hoodies smoothies veggies calories"
)
# Long "-ing" words that are nouns, so they may end a noun phrase ("office building").
_ING_NOUNS: frozenset[str] = _words(
    """
    building buildings ceiling clothing painting paintings wedding pudding evening morning icing
    railing frosting topping toppings stuffing awning awnings bedding seasoning dumpling dumplings
    """
)
# Long "-ed" words that are nouns ("a truck with a flatbed").
_ED_NOUNS: frozenset[str] = _words("flatbed flatbeds seabed sunbed sunbeds daybed hundred")
_SHORT_TAGS: frozenset[str] = frozenset({"tv"})

# Punctuation ends a phrase: no bigram is made across it.
_CLAUSE_BREAK = re.compile(r"[.,;:!?()\[\]{}\"/|&]+")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Quantities are boilerplate, but "lot" alone is a noun ("parking lot"), so the phrase goes first.
_QUANTITY = re.compile(r"\b(?:a lot|lots|a bunch|a group|a couple|a pair|a number|a variety) of\b")


class TagCount(BaseModel):
    """A tag and the number of frames (captions) that carry it."""

    model_config = ConfigDict(frozen=True)

    tag: str
    frames: int


def singularise(word: str) -> str:
    """Plural to singular for the regular cases, leaving anything doubtful alone."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _KEEP_AS_IS or len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-1] if word in _IE_PLURALS else word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    return word[:-1] if word.endswith("s") else word


def _keep(word: str) -> bool:
    if word in STOP_WORDS:
        return False
    if word in _SHORT_TAGS:
        return True
    return len(word) >= 3 and not word.isdigit()


def _ends_phrase(word: str) -> bool:
    """Can this word end a noun phrase? After a noun, "-ing" and "-ed" words are verbs ("man riding",
    "car parked"), unless they are known nouns; before one they are adjectives ("parking lot")."""
    if len(word) <= 5:
        return True
    if word.endswith("ing"):
        return word in _ING_NOUNS
    if word.endswith("ed"):
        return word in _ED_NOUNS
    return True


def extract_tags(caption: str) -> list[str]:
    """Keywords, then two-word phrases, of one caption; lowercase, singular, each once, in caption order."""
    unigrams: list[str] = []
    bigrams: list[str] = []
    text = _QUANTITY.sub(" ", caption.lower().replace("\u2019", "'"))
    for clause in _CLAUSE_BREAK.split(text):
        # A possessive is its noun ("man's hat" -> man, hat); other apostrophes join ("don't" -> dont).
        words = [w.removesuffix("'s").replace("'", "") for w in _WORD.findall(clause)]
        previous: str | None = None
        for raw in words:
            if not _keep(raw):
                previous = None
                continue
            word = singularise(raw)
            unigrams.append(word)
            if previous is not None and _ends_phrase(raw):
                bigrams.append(f"{previous} {word}")
            previous = word
    return list(dict.fromkeys(unigrams + bigrams))


def aggregate_tags(frame_captions: Sequence[str], top_n: int = 10, min_frames: int = 2) -> list[TagCount]:
    """The tags carried by at least `min_frames` captions, most frames first, ties alphabetical.

    A tag counts once per frame however often its caption repeats it. With fewer captions than
    `min_frames` (a one-scene video, a single image) a tag must be in all of them instead, so short
    videos still get tags.
    """
    if top_n < 0 or min_frames < 1:
        raise ValueError(f"need top_n >= 0 and min_frames >= 1, got top_n={top_n}, min_frames={min_frames}")
    counts: Counter[str] = Counter()
    for caption in frame_captions:
        counts.update(set(extract_tags(caption)))
    needed = max(1, min(min_frames, len(frame_captions)))
    kept = sorted((item for item in counts.items() if item[1] >= needed), key=lambda kv: (-kv[1], kv[0]))
    return [TagCount(tag=tag, frames=n) for tag, n in kept[:top_n]]


def _weights(tags: Iterable[TagCount | str]) -> dict[str, float]:
    """Frames per tag; plain strings are taken as ranked, the first weighing a little more."""
    ranked = list(tags)
    weights: dict[str, float] = {}
    for i, t in enumerate(ranked):
        if isinstance(t, TagCount):
            weights[t.tag] = float(t.frames)
        else:
            weights[t] = 1.0 + (len(ranked) - i) / (len(ranked) + 1)
    return weights


def _sentence(caption: str) -> str:
    text = caption.rstrip(" .")
    return text[:1].upper() + text[1:] + "."


def summarise(captions: Sequence[str], tags: Sequence[TagCount | str], max_captions: int = 2) -> str:
    """A short summary of a video: its most representative caption, and a second one if it adds topics.

    A caption is representative when its tags cover the video's top tags, weighted by how many frames
    carry each; ties go to the caption repeated in most frames, then to the earliest. A further caption
    is added only when it covers top tags the chosen ones miss.
    """
    cleaned = [" ".join(c.split()) for c in captions]
    occurrences = Counter(c.lower() for c in cleaned if c)
    first_spelling: dict[str, str] = {}
    for c in cleaned:
        if c:
            first_spelling.setdefault(c.lower(), c)
    distinct = list(first_spelling.values())
    if not distinct:
        return ""
    position = {c: i for i, c in enumerate(distinct)}
    weights = _weights(tags)
    covers = {c: set(extract_tags(c)) & weights.keys() for c in distinct}
    chosen: list[str] = []
    covered: set[str] = set()
    while len(chosen) < max(1, max_captions):
        candidates = [c for c in distinct if c not in chosen]
        if not candidates:
            break
        best = max(
            candidates,
            key=lambda c: (
                sum(weights[t] for t in covers[c] - covered),
                occurrences[c.lower()],
                -position[c],
            ),
        )
        if chosen and not covers[best] - covered:
            break
        chosen.append(best)
        covered |= covers[best]
    return " ".join(_sentence(c) for c in chosen)
