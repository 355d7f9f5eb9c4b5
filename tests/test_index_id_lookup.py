"""Reads by id over the BTree index `optimize()` builds on `id` at scale: same answers as a scan."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediasearch.core.records import DocKind
from mediasearch.index import lancedb as lancedb_module
from mediasearch.index.lancedb import LanceDBIndex
from tests.test_index_maintenance import doc, filled, index_names, unit


@pytest.fixture
def small_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    # The indices that `optimize()` builds from ANN_MIN_ROWS rows up, at a size a test can write.
    monkeypatch.setattr(lancedb_module, "ANN_MIN_ROWS", 20)


@pytest.mark.usefixtures("small_scale")
def test_optimize_builds_the_id_index_and_reads_by_id_agree(tmp_path: Path) -> None:
    index = filled(tmp_path, 40)
    before = {d.id: d for d in index.get_many(f"d{i}" for i in range(0, 40, 3))}
    index.optimize()
    assert "id_idx" in index_names(index)
    after = index.get_many([f"d{i}" for i in range(0, 40, 3)] + ["nope"])
    assert [d.id for d in after] == [f"d{i}" for i in range(0, 40, 3)]
    assert {d.id: d for d in after} == before
    assert index.fingerprints(["d5", "d7"]) == {"d5": "fp5", "d7": "fp7"}


@pytest.mark.usefixtures("small_scale")
def test_rows_written_after_the_index_was_built_are_read_by_id(tmp_path: Path) -> None:
    index = filled(tmp_path, 40)
    index.optimize()
    index.upsert([doc(100, kind=DocKind.VIDEO), doc(5, caption="changed")])  # not in the index yet
    reader = LanceDBIndex(str(tmp_path), "media", refresh_s=0)
    got = {d.id: d for d in reader.get_many(["d100", "d5"])}
    assert got["d100"].kind is DocKind.VIDEO
    assert got["d5"].caption == "changed"
    index.optimize()
    assert reader.get_many(["d5"])[0].caption == "changed"


def test_small_collections_get_no_id_index(tmp_path: Path) -> None:
    index = filled(tmp_path, 6)
    index.optimize()
    assert "id_idx" not in index_names(index)


@pytest.mark.usefixtures("small_scale")
@pytest.mark.parametrize("refresh_s", [0.0, 3600.0])
def test_reads_by_id_from_the_knn_snapshot_agree_with_the_table(tmp_path: Path, refresh_s: float) -> None:
    """With a long refresh_s too: the snapshot is not looked at again for an hour, but a writer's own
    writes must show at once (the index object compares versions once it has written)."""
    index = filled(tmp_path, 40, refresh_s=refresh_s)
    index.optimize()
    wanted = [f"d{i}" for i in (3, 17, 39)] + ["nope"]
    from_table = index.get_many(wanted)  # no k-NN yet: no snapshot, a LanceDB query
    assert index.knn(unit(3), 3)[0].document.id == "d3"  # the graph's snapshot is loaded now
    assert index._ann is not None and index._ann.snapshot(index.table) is not None
    assert index._snapshot_rows(index.table, wanted) is not None  # answered from the snapshot
    assert index.get_many(wanted) == from_table
    # A write moves the table past the snapshot: reads by id see it at once, never the old rows.
    index.upsert([doc(17, caption="rewritten"), doc(200)])
    index.delete(["d39"])
    got = {d.id: d for d in index.get_many([*wanted, "d200"])}
    assert set(got) == {"d3", "d17", "d200"}
    assert got["d17"].caption == "rewritten"
