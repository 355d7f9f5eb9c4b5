"""The HNSW graph beside a LanceDB table (mediasearch.index.ann), through `LanceDBIndex.knn`.

Real LanceDB tables and real faiss graphs, small enough to build in a second: the row threshold from
which a graph is kept is lowered for these tests. What is checked is what the living index promises:
results as correct as exact search in what they return (live rows, the filter, true cosine scores,
unique ids), recall close to exact, writes made since the graph was built found, deleted and replaced
rows never returned, and a missing, damaged or foreign graph file costing speed, never correctness.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.records import DocKind, DocumentFields, IndexDocument
from mediasearch.index import ann
from mediasearch.index import lancedb as lancedb_module
from mediasearch.index.base import Hit, IndexFilter, IndexSpec
from mediasearch.index.lancedb import LanceDBIndex, where_clause
from tests.freshness import ROOT, Writer, poll

DIM = 32
ROWS = 3000
MIN_ROWS = 1000


@pytest.fixture(autouse=True)
def small_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lancedb_module, "ANN_MIN_ROWS", MIN_ROWS)


def clustered(rows: int, rng: np.random.Generator, clusters: int = 30) -> np.ndarray:
    centres = rng.standard_normal((clusters, DIM))
    data = centres[rng.integers(0, clusters, rows)] + 0.6 * rng.standard_normal((rows, DIM))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def near(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Queries like the bench's: stored points moved a little (a near-duplicate, a paraphrase)."""
    picked = vectors[rng.choice(len(vectors), n, replace=False)] + 0.1 * rng.standard_normal((n, DIM))
    return (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)


def make_docs(vectors: np.ndarray, start: int = 0, prefix: str = "d") -> list[IndexDocument]:
    docs = []
    for i, vec in enumerate(vectors):
        n = start + i
        scene = n % 3 == 0
        docs.append(
            IndexDocument(
                id=f"{prefix}{n:05d}",
                kind=DocKind.SCENE if scene else DocKind.IMAGE,
                uri=f"s3://b/f{n % 7}/{prefix}{n:05d}.{'mp4' if scene else 'jpg'}",
                video_id=f"vid{n % 50}" if scene else None,
                scene=0 if scene else None,
                tags=[t for t, every in (("red", 2), ("big", 5), ("rare", 97)) if n % every == 0],
                width=100 + (n * 37) % 2000,
                height=100 + (n * 53) % 1500,
                clip_vector=vec,
            )
        )
    return docs


def built(tmp_path: Path, vectors: np.ndarray, refresh_s: float = 0.0) -> LanceDBIndex:
    index = LanceDBIndex(str(tmp_path / "db"), "media", refresh_s=refresh_s)
    index.create(IndexSpec(clip_dim=DIM))
    for start in range(0, len(vectors), 1000):
        index.upsert(make_docs(vectors[start : start + 1000], start))
    index.optimize()
    return index


def sidecar(index: LanceDBIndex) -> Path:
    path = ann.sidecar_path(index.table.uri, "clip_vector")
    assert path is not None
    return path


def uses_graph(index: LanceDBIndex) -> bool:
    reader = index._ann
    return reader is not None and reader._snapshot is not None


def lancedb_own(index: LanceDBIndex, vector: np.ndarray, k: int) -> list[Hit]:
    """LanceDB's own search on the same table: what answers when the graph cannot."""
    saved = index._ann_knn
    index._ann_knn = lambda *a, **kw: None  # type: ignore[method-assign]
    try:
        return index.knn(vector, k)
    finally:
        index._ann_knn = saved  # type: ignore[method-assign]


