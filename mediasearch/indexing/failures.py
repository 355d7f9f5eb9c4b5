"""Known-bad inputs: what failed in a source, remembered in its work area, so a re-run skips it.

An image that does not decode fails the same way every run. `KnownFailures` keeps, per source, each
failed object's key, fingerprint (ETag, or size + mtime) and error in the work area
(`WorkLayout.failures`). The next ingest sees the source through `visible_store`, which leaves out
every object that failed before and has not changed since; those are reported as skipped, not decoded
again. An object that changed is tried again (and, if it fails again, counted as a retried failure);
`--retry-failed` tries every known-bad object again. Objects that succeed or are gone are forgotten.

Separate from the pipeline: it only filters the listing the pipeline plans from, and reads the
failures of the run's report afterwards.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import TransformResult
from mediasearch.core.storage import ObjectInfo, ObjectStore, StoreError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Failure:
    key: str
    uri: str
    fingerprint: str
    error: str


class VisibleStore(ObjectStore):
    """`store`, with the objects in `hidden` (key -> fingerprint) left out of listings while they keep
    that fingerprint; everything else is the store itself. Remembers the fingerprint of every object
    it listed, so a failure can be recorded with the fingerprint it failed at."""

    def __init__(self, store: ObjectStore, hidden: dict[str, str]) -> None:
        self.store = store
        self.hidden = hidden
        self.listed: dict[str, str] = {}
        self.skipped: set[str] = set()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.store.list(prefix):
            if self.hidden.get(info.key) == info.fingerprint:
                self.skipped.add(info.key)
                continue
            self.listed[info.key] = info.fingerprint
            yield info

    # -- the rest is the store's own --------------------------------------------------------------

    @property
    def root_uri(self) -> str:
        return self.store.root_uri

    @property
    def display_root(self) -> str:
        return self.store.display_root

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.store.put(key, data, content_type)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.store.stat(key)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def uri(self, key: str) -> str:
        return self.store.uri(key)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return self.store.presigned_url(key, expires_s)

    def content_hash(self, key: str, info: ObjectInfo | None = None, local: Path | None = None) -> str:
        return self.store.content_hash(key, info, local)

    def local_path(self, key: str) -> Path | None:
        return self.store.local_path(key)

    def key_of(self, uri: str) -> str | None:
        return self.store.key_of(uri)


class KnownFailures:
    """The known-bad objects of one source (see the module docstring)."""

    def __init__(self, store: ObjectStore, layout: WorkLayout) -> None:
        self.store = store
        self.key = layout.failures()
        self.known: dict[str, Failure] = {}
        self.visible: VisibleStore | None = None
        self.retried: list[Failure] = []  # known before, tried again this run, failed again
        try:
            raw = json.loads(store.get(self.key))
            for item in raw.get("failures", []) if raw.get("version") == FORMAT_VERSION else []:
                failure = Failure(**item)
                self.known[failure.key] = failure
        except (StoreError, ValueError, TypeError, AttributeError):
            self.known = {}  # none yet, or unreadable: everything is simply tried

    def visible_store(self, retry: bool = False) -> VisibleStore:
        """The store to run the pipeline on: without the unchanged known-bad objects (all of them
        are tried again with `retry`)."""
        hidden = {} if retry else {k: f.fingerprint for k, f in self.known.items()}
        self.visible = VisibleStore(self.store, hidden)
        return self.visible

    @property
    def skipped(self) -> list[Failure]:
        """The known-bad objects this run left out, unchanged since they failed."""
        keys = self.visible.skipped if self.visible is not None else set()
        return [self.known[k] for k in sorted(keys)]

    def record(self, failures: list[TransformResult]) -> None:
        """Remember this run's failures (with the fingerprints they failed at) and the skipped ones;
        forget the rest. Frames fail as their video (a frame is not listed, its video is)."""
        assert self.visible is not None, "record() after a run through visible_store()"
        now: dict[str, Failure] = {f.key: f for f in self.skipped}
        self.retried = []
        for result in failures:
            key = self.store.key_of(result.uri)
            fingerprint = self.visible.listed.get(key) if key is not None else None
            if key is None or fingerprint is None:
                continue  # not a listed object of this source (a frame, or a work-area file)
            failure = Failure(key, result.uri, fingerprint, result.error or "failed")
            now[key] = failure
            if key in self.known:
                self.retried.append(failure)
        self.known = now
        body = {"version": FORMAT_VERSION, "failures": [f.__dict__ for f in now.values()]}
        # Best effort: where the work area cannot be written (a read-only folder, an S3 prefix without
        # put permission), the next run only decodes them again; the ingest itself must not fail.
        with contextlib.suppress(Exception):
            self.store.put(self.key, json.dumps(body, indent=1).encode(), "application/json")

    def lines(self, shown: int = 20) -> list[str]:
        """What to tell the user after the run's summary: the skipped known-bad objects."""
        skipped = self.skipped
        if not skipped:
            return []
        out = [
            f"{len(skipped)} known-bad item(s) skipped: unchanged since they failed "
            "(--retry-failed tries them again):"
        ]
        out += [f"  {f.uri}: {f.error}" for f in skipped[:shown]]
        if len(skipped) > shown:
            out.append(f"  ... and {len(skipped) - shown} more")
        return out
