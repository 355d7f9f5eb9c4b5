"""SageMaker launcher over plain boto3: models, batch transform jobs, serverless endpoints, status.

The sagemaker Python SDK (3.x) is not used: the control plane needed here is six calls, and plain
client calls are what moto serves in the tests, so the arguments tested are the arguments sent.

Batch transform contract (matching `model_handlers/clip`): manifests are JSON Lines, split by line
(`SplitType=Line`), packed into requests of up to `MaxPayloadInMB` (`BatchStrategy=MultiRecord`),
and results are joined line by line (`AssembleWith=Line`) into `<manifest>.out`, one output line per
input line, which the loader reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from mediasearch.core.layout import OUTPUT_SUFFIX, WorkLayout
from mediasearch.core.storage import S3Store

# AWS Deep Learning Containers: PyTorch inference for SageMaker (TorchServe + the SageMaker inference
# toolkit, which runs model_fn/input_fn/predict_fn/output_fn from code/inference.py). Account
# 763104351884 serves the DLCs in most commercial regions; pass an image URI for the others.
DLC_ACCOUNT = "763104351884"
PYTORCH_INFERENCE_TAG = {
    "cpu": "2.6.0-cpu-py312-ubuntu22.04-sagemaker",
    "gpu": "2.6.0-gpu-py312-cu124-ubuntu22.04-sagemaker",
}
TERMINAL_JOB_STATES = frozenset({"Completed", "Failed", "Stopped"})
# EndpointStatus (botocore's sagemaker service-2.json): these five change by themselves; every other
# state stays until someone acts (InService; Failed; OutOfService; UpdateRollbackFailed, "in service
# with a mix of the old and new endpoint configurations"). Listing the moving states rather than the
# final ones means a state AWS adds later ends the wait instead of polling until the timeout.
TRANSITIONAL_ENDPOINT_STATES = frozenset(
    {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
)

# TransformJobName, EndpointName and EndpointConfigName (botocore's sagemaker service-2.json):
# at most 63 characters matching [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}: no `_` or `.`, no edge hyphens.
NAME_MAX = 63
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9]+")

# The Hugging Face DLCs serve with sagemaker-huggingface-inference-toolkit, whose handler service
# passes output_fn's value to the model server as it is: the handlers' `(bytes, content type)` pair
# becomes a 503 ("Unsupported model output data type") instead of being unpacked as the PyTorch
# toolkit does (sagemaker_inference/transformer.py). Their ECR repositories are huggingface-*.
_HUGGING_FACE_DLC = re.compile(r"\.amazonaws\.com(\.cn)?/huggingface-[^/:@]*([:@]|$)")


class SageMakerError(RuntimeError):
    """A SageMaker resource ended in a failed state; the message carries SageMaker's reason."""


def pytorch_inference_image(region: str, gpu: bool) -> str:
    tag = PYTORCH_INFERENCE_TAG["gpu" if gpu else "cpu"]
    return f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-inference:{tag}"


def is_gpu_instance(instance_type: str) -> bool:
    family = instance_type.removeprefix("ml.").split(".")[0]
    return family.startswith(("g", "p"))


