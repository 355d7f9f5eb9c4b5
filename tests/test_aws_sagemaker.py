"""The SageMaker control plane against moto over HTTP: what `mediasearch aws ...` asks for, exactly.

moto records the calls and answers describe_* with what was set; it runs no containers, and its
transform jobs report Completed at once (the wait loop's other states are tested with a fake client).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mediasearch.aws import sagemaker as sm
from mediasearch.cli import app
from mediasearch.core.layout import WorkLayout, model_tag
from mediasearch.core.storage import S3Store
from tests.conftest import COLOURS, image_bytes
from tests.conftest import aws_client as client

ROLE = "arn:aws:iam::123456789012:role/mediasearch-sagemaker"
runner = CliRunner()

# The shapes SageMaker validates requests against, read from the installed botocore's API model
# (botocore/data/sagemaker/2017-07-24/service-2.json), so the tests follow the real rules.
SAGEMAKER_MODEL = botocore.session.get_session().get_service_model("sagemaker")


def name_rule(shape: str) -> tuple[re.Pattern[str], int]:
    metadata = SAGEMAKER_MODEL.shape_for(shape).metadata
    return re.compile(metadata["pattern"]), metadata["max"]


def put_images(bucket: str, endpoint: str, names: list[str]) -> None:
    s3 = client("s3", endpoint)
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"media/{name}.png", Body=image_bytes(COLOURS[name]))


def last_job(endpoint: str) -> dict:
    smc = client("sagemaker", endpoint)
    # Names end in a UTC timestamp, so the greatest is the newest (moto ignores SortOrder).
    newest = max(j["TransformJobName"] for j in smc.list_transform_jobs()["TransformJobSummaries"])
    return smc.describe_transform_job(TransformJobName=newest)


def job_count(endpoint: str) -> int:
    return len(client("sagemaker", endpoint).list_transform_jobs()["TransformJobSummaries"])


def test_transform_command_sends_the_batch_transform_contract(aws_env: str, s3_bucket: str) -> None:
    put_images(s3_bucket, aws_env, ["red", "green", "blue"])
    model_data = f"s3://{s3_bucket}/models/clip/abc/model.tar.gz"
    result = runner.invoke(
        app,
        [
            "aws", "transform", f"s3://{s3_bucket}/media",
            "--model-data", model_data, "--role-arn", ROLE,
            "--instance-type", "ml.g5.2xlarge", "--instance-count", "2", "--max-payload-mb", "3",
            "--no-incremental", "--no-load", "--poll-s", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = last_job(aws_env)
    assert job["TransformJobStatus"] == "Completed"
    assert job["TransformJobName"].startswith("mediasearch-media-")
    # Always a manifest file listing this run's manifests, never the manifests folder: an old
    # manifest there (its output expired, say) is not pending work.
    job_manifest = f"_mediasearch/jobs/{job['TransformJobName']}.manifest"
    assert job["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "ManifestFile",
                "S3Uri": f"s3://{s3_bucket}/media/{job_manifest}",
            }
        },
        "ContentType": "application/jsonlines",
        "CompressionType": "None",
        "SplitType": "Line",
    }
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["MaxPayloadInMB"] == 3
    assert job["MaxConcurrentTransforms"] == 1
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 900, "InvocationsMaxRetries": 1}
    assert job["TransformOutput"] == {
        "S3OutputPath": f"s3://{s3_bucket}/media/_mediasearch/outputs/{model_tag(model_data)}/",
        "Accept": "application/jsonlines",
        "AssembleWith": "Line",
    }
    assert job["TransformResources"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2}

    model = client("sagemaker", aws_env).describe_model(ModelName=job["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == model_data
    # A g5 instance gets the GPU build of the PyTorch inference container.
    assert container["Image"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-gpu-py312-cu124-ubuntu22.04-sagemaker"
    )
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["MEDIASEARCH_BATCH_SIZE"] == "64"
    # One TorchServe worker (one CLIP) per request SageMaker sends at a time; unset, TorchServe would
    # start one per GPU or per host CPU (sagemaker-pytorch-inference-toolkit torchserve.py,
    # TorchServe ConfigManager.getDefaultWorkers).
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == str(job["MaxConcurrentTransforms"])

    # The manifest the job reads: one line per image, s3:// URIs.
    store = S3Store(s3_bucket, "media")
    (manifest,) = [o.key for o in store.list("_mediasearch/manifests/")]
    assert json.loads(store.get(job_manifest)) == [
        {"prefix": f"s3://{s3_bucket}/media/_mediasearch/manifests/"},
        manifest.removeprefix("_mediasearch/manifests/"),
    ]
    lines = [json.loads(ln) for ln in store.get(manifest).decode().splitlines()]
    assert sorted(ln["uri"] for ln in lines) == sorted(
        f"s3://{s3_bucket}/media/{n}.png" for n in ("red", "green", "blue")
    )


def test_nothing_pending_starts_no_job(aws_env: str, s3_bucket: str) -> None:
    put_images(s3_bucket, aws_env, ["red"])
    args = [
        "aws",
        "transform",
        f"s3://{s3_bucket}/media",
        "--model-data",
        "s3://x/m.tar.gz",
        "--role-arn",
        ROLE,
    ]
    args += ["--no-incremental", "--no-load", "--poll-s", "0"]
    assert runner.invoke(app, args).exit_code == 0
    before = job_count(aws_env)
    store = S3Store(s3_bucket, "media")
    (manifest,) = [o.key for o in store.list("_mediasearch/manifests/")]
    store.put(WorkLayout("_mediasearch").output(manifest, model_tag("s3://x/m.tar.gz")), b"")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "0 pending, 1 done" in result.output
    assert job_count(aws_env) == before


def test_partial_rerun_lists_only_pending_manifests(aws_env: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, "media")
    for name in ("a", "b", "c"):
        store.put(f"_mediasearch/manifests/images-{name}.jsonl", b'{"id": "x", "uri": "s3://b/k"}\n')
    store.put("_mediasearch/outputs/model-1/images-b.jsonl.out", b"")
    # Another model's output is no output of this one.
    store.put("_mediasearch/outputs/model-2/images-c.jsonl.out", b"")
    plan = sm.plan_transform(store, WorkLayout("_mediasearch"), "model-1", "job-1")
    assert plan.data_type == "ManifestFile"
    assert plan.done == ["_mediasearch/manifests/images-b.jsonl"]
    assert plan.input_uri == f"s3://{s3_bucket}/media/_mediasearch/jobs/job-1.manifest"
    listing = json.loads(store.get("_mediasearch/jobs/job-1.manifest"))
    assert listing == [
        {"prefix": f"s3://{s3_bucket}/media/_mediasearch/manifests/"},
        "images-a.jsonl",
        "images-c.jsonl",
    ]
    request = sm.transform_request("job-1", "m", plan, sm.TransformSettings(), {})
    assert request["TransformInput"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "ManifestFile",
        "S3Uri": plan.input_uri,
    }


class FakeSageMaker:
    def __init__(self, states: list[str], reason: str = "") -> None:
        self.states = states
        self.reason = reason
        self.calls = 0

    def describe_transform_job(self, TransformJobName: str) -> dict:
        state = self.states[min(self.calls, len(self.states) - 1)]
        self.calls += 1
        return {
            "TransformJobName": TransformJobName,
            "TransformJobStatus": state,
            "FailureReason": self.reason,
        }


def test_wait_polls_until_done_and_counts_outputs() -> None:
    fake = FakeSageMaker(["InProgress", "InProgress", "Completed"])
    sleeps: list[float] = []
    seen = iter([0, 1, 2])
    launcher = sm.SageMakerLauncher(fake, sleep=sleeps.append)
    job = launcher.wait_transform("j", poll_s=7, total=2, finished=lambda: next(seen), progress=False)
    assert job["TransformJobStatus"] == "Completed"
    assert fake.calls == 3 and sleeps == [7, 7]


@pytest.mark.parametrize("state", ["Failed", "Stopped"])
def test_wait_raises_with_sagemakers_reason(state: str) -> None:
    launcher = sm.SageMakerLauncher(
        FakeSageMaker([state], reason="ClientError: no GPU"), sleep=lambda _: None
    )
    with pytest.raises(sm.SageMakerError, match="no GPU"):
        launcher.wait_transform("j", progress=False)


def test_names() -> None:
    assert sm.job_name("mediasearch-media", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "mediasearch-media-20260102-030405"
    )
    # Collections may hold `_` (Settings.collection), which TransformJobName refuses.
    assert sm.job_name("mediasearch-my_photos", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        "mediasearch-my-photos-20260102-030405"
    )
    a = sm.model_name_for("s3://b/1.tar.gz", "img", {"A": "1"})
    assert a == sm.model_name_for("s3://b/1.tar.gz", "img", {"A": "1"})
    assert a != sm.model_name_for("s3://b/2.tar.gz", "img", {"A": "1"})
    assert len(a) <= 63
    assert sm.is_gpu_instance("ml.g4dn.xlarge") and sm.is_gpu_instance("ml.p3.2xlarge")
    assert not sm.is_gpu_instance("ml.m5.xlarge") and not sm.is_gpu_instance("ml.c7i.large")


STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@settings(max_examples=400, deadline=None)
@given(
    collection=st.one_of(
        st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,63}", fullmatch=True),  # what Settings.collection allows
        st.text(min_size=0, max_size=120),  # and anything else a prefix could be
    ),
    seconds=st.integers(min_value=1, max_value=10**8),
)
def test_job_names_match_sagemakers_rule_and_keep_the_timestamp(collection: str, seconds: int) -> None:
    """TransformJobName: max 63, pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} (botocore sagemaker
    service-2.json). A name cut at 63 characters used to lose the timestamp (two runs, one name) or
    end in `-`; a `_` from the collection failed CreateTransformJob."""
    pattern, longest = name_rule("TransformJobName")
    name = sm.job_name(f"mediasearch-{collection}", STAMP)
    assert len(name) <= longest and pattern.fullmatch(name), name
    assert name.endswith("-20260102-030405")
    later = sm.job_name(f"mediasearch-{collection}", STAMP + timedelta(seconds=seconds))
    assert later != name and pattern.fullmatch(later)


@settings(max_examples=200, deadline=None)
@given(
    endpoint=st.from_regex(r"[a-z0-9](-*[a-z0-9]){0,62}", fullmatch=True),
    memory=st.sampled_from([1024, 2048, 3072, 4096, 5120, 6144]),
    concurrency=st.integers(min_value=1, max_value=200),
)
def test_endpoint_config_names_are_valid_and_keep_their_sizes(
    endpoint: str, memory: int, concurrency: int
) -> None:
    """EndpointConfigName has the same rule; a long endpoint name used to cut the sizes off, so two
    sizes shared one config name and the second deploy reused the first's config."""

    class Recorder:
        def __init__(self) -> None:
            self.configs: list[str] = []

        def describe_endpoint_config(self, EndpointConfigName: str) -> dict:
            self.configs.append(EndpointConfigName)
            return {}

        def describe_endpoint(self, EndpointName: str) -> dict:
            return {"EndpointConfigName": self.configs[-1]}

    pattern, longest = name_rule("EndpointConfigName")
    recorder = Recorder()
    launcher = sm.SageMakerLauncher(recorder)
    config = launcher.deploy_serverless_endpoint(
        endpoint, "mediasearch-clip-0123456789ab", memory, concurrency
    )
    other = launcher.deploy_serverless_endpoint(
        endpoint, "mediasearch-clip-0123456789ab", memory, concurrency + 1
    )
    assert len(config) <= longest and pattern.fullmatch(config), config
    assert config.endswith(f"-0123456789ab-{memory}-{concurrency}") and other != config


