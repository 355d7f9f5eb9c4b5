"""Processes for freshness checks: an API server, and a writer that commits documents on command.

Used by tests/test_freshness.py and bench/bench_freshness.py. The writer is another process, as an
ingest is, so what is measured is what a running server sees of someone else's commits, not what
one process sees of its own writes.

    python -m tests.freshness writer URI COLLECTION DIM [ANN_MIN_ROWS]

(ANN_MIN_ROWS lowers the row count from which `optimize` keeps an HNSW graph, for small test tables.)
reads commands on stdin, one per line, and answers each with one JSON line on stdout:

    write N PREFIX  -> {"ids": [...], "committed_at": <time.time() when the upsert returned>}
    optimize        -> {"optimized_at": ...}
    quit
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def document_uri(doc_id: str) -> str:
    return f"file:///freshness/{doc_id}.png"


def write_documents(index: Any, n: int, prefix: str, dim: int) -> list[str]:
    """Upsert `n` image documents with ids `PREFIX-i`, creating the collection if need be."""
    from mediasearch.core.records import DocKind, IndexDocument
    from mediasearch.index.base import IndexSpec

    rng = np.random.default_rng(zlib.crc32(prefix.encode()))
    docs = []
    for i in range(n):
        vector = rng.normal(size=dim).astype(np.float32)
        doc_id = f"{prefix}-{i}"
        docs.append(
            IndexDocument(
                id=doc_id,
                kind=DocKind.IMAGE,
                uri=document_uri(doc_id),
                clip_vector=vector / np.linalg.norm(vector),
                caption=f"item {prefix} number {i}",
                fingerprint=f"fp-{doc_id}",
            )
        )
    index.create(IndexSpec(clip_dim=dim))
    index.upsert(docs)
    return [d.id for d in docs]


def writer_main(uri: str, collection: str, dim: int, ann_min_rows: int | None = None) -> None:
    from mediasearch.index import lancedb
    from mediasearch.index.lancedb import LanceDBIndex

    if ann_min_rows is not None:
        lancedb.ANN_MIN_ROWS = ann_min_rows
    index = LanceDBIndex(uri, collection)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "write":
            ids = write_documents(index, int(args[0]), args[1], dim)
            print(json.dumps({"ids": ids, "committed_at": time.time()}), flush=True)
        elif command == "optimize":
            index.optimize()
            print(json.dumps({"optimized_at": time.time()}), flush=True)
        elif command == "quit":
            return


class Writer:
    """The writer process, driven line by line."""

    def __init__(
        self, uri: str, collection: str, dim: int, env: Mapping[str, str], ann_min_rows: int | None = None
    ) -> None:
        extra = [] if ann_min_rows is None else [str(ann_min_rows)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.freshness", "writer", uri, collection, str(dim), *extra],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._answer().get("ready"), "the writer did not start"

    def _answer(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the writer exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def command(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer()

    def write(self, n: int, prefix: str) -> tuple[list[str], float]:
        answer = self.command(f"write {n} {prefix}")
        return answer["ids"], float(answer["committed_at"])

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def server(port: int, env: Mapping[str, str], log_path: Path) -> Iterator[httpx.Client]:
    """`mediasearch serve` on `port` with `env`; yields a client once the server answers /health."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mediasearch.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:

                def answers() -> bool:
                    if process.poll() is not None:
                        raise RuntimeError(f"the server exited: {log_path.read_text()[-3000:]}")
                    try:
                        client.get("/health")
                    except httpx.TransportError:
                        return False
                    return True

                poll(answers, timeout_s=120, interval_s=0.1)
                yield client
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def poll(check: Callable[[], T | None], timeout_s: float, interval_s: float = 0.02) -> T:
    """The first truthy result of `check`, called every `interval_s`; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing after {timeout_s} s")
        time.sleep(interval_s)


def search_finds(client: httpx.Client, doc_id: str) -> bool:
    """Whether the server's /search returns `doc_id` (a text query narrowed to the item's own URI)."""
    r = client.post(
        "/search",
        json={"text": "an item", "kinds": ["image"], "k": 5, "filters": {"uri_prefix": document_uri(doc_id)}},
    )
    return r.status_code == 200 and any(x["id"] == doc_id for x in r.json()["results"])


def seen_after(
    client: httpx.Client, doc_id: str, committed_at: float, timeout_s: float, interval_s: float = 0.02
) -> float:
    """Seconds from `committed_at` (wall clock, another process) to /search returning `doc_id`."""
    poll(lambda: search_finds(client, doc_id), timeout_s, interval_s)
    return time.time() - committed_at


def server_env(lancedb_uri: Path, store: Path, clip_model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MEDIASEARCH_LANCEDB_URI=str(lancedb_uri),
        MEDIASEARCH_STORE=str(store),
        MEDIASEARCH_CLIP_MODEL=str(clip_model),
        MEDIASEARCH_DEVICE="cpu",
        MEDIASEARCH_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "writer":
        writer_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), *(int(a) for a in sys.argv[5:]))
    else:
        sys.exit("usage: python -m tests.freshness writer URI COLLECTION DIM [ANN_MIN_ROWS]")
