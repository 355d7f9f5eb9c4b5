"""`mediasearch aws ...`: package the model, deploy the stack, run SageMaker batch transform, load, status.

Where a value lives in the CloudFormation stack (bucket, roles, OpenSearch URL), `--stack NAME` (or
MEDIASEARCH_STACK) reads it from the stack outputs; explicit options win, so every command also works
without a stack. `transform` and `load` run `mediasearch.indexing.pipeline`, the same steps as
`mediasearch ingest` and `mediasearch load`, with SageMaker as the transform step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mediasearch.aws import sagemaker as sm
from mediasearch.core.settings import IndexBackend, Settings, get_settings

if TYPE_CHECKING:
    from mediasearch.core.storage import S3Store

aws_app = typer.Typer(
    help="Deploy to AWS and run the batch pipeline on SageMaker (see docs/deploy.md).",
    no_args_is_help=True,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"
NO_UPDATES = "No updates are to be performed"

StackOpt = Annotated[
    str | None, typer.Option(help="CloudFormation stack to read outputs from (default: MEDIASEARCH_STACK)")
]

# The serverless query endpoint's model encodes one query at a time on a few CPU cores, so it needs
# neither the transform instance's batch nor its fetch threads; infra/template.yaml's ClipModel sets
# the same values (a test holds the two together).
QUERY_ENDPOINT_BATCH_SIZE = 8
QUERY_ENDPOINT_DECODE_WORKERS = 2


def region() -> str:
    import boto3

    return os.environ.get("AWS_REGION") or boto3.session.Session().region_name or "us-east-1"


def _client(service: str):  # boto3 client; boto3 itself honours AWS_ENDPOINT_URL(_<SERVICE>)
    import boto3

    return boto3.client(service, region_name=region())


def stack_outputs(stack: str | None) -> dict[str, str]:
    """The outputs of `stack`, or of MEDIASEARCH_STACK's when none is given; none without either."""
    stack = stack or get_settings().stack
    if not stack:
        return {}
    described = _client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def usage_error(message: str) -> typer.Exit:
    """A mistake in how a command was called: one red line on stderr, then exit status 2."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def _need(value: str | None, outputs: dict[str, str], key: str, option: str) -> str:
    found = value or outputs.get(key)
    if not found:
        raise usage_error(f"give {option} or --stack with a stack that outputs {key}")
    return found


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _index_settings(settings: Settings, outputs: dict[str, str]) -> Settings:
    """Point the index at the stack's OpenSearch domain (SigV4) when a stack is given."""
    if "OpenSearchUrl" not in outputs:
        return settings
    return settings.model_copy(
        update={
            "index_backend": IndexBackend.OPENSEARCH,
            "opensearch_url": outputs["OpenSearchUrl"],
            "opensearch_aws_region": region(),
        }
    )


def _s3_source(source: str) -> S3Store:
    from mediasearch.core.storage import StoreError, open_s3_store

    try:
        return open_s3_store(source)
    except StoreError:
        raise usage_error(f"SageMaker reads from S3: give s3://bucket/prefix, not {source!r}") from None


def _note(message: str) -> None:
    typer.echo(message, err=True)


