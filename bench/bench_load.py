"""Load: N concurrent clients against `mediasearch serve` on localhost for a fixed time.

The server is the real command (`python -m mediasearch.cli serve`) in a subprocess, configured by
MEDIASEARCH_* variables over a demo corpus (synthetic images and a few videos) ingested into LanceDB
with a random CLIP (tiny, or ViT-B/32-sized with --model base). The clients are asyncio tasks sharing
one httpx connection pool in this process; each sends its next request as soon as the last one is
answered: mostly `POST /search` text queries, and some `GET /videos/{id}/similar`. Any answer other
than 200, and any timeout or connection error, is an error. The target: zero errors at 32 clients
for 30 s.

Server and clients share this machine's cores, so throughput is a floor, not the server's ceiling;
`load_avg` says how busy the machine was.

    python bench/bench_load.py                      # 32 clients, 30 s, tiny model
    python bench/bench_load.py --model base --clients 64 --duration 60
    python bench/bench_load.py --duration 5         # a quick check that it runs

Prints one JSON object and writes it to bench/results/bench_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from _common import ServeProcess, emit, environment, loadavg, log

from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.corpus.videos import default_specs, write_corpus
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip

VIDEOS = ("cuts_a.mp4", "cuts_b.mp4", "cuts_d.mkv", "short.mp4")
REQUEST_TIMEOUT_S = 30.0


def queries() -> list[str]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    shapes = ["circle", "square", "triangle", "star", "hexagon", "cross"]
    out = [f"a {c} {s}" for c in colours for s in shapes]
    out += [f"a large {c} {s} on a noisy background" for c, s in zip(colours, shapes * 2, strict=False)]
    return out


def build_corpus(work: Path, model_size: str, images: int | None, videos: bool) -> tuple[Path, Path]:
    """Model, media and index under `work`; reused as they are when already there (--workdir)."""
    model_dir = work / f"model-{model_size}"
    if not (model_dir / "config.json").is_file():
        log(f"building a random {model_size} CLIP")
        build_random_clip(model_dir, size=model_size)  # type: ignore[arg-type]
    store = LocalStore(work / "media")
    lancedb = work / "lancedb"
    if not lancedb.exists():
        log(f"writing the demo corpus ({images or 'all'} images{', videos' if videos else ''})")
        generate_images(store, "demo/images", limit=images)
        if videos:
            specs = [s for s in default_specs("demo/videos") if s.key.rsplit("/", 1)[-1] in VIDEOS]
            dups = [("demo/videos/cuts_a.mp4", "demo/videos/dups/cuts_a_small.mp4", 0.6, 32)]
            write_corpus(store, "demo/videos", specs=specs, duplicates=dups)
        log("ingesting")
        index = LanceDBIndex(str(lancedb), "media")
        model = ClipModel(str(model_dir), device="cpu", batch_size=32)
        report = ingest(
            store, index, ClipHandler(model), video_options=VideoOptions(max_scene_s=3.0), progress=False
        )
        if report.failures:
            raise SystemExit(f"ingest failed for {len(report.failures)} item(s): {report.failures[:3]}")
        log(f"index holds {index.count()} documents")
    return model_dir, work


def serve(model_dir: Path, work: Path, workers: int) -> ServeProcess:
    """The server over WORK's corpus and index."""
    env = {
        **os.environ,
        "MEDIASEARCH_STORE": str(work / "media"),
        "MEDIASEARCH_LANCEDB_URI": str(work / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(model_dir),
        "MEDIASEARCH_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    return ServeProcess(env, work, workers)


async def run_load(
    url: str, clients: int, duration_s: float, video_ids: list[str], similar_share: float
) -> dict:
    texts = queries()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as http:

        async def client(n: int, deadline: float) -> None:
            rng = random.Random(n)
            while time.perf_counter() < deadline:
                if video_ids and rng.random() < similar_share:
                    kind = "similar"
                    call = http.get(f"/videos/{rng.choice(video_ids)}/similar", params={"k": 5})
                else:
                    kind = "search"
                    body = {"text": rng.choice(texts), "k": 10}
                    call = http.post("/search", json=body)
                started = time.perf_counter()
                try:
                    response = await call
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
                kinds[kind] += 1

        # A short warm-up at the same concurrency: connections open, thread pool and caches fill.
        await asyncio.gather(*(client(-1 - n, time.perf_counter() + 1.0) for n in range(clients)))
        latencies.clear()
        statuses.clear()
        kinds.clear()

        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(client(n, deadline) for n in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000.0
    requests = len(latencies)
    return {
        "elapsed_s": round(elapsed, 2),
        "requests": requests,
        "throughput_rps": round(requests / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if requests else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 1) if requests else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if requests else None,
        "max_ms": round(float(ms.max()), 1) if requests else None,
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "status_counts": dict(statuses),
        "mix": dict(kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of timed load")
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--images", type=int, default=None, help="demo images (default: all 360)")
    parser.add_argument("--no-videos", action="store_true")
    parser.add_argument("--similar-share", type=float, default=0.1, help="share of similar-video calls")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--workdir", type=Path, default=None, help="keep and reuse the corpus and index here")
    args = parser.parse_args()
    if not 1 <= args.clients <= 1024 or not 0 < args.duration <= 600:
        parser.error("--clients must be 1..1024 and --duration 0..600 s")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    server: ServeProcess | None = None
    try:
        model_dir, work = build_corpus(work, args.model, args.images, not args.no_videos)
        server = serve(model_dir, work, args.workers)
        log(f"starting the server on {server.url}")
        server.wait_ready(timeout_s=120.0)
        health = httpx.get(server.url + "/health").json()
        found = httpx.post(
            server.url + "/search", json={"text": "a video", "kinds": ["video"], "k": 100}, timeout=30
        ).json()
        video_ids = [r["id"] for r in found.get("results", [])]
        log(
            f"{health['documents']} documents, {len(video_ids)} videos; {args.clients} clients for {args.duration} s"
        )
        load_before = loadavg()
        stats = asyncio.run(run_load(server.url, args.clients, args.duration, video_ids, args.similar_share))
        server_lines = server.log_path.read_text().count('"logger": "mediasearch.access"')
    finally:
        if server is not None:
            server.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "bench": "load",
        "clients": args.clients,
        "duration_s": args.duration,
        "requests": stats["requests"],
        "throughput_rps": stats["throughput_rps"],
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "errors": stats["errors"],
        "status_counts": stats["status_counts"],
        "load_avg": loadavg(),
        "details": {
            **{k: stats[k] for k in ("elapsed_s", "p90_ms", "max_ms", "mix")},
            "target": "zero errors",
            "met": stats["errors"] == 0,
            "model": f"random CLIP ({args.model})",
            "documents": health["documents"],
            "videos": len(video_ids),
            "workers": args.workers,
            "load_avg_before": load_before,
            "server_access_log_lines": server_lines,
            **environment(),
        },
    }
    emit("bench_load", result)
    if stats["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
