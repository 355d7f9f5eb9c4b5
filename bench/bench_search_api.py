"""`POST /search` latency over real HTTP against the bare text encoder, in one run.

The API runs under uvicorn on a free localhost port, in a background thread of this process, over a
LanceDB index of the synthetic demo images embedded (through the real ingest path) with a random
ViT-B/32-sized CLIP. Text queries are sent one at a time with httpx. The bare figure is
`ClipModel.embed_texts([q])` on the same model and the same queries.

Other people's jobs share this machine, so the two are interleaved request by request (bare, HTTP,
HTTP, bare, ...): a burst of load slows both alike instead of one of them. The target is
`/search` p50 <= bare p50 x 1.3 + 5 ms: everything around the model (HTTP, validation, two k-NN
queries for images and video scenes, the response) must cost little next to encoding the query.

    python bench/bench_search_api.py           # 360 images, 200 timed requests
    python bench/bench_search_api.py --tiny    # a few seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from _common import emit, environment, loadavg, log, percentiles_ms

from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService

SLOWDOWN = 1.3
SLACK_MS = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def queries() -> list[str]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    shapes = ["circle", "square", "triangle", "star", "hexagon", "cross"]
    backgrounds = ["white", "black", "gray", "noisy textured", "gradient"]
    out = [f"a {c} {s}" for c in colours for s in shapes]
    out += [
        f"a large {c} {s} on a {b} background"
        for c, s, b in zip(colours, shapes, backgrounds * 2, strict=False)
    ]
    return out


class BackgroundServer:
    """uvicorn in a daemon thread; `stop()` asks it to exit and waits."""

    def __init__(self, app: object, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=360, help="demo images in the index (max 360)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests (and bare encodes)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", choices=["base", "tiny"], default="base", help="random model shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 24 images, 30 requests")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.requests, args.warmup, args.size = 24, 30, 5, "tiny"

    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        log(f"building a random {args.size} CLIP")
        model_dir = build_random_clip(Path(tmp) / "model", size=args.size)
        model = ClipModel(str(model_dir), device="cpu").load()
        store = LocalStore(Path(tmp) / "store")
        index = LanceDBIndex(str(Path(tmp) / "lancedb"), "media")

        log(f"generating and ingesting {args.images} demo images")
        generate_images(store, "demo/images", limit=args.images)
        handler = ClipHandler(model)
        report = ingest(store, index, handler, prefix="demo/images", progress=False)
        handler.close()
        log(f"indexed {report.load.indexed} documents, {index.count()} in the collection")

        settings = Settings(store=str(store.root), lancedb_uri=str(Path(tmp) / "lancedb"))
        service = SearchService(index, LocalEncoder(model), store, MediaLinks())
        port = free_port()
        server = BackgroundServer(create_app(settings, service), port)
        server.start()
        log(f"API on http://127.0.0.1:{port}")

        texts = queries()
        http_s: list[float] = []
        bare_s: list[float] = []
        took_ms: list[float] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

            def http_search(q: str) -> float:
                started = time.perf_counter()
                r = client.post("/search", json={"text": q, "k": args.k})
                elapsed = time.perf_counter() - started
                if r.status_code != 200:
                    raise SystemExit(f"/search returned {r.status_code}: {r.text[:300]}")
                body = r.json()
                if not body["results"]:
                    raise SystemExit("/search returned no results")
                took_ms.append(body["took_ms"])
                return elapsed

            def bare_encode(q: str) -> float:
                started = time.perf_counter()
                model.embed_texts([q])
                return time.perf_counter() - started

            log(f"warming up with {args.warmup} requests")
            for i in range(args.warmup):
                bare_encode(texts[i % len(texts)])
                http_search(texts[i % len(texts)])
            took_ms.clear()

            log(f"timing {args.requests} requests and as many bare encodes, interleaved")
            for i in range(args.requests):
                q = texts[i % len(texts)]
                # Alternate which goes first so neither always runs right after the other.
                if i % 2 == 0:
                    bare_s.append(bare_encode(q))
                    http_s.append(http_search(q))
                else:
                    http_s.append(http_search(q))
                    bare_s.append(bare_encode(q))
            documents = client.get("/health").json()["documents"]
        server.stop()

    http = percentiles_ms(http_s)
    bare = percentiles_ms(bare_s)
    limit_ms = bare["p50_ms"] * SLOWDOWN + SLACK_MS
    result = {
        "bench": "search_api",
        "model": f"random-init CLIP, {args.size} shapes" + (" (ViT-B/32)" if args.size == "base" else ""),
        "index": "LanceDB (local), flat scan below ANN_MIN_ROWS",
        "documents": documents,
        "requests": args.requests,
        "k": args.k,
        "request": '{"text": q, "k": k}: default kinds image+video, so two k-NN queries per request',
        "search_http": http,
        "bare_text_encode": bare,
        "server_took_ms_p50": round(float(np.percentile(took_ms, 50)), 3),
        "overhead_p50_ms": round(http["p50_ms"] - bare["p50_ms"], 3),
        "target": f"/search p50 <= bare encode p50 x {SLOWDOWN} + {SLACK_MS} ms = {limit_ms:.2f} ms",
        "target_met": http["p50_ms"] <= limit_ms,
        "client": "httpx, sequential, keep-alive; uvicorn in a thread of the same process",
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        **environment(),
    }
    emit("bench_search_api", result)


if __name__ == "__main__":
    main()