@aws_app.command()
def package(
    model: Annotated[
        str | None, typer.Option(help="hub id or saved-model folder (default: MEDIASEARCH_CLIP_MODEL)")
    ] = None,
    bucket: Annotated[str | None, typer.Option(help="S3 bucket for the artefact")] = None,
    prefix: Annotated[str, typer.Option(help="key prefix; the archive digest is appended")] = "models/clip",
    handler_dir: Annotated[
        Path | None, typer.Option(help="handler folder (inference.py + requirements.txt)")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="where model.tar.gz is written")] = Path("build/model-clip"),
    stack: StackOpt = None,
) -> None:
    """Build model.tar.gz (weights + code/inference.py + mediasearch + requirements) and upload it."""
    from mediasearch import backends
    from mediasearch.aws.batch import archive_identity, record_identity
    from mediasearch.aws.packaging import PackagingError, package_model
    from mediasearch.core.storage import s3_client

    outputs = stack_outputs(stack)
    target = _need(bucket, outputs, "BucketName", "--bucket")
    settings = get_settings()
    try:
        archive, uri = package_model(
            model or settings.clip_model,
            target,
            prefix,
            s3_client(),
            out_dir,
            handler_dir,
            onnx_cache=backends.onnx_cache(settings),
            digest_cache=settings.cache_dir,
        )
    except PackagingError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    # Recorded beside the archive: `aws transform` plans against it (a document of another model is
    # pending) before any job runs, and the handler records the same identity on every document.
    identity = archive_identity(archive.path)
    record_identity(uri, identity)
    _echo_json(
        {"model_data": uri, "sha256": archive.sha256, "archive": str(archive.path), "model_id": identity}
    )


