"""A collection created before this version's fields existed (EXIF, learned_vector, the binary code)
keeps answering queries after an upgrade, those fields at their defaults, until `mediasearch reindex`
rebuilds it; writers refuse it with a message instead of writing the new fields nowhere."""

from __future__ import annotations

from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index.base import IndexError_, IndexSpec
from mediasearch.index.lancedb import LanceDBIndex, schema_for

DIM = 8
NEW_FIELDS = ("taken_at", "camera", "gps_lat", "gps_lon", "learned_vector", "clip_code")


def doc(i: int) -> IndexDocument:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return IndexDocument(
        id=f"d{i}", kind=DocKind.IMAGE, uri=f"file:///p/{i}.png", clip_vector=v / np.linalg.norm(v)
    )


@pytest.fixture
def legacy(tmp_path: Path) -> LanceDBIndex:
    """A table as the previous version wrote it: today's schema without the fields added since."""
    current = LanceDBIndex(str(tmp_path / "new"), "media", refresh_s=0)
    current.create(IndexSpec(clip_dim=DIM))
    current.upsert([doc(i) for i in range(20)])
    rows = current.table.to_arrow()
    old = [name for name in rows.schema.names if name not in NEW_FIELDS]
    assert len(old) < len(rows.schema.names)  # the fixture really drops columns
    old_schema = pa.schema([f for f in schema_for(IndexSpec(clip_dim=DIM)) if f.name in old])
    lancedb.connect(str(tmp_path / "old")).create_table(
        "media", rows.select(old).cast(old_schema), on_bad_vectors="null"
    )
    return LanceDBIndex(str(tmp_path / "old"), "media", refresh_s=0)


def test_an_old_collection_still_answers_reads(legacy: LanceDBIndex) -> None:
    hits = legacy.knn(doc(3).clip_vector, 5)
    assert hits[0].document.id == "d3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].document.taken_at is None and hits[0].document.camera is None
    assert [d.id for d in legacy.get_many(["d1", "d2"])] == ["d1", "d2"]
    whole = legacy.get_with_vectors("d4")
    assert whole is not None and whole.learned_vector is None
    assert legacy.count() == 20


def test_an_old_collection_refuses_writes_naming_the_missing_fields(legacy: LanceDBIndex) -> None:
    with pytest.raises(IndexError_, match="created before these fields existed") as err:
        legacy.upsert([doc(99)])
    assert "taken_at" in str(err.value)
