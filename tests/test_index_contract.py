"""One contract for every index backend.

LanceDB and OpenSearch against an in-memory 2.19 cluster behind the real client (tests/fake_opensearch.py:
it checks each request by the 2.19 rules and evaluates queries) run always; OpenSearch also runs
against a real cluster when OPENSEARCH_URL is set (for example the docker compose stack:
OPENSEARCH_URL=http://localhost:9200 pytest tests/test_index_contract.py).
"""

from __future__ import annotations

import os
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import numpy as np
import pytest
from pydantic.fields import FieldInfo

from mediasearch.core.records import DocKind, DocumentFields, IndexDocument
from mediasearch.index.base import IndexError_, IndexFilter, IndexSpec, VectorField, VectorIndex

DIM = 8
CAP_DIM = 4


@pytest.fixture(params=["lancedb", "opensearch-in-memory", "opensearch"])
def index(request: pytest.FixtureRequest, tmp_path) -> Iterator[VectorIndex]:
    with open_backend(request.param, tmp_path, "contract") as idx:
        yield idx


@contextmanager
def open_backend(kind: str, tmp_path: Path, prefix: str) -> Iterator[VectorIndex]:
    """A fresh, uniquely named collection on `kind`'s backend; a real cluster's index is deleted after."""
    collection = f"{prefix}-{uuid.uuid4().hex[:10]}"
    idx: VectorIndex
    if kind == "lancedb":
        from mediasearch.index.lancedb import LanceDBIndex

        idx = LanceDBIndex(str(tmp_path / "lancedb"), collection)
    elif kind == "opensearch-in-memory":
        # Every run: the in-memory cluster behind the real client refuses what OpenSearch 2.19 refuses
        # (tests/fake_opensearch.py names each rule's source) and evaluates queries exactly.
        from mediasearch.index.opensearch import OpenSearchIndex
        from tests.fake_opensearch import MemoryCluster, client_for

        idx = OpenSearchIndex(client_for(MemoryCluster()), collection)
    else:
        url = os.environ.get("OPENSEARCH_URL")
        if not url:
            pytest.skip("OPENSEARCH_URL is not set: no OpenSearch cluster to test against")
        from mediasearch.backends import opensearch_index
        from mediasearch.core.settings import Settings

        idx = opensearch_index(Settings(opensearch_url=url, collection=collection))
    yield idx
    if kind == "opensearch":
        from mediasearch.index.opensearch import OpenSearchIndex

        assert isinstance(idx, OpenSearchIndex)
        idx.client.indices.delete(index=collection, ignore_unavailable=True)
    idx.close()


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def doc(i: int, kind: DocKind = DocKind.IMAGE, **kw: object) -> IndexDocument:
    fields: dict[str, object] = {
        "id": f"d{i}",
        "kind": kind,
        "uri": f"s3://bucket/{'a' if i % 2 else 'b'}/{i}.png",
        "clip_vector": unit(i),
        "width": 100 * (i + 1),
        "height": 50,
        "fingerprint": f"fp{i}",
    }
    fields.update(kw)
    return IndexDocument(**fields)


@pytest.fixture
def filled(index: VectorIndex) -> VectorIndex:
    index.create(IndexSpec(clip_dim=DIM, caption_dim=CAP_DIM))
    docs = [doc(i) for i in range(6)]
    docs += [
        doc(
            10 + s,
            DocKind.SCENE,
            video_id="v1",
            scene=s,
            t_start=2.0 * s,
            t_end=2.0 * s + 2,
            tags=["dog", "park"],
        )
        for s in range(3)
    ]
    docs += [doc(20 + s, DocKind.SCENE, video_id="v2", scene=s, tags=["dog"]) for s in range(2)]
    docs += [doc(30, DocKind.VIDEO, video_id="v1", duration=6.0), doc(31, DocKind.VIDEO, video_id="v2")]
    docs[0] = doc(0, caption="a red circle", caption_vector=unit(100, CAP_DIM))
    docs[1] = doc(1, caption="a blue square", caption_vector=unit(101, CAP_DIM))
    assert index.upsert(docs) == len(docs)
    index.optimize()  # as writers do after a write: hybrid needs the full-text index it builds
    return index