def _stack_parameters(
    cf: Any, stack: str, given: dict[str, str], template_body: str
) -> tuple[list[dict[str, Any]], bool]:
    """Parameters for create/update: given values, else the stack's previous ones on update."""
    try:
        current = cf.describe_stacks(StackName=stack)["Stacks"][0]
    except Exception as exc:
        if "does not exist" not in str(exc):
            raise
        current = None
    if current is not None and current["StackStatus"] == "ROLLBACK_COMPLETE":
        # A stack whose first create failed cannot be updated; it must be deleted and created again.
        raise usage_error(f"stack {stack} is ROLLBACK_COMPLETE: delete it, then deploy again")
    params: list[dict[str, str | bool]] = [
        {"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())
    ]
    if current is not None:
        known = {p["ParameterKey"] for p in cf.get_template_summary(TemplateBody=template_body)["Parameters"]}
        previous = {p["ParameterKey"] for p in current.get("Parameters", [])}
        params += [
            {"ParameterKey": k, "UsePreviousValue": True} for k in sorted((previous & known) - set(given))
        ]
    return params, current is not None


@aws_app.command()
def deploy(
    stack: Annotated[
        str | None, typer.Option(help="stack name (default: MEDIASEARCH_STACK, else mediasearch)")
    ] = None,
    template: Annotated[Path, typer.Option(help="CloudFormation template")] = TEMPLATE,
    model_data: Annotated[str | None, typer.Option(help="s3:// URI printed by `aws package`")] = None,
    lambda_image: Annotated[str | None, typer.Option(help="query Lambda image URI (ECR)")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE template parameter")
    ] = None,
    wait: bool = True,
    endpoint_only: Annotated[
        bool, typer.Option(help="skip CloudFormation: (re)deploy only the serverless query endpoint")
    ] = False,
    endpoint_name: str = "mediasearch-clip",
    role_arn: Annotated[str | None, typer.Option(help="SageMaker execution role (--endpoint-only)")] = None,
    image_uri: Annotated[str | None, typer.Option(help="inference image (default: PyTorch DLC, CPU)")] = None,
    memory_mb: int = 6144,
    max_concurrency: int = 5,
) -> None:
    """Create or update the CloudFormation stack and print its outputs (the search URL among them)."""
    settings = get_settings()
    stack = stack or settings.stack or "mediasearch"
    if endpoint_only:
        # The stack is consulted only for what was not given, so this works without one.
        outputs = stack_outputs(stack) if not (model_data and role_arn) else {}
        data = _need(model_data, outputs, "ModelDataUrl", "--model-data")
        role = _need(role_arn, outputs, "SageMakerRoleArn", "--role-arn")
        image = image_uri or sm.pytorch_inference_image(region(), gpu=False)
        env = sm.model_environment(
            region(),
            batch_size=QUERY_ENDPOINT_BATCH_SIZE,
            decode_workers=QUERY_ENDPOINT_DECODE_WORKERS,
            max_image_pixels=settings.max_image_pixels,
        )
        launcher = sm.SageMakerLauncher(_client("sagemaker"))
        try:
            model_name = launcher.ensure_model(sm.model_name_for(data, image, env), data, image, role, env)
            config = launcher.deploy_serverless_endpoint(
                endpoint_name, model_name, memory_mb, max_concurrency
            )
            desc = launcher.wait_endpoint(endpoint_name) if wait else {"EndpointStatus": "Creating"}
        except sm.SageMakerError as exc:  # an unsupported image, or an endpoint that ended failed
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(1) from None
        _echo_json(
            {
                "endpoint": endpoint_name,
                "config": config,
                "model": model_name,
                "status": desc["EndpointStatus"],
            }
        )
        return

    given: dict[str, str] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise usage_error(f"--param {item!r} is not KEY=VALUE")
        given[key] = value
    if model_data:
        given["ModelDataUrl"] = model_data
    if lambda_image:
        given["QueryImageUri"] = lambda_image

    cf = _client("cloudformation")
    body = template.read_text()
    params, exists = _stack_parameters(cf, stack, given, body)
    request = {
        "StackName": stack,
        "TemplateBody": body,
        "Parameters": params,
        # The template creates IAM roles (unnamed), hence CAPABILITY_IAM and nothing wider.
        "Capabilities": ["CAPABILITY_IAM"],
        "Tags": [{"Key": "project", "Value": "mediasearch"}],
    }
    if exists:
        try:
            cf.update_stack(**request)
        except Exception as exc:
            if NO_UPDATES not in str(exc):
                raise
            typer.echo("stack is up to date", err=True)
            wait = False
    else:
        cf.create_stack(**request, OnFailure="ROLLBACK")
    if wait:
        typer.echo(f"waiting for {stack} (OpenSearch domains take 15-30 minutes to create)...", err=True)
        waiter = cf.get_waiter("stack_update_complete" if exists else "stack_create_complete")
        waiter.wait(StackName=stack, WaiterConfig={"Delay": 30, "MaxAttempts": 180})
    _echo_json(stack_outputs(stack))


@aws_app.command()
def transform(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix holding the images")],
    stack: StackOpt = None,
    model_data: Annotated[str | None, typer.Option(help="model.tar.gz URI (default: stack output)")] = None,
    role_arn: Annotated[
        str | None, typer.Option(help="SageMaker execution role (default: stack output)")
    ] = None,
    image_uri: Annotated[
        str | None, typer.Option(help="inference image (default: PyTorch DLC for the instance)")
    ] = None,
    instance_type: str = sm.TransformSettings.instance_type,
    instance_count: Annotated[int, typer.Option(min=1)] = sm.TransformSettings.instance_count,
    max_payload_mb: Annotated[int, typer.Option(min=1, max=100)] = sm.TransformSettings.max_payload_mb,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="images per forward pass on the instance (default: MEDIASEARCH_SAGEMAKER_BATCH_SIZE)"
        ),
    ] = None,
    incremental: Annotated[
        bool, typer.Option(help="embed only media the index lacks, or holds at another fingerprint or model")
    ] = True,
    delete: Annotated[
        bool,
        typer.Option(help="remove from the index what is gone from SOURCE (--no-delete: append-only)"),
    ] = True,
    wait: Annotated[bool, typer.Option(help="wait for the job with a progress bar")] = True,
    load: Annotated[bool, typer.Option(help="load the outputs into the index when the job completes")] = True,
    poll_s: Annotated[float, typer.Option(help="seconds between status checks")] = 30.0,
) -> None:
    """Make the index mirror SOURCE with SageMaker doing the embedding: what is pending is read from the
    index (new media, changed ones, and documents of another model), written as manifests (the frame
    manifests of videos `jobs/preprocess.py` cut join them) and run as one batch transform job; then
    wait and load. Moves, touches and deletions are applied without a job, as `mediasearch ingest` does."""
    from mediasearch import backends
    from mediasearch.aws.batch import SageMakerModel, SageMakerTransform, model_identity_of
    from mediasearch.cli import echo_summary
    from mediasearch.indexing.pipeline import Step, summarize

    outputs = stack_outputs(stack)
    settings = _index_settings(get_settings(), outputs)
    store = _s3_source(source)
    data = _need(model_data, outputs, "ModelDataUrl", "--model-data")
    role = _need(role_arn, outputs, "SageMakerRoleArn", "--role-arn")
    model = SageMakerModel(
        model_data=data,
        image=image_uri or sm.pytorch_inference_image(region(), gpu=sm.is_gpu_instance(instance_type)),
        role_arn=role,
        environment=sm.model_environment(
            region(),
            batch_size=batch_size or settings.sagemaker_batch_size,
            decode_workers=settings.sagemaker_decode_workers,
            max_image_pixels=settings.max_image_pixels,
        ),
        # What the job's documents will record: a document another model embedded is pending.
        identity=model_identity_of(data, _note),
    )
    # The index is read to plan (incremental) and written to load; without either it is never opened.
    pipeline = backends.pipeline(settings, store, indexed=incremental or load, notify=_note)
    step = SageMakerTransform(
        store,
        pipeline.layout,
        sm.SageMakerLauncher(_client("sagemaker")),
        model,
        sm.job_name(f"mediasearch-{settings.collection}"),
        sm.TransformSettings(
            instance_type=instance_type, instance_count=instance_count, max_payload_mb=max_payload_mb
        ),
        wait=wait,
        poll_s=poll_s,
        notify=_note,
    )
    try:
        if load and wait and model.identity is not None:
            # Writes go under the collection's writer lock into the generation of the archive's model,
            # as `mediasearch ingest` does (a new model builds a complete new generation, then switches).
            from mediasearch.cli import _locked
            from mediasearch.core.model_identity import ModelIdentity
            from mediasearch.index.base import VectorIndex
            from mediasearch.indexing.ingest import ingest_collection
            from mediasearch.indexing.pipeline import PipelineReport

            def run(uri: str, index: VectorIndex) -> PipelineReport:
                each = backends.pipeline(settings, _s3_source(uri), index, notify=_note)
                return each.ingest(step, videos=False, incremental=incremental, delete=delete, load=True)

            identity = backends.index_identity(settings, ModelIdentity(id=model.identity, source=data))
            coll = backends.collection(settings)
            report = _locked(
                lambda: ingest_collection(coll, identity, store.root_uri, run, notify=_note)
            ).report
        else:
            # Without waiting there is nothing new to load yet: the job writes its outputs later.
            report = pipeline.ingest(
                step, videos=False, incremental=incremental, delete=delete, load=load and wait
            )
    except sm.SageMakerError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    if step.job is not None and not wait:
        _echo_json({"job": step.job, "status": "InProgress"})
    elif (load and wait) or Step.LOAD in report.steps:
        echo_summary(summarize(report))


