"""The pipeline's steps, its one report and its one summary, and SageMaker as a transform step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mediasearch.aws.batch import SageMakerModel, SageMakerTransform
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import TransformResult
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.loader import Loader
from mediasearch.indexing.pipeline import Pipeline, PipelineReport, Step, summarize
from mediasearch.indexing.transform import TransformReport
from tests.conftest import COLOURS, image_bytes

WORK = WorkLayout("_mediasearch")


def failure(n: int) -> TransformResult:
    return TransformResult(id=f"id{n}", uri=f"s3://b/{n}.jpg", error=f"broken {n}")


def test_ingest_summary_lists_at_most_twenty_failures() -> None:
    report = PipelineReport(steps=[Step.PLAN, Step.TRANSFORM, Step.LOAD], documents=7)
    report.load.failures = [failure(n) for n in range(23)]
    summary = summarize(report)
    assert (
        "failed 23; added 0, updated 0, moved 0, touched 0, removed 0; index holds 7 documents"
        in summary.line
    )
    lines = summary.failure_lines()
    assert lines[0] == "23 of 0 items failed:"
    assert lines[1] == "  s3://b/0.jpg: broken 0"
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 3 more"


def test_a_stage_alone_is_summarised_as_that_stage() -> None:
    loaded = PipelineReport(steps=[Step.LOAD])
    loaded.load.outputs, loaded.load.indexed = 2, 5
    loaded.load.failures = [failure(1)]
    summary = summarize(loaded)
    assert summary.line == "2 output file(s), 5 documents indexed, 1 error records"
    assert summary.failure_lines()[0] == "1 of 6 records failed:"

    transformed = PipelineReport(steps=[Step.TRANSFORM], transform=TransformReport(manifests=1, records=4))
    assert summarize(transformed).line == "1 manifest(s) run, 0 already done, 4 records, 0 failed"
    assert not summarize(transformed).failed


class RecordingTransformer:
    """A transform step that writes empty outputs and says which manifests it was given."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.given: list[Sequence[str] | None] = []

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        self.given.append(manifest_keys)
        keys = (
            manifest_keys
            if manifest_keys is not None
            else [o.key for o in self.store.list(WORK.manifests_dir)]
        )
        outputs = [WORK.output(k, "fake") for k in keys]
        for key in outputs:
            self.store.put(key, b"")
        return TransformReport(manifests=len(keys), outputs=outputs)


def test_ingest_transforms_this_runs_manifests_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("red.png", image_bytes(COLOURS["red"]))
    # What earlier runs left in the work area: the frames of a video that is not in the source, and
    # an image manifest without an output (its outputs expired, say).
    store.put(f"{WORK.manifests_dir}frames-v-1.jsonl", b"")
    leftover = f"{WORK.manifests_dir}images-old.jsonl"
    store.put(leftover, b'{"id": "x", "uri": "%s", "kind": "image"}\n' % store.uri("red.png").encode())
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    loader = Loader(store, index, WORK, progress=False)

    mine = RecordingTransformer(store)
    report = Pipeline(store, WORK, index, loader, progress=False).ingest(mine)
    assert len(mine.given) == 1 and mine.given[0] == report.manifests and len(report.manifests) == 1
    assert leftover not in report.manifests
    assert report.steps == [Step.PLAN, Step.SYNC, Step.MANIFESTS, Step.TRANSFORM, Step.LOAD]
    assert report.load.outputs == 1 and report.documents == 0  # the fake outputs hold no records
    # The gone video's artefacts were swept; the manifest naming a current object was kept.
    assert not store.exists(f"{WORK.manifests_dir}frames-v-1.jsonl") and store.exists(leftover)

    # Without preprocessing (as aws transform runs), the pending work is the same manifest again.
    again = RecordingTransformer(store)
    Pipeline(store, WORK, index, loader, progress=False).ingest(again, videos=False)
    assert again.given == [report.manifests]


