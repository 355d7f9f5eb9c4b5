"""Generations: a new model builds beside the serving one, switches atomically, and readers follow.

Real LanceDB tables, a real catalog object and a real writer lock; the encoders are stand-ins that
say which model they are, so a test can see which model answered.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.model_identity import ModelIdentity
from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.core.storage import LocalStore
from mediasearch.index.base import IndexError_, IndexSpec
from mediasearch.index.collection import Collection
from mediasearch.index.generations import StoreCatalog, generation_name
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.index.locks import FileLock, LockHeld
from mediasearch.query.encoder import QueryEncoder
from mediasearch.query.serving import ModelMismatch, ServedEncoder, ServedIndex, ServingView

DIM = 8
A = ModelIdentity(id="sha256:aaaa", source="/models/a")
B = ModelIdentity(id="sha256:bbbb", source="/models/b")


class Encoder(QueryEncoder):
    """Encodes every text as the unit vector of its model's axis: a hit tells which model encoded."""

    def __init__(self, model: str, axis: int, delay_s: float = 0.0) -> None:
        self.model, self.axis, self.delay_s = model, axis, delay_s
        self.warmed = False

    def encode_text(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, np.float32)
        v[self.axis] = 1.0
        return v

    def encode_image(self, data: bytes) -> np.ndarray:  # pragma: no cover - not used here
        raise NotImplementedError

    def warm_up(self) -> None:
        time.sleep(self.delay_s)
        self.warmed = True


def docs(model: ModelIdentity, axis: int, n: int = 3) -> list[IndexDocument]:
    out = []
    for i in range(n):
        v = np.zeros(DIM, np.float32)
        v[axis] = 1.0
        v[(axis + 1 + i) % DIM] = 0.1
        out.append(
            IndexDocument(
                id=f"img{i}",
                kind=DocKind.IMAGE,
                uri=f"file:///m/{i}.png",
                model=model.id,
                clip_vector=v / np.linalg.norm(v),
            )
        )
    return out


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return str(tmp_path / "lancedb")


@pytest.fixture
def collection(uri: str) -> Collection:

    def drop(name: str) -> None:
        import lancedb

        lancedb.connect(uri).drop_table(name)

    return Collection(
        "media",
        StoreCatalog(LocalStore(uri), "media"),
        lambda: FileLock(Path(uri) / "_locks" / "media.lock", "media"),
        lambda name: LanceDBIndex(uri, name),
        drop,
    )


def write(collection: Collection, model: ModelIdentity, axis: int, source: str = "file:///m") -> None:
    with collection.writer(model) as w:
        w.index.create(IndexSpec(clip_dim=DIM))
        w.index.upsert(docs(model, axis))
        collection.add_source(w, source)
        collection.commit(w)


def test_a_new_model_builds_beside_the_serving_generation_and_switches_on_commit(collection) -> None:
    write(collection, A, axis=0)
    first = collection.serving()
    assert first is not None and first.model_id == A.id and first.name == generation_name("media", A)

    with collection.writer(B) as w:
        assert w.builds_new and w.serving is not None and w.serving.name == first.name
        assert w.sources("file:///other") == ["file:///m", "file:///other"]  # B must hold A's sources too
        w.index.create(IndexSpec(clip_dim=DIM))
        w.index.upsert(docs(B, axis=1))
        serving = collection.serving()
        assert serving is not None and serving.name == first.name  # readers still see A
        collection.commit(w)
    second = collection.serving()
    assert second is not None and second.model_id == B.id
    assert {g.name for g in collection.generations()} == {first.name, second.name}

    # Writing again with B writes into the serving generation; no third one appears.
    with collection.writer(B) as w:
        assert not w.builds_new
    assert len(collection.generations()) == 2


def test_switch_back_and_drop(collection, uri) -> None:
    write(collection, A, axis=0)
    write(collection, B, axis=1)
    a_name = generation_name("media", A)
    collection.switch(a_name)
    serving = collection.serving()
    assert serving is not None and serving.name == a_name
    with pytest.raises(IndexError_, match="is serving"):
        collection.drop(a_name)
    collection.drop(generation_name("media", B))
    assert [g.name for g in collection.generations()] == [a_name]
    assert not LanceDBIndex(
        str(Path(collection.catalog.store.root) / ""), generation_name("media", B)
    ).exists()  # type: ignore[attr-defined]


def test_an_empty_new_generation_is_not_switched_to(collection) -> None:
    write(collection, A, axis=0)
    with collection.writer(B) as w:
        assert collection.commit(w) is not None
    serving = collection.serving()
    assert serving is not None and serving.model_id == A.id


def test_one_writer_at_a_time(collection) -> None:
    with (
        collection.writer(A),
        pytest.raises(LockHeld, match="'media' is being written"),
        collection.writer(A),
    ):
        pass


def _view(collection: Collection, uri: str, delay_s: float = 0.0) -> tuple[ServingView, list[str]]:
    built: list[str] = []

    def build(generation) -> QueryEncoder:
        built.append(generation.model_id)
        axis = {A.id: 0, B.id: 1}.get(generation.model_id, 0)
        return Encoder(generation.model_id, axis, delay_s)

    fallback = LanceDBIndex(uri, "media")
    return ServingView(collection, fallback_index=fallback, build_encoder=build, refresh_s=0.0), built


def test_readers_follow_a_switch_without_mixing_models(collection, uri) -> None:
    write(collection, A, axis=0)
    view, built = _view(collection, uri, delay_s=0.3)
    index, encoder = ServedIndex(view), ServedEncoder(view)

    def answer() -> tuple[str, str]:
        with view.pin():
            state = view.current()
            hit = index.knn(encoder.encode_text("q"), 1)[0]
            return state.encoder.model, hit.document.model or ""  # type: ignore[attr-defined]

    assert answer() == (A.id, A.id)
    write(collection, B, axis=1)
    # While B's model loads, A's pair keeps answering; then B's pair takes over. Never a mixture.
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        encoder_model, doc_model = answer()
        assert encoder_model == doc_model
        seen.append(encoder_model)
        if encoder_model == B.id:
            break
        time.sleep(0.02)
    assert seen[0] == A.id and seen[-1] == B.id
    assert built == [A.id, B.id]


def test_concurrent_queries_across_a_switch_never_mix(collection, uri) -> None:
    write(collection, A, axis=0)
    view, _ = _view(collection, uri, delay_s=0.2)
    index, encoder = ServedIndex(view), ServedEncoder(view)
    mixed: list[tuple[str, str]] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            with view.pin():
                state = view.current()
                hit = index.knn(encoder.encode_text("q"), 1)[0]
                if hit.document.model != state.encoder.model:  # type: ignore[attr-defined]
                    mixed.append((hit.document.model or "", state.encoder.model))  # type: ignore[attr-defined]
                answered[0] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    write(collection, B, axis=1)
    view.wait_until_current(timeout_s=10)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert answered[0] > 20 and mixed == []


def test_a_pinned_encoder_of_another_model_is_refused_with_the_reason(collection, uri) -> None:
    write(collection, A, axis=0)
    fallback = LanceDBIndex(uri, "media")
    view = ServingView(
        collection, fallback_index=fallback, pinned=Encoder(B.id, 1), pinned_model=lambda: B.id
    )
    with pytest.raises(ModelMismatch, match=r"embedded by sha256:aaaa .* encodes queries with sha256:bbbb"):
        ServedEncoder(view).encode_text("q")
    # Reads that need no encoding still work: "more like this" compares stored vectors only.
    assert ServedIndex(view).count() == 3