@aws_app.command()
def load(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix the transform ran over")],
    stack: StackOpt = None,
    model_data: Annotated[
        str | None, typer.Option(help="model.tar.gz URI whose outputs to load (default: stack output)")
    ] = None,
) -> None:
    """Load the outputs a model's transform wrote (`<work>/outputs/<model>/*.out`) into the index (idempotent)."""
    from mediasearch import backends
    from mediasearch.aws.batch import model_identity_of, output_tag
    from mediasearch.cli import echo_summary
    from mediasearch.indexing.pipeline import summarize

    outputs = stack_outputs(stack)
    settings = _index_settings(get_settings(), outputs)
    data = _need(model_data, outputs, "ModelDataUrl", "--model-data")
    store = _s3_source(source)
    identity = model_identity_of(data, _note)
    if identity is None:
        pipeline = backends.pipeline(settings, store)
        pipeline.load(tag=output_tag(data))
        echo_summary(summarize(pipeline.report))
        return
    from mediasearch.cli import _locked
    from mediasearch.core.model_identity import ModelIdentity
    from mediasearch.index.base import VectorIndex
    from mediasearch.indexing.ingest import ingest_collection
    from mediasearch.indexing.pipeline import PipelineReport

    def run(uri: str, index: VectorIndex) -> PipelineReport:
        each = backends.pipeline(settings, _s3_source(uri), index)
        each.load(tag=output_tag(data))
        return each.report

    coll = backends.collection(settings)
    done = _locked(
        lambda: ingest_collection(
            coll,
            backends.index_identity(settings, ModelIdentity(id=identity, source=data)),
            store.root_uri,
            run,
        )
    )
    echo_summary(summarize(done.report))


