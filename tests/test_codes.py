"""Binary codes: the rotation and packing (mediasearch.index.codes), the Hamming search with exact
re-rank on LanceDB, OpenSearch's on_disk mapping and rescore query, and the contract on both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index.base import IndexFilter, IndexSpec, VectorField, VectorIndex
from mediasearch.index.codes import CodeMethod, CodesConfig, Rotation, hamming, quantisation_error
from mediasearch.index.lancedb_codes import CODE_COLUMN, CODES_MIN_ROWS, codes_table_name

DIM = 256
N = 3000


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 30 centres leaning towards a shared direction, like CLIP embeddings (the
    distribution of bench/bench_knn.py)."""
    rng = np.random.default_rng(seed)
    shared = _unit(rng.normal(size=dim))
    centres = _unit(0.6 * shared + _unit(rng.normal(size=(30, dim))))
    return _unit(centres[rng.integers(0, 30, n)] + rng.normal(size=(n, dim)) * (0.9 / np.sqrt(dim)))


def near(x: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries: data points plus a little noise (a near-duplicate, a paraphrase)."""
    rng = np.random.default_rng(seed)
    picks = x[rng.choice(len(x), count, replace=False)]
    return _unit(picks + rng.normal(size=picks.shape) * (0.3 / np.sqrt(x.shape[1])))


def test_codes_are_one_bit_per_dimension_packed() -> None:
    x = clustered(500, 512, 0)
    rotation = Rotation.fit(x, CodeMethod.RANDOM)
    codes = rotation.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (500, 64)  # 512 bits: 64 bytes, 32x below 2,048
    assert np.array_equal(rotation.encode(x[3]), codes[3])
    with pytest.raises(ValueError, match="multiple of 8"):
        Rotation.fit(clustered(10, 12, 0), CodeMethod.RANDOM)
    with pytest.raises(ValueError, match="512-d"):
        rotation.encode(np.ones(64, np.float32))


def test_hamming_distance_tracks_the_angle() -> None:
    # SimHash: with a random rotation a bit differs with probability angle/pi; averaged over 512
    # bits the normalised distance is within a few hundredths of it.
    rng = np.random.default_rng(1)
    dim = 512
    q = rng.normal(size=dim)
    q /= np.linalg.norm(q)
    others = []
    for angle in np.linspace(0.1, 3.0, 12):
        r = rng.normal(size=dim)
        r -= (r @ q) * q
        r /= np.linalg.norm(r)
        others.append(np.cos(angle) * q + np.sin(angle) * r)
    x = np.asarray(others)
    rotation = Rotation(CodeMethod.RANDOM, np.zeros(dim, np.float32), _orth(dim), 0)
    d = hamming(rotation.encode(q), rotation.encode(x)) / dim
    expected = np.arccos(np.clip(x @ q, -1, 1)) / np.pi
    assert np.max(np.abs(d - expected)) < 0.08
    assert np.all(np.diff(d) > 0)  # farther angle, more differing bits


def _orth(dim: int) -> np.ndarray:
    from mediasearch.index.codes import random_orthogonal

    return random_orthogonal(dim, 7).astype(np.float32)


def test_itq_lowers_the_quantisation_error_of_a_random_rotation() -> None:
    x = clustered(4000, 128, 2)
    random = Rotation.fit(x, CodeMethod.RANDOM, seed=3)
    itq = Rotation.fit(x, CodeMethod.ITQ, seed=3)
    centred = x - random.mean
    assert np.allclose(itq.matrix @ itq.matrix.T, np.eye(128), atol=1e-4)  # still a rotation
    assert quantisation_error(centred, itq.matrix) < 0.9 * quantisation_error(centred, random.matrix)


def test_rotation_round_trips_through_bytes() -> None:
    rotation = Rotation.fit(clustered(300, 64, 4), CodeMethod.ITQ, iterations=5)
    back = Rotation.from_bytes(rotation.to_bytes())
    assert back.method is CodeMethod.ITQ and back.fitted_rows == 300
    assert np.array_equal(back.matrix, rotation.matrix) and np.array_equal(back.mean, rotation.mean)


# ------------------------------------------------------------------------------ on both backends


def _docs(x: np.ndarray) -> list[IndexDocument]:
    return [
        IndexDocument(
            id=f"d{i}",
            kind=DocKind.IMAGE if i % 4 else DocKind.SCENE,
            uri=f"s3://b/{i}.png",
            video_id=None if i % 4 else "v1",
            clip_vector=v,
        )
        for i, v in enumerate(x)
    ]


@pytest.fixture(params=["lancedb", "opensearch-in-memory"])
def coded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[VectorIndex, np.ndarray]]:
    config = CodesConfig(method=CodeMethod.ITQ, oversample=20)
    collection = f"codes-{uuid.uuid4().hex[:8]}"
    idx: VectorIndex
    if request.param == "lancedb":
        from mediasearch.index.lancedb import LanceDBIndex

        idx = LanceDBIndex(str(tmp_path / "lancedb"), collection, codes=config)
    else:
        from mediasearch.index.opensearch import OpenSearchIndex
        from tests.fake_opensearch import MemoryCluster, client_for

        idx = OpenSearchIndex(client_for(MemoryCluster()), collection, codes=config)
    x = clustered(N, DIM, 5)
    idx.create(IndexSpec(clip_dim=DIM, caption_dim=4))
    idx.upsert(_docs(x))
    idx.optimize()
    yield idx, x
    idx.close()


def _exact(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[str]:
    scores = x @ q
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return [f"d{i}" for i in np.argsort(-scores, kind="stable")[:k]]


def test_codes_search_returns_exact_cosines_and_recall(coded: tuple[VectorIndex, np.ndarray]) -> None:
    idx, x = coded
    queries = near(x, 40, 6)
    recalls = []
    for q in queries:
        hits = idx.knn(q, 10)
        assert len(hits) == 10
        ids = [h.document.id for h in hits]
        for hit in hits:
            # The re-rank's scores are the exact cosines, not Hamming-derived ones.
            assert hit.score == pytest.approx(float(x[int(hit.document.id[1:])] @ q), abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        recalls.append(len(set(ids) & set(_exact(x, q, 10))) / 10)
    assert np.mean(recalls) >= 0.95


def test_codes_search_honours_filters(coded: tuple[VectorIndex, np.ndarray]) -> None:
    idx, x = coded
    q = near(x, 1, 7)[0]
    hits = idx.knn(q, 5, IndexFilter(kinds=(DocKind.SCENE,), video_id="v1"))
    assert len(hits) == 5 and all(h.document.kind is DocKind.SCENE for h in hits)
    allowed = np.arange(N) % 4 == 0
    assert {h.document.id for h in hits} >= set(_exact(x, q, 5, allowed)[:3])


def test_lancedb_fits_codes_at_the_threshold_and_codes_later_rows(tmp_path: Path) -> None:
    from mediasearch.index.lancedb import LanceDBIndex

    x = clustered(CODES_MIN_ROWS + 200, DIM, 8)
    idx = LanceDBIndex(str(tmp_path / "db"), "media", codes=CodesConfig(method=CodeMethod.RANDOM))
    idx.create(IndexSpec(clip_dim=DIM, caption_dim=4))
    idx.upsert(_docs(x[: CODES_MIN_ROWS - 1]))
    idx.optimize()
    # Too few rows to learn from: no rotation, the float path answers (exactly).
    assert CODE_COLUMN not in idx.table.schema.names
    assert idx.knn(x[0], 1)[0].document.id == "d0"
    idx.upsert(_docs(x)[CODES_MIN_ROWS - 1 : CODES_MIN_ROWS + 100])
    idx.optimize()
    assert CODE_COLUMN in idx.table.schema.names
    assert codes_table_name("media") in idx._db.list_tables().tables
    # Rows written after the fit are coded at write time, with the stored rotation.
    idx.upsert(_docs(x)[CODES_MIN_ROWS + 100 :])
    assert idx.table.count_rows(f"{CODE_COLUMN} IS NULL") == 0
    rotation = idx._rotations.load()
    assert rotation is not None and rotation.method is CodeMethod.RANDOM
    stored = idx.table.search().where("id = 'd1150'").select([CODE_COLUMN]).to_arrow()[CODE_COLUMN][0]
    assert np.array_equal(np.asarray(stored.as_py(), np.uint8), rotation.encode(x[1150]))
    # Its queries take the code path and still give exact cosines.
    hit = idx.knn(x[1150], 1)[0]
    assert hit.document.id == "d1150" and hit.score == pytest.approx(1.0, abs=1e-5)
    # A different configured method re-fits and re-codes every row.
    itq = LanceDBIndex(str(tmp_path / "db"), "media", codes=CodesConfig(method=CodeMethod.ITQ))
    itq.optimize()
    refit = itq._rotations.load()
    assert refit is not None and refit.method is CodeMethod.ITQ
    stored = itq.table.search().where("id = 'd5'").select([CODE_COLUMN]).to_arrow()[CODE_COLUMN][0]
    assert np.array_equal(np.asarray(stored.as_py(), np.uint8), refit.encode(x[5]))


# ------------------------------------------------------------------------------ OpenSearch bodies


def test_opensearch_mapping_with_codes_is_on_disk_32x() -> None:
    from mediasearch.index.opensearch import index_body

    body = index_body(IndexSpec(clip_dim=512, caption_dim=384), CodesConfig())
    # k-NN 2.19.0.0: KNNConstants MODE_PARAMETER / COMPRESSION_LEVEL_PARAMETER, mapper/Mode.java
    # ("on_disk"), mapper/CompressionLevel.java ("32x"); the method is kept as without codes.
    assert body["mappings"]["properties"]["clip_vector"] == {
        "type": "knn_vector",
        "dimension": 512,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            "space_type": "innerproduct",
            "parameters": {"m": 32, "ef_construction": 128},
        },
        "mode": "on_disk",
        "compression_level": "32x",
    }
    # Caption vectors are few and small: left in memory.
    assert "mode" not in body["mappings"]["properties"]["caption_vector"]
    assert "mode" not in index_body(IndexSpec(clip_dim=512))["mappings"]["properties"]["clip_vector"]


def test_opensearch_query_with_codes_rescores() -> None:
    from mediasearch.index.opensearch import hybrid_query, knn_query

    q = np.ones(4, np.float32) / 2
    body = knn_query(q, 10, oversample=10)
    # k-NN 2.19.0.0 query/parser/RescoreParser.java: "rescore": {"oversample_factor": float}.
    assert body["query"]["knn"]["clip_vector"] == {
        "vector": [0.5, 0.5, 0.5, 0.5],
        "k": 10,
        "rescore": {"oversample_factor": 10.0},
    }
    assert (
        "rescore"
        not in knn_query(q, 10, field=VectorField.CAPTION, oversample=10)["query"]["knn"]["caption_vector"]
    )
    assert "rescore" not in knn_query(q, 10)["query"]["knn"]["clip_vector"]
    hybrid = hybrid_query("dog", q, 5, oversample=3)
    assert hybrid["query"]["hybrid"]["queries"][1]["knn"]["clip_vector"]["rescore"] == {
        "oversample_factor": 3.0
    }


def test_fake_refuses_an_oversample_factor_out_of_range() -> None:
    from mediasearch.index.opensearch import OpenSearchIndex
    from tests.fake_opensearch import MemoryCluster, client_for

    idx = OpenSearchIndex(client_for(MemoryCluster()), "c", codes=CodesConfig(oversample=101))
    idx.create(IndexSpec(clip_dim=DIM, caption_dim=4))
    idx.upsert(_docs(clustered(5, DIM, 9)))
    from mediasearch.index.base import IndexError_

    with pytest.raises(IndexError_, match="Oversample factor"):
        idx.knn(clustered(1, DIM, 9)[0], 3)


def test_dropping_a_lancedb_generation_drops_its_rotation(tmp_path: Path) -> None:
    import lancedb

    from mediasearch.backends import codes, collection
    from mediasearch.core.settings import Settings, VectorCodes

    settings = Settings(
        store=str(tmp_path / "media"), lancedb_uri=str(tmp_path / "db"), vector_codes=VectorCodes.RANDOM
    )
    config = codes(settings)
    assert config == CodesConfig(method=CodeMethod.RANDOM, oversample=settings.codes_oversample)
    assert codes(Settings(store=str(tmp_path))) is None
    idx = collection(settings)._open_index("gen-1")
    idx.create(IndexSpec(clip_dim=DIM, caption_dim=4))
    idx.upsert(_docs(clustered(CODES_MIN_ROWS, DIM, 10)))
    idx.optimize()
    db = lancedb.connect(str(tmp_path / "db"))
    assert codes_table_name("gen-1") in db.list_tables().tables
    collection(settings)._drop_index("gen-1")
    assert not {"gen-1", codes_table_name("gen-1")} & set(db.list_tables().tables)
