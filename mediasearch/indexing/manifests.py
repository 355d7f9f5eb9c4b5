"""Transform input manifests: which objects to embed, as JSON Lines in the store.

`list_media` says what a source holds (images, videos, GIFs by their frame count). A manifest's name is
the hash of its lines, so the same pending work always lands in the same file:
re-running finds its `.out` already there and nothing is embedded twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mediasearch.core.images import gif_frame_count, is_image_key, is_video_key
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, MediaKind, stable_id
from mediasearch.core.storage import ObjectInfo, ObjectStore, StoreError
from mediasearch.core.wire import dumps_manifest


@dataclass
class SourceListing:
    """A source's media, by what the pipeline does with them."""

    images: list[ObjectInfo] = field(default_factory=list)
    videos: list[ObjectInfo] = field(default_factory=list)


def list_media(store: ObjectStore, prefix: str = "", layout: WorkLayout | None = None) -> SourceListing:
    """The images and videos under `prefix`, never anything in a work area or hidden.

    A GIF is read to count its frames: a single frame is an image, several make a video.
    """
    listing = SourceListing()
    # Any folder named like the work area is one: a source nested in this one (ingested on its own)
    # keeps its frames and thumbnails there, and they are not media of this source.
    work_dir = layout.root.rsplit("/", 1)[-1] if layout is not None else None
    for obj in store.list(prefix):
        if layout is not None and layout.contains(obj.key):
            continue
        if work_dir is not None and work_dir in obj.key.split("/")[:-1]:
            continue
        if is_image_key(obj.key):
            listing.images.append(obj)
        elif is_video_key(obj.key):
            gif = obj.key.lower().endswith(".gif")
            single = gif and gif_frame_count(store.get(obj.key)) == 1
            (listing.images if single else listing.videos).append(obj)
    return listing


def image_records(
    store: ObjectStore, images: Iterable[ObjectInfo], content_hashes: Mapping[str, str] | None = None
) -> list[ManifestRecord]:
    """One manifest record per image, with its content hash where `content_hashes` (by key) has one."""
    hashes = content_hashes or {}
    return [
        ManifestRecord(
            id=stable_id(store.uri(obj.key)),
            uri=store.uri(obj.key),
            kind=MediaKind.IMAGE,
            fingerprint=obj.fingerprint,
            content_hash=hashes.get(obj.key),
        )
        for obj in images
    ]


def scan_images(
    store: ObjectStore, prefix: str = "", layout: WorkLayout | None = None
) -> list[ManifestRecord]:
    """One manifest record per image under `prefix`, skipping the work area."""
    return image_records(store, list_media(store, prefix, layout).images)


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


def stale_image_manifests(
    store: ObjectStore, layout: WorkLayout, scope: str, listed: Mapping[str, str]
) -> list[str]:
    """The image manifests of the work area none of whose lines is current: every line names an
    object under `scope` (a URI prefix) that `listed` (URI -> fingerprint, the source now) no longer
    holds, or holds at another fingerprint. Frame manifests are left to their video; a manifest with
    any line that is current, or outside `scope`, or that cannot be read, is kept.

    Such a manifest is work nobody needs again: its images were deleted, moved or changed (a changed
    one is in a newer manifest). Whoever deletes it lets `sweep_outputs` take its outputs.
    """
    stale = []
    for obj in store.list(layout.manifests_dir):
        if not layout.is_manifest(obj.key) or layout.video_of(obj.key) is not None:
            continue
        try:
            records = [
                ManifestRecord.model_validate_json(line)
                for line in store.get(obj.key).splitlines()
                if line.strip()
            ]
        except (StoreError, ValueError):
            continue
        if records and not any(_current(r, scope, listed) for r in records):
            stale.append(obj.key)
    return stale


def _current(record: ManifestRecord, scope: str, listed: Mapping[str, str]) -> bool:
    if not record.uri.startswith(scope):
        return True  # another source's object (a hand-written manifest): not this sync's to judge
    now = listed.get(record.uri)
    return now is not None and (record.fingerprint is None or record.fingerprint == now)
