"""The local batch-transform runner: what SageMaker batch transform does, in-process.

Shaped like clip-retrieval's inference pipeline, each piece testable alone:
- `ManifestReader` lists the manifests under a prefix and parses them with the handler's `input_fn`;
- the mapper is the handler itself (`prepare` then `embed`, i.e. `predict_fn` in two halves);
- `OutputWriter` serialises with `output_fn` and writes `<manifest>.out` beside the input, atomically,
  so an `.out` that exists is complete;
- `TransformRunner` drives them, overlapping the decode of batch n+1 with the forward pass of batch n.

Re-running is safe: a manifest whose `.out` is complete is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from mediasearch.core.records import ManifestRecord, TransformResult
from mediasearch.core.storage import ObjectStore
from mediasearch.indexing.handler import ClipHandler, ManifestBatch, PreparedBatch

MANIFEST_SUFFIX = ".jsonl"
OUTPUT_SUFFIX = ".out"


def output_key(manifest_key: str) -> str:
    return manifest_key + OUTPUT_SUFFIX


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
    def __init__(self, store: ObjectStore, handler: ClipHandler) -> None:
        self.store = store
        self.handler = handler

    def keys(self, prefix: str) -> list[str]:
        return sorted(o.key for o in self.store.list(prefix) if o.key.endswith(MANIFEST_SUFFIX))

    def is_done(self, key: str) -> bool:
        return self.store.exists(output_key(key))

    def read(self, key: str) -> Manifest:
        parsed = self.handler.input_fn(self.store.get(key), "application/jsonlines")
        assert isinstance(parsed, ManifestBatch)
        return Manifest(key, parsed.items)


class OutputWriter:
    def __init__(self, store: ObjectStore, handler: ClipHandler) -> None:
        self.store = store
        self.handler = handler

    def write(self, manifest_key: str, results: Sequence[TransformResult]) -> str:
        body, content_type = self.handler.output_fn(list(results), "application/jsonlines")
        key = output_key(manifest_key)
        self.store.put(key, body, content_type)
        return key


def batches(items: Sequence[ManifestRecord | TransformResult], size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class TransformRunner:
    def __init__(
        self, store: ObjectStore, handler: ClipHandler, batch_size: int = 32, progress: bool = True
    ) -> None:
        self.store = store
        self.handler = handler
        self.batch_size = batch_size
        self.progress = progress
        self.reader = ManifestReader(store, handler)
        self.writer = OutputWriter(store, handler)

    def run(self, manifest_keys: Sequence[str] | None = None, prefix: str = "") -> TransformReport:
        keys = list(manifest_keys) if manifest_keys is not None else self.reader.keys(prefix)
        report = TransformReport()
        todo: list[Manifest] = []
        for key in keys:
            if self.reader.is_done(key):
                report.skipped_manifests += 1
                report.outputs.append(output_key(key))
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
                report.outputs.append(self.writer.write(manifest.key, results))
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
