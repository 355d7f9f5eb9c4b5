"""The query side's speed features: the query-text vector cache and the `Server-Timing` header."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.settings import ClipEngine, Settings
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from mediasearch.query.text_cache import TextVectorCache
from mediasearch.query.timing import PHASES, parse_header
from tests.conftest import small_corpus


class CountingModel:
    """A real model whose text forwards are counted: every call still runs the model."""

    def __init__(self, model: ClipModel) -> None:
        self.model = model
        self.text_calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += 1
        return self.model.embed_texts(texts)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> ClipModel:
    # Another seed: other weights, so another identity and other vectors.
    folder = build_random_clip(tmp_path_factory.mktemp("other") / "clip", size="tiny", seed=1)
    return ClipModel(str(folder), device="cpu").load()


def test_a_hit_returns_the_same_vector_without_running_the_model(clip_model: ClipModel) -> None:
    counting = CountingModel(clip_model)
    encoder = LocalEncoder(counting, text_cache=TextVectorCache(8))  # type: ignore[arg-type]
    first = encoder.encode_text("a red circle")
    second = encoder.encode_text("a red circle")
    assert counting.text_calls == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, clip_model.embed_texts(["a red circle"])[0])
    encoder.encode_text("a red circle ")  # another text (the tokeniser may agree; the cache does not guess)
    assert counting.text_calls == 2


def test_a_caller_changing_its_vector_does_not_change_the_cache(clip_model: ClipModel) -> None:
    encoder = LocalEncoder(clip_model, text_cache=TextVectorCache(8))
    first = encoder.encode_text("a blue square")
    expected = first.copy()
    first *= 0
    np.testing.assert_array_equal(encoder.encode_text("a blue square"), expected)


def test_another_model_misses_even_in_a_shared_cache(clip_model: ClipModel, other_model: ClipModel) -> None:
    assert clip_model.identity.id != other_model.identity.id
    cache = TextVectorCache(8)
    a, b = CountingModel(clip_model), CountingModel(other_model)
    va = LocalEncoder(a, text_cache=cache).encode_text("a green star")  # type: ignore[arg-type]
    vb = LocalEncoder(b, text_cache=cache).encode_text("a green star")  # type: ignore[arg-type]
    assert (a.text_calls, b.text_calls) == (1, 1)
    np.testing.assert_array_equal(vb, other_model.embed_texts(["a green star"])[0])
    assert not np.allclose(va, vb)
    assert len(cache) == 2


def test_the_bound_evicts_the_least_recently_used(clip_model: ClipModel) -> None:
    counting = CountingModel(clip_model)
    cache = TextVectorCache(2)
    encoder = LocalEncoder(counting, text_cache=cache)  # type: ignore[arg-type]
    for text in ("one", "two", "one", "three"):  # "one" was used after "two": "two" goes
        encoder.encode_text(text)
    assert len(cache) == 2
    assert counting.text_calls == 3
    encoder.encode_text("one")
    assert counting.text_calls == 3
    encoder.encode_text("two")
    assert counting.text_calls == 4
    assert len(cache) == 2


def test_size_zero_turns_it_off(clip_model: ClipModel) -> None:
    counting = CountingModel(clip_model)
    encoder = LocalEncoder(counting, text_cache=TextVectorCache(0))  # type: ignore[arg-type]
    encoder.encode_text("x")
    encoder.encode_text("x")
    assert counting.text_calls == 2
    with pytest.raises(ValueError, match="max_entries"):
        TextVectorCache(-1)
    with pytest.raises(ValueError, match="query_cache_size"):
        Settings(query_cache_size=-1)


def test_threads_share_it_safely(clip_model: ClipModel) -> None:
    cache = TextVectorCache(5)
    encoder = LocalEncoder(clip_model, text_cache=cache)
    texts = [f"query {i}" for i in range(8)]
    truth = {t: clip_model.embed_texts([t])[0] for t in texts}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(40):
                t = texts[(i + offset) % len(texts)]
                np.testing.assert_allclose(encoder.encode_text(t), truth[t], atol=1e-6)
                assert len(cache) <= 5
        except BaseException as exc:  # a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(cache) == 5
    assert cache.hits + cache.misses == 6 * 40


def test_backends_give_the_local_encoder_a_cache_of_the_configured_size(tiny_clip_dir: Path) -> None:
    from mediasearch import backends

    encoder = backends.encoder(Settings(clip_model=str(tiny_clip_dir), device="cpu", query_cache_size=7))
    assert isinstance(encoder, LocalEncoder)
    assert encoder.text_cache is not None and encoder.text_cache.max_entries == 7


@pytest.mark.parametrize("query_spin", [True, False])
def test_the_query_side_spins_its_onnx_threads_and_batch_jobs_do_not(
    tiny_clip_dir: Path, tmp_path: Path, query_spin: bool
) -> None:
    """Busy-waiting buys a query latency where the server has its cores; a batch job's decode threads
    need them. The option is read back from the real ONNX Runtime sessions."""
    from mediasearch import backends
    from mediasearch.encoders.onnx_clip import OnnxClipModel

    settings = Settings(
        clip_model=str(tiny_clip_dir),
        device="cpu",
        clip_engine=ClipEngine.ONNX,
        onnx_cache=str(tmp_path),
        query_spin=query_spin,
    )

    def spins(model: object) -> str:
        assert isinstance(model, OnnxClipModel)
        model.load(("text",))
        options = model._sessions["text"].get_session_options()
        return str(options.get_session_config_entry("session.intra_op.allow_spinning"))

    encoder = backends.encoder(settings)
    assert isinstance(encoder, LocalEncoder)
    assert spins(encoder.model) == ("1" if query_spin else "0")
    assert spins(backends.clip_model(settings)) == "0"


# -- Server-Timing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, clip_model: ClipModel) -> TestClient:
    store, index = small_corpus(tmp_path_factory.mktemp("timing"), clip_model)
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return TestClient(create_app(Settings(store=str(store.root)), service=service))


def timings_of(response: object) -> dict[str, float]:
    header = response.headers["server-timing"]  # type: ignore[attr-defined]
    parsed = parse_header(header)
    assert set(parsed) <= set(PHASES), header
    assert all(v >= 0 for v in parsed.values()), header
    return parsed


def test_search_reports_its_parts(client: TestClient) -> None:
    r = client.post("/search", json={"text": "a red thing", "k": 3})
    assert r.status_code == 200
    parts = timings_of(r)
    # Images and videos: the text encode, two k-NN queries, the videos' documents, the response.
    assert set(parts) == {"encode", "knn", "docs", "build", "serialise", "total"}
    assert parts["total"] >= max(v for k, v in parts.items() if k != "total")
    assert parts["total"] >= parts["encode"] + parts["knn"] + parts["docs"] - 0.01
    assert r.json()["results"]  # the body is the same JSON FastAPI would have sent


def test_image_only_search_has_no_docs_phase(client: TestClient) -> None:
    parts = timings_of(client.post("/search", json={"text": "a red thing", "k": 3, "kinds": ["image"]}))
    assert "docs" not in parts and {"encode", "knn", "serialise", "total"} <= set(parts)


def test_similar_videos_reports_its_parts(client: TestClient) -> None:
    video = client.post("/search", json={"text": "a video", "kinds": ["video"], "k": 1}).json()["results"][0]
    r = client.get(f"/videos/{video['id']}/similar")
    assert r.status_code == 200
    assert {"encode", "knn", "serialise", "total"} <= set(timings_of(r))


def test_errors_carry_no_timing(client: TestClient) -> None:
    r = client.post("/search", json={"video_id": "no-such-video"})
    assert r.status_code == 404
    assert "server-timing" not in r.headers


def test_parse_header_reads_the_w3c_syntax() -> None:
    assert parse_header('encode;dur=1.5, knn;desc="k-NN";dur=0.25, miss') == {"encode": 1.5, "knn": 0.25}
