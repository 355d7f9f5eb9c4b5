"""Freshness: time from another process's commit to a running server returning the new item.

A real `mediasearch serve` process (tiny random CLIP, LanceDB in a temp folder) and a writer process
that upserts documents as an ingest does (tests/freshness.py). For each write the writer reports the
wall-clock time its upsert returned; the bench polls the server's /search (narrowed to the new item's
URI) every --poll-ms until the item comes back. The first write creates the table after the server
started (the case a server used to never see); it is reported on its own.

    .venv/bin/python bench/bench_freshness.py                     # default refresh (1 s), 20 writes
    .venv/bin/python bench/bench_freshness.py --refresh-s 0 0.25 1 --writes 30
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, environment, loadavg, log, percentiles_ms

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.freshness: the same server and writer processes the test uses

from mediasearch.core.defaults import INDEX_REFRESH_S  # noqa: E402
from mediasearch.models.random_init import build_random_clip  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.freshness import Writer, seen_after, server, server_env  # noqa: E402

TINY_CLIP_DIM = 16


def measure(
    refresh_s: float | None, writes: int, poll_s: float, model: Path, work: Path
) -> dict[str, object]:
    extra = {} if refresh_s is None else {"MEDIASEARCH_INDEX_REFRESH_S": str(refresh_s)}
    uri = work / "lancedb"
    env = server_env(uri, work / "media", model, **extra)
    writer = Writer(str(uri), "media", TINY_CLIP_DIM, env)
    try:
        with server(free_port(), env, work / "server.log") as client:
            ids, committed = writer.write(5, "first")
            first = seen_after(client, ids[-1], committed, timeout_s=30, interval_s=poll_s)
            samples = []
            for i in range(writes):
                # Commits land at every phase of the server's refresh cycle, not in step with it.
                time.sleep(random.uniform(0.0, max(refresh_s or INDEX_REFRESH_S, 0.1)))
                ids, committed = writer.write(1, f"w{i}")
                samples.append(seen_after(client, ids[-1], committed, timeout_s=30, interval_s=poll_s))
                log(f"refresh {refresh_s}: write {i} seen after {samples[-1] * 1000:.0f} ms")
    finally:
        writer.close()
    stats = percentiles_ms(samples)
    return {
        "refresh_s": INDEX_REFRESH_S if refresh_s is None else refresh_s,
        "setting": "default" if refresh_s is None else f"MEDIASEARCH_INDEX_REFRESH_S={refresh_s}",
        "table_created_after_server_start_ms": round(first * 1000, 1),
        "commit_to_search_ms": stats,
        "max_ms": round(max(samples) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=20, help="commits measured per refresh setting")
    parser.add_argument(
        "--refresh-s",
        type=float,
        nargs="*",
        default=None,
        help="refresh settings to measure (default: the default)",
    )
    parser.add_argument("--poll-ms", type=float, default=10.0, help="how often the bench asks the server")
    args = parser.parse_args()
    settings: list[float | None] = list(args.refresh_s) if args.refresh_s else [None]
    random.seed(0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_random_clip(Path(tmp) / "tiny-clip", size="tiny")
        for refresh_s in settings:
            work = Path(tmp) / f"run-{refresh_s}"
            work.mkdir()
            runs.append(measure(refresh_s, args.writes, args.poll_ms / 1000, model, work))
    emit(
        "bench_freshness",
        {
            "what": "seconds from a writer process's upsert returning to a running `mediasearch serve` "
            "returning the new item from /search (LanceDB, tiny random CLIP)",
            "writes": args.writes,
            "poll_ms": args.poll_ms,
            "runs": runs,
            "loadavg": loadavg(),
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
