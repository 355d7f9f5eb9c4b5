"""The local batch-transform runner and its pieces (reader, writer, runner) each alone."""

from __future__ import annotations

import json

import pytest

from mediasearch.core.records import ManifestRecord
from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import dumps_manifest, parse_output_lines
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.manifests import changed, scan_images, write_manifests
from mediasearch.indexing.transform import ManifestReader, OutputWriter, TransformRunner, batches, output_key
from tests.conftest import COLOURS, image_bytes


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "s")
    for i in range(3):
        for name, colour in COLOURS.items():
            store.put(f"photos/{i}/{name}.png", image_bytes(colour, size=(40 + i, 30)))
    store.put("photos/notes.txt", b"not an image, not scanned")
    return store


@pytest.fixture
def handler(clip_model) -> ClipHandler:
    return ClipHandler(clip_model, decode_workers=2)


def test_scan_and_write_manifests_are_deterministic(store: LocalStore) -> None:
    records = scan_images(store, "photos")
    assert len(records) == 18 and all(r.fingerprint for r in records)
    keys = write_manifests(store, "work/manifests", records, lines=7)
    assert len(keys) == 3
    assert write_manifests(store, "work/manifests", records, lines=7) == keys  # same work, same names
    lines = [ln for k in keys for ln in store.get(k).decode().splitlines()]
    assert [json.loads(ln)["id"] for ln in lines] == [r.id for r in records]


def test_changed_selects_new_and_modified(store: LocalStore) -> None:
    records = scan_images(store, "photos")
    stored = {r.id: r.fingerprint for r in records[:10]}
    stored[records[0].id] = "old"
    assert {r.id for r in changed(records, stored)} == {records[0].id} | {r.id for r in records[10:]}


def test_reader_and_writer_alone(store: LocalStore, handler: ClipHandler) -> None:
    records = scan_images(store, "photos/0")
    store.put("m/a.jsonl", dumps_manifest(records))
    reader = ManifestReader(store, handler)
    assert reader.keys("m") == ["m/a.jsonl"]
    assert not reader.is_done("m/a.jsonl")
    manifest = reader.read("m/a.jsonl")
    assert [r.id for r in manifest.items] == [r.id for r in records]
    results = handler.embed(handler.prepare(manifest.items))
    key = OutputWriter(store, handler).write("m/a.jsonl", results)
    assert key == output_key("m/a.jsonl") == "m/a.jsonl.out"
    assert reader.is_done("m/a.jsonl")
    assert [r.id for r in parse_output_lines(store.get(key))] == [r.id for r in records]


def test_batches_cover_everything_in_order() -> None:
    items = [ManifestRecord(id=str(i), uri="u") for i in range(10)]
    chunks = list(batches(items, 4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [r.id for c in chunks for r in c] == [str(i) for i in range(10)]


def test_runner_writes_outputs_in_input_order_and_resumes(store: LocalStore, handler: ClipHandler) -> None:
    records = scan_images(store, "photos")
    store.put("photos/0/broken.png", b"\x89PNG broken")
    records += scan_images(store, "photos/0/broken")
    keys = write_manifests(store, "work/manifests", records, lines=8)
    runner = TransformRunner(store, handler, batch_size=3, progress=False)
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


def test_runner_by_prefix_ignores_outputs(store: LocalStore, handler: ClipHandler) -> None:
    write_manifests(store, "work/manifests", scan_images(store, "photos/1"))
    runner = TransformRunner(store, handler, progress=False)
    assert runner.run(prefix="work/manifests").manifests == 1
    assert runner.run(prefix="work/manifests").skipped_manifests == 1


def test_the_transform_job_runs_by_path(store: LocalStore, tiny_clip_dir, tmp_path) -> None:
    """`jobs/transform.py` is what a container or scheduler runs: same runner, same outputs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    keys = write_manifests(store, "work/manifests", scan_images(store, "photos/2"))
    env = {**os.environ, "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir), "HF_HUB_OFFLINE": "1"}
    job = Path(__file__).resolve().parents[1] / "jobs" / "transform.py"
    done = subprocess.run(
        [sys.executable, str(job), str(store.root), "--prefix", "work/manifests"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 manifest(s) run, 0 already done, 6 records, 0 failed" in done.stdout
    assert len(parse_output_lines(store.get(output_key(keys[0])))) == 6
