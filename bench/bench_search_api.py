"""`POST /search` over real HTTP at 100k documents, split by the server's `Server-Timing` header.

The server is the real command (`python -m mediasearch.cli serve`, uvicorn) in its own process over a
LanceDB collection of 100k documents: images, videos and their scenes, with random unit vectors
from a clustered mixture (bench_knn.py's), built the way the loader builds an index (`upsert` in
chunks, then `optimize()`). The query model is a random-weight CLIP of ViT-B/32 shapes on the
default CPU engine (ONNX Runtime fp32 text tower, exported once into a temporary cache).

Each `POST /search` is a text query with the default kinds (images and videos: a k-NN over images,
one over scenes, the videos' documents fetched by id). Two streams, interleaved request by request:

- cold: a text the server has never seen (the query-text cache misses, the text tower runs);
- repeated: one of a few texts sent before (the cache answers).

The reference is the bare text tower in this process (`OnnxClipModel.embed_texts([q])`, the same
export) on the cold texts, interleaved with the requests so that other people's load on this machine
slows both alike. Reported: client-side HTTP p50/p90/p99, the p50 of each part the server reports
(encode, knn, docs, build, serialise, total), and the ratios HTTP p50 / bare encode p50.

    python bench/bench_search_api.py                  # 100k documents, 200 requests per stream
    python bench/bench_search_api.py --tiny           # a few seconds' worth, to check that it runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _common import ServeProcess, emit, environment, loadavg, log, percentiles_ms
from bench_knn import mixture, unit

from mediasearch import backends
from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.base import IndexSpec
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.models.random_init import build_random_clip
from mediasearch.query.timing import PHASES, parse_header

TARGET_P50_MS = 15.0
TAGS = ["outdoor", "indoor", "people", "animal", "vehicle", "food", "water", "night", "sport", "text"]


# Realistic query words. The random model's vocabulary gets each as one token (`build_random_clip(...,
# words=...)`), as CLIP's real vocabulary has them: spelt byte by byte, a query would be ~45 tokens
# instead of ~11, and the text tower would be timed on four times the sequence a real query has.
QUERY_WORDS = (
    *("a", "the", "red", "green", "blue", "small", "large", "old", "new", "dog", "cat", "car"),
    *("tree", "house", "beach", "city", "night", "street", "person", "people", "running"),
    *("sitting", "sunset", "snow", "river", "mountain", "table", "food", "plate", "window", "sky"),
)


def cold_texts(n: int) -> list[str]:
    """`n` distinct texts of realistic length (5 to 12 words)."""
    rng = np.random.default_rng(7)
    return [f"{' '.join(rng.choice(QUERY_WORDS, size=int(rng.integers(4, 11))))} {i}" for i in range(n)]


def build_index(
    uri: str, media: str, dim: int, images: int, videos: int, scenes_per_video: int, chunk: int
) -> dict[str, object]:
    """Images, videos and scenes with clustered unit vectors, loaded and optimised like an ingest."""
    rng = np.random.default_rng(0)
    data, _ = mixture(images + videos * scenes_per_video, dim, 1000, 0.9, rng)
    docs: list[IndexDocument] = []
    for i in range(images):
        docs.append(
            IndexDocument.model_construct(
                id=f"img{i:07d}",
                kind=DocKind.IMAGE,
                uri=f"{media}/images/{i:07d}.jpg",
                tags=[TAGS[i % len(TAGS)], TAGS[(i * 7) % len(TAGS)]],
                width=640,
                height=480,
                clip_vector=data[i],
            )
        )
    for v in range(videos):
        scenes = data[images + v * scenes_per_video : images + (v + 1) * scenes_per_video]
        # A video's scenes lie near each other, as consecutive shots of one video do.
        scenes = unit(0.5 * scenes + scenes[0])
        vid = f"vid{v:06d}"
        for s, vec in enumerate(scenes):
            docs.append(
                IndexDocument.model_construct(
                    id=f"{vid}-s{s:03d}",
                    kind=DocKind.SCENE,
                    uri=f"{media}/videos/{vid}.mp4",
                    video_id=vid,
                    scene=s,
                    t_start=s * 4.0,
                    t_end=s * 4.0 + 4.0,
                    thumbnail=f"{media}/videos/_mediasearch/{vid}/scene-{s:03d}.jpg",
                    tags=[TAGS[(v + s) % len(TAGS)]],
                    clip_vector=vec,
                )
            )
        docs.append(
            IndexDocument.model_construct(
                id=vid,
                kind=DocKind.VIDEO,
                uri=f"{media}/videos/{vid}.mp4",
                duration=scenes_per_video * 4.0,
                scene_count=scenes_per_video,
                thumbnail=f"{media}/videos/_mediasearch/{vid}/scene-000.jpg",
                strip=f"{media}/videos/_mediasearch/{vid}/strip.jpg",
                tags=[TAGS[v % len(TAGS)]],
                clip_vector=unit(scenes.mean(axis=0)),
            )
        )
    order = rng.permutation(len(docs))  # ingests interleave kinds; so do the table's fragments
    index = LanceDBIndex(uri, "media")
    index.create(IndexSpec(clip_dim=dim))
    started = time.perf_counter()
    for start in range(0, len(docs), chunk):
        index.upsert([docs[j] for j in order[start : start + chunk]])
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    index.optimize()
    return {
        "documents": index.count(),
        "load_s": round(load_s, 2),
        "optimize_s": round(time.perf_counter() - started, 2),
        "indices": sorted(ix.name for ix in index.table.list_indices()),
    }


def parts_p50(rows: list[dict[str, float]]) -> dict[str, float]:
    return {
        name: round(float(np.percentile([r.get(name, 0.0) for r in rows], 50)), 3)
        for name in PHASES
        if any(name in r for r in rows)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=70_000)
    parser.add_argument("--videos", type=int, default=1_000)
    parser.add_argument("--scenes-per-video", type=int, default=29, help="100k documents in all by default")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per stream")
    parser.add_argument(
        "--repeated-texts", type=int, default=10, help="distinct texts of the repeated stream"
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", choices=["base", "tiny"], default="base", help="random model shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 3k documents, 30 requests")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.videos, args.scenes_per_video = 2000, 50, 19
        args.requests, args.warmup, args.size = 30, 5, "tiny"

    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        log(f"building a random {args.size} CLIP")
        model_dir = build_random_clip(
            work / "model", size=args.size, words=[w for w in QUERY_WORDS if len(w) > 1]
        )
        settings = Settings(
            clip_model=str(model_dir), cache_dir=str(work / "cache"), device="cpu", store=str(work / "media")
        )
        log("exporting and loading its text tower on the default CPU engine")
        model = backends.clip_model(settings)
        model.embed_texts(["warm-up"])
        engine = type(model).__name__
        if args.size == "base" and model.dim != 512:
            raise SystemExit(f"expected 512-d vectors, got {model.dim}")

        lancedb_uri = str(work / "lancedb")
        total = args.images + args.videos * (args.scenes_per_video + 1)
        log(f"writing {total} documents ({args.images} images, {args.videos} videos and their scenes)")
        built = build_index(
            lancedb_uri,
            LocalStore(work / "media").root_uri,
            model.dim,
            args.images,
            args.videos,
            args.scenes_per_video,
            chunk=10_000,
        )
        log(f"index: {built}")
        tokens = query_tokens(model_dir, cold_texts(args.requests))

        env = {
            **os.environ,
            "MEDIASEARCH_STORE": str(work / "media"),
            "MEDIASEARCH_LANCEDB_URI": lancedb_uri,
            "MEDIASEARCH_CLIP_MODEL": str(model_dir),
            "MEDIASEARCH_CACHE_DIR": str(work / "cache"),
            "MEDIASEARCH_DEVICE": "cpu",
            "MEDIASEARCH_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        }
        server = ServeProcess(env, work)
        try:
            server.wait_ready()
            log(f"API on {server.url}")
            result = measure(server.url, model, args)
        except BaseException:
            log(f"server log:\n{server.log_path.read_text()[-3000:]}")
            raise
        finally:
            server.stop()

    result = {
        "bench": "search_api",
        "model": f"random-init CLIP, {args.size} shapes" + (" (ViT-B/32)" if args.size == "base" else ""),
        "engine": f"{engine} (the default CPU engine), fp32",
        "index": {"backend": "LanceDB (local)", **built},
        "corpus": {
            "images": args.images,
            "videos": args.videos,
            "scenes": args.videos * args.scenes_per_video,
            "vectors": "clustered unit vectors (bench_knn.py's mixture); scenes of a video near each other",
        },
        "k": args.k,
        "request": '{"text": q, "k": k}: default kinds image+video (k-NN of images, of scenes, videos by id)',
        "query_tokens": tokens,
        **result,
        "target": f"POST /search p50 <= {TARGET_P50_MS} ms over HTTP (cold texts)",
        "target_met": result["cold"]["http"]["p50_ms"] <= TARGET_P50_MS,
        "client": "httpx, sequential, keep-alive; the server is `mediasearch serve` (uvicorn) in its own process",
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        **environment(),
    }
    emit("bench_search_api", result)


def query_tokens(model_dir: Path, texts: list[str]) -> dict[str, float]:
    """How long the timed queries are for the text tower, start and end tokens included."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    lengths = np.asarray([len(e.ids) for e in tokenizer.encode_batch(texts)])
    return {"mean": round(float(lengths.mean()), 1), "min": int(lengths.min()), "max": int(lengths.max())}


