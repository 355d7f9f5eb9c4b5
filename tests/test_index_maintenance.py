"""LanceDB as a living index: reads follow other writers, duplicates are read right and repaired,
and maintenance (index builds, compaction) happens only in `optimize()`, safely and cheaply."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index.base import HybridWeights, IndexFilter, IndexNotReady, IndexSpec
from mediasearch.index.lancedb import SEARCH_TEXT, LanceDBIndex, lost_a_race
from tests.freshness import ROOT

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def doc(i: int, kind: DocKind = DocKind.IMAGE, **kw: object) -> IndexDocument:
    fields: dict[str, object] = {
        "id": f"d{i}",
        "kind": kind,
        "uri": f"file:///m/{i}.png",
        "clip_vector": unit(i),
        "caption": f"caption number {i}",
        "fingerprint": f"fp{i}",
    }
    fields.update(kw)
    return IndexDocument(**fields)


def filled(path: Path, n: int = 6, **kw: object) -> LanceDBIndex:
    index = LanceDBIndex(str(path), "media", **kw)  # type: ignore[arg-type]
    index.create(IndexSpec(clip_dim=DIM))
    index.upsert([doc(i) for i in range(n)])
    return index


def index_names(index: LanceDBIndex) -> set[str]:
    index.table.checkout_latest()
    return {ix.name for ix in index.table.list_indices()}


# ---- freshness: another process's (here: another connection's) commits --------------------------------


def test_a_reader_sees_another_writers_commits_within_the_refresh_interval(tmp_path: Path) -> None:
    writer = filled(tmp_path, 2)
    reader = LanceDBIndex(str(tmp_path), "media", refresh_s=0.3)
    assert reader.count() == 2
    writer.upsert([doc(10)])
    started = time.monotonic()
    while reader.count() != 3:
        assert time.monotonic() - started < 0.3 + 1.0, "the reader never saw the commit"
        time.sleep(0.01)
    assert reader.get("d10") is not None and reader.fingerprints(["d10"]) == {"d10": "fp10"}


def test_a_collection_created_later_is_found_but_not_listed_on_every_query(tmp_path: Path) -> None:
    reader = LanceDBIndex(str(tmp_path), "media", refresh_s=0.3)
    listings = 0
    list_tables = reader._db.list_tables

    def counting() -> object:
        nonlocal listings
        listings += 1
        return list_tables()

    reader._db.list_tables = counting  # type: ignore[method-assign]
    assert [reader.knn(unit(0), 3) for _ in range(20)] == [[]] * 20
    assert listings == 1  # a missing collection is looked for once per refresh interval, not per query
    filled(tmp_path, 3)
    started = time.monotonic()
    while not reader.knn(unit(0), 3):
        assert time.monotonic() - started < 0.3 + 1.0, "the reader never found the new collection"
        time.sleep(0.01)
    listings = 0
    for _ in range(20):
        assert len(reader.knn(unit(0), 3)) == 3
    assert listings == 0  # once open, a query costs no listing


def test_a_dropped_and_recreated_collection_is_followed(tmp_path: Path) -> None:
    filled(tmp_path, 4)
    reader = LanceDBIndex(str(tmp_path), "media", refresh_s=0)
    scenes = IndexFilter(kinds=(DocKind.SCENE,))
    assert reader.count() == 4 and reader.knn(unit(0), 5, scenes) == []
    writer = LanceDBIndex(str(tmp_path), "media")
    writer._db.drop_table("media")
    writer._forget()
    writer.create(IndexSpec(clip_dim=DIM))
    writer.upsert([doc(50 + i, DocKind.SCENE, video_id="v") for i in range(3)])
    # The kinds cache must not answer "no scenes" from the old table.
    assert {h.document.id for h in reader.knn(unit(0), 5, scenes)} == {"d50", "d51", "d52"}
    assert reader.count() == 3 and reader.get("d0") is None


def test_the_refresh_interval_cannot_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refresh_s"):
        LanceDBIndex(str(tmp_path), "media", refresh_s=-1)


# ---- duplicates left by older versions' racing ingests -------------------------------------------------


def duplicated(tmp_path: Path) -> LanceDBIndex:
    """Six documents, then every one written twice more with plain appends (as two racing
    merge_inserts did): 18 rows for 6 ids, the last append carrying new fingerprints."""
    index = filled(tmp_path)
    again = index._to_arrow([doc(i) for i in range(6)])
    index.table.add(again)
    index.table.add(
        index._to_arrow([doc(i, fingerprint=f"new{i}", clip_vector=unit(100 + i)) for i in range(6)])
    )
    assert index.table.count_rows() == 18
    return index


def test_reads_are_whole_and_one_per_id_with_duplicate_rows(tmp_path: Path) -> None:
    index = duplicated(tmp_path)
    ids = [f"d{i}" for i in range(6)]
    # A limit of len(ids) used to run out on the duplicates and leave ids out.
    assert index.fingerprints(ids) == {f"d{i}": f"new{i}" for i in range(6)}
    assert [d.id for d in index.get_many(ids)] == ids
    whole = index.get_many_with_vectors(ids)
    assert [d.fingerprint for d in whole] == [f"new{i}" for i in range(6)]
    np.testing.assert_allclose(whole[2].clip_vector, unit(102), atol=1e-6)
    hits = index.knn(unit(0), 10)
    assert len(hits) == len({h.document.id for h in hits})


def test_optimize_repairs_duplicates_keeping_the_last_written(tmp_path: Path) -> None:
    index = duplicated(tmp_path)
    index.optimize()
    assert index.table.count_rows() == 6 and index.count() == 6
    rows = index.table.search().select(["id", "fingerprint"]).limit(None).to_arrow().to_pylist()
    assert sorted((r["id"], r["fingerprint"]) for r in rows) == [(f"d{i}", f"new{i}") for i in range(6)]
    got = index.get_with_vectors("d4")
    assert got is not None
    np.testing.assert_allclose(got.clip_vector, unit(104), atol=1e-6)
    assert {h.document.id for h in index.hybrid("caption", unit(0), 10)} == {f"d{i}" for i in range(6)}


# ---- optimize: the only place that builds, cheap when there is nothing to do ---------------------------------


def test_optimize_builds_the_full_text_index_then_does_nothing(tmp_path: Path) -> None:
    index = filled(tmp_path)
    assert f"{SEARCH_TEXT}_idx" not in index_names(index)
    index.optimize()
    assert f"{SEARCH_TEXT}_idx" in index_names(index)
    version = index.table.version
    index.optimize()
    index.optimize()
    assert index.table.version == version  # nothing to do: no commit at all


def test_optimize_folds_new_rows_into_the_indices(tmp_path: Path) -> None:
    index = filled(tmp_path)
    index.optimize()
    index.upsert([doc(20, caption="zebra crossing")])
    assert any(ix.num_unindexed_rows for ix in index.table.list_indices())
    index.optimize()
    index.table.checkout_latest()
    assert not any(ix.num_unindexed_rows for ix in index.table.list_indices())
    keyword_only = HybridWeights(keyword=1.0, vector=0.0)
    assert [h.document.id for h in index.hybrid("zebra", unit(3), 1, weights=keyword_only)] == ["d20"]


def test_optimize_on_a_missing_or_empty_collection_is_a_no_op(tmp_path: Path) -> None:
    LanceDBIndex(str(tmp_path), "media").optimize()
    empty = LanceDBIndex(str(tmp_path), "empty")
    empty.create(IndexSpec(clip_dim=DIM))
    empty.optimize()
    assert empty.hybrid("anything", unit(0), 3) == []  # nothing to find, nothing missing


def test_hybrid_never_builds_an_index(tmp_path: Path) -> None:
    index = filled(tmp_path)
    with pytest.raises(IndexNotReady, match="full-text index of collection 'media' is not built yet"):
        index.hybrid("caption", unit(0), 3)
    assert index_names(index) == set()


def test_a_lost_commit_race_is_recognised() -> None:
    assert lost_a_race(
        RuntimeError("lance error: Retryable commit conflict for version 2: ... Please retry.")
    )
    assert lost_a_race(RuntimeError("LanceError(Index): Index name 'search_text_idx' already exists, ..."))
    assert not lost_a_race(RuntimeError("LanceError(IO): Invalid range 0..2857 for object of size 1428"))


OPTIMIZER = """
import sys, time
from mediasearch.index.lancedb import LanceDBIndex
index = LanceDBIndex(sys.argv[1], "media")
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
index.optimize()
"""


def test_processes_optimizing_at_once_all_succeed(tmp_path: Path) -> None:
    index = duplicated(tmp_path)
    start_at = time.time() + 4.0  # after every interpreter has imported LanceDB
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPTIMIZER, str(tmp_path), str(start_at)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, "\n".join(errors)
    index.table.checkout_latest()
    assert index.table.count_rows() == 6
    assert f"{SEARCH_TEXT}_idx" in index_names(index)
    assert [d.fingerprint for d in index.get_many_with_vectors([f"d{i}" for i in range(6)])] == [
        f"new{i}" for i in range(6)
    ]


def test_a_race_in_the_repair_never_loses_a_document(tmp_path: Path) -> None:
    # Two processes repairing at once each delete what they read as stale; the repair checks that
    # every duplicated id kept a row and puts back any that did not.
    index = duplicated(tmp_path)
    table = index.table
    rows = table.search().select(["id"]).with_row_id(True).limit(None).to_arrow()
    # Simulate the other writer having deleted the copies this one means to keep.
    keep = rows.group_by("id").aggregate([("_rowid", "max")])
    table.delete(f"_rowid IN ({', '.join(str(r) for r in keep['_rowid_max'].to_pylist())})")
    assert table.count_rows() == 12
    removed = index._repair_duplicates(table)
    assert removed > 0
    assert sorted(index.fingerprints([f"d{i}" for i in range(6)])) == [f"d{i}" for i in range(6)]
    assert (
        pa.compute.count_distinct(table.search().select(["id"]).limit(None).to_arrow()["id"]).as_py()
        == table.count_rows()
    )
