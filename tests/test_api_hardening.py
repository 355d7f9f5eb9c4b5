"""API hardening: size limits, decompression bombs, field-naming 4xx, the store boundary, the API key,
CORS, no stack traces or paths in responses, and one structured log line per request."""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mediasearch.core.logs import JsonFormatter, configure_logging
from mediasearch.core.records import stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.base import IndexError_
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import COLOURS, image_bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, clip_model) -> tuple[LocalStore, SearchService, Path]:
    root = tmp_path_factory.mktemp("hardening")
    store = LocalStore(root / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    index = LanceDBIndex(str(root / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), progress=False)
    return store, SearchService(index, LocalEncoder(clip_model), store, MediaLinks()), root


def client_for(env, service: SearchService | None = None, **settings: Any) -> TestClient:
    store, default_service, _ = env
    app = create_app(Settings(store=str(store.root), **settings), service=service or default_service)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(env) -> TestClient:
    return client_for(env)


def assert_json_error(response, status: int, field: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in response.text
    if field is not None:
        detail = body["detail"]
        fields = [d["field"] for d in detail] if isinstance(detail, list) else [detail["field"]]
        assert field in fields, body
    return body


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def noise_png(side: int) -> bytes:
    """Random pixels, so the PNG is about as large as its pixels (3 bytes each)."""
    import numpy as np

    buf = io.BytesIO()
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- sizes -----------------------------------------------------------------------------------------


def test_request_body_over_the_limit_by_content_length(env) -> None:
    client = client_for(env, max_request_bytes=4096)
    r = client.post("/search", json={"image": "A" * 8192})
    body = assert_json_error(r, 413)
    assert body == {"error": "request too large", "detail": {"limit_bytes": 4096}}


def test_chunked_body_over_the_limit_is_cut_off(env) -> None:
    """A chunked upload has no content-length to check: the body is counted as it arrives."""
    client = client_for(env, max_request_bytes=4096)

    def chunks() -> Iterator[bytes]:
        yield b'{"image": "'
        for _ in range(64):
            yield b"A" * 1024
        yield b'"}'

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_json_error(r, 413)


def test_chunked_body_under_the_limit_is_served(env) -> None:
    client = client_for(env, max_request_bytes=4096)
    r = client.post(
        "/search",
        content=iter([b'{"text": "a red', b' thing", "k": 2}']),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 2


def test_bad_content_length_is_refused(client: TestClient) -> None:
    r = client.post(
        "/search", content=b"{}", headers={"content-length": "-1", "content-type": "application/json"}
    )
    assert r.status_code in (400, 413)


def test_decoded_image_bytes_have_their_own_limit(env) -> None:
    client = client_for(env, max_image_bytes=2048)
    big = noise_png(64)
    assert len(big) > 2048
    body = assert_json_error(client.post("/search", json={"image": b64(big)}), 413, "image")
    assert body["detail"]["limit_bytes"] == 2048
    small = noise_png(16)
    assert len(small) < 2048
    assert client.post("/search", json={"image": b64(small), "k": 1}).status_code == 200


def test_image_uri_objects_have_the_same_limit(env) -> None:
    store, _, _ = env
    store.put("big/large.png", noise_png(64))
    client = client_for(env, max_image_bytes=2048)
    r = client.post("/search", json={"image_uri": store.uri("big/large.png")})
    assert_json_error(r, 413, "image_uri")
    assert client.post("/search", json={"image_uri": store.uri("photos/red.png")}).status_code == 200


@pytest.mark.parametrize(("width", "height"), [(7000, 7000), (100_000, 100_000)])
def test_decompression_bombs_are_refused_before_decoding(client: TestClient, width: int, height: int) -> None:
    bomb = png_claiming(width, height)
    assert len(bomb) < 100
    body = assert_json_error(client.post("/search", json={"image": b64(bomb)}), 400, "image")
    assert "pixels" in body["error"] or "exceeds limit" in body["error"]


def test_pixel_limit_follows_settings(env) -> None:
    """An app that builds its own encoder takes the limit from settings."""
    store, service, _ = env
    limited = SearchService(
        service.index, LocalEncoder(service.encoder.model, max_pixels=1000), store, MediaLinks()
    )  # type: ignore[attr-defined]
    client = client_for(env, service=limited)
    r = client.post("/search", json={"image": b64(image_bytes((1, 2, 3), size=(64, 48)))})
    body = assert_json_error(r, 400, "image")
    assert "more than the limit of 1000" in body["error"]


# ---- validation names the field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "x" * 1001}, "text"),
        ({"text": "a", "k": 101}, "k"),
        ({"text": "a", "k": -1}, "k"),
        ({"text": "a", "k": "ten"}, "k"),
        ({"text": "a", "mode": "psychic"}, "mode"),
        ({"text": "a", "kinds": []}, "kinds"),
        ({"text": "a", "filters": {"tags": ["t"] * 17}}, "filters.tags"),
        ({"text": "a", "filters": {"uri_prefix": "x" * 2000}}, "filters.uri_prefix"),
        ({"text": "a", "filters": {"nope": 1}}, "filters.nope"),
        ({"video_id": "v" * 65}, "video_id"),
        ({"image_uri": "f" * 3000}, "image_uri"),
    ],
)
def test_search_validation_names_the_field(client: TestClient, payload: dict, field: str) -> None:
    assert_json_error(client.post("/search", json=payload), 422, field)


def test_two_queries_at_once_are_refused(client: TestClient) -> None:
    body = assert_json_error(client.post("/search", json={"text": "a", "video_id": "b"}), 422)
    assert "exactly one" in json.dumps(body["detail"])


@pytest.mark.parametrize(
    ("query", "field"), [("k=0", "query.k"), ("k=101", "query.k"), ("k=many", "query.k")]
)
def test_similar_videos_k_is_bounded(client: TestClient, query: str, field: str) -> None:
    assert_json_error(client.get(f"/videos/some-video/similar?{query}"), 422, field)


def test_path_ids_are_bounded(client: TestClient) -> None:
    assert_json_error(client.get("/videos/" + "v" * 65 + "/similar"), 422, "path.video_id")
    assert_json_error(client.get("/items/" + "i" * 200), 422, "path.item_id")
    assert_json_error(client.get("/media/" + "i" * 200), 422, "path.item_id")


def test_a_body_that_is_not_an_object(client: TestClient) -> None:
    for content in (b"[]", b"null", b'"text"', b"\xff\xfe"):
        r = client.post("/search", content=content, headers={"content-type": "application/json"})
        assert_json_error(r, 422)


# ---- the store boundary -------------------------------------------------------------------------------


def test_image_uri_cannot_escape_the_store(env, client: TestClient) -> None:
    store, _, root = env
    secret = root / "secret.png"
    secret.write_bytes(image_bytes((9, 9, 9)))
    (store.root / "photos" / "link.png").symlink_to(secret)
    base = store.root_uri.rstrip("/")
    for uri in (
        f"{base}/../secret.png",
        f"{base}/photos/%2E%2E/%2E%2E/secret.png",
        f"{base}/photos/link.png",  # a symlink inside the store that points out of it
        secret.as_uri(),
        str(secret),
    ):
        body = assert_json_error(client.post("/search", json={"image_uri": uri}), 400, "image_uri")
        assert "inside the store" in body["error"], uri


# ---- API key --------------------------------------------------------------------------------------------


def test_api_key_is_compared_in_constant_time(env, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("mediasearch.query.api.security.hmac.compare_digest", spy)
    client = client_for(env, api_key="s3cret")
    assert client.post("/search", json={"text": "a"}, headers={"x-api-key": "s3cre"}).status_code == 401
    assert client.post("/search", json={"text": "a"}, headers={"x-api-key": "s3cret"}).status_code == 200
    assert calls == [(b"s3cre", b"s3cret"), (b"s3cret", b"s3cret")]


def test_api_key_guards_media_and_odd_keys_are_a_401(env) -> None:
    store, _, _ = env
    client = client_for(env, api_key="s3cret")
    item = stable_id(store.uri("photos/red.png"))
    assert_json_error(client.get(f"/media/{item}"), 401)
    assert_json_error(client.get(f"/items/{item}"), 401)
    assert client.get(f"/media/{item}", headers={"x-api-key": "s3cret"}).status_code == 200
    # Not ASCII, very long: still just a wrong key.
    for key in ("s3cr\u00e9t", "k" * 10_000):
        r = client.post("/search", json={"text": "a"}, headers={b"x-api-key": key.encode()})
        assert_json_error(r, 401)


# ---- CORS -------------------------------------------------------------------------------------------------


def test_cors_is_off_unless_configured(client: TestClient) -> None:
    r = client.post("/search", json={"text": "a"}, headers={"origin": "https://elsewhere.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allows_only_configured_origins(env) -> None:
    client = client_for(env, cors_origins=["https://app.example"])
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    ok = client.options("/search", headers={"origin": "https://app.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    denied = client.options("/search", headers={"origin": "https://evil.example", **preflight})
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    simple = client.post("/search", json={"text": "a"}, headers={"origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert simple.headers["x-request-id"]  # CORS responses pass through the request context too


# ---- no stack traces, no paths ------------------------------------------------------------------------------


class Exploding(SearchService):
    def __init__(self, base: SearchService, exc: Exception) -> None:
        super().__init__(base.index, base.encoder, base.store, base.links)
        self.exc = exc

    def search(self, req):  # type: ignore[no-untyped-def]
        raise self.exc


def test_an_unexpected_error_is_a_bare_500_and_logged(env, caplog: pytest.LogCaptureFixture) -> None:
    _, service, _ = env
    client = client_for(env, service=Exploding(service, RuntimeError("boom at /srv/secret/path.py")))
    with caplog.at_level(logging.ERROR, logger="mediasearch.query.api"):
        r = client.post("/search", json={"text": "a"}, headers={"x-request-id": "req-500"})
    body = assert_json_error(r, 500)
    assert body == {"error": "internal error", "detail": {"request_id": "req-500"}}
    assert "secret" not in r.text and "RuntimeError" not in r.text
    record = next(rec for rec in caplog.records if rec.getMessage() == "unhandled error")
    assert record.exc_info is not None and record.request_id == "req-500"  # type: ignore[attr-defined]


def test_index_errors_do_not_leak_the_backends_message(env) -> None:
    _, service, _ = env
    exc = IndexError_("connection refused: https://admin:pw@search.internal:9200")
    client = client_for(env, service=Exploding(service, exc))
    body = assert_json_error(client.post("/search", json={"text": "a"}), 503)
    assert body["error"] == "index unavailable" and "search.internal" not in json.dumps(body)


def test_missing_media_names_the_item_not_the_path(env, tmp_path: Path, clip_model) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("gone/soon.png", image_bytes((1, 200, 3)))
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), progress=False)
    (store.root / "gone" / "soon.png").unlink()
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    client = TestClient(create_app(Settings(store=str(store.root)), service=service))
    item = stable_id(store.uri("gone/soon.png"))
    for url in (f"/media/{item}", f"/media/{item}/thumbnail"):
        body = assert_json_error(client.get(url), 404)
        assert body["error"] == "media not found"
        assert str(tmp_path) not in client.get(url).text and "soon.png" not in client.get(url).text
    assert_json_error(client.get(f"/media/{item}/strip"), 404)


def test_media_is_served_with_range_and_nosniff(env, client: TestClient) -> None:
    store, _, _ = env
    item = stable_id(store.uri("photos/blue.png"))
    r = client.get(f"/media/{item}", headers={"range": "bytes=0-9"})
    assert r.status_code == 206 and len(r.content) == 10
    assert r.headers["x-content-type-options"] == "nosniff"


# ---- the page and its assets ----------------------------------------------------------------------------------


def test_page_and_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    for name in ("index.html", "..%2Fapi.py", "nope.js"):
        assert_json_error(client.get(f"/static/{name}"), 404)


# ---- structured logs ----------------------------------------------------------------------------------------


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mediasearch.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_one_json_log_line_per_request(client: TestClient, access_lines: io.StringIO) -> None:
    r = client.post("/search", json={"text": "a", "k": 1}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    client.get("/items/nope")
    lines = [json.loads(line) for line in access_lines.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == "abc-123"
    assert (first["method"], first["path"], first["status"]) == ("POST", "/search", 200)
    assert first["elapsed_ms"] > 0 and first["level"] == "INFO" and first["logger"] == "mediasearch.access"
    assert (second["path"], second["status"]) == ("/items/nope", 404)
    assert len(second["request_id"]) == 16 and second["request_id"] != "abc-123"


def test_unsafe_request_ids_are_replaced(client: TestClient, access_lines: io.StringIO) -> None:
    for given in ("x" * 65, "a b", "id\u00e9"):
        r = client.get("/health", headers={b"x-request-id": given.encode()})
        assert r.headers["x-request-id"] != given and len(r.headers["x-request-id"]) == 16


def test_rejected_requests_are_logged_too(env, access_lines: io.StringIO) -> None:
    client = client_for(env, max_request_bytes=2048)
    client.post("/search", json={"image": "A" * 4096})
    (line,) = [json.loads(x) for x in access_lines.getvalue().splitlines()]
    assert line["status"] == 413 and line["path"] == "/search"


def test_json_formatter_keeps_the_trace_in_the_log() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info=__import__("sys").exc_info()
        )
    record.request_id = "r1"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed x" and line["request_id"] == "r1"
    assert "ValueError: bad" in line["exc"] and "\n" not in JsonFormatter().format(record)


def test_configure_logging_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        stream = io.StringIO()
        configure_logging("INFO", stream)
        configure_logging("INFO", stream)
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        logging.getLogger("mediasearch.test").info("hello", extra={"n": 1})
        assert json.loads(stream.getvalue().splitlines()[-1])["n"] == 1
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
