"""`ingest SOURCE`: scan -> (videos: preprocess) -> manifests -> transform -> load, incrementally.

Only new or changed objects (by fingerprint: ETag or size+mtime) are processed: images whose image
document, and videos whose video document, already carries the source's fingerprint are skipped.
Manifests are named by content, so an interrupted ingest resumes where it stopped and a repeated one
does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import TransformResult, stable_id
from mediasearch.core.storage import ObjectStore
from mediasearch.index.base import VectorIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader, LoadReport
from mediasearch.indexing.manifests import changed, scan_images, write_manifests
from mediasearch.indexing.preprocess import PreprocessJob, PreprocessSummary, list_videos
from mediasearch.indexing.transform import TransformReport, TransformRunner
from mediasearch.indexing.video import VideoOptions
from mediasearch.indexing.video_documents import TagOptions
from mediasearch.query.search import TextVectoriser


@dataclass
class IngestReport:
    scanned: int = 0
    unchanged: int = 0
    videos: PreprocessSummary = field(default_factory=PreprocessSummary)
    manifests: list[str] = field(default_factory=list)
    transform: TransformReport = field(default_factory=TransformReport)
    load: LoadReport = field(default_factory=LoadReport)

    @property
    def failures(self) -> list[TransformResult]:
        # The loader reads every output, including ones a previous run left, so it sees every failure;
        # a video that could not be decoded never reached a manifest, so it is added here.
        undecodable = [
            TransformResult(id=stable_id(uri), uri=uri, error=message)
            for uri, message in self.videos.errors.items()
        ]
        return undecodable + self.load.failures


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
) -> IngestReport:
    report = IngestReport()
    layout = layout or WorkLayout.for_source(prefix)
    images = scan_images(store, prefix, layout)
    videos = list_videos(store, prefix, layout)
    report.scanned = len(images) + len(videos)
    stored = index.fingerprints([r.id for r in images] + [stable_id(store.uri(v.key)) for v in videos])
    pending = changed(images, stored)
    pending_videos = [v for v in videos if stored.get(stable_id(store.uri(v.key)), "") != v.fingerprint]
    report.unchanged = report.scanned - len(pending) - len(pending_videos)
    if pending:
        report.manifests = write_manifests(store, layout, pending, "images", manifest_lines)
    if pending_videos:
        job = PreprocessJob(
            store,
            prefix,
            layout,
            video_options,
            workers=video_workers,
            manifest_lines=manifest_lines,
            progress=progress,
        )
        report.videos = job.run(pending_videos)
        # Keys are reported relative to the store; name the failed videos by URI like every other failure.
        report.videos.errors = {store.uri(k): msg for k, msg in report.videos.errors.items()}
        report.manifests += report.videos.manifests
    if not report.manifests:
        return report
    runner = TransformRunner(store, handler, layout, batch_size=batch_size, progress=progress)
    report.transform = runner.run(report.manifests)
    loader = Loader(store, index, layout, progress=progress, text_embedder=text_embedder, tags=tags)
    report.load = loader.load(report.transform.outputs)
    return report