def measure(url: str, model: object, args: argparse.Namespace) -> dict[str, object]:
    cold = cold_texts(args.requests + args.warmup)
    repeated = cold_texts(args.repeated_texts + 10_000)[10_000:]  # distinct from the cold ones
    streams: dict[str, list[float]] = {"cold": [], "repeated": [], "bare": []}
    parts: dict[str, list[dict[str, float]]] = {"cold": [], "repeated": []}
    server_took: dict[str, list[float]] = {"cold": [], "repeated": []}
    with httpx.Client(base_url=url, timeout=60) as client:

        def search(q: str, stream: str | None) -> None:
            started = time.perf_counter()
            r = client.post("/search", json={"text": q, "k": args.k})
            elapsed = time.perf_counter() - started
            if r.status_code != 200:
                raise SystemExit(f"/search returned {r.status_code}: {r.text[:300]}")
            body = r.json()
            if not body["results"]:
                raise SystemExit("/search returned no results")
            if stream is not None:
                streams[stream].append(elapsed)
                parts[stream].append(parse_header(r.headers["server-timing"]))
                server_took[stream].append(body["took_ms"])

        def bare(q: str, record: bool) -> None:
            started = time.perf_counter()
            model.embed_texts([q])  # type: ignore[attr-defined]
            if record:
                streams["bare"].append(time.perf_counter() - started)

        log(f"warming up: {args.warmup} cold requests, and each repeated text once")
        for q in cold[: args.warmup]:
            bare(q, False)
            search(q, None)
        for q in repeated:
            search(q, None)

        log(
            f"timing {args.requests} cold and {args.requests} repeated requests, and bare encodes, interleaved"
        )
        for i, q in enumerate(cold[args.warmup :]):
            again = repeated[i % len(repeated)]
            # Rotate the order, so that none of the three always runs right after another.
            steps = [(bare, q, True), (search, q, "cold"), (search, again, "repeated")]
            for call, text, how in steps[i % 3 :] + steps[: i % 3]:
                call(text, how)  # type: ignore[operator]
        documents = client.get("/health").json()["documents"]

    bare_p = percentiles_ms(streams["bare"])
    out: dict[str, object] = {"documents": documents, "requests_per_stream": args.requests}
    for stream in ("cold", "repeated"):
        http = percentiles_ms(streams[stream])
        out[stream] = {
            "http": http,
            "server_timing_p50_ms": parts_p50(parts[stream]),
            "took_ms_p50": round(float(np.percentile(server_took[stream], 50)), 3),
            "http_p50_over_bare_encode_p50": round(http["p50_ms"] / bare_p["p50_ms"], 3),
        }
    out["bare_text_encode"] = bare_p
    return out


if __name__ == "__main__":
    main()
