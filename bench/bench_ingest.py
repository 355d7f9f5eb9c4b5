"""End-to-end ingest of N camera-sized JPEGs on CPU: img/s, and where the time goes.

The images are the synthetic corpus (mediasearch/corpus/images.py) scaled up to camera sizes (0.3 to
12 MP, the mix below) with sensor-like noise so that they compress like photos, saved as JPEG
(quality 90). A pool of distinct images is made and each file gets its own bytes (a JPEG comment
naming it), so decode costs are those of real photos and no two objects share a content hash.

The run is the real `ingest` (mediasearch/indexing/pipeline.py: plan, manifests, the transform
runner with its decode threads and prefetch, the `.out` writes, the loader into LanceDB, optimize)
with a random-weight ViT-B/32 CLIP on the default CPU engine (ONNX Runtime fp32). The stages are
timed by wrapping the handler's and the runner's methods on their instances, nothing else changed:

- decode: per image, fetch + decode (JPEG draft scaling) + CLIP preprocessing, in the decode threads
  (CPU seconds of those threads, and wall); it overlaps encode (the runner prefetches a batch);
- encode: the image tower's forward per batch (wall: it runs alone on the main thread);
- write: the `.out` files (JSON Lines of vectors);
- load: the loader (read outputs, upsert into LanceDB, optimize).

The reference in the same run is the bare image tower on pixel batches made beforehand (no fetch,
no decode, no writes): `end_to_end_over_bare` is what the whole pipeline keeps of the model's speed.
The process CPU seconds per image (all threads) are the figure that scales to other machines
(docs/deploy.md projects 1M images on SageMaker from it).

    python bench/bench_ingest.py                 # 10k images (long on 2 cores)
    python bench/bench_ingest.py --images 2000   # the per-image costs, sooner
    python bench/bench_ingest.py --tiny          # a few seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import functools
import io
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import emit, environment, loadavg, log
from PIL import Image

from mediasearch import backends
from mediasearch.core.images import decode_image
from mediasearch.core.layout import WorkLayout
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader
from mediasearch.indexing.pipeline import Pipeline
from mediasearch.indexing.transform import TransformRunner
from mediasearch.models.random_init import build_random_clip

# (width, height, share): phone and camera photos dominate, with web-sized images beside them.
SIZES = [(640, 480, 0.15), (1280, 960, 0.25), (2048, 1536, 0.25), (3024, 4032, 0.25), (4000, 3000, 0.10)]


class Stage:
    """Wall seconds (and CPU seconds of the calling thread) summed over calls, thread-safe."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.wall += time.perf_counter() - wall
                    self.cpu += time.thread_time() - cpu
                    self.calls += 1

        return timed