@aws_app.command()
def status(
    stack: StackOpt = None,
    endpoint: Annotated[str | None, typer.Option(help="query endpoint (default: stack output)")] = None,
    jobs: Annotated[int, typer.Option(min=1, max=100, help="recent transform jobs to list")] = 5,
) -> None:
    """Stack state and outputs, the query endpoint, and recent transform jobs, as JSON."""
    report: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    stack = stack or get_settings().stack
    if stack:
        described = _client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        report["stack"] = {"name": stack, "status": described["StackStatus"], "outputs": outputs}
    launcher = sm.SageMakerLauncher(_client("sagemaker"))
    name = endpoint or outputs.get("QueryEndpointName")
    if name:
        desc = launcher.endpoint_status(name)
        report["endpoint"] = {"name": name, "status": desc["EndpointStatus"] if desc else "NotFound"}
    report["transform_jobs"] = [
        {k: j.get(k) for k in ("TransformJobName", "TransformJobStatus", "CreationTime", "FailureReason")}
        for j in launcher.recent_jobs(limit=jobs)
    ]
    _echo_json(report)


# ---------------------------------------------------------------------------------- training jobs

train_app = typer.Typer(
    help="Train the project's encoders as SageMaker training jobs; the job's model.tar.gz serves as "
    "`aws package`'s does (see docs/deploy.md, Training jobs).",
    no_args_is_help=True,
)
aws_app.add_typer(train_app, name="train")

HpOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--hp", help="NAME=VALUE hyperparameter of the job's config (mediasearch.training.config), repeatable"
    ),
]
TrainStackOpt = Annotated[
    str | None,
    typer.Option("--stack", help="stack whose bucket and role to use (default: MEDIASEARCH_STACK)"),
]
# The options both training jobs take (Typer reads them from each command's signature).
TrainBucketOpt = Annotated[str | None, typer.Option(help="bucket for code, outputs, checkpoints")]
TrainPrefixOpt = Annotated[
    str, typer.Option(help="key prefix in --bucket for the training artefacts (the stack's role: training)")
]
TrainRoleOpt = Annotated[str | None, typer.Option(help="SageMaker execution role (default: stack output)")]
TrainImageOpt = Annotated[str | None, typer.Option(help="training image (default: PyTorch 2.6 training DLC)")]
TrainVolumeOpt = Annotated[int, typer.Option(min=1, max=16384)]
TrainRuntimeOpt = Annotated[int, typer.Option(min=1)]
TrainSpotOpt = Annotated[bool, typer.Option(help="managed spot training (resumes from checkpoints)")]
TrainMaxWaitOpt = Annotated[int | None, typer.Option(min=1, help="spot: wait + run time limit")]
TrainCheckpointOpt = Annotated[str | None, typer.Option(help="s3:// checkpoints (an earlier job's: resume)")]
TrainWaitOpt = Annotated[bool, typer.Option(help="wait for the job, showing its status")]
TrainPollOpt = Annotated[float, typer.Option(help="seconds between status checks")]


