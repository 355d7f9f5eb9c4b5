"""Ingest mirrors its source: deletions, renames and moves, touches, append-only, other sources kept.

A local folder here (tests/test_sync_s3.py runs the same on S3). Every case checks the index (what
is searchable), the transform (what was embedded: a rename embeds nothing) and the work area (what is
left of media that are gone), and that every indexed document's thumbnails exist.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import DocKind, IndexDocument, stable_id
from mediasearch.core.storage import LocalStore, ObjectStore
from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle
from mediasearch.index.base import IndexFilter, VectorIndex
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader
from mediasearch.indexing.pipeline import PipelineReport, ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.indexing.video_documents import scene_id
from tests.conftest import COLOURS, image_bytes

OPTIONS = VideoOptions(max_scene_s=3.0, frames_per_scene=2)
WORK = WorkLayout("_mediasearch")
IMAGES = ("red", "green", "blue", "yellow")


def video_bytes(seed: int) -> bytes:
    data, _ = render_video(VideoSpec("v.mp4", 128, 96, 25, scenes_cycle([1.0, 1.2], seed)), seed=seed)
    return data


@pytest.fixture(scope="module")
def videos() -> dict[str, bytes]:
    return {"one": video_bytes(1), "two": video_bytes(2)}


def fill(store: ObjectStore, videos: dict[str, bytes], prefix: str = "") -> None:
    for name in IMAGES:
        store.put(f"{prefix}photos/{name}.png", image_bytes(COLOURS[name]))
    for name, data in videos.items():
        store.put(f"{prefix}clips/{name}.mp4", data)


def run(
    store: ObjectStore, index: VectorIndex, clip_model, *, prefix: str = "", delete: bool = True
) -> PipelineReport:
    return ingest(
        store,
        index,
        ClipHandler(clip_model, decode_workers=1),
        prefix=prefix,
        layout=WorkLayout.for_source(prefix),
        video_options=OPTIONS,
        progress=False,
        delete=delete,
    )


def doc_id(store: ObjectStore, key: str) -> str:
    return stable_id(store.uri(key))


def all_docs(index: VectorIndex) -> list[IndexDocument]:
    ids = [d.id for d in index.scan(IndexFilter(kinds=tuple(DocKind)))]
    return index.get_many_with_vectors(ids)


def assert_thumbnails_exist(store: ObjectStore, index: VectorIndex) -> None:
    """What the page shows of every indexed document can be fetched: no thumbnail or strip 404s."""
    for doc in all_docs(index):
        for uri in (doc.thumbnail, doc.strip):
            if uri is not None:
                key = store.key_of(uri)
                assert key is not None and store.exists(key), f"{doc.kind} {doc.uri}: {uri} is missing"


def video_artefacts(store: ObjectStore, vid: str, layout: WorkLayout = WORK) -> list[str]:
    return [o.key for o in store.list(layout.prefix) if layout.video_of(o.key) == vid]


def outputs(store: ObjectStore, layout: WorkLayout = WORK) -> list[str]:
    return [o.key for o in store.list(layout.outputs_root) if layout.is_output(o.key)]


def load_everything(store: ObjectStore, index: VectorIndex, handler: ClipHandler, layout: WorkLayout = WORK):
    """What `mediasearch load` does: every output the model ever wrote in the work area."""
    loader = Loader(store, index, layout, progress=False)
    return loader.load(loader.output_keys(handler.output_tag))


@pytest.fixture
def indexed(tmp_path: Path, videos: dict[str, bytes], clip_model) -> tuple[LocalStore, LanceDBIndex]:
    store = LocalStore(tmp_path / "media")
    fill(store, videos)
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    first = run(store, index, clip_model)
    assert not first.failures and first.added == 6 and first.load.videos == 2
    return store, index


def test_a_deleted_image_and_video_leave_no_document_and_no_artefact(indexed, clip_model) -> None:
    store, index = indexed
    before = index.count()
    vid = doc_id(store, "clips/one.mp4")
    scenes = index.count(IndexFilter(kinds=(DocKind.SCENE,), video_id=vid))
    assert scenes >= 2 and video_artefacts(store, vid)
    store.delete("photos/red.png")
    store.delete("clips/one.mp4")

    report = run(store, index, clip_model)
    assert (report.added, report.updated, report.unchanged, len(report.failures)) == (0, 0, 4, 0)
    assert sorted(report.sync.removed) == sorted([doc_id(store, "photos/red.png"), vid])
    assert report.transform.records == 0
    assert index.count() == before - 1 - 1 - scenes
    assert index.get(doc_id(store, "photos/red.png")) is None and index.get(vid) is None
    assert index.count(IndexFilter(video_id=vid)) == 0
    # Frames, thumbnails, strip, sidecar and frame manifests are gone, and so are their outputs.
    assert video_artefacts(store, vid) == []
    assert not [k for k in outputs(store) if f"frames-{vid}-" in k]
    assert_thumbnails_exist(store, index)

    # The image manifest is shared with images still there, so it stays; loading every output again
    # (`mediasearch load`) leaves the deleted image out.
    reload = load_everything(store, index, ClipHandler(clip_model))
    assert reload.stale_images == 1 and index.get(doc_id(store, "photos/red.png")) is None
    assert index.count() == before - 2 - scenes


def test_renamed_and_moved_media_keep_their_embeddings(indexed, clip_model) -> None:
    store, index = indexed
    root = store.root
    image_old, video_old = doc_id(store, "photos/red.png"), doc_id(store, "clips/one.mp4")
    old_image = index.get_with_vectors(image_old)
    old_video = index.get_with_vectors(video_old)
    old_scenes = {d.scene: d for d in all_docs(index) if d.kind is DocKind.SCENE and d.video_id == video_old}
    before = index.count()
    # A rename keeps the file's size and modification time, so its fingerprint too.
    os.rename(root / "photos/red.png", root / "photos/crimson.png")
    (root / "moved").mkdir()
    os.rename(root / "clips/one.mp4", root / "moved/first.mp4")

    report = run(store, index, clip_model)
    assert report.transform.records == 0 and report.videos.processed == 0  # nothing embedded or cut
    assert len(report.sync.moved) == 2 and not report.sync.removed and report.added == 0
    assert index.count() == before
    assert index.get(image_old) is None and index.get(video_old) is None
    assert index.count(IndexFilter(video_id=video_old)) == 0

    image = index.get_with_vectors(doc_id(store, "photos/crimson.png"))
    assert image is not None and old_image is not None
    np.testing.assert_array_equal(image.clip_vector, old_image.clip_vector)
    assert image.uri == store.uri("photos/crimson.png") == image.thumbnail
    assert image.content_hash == old_image.content_hash == store.content_hash("photos/crimson.png")

    vid = doc_id(store, "moved/first.mp4")
    video = index.get_with_vectors(vid)
    assert video is not None and old_video is not None
    np.testing.assert_array_equal(video.clip_vector, old_video.clip_vector)
    assert (video.uri, video.video_id, video.strip) == (
        store.uri("moved/first.mp4"),
        vid,
        store.uri(WORK.strip(vid)),
    )
    scenes = {d.scene: d for d in all_docs(index) if d.kind is DocKind.SCENE and d.video_id == vid}
    assert scenes.keys() == old_scenes.keys()
    for n, scene in scenes.items():
        assert scene.id == scene_id(store.uri("moved/first.mp4"), n or 0)
        assert scene.thumbnail == store.uri(WORK.thumb(vid, n or 0))
        np.testing.assert_array_equal(scene.clip_vector, old_scenes[n].clip_vector)
    # The work area follows: the old id's artefacts are gone, the new id has them all.
    assert video_artefacts(store, video_old) == []
    assert store.exists(WORK.sidecar(vid)) and store.exists(WORK.strip(vid))
    assert any(f"frames-{vid}-" in k for k in outputs(store))
    assert not any(f"frames-{video_old}-" in k for k in outputs(store))
    assert_thumbnails_exist(store, index)

    # Nothing left to do; and loading every output again brings no old document back.
    again = run(store, index, clip_model)
    assert again.unchanged == 6 and again.transform.records == 0 and not again.sync.moved
    load_everything(store, index, ClipHandler(clip_model))
    assert index.count() == before and index.get(image_old) is None and index.get(video_old) is None


def test_a_touched_object_only_gets_its_new_fingerprint(indexed, clip_model) -> None:
    store, index = indexed
    before = index.count()
    for key in ("photos/blue.png", "clips/two.mp4"):
        st = (store.root / key).stat()
        os.utime(store.root / key, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    report = run(store, index, clip_model)
    assert sorted(report.sync.touched) == sorted(
        doc_id(store, k) for k in ("photos/blue.png", "clips/two.mp4")
    )
    assert report.transform.records == 0 and report.videos.processed == 0 and index.count() == before
    vid = doc_id(store, "clips/two.mp4")
    now = store.stat("clips/two.mp4")
    assert now is not None
    for doc in all_docs(index):
        if doc.uri in (store.uri("photos/blue.png"), store.uri("clips/two.mp4")):
            assert doc.fingerprint == store.stat(store.key_of(doc.uri) or "").fingerprint  # type: ignore[union-attr]
    # The video's sidecar and frame manifests follow the new fingerprint, so no preprocess redoes it.
    assert store.exists(WORK.frame_manifest(vid, now.fingerprint))
    assert_thumbnails_exist(store, index)
    again = run(store, index, clip_model)
    assert again.unchanged == 6 and not again.sync.touched and again.videos.processed == 0


def test_append_only_keeps_what_is_gone(indexed, clip_model) -> None:
    store, index = indexed
    before = index.count()
    store.delete("photos/red.png")
    os.rename(store.root / "photos/green.png", store.root / "photos/lime.png")

    report = run(store, index, clip_model, delete=False)
    assert not report.sync.removed and not report.sync.moved
    assert report.added == 1 and report.transform.records == 1  # the renamed one is new here
    assert index.count() == before + 1
    for key in ("photos/red.png", "photos/green.png", "photos/lime.png"):
        assert index.get(doc_id(store, key)) is not None

    # Mirroring afterwards removes what is gone (lime is indexed now, so green is not moved but removed).
    mirrored = run(store, index, clip_model)
    assert sorted(mirrored.sync.removed) == sorted(
        doc_id(store, k) for k in ("photos/red.png", "photos/green.png")
    )
    assert index.count() == before - 1


def test_a_changed_video_that_no_longer_decodes_is_unindexed(indexed, clip_model) -> None:
    store, index = indexed
    vid = doc_id(store, "clips/two.mp4")
    store.put("clips/two.mp4", b"not a video any more")
    report = run(store, index, clip_model)
    assert [f.uri for f in report.failures] == [store.uri("clips/two.mp4")]
    assert report.dropped == [vid] and index.get(vid) is None
    assert index.count(IndexFilter(video_id=vid)) == 0
    assert_thumbnails_exist(store, index)


def test_only_this_sources_documents_are_synced(tmp_path: Path, videos: dict[str, bytes], clip_model) -> None:
    """Two sources in one collection, one a name-prefix of the other: syncing one never touches the other."""
    store = LocalStore(tmp_path / "media")
    for prefix in ("lib/", "lib2/"):
        for name in IMAGES[:2]:
            store.put(f"{prefix}{name}.png", image_bytes(COLOURS[name]))
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    run(store, index, clip_model, prefix="lib")
    run(store, index, clip_model, prefix="lib2")
    assert index.count() == 4
    store.delete("lib/red.png")
    report = run(store, index, clip_model, prefix="lib")
    assert report.sync.removed == [doc_id(store, "lib/red.png")] and report.unchanged == 1
    assert index.count() == 3 and index.get(doc_id(store, "lib2/red.png")) is not None


def test_a_move_interrupted_half_way_is_finished_by_the_next_run(
    indexed, clip_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, index = indexed
    before = index.count()
    os.rename(store.root / "clips/one.mp4", store.root / "clips/renamed.mp4")
    old_vid, new_vid = doc_id(store, "clips/one.mp4"), doc_id(store, "clips/renamed.mp4")

    class Killed(Exception):
        pass

    real_delete = LanceDBIndex.delete

    def die_before_deleting(self: LanceDBIndex, ids):  # type: ignore[no-untyped-def]
        raise Killed  # after the new documents are written, before the old ones go

    monkeypatch.setattr(LanceDBIndex, "delete", die_before_deleting)
    with pytest.raises(Killed):
        run(store, index, clip_model)
    monkeypatch.setattr(LanceDBIndex, "delete", real_delete)
    assert index.get(new_vid) is not None and index.get(old_vid) is not None

    report = run(store, index, clip_model)
    assert report.transform.records == 0 and old_vid in report.sync.removed
    assert index.count() == before and index.get(old_vid) is None
    assert index.count(IndexFilter(video_id=old_vid)) == 0
    assert video_artefacts(store, old_vid) == []
    assert_thumbnails_exist(store, index)


def test_a_move_killed_with_sigkill_is_finished_by_the_next_run(
    tmp_path: Path, videos: dict[str, bytes]
) -> None:
    """Real `mediasearch ingest` processes: the first is killed (SIGKILL) after a moved video's new
    documents are written and before its old ones and old artefacts go; the next run converges."""
    import subprocess
    import sys

    from mediasearch.core.model_identity import identify
    from mediasearch.index.generations import generation_name
    from mediasearch.models.random_init import build_random_clip

    model = build_random_clip(tmp_path / "model", size="tiny")
    store = LocalStore(tmp_path / "media")
    fill(store, videos)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "MEDIASEARCH_CLIP_MODEL": str(model),
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_MAX_SCENE_S": "3",
        "MEDIASEARCH_FRAMES_PER_SCENE": "2",
    }
    command = [sys.executable, "-m", "mediasearch.cli", "ingest", str(store.root)]

    def ingest_process(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, timeout=300)

    first = ingest_process()
    assert first.returncode == 0, first.stderr
    index = LanceDBIndex(str(tmp_path / "lancedb"), generation_name("media", identify(str(model))))
    before = index.count()
    old_vid, new_vid = doc_id(store, "clips/one.mp4"), doc_id(store, "clips/renamed.mp4")
    old_vector = index.get_with_vectors(old_vid)
    os.rename(store.root / "clips/one.mp4", store.root / "clips/renamed.mp4")

    killed = ingest_process(MEDIASEARCH_FAILPOINT="mid-move")
    assert killed.returncode == -9, killed.stderr
    assert index.get(new_vid) is not None and index.get(old_vid) is not None  # killed half way

    rerun = ingest_process()
    assert rerun.returncode == 0, rerun.stderr
    assert "embedded 0," in rerun.stdout and "removed 1" in rerun.stdout, rerun.stdout
    assert index.count() == before and index.get(old_vid) is None
    assert index.count(IndexFilter(video_id=old_vid)) == 0 and video_artefacts(store, old_vid) == []
    moved = index.get_with_vectors(new_vid)
    assert moved is not None and old_vector is not None
    np.testing.assert_array_equal(moved.clip_vector, old_vector.clip_vector)
    assert_thumbnails_exist(store, index)
