"""The writer lock: one writer per collection, named when busy, taken over safely after a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy.exceptions import ConflictError, NotFoundError

from mediasearch.index.locks import FileLock, LeaseLock, LockHeld, LockHolder, LockLost

HOLD = textwrap.dedent(
    """
    import sys, time
    from mediasearch.index.locks import FileLock
    lock = FileLock(sys.argv[1], "media")
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def _holder_process(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_stops_at_once_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "media.lock"
    proc = _holder_process(path)
    try:
        started = time.monotonic()
        with pytest.raises(LockHeld, match=rf"'media' is being written by pid {proc.pid} on .*--wait"):
            FileLock(path, "media").acquire()
        assert time.monotonic() - started < 2
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "media.lock"
    proc = _holder_process(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lock = FileLock(path, "media")
    lock.acquire()  # the kernel dropped the dead holder's flock
    holder = lock.holder()
    assert holder is not None and holder.pid == os.getpid()
    lock.release()


def test_a_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "media.lock"
    proc = _holder_process(path)
    lock = FileLock(path, "media")
    with pytest.raises(LockHeld, match=r"gave up after 0\.5 s"):
        lock.acquire(wait=True, timeout_s=0.5)
    proc.terminate()
    lock.acquire(wait=True, timeout_s=10)
    lock.release()
    proc.wait()


class LockCluster:
    """The OpenSearch document semantics a lease relies on, as the 2.19 sources define them:
    `op_type=create` answers 409 when the id exists; a write with `if_seq_no`/`if_primary_term`
    answers 409 unless both match; every write bumps `_seq_no` (see /tmp notes: InternalEngine)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[dict[str, Any], int]] = {}
        self.seq = 0
        self.indices = self

    # indices API
    def exists(self, index: str) -> bool:
        return True

    def create(self, index: str, body: Any) -> None:  # pragma: no cover - exists() says yes
        raise AssertionError("not reached")

    # document API
    def index(self, index: str, id: str, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        current = self.docs.get(id)
        if params.get("op_type") == "create" and current is not None:
            raise ConflictError(409, "version_conflict_engine_exception", "document already exists")
        if "if_seq_no" in params and (current is None or current[1] != params["if_seq_no"]):
            raise ConflictError(409, "version_conflict_engine_exception", "seq no mismatch")
        self.seq += 1
        self.docs[id] = (body, self.seq)
        return {"_seq_no": self.seq, "_primary_term": 1}

    def get(self, index: str, id: str) -> dict[str, Any]:
        if id not in self.docs:
            raise NotFoundError(404, "not_found", {})
        body, seq = self.docs[id]
        return {"_source": body, "_seq_no": seq, "_primary_term": 1}

    def delete(self, index: str, id: str, **params: Any) -> None:
        if id not in self.docs:
            raise NotFoundError(404, "not_found", {})
        if params.get("if_seq_no") != self.docs[id][1]:
            raise ConflictError(409, "version_conflict_engine_exception", "seq no mismatch")
        del self.docs[id]


def test_lease_is_exclusive_and_names_its_holder() -> None:
    cluster = LockCluster()
    first = LeaseLock(cluster, "media", lease_s=30)
    first.acquire()
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        LeaseLock(cluster, "media", lease_s=30).acquire()
    first.release()
    second = LeaseLock(cluster, "media", lease_s=30)
    second.acquire()
    second.release()
    assert cluster.docs == {}


def test_an_expired_lease_is_taken_over_once() -> None:
    cluster = LockCluster()
    dead = LockHolder(pid=999999, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    cluster.docs["media"] = (dead.model_dump(mode="json"), 7)
    taker = LeaseLock(cluster, "media", lease_s=30)
    taker.acquire()
    assert cluster.docs["media"][0]["pid"] == os.getpid()
    # A second would-be taker saw the same expired version: its compare-and-swap must fail.
    with pytest.raises(ConflictError):
        cluster.index("mediasearch-locks", "media", {}, if_seq_no=7, if_primary_term=1)
    taker.release()


def test_a_lease_that_is_taken_over_is_reported_lost() -> None:
    cluster = LockCluster()
    lock = LeaseLock(cluster, "media", lease_s=0.3)
    lock.acquire()
    cluster.seq += 1
    cluster.docs["media"] = (cluster.docs["media"][0], cluster.seq)  # someone else wrote the document
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            lock.check()
        except LockLost as exc:
            assert "took the lock over" in str(exc)
            break
        time.sleep(0.05)
    else:
        pytest.fail("the heartbeat never noticed the lost lease")
    lock.release()


def test_a_live_lease_is_renewed_past_its_length() -> None:
    cluster = LockCluster()
    lock = LeaseLock(cluster, "media", lease_s=0.3)
    lock.acquire()
    time.sleep(0.8)
    lock.check()
    with pytest.raises(LockHeld):
        LeaseLock(cluster, "media", lease_s=0.3).acquire()
    lock.release()
