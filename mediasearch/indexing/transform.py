"""The local batch-transform runner: what SageMaker batch transform does, in-process.

Shaped like clip-retrieval's inference pipeline, each piece testable alone:
- `ManifestReader` lists the work area's manifests and parses them with the handler's `input_fn`;
- the mapper is the handler itself (`prepare` then `embed`, i.e. `predict_fn` in two halves);
- `OutputWriter` serialises with `output_fn` and writes the output where the work layout puts it for
  this model (`outputs/<model tag>/<manifest>.out`, as SageMaker would), atomically, so an output that
  exists is complete;
- `TransformRunner` drives them, overlapping the decode of batch n+1 with the forward pass of batch n.

Re-running is safe: a manifest whose output for this model exists is skipped; a model change finds
no output and embeds again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, TransformResult
from mediasearch.core.storage import ObjectStore
from mediasearch.indexing.handler import ClipHandler, ManifestBatch, PreparedBatch


@dataclass
class Manifest:
    key: str
    items: list[ManifestRecord | TransformResult]


@dataclass
class TransformReport:
    manifests: int = 0
    skipped_manifests: int = 0
    records: int = 0
    failed: int = 0
    outputs: list[str] = field(default_factory=list)
    failures: list[TransformResult] = field(default_factory=list)


class ManifestReader:
    def __init__(self, store: ObjectStore, handler: ClipHandler, layout: WorkLayout) -> None:
        self.store = store
        self.handler = handler
        self.layout = layout

    def keys(self) -> list[str]:
        """Every manifest of the work area: nothing outside it is ever taken for a manifest."""
        listed = self.store.list(self.layout.manifests_dir)
        return sorted(o.key for o in listed if self.layout.is_manifest(o.key))

    def read(self, key: str) -> Manifest:
        parsed = self.handler.input_fn(self.store.get(key), "application/jsonlines")
        assert isinstance(parsed, ManifestBatch)
        return Manifest(key, parsed.items)


class OutputWriter:
    def __init__(self, store: ObjectStore, handler: ClipHandler) -> None:
        self.store = store
        self.handler = handler

    def write(self, key: str, results: Sequence[TransformResult]) -> str:
        body, content_type = self.handler.output_fn(list(results), "application/jsonlines")
        self.store.put(key, body, content_type)
        return key


def batches(items: Sequence[ManifestRecord | TransformResult], size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class TransformRunner:
    def __init__(
        self,
        store: ObjectStore,
        handler: ClipHandler,
        layout: WorkLayout,
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        self.store = store
        self.handler = handler
        self.layout = layout
        self.batch_size = batch_size
        self.progress = progress
        self.reader = ManifestReader(store, handler, layout)
        self.writer = OutputWriter(store, handler)

    def output_key(self, manifest_key: str) -> str:
        return self.layout.output(manifest_key, self.handler.output_tag)

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        """Run the given manifests (default: every manifest of the work area) that lack an output."""
        keys = list(manifest_keys) if manifest_keys is not None else self.reader.keys()
        report = TransformReport()
        todo: list[Manifest] = []
        for key in keys:
            if self.store.exists(self.output_key(key)):
                report.skipped_manifests += 1
                report.outputs.append(self.output_key(key))
            else:
                todo.append(self.reader.read(key))
        total = sum(len(m.items) for m in todo)
        bar = tqdm(
            total=total,
            unit="img",
            desc="transform",
            disable=not self.progress or total == 0,
            file=sys.stderr,
        )
        # One thread prepares the next batch while this one runs the model; prepare() itself fans
        # fetch + decode out to the handler's decode pool.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as prefetch, bar:
            for manifest in todo:
                results = self._run_manifest(manifest, prefetch, bar)
                report.outputs.append(self.writer.write(self.output_key(manifest.key), results))
                report.manifests += 1
                report.records += len(results)
                failed = [r for r in results if not r.ok]
                report.failed += len(failed)
                report.failures.extend(failed)
                bar.set_postfix(failed=report.failed)
        return report

    def _run_manifest(
        self, manifest: Manifest, prefetch: ThreadPoolExecutor, bar: tqdm
    ) -> list[TransformResult]:
        chunks = list(batches(manifest.items, self.batch_size))
        results: list[TransformResult] = []
        pending: Future[PreparedBatch] | None = (
            prefetch.submit(self.handler.prepare, chunks[0]) if chunks else None
        )
        for n in range(len(chunks)):
            assert pending is not None
            prepared = pending.result()
            pending = prefetch.submit(self.handler.prepare, chunks[n + 1]) if n + 1 < len(chunks) else None
            results.extend(self.handler.embed(prepared))
            bar.update(len(chunks[n]))
        return results
