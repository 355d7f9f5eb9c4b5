"""Honest answers when the index cannot serve: /health reads the index, and a missing collection,
a missing full-text index or damaged data is a 503 with the reason, never a 500 or "ok"."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.models.clip import ClipModel
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import image_bytes
from tests.freshness import write_documents

NO_FTS = "the full-text index of collection 'media' is not built yet: run `mediasearch ingest` to build it"


def client_over(index: LanceDBIndex, clip_model: ClipModel, root: Path) -> TestClient:
    store = LocalStore(root / "media")
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return TestClient(create_app(Settings(store=str(store.root)), service=service))


def dim(clip_model: ClipModel) -> int:
    return int(LocalEncoder(clip_model).encode_text("x").shape[0])


def reason(response: httpx.Response, status: int = 503) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    text: str = body["detail"]["reason"]
    return text


def test_health_reads_the_index(tmp_path: Path, clip_model: ClipModel) -> None:
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    write_documents(index, 4, "a", dim(clip_model))
    body = client_over(index, clip_model, tmp_path).get("/health").json()
    assert body["status"] == "ok" and body["documents"] == 4


def test_health_without_a_collection_is_503_not_ok_with_nothing(
    tmp_path: Path, clip_model: ClipModel
) -> None:
    uri = tmp_path / "lancedb"
    client = client_over(LanceDBIndex(str(uri), "media"), clip_model, tmp_path)
    r = client.get("/health")
    assert reason(r) == f"no index at {uri}/media: run `mediasearch ingest` to build it"
    assert r.json()["error"] == "index not ready"


# ---- damaged data ---------------------------------------------------------------------------------------


@pytest.fixture
def damaged(tmp_path: Path, clip_model: ClipModel) -> TestClient:
    """Three writes (three data files), the full-text index built, then the last data file cut in half:
    a read of the first rows alone would not notice."""
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    for prefix in ("a", "b", "c"):
        write_documents(index, 4, prefix, dim(clip_model))
    index.optimize()
    data = sorted((tmp_path / "lancedb" / "media.lance" / "data").glob("*.lance"), key=os.path.getmtime)
    assert len(data) >= 3
    os.truncate(data[-1], data[-1].stat().st_size // 2)
    return client_over(index, clip_model, tmp_path)


def test_damaged_data_is_503_with_the_reason_on_every_route(damaged: TestClient, tmp_path: Path) -> None:
    image = base64.b64encode(image_bytes((200, 10, 10))).decode()
    responses = {
        "health": damaged.get("/health"),
        "text": damaged.post("/search", json={"text": "an item"}),
        "text, images": damaged.post("/search", json={"text": "an item", "kinds": ["image"]}),
        "hybrid": damaged.post("/search", json={"text": "item", "mode": "hybrid"}),
        "image": damaged.post("/search", json={"image": image}),
        "similar": damaged.get("/videos/a-0/similar"),
        "item": damaged.get("/items/a-0"),
        "media": damaged.get("/media/a-0"),
    }
    for route, r in responses.items():
        assert r.status_code == 503, f"{route}: {r.status_code} {r.text}"
        assert r.json()["error"] == "index unreadable", route
        assert reason(r).startswith("collection 'media' could not be read"), route
        # The reason names the collection, never a file, a path or the backend's own words.
        assert str(tmp_path) not in r.text and "lance" not in r.text.lower(), route
        assert r.json()["detail"]["request_id"] == r.headers["x-request-id"]


def test_the_server_recovers_once_the_data_is_readable_again(tmp_path: Path, clip_model: ClipModel) -> None:
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    write_documents(index, 3, "a", dim(clip_model))
    (data,) = (tmp_path / "lancedb" / "media.lance" / "data").glob("*.lance")
    whole = data.read_bytes()
    client = client_over(index, clip_model, tmp_path)
    assert client.get("/health").status_code == 200
    os.truncate(data, len(whole) // 2)
    assert client.get("/health").status_code == 503
    data.write_bytes(whole)  # e.g. restored from a backup: no restart needed
    assert client.get("/health").json()["documents"] == 3


# ---- hybrid before the full-text index exists -----------------------------------------------------------


def test_concurrent_hybrid_queries_without_the_full_text_index(tmp_path: Path, clip_model: ClipModel) -> None:
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    write_documents(index, 6, "a", dim(clip_model))  # written, but no writer ran optimize()
    app = create_app(
        Settings(store=str(tmp_path / "media")),
        service=SearchService(index, LocalEncoder(clip_model), LocalStore(tmp_path / "media"), MediaLinks()),
    )
    responses: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def query() -> None:
        with TestClient(app) as client:
            barrier.wait()
            responses.append(
                client.post("/search", json={"text": "item", "mode": "hybrid", "kinds": ["image"]})
            )

    threads = [threading.Thread(target=query) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(responses) == 8
    assert [r.status_code for r in responses] == [503] * 8, [r.text for r in responses]
    assert {reason(r) for r in responses} == {NO_FTS}
    assert {r.json()["error"] for r in responses} == {"index not ready"}
    index.table.checkout_latest()
    assert list(index.table.list_indices()) == []  # no query built anything

    index.optimize()  # what a writer does at the end of its write
    with TestClient(app) as client:
        r = client.post("/search", json={"text": "item", "mode": "hybrid", "kinds": ["image"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 6 and r.json()["results"][0]["explanation"].startswith("hybrid")