def test_create_is_idempotent_and_checks_dimensions(index: VectorIndex) -> None:
    assert not index.exists()
    index.create(IndexSpec(clip_dim=DIM, caption_dim=CAP_DIM))
    index.create(IndexSpec(clip_dim=DIM, caption_dim=CAP_DIM))
    assert index.exists() and index.count() == 0
    with pytest.raises(IndexError_):
        index.create(IndexSpec(clip_dim=DIM * 2, caption_dim=CAP_DIM))


def test_reads_on_a_missing_collection_are_empty(index: VectorIndex) -> None:
    assert index.count() == 0
    assert index.get("x") is None
    assert index.fingerprints(["x"]) == {}
    assert index.knn(unit(0), 3) == []


def test_upsert_is_idempotent(filled: VectorIndex) -> None:
    n = filled.count()
    assert filled.upsert([doc(i) for i in range(6)]) == 6
    assert filled.count() == n
    changed = doc(3, fingerprint="new", clip_vector=unit(99))
    filled.upsert([changed])
    got = filled.get_with_vectors("d3")
    assert got is not None and got.fingerprint == "new"
    np.testing.assert_allclose(got.clip_vector, unit(99), atol=1e-6)
    assert filled.count() == n


def test_knn_returns_cosine_similarities_best_first(filled: VectorIndex) -> None:
    query = unit(2)
    hits = filled.knn(query, 4, IndexFilter(kinds=(DocKind.IMAGE,)))
    assert hits[0].document.id == "d2"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    exact = sorted(((float(unit(i) @ query), f"d{i}") for i in range(6)), reverse=True)[:4]
    assert [h.document.id for h in hits] == [i for _, i in exact]
    for hit, (score, _) in zip(hits, exact, strict=True):
        assert hit.score == pytest.approx(score, abs=1e-3)
        assert -1.0 <= hit.score <= 1.0
    # An opposite vector scores close to -1, not clipped to 0.
    far = filled.knn(-unit(4), 1, IndexFilter(kinds=(DocKind.IMAGE,)))
    assert far[0].document.id != "d4"
    assert filled.knn(-unit(4), 6, IndexFilter(kinds=(DocKind.IMAGE,)))[-1].score == pytest.approx(
        -1.0, abs=1e-3
    )


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (IndexFilter(kinds=(DocKind.SCENE,)), {"d10", "d11", "d12", "d20", "d21"}),
        (IndexFilter(kinds=(DocKind.SCENE,), video_id="v1"), {"d10", "d11", "d12"}),
        (IndexFilter(kinds=(DocKind.SCENE,), tags=("dog", "park")), {"d10", "d11", "d12"}),
        (IndexFilter(kinds=(DocKind.VIDEO,), exclude_video_id="v1"), {"d31"}),
        (IndexFilter(kinds=(DocKind.IMAGE,), uri_prefix="s3://bucket/a/"), {"d1", "d3", "d5"}),
        (IndexFilter(kinds=(DocKind.IMAGE,), min_width=400), {"d3", "d4", "d5"}),
        (IndexFilter(kinds=(DocKind.IMAGE, DocKind.VIDEO), min_width=3000), {"d30", "d31"}),
    ],
)
def test_filters_apply_before_ranking(filled: VectorIndex, flt: IndexFilter, expected: set[str]) -> None:
    hits = filled.knn(unit(0), 20, flt)
    assert {h.document.id for h in hits} == expected
    assert filled.count(flt) == len(expected)


def test_filter_values_cannot_inject(filled: VectorIndex) -> None:
    hits = filled.knn(unit(0), 20, IndexFilter(video_id="v1' OR '1'='1"))
    assert hits == []


