"""SageMaker training jobs: the CreateTrainingJob request, the calls against moto over HTTP, the CLI's
mistakes, and the entry point run as a subprocess in an /opt/ml tree laid out as the container's.

References: CreateTrainingJob's shapes are read from the installed botocore (sagemaker service-2.json)
and each request is validated against them as botocore would before sending. The container contract is
sagemaker-training-toolkit's (environment.py: SAGEMAKER_BASE_DIR, /opt/ml/input/config/hyperparameters.json,
/opt/ml/input/data/<channel>, /opt/ml/model; files.write_failure_file: /opt/ml/output/failure, first
writer wins; params.py: sagemaker_program, sagemaker_submit_directory, sagemaker_region). moto 5 stores
training jobs and reports them Completed at once, with ModelArtifacts at
<S3OutputPath>/<job>/output/model.tar.gz; it runs no container (the subprocess tests do that part).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator
from typer.testing import CliRunner

from mediasearch.aws import sagemaker as sm
from mediasearch.aws import training as tr
from mediasearch.cli import app
from mediasearch.training.config import ClipTrainConfig, VideoTrainConfig
from mediasearch.training.container import FAILURE_MAX
from tests.conftest import COLOURS, image_bytes
from tests.conftest import aws_client as client

ROLE = "arn:aws:iam::123456789012:role/mediasearch-sagemaker"
ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "model_handlers" / "training" / "train.py"
SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
CREATE = SAGEMAKER.operation_model("CreateTrainingJob")
runner = CliRunner()


def valid_request(request: dict) -> None:
    report = ParamValidator().validate(request, CREATE.input_shape)
    assert not report.has_errors(), report.generate_report()


def only_job(endpoint: str) -> dict:
    smc = client("sagemaker", endpoint)
    names = [j["TrainingJobName"] for j in smc.list_training_jobs()["TrainingJobSummaries"]]
    return smc.describe_training_job(TrainingJobName=max(names))


def job_count(endpoint: str) -> int:
    return len(client("sagemaker", endpoint).list_training_jobs(MaxResults=100)["TrainingJobSummaries"])


def read_json(endpoint: str, uri: str) -> object:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return json.loads(client("s3", endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())


# ------------------------------------------------------------------------------ the request, pure


def test_request_has_exactly_the_api_keys() -> None:
    config = ClipTrainConfig(epochs=2, batch_size=4)
    values = tr.hyperparameters("clip", config, "s3://b/training/code/abc/sourcedir.tar.gz", "eu-west-1")
    request = tr.training_request(
        "mediasearch-clip-20260101-000000",
        ROLE,
        tr.training_image("eu-west-1", gpu=True),
        values,
        [
            tr.Channel("pairs", "s3://b/training/jobs/j/pairs.manifest"),
            tr.model_channel("s3://b/m/model.tar.gz"),
        ],
        "s3://b/training/output",
        "s3://b/training/checkpoints/j",
        tr.TrainingSettings(instance_type="ml.g5.2xlarge", spot=True, max_runtime_s=3600),
    )
    valid_request(request)
    assert set(request) == {
        "TrainingJobName", "HyperParameters", "AlgorithmSpecification", "RoleArn", "InputDataConfig",
        "OutputDataConfig", "ResourceConfig", "StoppingCondition", "EnableManagedSpotTraining",
        "CheckpointConfig", "Tags",
    }  # fmt: skip
    assert set(request) >= set(CREATE.input_shape.required_members)
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:"
        "2.6.0-gpu-py312-cu126-ubuntu22.04-sagemaker",
        "TrainingInputMode": "File",
    }
    assert request["InputDataConfig"] == [
        {
            "ChannelName": "pairs",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "ManifestFile",
                    "S3Uri": "s3://b/training/jobs/j/pairs.manifest",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "CompressionType": "None",
            "InputMode": "File",
        },
        {
            "ChannelName": "model",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://b/m/model.tar.gz",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "CompressionType": "None",
            "InputMode": "File",
        },
    ]
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://b/training/output/"}
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://b/training/checkpoints/j/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    # Managed spot needs MaxWaitTimeInSeconds, and it may not be below the run time.
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.g5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 50,
    }
    hp = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hp.values())
    assert hp["sagemaker_program"] == "train.py"
    assert hp["sagemaker_submit_directory"] == "s3://b/training/code/abc/sourcedir.tar.gz"
    assert hp["sagemaker_region"] == "eu-west-1"
    assert hp["mediasearch_job"] == "clip"
    assert (
        ClipTrainConfig.from_hyperparameters(
            {k: v for k, v in hp.items() if not k.startswith(("sagemaker_", "mediasearch_"))}
        )
        == config
    )


def test_on_demand_jobs_set_no_wait_time() -> None:
    request = tr.training_request(
        "n", ROLE, "img", {}, [], "s3://b/o", "s3://b/c", tr.TrainingSettings(max_runtime_s=60)
    )
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 60}
    assert request["EnableManagedSpotTraining"] is False


def test_hyperparameters_over_the_api_limit_are_refused_before_a_call() -> None:
    limit = SAGEMAKER.shape_for("HyperParameterValue").metadata["max"]
    assert limit == tr.HYPERPARAMETER_VALUE_MAX == 2500
    fits = ClipTrainConfig(base_model="m" * limit)
    assert len(tr.hyperparameters("clip", fits, "s3://b/s.tar.gz", "us-east-1")["base_model"]) == limit
    with pytest.raises(
        tr.TrainingSetupError, match=r"base_model: 2501 characters, SageMaker takes at most 2500"
    ):
        tr.hyperparameters(
            "clip", ClipTrainConfig(base_model="m" * (limit + 1)), "s3://b/s.tar.gz", "us-east-1"
        )
    with pytest.raises(tr.TrainingSetupError, match="takes a VideoTrainConfig"):
        tr.hyperparameters("video-encoder", ClipTrainConfig(), "s3://b/s.tar.gz", "us-east-1")


def test_job_names_are_valid_and_keep_the_timestamp() -> None:
    pattern = re.compile(SAGEMAKER.shape_for("TrainingJobName").metadata["pattern"])
    now = datetime(2026, 11, 23, 18, 5, 9, tzinfo=UTC)
    for job in ("video-encoder", "clip"):
        name = tr.training_job_name(job, now)
        assert pattern.fullmatch(name) and len(name) <= 63, name
        assert name == f"mediasearch-{job}-20261123-180509"


def test_source_archive_is_what_script_mode_runs(tmp_path: Path) -> None:
    archive = tr.source_archive(tmp_path / "sourcedir.tar.gz")
    with tarfile.open(archive.path) as tar:
        names = set(tar.getnames())
        reqs = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
    assert {"train.py", "requirements.txt", "mediasearch/training/container.py"} <= names
    # What the entry point copies into /opt/ml/model/code, where packaging looks for it.
    assert {"model_handlers/clip/inference.py", "model_handlers/clip/requirements.txt"} <= names
    assert not any("__pycache__" in n for n in names)
    pins = {ln.split("==")[0].split(">=")[0] for ln in reqs.splitlines() if ln and not ln.startswith("#")}
    assert "torch" not in pins and "transformers" in pins  # the DLC's CUDA torch stays
    clip_reqs = (ROOT / "model_handlers" / "clip" / "requirements.txt").read_text()
    (pin,) = [ln for ln in reqs.splitlines() if ln.startswith("transformers")]
    assert pin in clip_reqs.splitlines(), "train and serve with the same transformers"
    assert tr.source_archive(tmp_path / "again.tar.gz").sha256 == archive.sha256


# ------------------------------------------------------------------------------ moto over HTTP


def put(endpoint: str, bucket: str, key: str, body: bytes) -> None:
    client("s3", endpoint).put_object(Bucket=bucket, Key=key, Body=body)


def put_pairs(endpoint: str, bucket: str, lines: list[dict]) -> None:
    for name in ("red", "green", "blue"):
        put(endpoint, bucket, f"data/img/{name}.png", image_bytes(COLOURS[name]))
    put(endpoint, bucket, "data/unrelated.bin", b"x" * 100)
    put(endpoint, bucket, "data/pairs.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())


PAIRS = [
    {"uri": "img/red.png", "text": "a red square"},
    {"uri": "img/green.png", "text": "a green square"},
    {"uri": "s3://BUCKET/data/img/blue.png", "text": "a blue square"},
]


def pairs_for(bucket: str) -> list[dict]:
    return [{**p, "uri": p["uri"].replace("BUCKET", bucket)} for p in PAIRS]


def test_train_clip_starts_and_waits_for_the_job(aws_env: str, s3_bucket: str) -> None:
    put_pairs(aws_env, s3_bucket, pairs_for(s3_bucket))
    result = runner.invoke(
        app,
        [
            "aws", "train", "clip", f"s3://{s3_bucket}/data/pairs.jsonl",
            "--bucket", s3_bucket, "--role-arn", ROLE, "--hp", "epochs=3", "--hp", "lr=0.0001",
            "--instance-type", "ml.m5.xlarge", "--poll-s", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    job = only_job(aws_env)
    name = job["TrainingJobName"]
    assert printed["job"] == name and printed["status"] == "Completed"
    # The archive the transform and the endpoint take: where SageMaker puts /opt/ml/model, tarred.
    assert printed["model_data"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert printed["model_data"] == f"s3://{s3_bucket}/training/output/{name}/output/model.tar.gz"
    assert job["RoleArn"] == ROLE
    # A CPU instance gets the CPU build of the training container.
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith(
        "pytorch-training:2.6.0-cpu-py312-ubuntu22.04-sagemaker"
    )
    hp = job["HyperParameters"]
    assert ClipTrainConfig.from_hyperparameters(
        {k: v for k, v in hp.items() if not k.startswith(("sagemaker_", "mediasearch_"))}
    ) == ClipTrainConfig(epochs=3, lr=1e-4)
    assert hp["mediasearch_pairs"] == "pairs.jsonl"
    assert hp["mediasearch_pairs_prefix"] == f"s3://{s3_bucket}/data/"
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{s3_bucket}/training/checkpoints/{name}/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    (channel,) = job["InputDataConfig"]
    source = channel["DataSource"]["S3DataSource"]
    assert channel["ChannelName"] == "pairs" and source["S3DataType"] == "ManifestFile"
    # Exactly the pairs file and the images it names: the unrelated file is not downloaded.
    assert read_json(aws_env, source["S3Uri"]) == [
        {"prefix": f"s3://{s3_bucket}/data/"},
        "pairs.jsonl",
        "img/blue.png",
        "img/green.png",
        "img/red.png",
    ]
    # The code the toolkit downloads is there, named by its digest.
    code = hp["sagemaker_submit_directory"]
    assert re.fullmatch(rf"s3://{s3_bucket}/training/code/[0-9a-f]{{16}}/sourcedir\.tar\.gz", code)
    body = client("s3", aws_env).get_object(Bucket=s3_bucket, Key=code.split("/", 3)[3])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "train.py" in tar.getnames()
    # moto runs nothing, so there is no archive to read the model's identity from: said, not fatal.
    assert "is unknown" in result.stderr


def test_train_video_encoder_lists_only_the_videos(aws_env: str, s3_bucket: str) -> None:
    for key in ("media/a.mp4", "media/sub/b.webm", "media/c.png", "media/_mediasearch/frames/x.mp4"):
        put(aws_env, s3_bucket, key, b"not decoded here")
    result = runner.invoke(
        app,
        [
            "aws", "train", "video-encoder", f"s3://{s3_bucket}/media",
            "--bucket", s3_bucket, "--role-arn", ROLE, "--hp", "frames=8", "--hp", "dim=64",
            "--spot", "--max-runtime-s", "600", "--max-wait-s", "1200",
            "--base-model-data", f"s3://{s3_bucket}/models/clip/abc/model.tar.gz", "--no-wait",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    job = only_job(aws_env)
    assert printed == {
        "job": job["TrainingJobName"],
        "status": "InProgress",
        "model_data": job["ModelArtifacts"]["S3ModelArtifacts"],
    }
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] == 1200
    videos, model = job["InputDataConfig"]
    assert read_json(aws_env, videos["DataSource"]["S3DataSource"]["S3Uri"]) == [
        {"prefix": f"s3://{s3_bucket}/media/"},
        "a.mp4",
        "sub/b.webm",
    ]
    assert model["ChannelName"] == "model"
    assert model["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{s3_bucket}/models/clip/abc/model.tar.gz"
    hp = job["HyperParameters"]
    assert hp["mediasearch_job"] == "video-encoder"
    assert VideoTrainConfig.from_hyperparameters(
        {k: v for k, v in hp.items() if not k.startswith(("sagemaker_", "mediasearch_"))}
    ) == VideoTrainConfig(frames=8, dim=64)


class FakeTraining:
    """DescribeTrainingJob answers in sequence (moto's jobs complete at once)."""

    def __init__(self, steps: list[tuple[str, str]], reason: str = "") -> None:
        self.steps = steps
        self.reason = reason
        self.calls = 0

    def describe_training_job(self, TrainingJobName: str) -> dict:
        shown = self.steps[: self.calls + 1]
        status, secondary = shown[-1]
        self.calls += 1
        return {
            "TrainingJobName": TrainingJobName,
            "TrainingJobStatus": status,
            "SecondaryStatus": secondary,
            "SecondaryStatusTransitions": [{"Status": s, "StatusMessage": f"{s} now"} for _, s in shown],
            "FailureReason": self.reason,
        }


def test_wait_reports_each_step_and_a_failure_in_one_line() -> None:
    fake = FakeTraining(
        [
            ("InProgress", "Starting"),
            ("InProgress", "Downloading"),
            ("InProgress", "Training"),
            ("Failed", "Failed"),
        ],
        reason="input error: channel 'pairs': /opt/ml/input/data/pairs is not a directory\n(was it given?)",
    )
    notes: list[str] = []
    launcher = tr.TrainingLauncher(fake, sleep=lambda s: None)
    with pytest.raises(sm.SageMakerError) as caught:
        launcher.wait("job-1", poll_s=0, progress=False, notify=notes.append)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("training job job-1 failed: input error: channel 'pairs'")
    assert "(was it given?)" in message and "/aws/sagemaker/TrainingJobs" in message
    assert notes == [f"job-1: {s}: {s} now" for s in ("Starting", "Downloading", "Training", "Failed")]
    assert fake.calls == 4


def test_wait_returns_the_completed_job() -> None:
    fake = FakeTraining([("InProgress", "Training"), ("Completed", "Completed")])
    done = tr.TrainingLauncher(fake, sleep=lambda s: None).wait("j", progress=False)
    assert done["TrainingJobStatus"] == "Completed" and fake.calls == 2


# ------------------------------------------------------------------------------ CLI mistakes


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--hp", "epochs"], ["--hp 'epochs' is not NAME=VALUE"]),
        (["--hp", "epochs=0"], ["--hp epochs:", "greater than or equal to 1", "the clip hyperparameters:"]),
        (["--hp", "frames=8"], ["--hp frames: Extra inputs are not permitted"]),
        (["--spot", "--max-runtime-s", "100", "--max-wait-s", "50"], ["--max-wait-s must be at least"]),
    ],
)
def test_clip_option_mistakes(aws_env: str, s3_bucket: str, args: list[str], fragments: list[str]) -> None:
    put_pairs(aws_env, s3_bucket, pairs_for(s3_bucket))
    before = job_count(aws_env)
    result = runner.invoke(
        app,
        [
            "aws",
            "train",
            "clip",
            f"s3://{s3_bucket}/data/pairs.jsonl",
            "--bucket",
            s3_bucket,
            "--role-arn",
            ROLE,
            *args,
        ],
    )
    one_line_error(result, *fragments)
    assert job_count(aws_env) == before


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ([{"uri": "img/red.png", "text": "a"}, {"uri": "img/missing.png", "text": "b"}], "line 2: s3://"),
        (
            [{"uri": "img/red.png", "text": "a"}, {"uri": "/abs/green.png", "text": "b"}],
            "relative to the JSON Lines",
        ),
        (
            [{"uri": "img/red.png", "text": "a"}, {"uri": "../x.png", "text": "b"}],
            "relative to the JSON Lines",
        ),
        (
            [{"uri": "img/red.png", "text": "a"}, {"uri": "s3://other/x.png", "text": "b"}],
            "not under the channel",
        ),
        (
            [{"uri": "img/red.png", "text": "a"}, {"uri": "img/green.png"}],
            'line 2: not a JSON object {"uri", "text"}',
        ),
        ([{"uri": "img/red.png", "text": "a"}, {"uri": "unrelated.bin", "text": "b"}], "is not an image"),
        ([{"uri": "img/red.png", "text": "a"}], "1 pairs; contrastive training needs at least 2"),
    ],
)
def test_bad_pairs_are_refused_before_a_job(
    aws_env: str, s3_bucket: str, lines: list[dict], fragment: str
) -> None:
    put_pairs(aws_env, s3_bucket, lines)
    result = runner.invoke(
        app,
        [
            "aws",
            "train",
            "clip",
            f"s3://{s3_bucket}/data/pairs.jsonl",
            "--bucket",
            s3_bucket,
            "--role-arn",
            ROLE,
        ],
    )
    one_line_error(result, fragment)
    assert "missing.png does not exist" in result.stderr or fragment != "line 2: s3://"