@dataclass(frozen=True)
class _TrainOptions:
    stack: str | None
    bucket: str | None
    prefix: str
    role_arn: str | None
    image_uri: str | None
    instance_type: str
    volume_gb: int
    max_runtime_s: int
    spot: bool
    max_wait_s: int | None
    base_model_data: str | None
    checkpoint_uri: str | None
    wait: bool
    poll_s: float
    hp: list[str]


def _train_config(job: str, items: list[str]) -> Any:
    from pydantic import ValidationError

    from mediasearch.training.container import JOBS

    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise usage_error(f"--hp {item!r} is not NAME=VALUE")
        values[key] = value
    model = JOBS[job]
    try:
        return model.from_hyperparameters(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        known = ", ".join(model.model_fields)
        where = f"--hp {field}" if field else "--hp"
        raise usage_error(f"{where}: {err['msg']} (the {job} hyperparameters: {known})") from None


def _run_training(job: str, data: str, opts: _TrainOptions, pairs_name: str | None = None) -> None:
    import tempfile

    from mediasearch.aws import training as tr
    from mediasearch.aws.batch import model_identity_of
    from mediasearch.core.storage import S3Store
    from mediasearch.training.container import PAIRS_KEY, PREFIX_KEY

    config = _train_config(job, opts.hp)
    outputs = stack_outputs(opts.stack)
    bucket = _need(opts.bucket, outputs, "BucketName", "--bucket")
    role = _need(opts.role_arn, outputs, "SageMakerRoleArn", "--role-arn")
    area = S3Store(bucket, opts.prefix)
    name = tr.training_job_name(job)
    gpu = sm.is_gpu_instance(opts.instance_type)
    try:
        if opts.spot and opts.max_wait_s is not None and opts.max_wait_s < opts.max_runtime_s:
            raise tr.TrainingSetupError("--max-wait-s must be at least --max-runtime-s")
        if opts.checkpoint_uri and not opts.checkpoint_uri.startswith("s3://"):
            raise tr.TrainingSetupError(f"--checkpoint-uri {opts.checkpoint_uri!r}: give an s3:// URI")
        # Checked first: the data channel writes its manifest.
        base = tr.model_channel(opts.base_model_data) if opts.base_model_data else None
        extra: dict[str, str] = {}
        if job == "clip":
            assert pairs_name is not None
            folder = _s3_source(data)
            channel, count = tr.pairs_channel(folder, pairs_name, area, name)
            extra = {PAIRS_KEY: pairs_name, PREFIX_KEY: f"{folder.root_uri}/"}
            _note(f"{count} pairs from {data}/{pairs_name}")
        else:
            channel, count = tr.videos_channel(_s3_source(data), get_settings().work_prefix, area, name)
            _note(f"{count} videos under {data}")
        channels = [channel, base] if base else [channel]
        with tempfile.TemporaryDirectory(prefix="mediasearch-source-") as tmp:
            source_uri = tr.upload_source(tr.source_archive(Path(tmp) / "sourcedir.tar.gz"), area)
        values = tr.hyperparameters(job, config, source_uri, region(), extra)
        output_uri = f"{area.root_uri}/output/"
        request = tr.training_request(
            name,
            role,
            opts.image_uri or tr.training_image(region(), gpu=gpu),
            values,
            channels,
            output_uri,
            opts.checkpoint_uri or f"{area.root_uri}/checkpoints/{name}/",
            tr.TrainingSettings(
                instance_type=opts.instance_type,
                volume_gb=opts.volume_gb,
                max_runtime_s=opts.max_runtime_s,
                spot=opts.spot,
                max_wait_s=opts.max_wait_s,
            ),
        )
    except tr.TrainingSetupError as exc:
        raise usage_error(str(exc)) from None
    launcher = tr.TrainingLauncher(_client("sagemaker"))
    launcher.start(request)
    model_data = tr.artifact_uri(output_uri, name)
    if not opts.wait:
        _echo_json({"job": name, "status": "InProgress", "model_data": model_data})
        return
    try:
        desc = launcher.wait(name, poll_s=opts.poll_s, notify=_note)
    except sm.SageMakerError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    model_data = desc.get("ModelArtifacts", {}).get("S3ModelArtifacts") or model_data
    # Recorded beside the archive, as `aws package` does: `aws transform` plans against it.
    identity = model_identity_of(model_data, _note)
    _echo_json(
        {"job": name, "status": desc["TrainingJobStatus"], "model_data": model_data, "model_id": identity}
    )


def _train_options(**kwargs: Any) -> _TrainOptions:
    return _TrainOptions(**{**kwargs, "hp": kwargs.get("hp") or []})


@train_app.command("video-encoder")
def train_video_encoder(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix holding the videos")],
    hp: HpOpt = None,
    stack: TrainStackOpt = None,
    bucket: TrainBucketOpt = None,
    prefix: TrainPrefixOpt = "training",
    role_arn: TrainRoleOpt = None,
    image_uri: TrainImageOpt = None,
    instance_type: str = "ml.g5.xlarge",
    volume_gb: TrainVolumeOpt = 50,
    max_runtime_s: TrainRuntimeOpt = 24 * 3600,
    spot: TrainSpotOpt = False,
    max_wait_s: TrainMaxWaitOpt = None,
    base_model_data: Annotated[
        str | None, typer.Option(help="s3:// saved CLIP (folder or model.tar.gz) to take frame features with")
    ] = None,
    checkpoint_uri: TrainCheckpointOpt = None,
    wait: TrainWaitOpt = True,
    poll_s: TrainPollOpt = 30.0,
) -> None:
    """Train the self-supervised video encoder on every video under SOURCE (VideoTrainConfig via --hp);
    prints the job and its model.tar.gz (frozen CLIP + video_encoder/ + code/)."""
    opts = _train_options(**{k: v for k, v in locals().items() if k != "source"})
    _run_training("video-encoder", source, opts)


@train_app.command("clip")
def train_clip(
    pairs: Annotated[
        str,
        typer.Argument(help="s3://bucket/prefix/pairs.jsonl: {uri, text} lines, uri relative to its folder"),
    ],
    hp: HpOpt = None,
    stack: TrainStackOpt = None,
    bucket: TrainBucketOpt = None,
    prefix: TrainPrefixOpt = "training",
    role_arn: TrainRoleOpt = None,
    image_uri: TrainImageOpt = None,
    instance_type: str = "ml.g5.xlarge",
    volume_gb: TrainVolumeOpt = 50,
    max_runtime_s: TrainRuntimeOpt = 24 * 3600,
    spot: TrainSpotOpt = False,
    max_wait_s: TrainMaxWaitOpt = None,
    base_model_data: Annotated[
        str | None, typer.Option(help="s3:// saved CLIP (folder or model.tar.gz) to fine-tune")
    ] = None,
    checkpoint_uri: TrainCheckpointOpt = None,
    wait: TrainWaitOpt = True,
    poll_s: TrainPollOpt = 30.0,
) -> None:
    """Fine-tune CLIP contrastively on (image, text) pairs (ClipTrainConfig via --hp); prints the job
    and its model.tar.gz, which `aws transform --model-data` and `aws deploy --endpoint-only` take."""
    folder, sep, name = pairs.rstrip("/").rpartition("/")
    if not sep or not name.endswith(".jsonl") or not folder.startswith("s3://"):
        raise usage_error(f"give the pairs file as s3://bucket/prefix/NAME.jsonl, not {pairs!r}")
    opts = _train_options(
        **{k: v for k, v in locals().items() if k not in ("pairs", "folder", "sep", "name")}
    )
    _run_training("clip", folder, opts, pairs_name=name)
