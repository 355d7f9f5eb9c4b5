"""The preprocess job over a store: layout, error records, resumability and idempotence."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, MediaKind, VideoRecord, stable_id
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.videos import (
    VideoSpec,
    VideoTruth,
    ensure_corpus,
    render_video,
    scenes_cycle,
    write_not_a_video,
    write_truncated,
    write_zero_length,
)
from mediasearch.indexing.preprocess import PreprocessJob, list_videos
from mediasearch.indexing.video import VideoOptions

BAD = {
    "bad/zero.mp4": "empty",
    "bad/notavideo.mkv": "not a readable video",
    "bad/truncated.mp4": "not a readable video",
    "bad/truncated.webm": "truncated",
}
# Two small near-duplicates: enough for the tests that only need "some videos".
SMALL = "videos/dups/"
OPTIONS = VideoOptions(max_scene_s=4.0, frames_per_scene=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, VideoTruth]]:
    # The same session-wide copy test_video uses; generated once.
    root = tmp_path_factory.getbasetemp() / "video-corpus"
    return root, ensure_corpus(LocalStore(root), "videos")


@pytest.fixture()
def store(source, tmp_path: Path) -> LocalStore:
    """A private copy of the corpus per test (hard links: cheap, mtimes kept) plus the bad files."""
    root, _ = source
    for path in root.rglob("*"):
        if path.is_file():
            dest = tmp_path / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)
    store = LocalStore(tmp_path)
    write_zero_length(store, "bad/zero.mp4")
    write_not_a_video(store, "bad/notavideo.mkv")
    write_truncated(store, "bad/truncated.mp4", store.get("videos/cuts_a.mp4"))
    write_truncated(store, "bad/truncated.webm", store.get("videos/cuts_c.webm"))
    return store


def _snapshot(store: LocalStore, prefix: str = "_mediasearch/") -> dict[str, tuple[int, int]]:
    return {
        o.key: (o.size, store.path(o.key).stat().st_mtime_ns)
        for o in store.list(prefix)
        if o.key.startswith(prefix)
    }


def _lines(store: LocalStore, keys: list[str]) -> list[ManifestRecord]:
    return [
        ManifestRecord.model_validate_json(line)
        for k in keys
        for line in store.get(k).decode().splitlines()
        if line
    ]


def test_job_processes_good_videos_and_records_bad_ones(store, source) -> None:
    _, truths = source
    summary = PreprocessJob(store, options=OPTIONS, progress=False).run()
    assert summary.processed == len(truths)
    assert summary.failed == len(BAD)
    assert summary.skipped == 0
    assert summary.seconds_of_video == pytest.approx(sum(t.duration for t in truths.values()), abs=0.5)
    for key, reason in BAD.items():
        assert reason in summary.errors[key]
        assert store.uri(key) in summary.errors[key]  # named as the user knows it, not by a temp path

    layout = WorkLayout("_mediasearch")
    for key, truth in [*truths.items(), *((k, None) for k in BAD)]:
        vid = stable_id(store.uri(key))
        record = VideoRecord.model_validate_json(store.get(layout.sidecar(vid)))
        assert record.uri == store.uri(key)
        assert record.fingerprint == store.stat(key).fingerprint
        if truth is None:
            assert record.error and not record.scenes and record.strip is None
            assert not list(store.list(layout.frame_manifests_of(vid)))
            continue
        assert record.error is None
        assert record.duration == pytest.approx(truth.duration, abs=0.05)
        assert (record.width, record.height) == (truth.width, truth.height)
        assert record.scenes and record.scenes[0].t_start == 0.0
        assert record.scenes[-1].t_end == pytest.approx(record.duration)
        assert store.exists(store.key_of(record.strip))
        for scene in record.scenes:
            assert scene.t_end - scene.t_start <= OPTIONS.max_scene_s + 1e-6
            assert store.exists(store.key_of(scene.thumbnail))
            assert all(scene.t_start <= t < scene.t_end for t in scene.frames)

    lines = _lines(store, summary.manifests)
    assert len(lines) == len({r.id for r in lines})  # no duplicate lines
    sidecar_frames = 0
    for sidecar in summary.sidecars:
        record = VideoRecord.model_validate_json(store.get(sidecar))
        sidecar_frames += sum(len(s.frames) for s in record.scenes)
    assert len(lines) == sidecar_frames
    for line in lines:
        assert (
            line.kind is MediaKind.FRAME and line.video_id and line.scene is not None and line.t is not None
        )
        key = store.key_of(line.uri)
        assert key == layout.frame(line.video_id, line.scene, line.t)
        assert line.id == stable_id(line.uri)
        assert Image.open(io.BytesIO(store.get(key))).format == "JPEG"


def test_rerun_is_a_no_op(store) -> None:
    first = PreprocessJob(store, options=OPTIONS, progress=False).run()
    # The downstream transform has run on some manifests: their outputs must survive.
    layout = WorkLayout("_mediasearch")
    store.put(layout.output(first.manifests[0], "some-model"), b"{}\n")
    before = _snapshot(store)
    second = PreprocessJob(store, options=OPTIONS, progress=False, retry_failed=False).run()
    assert second.processed == 0 and second.skipped == first.processed + first.failed
    assert second.manifests == first.manifests
    assert _snapshot(store) == before
    # Failed videos are retried by default (a store hiccup is not forever); they fail the same way
    # and leave no artefacts behind.
    third = PreprocessJob(store, options=OPTIONS, progress=False).run()
    assert third.failed == len(BAD) and third.processed == 0
    assert set(_snapshot(store)) == set(before)


def test_a_changed_video_is_reprocessed_and_its_old_artefacts_go(store) -> None:
    key = SMALL + "cuts_a_small.mp4"
    job = PreprocessJob(store, prefix=SMALL, options=OPTIONS, progress=False)
    first = job.run()
    vid = stable_id(store.uri(key))
    layout = job.layout
    old_manifests = [m for m in first.manifests if m.startswith(layout.frame_manifests_of(vid))]
    assert len(old_manifests) == 1
    # Two models had embedded the old version (say the local runner and a SageMaker job).
    old_outputs = [layout.output(old_manifests[0], tag) for tag in ("model-a", "model-b")]
    for out in old_outputs:
        store.put(out, b"{}\n")
    old_frames = {o.key for o in store.list(layout.frames_dir(vid))}

    data, truth = render_video(VideoSpec(key, 256, 144, 25, scenes_cycle([0.9, 1.3, 0.7, 1.1], 2)), seed=7)
    store.put(key, data)
    second = job.run()
    assert (second.processed, second.skipped) == (1, first.processed - 1)
    new_manifests = [m for m in second.manifests if m.startswith(layout.frame_manifests_of(vid))]
    assert len(new_manifests) == 1 and new_manifests != old_manifests
    assert not store.exists(old_manifests[0])
    assert not any(store.exists(out) for out in old_outputs) and second.stale_outputs == 2
    record = VideoRecord.model_validate_json(store.get(layout.sidecar(vid)))
    assert record.fingerprint == store.stat(key).fingerprint
    assert len(record.scenes) == len(truth.scenes) == 4
    new_frames = {o.key for o in store.list(layout.frames_dir(vid))}
    assert new_frames == {layout.frame(vid, s.scene, t) for s in record.scenes for t in s.frames}
    assert new_frames != old_frames
    assert {o.key for o in store.list(layout.thumbs_dir(vid))} == {
        layout.thumb(vid, s.scene) for s in record.scenes
    }
    lines = _lines(store, second.manifests)
    assert len(lines) == len({r.id for r in lines})

    # And a video that turns bad loses its artefacts: the sidecar's error is the whole truth.
    write_zero_length(store, key)
    third = job.run()
    assert third.failed == 1 and "empty" in third.errors[key]
    assert not list(store.list(layout.frames_dir(vid))) and not list(
        store.list(layout.frame_manifests_of(vid))
    )
    assert not store.exists(layout.strip(vid))


def test_interrupted_run_resumes(store) -> None:
    """A video without a sidecar (the job died before committing it) is redone, overwriting in place."""
    job = PreprocessJob(store, prefix=SMALL, options=OPTIONS, progress=False)
    first = job.run()
    before = _snapshot(store)
    vid = stable_id(store.uri(SMALL + "cuts_a_small.mp4"))
    store.delete(job.layout.sidecar(vid))
    second = job.run()
    assert second.processed == 1 and second.skipped == first.processed - 1
    assert second.manifests == first.manifests
    assert set(_snapshot(store)) == set(before)


def test_listing_skips_the_work_area_and_non_videos(store) -> None:
    store.put("_mediasearch/frames/x/clip.mp4", b"not a source")
    keys = {o.key for o in list_videos(store, "", WorkLayout("_mediasearch"))}
    assert "videos/anim.gif" in keys and "bad/zero.mp4" in keys
    assert not any(k.startswith("_mediasearch/") or k.endswith(".json") or k.endswith(".jsonl") for k in keys)


def test_two_workers_match_one(store) -> None:
    one = PreprocessJob(store, prefix=SMALL, options=OPTIONS, progress=False, layout=WorkLayout("w1")).run()
    two = PreprocessJob(
        store, prefix=SMALL, options=OPTIONS, progress=False, layout=WorkLayout("w2"), workers=2
    ).run()
    assert (one.processed, one.failed) == (two.processed, two.failed) == (2, 0)
    a = {k.removeprefix("w1/"): v[0] for k, v in _snapshot(store, "w1/").items()}
    b = {k.removeprefix("w2/"): v[0] for k, v in _snapshot(store, "w2/").items()}
    assert a.keys() == b.keys()


def test_job_entry_point(store, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "preprocess_job", Path(__file__).parents[1] / "jobs/preprocess.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_zero_length(store, SMALL + "empty.mov")
    rc = module.main(["--store", str(store.root), "--prefix", SMALL, "--no-progress", "--max-scene-s", "5"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failed"] == 1 and out["processed"] == 2
    with pytest.raises(SystemExit):
        module.main(["--store", str(store.root), "--threshold", "-3"])