def test_hyperparameters_that_disagree_are_one_line(aws_env: str, s3_bucket: str) -> None:
    put(aws_env, s3_bucket, "v/a.mp4", b"x")
    before = job_count(aws_env)
    result = runner.invoke(
        app,
        ["aws", "train", "video-encoder", f"s3://{s3_bucket}/v", "--bucket", s3_bucket, "--role-arn", ROLE,
         "--hp", "frames=64"],
    )  # fmt: skip
    one_line_error(
        result, "--hp: Value error, 64 frames at 1.0 fps span 64 s, longer than segment_seconds=32"
    )
    assert job_count(aws_env) == before


def test_where_things_are_mistakes(aws_env: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIASEARCH_STACK", raising=False)
    before = job_count(aws_env)
    base = ["--bucket", s3_bucket, "--role-arn", ROLE]
    one_line_error(
        runner.invoke(app, ["aws", "train", "clip", "pairs.jsonl", *base]), "s3://bucket/prefix/NAME.jsonl"
    )
    one_line_error(
        runner.invoke(app, ["aws", "train", "clip", f"s3://{s3_bucket}/data/nothing.jsonl", *base]),
        "nothing.jsonl does not exist",
    )
    one_line_error(
        runner.invoke(app, ["aws", "train", "video-encoder", "/local/videos", *base]),
        "SageMaker reads from S3",
    )
    one_line_error(
        runner.invoke(app, ["aws", "train", "video-encoder", f"s3://{s3_bucket}/empty", *base]),
        "no videos under it",
    )
    one_line_error(
        runner.invoke(app, ["aws", "train", "video-encoder", f"s3://{s3_bucket}/m", "--bucket", s3_bucket]),
        "give --role-arn or --stack",
    )
    put(aws_env, s3_bucket, "m/a.mp4", b"x")
    one_line_error(
        runner.invoke(
            app,
            [
                "aws",
                "train",
                "video-encoder",
                f"s3://{s3_bucket}/m",
                *base,
                "--base-model-data",
                "/tmp/model",
            ],
        ),
        "give an s3:// URI",
    )
    assert job_count(aws_env) == before


# ------------------------------------------------------------------------------ the container, locally


def opt_ml(tmp_path: Path, hyperparameters: dict[str, str]) -> Path:
    """An /opt/ml tree as SageMaker lays it out before the entry point runs."""
    root = tmp_path / "opt-ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    return root


def run_entry_point(root: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIASEARCH_", "SM_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MEDIASEARCH_DEVICE="cpu"
    )
    env.pop("PYTHONPATH", None)  # the script finds the package beside it, as in the container
    # The toolkit passes each hyperparameter as --name value too; the entry point reads the file.
    return subprocess.run(
        [sys.executable, str(TRAIN_PY), "--epochs", "1"],
        env=env,
        cwd=root.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def failure(root: Path) -> str:
    return (root / "output" / "failure").read_text()


def test_entry_point_fails_with_a_reason_on_a_missing_channel(tmp_path: Path) -> None:
    root = opt_ml(tmp_path, {"mediasearch_job": "clip", "epochs": "1", "sagemaker_program": '"train.py"'})
    proc = run_entry_point(root, timeout=120)
    assert proc.returncode == 2, proc.stderr
    reason = failure(root)
    assert reason.startswith("input error: channel 'pairs':") and "not a directory" in reason
    assert "\n" not in reason and len(reason) <= FAILURE_MAX
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("hyperparameters", "fragment"),
    [
        ({"epochs": "1"}, "set the mediasearch_job hyperparameter"),
        (
            {"mediasearch_job": "clip", "epochs": "0"},
            "hyperparameters for clip: epochs: Input should be greater",
        ),
        ({"mediasearch_job": '"video-encoder"', "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_entry_point_names_the_bad_hyperparameter(
    tmp_path: Path, hyperparameters: dict, fragment: str
) -> None:
    root = opt_ml(tmp_path, hyperparameters)
    (root / "input" / "data" / "pairs").mkdir(parents=True)
    proc = run_entry_point(root, timeout=120)
    assert proc.returncode == 2
    assert fragment in failure(root)


def test_entry_point_refuses_pairs_outside_the_channel(tmp_path: Path) -> None:
    root = opt_ml(tmp_path, {"mediasearch_job": "clip", "mediasearch_pairs_prefix": "s3://b/data/"})
    channel = root / "input" / "data" / "pairs"
    (channel / "img").mkdir(parents=True)
    (channel / "img" / "red.png").write_bytes(image_bytes(COLOURS["red"]))
    (channel / "pairs.jsonl").write_text(
        json.dumps({"uri": "img/red.png", "text": "red"})
        + "\n"
        + json.dumps({"uri": "img/gone.png", "text": "x"})
    )
    proc = run_entry_point(root, timeout=120)
    assert proc.returncode == 2
    assert failure(root).startswith("input error: pairs.jsonl line 2: img/gone.png is not in the channel")


def test_the_stack_role_may_do_what_a_training_job_does() -> None:
    """infra/template.yaml's SageMaker role: read and write under the launcher's prefix, list it, pull
    the training image the launcher names, and write the jobs' log group."""
    import yaml

    from tests.test_infra import TEMPLATE, CfnLoader, statements

    template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    by_sid = {st["Sid"]: st for st in statements(template)}
    prefix = tr.ARTEFACT_PREFIX
    assert by_sid["TrainingArtefacts"]["Resource"] == {"Fn::Sub": f"${{MediaBucket.Arn}}/{prefix}/*"}
    assert set(by_sid["TrainingArtefacts"]["Action"]) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert by_sid["ListTrainingPrefix"]["Condition"]["StringLike"]["s3:prefix"] == [f"{prefix}/*"]
    repository = tr.training_image("us-east-1", gpu=False).split("/", 1)[1].split(":")[0]
    assert by_sid["PullTrainingImage"]["Resource"]["Fn::Sub"].endswith(
        f":763104351884:repository/{repository}"
    )
    assert by_sid["WriteTrainingLogs"]["Resource"]["Fn::Sub"].endswith(
        "log-group:/aws/sagemaker/TrainingJobs:*"
    )
    rules = {
        r["Id"]: r
        for r in template["Resources"]["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    assert rules["expire-training-checkpoints"]["Prefix"] == f"{prefix}/checkpoints/"
    assert rules["expire-training-job-manifests"]["Prefix"] == f"{prefix}/jobs/"


# ------------------------------------------------------------------------------ end to end, locally

SERVE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("inference", sys.argv[1] + "/code/inference.py")
h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
model = h.model_fn(sys.argv[1])
data = h.input_fn(b'{"text": ["a red square"]}', "application/json")
body, ctype = h.output_fn(h.predict_fn(data, model), "application/json")
import mediasearch
print(mediasearch.__file__)
print(len(json.loads(body)["embeddings"][0]))
"""


def sagemaker_tarball(model_dir: Path, dest: Path) -> Path:
    """What SageMaker uploads: /opt/ml/model's contents, paths relative to it, gzipped."""
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    return dest


def serves(archive: Path, tmp_path: Path) -> tuple[str, int]:
    """Unpack as SageMaker does and run code/inference.py's model_fn..output_fn in a fresh process."""
    unpacked = tmp_path / "served"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    env = {"MEDIASEARCH_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE, str(unpacked)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    origin, dim = proc.stdout.strip().splitlines()[-2:]
    assert origin.startswith(str(unpacked / "code" / "mediasearch")), origin
    return origin, int(dim)


def test_the_model_folder_the_entry_point_writes_serves_once_tarred(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """The step after training, on its own: weights copied as packaging keeps them, then `code/`.
    SageMaker's tarball of that folder serves with its own code (what the transform and endpoint do)."""
    from mediasearch.aws.packaging import build_model_archive, copy_weights, write_code

    model_dir = tmp_path / "model"
    copy_weights(tiny_clip_dir, model_dir)
    write_code(model_dir)
    archive = sagemaker_tarball(model_dir, tmp_path / "model.tar.gz")
    assert serves(archive, tmp_path)[1] == 16
    # The same members as `aws package` builds from those weights.
    packaged = build_model_archive(tiny_clip_dir, tmp_path / "packaged.tar.gz")
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(packaged.members)


def test_clip_job_in_the_container_layout_makes_a_servable_archive(
    tmp_path: Path, tiny_clip_dir: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    root = opt_ml(
        tmp_path,
        {
            **ClipTrainConfig(epochs=1, batch_size=2, holdout_fraction=0.25).to_hyperparameters(),
            "mediasearch_job": "clip",
            "mediasearch_pairs": "pairs.jsonl",
            "mediasearch_pairs_prefix": "s3://b/data/",
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"s3://b/training/code/x/sourcedir.tar.gz"',
        },
    )
    pairs = root / "input" / "data" / "pairs"
    (pairs / "img").mkdir(parents=True)
    lines = []
    for i, (name, colour) in enumerate(sorted(COLOURS.items())):
        (pairs / "img" / f"{name}.png").write_bytes(image_bytes(colour))
        uri = f"img/{name}.png" if i % 2 else f"s3://b/data/img/{name}.png"
        lines.append(json.dumps({"uri": uri, "text": f"a {name} square"}))
    (pairs / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    # The base model as the `model` channel: a saved CLIP's files.
    model_channel = root / "input" / "data" / "model"
    model_channel.mkdir(parents=True)
    for path in tiny_clip_dir.iterdir():
        if path.is_file():
            (model_channel / path.name).write_bytes(path.read_bytes())

    proc = run_entry_point(root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (root / "output" / "failure").exists()
    model_dir = root / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "code" / "inference.py").is_file()
    assert (root / "output" / "data" / "report.json").is_file()

    archive = sagemaker_tarball(model_dir, tmp_path / "model.tar.gz")
    _, dim = serves(archive, tmp_path)
    assert dim == 16  # the tiny CLIP's projection

    # Registered as the CLI does once the job completes: the identity recorded beside the archive.
    from mediasearch.aws.batch import archive_identity, identity_uri, model_identity_of

    key = "training/output/job/output/model.tar.gz"
    client("s3", moto_endpoint).upload_file(str(archive), s3_bucket, key)
    uri = f"s3://{s3_bucket}/{key}"
    identity = model_identity_of(uri)
    assert identity == archive_identity(archive)
    assert read_json(moto_endpoint, identity_uri(uri)) == {"model_id": identity, "model_data": uri}


def test_video_encoder_job_in_the_container_layout_makes_a_servable_archive_and_resumes(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from mediasearch.corpus.videos import SceneSpec, VideoSpec, render_video

    def hyperparameters(epochs: int) -> dict[str, str]:
        config = VideoTrainConfig(
            epochs=epochs,
            batch_size=2,
            segment_seconds=2.0,
            frames=2,
            fps=1.0,
            dim=8,
            hidden=8,
            layers=1,
            aug_draws=1,
            image_size=32,
        )
        return {**config.to_hyperparameters(), "mediasearch_job": "video-encoder"}

    root = opt_ml(tmp_path, hyperparameters(1))
    videos = root / "input" / "data" / "videos"
    (videos / "sub").mkdir(parents=True)
    for i, key in enumerate(["a.mp4", "sub/b.mp4", "c.mp4"]):
        scenes = (
            SceneSpec(3.0, "white", "square", ["red", "green", "blue"][i]),
            SceneSpec(3.0, "black", "circle", "yellow"),
        )
        data, _ = render_video(VideoSpec(key, 64, 48, 5.0, scenes), seed=i)
        (videos / key).write_bytes(data)
    # The frame tower as the `model` channel, packed as a model.tar.gz (an earlier job's output, say).
    from mediasearch.aws.packaging import build_model_archive

    (root / "input" / "data" / "model").mkdir(parents=True)
    build_model_archive(tiny_clip_dir, root / "input" / "data" / "model" / "model.tar.gz")

    proc = run_entry_point(root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    model_dir = root / "model"
    assert {p.name for p in (model_dir / "video_encoder").iterdir()} >= {"config.json", "weights.pt"}
    # The frozen frame tower at the root: the tiny CLIP the channel gave.
    assert (model_dir / "config.json").read_bytes() == (tiny_clip_dir / "config.json").read_bytes()
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    assert report["videos"] == 3 and report["start_epoch"] == 0 and len(report["epoch_loss"]) == 1
    assert (root / "output" / "data" / "loss.png").is_file()
    # The run (checkpoint, feature cache) is in /opt/ml/checkpoints, which SageMaker keeps in S3.
    assert (root / "checkpoints" / "video-encoder" / "checkpoint.pt").is_file()
    archive = sagemaker_tarball(model_dir, tmp_path / "model.tar.gz")
    _, dim = serves(archive, tmp_path)
    assert dim == 16

    # A restarted job finds the checkpoint restored there and goes on from it.
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters(2)))
    again = run_entry_point(root)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resuming from" in again.stderr
    report = json.loads((root / "output" / "data" / "report.json").read_text())
    assert report["start_epoch"] == 1 and len(report["epoch_loss"]) == 2