def model_name_for(
    model_data: str, image: str, environment: dict[str, str], prefix: str = "mediasearch-clip"
) -> str:
    """A SageMaker model is immutable: name it by what it is made of, so a change makes a new one."""
    digest = hashlib.sha1(json.dumps([model_data, image, environment], sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


def sagemaker_name(prefix: str, suffix: str) -> str:
    """`prefix-suffix` as a valid SageMaker name: the prefix loses what names cannot hold (runs of
    other characters become one `-`) and is cut to fit, never the suffix, which is what keeps two
    names apart (a job's timestamp, a config's digest and sizes)."""
    suffix = _NOT_IN_NAMES.sub("-", suffix).strip("-")
    if not suffix or len(suffix) > NAME_MAX:
        raise ValueError(f"a SageMaker name suffix must be 1-{NAME_MAX} name characters, got {suffix!r}")
    room = NAME_MAX - len(suffix) - 1
    head = _NOT_IN_NAMES.sub("-", prefix).strip("-")[:room].rstrip("-")
    return f"{head}-{suffix}" if head else suffix


def job_name(prefix: str = "mediasearch-clip", now: datetime | None = None) -> str:
    """A TransformJobName unique per second: `prefix` made valid (a collection may hold `_`) and cut so
    the timestamp always survives (the name must be unique in the account and region)."""
    return sagemaker_name(prefix, (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S"))


def unsupported_image(image: str) -> str | None:
    """Why the handlers cannot run in `image`, or None when nothing is known against it."""
    if _HUGGING_FACE_DLC.search(image):
        return (
            f"{image} is a Hugging Face inference container: its handler service sends output_fn's "
            "(body, content type) pair to the model server unpacked, which answers 503. Use the PyTorch "
            "inference DLC (the default) or an image built on it."
        )
    return None


@dataclass(frozen=True)
class TransformSettings:
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    # One manifest of 1000 lines is ~250 KB, so 1 MB sends a whole manifest per request: the handler
    # batches the model itself and overlaps S3 reads with the forward pass.
    max_payload_mb: int = 1
    # The handler parallelises inside a request; several concurrent requests would fight for the GPU.
    max_concurrent_transforms: int = 1
    invocation_timeout_s: int = 900
    invocation_retries: int = 1


# TorchServe workers per model, each loading its own copy of the model. Unset, the toolkit writes no
# `default_workers_per_model` and TorchServe starts one per GPU or else one per CPU it sees, which is
# the host's count because the toolkit runs the JVM with -XX:-UseContainerSupport: on a serverless
# endpoint that is several CLIPs in a 6 GB memory limit, each loaded during the cold start. One is
# enough everywhere: the endpoint scales by MaxConcurrency (more instances), and a transform instance
# gets MaxConcurrentTransforms requests at a time (1, see TransformSettings), each of which the
# handler already batches on the model while threads fetch and decode the next images.
MODEL_SERVER_WORKERS = 1


def model_environment(
    region: str,
    *,
    batch_size: int,
    decode_workers: int,
    max_image_pixels: int,
    workers: int = MODEL_SERVER_WORKERS,
) -> dict[str, str]:
    """The SageMaker model's container environment: the toolkit's variables, and the MEDIASEARCH_*
    settings the handler reads when it loads (the callers take them from `Settings`)."""
    return {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": region,
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
        # A 1000-line response of 512-d vectors is ~6 MB, TorchServe's default response limit.
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "900",
        "TS_MAX_RESPONSE_SIZE": str(64 * 1024 * 1024),
        "TS_MAX_REQUEST_SIZE": str(16 * 1024 * 1024),
        "MEDIASEARCH_BATCH_SIZE": str(batch_size),
        "MEDIASEARCH_DECODE_WORKERS": str(decode_workers),
        "MEDIASEARCH_MAX_IMAGE_PIXELS": str(max_image_pixels),
        "HF_HUB_OFFLINE": "1",  # the weights are in the archive; never reach for the hub
    }


@dataclass
class TransformPlan:
    """Which manifests a job must run, and how SageMaker is told about them."""

    manifests_uri: str  # s3://bucket/.../manifests/
    output_uri: str  # s3://bucket/.../outputs/
    pending: list[str] = field(default_factory=list)  # store keys of manifests without an output
    done: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # done manifest -> where its output was found
    data_type: str = "S3Prefix"  # or ManifestFile when only some objects under the prefix are input
    input_uri: str = ""  # the prefix, or the SageMaker manifest file listing `pending`

    @property
    def empty(self) -> bool:
        return not self.pending


def find_outputs(
    layout: WorkLayout, tag: str, manifest_keys: Iterable[str], listed: Iterable[str]
) -> dict[str, str]:
    """Of `manifest_keys`, those with an output among `listed` (keys under `outputs/<tag>/`), and where.

    The documented rule (TransformOutput.S3OutputPath, for S3Prefix input) puts the output of
    `<input prefix>/<rel>` at `S3OutputPath/<rel>.out`, which is `layout.output()`; that key is looked
    for first. For a ManifestFile input no AWS page says what `<rel>` is (the entry as listed, or the
    whole key?), so an output at another depth under the prefix with the manifest's relative path, or
    failing that its file name, is accepted too: a job whose outputs land elsewhere is then neither
    re-run nor missed by the loader. docs/deploy.md asks for a listing after the first real job.
    """
    keys = [k for k in listed if layout.is_output(k) and k.startswith(layout.outputs_dir(tag))]
    present = set(keys)
    by_suffix: dict[str, list[str]] = {}
    for key in sorted(keys):
        name = key.rsplit("/", 1)[-1]
        by_suffix.setdefault(name, []).append(key)
    found: dict[str, str] = {}
    for manifest in manifest_keys:
        expected = layout.output(manifest, tag)
        if expected in present:
            found[manifest] = expected
            continue
        rel = layout.manifest_relpath(manifest) + OUTPUT_SUFFIX
        candidates = by_suffix.get(rel.rsplit("/", 1)[-1], [])
        nested = [k for k in candidates if k.endswith("/" + rel)]
        if nested or candidates:
            found[manifest] = (nested or candidates)[0]
    return found


def plan_transform(store: S3Store, layout: WorkLayout, tag: str, name: str) -> TransformPlan:
    """Skip manifests with an output for this model already; use a manifest file unless all are pending.

    A plain S3Prefix input sends every object under the prefix, so it is used only when that is
    exactly the work to do; otherwise a SageMaker manifest file lists the pending manifests alone.
    Outputs land in the layout's `outputs/<tag>/`, the same keys the local runner writes (see
    `find_outputs` for where else they are looked for).
    """
    plan = TransformPlan(
        manifests_uri=store.uri(layout.manifests_dir.rstrip("/")) + "/",
        output_uri=store.uri(layout.outputs_dir(tag).rstrip("/")) + "/",
    )
    objects = [o.key for o in store.list(layout.manifests_dir)]
    manifests = sorted(k for k in objects if layout.is_manifest(k))
    # One listing of the output prefix instead of a HEAD per manifest.
    plan.outputs = find_outputs(layout, tag, manifests, (o.key for o in store.list(layout.outputs_dir(tag))))
    for key in manifests:
        (plan.done if key in plan.outputs else plan.pending).append(key)
    if plan.empty:
        return plan
    if len(plan.pending) == len(objects):
        plan.input_uri = plan.manifests_uri
        return plan
    listing: list[Any] = [{"prefix": plan.manifests_uri}]
    listing += [layout.manifest_relpath(k) for k in plan.pending]
    manifest_file = layout.job_manifest(name)
    store.put(manifest_file, json.dumps(listing).encode(), "application/json")
    plan.data_type = "ManifestFile"
    plan.input_uri = store.uri(manifest_file)
    return plan


def transform_request(
    name: str, model_name: str, plan: TransformPlan, settings: TransformSettings, tags: dict[str, str]
) -> dict[str, Any]:
    """The CreateTransformJob request (a pure function, so tests can read it without a call)."""
    return {
        "TransformJobName": name,
        "ModelName": model_name,
        "MaxConcurrentTransforms": settings.max_concurrent_transforms,
        "MaxPayloadInMB": settings.max_payload_mb,
        "BatchStrategy": "MultiRecord",
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": settings.invocation_timeout_s,
            "InvocationsMaxRetries": settings.invocation_retries,
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": plan.data_type, "S3Uri": plan.input_uri}},
            "ContentType": "application/jsonlines",
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": plan.output_uri,
            "Accept": "application/jsonlines",
            "AssembleWith": "Line",
        },
        "TransformResources": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
        },
        # Join the input line to nothing: the handler already echoes every input field.
        "DataProcessing": {"JoinSource": "None"},
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
    }


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "not found" in error.get("Message", "").lower()
        or "could not find" in error.get("Message", "").lower()
    )


def sagemaker_client(region: str | None = None):  # boto3 client, typed loosely
    import boto3

    # boto3 reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SAGEMAKER itself, so moto and LocalStack work.
    return boto3.client("sagemaker", region_name=region or os.environ.get("AWS_REGION") or None)


class SageMakerLauncher:
    def __init__(self, client: Any = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client or sagemaker_client()
        self.sleep = sleep

    # -- models -----------------------------------------------------------------------------------

    def ensure_model(
        self, name: str, model_data: str, image: str, role_arn: str, environment: dict[str, str]
    ) -> str:
        """Create the model unless one of that name exists (names are content-derived).

        Raises `SageMakerError` for an image the handlers cannot run in (see `unsupported_image`).
        """
        problem = unsupported_image(image)
        if problem:
            raise SageMakerError(problem)
        try:
            self.client.describe_model(ModelName=name)
            return name
        except Exception as exc:
            if not _not_found(exc):
                raise
        self.client.create_model(
            ModelName=name,
            ExecutionRoleArn=role_arn,
            PrimaryContainer={"Image": image, "ModelDataUrl": model_data, "Environment": environment},
            Tags=[{"Key": "project", "Value": "mediasearch"}],
        )
        return name

    # -- batch transform --------------------------------------------------------------------------

    def start_transform(self, request: dict[str, Any]) -> str:
        self.client.create_transform_job(**request)
        return request["TransformJobName"]

    def wait_transform(
        self,
        name: str,
        poll_s: float = 30.0,
        total: int = 0,
        finished: Callable[[], int] | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Poll until the job ends. SageMaker reports no per-record progress, so the bar counts the
        `.out` files that have appeared (`finished`) against the manifests sent (`total`)."""
        bar = tqdm(total=total or None, unit="manifest", desc=name, disable=not progress, file=sys.stderr)
        with bar:
            while True:
                job = self.client.describe_transform_job(TransformJobName=name)
                status = job["TransformJobStatus"]
                if finished is not None:
                    bar.update(max(0, finished() - bar.n))
                bar.set_postfix(status=status)
                if status in TERMINAL_JOB_STATES:
                    break
                self.sleep(poll_s)
        if status != "Completed":
            reason = job.get("FailureReason") or "no reason given"
            raise SageMakerError(
                f"transform job {name} {status.lower()}: {reason}. Logs: CloudWatch group "
                "/aws/sagemaker/TransformJobs, streams starting with the job name."
            )
        return job

    # -- endpoints --------------------------------------------------------------------------------

    def deploy_serverless_endpoint(
        self, endpoint: str, model_name: str, memory_mb: int = 6144, max_concurrency: int = 5
    ) -> str:
        """Create or update a serverless endpoint serving `model_name`; returns its config name."""
        config = sagemaker_name(endpoint, f"{model_name.rsplit('-', 1)[-1]}-{memory_mb}-{max_concurrency}")
        try:
            self.client.describe_endpoint_config(EndpointConfigName=config)
        except Exception as exc:
            if not _not_found(exc):
                raise
            self.client.create_endpoint_config(
                EndpointConfigName=config,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": model_name,
                        "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency},
                    }
                ],
            )
        try:
            current = self.client.describe_endpoint(EndpointName=endpoint)
        except Exception as exc:
            if not _not_found(exc):
                raise
            self.client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
            return config
        if current["EndpointConfigName"] != config:
            self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=config)
        return config

    def wait_endpoint(self, endpoint: str, poll_s: float = 20.0, timeout_s: float = 1800.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            desc = self.client.describe_endpoint(EndpointName=endpoint)
            status = desc["EndpointStatus"]
            if status not in TRANSITIONAL_ENDPOINT_STATES:
                break
            if time.monotonic() > deadline:
                raise SageMakerError(f"endpoint {endpoint} still {status} after {timeout_s:.0f}s")
            self.sleep(poll_s)
        if status != "InService":
            # UpdateRollbackFailed still serves, from a mix of old and new configurations, so it is no
            # success either: it needs another UpdateEndpoint (or a delete) by hand.
            raise SageMakerError(
                f"endpoint {endpoint} is {status}: {desc.get('FailureReason', 'no reason given')}"
            )
        return desc

    # -- status -----------------------------------------------------------------------------------

    def recent_jobs(self, name_contains: str = "mediasearch", limit: int = 5) -> list[dict[str, Any]]:
        page = self.client.list_transform_jobs(
            NameContains=name_contains, SortBy="CreationTime", SortOrder="Descending", MaxResults=limit
        )
        return page["TransformJobSummaries"]

    def endpoint_status(self, endpoint: str) -> dict[str, Any] | None:
        try:
            return self.client.describe_endpoint(EndpointName=endpoint)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise


def count_outputs(
    store: S3Store, layout: WorkLayout, tag: str, manifest_keys: Sequence[str]
) -> Callable[[], int]:
    """A progress probe: how many of `manifest_keys` have an output now (found as `find_outputs` does)."""
    wanted = list(manifest_keys)

    def probe() -> int:
        listed = (o.key for o in store.list(layout.outputs_dir(tag)))
        return len(find_outputs(layout, tag, wanted, listed))

    return probe
