"""Transform input manifests: which objects to embed, as JSON Lines in the store.

A manifest's name is the hash of its lines, so the same pending work always lands in the same file:
re-running finds its `.out` already there and nothing is embedded twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mediasearch.core.images import is_image_key
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, MediaKind, stable_id
from mediasearch.core.storage import ObjectStore
from mediasearch.core.wire import dumps_manifest


def scan_images(
    store: ObjectStore, prefix: str = "", layout: WorkLayout | None = None
) -> list[ManifestRecord]:
    """One manifest record per image under `prefix`, skipping the work area."""
    records = []
    for obj in store.list(prefix):
        if layout is not None and layout.contains(obj.key):
            continue
        if is_image_key(obj.key):
            records.append(
                ManifestRecord(
                    id=stable_id(store.uri(obj.key)),
                    uri=store.uri(obj.key),
                    kind=MediaKind.IMAGE,
                    fingerprint=obj.fingerprint,
                )
            )
    return records


def write_manifests(
    store: ObjectStore,
    layout: WorkLayout,
    records: Sequence[ManifestRecord],
    name: str = "images",
    lines: int = 1000,
) -> list[str]:
    """Write `records` as manifests of at most `lines` lines in the work area; returns their keys."""
    keys = []
    for start in range(0, len(records), lines):
        body = dumps_manifest(records[start : start + lines])
        key = layout.image_manifest(body, name)
        if not store.exists(key):
            store.put(key, body, "application/jsonlines")
        keys.append(key)
    return keys


def changed(records: Iterable[ManifestRecord], stored: dict[str, str | None]) -> list[ManifestRecord]:
    """Records whose fingerprint differs from the indexed one (new or modified objects)."""
    return [r for r in records if r.id not in stored or stored[r.id] != r.fingerprint]
