"""Shared fixtures: tiny random models saved to disk, a moto S3 server over HTTP, stores and indexes."""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The cache_dir setting: model digests and the ONNX exports that the default engine (ONNX Runtime on CPU)
# makes on first use go to one folder per test session, shared with subprocesses, never the user's.
os.environ.setdefault("MEDIASEARCH_CACHE_DIR", tempfile.mkdtemp(prefix="mediasearch-test-cache-"))

import numpy as np
import pytest
from PIL import Image

from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip

# moto's werkzeug server logs every request at INFO; a failing test's report should show ours.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP saved like a hub checkpoint: loading it runs the real from_pretrained path."""
    return build_random_clip(tmp_path_factory.mktemp("models") / "tiny-clip", size="tiny")


@pytest.fixture(scope="session")
def clip_model(tiny_clip_dir: Path) -> ClipModel:
    return ClipModel(str(tiny_clip_dir), device="cpu", batch_size=8).load()


@pytest.fixture
def app_env(tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings for CLI and app tests: a temp LanceDB and the tiny CLIP, read afresh by get_settings()."""
    from mediasearch.core.settings import get_settings

    monkeypatch.setenv("MEDIASEARCH_LANCEDB_URI", str(tmp_path / "lancedb"))
    monkeypatch.setenv("MEDIASEARCH_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("MEDIASEARCH_DEVICE", "cpu")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 + SageMaker API on a free local port, reached over HTTP like LocalStack or AWS."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def aws_env(moto_endpoint: str, app_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app's settings with AWS calls going to moto; returns moto's endpoint."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_endpoint


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client of moto's endpoint (boto3's clients carry no types here)."""
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    import hashlib

    import boto3

    name = "ms-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    """A small image with a colour pattern, so different colours give different embeddings."""
    rng = np.random.default_rng(sum(colour))
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    arr[: size[1] // 2, : size[0] // 2] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


COLOURS = {
    "red": (220, 20, 30),
    "green": (20, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 20),
    "black": (5, 5, 5),
    "white": (250, 250, 250),
}


def serving_index(lancedb_uri: str | Path, collection: str = "media") -> LanceDBIndex:
    """The index a server would read: the collection's serving generation (one table per model), or the
    collection's own table where nothing was written through generations."""
    from mediasearch.index.generations import StoreCatalog

    serving = StoreCatalog(LocalStore(lancedb_uri), collection).serving()
    return LanceDBIndex(str(lancedb_uri), serving.name if serving is not None else collection)


def small_corpus(root: Path, clip_model: ClipModel) -> tuple[LocalStore, LanceDBIndex]:
    """Six colour images and one short video, ingested with the tiny CLIP: what the API fuzz suites
    search (images, scenes and a video, so every route has something to return)."""
    from mediasearch.corpus.videos import default_specs, write_corpus
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.pipeline import ingest
    from mediasearch.indexing.video import VideoOptions

    store = LocalStore(root / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    short = [s for s in default_specs("videos") if s.key.endswith("short.mp4")]
    write_corpus(store, "videos", specs=short, duplicates=[])
    index = LanceDBIndex(str(root / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), video_options=VideoOptions(max_scene_s=3.0), progress=False)
    return store, index