class EndpointStates:
    """describe_endpoint answering a sequence of states; fails the test if polled past the last one."""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.calls = 0

    def describe_endpoint(self, EndpointName: str) -> dict:
        if self.calls >= len(self.states):
            raise AssertionError(f"polled again after {self.states[-1]}, a final state")
        self.calls += 1
        return {"EndpointName": EndpointName, "EndpointStatus": self.states[self.calls - 1]}


# Every EndpointStatus in botocore's model, so a state AWS adds is classified here before it ships.
ENDPOINT_STATES = SAGEMAKER_MODEL.shape_for("EndpointStatus").enum


@pytest.mark.parametrize("state", ENDPOINT_STATES)
def test_wait_endpoint_stops_at_every_final_state(state: str) -> None:
    """The EndpointStatus doc string (botocore sagemaker service-2.json): Creating, Updating,
    SystemUpdating, RollingBack and Deleting move on by themselves; InService, Failed, OutOfService
    and UpdateRollbackFailed ("in service with a mix of the old and new endpoint configurations") wait
    for someone. UpdateRollbackFailed used to be polled for the whole 30 minutes."""
    moving = state in {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
    states = ["Creating", state, "InService"] if moving else ["Creating", state]
    fake = EndpointStates(states)
    launcher = sm.SageMakerLauncher(fake, sleep=lambda _: None)
    if state == "InService" or moving:
        assert launcher.wait_endpoint("e")["EndpointStatus"] == "InService"
    else:
        with pytest.raises(sm.SageMakerError, match=f"endpoint e is {state}"):
            launcher.wait_endpoint("e")
    assert fake.calls == len(states)


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:2.1.0-transformers4.37.0-gpu-py310-cu118-ubuntu20.04",
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference",
        "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/huggingface-pytorch-inference@sha256:" + "0" * 64,
    ],
)
def test_models_refuse_hugging_face_inference_containers(image: str) -> None:
    """The HF toolkit's handler_service.handle returns output_fn's value as it is and sets the content
    type to Accept (sagemaker-huggingface-inference-toolkit 2.6.0); the handlers return (bytes, content
    type), which only the PyTorch toolkit unpacks (sagemaker_inference/transformer.py), so under the
    HF DLC every answer would be a 503. Refused before any model is created."""

    class NoCalls:
        def __getattr__(self, name: str):
            raise AssertionError(f"{name} called for an unsupported image")

    with pytest.raises(sm.SageMakerError, match="Hugging Face inference container"):
        sm.SageMakerLauncher(NoCalls()).ensure_model("m", "s3://b/model.tar.gz", image, ROLE, {})
    assert sm.unsupported_image(sm.pytorch_inference_image("us-east-1", gpu=True)) is None
    assert sm.unsupported_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-clip:1") is None


