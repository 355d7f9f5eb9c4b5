"""SageMaker training jobs over plain boto3: `mediasearch aws train video-encoder|clip`.

One job = CreateTrainingJob in script mode on the AWS PyTorch training container (the
sagemaker-training-toolkit downloads `sagemaker_submit_directory`, pip-installs its requirements.txt and
runs `sagemaker_program`), then DescribeTrainingJob until it ends. The source archive holds
`model_handlers/training/train.py` (run as `train.py`), this package and `model_handlers/clip`, the
handler the entry point copies into /opt/ml/model/code (see `mediasearch.training.container`). The
job's artefact, `<S3OutputPath>/<job>/output/model.tar.gz`, is therefore a model archive in the layout
of `mediasearch.aws.packaging`: `aws transform --model-data` and `aws deploy --endpoint-only` take it.

Everything under one bucket prefix (default `training/`), which infra/template.yaml's SageMaker role
may read and write:

    training/code/<digest>/sourcedir.tar.gz      the source archive, named by its content
    training/jobs/<job>/<channel>.manifest       the input listing of each channel (below)
    training/output/<job>/output/model.tar.gz    the model SageMaker tars from /opt/ml/model
    training/checkpoints/<job>/                  /opt/ml/checkpoints, kept across spot interruptions

Channels are ManifestFile inputs (S3DataSource): a JSON list whose first entry is `{"prefix": ...}` and
whose other entries are keys relative to it, downloaded to /opt/ml/input/data/<channel>/<relative key>.
Listing exactly the inputs keeps the rest of a prefix (a media library's work area of frames and
thumbnails, other files beside the pairs) off the instance, and checks the inputs before paying for one:

- `videos` (video-encoder): every video under the source prefix, its `_mediasearch/` work area left out.
- `pairs` (clip): the JSON Lines file and every image its lines name. An image `uri` is a path relative
  to the JSON Lines file's folder, or an s3:// URI under that folder; anything else is refused here.

Optional channel `model`: a saved CLIP (its files, or a model.tar.gz such as an earlier job's output)
to fine-tune from (clip) or to take frame features with (video-encoder), instead of a hub id.

Resuming: CheckpointConfig maps /opt/ml/checkpoints to the S3 prefix; with managed spot training
SageMaker restarts an interrupted job with that folder restored. The video encoder keeps its run there
(checkpoint.pt after every epoch) and resumes from it; CLIP fine-tuning keeps no mid-run checkpoint and
starts again. Give `--checkpoint-uri` of an earlier job to resume a stopped video-encoder run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mediasearch.aws import sagemaker as sm
from mediasearch.aws.packaging import HANDLERS_DIR, ModelArchive, code_files, write_archive
from mediasearch.core.images import is_image_key, is_video_key
from mediasearch.core.storage import S3Store, StoreError
from mediasearch.training.config import TrainConfig
from mediasearch.training.container import (
    DATA_CHANNEL,
    JOB_KEY,
    JOBS,
    MODEL_CHANNEL,
)

# AWS Deep Learning Containers, PyTorch 2.6 training for SageMaker (deep-learning-containers
# docs/releasenotes/pytorch/pytorch-training-2.6-{cpu,gpu}-sagemaker.md): the torch the inference DLC
# has (mediasearch.aws.sagemaker.PYTORCH_INFERENCE_TAG), so the pinned transformers suits both.
PYTORCH_TRAINING_TAG = {
    "cpu": "2.6.0-cpu-py312-ubuntu22.04-sagemaker",
    "gpu": "2.6.0-gpu-py312-cu126-ubuntu22.04-sagemaker",
}
# The bucket prefix of everything a job reads and writes (infra/template.yaml's role and lifecycle
# rules name it; `--prefix` moves it, the role then needs the same change).
ARTEFACT_PREFIX = "training"
TRAINING_DIR = HANDLERS_DIR / "training"
ENTRY_POINT = "train.py"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # what mediasearch.training.container reads
# CreateTrainingJob's limits (botocore sagemaker service-2.json: HyperParameters max 100 entries,
# HyperParameterKey max 256 and HyperParameterValue max 2500 characters).
HYPERPARAMETERS_MAX = 100
HYPERPARAMETER_KEY_MAX = 256
HYPERPARAMETER_VALUE_MAX = 2500
TERMINAL_TRAINING_STATES = frozenset({"Completed", "Failed", "Stopped"})


class TrainingSetupError(ValueError):
    """The job cannot be started as asked (inputs missing, a value too long); the message says which."""


@dataclass(frozen=True)
class TrainingSettings:
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1  # the entry point trains on one host
    volume_gb: int = 50
    max_runtime_s: int = 24 * 3600
    spot: bool = False
    # Spot only: how long to wait for capacity and interruptions, in all (at least max_runtime_s).
    max_wait_s: int | None = None


@dataclass(frozen=True)
class Channel:
    name: str
    s3_uri: str
    data_type: str = "ManifestFile"  # or S3Prefix

    def config(self) -> dict[str, Any]:
        return {
            "ChannelName": self.name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": self.data_type,
                    "S3Uri": self.s3_uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "CompressionType": "None",
            "InputMode": "File",
        }


def training_image(region: str, gpu: bool) -> str:
    return f"{sm.DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-training:{PYTORCH_TRAINING_TAG['gpu' if gpu else 'cpu']}"


def training_job_name(job: str, now: datetime | None = None) -> str:
    """A TrainingJobName (same rule as transform jobs' names) unique per second."""
    return sm.job_name(f"mediasearch-{job}", now)


def source_archive(dest: Path) -> ModelArchive:
    """sourcedir.tar.gz: train.py and requirements.txt at the root, the package and the clip handler
    beside them where `mediasearch.aws.packaging` looks for them (`model_handlers/clip/`)."""
    files = [
        (TRAINING_DIR / ENTRY_POINT, ENTRY_POINT),
        (TRAINING_DIR / "requirements.txt", "requirements.txt"),
    ]
    for path, arcname in code_files():
        if arcname.startswith("code/mediasearch/"):
            files.append((path, arcname.removeprefix("code/")))
        else:  # the handler's inference.py and requirements.txt
            files.append((path, f"model_handlers/clip/{arcname.removeprefix('code/')}"))
    return write_archive(files, dest)


def upload_source(archive: ModelArchive, store: S3Store) -> str:
    """Upload under a digest-named key, once; returns its s3:// URI."""
    key = f"code/{archive.sha256[:16]}/sourcedir.tar.gz"
    if store.stat(key) is None:
        store.put(key, archive.path.read_bytes(), "application/gzip")
    return store.uri(key)


def _folder(uri: str) -> str:
    return uri if uri.endswith("/") else f"{uri}/"


def write_manifest(store: S3Store, key: str, prefix_uri: str, relative: list[str]) -> str:
    """A SageMaker manifest file (`[{"prefix": ...}, key, ...]`); returns its URI."""
    store.put(key, json.dumps([{"prefix": _folder(prefix_uri)}, *relative]).encode(), "application/json")
    return store.uri(key)


def videos_channel(source: S3Store, work_prefix: str, jobs: S3Store, job: str) -> tuple[Channel, int]:
    """The `videos` channel: every video under `source` but its work area; (channel, video count)."""
    work = work_prefix.strip("/") + "/"
    videos = sorted(o.key for o in source.list() if is_video_key(o.key) and not o.key.startswith(work))
    if not videos:
        raise TrainingSetupError(f"{source.root_uri}: no videos under it to train on")
    uri = write_manifest(jobs, f"jobs/{job}/videos.manifest", source.root_uri, videos)
    return Channel(DATA_CHANNEL["video-encoder"], uri), len(videos)


def pairs_channel(pairs: S3Store, name: str, jobs: S3Store, job: str) -> tuple[Channel, int]:
    """The `pairs` channel: the JSON Lines file `name` in the folder `pairs` and the images it names,
    each checked to be there; (channel, pair count)."""
    from mediasearch.training.container import TrainingInputError, image_path

    try:
        text = pairs.get(name).decode()
    except StoreError as exc:
        raise TrainingSetupError(str(exc)) from None
    folder = _folder(pairs.root_uri)
    present = {o.key for o in pairs.list()}
    wanted: set[str] = set()
    count = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            uri = str(record["uri"])
            if not isinstance(record.get("text"), str):
                raise TypeError
            relative = image_path(uri, folder)
        except (ValueError, KeyError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, TrainingInputError) else 'not a JSON object {"uri", "text"}'
            raise TrainingSetupError(f"{pairs.uri(name)} line {number}: {reason}") from None
        if relative not in present:
            raise TrainingSetupError(f"{pairs.uri(name)} line {number}: {folder}{relative} does not exist")
        if not is_image_key(relative):
            raise TrainingSetupError(f"{pairs.uri(name)} line {number}: {uri} is not an image")
        wanted.add(relative)
        count += 1
    if count < 2:
        raise TrainingSetupError(f"{pairs.uri(name)}: {count} pairs; contrastive training needs at least 2")
    uri = write_manifest(jobs, f"jobs/{job}/pairs.manifest", folder, [name, *sorted(wanted)])
    return Channel(DATA_CHANNEL["clip"], uri), count


def model_channel(uri: str) -> Channel:
    """The optional `model` channel: a saved model's folder, or one model.tar.gz (an S3 prefix either way)."""
    if not uri.startswith("s3://"):
        raise TrainingSetupError(f"--base-model-data {uri!r}: give an s3:// URI (a model.tar.gz or a folder)")
    return Channel(MODEL_CHANNEL, uri if uri.endswith(".tar.gz") else _folder(uri), "S3Prefix")


def check_hyperparameters(values: Mapping[str, str]) -> None:
    if len(values) > HYPERPARAMETERS_MAX:
        raise TrainingSetupError(
            f"{len(values)} hyperparameters; SageMaker takes at most {HYPERPARAMETERS_MAX}"
        )
    for key, value in values.items():
        if len(key) > HYPERPARAMETER_KEY_MAX:
            raise TrainingSetupError(
                f"hyperparameter name {key[:40]}...: longer than {HYPERPARAMETER_KEY_MAX}"
            )
        if len(value) > HYPERPARAMETER_VALUE_MAX:
            raise TrainingSetupError(
                f"hyperparameter {key}: {len(value)} characters, SageMaker takes at most {HYPERPARAMETER_VALUE_MAX}"
            )


def hyperparameters(
    job: str, config: TrainConfig, source_uri: str, region: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The config's values, the toolkit's script-mode keys, and the job options the entry point reads."""
    if not isinstance(config, JOBS[job]):
        raise TrainingSetupError(f"a {job} job takes a {JOBS[job].__name__}, not {type(config).__name__}")
    values = {
        **config.to_hyperparameters(),
        # sagemaker-training-toolkit params.py: the program, where to download it from, the region.
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": region,
        "sagemaker_container_log_level": "20",
        JOB_KEY: job,
        **(extra or {}),
    }
    check_hyperparameters(values)
    return values


def training_request(
    name: str,
    role_arn: str,
    image: str,
    values: Mapping[str, str],
    channels: list[Channel],
    output_uri: str,
    checkpoint_uri: str,
    settings: TrainingSettings = TrainingSettings(),
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The CreateTrainingJob request (a pure function, so tests read it without a call)."""
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": settings.max_runtime_s}
    if settings.spot:
        # Required with managed spot, and at least MaxRuntimeInSeconds (CreateTrainingJob API reference).
        stopping["MaxWaitTimeInSeconds"] = max(
            settings.max_wait_s or 2 * settings.max_runtime_s, settings.max_runtime_s
        )
    return {
        "TrainingJobName": name,
        "HyperParameters": dict(values),
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role_arn,
        "InputDataConfig": [c.config() for c in channels],
        "OutputDataConfig": {"S3OutputPath": _folder(output_uri)},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.spot,
        "CheckpointConfig": {"S3Uri": _folder(checkpoint_uri), "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Tags": [
            {"Key": k, "Value": v} for k, v in sorted({"project": "mediasearch", **(tags or {})}.items())
        ],
    }


def artifact_uri(output_uri: str, name: str) -> str:
    """Where SageMaker puts a job's /opt/ml/model, tarred (OutputDataConfig.S3OutputPath)."""
    return f"{_folder(output_uri)}{name}/output/model.tar.gz"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class TrainingLauncher:
    def __init__(self, client: Any = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client or sm.sagemaker_client()
        self.sleep = sleep

    def start(self, request: Mapping[str, Any]) -> str:
        self.client.create_training_job(**request)
        return str(request["TrainingJobName"])

    def wait(
        self,
        name: str,
        poll_s: float = 30.0,
        progress: bool = True,
        notify: Callable[[str], None] = lambda message: None,
    ) -> dict[str, Any]:
        """Poll until the job ends, showing its status and secondary status (SageMaker reports no
        epoch progress); each new secondary status message is passed to `notify` once."""
        seen: set[tuple[str, str]] = set()
        bar = tqdm(total=None, desc=name, unit="poll", disable=not progress, file=sys.stderr)
        with bar:
            while True:
                job = self.client.describe_training_job(TrainingJobName=name)
                status = job["TrainingJobStatus"]
                for step in job.get("SecondaryStatusTransitions", []):
                    key = (step.get("Status", ""), step.get("StatusMessage", ""))
                    if key not in seen:
                        seen.add(key)
                        notify(f"{name}: {key[0]}: {key[1]}" if key[1] else f"{name}: {key[0]}")
                bar.set_postfix(status=status, step=job.get("SecondaryStatus", ""))
                bar.update(1)
                if status in TERMINAL_TRAINING_STATES:
                    break
                self.sleep(poll_s)
        if status != "Completed":
            reason = _one_line(job.get("FailureReason") or job.get("SecondaryStatus") or "no reason given")
            raise sm.SageMakerError(
                f"training job {name} {status.lower()}: {reason} (logs: CloudWatch group "
                f"/aws/sagemaker/TrainingJobs, streams {name}/algo-*)"
            )
        return job
