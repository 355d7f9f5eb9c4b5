"""EXIF at ingest (taken-at, camera, GPS) and the filters on it, on both backends and through the API."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image
from pydantic import ValidationError

from mediasearch.core.exif import PhotoMetadata, exif_bytes, gps_degrees, parse_exif_datetime, read_exif
from mediasearch.core.records import PHOTO_TIMES, DocKind, IndexDocument, SearchFilters
from mediasearch.index.base import IndexFilter, IndexSpec, VectorIndex
from mediasearch.query.search import index_filter
from tests.test_index_contract import open_backend


def jpeg(exif: bytes | Image.Exif | None = None, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    if exif is None:
        image.save(buf, format=fmt)
    else:
        image.save(buf, format=fmt, exif=exif)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_full_exif_block_reads_back(fmt: str) -> None:
    data = jpeg(
        exif_bytes(datetime(2024, 5, 1, 14, 30), "+02:00", "Canon", "Canon EOS 5D", -33.8688, -151.2093), fmt
    )
    meta = read_exif(data)
    # 14:30 at +02:00 is 12:30 UTC; south and west are negative.
    assert meta.taken_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert meta.camera == "Canon EOS 5D"
    assert meta.gps_lat == pytest.approx(-33.8688, abs=1e-6)
    assert meta.gps_lon == pytest.approx(-151.2093, abs=1e-6)


def test_north_east_positive_and_make_joined_to_model() -> None:
    meta = read_exif(jpeg(exif_bytes(make="FUJIFILM", model="X-T3", lat=48.8566, lon=2.3522)))
    assert meta.camera == "FUJIFILM X-T3"
    assert meta.gps_lat == pytest.approx(48.8566, abs=1e-6) and meta.gps_lon == pytest.approx(
        2.3522, abs=1e-6
    )
    assert meta.taken_at is None


def test_without_an_offset_the_wall_clock_is_kept_as_utc() -> None:
    meta = read_exif(jpeg(exif_bytes(datetime(2023, 12, 31, 23, 59, 59))))
    assert meta.taken_at == datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "offset", "expected"),
    [
        ("2024:05:01 10:00:00", "-05:00", datetime(2024, 5, 1, 15, 0, tzinfo=UTC)),
        (b"2024:05:01 10:00:00\x00", None, datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("0000:00:00 00:00:00", None, None),  # what cameras write when the clock was never set
        ("    :  :     :  :  ", None, None),
        ("2024-05-01 10:00:00", None, None),
        ("2024:13:01 10:00:00", None, None),
        (12345, None, None),
        ("2024:05:01 10:00:00", "+99:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),  # a bad offset is ignored
    ],
)
def test_exif_datetimes(value: Any, offset: Any, expected: datetime | None) -> None:
    assert parse_exif_datetime(value, offset) == expected


@pytest.mark.parametrize(
    ("dms", "ref", "limit", "expected"),
    [
        ((40, 26, 46.0), "N", 90, 40.446111),
        ((40, 26, 46.0), "S", 90, -40.446111),
        ((79, 58, 56.0), b"W", 180, -79.982222),
        ((79, 58, 56.0), "E", 180, 79.982222),
        ((40, 26, 46.0), None, 90, None),  # no hemisphere: no position
        ((40, 26, 46.0), "X", 90, None),
        ((91, 0, 0), "N", 90, None),
        ((10, 61, 0), "N", 90, None),
        ((10, 0), "N", 90, None),
        ("garbage", "N", 90, None),
        (((1, 0), 0, 0), "N", 90, None),  # a zero denominator
    ],
)
def test_gps_degrees(dms: Any, ref: Any, limit: float, expected: float | None) -> None:
    got = gps_degrees(dms, ref, limit)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-6))


def test_malformed_exif_records_nothing_for_the_bad_field_only() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Nikon"
    exif[0x0110] = "D750"
    exif[ExifTags.IFD.Exif] = {0x9003: "not a date at all"}
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (1.0, 2.0, 3.0)}  # a latitude without a longitude
    meta = read_exif(jpeg(exif))
    assert meta == PhotoMetadata(camera="Nikon D750")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image",
        jpeg(),  # no EXIF at all
        # A JPEG whose APP1 Exif segment is cut short: the header claims an IFD that is not there.
        jpeg(b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x0f"),
    ],
)
def test_unreadable_exif_is_empty_never_an_error(data: bytes) -> None:
    assert read_exif(data) == PhotoMetadata()


# ------------------------------------------------------------------------------------ filters

DIM = 8
PHOTOS: dict[str, dict[str, Any]] = {
    "paris": dict(taken_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), camera="Canon EOS 5D", gps_lat=48.8566, gps_lon=2.3522),
    "sydney": dict(taken_at=datetime(2023, 1, 15, 8, 0, tzinfo=UTC), camera="Apple iPhone 13", gps_lat=-33.8688, gps_lon=151.2093),
    "fiji": dict(taken_at=datetime(2022, 7, 4, 0, 0, tzinfo=UTC), camera="Apple iPhone 13", gps_lat=-17.7134, gps_lon=178.065),
    "samoa": dict(taken_at=datetime(2024, 5, 1, 11, 59, 59, tzinfo=UTC), camera="Canon EOS 5D", gps_lat=-13.759, gps_lon=-172.1046),
    "nyc": dict(taken_at=None, camera=None, gps_lat=40.7128, gps_lon=-74.006),
    "plain": dict(),
}  # fmt: skip


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["lancedb", "opensearch-in-memory", "opensearch"])
def photos(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with open_backend(request.param, tmp_path, "exif") as idx:
        idx.create(IndexSpec(clip_dim=DIM))
        docs = [
            IndexDocument(
                id=name, kind=DocKind.IMAGE, uri=f"file:///p/{name}.jpg", clip_vector=unit(i), **fields
            )
            for i, (name, fields) in enumerate(PHOTOS.items())
        ]
        idx.upsert(docs)
        idx.optimize()
        yield idx


def found(index: VectorIndex, **filters: Any) -> set[str]:
    flt = index_filter(SearchFilters(**filters), (DocKind.IMAGE,))
    by_knn = {h.document.id for h in index.knn(unit(0), 10, flt)}
    by_scan = {d.id for d in index.scan(flt)}
    assert by_knn == by_scan and index.count(flt) == len(by_knn)
    return by_knn


def test_fields_read_back_on_every_backend(photos: VectorIndex) -> None:
    doc = photos.get("paris")
    assert doc is not None and doc.taken_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert doc.camera == "Canon EOS 5D" and doc.gps_lat == pytest.approx(48.8566, abs=1e-4)
    plain = photos.get("plain")
    assert plain is not None and plain.taken_at is None and plain.camera is None and plain.gps_lat is None


def test_taken_at_range(photos: VectorIndex) -> None:
    assert found(photos, taken_after="2024-01-01T00:00:00Z") == {"paris", "samoa"}
    # At or after, and strictly before: the bounds are instants, to the second.
    assert found(photos, taken_after="2024-05-01T12:00:00Z") == {"paris"}
    assert found(photos, taken_before="2024-05-01T12:00:00Z", taken_after="2023-01-01") == {"sydney", "samoa"}
    # An offset is the same instant in UTC: 14:00 at +02:00 is 12:00Z.
    assert found(photos, taken_after="2024-05-01T14:00:00+02:00") == {"paris"}
    assert found(photos, taken_before="2022-07-04T00:00:01") == {"fiji"}  # no zone: UTC


def test_camera_is_exact(photos: VectorIndex) -> None:
    assert found(photos, camera="Apple iPhone 13") == {"sydney", "fiji"}
    assert found(photos, camera="Apple") == set()


def test_gps_bounding_box(photos: VectorIndex) -> None:
    europe = [35.0, -10.0, 60.0, 30.0]
    assert found(photos, bbox=europe) == {"paris"}
    southern = [-90.0, -180.0, 0.0, 180.0]
    assert found(photos, bbox=southern) == {"sydney", "fiji", "samoa"}
    # Across the antimeridian: from 170 E eastwards to 170 W, which holds Fiji and Samoa, not Sydney.
    pacific = [-30.0, 170.0, 0.0, -170.0]
    assert found(photos, bbox=pacific) == {"fiji", "samoa"}
    assert found(photos, bbox=pacific, camera="Canon EOS 5D", taken_after="2024-01-01") == {"samoa"}


def test_opensearch_sends_range_clauses() -> None:
    from mediasearch.index.opensearch import filter_clause

    flt = IndexFilter(
        taken_after=datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        camera="X",
        bbox=(-30.0, 170.0, 0.0, -170.0),
    )
    clause = filter_clause(flt)
    assert clause is not None
    assert clause["bool"]["filter"] == [
        {"range": {"taken_at": {"gte": "2024-05-01T12:00:00.000000Z"}}},
        {"term": {"camera": "X"}},
        {"range": {"gps_lat": {"gte": -30.0, "lte": 0.0}}},
        {
            "bool": {
                "should": [{"range": {"gps_lon": {"gte": 170.0}}}, {"range": {"gps_lon": {"lte": -170.0}}}],
                "minimum_should_match": 1,
            }
        },
    ]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"bbox": [1, 2, 3]}, "bbox.3\n  Field required"),
        ({"bbox": [1, 2, 3, 4, 5]}, "at most 4 items"),
        ({"bbox": [100, 0, 0, 0]}, "bbox.0\n  Input should be less than or equal to 90"),
        ({"bbox": [0, -200, 1, 0]}, "bbox.1\n  Input should be greater than or equal to -180"),
        ({"bbox": [0, 0, "nan", 1]}, "bbox.2\n  Input should be less than or equal to 90"),
        ({"taken_after": "yesterday"}, "valid datetime"),
        ({"camera": ""}, "at least 1 character"),
    ],
)
def test_bad_filters_are_refused(filters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SearchFilters(**filters)


def test_empty_ranges_are_valid_and_hold_nothing(photos: VectorIndex) -> None:
    # What the schema allows is answered, not refused: an inverted box or time range is empty.
    assert found(photos, bbox=[50, -180, 40, 180]) == set()
    assert found(photos, taken_after="2024-05-01T12:00:00Z", taken_before="2024-05-01T12:00:00Z") == set()


# ---------------------------------------------------------------------- at ingest, end to end


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, clip_model: Any) -> Any:
    from mediasearch.core.storage import LocalStore
    from mediasearch.corpus.images import generate_exif_photos
    from mediasearch.index.lancedb import LanceDBIndex
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.pipeline import ingest

    root = tmp_path_factory.mktemp("exif")
    store = LocalStore(root / "media")
    uris = generate_exif_photos(store, "photos")
    index = LanceDBIndex(str(root / "lancedb"), "media")
    report = ingest(store, index, ClipHandler(clip_model), progress=False)
    assert not report.failures, report.failures
    return store, index, {key.rsplit("/", 1)[-1]: uri for key, uri in uris.items()}, clip_model


def test_ingest_reads_exif_from_the_images(ingested: Any) -> None:
    from mediasearch.core.records import stable_id

    _, index, uris, _ = ingested
    docs = {d.uri.rsplit("/", 1)[-1]: d for d in index.get_many(stable_id(u) for u in uris.values())}
    assert len(docs) == 6
    paris = docs["paris.jpg"]
    assert paris.taken_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC) and paris.camera == "Canon EOS 5D"
    assert paris.gps_lat == pytest.approx(48.8566, abs=1e-6) and paris.gps_lon == pytest.approx(
        2.3522, abs=1e-6
    )
    assert docs["lima.png"].gps_lon == pytest.approx(-77.0428, abs=1e-6)  # PNG eXIf, west negative
    assert docs["no-gps.jpg"].gps_lat is None and docs["no-gps.jpg"].camera == "Canon EOS 5D"
    # The malformed date costs only the date.
    broken = docs["broken-date.jpg"]
    assert broken.taken_at is None and broken.camera == "FUJIFILM X-T3" and broken.gps_lat is not None


def test_api_filters_and_shows_exif(ingested: Any) -> None:
    from fastapi.testclient import TestClient

    from mediasearch.core.settings import Settings
    from mediasearch.query.api import create_app
    from mediasearch.query.encoder import LocalEncoder
    from mediasearch.query.links import MediaLinks
    from mediasearch.query.search import SearchService

    store, index, _, model = ingested
    service = SearchService(index, LocalEncoder(model), store, MediaLinks())
    client = TestClient(create_app(Settings(store=str(store.root)), service=service))

    def names(filters: dict[str, Any]) -> list[str]:
        response = client.post(
            "/search", json={"text": "a photo", "kinds": ["image"], "k": 20, "filters": filters}
        )
        assert response.status_code == 200, response.text
        return sorted(r["uri"].rsplit("/", 1)[-1] for r in response.json()["results"])

    assert names({"camera": "Apple iPhone 13"}) == ["new-york.jpg", "sydney.jpg"]
    assert names({"taken_after": "2024-01-01"}) == ["no-gps.jpg", "paris.jpg"]
    assert names({"bbox": [-90, -180, 0, 0]}) == ["lima.png"]  # south-west quarter of the globe
    assert names({"bbox": [30, 100, 50, 160], "taken_before": "2030-01-01"}) == []  # Tokyo has no date
    shown = client.post(
        "/search",
        json={
            "text": "x",
            "kinds": ["image"],
            "filters": {"camera": "FUJIFILM X-T3", "taken_after": "2021-01-01"},
        },
    )
    (lima,) = shown.json()["results"]
    assert lima["camera"] == "FUJIFILM X-T3" and lima["taken_at"].startswith("2021-03-02T09:15:00")
    for bad in ({"bbox": [0, 0, 1]}, {"taken_after": "soon"}, {"bbox": [95, 0, 96, 1]}):
        refused = client.post("/search", json={"text": "x", "filters": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["field"].startswith("filters.")


def test_cli_search_filters(ingested: Any, tiny_clip_dir: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from mediasearch.cli import app
    from mediasearch.core.settings import get_settings

    store, index, _, _ = ingested
    env = {
        "MEDIASEARCH_LANCEDB_URI": index.uri,
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_STORE": str(store.root),
    }

    def run(*args: str) -> Any:
        get_settings.cache_clear()
        return CliRunner().invoke(app, ["search", "a photo", "--kind", "image", *args], env=env)

    found = run("--camera", "Apple iPhone 13", "--bbox", "-90,0,0,180", "--json")
    assert found.exit_code == 0, found.output
    assert [r["uri"].rsplit("/", 1)[-1] for r in json.loads(found.stdout)["results"]] == ["sydney.jpg"]
    for args, message in [
        (
            ["--bbox", "1,2,x,4"],
            "error: --bbox: give four numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, not '1,2,x,4'",
        ),
        (
            ["--bbox", "1,2,3"],
            "error: --bbox: give four numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, not '1,2,3'",
        ),
        (["--bbox", "95,2,3,4"], "error: --bbox: Input should be less than or equal to 90"),
        (["--taken-after", "soon"], "error: --taken-after: Input should be a valid datetime"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), (
            result.output
        )


@pytest.mark.parametrize(
    ("filters", "bound"),
    [
        ({"taken_after": "9999-12-31T23:59:59-14:00"}, PHOTO_TIMES[1]),  # past the last datetime in UTC
        ({"taken_before": "0001-01-01T00:00:00+14:00"}, PHOTO_TIMES[0]),
        ({"taken_after": "1500-01-01"}, PHOTO_TIMES[0]),
        ({"taken_before": "2262-05-01"}, PHOTO_TIMES[1]),
    ],
)
def test_times_beyond_the_photo_range_are_clamped(filters: dict[str, Any], bound: datetime) -> None:
    (name,) = filters
    assert getattr(SearchFilters(**filters), name) == bound


def test_exif_times_outside_the_photo_range_are_not_recorded() -> None:
    assert parse_exif_datetime("9999:12:31 23:59:59") is None
    assert parse_exif_datetime("1601:01:01 00:00:00") is None


def test_extreme_bounds_run_on_every_backend(photos: VectorIndex) -> None:
    assert found(photos, taken_after="0001-01-01", taken_before="9999-12-31T23:59:59Z") == {
        "paris",
        "sydney",
        "fiji",
        "samoa",
    }
