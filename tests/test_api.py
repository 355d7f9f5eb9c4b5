"""The HTTP contract: /search, /items, /media, /health, errors as JSON, the API key."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mediasearch.core.records import stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import COLOURS, image_bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory, clip_model):
    root = tmp_path_factory.mktemp("api")
    store = LocalStore(root / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    index = LanceDBIndex(str(root / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), progress=False)
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return store, service


def client_for(env, **settings: Any) -> TestClient:
    store, service = env
    return TestClient(create_app(Settings(store=str(store.root), **settings), service=service))


@pytest.fixture(scope="module")
def client(env) -> TestClient:
    return client_for(env)


def test_health(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["documents"] == 6


def test_text_search(client: TestClient) -> None:
    r = client.post("/search", json={"text": "a red thing", "k": 3, "kinds": ["image"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 3 and body["took_ms"] >= 0
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    first = body["results"][0]
    assert first["kind"] == "image" and first["url"] == f"/media/{first['id']}"
    assert "cosine similarity" in first["explanation"]
    assert r.headers["x-request-id"]


def test_image_search_finds_the_same_image_first(env, client: TestClient) -> None:
    store, _ = env
    data = store.get("photos/blue.png")
    r = client.post("/search", json={"image": base64.b64encode(data).decode(), "k": 2})
    best = r.json()["results"][0]
    assert best["id"] == stable_id(store.uri("photos/blue.png"))
    assert best["score"] == pytest.approx(1.0, abs=1e-3)


def test_image_uri_inside_the_store(env, client: TestClient) -> None:
    store, _ = env
    r = client.post("/search", json={"image_uri": store.uri("photos/green.png"), "k": 1})
    assert r.json()["results"][0]["id"] == stable_id(store.uri("photos/green.png"))


@pytest.mark.parametrize(
    "uri",
    ["file:///etc/passwd", "https://example.com/x.png", "s3://other-bucket/x.png", "../media/photos/red.png"],
)
def test_image_uri_outside_the_store_is_refused(client: TestClient, uri: str) -> None:
    r = client.post("/search", json={"image_uri": uri})
    assert r.status_code == 400
    assert r.json()["detail"] == {"field": "image_uri"}
    assert "inside the store" in r.json()["error"]


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"text": "a", "k": 0}, 422, "k"),
        ({"text": "a", "k": 1000}, 422, "k"),
        ({"text": "x" * 5000}, 422, "text"),
        ({"text": "a", "kinds": ["audio"]}, 422, "kinds.0"),
        ({"text": "a", "unknown": 1}, 422, "unknown"),
        ({"image": "not base64!!"}, 400, "image"),
        ({"image": base64.b64encode(b"not an image").decode()}, 400, "image"),
        ({"video_id": "nope"}, 404, "video_id"),
        # The schema says it too: text needs a non-space character.
        ({"text": "   "}, 422, "text"),
    ],
)
def test_bad_input_is_a_json_4xx_naming_the_field(client: TestClient, payload, status, field) -> None:
    r = client.post("/search", json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}
    detail = body["detail"]
    fields = [d["field"] for d in detail] if isinstance(detail, list) else [detail["field"]]
    assert field in fields
    assert "Traceback" not in r.text


def test_malformed_json_body(client: TestClient) -> None:
    r = client.post("/search", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid request"


def test_items_and_media(env, client: TestClient) -> None:
    store, _ = env
    item_id = stable_id(store.uri("photos/yellow.png"))
    item = client.get(f"/items/{item_id}").json()
    assert item["kind"] == "image" and item["width"] == 64 and "clip_vector" not in item
    media = client.get(item["url"])
    assert media.status_code == 200 and media.headers["content-type"] == "image/png"
    assert media.content == store.get("photos/yellow.png")
    assert client.get(f"/media/{item_id}/thumbnail").status_code == 200
    missing = client.get("/items/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "no item with id 'nope'"


def test_api_key(env) -> None:
    client = client_for(env, api_key="s3cret")
    assert client.post("/search", json={"text": "a"}).status_code == 401
    assert client.post("/search", json={"text": "a"}, headers={"x-api-key": "wrong"}).status_code == 401
    assert client.post("/search", json={"text": "a"}, headers={"x-api-key": "s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # load balancers probe without a key


def test_request_size_limit(env) -> None:
    client = client_for(env, max_request_bytes=2048)
    r = client.post("/search", json={"image": "A" * 4096})
    assert r.status_code == 413 and r.json()["error"] == "request too large"


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/search", "/items/{item_id}", "/videos/{video_id}/similar", "/health"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
