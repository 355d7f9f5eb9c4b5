"""SageMaker batch transform as the pipeline's transform step (`mediasearch.indexing.pipeline.Transformer`).

The local runner embeds in-process; this one hands the work area's pending manifests to a SageMaker
batch transform job running `model_handlers/clip` and, unless told not to, waits for it. Its outputs
land where the local runner's do (`outputs/<model tag>/`), so the load step that follows is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mediasearch.aws import sagemaker as sm
from mediasearch.core.layout import WorkLayout, model_tag
from mediasearch.core.storage import S3Store
from mediasearch.indexing.transform import TransformReport


def output_tag(model_data: str) -> str:
    """Where a model archive's outputs go in the work area (`outputs/<tag>/`): the archive's key is named
    by its digest, so it identifies the model that wrote them."""
    return model_tag(model_data)


@dataclass(frozen=True)
class SageMakerModel:
    """What a SageMaker model is made of: the archive, the serving image, the role and the environment."""

    model_data: str  # s3:// URI of model.tar.gz, named by its digest
    image: str
    role_arn: str
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def output_tag(self) -> str:
        return output_tag(self.model_data)


class SageMakerTransform:
    """Runs the work area's pending manifests as one batch transform job; see the module docstring.

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

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        """Start a job over every manifest of the work area without an output for this model, and wait.

        Without waiting, `outputs` lists only the outputs that already existed: the job's appear later.
        Raises `SageMakerError` when the job fails.
        """
        if manifest_keys is not None:
            # A job's input is the manifests folder, or a manifest file the plan writes; both come from
            # the work area as it is, so a chosen subset is not something this step can be given.
            raise ValueError("SageMaker batch transform runs every pending manifest of the work area")
        tag = self.output_tag
        plan = sm.plan_transform(self.store, self.layout, tag, self.job_name)
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
