"""What the routes ask of the search service (items, media, health, image limits, caption mode),
through the real app, over a stand-in index: the routes reach nothing but the service."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.errors import ModelLoadError
from mediasearch.core.records import DocKind, IndexDocument, SearchRequest, stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore, ObjectInfo, ObjectStore, StoreError, open_store
from mediasearch.index.base import VectorIndex
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LazyTextEmbedder, QueryEncoder, TextVectoriser
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import QueryError, SearchService
from tests.conftest import image_bytes


class Documents:
    """Just the reads the service makes, over a dict."""

    def __init__(self, docs: Sequence[IndexDocument] = ()) -> None:
        self.docs = {d.id: d for d in docs}

    def get(self, id: str) -> IndexDocument | None:
        return self.docs.get(id)

    def count(self, filter: object = None) -> int:
        return len(self.docs)

    def probe(self) -> int:
        return len(self.docs)


class NoEncoder(QueryEncoder):
    def encode_text(self, text: str) -> np.ndarray:
        raise AssertionError("caption mode must not use the CLIP encoder")

    def encode_image(self, data: bytes) -> np.ndarray:
        raise AssertionError("not used here")


def document(uri: str, **fields: Any) -> IndexDocument:
    return IndexDocument(
        id=stable_id(uri), kind=DocKind.IMAGE, uri=uri, clip_vector=np.ones(4, np.float32), **fields
    )


def service_for(
    store: ObjectStore | None = None,
    docs: Sequence[IndexDocument] = (),
    text_embedder: TextVectoriser | None = None,
) -> SearchService:
    return SearchService(
        cast(VectorIndex, Documents(docs)), NoEncoder(), store, MediaLinks(), text_embedder=text_embedder
    )


def client_for(service: SearchService, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(**settings), service=service))


# ---- caption mode without a local text embedder -------------------------------------------------------


class Builds:
    """A text-embedder builder that counts its calls and fails or succeeds as told."""

    def __init__(self, result: Callable[[], TextVectoriser]) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> TextVectoriser:
        self.calls += 1
        return self.result()


def not_installed() -> TextVectoriser:
    raise ModuleNotFoundError("No module named 'transformers'", name="transformers")


def test_caption_mode_without_the_embedders_libraries_is_a_501_with_the_reason() -> None:
    build = Builds(not_installed)
    client = client_for(service_for(text_embedder=LazyTextEmbedder(build)))
    for _ in range(2):
        r = client.post("/search", json={"text": "a dog on a beach", "mode": "caption"})
        assert r.status_code == 501, r.text
        body = r.json()
        assert body["detail"] == {"field": "mode"}
        assert body["error"].startswith("caption search is not available on this server")
        assert "'transformers' is not installed" in body["error"]
    assert build.calls == 1  # a missing library is not looked for again on every query


class FailsToLoad:
    dim = 4

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelLoadError("cannot load text embedder 'no-such-model': not found")


def test_caption_mode_with_a_model_that_cannot_load_is_a_503() -> None:
    client = client_for(service_for(text_embedder=FailsToLoad()))
    r = client.post("/search", json={"text": "a dog", "mode": "caption"})
    assert r.status_code == 503
    error = r.json()["error"]
    assert error.startswith("caption search is unavailable: the server cannot load its caption text model")
    assert "the clip and hybrid modes work" in error
    assert "no-such-model" not in r.text  # the loader's own words go to the log


class Fixed:
    dim = 3

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.full((len(texts), self.dim), 0.5, np.float32)


def test_lazy_text_embedder_builds_once_on_first_use() -> None:
    build = Builds(Fixed)
    lazy = LazyTextEmbedder(build)
    assert build.calls == 0  # building the service imports no model
    assert lazy.embed(["a", "b"]).shape == (2, 3)
    assert lazy.dim == 3
    assert build.calls == 1


# ---- items, media, health -------------------------------------------------------------------------------


def test_item_and_media_from_a_bucket_are_the_objects_bytes(s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/media")
    png = image_bytes((200, 10, 10))
    store.put("photos/a.png", png)
    store.put("photos/notes.bin", b"opaque")
    doc = document(store.uri("photos/a.png"), width=64, height=48)
    other = document(store.uri("photos/notes.bin"))
    client = client_for(service_for(store, [doc, other]))

    item = client.get(f"/items/{doc.id}").json()
    assert item["id"] == doc.id and item["width"] == 64 and "clip_vector" not in item
    assert "X-Amz-Signature" in item["url"]  # S3 media are presigned links, not served by the API

    r = client.get(f"/media/{doc.id}")
    assert r.status_code == 200 and r.content == png
    assert r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "private, max-age=3600"
    r = client.get(f"/media/{doc.id}/thumbnail")  # no thumbnail of its own: the image itself
    assert r.status_code == 200 and r.content == png
    r = client.get(f"/media/{other.id}")
    assert r.content == b"opaque" and r.headers["content-type"] == "application/octet-stream"


def test_items_and_media_that_are_not_there_are_404s_naming_the_item(s3_bucket: str) -> None:
    store = open_store(f"s3://{s3_bucket}/media")
    gone = document(store.uri("photos/gone.png"))
    client = client_for(service_for(store, [gone]))

    r = client.get("/items/nope")
    assert r.status_code == 404 and r.json() == {"error": "no item with id 'nope'", "detail": None}
    assert client.get("/media/nope").json()["error"] == "no item with id 'nope'"
    r = client.get(f"/media/{gone.id}/strip")
    assert r.status_code == 404 and r.json()["error"] == f"item {gone.id!r} has no strip"
    r = client.get(f"/media/{gone.id}")
    assert r.status_code == 404
    assert r.json() == {"error": "media not found", "detail": {"id": gone.id, "part": "media"}}
    assert s3_bucket not in r.text


def test_local_media_is_the_stores_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("clip.mp4", b"0123456789" * 10)
    doc = document(store.uri("clip.mp4"))
    service = service_for(store, [doc])
    media = service.media(doc.id, "media")
    assert media.path == store.local_path("clip.mp4") and media.data is None
    assert media.media_type == "video/mp4"
    r = client_for(service).get(f"/media/{doc.id}", headers={"range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == b"0123456789"


def test_health_counts_the_documents(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    body = client_for(service_for(store, [document(store.uri("a.png")), document(store.uri("b.png"))])).get(
        "/health"
    )
    assert body.json()["status"] == "ok" and body.json()["documents"] == 2


# ---- image limits ---------------------------------------------------------------------------------------


class Unreachable(LocalStore):
    """A store whose every read fails as a broken bucket would (access denied, throttled)."""

    def stat(self, key: str) -> ObjectInfo | None:
        raise StoreError(f"cannot stat {self.uri(key)}: AccessDenied")

    def get(self, key: str) -> bytes:
        raise StoreError(f"cannot read {self.uri(key)}: AccessDenied")


def test_an_image_uri_the_store_cannot_stat_is_a_4xx_not_a_500(tmp_path: Path) -> None:
    store = Unreachable(tmp_path)
    r = client_for(service_for(store)).post("/search", json={"image_uri": store.uri("photos/a.png")})
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == {"field": "image_uri"} and "AccessDenied" in r.json()["error"]


@pytest.mark.parametrize(("size", "refused"), [(2048, True), (2047, False)])
def test_image_limit_is_on_the_decoded_bytes(size: int, refused: bool) -> None:
    request = SearchRequest(image=base64.b64encode(b"x" * size).decode())
    if not refused:
        service_for().check_image_size(request, 2047)
        return
    with pytest.raises(QueryError) as caught:
        service_for().check_image_size(request, 2047)
    assert caught.value.status == 413 and caught.value.detail == {"field": "image", "limit_bytes": 2047}
