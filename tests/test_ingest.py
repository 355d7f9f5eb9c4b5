"""Loader and incremental ingest: idempotent, resumable, failures reported and never indexed."""

from __future__ import annotations

import pytest

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import DocKind, stable_id
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader
from mediasearch.indexing.pipeline import ingest
from tests.conftest import COLOURS, image_bytes


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "media")
    for name, colour in COLOURS.items():
        store.put(f"{name}.png", image_bytes(colour))
    store.put("broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    return store


@pytest.fixture
def index(tmp_path) -> LanceDBIndex:
    return LanceDBIndex(str(tmp_path / "lancedb"), "media")


@pytest.fixture
def handler(clip_model) -> ClipHandler:
    return ClipHandler(clip_model, decode_workers=2)


def test_ingest_indexes_good_images_and_reports_bad_ones(store, index, handler) -> None:
    report = ingest(store, index, handler, batch_size=4, progress=False)
    assert report.scanned == 7 and report.unchanged == 0
    assert report.load.indexed == 6 and index.count() == 6
    assert [f.uri for f in report.failures] == [store.uri("broken.jpg")]
    assert index.get(stable_id(store.uri("broken.jpg"))) is None
    doc = index.get(stable_id(store.uri("red.png")))
    assert doc is not None and doc.kind is DocKind.IMAGE and (doc.width, doc.height) == (64, 48)
    assert doc.fingerprint == store.stat("red.png").fingerprint
    # Artefacts live beside the media, in the work area, and are not scanned as media.
    layout = WorkLayout("_mediasearch")
    keys = [o.key for o in store.list("_mediasearch")]
    assert keys and all(layout.is_manifest(k) or layout.is_output(k) for k in keys)
    assert {k for k in keys if layout.is_output(k)} == set(report.transform.outputs)


def test_rerun_is_a_no_op_and_changes_are_picked_up(store, index, handler) -> None:
    ingest(store, index, handler, progress=False)
    first = index.get_with_vectors(stable_id(store.uri("blue.png")))
    again = ingest(store, index, handler, progress=False)
    # Only the broken image is tried again (it never got indexed: the failure may have been transient).
    assert again.unchanged == 6 and again.transform.records == 1 and index.count() == 6
    assert len(again.failures) == 1

    store.put("blue.png", image_bytes(COLOURS["green"], size=(30, 30)))
    store.put("new.png", image_bytes(COLOURS["white"], size=(20, 20)))
    third = ingest(store, index, handler, progress=False)
    assert third.unchanged == 5 and third.transform.records == 3  # blue, new and the broken one
    assert index.count() == 7
    updated = index.get_with_vectors(stable_id(store.uri("blue.png")))
    assert updated is not None and (updated.width, updated.height) == (30, 30)
    assert first is not None and not (updated.clip_vector == first.clip_vector).all()


def test_loader_alone_is_idempotent(store, index, handler) -> None:
    report = ingest(store, index, handler, progress=False)
    loader = Loader(store, index, WorkLayout("_mediasearch"), progress=False)
    keys = loader.output_keys(handler.output_tag)
    assert keys == report.transform.outputs
    for _ in range(2):
        again = loader.load(keys)
        assert again.indexed == 6 and again.failed == 1
        assert index.count() == 6


def _gif(frames: int) -> bytes:
    import io

    from PIL import Image

    images = [Image.new("RGB", (48, 32), (40 * i, 200, 90)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=frames > 1, append_images=images[1:], duration=500, loop=0)
    return buf.getvalue()


def test_a_single_frame_gif_is_an_image_and_an_animated_one_a_video(tmp_path, clip_model) -> None:
    from mediasearch.indexing.manifests import list_media

    store = LocalStore(tmp_path / "media")
    store.put("still.gif", _gif(1))
    store.put("anim.gif", _gif(6))
    listing = list_media(store)
    assert [o.key for o in listing.images] == ["still.gif"] and [o.key for o in listing.videos] == [
        "anim.gif"
    ]

    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    report = ingest(store, index, ClipHandler(clip_model), progress=False)
    still = index.get(stable_id(store.uri("still.gif")))
    assert still is not None and still.kind is DocKind.IMAGE and (still.width, still.height) == (48, 32)
    anim = index.get(stable_id(store.uri("anim.gif")))
    assert anim is not None and anim.kind is DocKind.VIDEO, report.failures
