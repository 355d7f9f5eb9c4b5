"""`ingest SOURCE`: scan -> manifests -> transform -> load, incrementally.

Only new or changed objects (by fingerprint: ETag or size+mtime) are embedded; their manifests are
named by content, so an interrupted ingest resumes where it stopped and a repeated one does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediasearch.index.base import VectorIndex
from mediasearch.inference import ClipHandler
from mediasearch.loader import Loader, LoadReport
from mediasearch.manifests import changed, scan_images, write_manifests
from mediasearch.records import TransformResult
from mediasearch.storage import ObjectStore
from mediasearch.transform import TransformReport, TransformRunner


@dataclass
class IngestReport:
    scanned: int = 0
    unchanged: int = 0
    manifests: list[str] = field(default_factory=list)
    transform: TransformReport = field(default_factory=TransformReport)
    load: LoadReport = field(default_factory=LoadReport)

    @property
    def failures(self) -> list[TransformResult]:
        # The loader reads every output, including ones a previous run left, so it sees every failure.
        return self.load.failures


def work_prefix(prefix: str, work: str) -> str:
    return f"{prefix.strip('/')}/{work}" if prefix.strip("/") else work


def ingest(
    store: ObjectStore,
    index: VectorIndex,
    handler: ClipHandler,
    prefix: str = "",
    work: str = "_mediasearch",
    batch_size: int = 32,
    manifest_lines: int = 1000,
    progress: bool = True,
) -> IngestReport:
    report = IngestReport()
    workdir = work_prefix(prefix, work)
    records = scan_images(store, prefix, exclude_prefix=workdir)
    report.scanned = len(records)
    pending = changed(records, index.fingerprints(r.id for r in records))
    report.unchanged = report.scanned - len(pending)
    if not pending:
        return report
    report.manifests = write_manifests(store, f"{workdir}/manifests", pending, "images", manifest_lines)
    runner = TransformRunner(store, handler, batch_size=batch_size, progress=progress)
    report.transform = runner.run(report.manifests)
    report.load = Loader(store, index, progress=progress).load(report.transform.outputs)
    return report
