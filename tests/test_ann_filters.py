"""The HNSW graph path filters in memory (`ann.filter_mask`), LanceDB in SQL (`where_clause`): the two
must select the same rows for every `IndexFilter` field, or a filtered search on a large collection
(where the graph answers) would return documents a small one (exact path) leaves out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index.ann import filter_mask
from mediasearch.index.base import IndexFilter, IndexSpec
from mediasearch.index.lancedb import _FIELD_COLUMNS, LanceDBIndex, where_clause

DIM = 8
ROWS = 300

FILTERS = [
    IndexFilter(kinds=(DocKind.SCENE,)),
    IndexFilter(video_id="v3"),
    IndexFilter(exclude_video_id="v3", kinds=(DocKind.SCENE, DocKind.IMAGE)),
    IndexFilter(tags=("red",)),
    IndexFilter(tags=("red", "dog")),
    IndexFilter(uri_prefix="file:///p/a/"),
    IndexFilter(min_width=500),
    IndexFilter(min_height=400, kinds=(DocKind.IMAGE,)),
    IndexFilter(taken_after=datetime(2023, 6, 1, tzinfo=UTC)),
    IndexFilter(taken_before=datetime(2023, 6, 1, tzinfo=UTC), taken_after=datetime(2022, 1, 1, tzinfo=UTC)),
    IndexFilter(camera="Canon EOS 5D"),
    IndexFilter(bbox=(-40.0, 100.0, 0.0, 180.0)),
    IndexFilter(bbox=(-30.0, 170.0, 10.0, -170.0)),  # across the antimeridian
    IndexFilter(bbox=(-90.0, -180.0, 90.0, 180.0), camera="Apple iPhone 13", min_width=100),
]


def docs(rng: np.random.Generator) -> list[IndexDocument]:
    out = []
    for i in range(ROWS):
        kind = [DocKind.IMAGE, DocKind.SCENE, DocKind.VIDEO][i % 3]
        photo = kind is DocKind.IMAGE and i % 4 != 0  # some images carry no EXIF at all
        vector = rng.standard_normal(DIM).astype(np.float32)
        out.append(
            IndexDocument(
                id=f"d{i}",
                kind=kind,
                uri=f"file:///p/{'ab'[i % 2]}/{i}.jpg",
                video_id=None if kind is DocKind.IMAGE else f"v{i % 7}",
                tags=[t for t, on in (("red", i % 2 == 0), ("dog", i % 5 == 0)) if on],
                width=int(rng.integers(50, 1000)),
                height=int(rng.integers(50, 1000)),
                taken_at=datetime(2021 + i % 4, 1 + i % 12, 1 + i % 28, tzinfo=UTC) if photo else None,
                camera=["Canon EOS 5D", "Apple iPhone 13", None][i // 3 % 3] if photo else None,
                gps_lat=float(rng.uniform(-60, 60)) if photo else None,
                gps_lon=float(rng.uniform(-180, 180)) if photo else None,
                clip_vector=vector / np.linalg.norm(vector),
            )
        )
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> object:
    index = LanceDBIndex(str(tmp_path_factory.mktemp("ann-filters") / "db"), "media", refresh_s=0)
    index.create(IndexSpec(clip_dim=DIM))
    index.upsert(docs(np.random.default_rng(0)))
    return index.table


@pytest.mark.parametrize("flt", FILTERS, ids=[str(i) for i in range(len(FILTERS))])
def test_graph_filter_selects_what_the_sql_filter_selects(table: object, flt: IndexFilter) -> None:
    fields = table.to_arrow().select(_FIELD_COLUMNS)  # type: ignore[attr-defined]
    in_memory = {fields["id"][i].as_py() for i in np.flatnonzero(filter_mask(fields, flt))}
    where = where_clause(flt)
    by_sql = set(table.search().where(where).select(["id"]).limit(None).to_arrow()["id"].to_pylist())  # type: ignore[attr-defined]
    assert in_memory == by_sql
    assert 0 < len(by_sql) < ROWS  # each filter selects something, and not everything


def test_every_filter_field_is_covered() -> None:
    """A new `IndexFilter` field must be added to `filter_mask` and to FILTERS above."""
    used = {f.name for flt in FILTERS for f in dataclasses.fields(flt) if getattr(flt, f.name) != f.default}
    assert used == {f.name for f in dataclasses.fields(IndexFilter)}
