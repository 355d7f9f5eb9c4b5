"""SageMaker batch transform as the pipeline's transform step (`mediasearch.indexing.pipeline.Transformer`).

The local runner embeds in-process; this one hands the manifests of this run's pending work to a
SageMaker batch transform job running `model_handlers/clip` and, unless told not to, waits for it. Its
outputs land where the local runner's do (`outputs/<model tag>/`), so the load step that follows is
the same.

What is pending is decided by the pipeline from the index (fingerprints, and the model that embedded
each document), never from which outputs exist: the job's input is always a ManifestFile listing
exactly this run's manifests that lack an output. An old manifest whose output expired (the bucket's
lifecycle rules expire outputs and image manifests) is therefore never run again: work still pending
is written as a manifest again (named by its content) and listed. See docs/deploy.md, "Lifecycle".

A job records on every line the identity of the model it ran (`model_identity.identify` of the
unpacked archive). `aws package` records that identity beside the archive (`identity.json`), so a
run can tell documents of another model before starting a job; see `model_identity_of`.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mediasearch.aws import sagemaker as sm
from mediasearch.core.layout import WorkLayout, model_tag
from mediasearch.core.model_identity import identify
from mediasearch.core.storage import S3Store, StoreError, open_uri
from mediasearch.indexing.transform import TransformReport

IDENTITY_NAME = "identity.json"


def output_tag(model_data: str) -> str:
    """Where a model archive's outputs go in the work area (`outputs/<tag>/`): the archive's key is named
    by its digest, so it identifies the model that wrote them."""
    return model_tag(model_data)


def identity_uri(model_data: str) -> str:
    """Where the identity of the model in the archive `model_data` is recorded: beside it."""
    return f"{model_data.rsplit('/', 1)[0]}/{IDENTITY_NAME}"


def archive_identity(archive: Path) -> str:
    """The identity the handler will record for the model in `archive` (a model.tar.gz): the one it
    computes of the unpacked folder on the instance, computed here of the same files."""
    with tempfile.TemporaryDirectory(prefix="mediasearch-archive-") as tmp:
        folder = Path(tmp) / "model"
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        # A cache of its own: digests are cached by file size and time, and archives zero the times,
        # so two archives of one architecture would otherwise share an entry.
        return identify(str(folder), cache_dir=Path(tmp) / "digests").id


def record_identity(model_data: str, identity: str) -> None:
    store, key = open_uri(identity_uri(model_data))
    store.put(key, json.dumps({"model_id": identity, "model_data": model_data}).encode(), "application/json")


def model_identity_of(model_data: str, notify: Callable[[str], None] = lambda message: None) -> str | None:
    """The identity of the model in the archive `model_data`: as `aws package` recorded it, else read
    from the archive itself (once: it is then recorded), else None when neither can be read."""
    store, key = open_uri(identity_uri(model_data))
    try:
        return str(json.loads(store.get(key))["model_id"])
    except (StoreError, ValueError, KeyError):
        pass
    archive_store, archive_key = open_uri(model_data)
    try:
        notify(f"reading {model_data} once to learn which model it holds (aws package records it)")
        with archive_store.local_copy(archive_key) as archive:
            identity = archive_identity(archive)
    except (StoreError, OSError, tarfile.TarError, ValueError) as exc:
        notify(f"the model in {model_data} is unknown ({exc}): documents are compared by fingerprint only")
        return None
    record_identity(model_data, identity)
    return identity


@dataclass(frozen=True)
class SageMakerModel:
    """What a SageMaker model is made of: the archive, the serving image, the role and the environment.

    `identity`: the identity of the model in the archive (what its documents record), when known.
    """

    model_data: str  # s3:// URI of model.tar.gz, named by its digest
    image: str
    role_arn: str
    environment: dict[str, str] = field(default_factory=dict)
    identity: str | None = None

    @property
    def output_tag(self) -> str:
        return output_tag(self.model_data)


class SageMakerTransform:
    """Runs the manifests it is given that lack an output as one batch transform job; see the module
    docstring.

    `job` is the name of the job this step started, or None when every manifest already had an output.
    """

    def __init__(
        self,
        store: S3Store,
        layout: WorkLayout,
        launcher: sm.SageMakerLauncher,
        model: SageMakerModel,
        job_name: str,
        config: sm.TransformSettings = sm.TransformSettings(),
        *,
        wait: bool = True,
        poll_s: float = 30.0,
        progress: bool = True,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.launcher = launcher
        self.model = model
        self.job_name = job_name
        self.config = config
        self.wait = wait
        self.poll_s = poll_s
        self.progress = progress
        self.notify = notify or (lambda message: None)
        self.job: str | None = None

    @property
    def output_tag(self) -> str:
        return self.model.output_tag

    @property
    def model_id(self) -> str | None:
        """The identity of the model the job runs (what the pipeline plans against), when known."""
        return self.model.identity

    def plan(self, manifest_keys: Sequence[str]) -> sm.TransformPlan:
        """Of `manifest_keys`, those with an output for this model are done; the job's input is a
        ManifestFile listing exactly the others (never the manifests folder: an old manifest there
        is not pending work)."""
        layout, tag = self.layout, self.output_tag
        plan = sm.TransformPlan(
            manifests_uri=self.store.uri(layout.manifests_dir.rstrip("/")) + "/",
            output_uri=self.store.uri(layout.outputs_dir(tag).rstrip("/")) + "/",
        )
        keys = sorted(set(manifest_keys))
        listed = (o.key for o in self.store.list(layout.outputs_dir(tag)))
        plan.outputs = sm.find_outputs(layout, tag, keys, listed)
        for key in keys:
            (plan.done if key in plan.outputs else plan.pending).append(key)
        if plan.empty:
            return plan
        listing: list[object] = [{"prefix": plan.manifests_uri}]
        listing += [layout.manifest_relpath(k) for k in plan.pending]
        manifest_file = layout.job_manifest(self.job_name)
        self.store.put(manifest_file, json.dumps(listing).encode(), "application/json")
        plan.data_type = "ManifestFile"
        plan.input_uri = self.store.uri(manifest_file)
        return plan

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        """Start one job over `manifest_keys` (None: every manifest of the work area) that lack an
        output for this model, and wait.

        Without waiting, `outputs` lists only the outputs that already existed: the job's appear later.
        Raises `SageMakerError` when the job fails.
        """
        tag = self.output_tag
        if manifest_keys is None:
            manifest_keys = [o.key for o in self.store.list(self.layout.manifests_dir)]
            manifest_keys = [k for k in manifest_keys if self.layout.is_manifest(k)]
        plan = self.plan(manifest_keys)
        self.notify(f"manifests: {len(plan.pending)} pending, {len(plan.done)} done")
        report = TransformReport(
            manifests=len(plan.pending),
            skipped_manifests=len(plan.done),
            outputs=[plan.outputs[k] for k in plan.done],
        )
        if plan.empty:
            return report
        report.records = sum(_count_lines(self.store.get(k)) for k in plan.pending)
        model = self.model
        model_name = self.launcher.ensure_model(
            sm.model_name_for(model.model_data, model.image, model.environment),
            model.model_data,
            model.image,
            model.role_arn,
            model.environment,
        )
        request = sm.transform_request(
            self.job_name, model_name, plan, self.config, {"project": "mediasearch"}
        )
        self.job = self.launcher.start_transform(request)
        self.notify(
            f"started transform job {self.job} ({plan.data_type} {plan.input_uri} -> {plan.output_uri})"
        )
        if not self.wait:
            return report
        job = self.launcher.wait_transform(
            self.job,
            poll_s=self.poll_s,
            total=len(plan.pending),
            finished=sm.count_outputs(self.store, self.layout, tag, plan.pending),
            progress=self.progress,
        )
        self.notify(f"transform job {self.job}: {job['TransformJobStatus']}")
        # Where the outputs really are (see sm.find_outputs); a manifest without one is still listed at
        # its documented key, so the loader reports it missing rather than skipping it silently.
        listed = (o.key for o in self.store.list(self.layout.outputs_dir(tag)))
        found = sm.find_outputs(self.layout, tag, plan.pending, listed)
        written = [found.get(k, self.layout.output(k, tag)) for k in plan.pending]
        report.outputs = sorted(report.outputs + written)
        return report


def _count_lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line.strip())