def exact_ids(vectors: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[str]:
    """The exact top k rows (NumPy), among the allowed rows when given."""
    rows = np.arange(len(vectors)) if allowed is None else np.flatnonzero(allowed)
    sims = vectors[rows] @ q
    return [f"d{int(r):05d}" for r in rows[np.argsort(-sims)[:k]]]


def check_hits(hits: list[Hit], k: int) -> None:
    ids = [h.document.id for h in hits]
    assert len(ids) == len(set(ids)) <= k
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    for hit in hits:
        assert type(hit.document) is DocumentFields
        assert not hasattr(hit.document, "clip_vector")


def test_graph_results_agree_with_exact_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    assert sidecar(index).exists()
    queries = near(vectors, 40, rng)
    recalls = []
    for q in queries:
        hits = index.knn(q, 10)
        check_hits(hits, 10)
        truth = exact_ids(vectors, q, 10)
        recalls.append(len({h.document.id for h in hits} & set(truth)) / 10)
        # The scores are the true cosine similarities of the documents returned.
        for hit in hits:
            row = int(hit.document.id[1:])
            assert hit.score == pytest.approx(float(vectors[row] @ q), abs=1e-5)
    assert uses_graph(index)
    assert float(np.mean(recalls)) >= 0.95


def test_small_tables_keep_the_exact_path(tmp_path: Path) -> None:
    vectors = clustered(MIN_ROWS - 1, np.random.default_rng(1))
    index = built(tmp_path, vectors)
    assert not sidecar(index).exists()
    hits = index.knn(vectors[5], 3)
    assert hits[0].document.id == "d00005" and not uses_graph(index)


FILTERS = [
    IndexFilter(kinds=(DocKind.SCENE,)),
    IndexFilter(kinds=(DocKind.IMAGE,)),
    IndexFilter(tags=("red",)),
    IndexFilter(tags=("red", "big")),
    IndexFilter(tags=("rare",)),
    IndexFilter(uri_prefix="s3://b/f3/"),
    IndexFilter(video_id="vid21"),
    IndexFilter(exclude_video_id="vid21"),
    IndexFilter(min_width=1500),
    IndexFilter(min_height=1200, kinds=(DocKind.IMAGE,)),
    IndexFilter(uri_prefix="s3://nowhere/"),
]


def test_filter_masks_select_what_lancedb_selects(tmp_path: Path) -> None:
    index = built(tmp_path, clustered(ROWS, np.random.default_rng(2)))
    fields = index.table.search().select(lancedb_module._FIELD_COLUMNS).limit(None).to_arrow()
    for flt in FILTERS:
        mask = ann.filter_mask(fields, flt)
        ours = set(np.asarray(fields["id"].to_pylist())[mask].tolist())
        where = where_clause(flt)
        theirs = set(
            index.table.search().where(where).select(["id"]).limit(None).to_arrow()["id"].to_pylist()
        )
        assert ours == theirs, flt


def test_filtered_queries_return_only_matching_documents(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    fields = index.table.search().select(lancedb_module._FIELD_COLUMNS).limit(None).to_arrow()
    by_row = np.argsort(np.asarray(fields["id"].to_pylist()))  # the table's order is not the rows'
    queries = near(vectors, 10, rng)
    for flt in FILTERS:
        mask = ann.filter_mask(fields, flt)
        allowed = set(np.asarray(fields["id"].to_pylist())[mask].tolist())
        recalls = []
        for q in queries:
            hits = index.knn(q, 10, flt)
            check_hits(hits, 10)
            assert {h.document.id for h in hits} <= allowed, flt
            truth = set(exact_ids(vectors, q, 10, mask[by_row]))
            assert len(hits) == len(truth)  # k of them whenever k match
            recalls.append(len({h.document.id for h in hits} & truth) / len(truth) if truth else 1.0)
        assert float(np.mean(recalls)) >= 0.9, flt
    assert uses_graph(index)


def test_writes_since_the_graph_was_built_are_found_and_removed_rows_never_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    assert index.knn(vectors[0], 1)[0].document.id == "d00000" and uses_graph(index)

    # New documents, no optimize: the graph does not hold them, the delta does.
    fresh = clustered(20, rng)
    index.upsert(make_docs(fresh, 10_000, prefix="n"))
    for i, vec in enumerate(fresh):
        top = index.knn(vec, 1)[0]
        assert top.document.id == f"n{10_000 + i:05d}" and top.score == pytest.approx(1.0, abs=1e-5)
    assert uses_graph(index)

    # Deleted documents and the old vector of a replaced one are gone at once.
    index.delete(["d00001", "d00002"])
    moved = clustered(1, rng)[0]
    index.upsert(make_docs(moved[None, :], 3))
    for row in (1, 2):
        assert f"d{row:05d}" not in {h.document.id for h in index.knn(vectors[row], 10)}
    near_old = index.knn(vectors[3], 10)
    assert all(
        h.document.id != "d00003" or h.score == pytest.approx(float(moved @ vectors[3]), abs=1e-5)
        for h in near_old
    )
    top = index.knn(moved, 1)[0]
    assert top.document.id == "d00003" and top.score == pytest.approx(1.0, abs=1e-5)
    assert uses_graph(index)

    # The writer folds it all into the graph without a rebuild (compaction moves every row on the way),
    # and the answers stay the same.
    before = {i: [h.document.id for h in index.knn(vectors[i], 5)] for i in (0, 4, 5)}
    with caplog.at_level(logging.INFO, logger="mediasearch.index.lancedb"):
        index.optimize()
    assert "ANN graph of 'media': updated" in caplog.text
    assert {i: [h.document.id for h in index.knn(vectors[i], 5)] for i in (0, 4, 5)} == before
    snapshot = index._ann._snapshot
    assert (
        snapshot is not None and len(snapshot.delta_rows) == 0 and not snapshot.all_live
    )  # dead labels masked
    for row in (1, 2):
        assert f"d{row:05d}" not in {h.document.id for h in index.knn(vectors[row], 10)}
    assert index.knn(moved, 1)[0].document.id == "d00003"
    # Nothing to do: a second optimize leaves the file alone.
    stamp = sidecar(index).stat().st_mtime_ns
    index.optimize()
    assert sidecar(index).stat().st_mtime_ns == stamp


def test_a_graph_of_another_density_serves_until_the_writer_rebuilds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a collection indexed before HNSW_M changed meets: its file (M=16) keeps answering, and the
    writer's next optimize builds a graph of the current M instead of growing the old one."""
    rng = np.random.default_rng(11)
    vectors = clustered(ROWS, rng)
    with monkeypatch.context() as old_release:
        old_release.setattr(ann, "HNSW_M", 16)
        index = built(tmp_path, vectors)
    old = ann.load(sidecar(index))
    assert old is not None and ann.graph_m(old.index) == 16 != ann.HNSW_M
    reader = LanceDBIndex(str(tmp_path / "db"), "media", refresh_s=0)
    assert reader.knn(vectors[5], 1)[0].document.id == "d00005" and uses_graph(reader)

    index.upsert(make_docs(clustered(5, rng), 20_000))
    with caplog.at_level(logging.INFO, logger="mediasearch.index.lancedb"):
        index.optimize()
    assert "ANN graph of 'media': built" in caplog.text
    new = ann.load(sidecar(index))
    assert new is not None and ann.graph_m(new.index) == ann.HNSW_M and new.index.ntotal == ROWS + 5
    assert reader.knn(vectors[5], 1)[0].document.id == "d00005" and uses_graph(reader)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign"])
def test_a_damaged_or_foreign_sidecar_costs_speed_not_correctness(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(5)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    path = sidecar(index)
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(rng.integers(0, 256, len(good), dtype=np.uint8)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        # A graph of another table with the same shape: its row addresses exist here, its ids do not.
        other = built(tmp_path / "other", clustered(ROWS, np.random.default_rng(6)))
        shutil.copy(sidecar(other), path)
    reader = LanceDBIndex(str(tmp_path / "db"), "media", refresh_s=0)
    for row in (0, 7, 99):
        hits = reader.knn(vectors[row], 5)
        check_hits(hits, 5)
        assert hits[0].document.id == f"d{row:05d}"
        assert [h.document.id for h in hits] == [h.document.id for h in lancedb_own(reader, vectors[row], 5)]
    assert not uses_graph(reader)
    # The writer's next optimize replaces the file, and readers use the graph again.
    index.upsert(make_docs(clustered(1, rng), 20_000))
    index.optimize()
    assert ann.load(path) is not None
    assert reader.knn(vectors[7], 1)[0].document.id == "d00007" and uses_graph(reader)


def test_debris_of_a_killed_save_is_harmless(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    path = sidecar(index)
    # What a kill -9 during a save leaves: a partial temp file beside the last complete file.
    debris = path.parent / f"{path.name}.abc123.tmp"
    debris.write_bytes(path.read_bytes()[:1000])
    reader = LanceDBIndex(str(tmp_path / "db"), "media", refresh_s=0)
    assert reader.knn(vectors[3], 1)[0].document.id == "d00003" and uses_graph(reader)
    old = time.time() - 2 * ann.STALE_TEMP_S
    os.utime(debris, (old, old))
    index.upsert(make_docs(clustered(1, rng), 20_000))
    index.optimize()
    assert not debris.exists()


def test_dropping_the_table_drops_its_graph(tmp_path: Path) -> None:
    index = built(tmp_path, clustered(ROWS, np.random.default_rng(8)))
    path = sidecar(index)
    assert path.exists()
    index._db.drop_table("media")
    assert not path.exists()


def test_a_second_process_writes_while_this_one_reads(tmp_path: Path) -> None:
    uri = str(tmp_path / "db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = Writer(uri, "media", DIM, env, ann_min_rows=MIN_ROWS)
    try:
        writer.write(1500, "base")
        writer.command("optimize")
        reader = LanceDBIndex(uri, "media", refresh_s=0.2)
        base = reader.get_many_with_vectors([f"base-{i}" for i in range(5)])
        for doc in base:
            assert reader.knn(doc.clip_vector, 1)[0].document.id == doc.id
        assert uses_graph(reader)

        # Committed by the other process, not yet in its graph: found within the refresh interval.
        ids, _ = writer.write(30, "late")
        late = LanceDBIndex(uri, "media", refresh_s=0).get_many_with_vectors(ids)
        assert len(late) == 30

        def found_all() -> bool:
            return all(reader.knn(d.clip_vector, 1)[0].document.id == d.id for d in late)

        poll(found_all, timeout_s=5, interval_s=0.05)
        assert uses_graph(reader)

        # The writer's optimize folds them into the graph; the reader picks the new file up.
        writer.command("optimize")

        def folded_in() -> bool:
            return found_all() and uses_graph(reader) and len(reader._ann._snapshot.delta_rows) == 0

        poll(folded_in, timeout_s=5, interval_s=0.05)
    finally:
        writer.close()


def test_video_filters_go_through_the_video_index_and_allow_what_the_mask_allows(tmp_path: Path) -> None:
    """A filter naming a video is evaluated over that video's rows only; with delta rows and dead
    labels about, it must allow exactly what the mask over every row allows."""
    rng = np.random.default_rng(11)
    vectors = clustered(ROWS, rng)
    index = built(tmp_path, vectors)
    index.optimize()
    index.delete(["d00021", "d00071"])  # vid21 scenes: a dead label each
    fresh = clustered(9, rng)
    index.upsert(make_docs(fresh, 20_001, prefix="n"))  # n20001 ... n20009: delta rows; n20001 a vid1 scene
    hits = index.knn(vectors[0], 5)
    reader, snap = index._ann, index._ann._snapshot if index._ann else None
    assert reader is not None and snap is not None and len(snap.delta_rows) == 9 and not snap.all_live
    flts = [
        IndexFilter(video_id="vid21"),
        IndexFilter(video_id="vid1"),  # graph rows and one delta row
        IndexFilter(video_id="vid1", min_width=1000),
        IndexFilter(video_id="vid1", kinds=(DocKind.IMAGE,)),  # nothing: videos hold scenes
        IndexFilter(video_id="no such video"),
    ]
    for flt in flts:
        got = reader._allowed(snap, flt)
        assert got is not None and snap.videos is not None
        mask = ann.filter_mask(snap.fields, flt)
        live = snap.row_of_label >= 0
        want_labels = np.flatnonzero(live & mask[np.maximum(snap.row_of_label, 0)])
        assert got.labels.tolist() == want_labels.tolist(), flt
        assert got.delta.tolist() == np.flatnonzero(mask[snap.delta_rows]).tolist(), flt
        ids = set(np.asarray(snap.fields["id"].to_pylist())[mask].tolist())
        found = index.knn(fresh[0], 10, flt)
        check_hits(found, 10)
        assert {h.document.id for h in found} == ids if len(ids) <= 10 else len(found) == 10
    assert "n20001" in {h.document.id for h in index.knn(fresh[0], 10, IndexFilter(video_id="vid1"))}
    assert hits and uses_graph(index)
