"""Caption generation throughput against CLIP image-embedding throughput, in the same run.

Both models have random weights in the real shapes: the captioner ViT-GPT2's (ViT-B/16 at 224 +
GPT2-small with cross-attention, 50257-token head), CLIP ViT-B/32's image tower. Weights do not
change the compute, with one exception: a random decoder may emit EOS at once or never, so every
caption is forced to the same length (min_new_tokens = max_new_tokens, greedy). The real model's
captions are ~10-12 tokens, so at --max-length 24 the figure is a floor for it, not an estimate.

Inputs are preprocessed once (timed separately); the model passes alternate between the two
models so a burst of load from other users of the machine hits both alike, and each figure uses
the best pass, the least disturbed one (the median is reported too).

    python bench/bench_captioning.py                  # 64 images, batch 16, 24 tokens, 2 passes
    python bench/bench_captioning.py --tiny           # tiny models, seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Nothing can be downloaded where this runs; fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from PIL import Image

from mediasearch.models.captioner import CaptionModel
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_captioner, build_random_clip

RESULTS = Path(__file__).resolve().parent / "results" / "bench_captioning.json"
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    # Camera-frame sized, so resizing costs what it would on real frames; content does not matter.
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]


def preprocess_all(
    preprocess: Callable[[Image.Image], np.ndarray], images: list[Image.Image]
) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    pixels = np.stack([preprocess(im) for im in images])
    return pixels, time.perf_counter() - t0


def params_m(model: Any) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def figures(n: int, passes_s: list[float]) -> dict[str, Any]:
    best = min(passes_s)
    return {
        "images_per_s": round(n / best, 2),
        "ms_per_image": round(1000 * best / n, 1),
        "images_per_s_median": round(n / statistics.median(passes_s), 2),
        "passes_s": [round(s, 3) for s in passes_s],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=24, help="generated tokens per caption")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny models: checks that the bench runs")
    args = parser.parse_args()
    size = "tiny" if args.tiny else "base"

    with tempfile.TemporaryDirectory(prefix="bench-captioning-") as tmp:
        log(f"building random {size} captioner and CLIP")
        cap_dir = build_random_captioner(Path(tmp) / "captioner", size=size)
        clip_dir = build_random_clip(Path(tmp) / "clip", size=size)
        captioner = CaptionModel(
            str(cap_dir),
            device=args.device,
            batch_size=args.batch_size,
            max_length=args.max_length,
            num_beams=1,
            min_new_tokens=args.max_length,
        ).load()
        clip = ClipModel(str(clip_dir), device=args.device, batch_size=args.batch_size).load()
        assert captioner.placement is not None

        images = make_images(args.images)
        cap_pixels, cap_pre_s = preprocess_all(captioner.preprocess, images)
        clip_pixels, clip_pre_s = preprocess_all(clip.preprocess, images)
        log(f"preprocessed {len(images)} images: captioner {cap_pre_s:.2f}s, clip {clip_pre_s:.2f}s")

        # Warm-up: first calls pay for allocator growth and kernel selection.
        captioner.caption_pixels(cap_pixels[: args.batch_size])
        clip.embed_pixels(clip_pixels[: args.batch_size])
        # The forced length is what makes the figure fair; check it held, outside the timing.
        ids = captioner.generate_ids(cap_pixels[: args.batch_size])[0]
        generated = ids.shape[1] - 1  # the decoder start token is not generated
        if generated != args.max_length:
            raise SystemExit(f"expected {args.max_length} generated tokens per caption, got {generated}")

        cap_s: list[float] = []
        clip_s: list[float] = []
        for i in range(args.passes):
            t0 = time.perf_counter()
            clip.embed_pixels(clip_pixels)
            clip_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            captions = captioner.caption_pixels(cap_pixels)
            cap_s.append(time.perf_counter() - t0)
            assert len(captions) == len(images)
            log(f"pass {i + 1}/{args.passes}: clip {clip_s[-1]:.2f}s, captioner {cap_s[-1]:.2f}s")

        n = len(images)
        cap = figures(n, cap_s)
        cap["tokens_per_s"] = round(n * args.max_length / min(cap_s), 1)
        result = {
            "bench": "captioning",
            "what": "caption generation vs CLIP image embedding throughput, random weights in real shapes",
            "size": size,
            "images": n,
            "batch_size": args.batch_size,
            "device": str(captioner.placement.device),
            "dtype": str(captioner.placement.dtype).removeprefix("torch."),
            "captioner": {
                "shapes": "ViT-B/16-224 encoder + GPT2-small decoder (nlpconnect/vit-gpt2-image-captioning)"
                if size == "base"
                else "tiny",
                "params_m": params_m(captioner.model),
                "decoding": "greedy (num_beams=1)",
                "generated_tokens_per_caption": args.max_length,
                "forced_length": True,
                "forced_length_why": "min_new_tokens = max_new_tokens: random weights may emit EOS at "
                "once or never; real ViT-GPT2 captions stop at ~10-12 tokens, so this is a floor",
                **cap,
                "preprocess_images_per_s": round(n / cap_pre_s, 1),
            },
            "clip": {
                "shapes": "CLIP ViT-B/32 image tower (openai/clip-vit-base-patch32)"
                if size == "base"
                else "tiny",
                "params_m": params_m(clip.model.vision_model) + params_m(clip.model.visual_projection),
                **figures(n, clip_s),
                "preprocess_images_per_s": round(n / clip_pre_s, 1),
            },
            "captioning_slowdown_vs_clip": round(min(cap_s) / min(clip_s), 1),
            "passes": args.passes,
            "environment": {
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                # Other people share this machine; a run taken under load compares only to one under load.
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
        }
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if not args.tiny:  # a smoke run must not overwrite the recorded figures
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n")
        log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
