"""What `ingest SOURCE` must do to make the index mirror SOURCE: a plan, computed without side effects.

The index holds, for every image and video it got from a source, the object's id (from its URI), its
fingerprint (ETag, or size + mtime: cheap to list) and its content hash (what the bytes are). Against
a fresh listing of the source that gives:

- unchanged: same id, same fingerprint: nothing to do;
- touched: same id, new fingerprint, same content (a `touch`, a copy onto itself): only the
  fingerprint is rewritten, nothing is embedded;
- updated: same id, new content: embedded again;
- moved: a new id whose content equals that of an indexed object that is gone from the source (a
  rename, a move to another folder): its documents are re-keyed, its vectors reused, nothing embedded;
- added: a new id with new content: embedded;
- removed: indexed, gone from the source, and not moved: deleted with its scenes and artefacts.

Content hashes cost a read of the object (S3's ETag is one already), so they are only computed for
the objects that need them: new ids while something is gone (a possible move), and changed
fingerprints (a possible touch).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mediasearch.core.records import DocKind


@dataclass(frozen=True)
class SourceObject:
    """An image or video found in the source."""

    key: str
    uri: str
    id: str
    kind: DocKind  # IMAGE or VIDEO
    fingerprint: str


@dataclass(frozen=True)
class IndexedObject:
    """What the index holds of an image or video document: enough to plan, no vectors."""

    id: str
    uri: str
    kind: DocKind
    fingerprint: str | None
    content_hash: str | None


@dataclass(frozen=True)
class Move:
    old: IndexedObject
    new: SourceObject
    content_hash: str


@dataclass
class SyncPlan:
    unchanged: list[SourceObject] = field(default_factory=list)
    touched: list[tuple[SourceObject, str]] = field(default_factory=list)  # with its content hash
    updated: list[SourceObject] = field(default_factory=list)
    added: list[SourceObject] = field(default_factory=list)
    moved: list[Move] = field(default_factory=list)
    removed: list[IndexedObject] = field(default_factory=list)
    kept: list[IndexedObject] = field(default_factory=list)  # gone, but kept (append-only mode)

    @property
    def to_embed(self) -> list[SourceObject]:
        return [*self.added, *self.updated]


def plan_sync(
    source: Sequence[SourceObject],
    indexed: Sequence[IndexedObject],
    content_hash: Callable[[SourceObject], str | None],
    delete: bool = True,
) -> SyncPlan:
    """The plan that makes `indexed` (this source's part of the index) mirror `source`.

    `content_hash` reads an object's content hash (None when it cannot be had: then no move or touch
    is recognised for it and it is simply embedded). With `delete=False` nothing is removed: objects
    gone from the source stay indexed (append-only), and nothing can be moved away from them.
    """
    plan = SyncPlan()
    by_id = {d.id: d for d in indexed}
    seen_ids = {s.id for s in source}
    gone = [d for d in indexed if d.id not in seen_ids]
    # Gone objects by (kind, content): the candidates a new object may have moved from.
    movable: dict[tuple[DocKind, str], list[IndexedObject]] = defaultdict(list)
    if delete:
        for d in gone:
            if d.content_hash:
                movable[(d.kind, d.content_hash)].append(d)

    for obj in source:
        old = by_id.get(obj.id)
        if old is not None:
            if old.fingerprint == obj.fingerprint:
                plan.unchanged.append(obj)
                continue
            digest = content_hash(obj) if old.content_hash else None
            if digest is not None and digest == old.content_hash and old.kind is obj.kind:
                plan.touched.append((obj, digest))
            else:
                plan.updated.append(obj)
            continue
        candidates = []
        if movable:
            digest = content_hash(obj)
            candidates = movable.get((obj.kind, digest), []) if digest else []
        if candidates:
            assert digest is not None
            plan.moved.append(Move(old=candidates.pop(0), new=obj, content_hash=digest))
        else:
            plan.added.append(obj)

    moved_ids = {m.old.id for m in plan.moved}
    for d in gone:
        if d.id in moved_ids:
            continue
        (plan.removed if delete else plan.kept).append(d)
    return plan
