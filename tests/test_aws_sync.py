"""`aws transform` decides what is pending from the index, never from which outputs exist.

Over moto (S3 and the SageMaker API; `run_job_like_sagemaker` plays the job). After the bucket's
lifecycle rules expire outputs and image manifests, nothing old is run again; a document another
model embedded is pending; what is gone from the source is removed without a job; and the identity
`aws package` records beside an archive is the one the handler records on every document.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from mediasearch.aws.batch import archive_identity, identity_uri, model_identity_of, record_identity
from mediasearch.cli import app
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import stable_id
from mediasearch.core.storage import open_store, read_uri
from mediasearch.index.lancedb import LanceDBIndex
from tests.conftest import COLOURS, image_bytes
from tests.test_aws_pipeline import ROLE, latest_job, run_job_like_sagemaker
from tests.test_infra import TEMPLATE, CfnLoader
from tests.test_model_handler import load_handler_module

runner = CliRunner()
IMAGES = ("red", "green", "blue", "yellow")


@pytest.fixture
def aws(moto_endpoint: str, app_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture(scope="module")
def handler(tiny_clip_dir: Path):  # the SageMaker handler module and its loaded model
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIASEARCH_DEVICE", "cpu")
    module = load_handler_module()
    yield module, module.model_fn(str(tiny_clip_dir))
    mp.undo()


def jobs(endpoint: str) -> int:
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
    return len(sm.list_transform_jobs()["TransformJobSummaries"])


@pytest.fixture
def embedded(aws: str, s3_bucket: str, tmp_path: Path, handler) -> tuple[str, list[str]]:
    """A source embedded by a (played) SageMaker job and loaded; returns its URI and the transform args."""
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    for name in IMAGES:
        s3.put_object(Bucket=s3_bucket, Key=f"media/{name}.png", Body=image_bytes(COLOURS[name]))
    source = f"s3://{s3_bucket}/media"
    model_data = f"s3://{s3_bucket}/models/m.tar.gz"
    args = ["aws", "transform", source, "--model-data", model_data, "--role-arn", ROLE, "--poll-s", "0"]
    first = runner.invoke(app, [*args, "--no-load"])
    assert first.exit_code == 0, first.output
    run_job_like_sagemaker(aws, latest_job(aws), handler)
    loaded = runner.invoke(app, ["aws", "load", source, "--model-data", model_data])
    assert loaded.exit_code == 0, loaded.output
    assert LanceDBIndex(str(tmp_path / "lancedb"), "media").count() == 4
    return source, args


def expiring_prefixes(media_prefix: str) -> list[str]:
    """The key prefixes infra/template.yaml's bucket lifecycle rules expire, for `MediaPrefix`."""
    template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    (bucket,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    # A rule outside the media prefix (training/...) is a plain string.
    prefixes = [r["Prefix"] for r in rules if "ExpirationInDays" in r]
    return [
        p["Fn::Sub"].replace("${MediaPrefix}", media_prefix) if isinstance(p, dict) else p for p in prefixes
    ]


def test_the_lifecycle_rules_expire_only_what_no_run_reads_again() -> None:
    layout = WorkLayout.for_source("media")
    expiring = expiring_prefixes("media")
    # Transient once loaded: outputs, image manifests, job manifest files.
    transient = [
        layout.output(layout.image_manifest(b"x"), "tag"),
        layout.image_manifest(b"x"),
        layout.job_manifest("job"),
    ]
    assert all(key.startswith(tuple(expiring)) for key in transient)
    # A video's artefacts live as long as the video: its frame manifests are what a model change
    # re-embeds, and its thumbnails, strip and sidecar are what the index shows and plans with.
    kept = [
        layout.frame_manifest("vid", "fp"),
        layout.frame("vid", 0, 0.5),
        layout.thumb("vid", 0),
        layout.strip("vid"),
        layout.sidecar("vid"),
    ]
    assert not any(key.startswith(tuple(expiring)) for key in kept)


def test_expired_outputs_and_manifests_are_never_run_again(embedded, aws: str, s3_bucket: str) -> None:
    source, args = embedded
    store = open_store(source)
    # Everything the lifecycle rules expire (the source is the stack's media prefix here).
    for obj in list(store.list("_mediasearch/")):
        if f"media/{obj.key}".startswith(tuple(expiring_prefixes("media"))):
            store.delete(obj.key)
    assert not list(store.list("_mediasearch/outputs/"))
    assert not [o for o in store.list("_mediasearch/manifests/") if "images-" in o.key]
    before = jobs(aws)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "4 images, 0 to embed" in again.output and jobs(aws) == before
    assert "scanned 4, unchanged 4, embedded 0" in again.output

    # Even an old manifest left without its output (expiry of outputs only) is not pending work.
    store.put(
        "_mediasearch/manifests/images-old.jsonl",
        b'{"id": "x", "uri": "%s"}\n' % store.uri("red.png").encode(),
    )
    third = runner.invoke(app, args)
    assert third.exit_code == 0 and jobs(aws) == before, third.output


def test_documents_of_another_model_are_pending(embedded, aws: str, s3_bucket: str) -> None:
    source, args = embedded
    model_data = args[args.index("--model-data") + 1]
    # The archive now holds another model (as `aws package` of a new checkpoint records it).
    record_identity(model_data, "sha256:another-model")
    assert model_identity_of(model_data) == "sha256:another-model"
    planned = runner.invoke(app, [*args, "--no-load"])
    assert planned.exit_code == 0, planned.output
    assert "4 images, 4 to embed" in planned.output
    job = boto3.client("sagemaker", endpoint_url=aws, region_name="us-east-1").describe_transform_job(
        TransformJobName=latest_job(aws)
    )
    listing = json.loads(read_uri(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]))
    (manifest,) = listing[1:]  # exactly this run's one manifest
    lines = open_store(source).get(f"_mediasearch/manifests/{manifest}").decode().splitlines()
    assert sorted(json.loads(ln)["uri"] for ln in lines) == sorted(f"{source}/{n}.png" for n in IMAGES)


def test_deletions_and_renames_are_applied_without_a_job(
    embedded, aws: str, s3_bucket: str, tmp_path: Path
) -> None:
    source, args = embedded
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    s3.delete_object(Bucket=s3_bucket, Key="media/red.png")
    s3.copy_object(
        Bucket=s3_bucket, Key="media/sub/lime.png", CopySource={"Bucket": s3_bucket, "Key": "media/green.png"}
    )
    s3.delete_object(Bucket=s3_bucket, Key="media/green.png")
    before = jobs(aws)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert jobs(aws) == before
    assert "moved 1, touched 0, removed 1" in result.output
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    assert index.count() == 3
    assert index.get(stable_id(f"{source}/sub/lime.png")) is not None
    assert (
        index.get(stable_id(f"{source}/red.png")) is None
        and index.get(stable_id(f"{source}/green.png")) is None
    )


def test_the_recorded_identity_is_the_one_the_handler_records(tmp_path: Path, tiny_clip_dir: Path) -> None:
    from mediasearch import backends
    from mediasearch.aws.packaging import build_model_archive

    archive = build_model_archive(tiny_clip_dir, tmp_path / "model.tar.gz")
    unpacked = tmp_path / "opt-ml-model"
    with tarfile.open(archive.path) as tar:
        tar.extractall(unpacked, filter="data")
    handler = backends.sagemaker_clip_handler(str(unpacked))
    assert handler.model is not None
    assert archive_identity(archive.path) == handler.model.identity.id
    assert identity_uri("s3://b/models/clip/abc/model.tar.gz") == "s3://b/models/clip/abc/identity.json"
