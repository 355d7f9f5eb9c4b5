"""The local batch-transform runner and its pieces (reader, writer, runner) each alone."""

from __future__ import annotations

import json

import pytest

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord
from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import dumps_manifest, parse_output_lines
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.manifests import changed, scan_images, write_manifests
from mediasearch.indexing.transform import ManifestReader, OutputWriter, TransformRunner, batches
from tests.conftest import COLOURS, image_bytes


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "s")
    for i in range(3):
        for name, colour in COLOURS.items():
            store.put(f"photos/{i}/{name}.png", image_bytes(colour, size=(40 + i, 30)))
    store.put("photos/notes.txt", b"not an image, not scanned")
    return store


WORK = WorkLayout("work")


@pytest.fixture
def handler(clip_model) -> ClipHandler:
    return ClipHandler(clip_model, decode_workers=2)


def test_scan_and_write_manifests_are_deterministic(store: LocalStore) -> None:
    records = scan_images(store, "photos")
    assert len(records) == 18 and all(r.fingerprint for r in records)
    keys = write_manifests(store, WORK, records, lines=7)
    assert len(keys) == 3
    assert write_manifests(store, WORK, records, lines=7) == keys  # same work, same names
    lines = [ln for k in keys for ln in store.get(k).decode().splitlines()]
    assert [json.loads(ln)["id"] for ln in lines] == [r.id for r in records]


def test_changed_selects_new_and_modified(store: LocalStore) -> None:
    records = scan_images(store, "photos")
    stored = {r.id: r.fingerprint for r in records[:10]}
    stored[records[0].id] = "old"
    assert {r.id for r in changed(records, stored)} == {records[0].id} | {r.id for r in records[10:]}


def test_reader_and_writer_alone(store: LocalStore, handler: ClipHandler) -> None:
    records = scan_images(store, "photos/0")
    store.put("work/manifests/a.jsonl", dumps_manifest(records))
    store.put("photos/labels.jsonl", b'{"not": "a manifest"}\n')  # a user's own file beside the media
    reader = ManifestReader(store, handler, WORK)
    assert reader.keys() == ["work/manifests/a.jsonl"]
    manifest = reader.read("work/manifests/a.jsonl")
    assert [r.id for r in manifest.items] == [r.id for r in records]
    results = handler.embed(handler.prepare(manifest.items))
    out = WORK.output("work/manifests/a.jsonl", handler.output_tag)
    assert OutputWriter(store, handler).write(out, results) == out
    assert out == f"work/outputs/{handler.output_tag}/a.jsonl.out"
    assert [r.id for r in parse_output_lines(store.get(out))] == [r.id for r in records]


def test_batches_cover_everything_in_order() -> None:
    items = [ManifestRecord(id=str(i), uri="u") for i in range(10)]
    chunks = list(batches(items, 4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [r.id for c in chunks for r in c] == [str(i) for i in range(10)]


def test_runner_writes_outputs_in_input_order_and_resumes(store: LocalStore, handler: ClipHandler) -> None:
    records = scan_images(store, "photos")
    store.put("photos/0/broken.png", b"\x89PNG broken")
    records += scan_images(store, "photos/0/broken")
    keys = write_manifests(store, WORK, records, lines=8)
    runner = TransformRunner(store, handler, WORK, batch_size=3, progress=False)
    report = runner.run(keys)
    assert report.manifests == 3 and report.records == 19 and report.failed == 1
    assert report.failures[0].uri.endswith("broken.png")
    out_ids = [r.id for k in report.outputs for r in parse_output_lines(store.get(k))]
    assert out_ids == [r.id for r in records]

    # A second run finds complete outputs and embeds nothing.
    before = {k: store.stat(k).fingerprint for k in report.outputs}
    again = runner.run(keys)
    assert again.manifests == 0 and again.skipped_manifests == 3 and again.records == 0
    assert {k: store.stat(k).fingerprint for k in again.outputs} == before


def test_runner_takes_the_work_areas_manifests_and_keys_outputs_by_model(
    store: LocalStore, handler: ClipHandler, tmp_path
) -> None:
    from mediasearch.models.clip import ClipModel
    from mediasearch.models.random_init import build_random_clip

    write_manifests(store, WORK, scan_images(store, "photos/1"))
    runner = TransformRunner(store, handler, WORK, progress=False)
    assert runner.run().manifests == 1
    assert runner.run().skipped_manifests == 1
    # Another model finds no output of its own: nothing embedded by the first is reused.
    other = ClipHandler(ClipModel(str(build_random_clip(tmp_path / "other-clip", seed=1))))
    assert other.output_tag != handler.output_tag
    assert TransformRunner(store, other, WORK, progress=False).run().manifests == 1


def test_the_transform_job_runs_by_path(store: LocalStore, tiny_clip_dir, tmp_path) -> None:
    """`jobs/transform.py` is what a container or scheduler runs: same runner, same outputs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mediasearch.models.clip import ClipModel

    keys = write_manifests(store, WORK, scan_images(store, "photos/2"))
    env = {
        **os.environ,
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_WORK_PREFIX": "work",
        "HF_HUB_OFFLINE": "1",
    }
    job = Path(__file__).resolve().parents[1] / "jobs" / "transform.py"
    done = subprocess.run(
        [sys.executable, str(job), str(store.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 manifest(s) run, 0 already done, 6 records, 0 failed" in done.stdout
    tag = ClipHandler(ClipModel(str(tiny_clip_dir))).output_tag
    assert len(parse_output_lines(store.get(WORK.output(keys[0], tag)))) == 6