def photo_pool(n: int) -> list[bytes]:
    """`n` distinct camera-sized JPEGs made from the synthetic corpus."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        labels = generate_images(store, "pool", limit=min(n, 360))
        sources = [Image.open(io.BytesIO(store.get(label.key))).convert("RGB") for label in labels]
    shares = np.array([s for _, _, s in SIZES])
    out = []
    for i in range(n):
        w, h, _ = SIZES[rng.choice(len(SIZES), p=shares / shares.sum())]
        img = sources[i % len(sources)].resize((w, h), Image.Resampling.BILINEAR)
        # Sensor-like noise, a little coarser than a pixel: a clean upscale compresses 10x better than
        # a photo and decodes faster than one.
        small = rng.integers(-10, 11, size=((h + 1) // 2, (w + 1) // 2, 3), dtype=np.int16)
        noise = small.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
        pixels = np.asarray(img, np.int16) + noise
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same image with a COM segment after SOI: other bytes, the same decode."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def bare_images_per_s(model: Any, pixels: np.ndarray, batch: int, passes: int) -> float:
    model.embed_pixels(pixels[:batch])
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        for start in range(0, len(pixels), batch):
            model.embed_pixels(pixels[start : start + batch])
        best = max(best, len(pixels) / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=100, help="distinct images the N files are made from")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decode-workers", type=int, default=Settings().decode_workers)
    parser.add_argument("--size", choices=["base", "tiny"], default="base", help="random model shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 64 small images")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.pool, args.size = 64, 16, "tiny"

    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        log(f"making {args.pool} camera-sized JPEGs and writing {args.images} files")
        pool = photo_pool(args.pool)
        store = LocalStore(work / "media")
        total_bytes = 0
        for i in range(args.images):
            data = with_comment(pool[i % len(pool)], f"bench-ingest {i}")
            store.put(f"photos/{i // 1000:03d}/img-{i:06d}.jpg", data, "image/jpeg")
            total_bytes += len(data)
        megapixels = [Image.open(io.BytesIO(p)).size for p in pool]

        log(f"building a random {args.size} CLIP on the default CPU engine")
        model_dir = build_random_clip(work / "model", size=args.size)
        settings = Settings(
            clip_model=str(model_dir), cache_dir=str(work / "cache"), device="cpu", batch_size=args.batch
        )
        model = backends.clip_model(settings)
        model.load()
        engine = type(model).__name__

        handler = ClipHandler(model, decode_workers=args.decode_workers)
        index = LanceDBIndex(str(work / "lancedb"), "media")
        layout = WorkLayout.for_source("")
        loader = Loader(store, index, layout, progress=False)
        pipeline = Pipeline(
            store, layout, index, loader, manifest_lines=settings.manifest_lines, progress=False
        )
        runner = TransformRunner(store, handler, layout, batch_size=args.batch, progress=True)
        stages = {name: Stage() for name in ("decode", "encode", "write", "load")}
        handler._load_one = stages["decode"].wrap(handler._load_one)  # type: ignore[method-assign]
        handler.embed = stages["encode"].wrap(handler.embed)  # type: ignore[method-assign]
        runner.writer.write = stages["write"].wrap(runner.writer.write)  # type: ignore[method-assign]
        loader.load = stages["load"].wrap(loader.load)  # type: ignore[method-assign]

        log(f"ingesting {args.images} images")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = pipeline.ingest(runner)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        if report.failures or index.count() != args.images:
            raise SystemExit(f"ingest indexed {index.count()} of {args.images}: {report.failures[:3]}")
        log(f"{args.images} images in {wall:.1f} s: {args.images / wall:.2f} img/s")

        log("bare image tower on prepared pixels (the reference)")
        sample = [store.get(f"photos/000/img-{i:06d}.jpg") for i in range(min(len(pool), 4 * args.batch))]
        pixels = np.stack([model.preprocess(decode_image(b)) for b in sample])
        bare = bare_images_per_s(model, pixels, args.batch, passes=2)
        handler.close()

    n = args.images
    per_image = {
        name: {
            "wall_ms": round(s.wall / n * 1000, 2),
            "cpu_ms": round(s.cpu / n * 1000, 2),
        }
        for name, s in stages.items()
    }
    accounted = sum(stages[s].wall for s in ("encode", "write", "load"))
    result = {
        "bench": "ingest",
        "images": n,
        "image_mix": [{"width": w, "height": h, "share": s} for w, h, s in SIZES],
        "mean_megapixels": round(float(np.mean([w * h for w, h in megapixels])) / 1e6, 2),
        "mean_jpeg_kb": round(total_bytes / n / 1024, 1),
        "model": f"random-init CLIP, {args.size} shapes" + (" (ViT-B/32)" if args.size == "base" else ""),
        "engine": f"{engine} (the default CPU engine), fp32",
        "batch": args.batch,
        "decode_workers": args.decode_workers,
        "store_and_index": "LocalStore (local disk), LanceDB embedded",
        "end_to_end": {
            "wall_s": round(wall, 2),
            "images_per_s": round(n / wall, 3),
            "process_cpu_s_per_image": round(cpu / n, 4),
            "cpu_utilisation": round(cpu / wall, 2),
        },
        "split_per_image": per_image,
        "split_note": (
            "decode = fetch + decode + preprocess in the decode threads, overlapping encode (the runner "
            "prefetches the next batch); encode, write and load run one after another on the main "
            "thread. wall_ms is each stage's wall time summed over calls, per image."
        ),
        "main_thread_share": {
            name: round(stages[name].wall / wall, 3) for name in ("encode", "write", "load")
        },
        "other_s": round(wall - accounted, 2),
        "bare_image_tower_images_per_s": round(bare, 3),
        "end_to_end_over_bare": round((n / wall) / bare, 3),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        **environment(),
    }
    emit("bench_ingest", result)


if __name__ == "__main__":
    main()
