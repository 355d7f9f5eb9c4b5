"""The index-time pipeline, as steps: plan -> preprocess videos -> write manifests -> transform -> load.

A `Pipeline` is one run over one source (a store and its work area). Each step can run alone, as the
stage commands do (`mediasearch preprocess | transform | load`, `mediasearch aws load`), and `ingest`
chains them (`mediasearch ingest`, `mediasearch aws transform`, the jobs in `jobs/`). Every step
records what it did in the run's one `PipelineReport`, and `summarize` turns that into the lines both
CLIs print, so a local run and an AWS run report alike.

The transform step runs the `Transformer` it is handed: the in-process `TransformRunner`, or SageMaker
batch transform (`mediasearch.aws.batch.SageMakerTransform`). Both write one output per manifest under
the work area's `outputs/<model tag>/`, which the load step reads with the one `Loader` (built by
`mediasearch.backends.loader`, text embedder and tag options included, wherever the run happens).

Incremental: `plan` compares the source with the index by fingerprint (ETag, or size + mtime), and
only new or changed images and videos go on. Manifests are named by their content, so an interrupted
run resumes where it stopped and a repeated one does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, TransformResult, stable_id
from mediasearch.core.storage import ObjectInfo, ObjectStore
from mediasearch.index.base import VectorIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader, LoadReport
from mediasearch.indexing.manifests import changed, image_records, list_media, write_manifests
from mediasearch.indexing.preprocess import PreprocessJob, PreprocessSummary
from mediasearch.indexing.transform import TransformReport, TransformRunner
from mediasearch.indexing.video import VideoOptions
from mediasearch.indexing.video_documents import TagOptions
from mediasearch.query.search import TextVectoriser

# Failures listed under a summary; the count says how many more there were.
SHOWN_FAILURES = 20


class Step(StrEnum):
    PLAN = "plan"
    PREPROCESS = "preprocess"
    MANIFESTS = "manifests"
    TRANSFORM = "transform"
    LOAD = "load"


class Transformer(Protocol):
    """Embeds manifests: writes each one's output where the work layout puts it for the model."""

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        """Run the manifests given (None: every manifest of the work area) that lack an output for this
        model. `outputs` lists the outputs of all of them, the ones that already existed included."""
        ...


@dataclass
class Plan:
    """What a source holds, and what of it the index lacks or holds at another fingerprint."""

    images: list[ManifestRecord] = field(default_factory=list)
    videos: list[ObjectInfo] = field(default_factory=list)
    pending_images: list[ManifestRecord] = field(default_factory=list)
    pending_videos: list[ObjectInfo] = field(default_factory=list)

    @property
    def scanned(self) -> int:
        return len(self.images) + len(self.videos)

    @property
    def unchanged(self) -> int:
        return self.scanned - len(self.pending_images) - len(self.pending_videos)


@dataclass
class PipelineReport:
    """What a run did, step by step; `steps` says which steps ran, `summarize` says it in words."""

    steps: list[Step] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    videos: PreprocessSummary = field(default_factory=PreprocessSummary)
    # The videos that could not be preprocessed, named by URI like every other failure.
    video_failures: list[TransformResult] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    transform: TransformReport = field(default_factory=TransformReport)
    load: LoadReport = field(default_factory=LoadReport)
    documents: int | None = None  # the index's document count at the end of an ingest

    @property
    def scanned(self) -> int:
        return self.plan.scanned

    @property
    def unchanged(self) -> int:
        return self.plan.unchanged

    @property
    def failures(self) -> list[TransformResult]:
        # The loader reads every output it is given, older ones included, so after a load its failures
        # are complete; a video that could not be decoded never reached a manifest, so it is added.
        if Step.LOAD in self.steps:
            return self.video_failures + self.load.failures
        if Step.TRANSFORM in self.steps:
            return self.video_failures + self.transform.failures
        return list(self.video_failures)


