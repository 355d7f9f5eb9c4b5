"""Loads transform outputs (`.out` JSON Lines) into the index.

Idempotent: documents are keyed by deterministic ids, so loading the same outputs twice leaves the
same documents and the same count. Error records are reported, never indexed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from mediasearch.index.base import IndexSpec, VectorIndex
from mediasearch.inference import parse_output_lines
from mediasearch.records import DocKind, IndexDocument, MediaKind, TransformResult
from mediasearch.storage import ObjectStore
from mediasearch.transform import OUTPUT_SUFFIX


@dataclass
class LoadReport:
    outputs: int = 0
    indexed: int = 0
    failures: list[TransformResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def image_document(result: TransformResult) -> IndexDocument:
    assert result.clip is not None
    return IndexDocument(
        id=result.id,
        kind=DocKind.IMAGE,
        uri=result.uri,
        thumbnail=result.uri,
        caption=result.caption,
        width=result.width,
        height=result.height,
        fingerprint=result.fingerprint,
        model=result.model,
        clip_vector=result.clip,
    )


class Loader:
    def __init__(
        self, store: ObjectStore, index: VectorIndex, batch_size: int = 500, progress: bool = True
    ) -> None:
        self.store = store
        self.index = index
        self.batch_size = batch_size
        self.progress = progress

    def output_keys(self, prefix: str) -> list[str]:
        return sorted(o.key for o in self.store.list(prefix) if o.key.endswith(OUTPUT_SUFFIX))

    def load(self, output_keys: Sequence[str]) -> LoadReport:
        report = LoadReport()
        pending: list[IndexDocument] = []
        for key in tqdm(output_keys, desc="load", unit="file", disable=not self.progress, file=sys.stderr):
            results = parse_output_lines(self.store.get(key))
            report.outputs += 1
            for result in results:
                if not result.ok:
                    report.failures.append(result)
                elif result.kind is MediaKind.IMAGE:
                    pending.append(image_document(result))
            if len(pending) >= self.batch_size:
                report.indexed += self._write(pending)
                pending = []
        report.indexed += self._write(pending)
        if report.indexed:
            self.index.optimize()
        return report

    def _write(self, docs: list[IndexDocument]) -> int:
        if not docs:
            return 0
        if not self.index.exists():
            self.index.create(IndexSpec(clip_dim=int(docs[0].clip_vector.shape[0])))
        return self.index.upsert(docs)