def test_caption_vectors_search_only_captioned_documents(filled: VectorIndex) -> None:
    hits = filled.knn(unit(101, CAP_DIM), 5, None, field=VectorField.CAPTION)
    assert [h.document.id for h in hits] == ["d1", "d0"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_get_many_fingerprints_and_fields_round_trip(filled: VectorIndex) -> None:
    docs = filled.get_many(["d11", "missing", "d0"])
    assert [d.id for d in docs] == ["d11", "d0"]
    scene = docs[0]
    assert (scene.kind, scene.video_id, scene.scene, scene.t_start, scene.t_end) == (
        DocKind.SCENE,
        "v1",
        1,
        2.0,
        4.0,
    )
    assert scene.tags == ["dog", "park"]
    assert docs[1].caption == "a red circle"
    assert filled.fingerprints(["d1", "d2", "nope"]) == {"d1": "fp1", "d2": "fp2"}


def test_delete_and_delete_where(filled: VectorIndex) -> None:
    n = filled.count()
    assert filled.delete(["d0", "d1", "missing"]) == 2
    assert filled.count() == n - 2
    assert filled.delete_where(IndexFilter(kinds=(DocKind.SCENE,), video_id="v1")) == 3
    assert filled.count(IndexFilter(kinds=(DocKind.SCENE,))) == 2
    assert filled.get("d20") is not None


def test_hybrid_fuses_keyword_and_vector_scores(filled: VectorIndex) -> None:
    from mediasearch.index.base import HybridWeights

    images = IndexFilter(kinds=(DocKind.IMAGE,))
    # The vector points at d4, the words at d0's caption: each part alone would rank another first.
    keyword_heavy = filled.hybrid("red circle", unit(4), 6, images, HybridWeights(keyword=0.9, vector=0.1))
    vector_heavy = filled.hybrid("red circle", unit(4), 6, images, HybridWeights(keyword=0.1, vector=0.9))
    assert keyword_heavy[0].document.id == "d0"
    assert vector_heavy[0].document.id == "d4"
    for hits in (keyword_heavy, vector_heavy):
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 + 1e-6 for s in scores)
        assert {h.document.kind for h in hits} == {DocKind.IMAGE}
    if keyword_heavy[0].parts:  # backends that report the parts must report them consistently
        top = keyword_heavy[0]
        assert top.parts["keyword"] == pytest.approx(1.0)
        assert top.score == pytest.approx(HybridWeights(0.9, 0.1).combine(**top.parts), abs=1e-5)
    # Filters hold for both parts: no scene sneaks in through its tags.
    scenes = filled.hybrid("dog park", unit(10), 10, IndexFilter(kinds=(DocKind.SCENE,), video_id="v2"))
    assert {h.document.id for h in scenes} <= {"d20", "d21"}


# ---------------------------------------------------------------- vectors in reads


def test_hits_and_plain_reads_carry_no_vectors(filled: VectorIndex) -> None:
    images = IndexFilter(kinds=(DocKind.IMAGE,))
    hits = [*filled.knn(unit(0), 3, images), *filled.hybrid("red circle", unit(0), 3, images)]
    hits += filled.knn(unit(100, CAP_DIM), 2, field=VectorField.CAPTION)
    plain = [*filled.get_many(["d0", "d11"]), filled.get("d1")]
    assert hits and len(plain) == 3
    for document in [h.document for h in hits] + plain:
        assert type(document) is DocumentFields  # not an IndexDocument with its vectors blanked
    whole = filled.get_many_with_vectors(["d0", "d11"])
    assert [type(d) for d in whole] == [IndexDocument, IndexDocument]
    np.testing.assert_array_equal(whole[0].clip_vector, unit(0))
    np.testing.assert_array_equal(whole[0].caption_vector, unit(100, CAP_DIM))
    assert whole[1].caption_vector is None