def test_deploy_serverless_endpoint_and_status(aws_env: str) -> None:
    base = ["aws", "deploy", "--endpoint-only", "--endpoint-name", "ms-query", "--role-arn", ROLE]
    base += ["--model-data", "s3://bucket/models/clip/abc/model.tar.gz"]
    first = runner.invoke(app, [*base, "--memory-mb", "4096", "--max-concurrency", "3"])
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["status"] == "InService"
    smc = client("sagemaker", aws_env)
    config = smc.describe_endpoint_config(EndpointConfigName=out["config"])
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 3}
    assert variant["ModelName"] == out["model"]
    container = smc.describe_model(ModelName=out["model"])["PrimaryContainer"]
    assert "-cpu-" in container["Image"]  # serverless endpoints have no GPU
    # One CLIP in the endpoint's memory, not one per host CPU (see sm.MODEL_SERVER_WORKERS).
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"

    # A new size makes a new config and switches the endpoint to it. moto has no UpdateEndpoint, so
    # that one call is recorded by a proxy in front of the moto client.
    class RecordUpdates:
        def __init__(self, inner) -> None:
            self.inner = inner
            self.updates: list[dict] = []

        def update_endpoint(self, **kwargs) -> None:
            self.updates.append(kwargs)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    proxy = RecordUpdates(smc)
    again = sm.SageMakerLauncher(proxy).deploy_serverless_endpoint("ms-query", out["model"], 6144, 3)
    assert again != out["config"]
    assert proxy.updates == [{"EndpointName": "ms-query", "EndpointConfigName": again}]
    assert smc.describe_endpoint_config(EndpointConfigName=again)["ProductionVariants"][0][
        "ServerlessConfig"
    ] == {
        "MemorySizeInMB": 6144,
        "MaxConcurrency": 3,
    }
    # Same settings again: nothing to change.
    assert (
        sm.SageMakerLauncher(proxy).deploy_serverless_endpoint("ms-query", out["model"], 4096, 3)
        == out["config"]
    )
    assert len(proxy.updates) == 1

    status = runner.invoke(app, ["aws", "status", "--endpoint", "ms-query"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["endpoint"] == {"name": "ms-query", "status": "InService"}
    assert isinstance(report["transform_jobs"], list)
    missing = json.loads(runner.invoke(app, ["aws", "status", "--endpoint", "nope"]).stdout)
    assert missing["endpoint"]["status"] == "NotFound"


MINI_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  ModelDataUrl: {Type: String, Default: ""}
  QueryImageUri: {Type: String, Default: ""}
  Flavour: {Type: String, Default: plain}
Resources:
  Bucket: {Type: "AWS::S3::Bucket"}
Outputs:
  BucketName: {Value: !Ref Bucket}
  ModelDataUrl: {Value: !Ref ModelDataUrl}
  Flavour: {Value: !Ref Flavour}
"""


def test_deploy_creates_then_updates_the_stack_keeping_previous_parameters(
    aws_env: str, tmp_path: Path
) -> None:
    """moto runs CloudFormation for real resources it knows; the full template is checked by cfn-lint."""
    template = tmp_path / "t.yaml"
    template.write_text(MINI_TEMPLATE)
    # Every parameter given: moto's UsePreviousValue finds only parameters that were set explicitly
    # (AWS also keeps defaulted ones).
    create = [
        "aws",
        "deploy",
        "--stack",
        "ms",
        "--template",
        str(template),
        "--model-data",
        "s3://b/m.tar.gz",
    ]
    create += ["--lambda-image", "123.dkr.ecr.us-east-1.amazonaws.com/q:1", "-p", "Flavour=plain"]
    created = runner.invoke(app, create)
    assert created.exit_code == 0, created.output
    outputs = json.loads(created.stdout)
    assert outputs["ModelDataUrl"] == "s3://b/m.tar.gz" and outputs["BucketName"]

    updated = runner.invoke(
        app, ["aws", "deploy", "--stack", "ms", "--template", str(template), "-p", "Flavour=x"]
    )
    assert updated.exit_code == 0, updated.output
    cf = client("cloudformation", aws_env)
    params = {
        p["ParameterKey"]: p["ParameterValue"]
        for p in cf.describe_stacks(StackName="ms")["Stacks"][0]["Parameters"]
    }
    assert params["Flavour"] == "x" and params["ModelDataUrl"] == "s3://b/m.tar.gz"

    status = json.loads(runner.invoke(app, ["aws", "status", "--stack", "ms"]).stdout)
    assert status["stack"]["status"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert status["stack"]["outputs"]["Flavour"] == "x"

    bad = runner.invoke(app, ["aws", "deploy", "--stack", "ms", "--template", str(template), "-p", "oops"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output


def test_jobs_entry_point_is_the_cli_command() -> None:
    import importlib.util

    from mediasearch.aws.cli import transform

    path = Path(__file__).resolve().parents[1] / "jobs" / "sagemaker_transform.py"
    spec = importlib.util.spec_from_file_location("sagemaker_transform_job", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.transform is transform


# ---------------------------------------------------------------- where transform outputs land

TAG = "model-1"
WORK = WorkLayout("_mediasearch")


def manifest(name: str) -> str:
    return f"{WORK.manifests_dir}images-{name}.jsonl"


def test_done_detection_follows_the_documented_rule_and_finds_outputs_elsewhere(
    aws_env: str, s3_bucket: str
) -> None:
    """TransformOutput.S3OutputPath (SageMaker API reference): the output of an input object is stored
    "with an .out suffix in a corresponding subfolder in the location in the output prefix", i.e.
    S3OutputPath + the key relative to the input prefix + .out for S3Prefix input. No page says what
    "relative" means for a ManifestFile input, so an output found by its file name deeper under the
    output prefix (e.g. under the manifest's whole key) also counts as done, and as progress."""
    store = S3Store(s3_bucket, "media")
    for name in ("a", "b", "c", "d"):
        store.put(manifest(name), b'{"id": "x", "uri": "s3://b/k"}\n')
    documented = WORK.output(manifest("a"), TAG)
    assert documented == f"_mediasearch/outputs/{TAG}/images-a.jsonl.out"
    nested = f"_mediasearch/outputs/{TAG}/media/_mediasearch/manifests/images-b.jsonl.out"
    for key in (documented, nested, "_mediasearch/outputs/model-2/images-c.jsonl.out"):
        store.put(key, b"")
    plan = sm.plan_transform(store, WORK, TAG, "job-1")
    assert plan.done == [manifest("a"), manifest("b")]
    assert plan.outputs == {manifest("a"): documented, manifest("b"): nested}
    assert plan.pending == [manifest("c"), manifest("d")] and plan.data_type == "ManifestFile"
    # The documented rule on the ManifestFile side: entries relative to the manifests prefix, so the
    # same rule gives the same keys as layout.output() whichever input type the job gets.
    listing = json.loads(store.get(WORK.job_manifest("job-1")))
    assert listing[0] == {"prefix": plan.manifests_uri} and listing[1:] == [
        "images-c.jsonl",
        "images-d.jsonl",
    ]
    assert plan.output_uri + listing[1] + ".out" == store.uri(WORK.output(manifest("c"), TAG))

    probe = sm.count_outputs(store, WORK, TAG, plan.pending)
    assert probe() == 0
    store.put(f"_mediasearch/outputs/{TAG}/jobs/x/images-c.jsonl.out", b"")
    assert probe() == 1
    store.put(WORK.output(manifest("d"), TAG), b"")
    assert probe() == 2


def test_find_outputs_prefers_the_documented_key() -> None:
    documented = WORK.output(manifest("a"), TAG)
    elsewhere = f"_mediasearch/outputs/{TAG}/x/images-a.jsonl.out"
    other_model = "_mediasearch/outputs/model-2/images-b.jsonl.out"
    found = sm.find_outputs(WORK, TAG, [manifest("a"), manifest("b")], [elsewhere, documented, other_model])
    assert found == {manifest("a"): documented}


class OutputsElsewhere:
    """A launcher whose job writes its outputs under the manifests' whole keys, as a ManifestFile job
    might; wait_transform plays the job."""

    def __init__(self, store: S3Store, tag: str) -> None:
        self.store = store
        self.tag = tag
        self.progress: list[int] = []

    def ensure_model(self, name: str, *args: object) -> str:
        return name

    def start_transform(self, request: dict) -> str:
        return request["TransformJobName"]

    def wait_transform(self, name: str, *, finished, total: int, **kwargs: object) -> dict:
        self.progress.append(finished())
        for key in [o.key for o in self.store.list(WORK.manifests_dir)]:
            out = f"{WORK.outputs_dir(self.tag)}media/{key}.out"
            self.store.put(out, b"")
        self.progress.append(finished())
        return {"TransformJobStatus": "Completed"}


def test_transform_step_hands_the_loader_the_outputs_where_they_are(aws_env: str, s3_bucket: str) -> None:
    from mediasearch.aws.batch import SageMakerModel, SageMakerTransform

    store = S3Store(s3_bucket, "media")
    for name in ("a", "b"):
        store.put(manifest(name), b'{"id": "x", "uri": "s3://b/k"}\n')
    model = SageMakerModel(f"s3://{s3_bucket}/models/clip/abc/model.tar.gz", "image", ROLE)
    launcher = OutputsElsewhere(store, model.output_tag)
    step = SageMakerTransform(store, WORK, launcher, model, "job-1", progress=False)  # type: ignore[arg-type]
    report = step.run()
    assert launcher.progress == [0, 2]
    assert report.outputs == [
        f"{WORK.outputs_dir(model.output_tag)}media/{manifest(name)}.out" for name in ("a", "b")
    ]
    assert all(store.exists(key) for key in report.outputs)


def test_deploy_refuses_a_hugging_face_image_in_one_line(aws_env: str) -> None:
    image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-inference:2.1.0-gpu-py310"
    args = ["aws", "deploy", "--endpoint-only", "--endpoint-name", "ms-hf", "--role-arn", ROLE]
    args += ["--model-data", "s3://bucket/models/clip/abc/model.tar.gz", "--image-uri", image]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Hugging Face inference container" in result.output
    smc = client("sagemaker", aws_env)
    images = [
        smc.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Image"]
        for m in smc.list_models()["Models"]
    ]
    assert image not in images