class Pipeline:
    """The steps of one run over `store`'s work area `layout`; see the module docstring.

    `index` is what `plan` compares the source with (None: everything is pending); `loader` is what
    `load` writes with (None: this run cannot load).
    """

    def __init__(
        self,
        store: ObjectStore,
        layout: WorkLayout,
        index: VectorIndex | None = None,
        loader: Loader | None = None,
        *,
        prefix: str = "",
        manifest_lines: int = 1000,
        video_options: VideoOptions | None = None,
        video_workers: int = 1,
        progress: bool = True,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.index = index if index is not None else (loader.index if loader is not None else None)
        self.loader = loader
        self.prefix = prefix
        self.manifest_lines = manifest_lines
        self.video_options = video_options
        self.video_workers = video_workers
        self.progress = progress
        # Where a step says what it is about to do (a SageMaker job can run for hours).
        self.notify = notify or (lambda message: None)
        self.report = PipelineReport()

    def _ran(self, step: Step) -> None:
        if step not in self.report.steps:
            self.report.steps.append(step)

    # -- the steps ----------------------------------------------------------------------------------

    def plan(self, videos: bool = True, incremental: bool = True) -> Plan:
        """List the source (images, and videos unless `videos` is False) and find what the index lacks;
        everything is pending when not `incremental` or when the pipeline has no index."""
        listing = list_media(self.store, self.prefix, self.layout)
        plan = Plan(images=image_records(self.store, listing.images))
        if videos:
            plan.videos = listing.videos
        video_ids = [stable_id(self.store.uri(v.key)) for v in plan.videos]
        stored = (
            self.index.fingerprints([r.id for r in plan.images] + video_ids)
            if incremental and self.index is not None
            else {}
        )
        plan.pending_images = changed(plan.images, stored)
        plan.pending_videos = [
            v for v, vid in zip(plan.videos, video_ids, strict=True) if stored.get(vid, "") != v.fingerprint
        ]
        self.report.plan = plan
        self._ran(Step.PLAN)
        what = f"{len(plan.images)} images, {len(plan.pending_images)} to embed"
        if videos:
            what += f"; {len(plan.videos)} videos, {len(plan.pending_videos)} to preprocess"
        self.notify(what)
        return plan

    def write_manifests(self, records: Sequence[ManifestRecord]) -> list[str]:
        """Image manifests for `records` in the work area (named by content: rewriting one is a no-op)."""
        keys = write_manifests(self.store, self.layout, records, "images", self.manifest_lines)
        self.report.manifests += keys
        self._ran(Step.MANIFESTS)
        return keys

    def preprocess(
        self, videos: Sequence[ObjectInfo] | None = None, force: bool = False
    ) -> PreprocessSummary:
        """Cut `videos` (default: every video of the source) into scenes and write their frame manifests."""
        job = PreprocessJob(
            self.store,
            self.prefix,
            self.layout,
            self.video_options,
            workers=self.video_workers,
            manifest_lines=self.manifest_lines,
            force=force,
            progress=self.progress,
        )
        summary = job.run(videos)
        self.report.videos = summary
        self.report.video_failures = [
            TransformResult(id=stable_id(self.store.uri(key)), uri=self.store.uri(key), error=message)
            for key, message in sorted(summary.errors.items())
        ]
        self.report.manifests += summary.manifests
        self._ran(Step.PREPROCESS)
        return summary

    def transform(self, transformer: Transformer, manifests: Sequence[str] | None = None) -> TransformReport:
        """Embed `manifests` (default: every manifest of the work area) with `transformer`."""
        report = transformer.run(manifests)
        self.report.transform = report
        self._ran(Step.TRANSFORM)
        return report

    def load(self, outputs: Sequence[str] | None = None, tag: str | None = None) -> LoadReport:
        """Load `outputs` into the index; default: every output the model `tag` wrote in the work area."""
        if self.loader is None:
            raise ValueError("this pipeline was built without a loader")
        if outputs is None:
            if tag is None:
                raise ValueError("give the outputs to load, or the tag of the model whose outputs to load")
            outputs = self.loader.output_keys(tag)
        report = self.loader.load(outputs)
        self.report.load = report
        self._ran(Step.LOAD)
        return report

    # -- the steps chained ---------------------------------------------------------------------------

    def ingest(
        self,
        transformer: Transformer,
        *,
        videos: bool = True,
        incremental: bool = True,
        whole_work_area: bool = False,
        load: bool = True,
    ) -> PipelineReport:
        """plan -> manifests for new or changed images -> preprocess new or changed videos -> transform
        -> load what was transformed.

        `whole_work_area`: transform every manifest of the work area that lacks an output, frame
        manifests a separate preprocess job wrote included, and load the outputs of all of them (what
        `aws transform` does, with `videos=False`); otherwise only this run's manifests.
        """
        plan = self.plan(videos=videos, incremental=incremental)
        if plan.pending_images:
            self.write_manifests(plan.pending_images)
        if plan.pending_videos:
            self.preprocess(plan.pending_videos)
        if whole_work_area or self.report.manifests:
            transformed = self.transform(transformer, None if whole_work_area else self.report.manifests)
            if load:
                self.load(transformed.outputs)
        if self.index is not None and (load or Step.LOAD in self.report.steps):
            self.report.documents = self.index.count()
        return self.report


def ingest(
    store: ObjectStore,
    index: VectorIndex,
    handler: ClipHandler,
    prefix: str = "",
    layout: WorkLayout | None = None,
    batch_size: int = 32,
    manifest_lines: int = 1000,
    video_options: VideoOptions | None = None,
    video_workers: int = 1,
    progress: bool = True,
    text_embedder: TextVectoriser | None = None,
    tags: TagOptions = TagOptions(),
) -> PipelineReport:
    """`Pipeline.ingest` in-process, from the parts (what tests and benchmarks call; the CLI builds
    the same parts from settings with `mediasearch.backends.pipeline`)."""
    layout = layout or WorkLayout.for_source(prefix)
    loader = Loader(store, index, layout, progress=progress, text_embedder=text_embedder, tags=tags)
    pipeline = Pipeline(
        store,
        layout,
        index,
        loader,
        prefix=prefix,
        manifest_lines=manifest_lines,
        video_options=video_options,
        video_workers=video_workers,
        progress=progress,
    )
    return pipeline.ingest(TransformRunner(store, handler, layout, batch_size=batch_size, progress=progress))


# -- what the CLIs print ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A run in words: one line of what was done, then what failed (the command then exits 1)."""

    line: str
    failures: list[TransformResult]
    total: int  # what the failures are counted out of
    what: str  # ... and what those are: items, records, videos

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def failure_lines(self, shown: int = SHOWN_FAILURES) -> list[str]:
        if not self.failures:
            return []
        lines = [f"{len(self.failures)} of {self.total} {self.what} failed:"]
        lines += [f"  {f.uri}: {f.error}" for f in self.failures[:shown]]
        if len(self.failures) > shown:
            lines.append(f"  ... and {len(self.failures) - shown} more")
        return lines


def summarize(report: PipelineReport) -> Summary:
    """The summary of a run: an ingest's (it planned), or that of the one stage that ran."""
    failures = report.failures
    if Step.PLAN in report.steps:
        line = (
            f"scanned {report.scanned}, unchanged {report.unchanged}, embedded {report.transform.records}, "
            f"indexed {report.load.indexed} ({report.load.videos} videos), failed {len(failures)}"
        )
        if report.documents is not None:
            line += f"; index holds {report.documents} documents"
        return Summary(line, failures, report.scanned, "items")
    if Step.LOAD in report.steps:
        loaded = report.load
        line = f"{loaded.outputs} output file(s), {loaded.indexed} documents indexed, {loaded.failed} error records"
        return Summary(line, failures, loaded.indexed + loaded.failed, "records")
    if Step.TRANSFORM in report.steps:
        t = report.transform
        line = f"{t.manifests} manifest(s) run, {t.skipped_manifests} already done, {t.records} records, {t.failed} failed"
        return Summary(line, failures, t.records, "records")
    if Step.PREPROCESS in report.steps:
        v = report.videos
        line = (
            f"{v.processed} processed, {v.skipped} unchanged, {v.failed} failed; "
            f"{v.seconds_of_video:.1f} s of video at {v.realtime_factor:.1f}x realtime; "
            f"{len(v.manifests)} frame manifest(s)"
        )
        return Summary(line, failures, v.processed + v.failed, "videos")
    return Summary("nothing was done", failures, 0, "items")