# ---------------------------------------------------------------- every field round-trips


def _value(name: str, info: FieldInfo, spec: IndexSpec, seed: int) -> Any:
    """A value for a field, from its annotation alone, unlike the field's default."""
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]

    def one(kind: Any, n: int) -> Any:
        if kind is np.ndarray:
            return unit(seed * 100 + n, spec.dim(VectorField(name)))
        if isinstance(kind, type) and issubclass(kind, Enum):
            return list(kind)[(seed + n) % len(kind)]
        if kind is str:
            return f"{name} {seed}-{n} 'quoted' é"  # quotes and non-ASCII reach every backend intact
        if kind is bool:
            return info.default is not True
        if kind is int:
            return 100_000 * (seed + 1) + 7 * n + 1
        if kind is float:
            return 1000.25 * (seed + 1) + n + 0.125  # exact in binary, so equality is fair
        if kind is datetime:
            # Milliseconds: what an OpenSearch date keeps; aware, as the record stores times.
            return datetime(2020 + seed, 1 + n, 2, 3, 4, 5, 678_000, tzinfo=UTC)
        raise TypeError(f"teach this test a value for field {name!r} of type {kind!r}")

    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return [one(item, 0), one(item, 1)]
    return one(annotation, 0)


def every_field_set(spec: IndexSpec, seed: int) -> IndexDocument:
    """An IndexDocument with every field set, none to its default: written from model_fields, so a
    field added to the record is covered without touching this test."""
    fields = IndexDocument.model_fields
    doc = IndexDocument(**{name: _value(name, info, spec, seed) for name, info in fields.items()})
    for name, info in fields.items():
        value = getattr(doc, name)
        assert value is not None, name
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            assert not isinstance(value, type(default)) or value != default, name
    return doc


def required_only(spec: IndexSpec, seed: int) -> IndexDocument:
    """An IndexDocument with only what it cannot do without: every other field reads back as its default."""
    fields = IndexDocument.model_fields
    return IndexDocument(
        **{name: _value(name, info, spec, seed) for name, info in fields.items() if info.is_required()}
    )


def _shown(doc: IndexDocument) -> dict[str, Any]:
    """What a read without vectors must give back for `doc`."""
    return DocumentFields.model_validate(doc.model_dump(include=set(DocumentFields.model_fields))).model_dump(
        mode="json"
    )


@pytest.fixture(params=["lancedb", "opensearch-in-memory", "opensearch"])
def empty(request: pytest.FixtureRequest, tmp_path) -> Iterator[VectorIndex]:
    with open_backend(request.param, tmp_path, "roundtrip") as idx:
        yield idx


def test_every_field_round_trips(empty: VectorIndex) -> None:
    spec = IndexSpec(clip_dim=DIM, caption_dim=CAP_DIM)
    empty.create(spec)
    full, bare = every_field_set(spec, seed=1), required_only(spec, seed=2)
    assert full.id != bare.id
    assert empty.upsert([full, bare]) == 2

    # Whole documents: every field as written, vectors included, None and defaults as they were.
    whole = empty.get_many_with_vectors([full.id, "missing", bare.id])
    assert [d.model_dump(mode="json") for d in whole] == [
        full.model_dump(mode="json"),
        bare.model_dump(mode="json"),
    ]
    assert whole[0].clip_vector.dtype == np.float32

    # Plain reads and hits: the same fields, without the vectors.
    assert [d.model_dump(mode="json") for d in empty.get_many([bare.id, full.id])] == [
        _shown(bare),
        _shown(full),
    ]
    for field in VectorField:
        vector = getattr(full, field.value)
        hits = empty.knn(vector, 2, field=field)
        assert hits[0].document.model_dump(mode="json") == _shown(full), field
        assert type(hits[0].document) is DocumentFields
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert empty.fingerprints([full.id, bare.id]) == {full.id: full.fingerprint, bare.id: None}
