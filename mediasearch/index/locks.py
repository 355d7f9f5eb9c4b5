"""One writer per collection: the lock an ingest holds while it changes an index.

Two ingests of one collection at once duplicated every document (LanceDB's merge_insert is not safe
across processes) and collided on index builds. Readers never take this lock: only writers do.

- `FileLock` (LanceDB on a local disk): `flock` on a file beside the tables. The kernel drops the lock
  when its process dies, `kill -9` included, so a lock can never be left behind; the file also holds
  who took it, so a second writer can say whom it is waiting for.
- `LeaseLock` (OpenSearch): a lock document created with `op_type=create` (409 when it exists), with
  a lease the holder renews. A holder that died stops renewing; once its lease has run out, the next
  writer takes the lock over with a compare-and-swap on the document's `_seq_no`/`_primary_term`, so
  two writers can never both take over the same expired lease.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, Field


class LockHeld(Exception):
    """Another writer holds the collection; the message names it."""


class LockLost(Exception):
    """The lease ran out or was taken over while this writer still worked: it must stop writing."""


class LockHolder(BaseModel):
    pid: int = Field(default_factory=os.getpid)
    host: str = Field(default_factory=socket.gethostname)
    command: str = Field(default_factory=lambda: " ".join(os.path.basename(a) for a in sys.argv[:3]))
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime | None = None

    def describe(self) -> str:
        since = self.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on {self.host} ({self.command!r}, since {since})"


class WriterLock(ABC):
    """Held for the whole of a write; `acquire(wait=False)` stops at once when another writer has it."""

    collection: str

    @abstractmethod
    def try_acquire(self) -> bool: ...

    @abstractmethod
    def holder(self) -> LockHolder | None:
        """Who holds the lock now (None when nobody does, or it cannot be told)."""

    @abstractmethod
    def release(self) -> None: ...

    def check(self) -> None:  # noqa: B027 - a file lock cannot be lost; leases override this
        """Raise `LockLost` when the lock is no longer ours (leases only; a file lock cannot be lost)."""

    def acquire(self, wait: bool = False, timeout_s: float | None = None, poll_s: float = 0.2) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.try_acquire():
            holder = self.holder()
            who = holder.describe() if holder else "another process"
            if not wait:
                raise LockHeld(
                    f"collection {self.collection!r} is being written by {who}; "
                    "wait for it to finish, or run again with --wait"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise LockHeld(
                    f"gave up after {timeout_s:g} s waiting for {who} to finish writing {self.collection!r}"
                )
            time.sleep(poll_s)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class FileLock(WriterLock):
    def __init__(self, path: str | os.PathLike[str], collection: str) -> None:
        self.path = Path(path)
        self.collection = collection
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # Ours now: whatever a dead holder wrote is overwritten with who we are.
        os.ftruncate(fd, 0)
        os.pwrite(fd, LockHolder().model_dump_json().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def holder(self) -> LockHolder | None:
        try:
            return LockHolder.model_validate_json(self.path.read_bytes())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


class LeaseLock(WriterLock):
    """A lease document in OpenSearch (`LOCK_INDEX`/`<collection>`), renewed by a heartbeat thread."""

    LOCK_INDEX = "mediasearch-locks"

    def __init__(self, client: Any, collection: str, lease_s: float = 60.0) -> None:
        self.client = client
        self.collection = collection
        self.lease_s = lease_s
        self._version: tuple[int, int] | None = None  # (_seq_no, _primary_term) of our lock document
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._lost: str | None = None
        self._guard = threading.Lock()

    def _body(self, holder: LockHolder) -> dict[str, Any]:
        holder.expires_at = datetime.now(UTC) + timedelta(seconds=self.lease_s)
        return json.loads(holder.model_dump_json())

    def _ensure_index(self) -> None:
        from opensearchpy.exceptions import RequestError

        try:
            if not self.client.indices.exists(index=self.LOCK_INDEX):
                self.client.indices.create(
                    index=self.LOCK_INDEX, body={"settings": {"index": {"number_of_shards": 1}}}
                )
        except RequestError as exc:  # another writer created it first
            if "resource_already_exists_exception" not in str(exc):
                raise

    def try_acquire(self) -> bool:
        from opensearchpy.exceptions import ConflictError, NotFoundError

        if self._version is not None:
            return True
        self._ensure_index()
        self._holder = LockHolder()
        try:
            # op_type=create: a 409 when the document exists, so exactly one creator wins.
            response = self.client.index(
                index=self.LOCK_INDEX,
                id=self.collection,
                body=self._body(self._holder),
                op_type="create",
                refresh="true",
            )
        except ConflictError:
            try:
                current = self.client.get(index=self.LOCK_INDEX, id=self.collection)
            except NotFoundError:
                return False  # released between our create and our get: try again
            holder = LockHolder.model_validate(current["_source"])
            if holder.expires_at is not None and holder.expires_at > datetime.now(UTC):
                return False
            try:
                # The holder stopped renewing (it died): take over, but only the version we saw.
                response = self.client.index(
                    index=self.LOCK_INDEX,
                    id=self.collection,
                    body=self._body(self._holder),
                    if_seq_no=current["_seq_no"],
                    if_primary_term=current["_primary_term"],
                    refresh="true",
                )
            except ConflictError:
                return False  # another writer took it over first
        self._version = (response["_seq_no"], response["_primary_term"])
        self._stop.clear()
        self._lost = None
        self._beat = threading.Thread(target=self._heartbeat, name="lock-lease", daemon=True)
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        from opensearchpy.exceptions import ConflictError, NotFoundError, OpenSearchException

        while not self._stop.wait(self.lease_s / 3):
            with self._guard:
                if self._version is None:
                    return
                try:
                    response = self.client.index(
                        index=self.LOCK_INDEX,
                        id=self.collection,
                        body=self._body(self._holder),
                        if_seq_no=self._version[0],
                        if_primary_term=self._version[1],
                    )
                    self._version = (response["_seq_no"], response["_primary_term"])
                except (ConflictError, NotFoundError):
                    self._lost = "another writer took the lock over (our lease had run out)"
                    return
                except OpenSearchException:
                    continue  # a hiccup: the lease covers two more tries

    def check(self) -> None:
        if self._lost is not None:
            raise LockLost(f"lost the writer lock of {self.collection!r}: {self._lost}")

    def holder(self) -> LockHolder | None:
        from opensearchpy.exceptions import NotFoundError

        try:
            return LockHolder.model_validate(
                self.client.get(index=self.LOCK_INDEX, id=self.collection)["_source"]
            )
        except (NotFoundError, ValueError, KeyError):
            return None

    def release(self) -> None:
        from opensearchpy.exceptions import ConflictError, NotFoundError

        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with self._guard:
            if self._version is None:
                return
            try:
                self.client.delete(
                    index=self.LOCK_INDEX,
                    id=self.collection,
                    if_seq_no=self._version[0],
                    if_primary_term=self._version[1],
                    refresh="true",
                )
            except (ConflictError, NotFoundError):
                pass  # already taken over or gone: nothing of ours to delete
            finally:
                self._version = None