def test_not_incremental_plans_everything_and_no_index_loads_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("red.png", image_bytes(COLOURS["red"]))
    pipeline = Pipeline(store, WORK, progress=False)
    report = pipeline.ingest(RecordingTransformer(store), load=False)
    assert report.plan.pending_images and Step.LOAD not in report.steps and report.documents is None
    with pytest.raises(ValueError, match="without a loader"):
        pipeline.load(tag="fake")


class FakeLauncher:
    def __init__(self) -> None:
        self.models: list[str] = []
        self.started: list[dict[str, Any]] = []
        self.waited: list[str] = []

    def ensure_model(self, name: str, *args: Any) -> str:
        self.models.append(name)
        return name

    def start_transform(self, request: dict[str, Any]) -> str:
        self.started.append(request)
        return request["TransformJobName"]

    def wait_transform(self, name: str, **kwargs: Any) -> dict[str, Any]:
        self.waited.append(name)
        return {"TransformJobStatus": "Completed"}


class FakeS3(LocalStore):
    """A folder that names its objects like a bucket, for the plan's URIs."""

    def uri(self, key: str) -> str:
        return f"s3://bucket/{key}"


def sagemaker_step(store: FakeS3, launcher: FakeLauncher, wait: bool, notes: list[str]) -> SageMakerTransform:
    model = SageMakerModel("s3://bucket/models/m.tar.gz", "image", "role", {"MEDIASEARCH_BATCH_SIZE": "64"})
    return SageMakerTransform(
        store,  # type: ignore[arg-type]
        WORK,
        launcher,  # type: ignore[arg-type]
        model,
        "job-1",
        wait=wait,
        notify=notes.append,
    )


def test_sagemaker_step_starts_one_job_for_the_manifests_it_is_given(tmp_path: Path) -> None:
    store = FakeS3(tmp_path)
    a, b = f"{WORK.manifests_dir}images-a.jsonl", f"{WORK.manifests_dir}images-b.jsonl"
    store.put(a, b'{"id": "a"}\n{"id": "b"}\n')
    store.put(b, b'{"id": "c"}\n')
    # An old manifest without an output (expired): not given, so never run.
    store.put(f"{WORK.manifests_dir}images-old.jsonl", b'{"id": "d"}\n')
    launcher, notes = FakeLauncher(), []
    step = sagemaker_step(store, launcher, wait=True, notes=notes)
    done = WORK.output(b, step.output_tag)
    store.put(done, b"")

    report = step.run([a, b])
    assert step.job == "job-1" and launcher.waited == ["job-1"] and len(launcher.started) == 1
    assert (report.manifests, report.skipped_manifests, report.records) == (1, 1, 2)
    assert report.outputs == sorted([done, WORK.output(a, step.output_tag)])
    source = launcher.started[0]["TransformInput"]["DataSource"]["S3DataSource"]
    assert source == {"S3DataType": "ManifestFile", "S3Uri": f"s3://bucket/{WORK.job_manifest('job-1')}"}
    assert json.loads(store.get(WORK.job_manifest("job-1"))) == [
        {"prefix": f"s3://bucket/{WORK.manifests_dir}"},
        "images-a.jsonl",
    ]
    assert notes[0] == "manifests: 1 pending, 1 done" and notes[-1] == "transform job job-1: Completed"
    with pytest.raises(ValueError, match="not a manifest"):
        step.run(["elsewhere/one.jsonl"])


def test_sagemaker_step_without_waiting_reports_only_existing_outputs(tmp_path: Path) -> None:
    store = FakeS3(tmp_path)
    store.put(f"{WORK.manifests_dir}images-a.jsonl", b'{"id": "a"}\n')
    launcher = FakeLauncher()
    step = sagemaker_step(store, launcher, wait=False, notes=[])
    report = step.run()
    assert step.job == "job-1" and launcher.waited == [] and report.outputs == []


def test_sagemaker_step_with_nothing_pending_starts_nothing(tmp_path: Path) -> None:
    store = FakeS3(tmp_path)
    launcher = FakeLauncher()
    step = sagemaker_step(store, launcher, wait=True, notes=[])
    assert step.run().manifests == 0 and step.job is None and launcher.started == []
