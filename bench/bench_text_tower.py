"""The multilingual query text tower's latency: PyTorch vs its ONNX export, beside CLIP's own text tower.

Random weights in the real shapes (nothing can be downloaded here): the tower is
clip-ViT-B-32-multilingual-v1's (DistilBERT multilingual, 119547 tokens, 768 wide, 6 layers, Dense to
512), CLIP is ViT-B/32's text tower on PyTorch. Measured: ms per single query (tokenising included, as
a query pays it), over Chinese, English and mixed queries; passes alternate between the engines
because other jobs share this machine, and the ratio is taken pass by pass. Also the export's
agreement with PyTorch (min cosine) and the time to build/export.

    python bench/bench_text_tower.py             # base shapes, 5 passes
    python bench/bench_text_tower.py --tiny      # tiny shapes, 1 pass: a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from _common import emit, environment, loadavg, log, percentiles_ms

from mediasearch.encoders.onnx_text_tower import OnnxTextTower
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip
from mediasearch.models.text_tower import TextTower, build_random_text_tower, export_text_tower

QUERIES = [
    "两个孩子在一栋房子前面奔跑",
    "two children running in front of a house",
    "一只狗在海滩上",
    "a dog on the beach at sunset",
    "孩子 house 狗",
    "people sitting at a table with food",
]


def time_queries(embed: Callable[[Sequence[str]], np.ndarray], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        for q in QUERIES:
            started = time.perf_counter()
            embed([q])
            samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="times each query is run per pass")
    args = parser.parse_args()
    passes = 1 if args.tiny else args.passes
    size = "tiny" if args.tiny else "base"
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        clip_dir = build_random_clip(root / "clip", size=size)
        clip = ClipModel(str(clip_dir), device="cpu").load()
        dim = clip.dim
        tower_dir = build_random_text_tower(root / "tower", out_dim=dim, size=size)
        log(f"built the models in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        export = export_text_tower(str(tower_dir), root / "export")
        export_s = time.perf_counter() - started
        log(f"exported the tower in {export_s:.1f} s")
        torch_tower = TextTower(str(tower_dir), device="cpu").load()
        onnx_tower = OnnxTextTower(str(export))
        agreement = float((torch_tower.embed(QUERIES) * onnx_tower.embed(QUERIES)).sum(axis=1).min())
        engines: dict[str, Callable[[Sequence[str]], np.ndarray]] = {
            "tower_torch": torch_tower.embed,
            "tower_onnx": onnx_tower.embed,
            "clip_text_torch": clip.embed_texts,
        }
        for embed in engines.values():  # first-run allocations out of the figures
            time_queries(embed, 1)
        per_pass: dict[str, list[float]] = {name: [] for name in engines}
        samples: dict[str, list[float]] = {name: [] for name in engines}
        for i in range(passes):
            for name, embed in engines.items():
                got = time_queries(embed, args.repeats)
                samples[name] += got
                per_pass[name].append(float(np.median(got)))
            log(f"pass {i + 1}: " + ", ".join(f"{n} {v[-1] * 1000:.1f} ms" for n, v in per_pass.items()))
    ratios = [t / o for t, o in zip(per_pass["tower_torch"], per_pass["tower_onnx"], strict=True)]
    vs_clip = [o / c for o, c in zip(per_pass["tower_onnx"], per_pass["clip_text_torch"], strict=True)]
    result = {
        "shapes": size,
        "dim": dim,
        "queries": QUERIES,
        "passes": passes,
        "single_query": {name: percentiles_ms(v) for name, v in samples.items()},
        "tower_torch_over_onnx_median_ratio": round(float(np.median(ratios)), 3),
        "tower_onnx_over_clip_text_torch_median_ratio": round(float(np.median(vs_clip)), 3),
        "onnx_vs_torch_min_cosine": round(agreement, 6),
        "export_seconds": round(export_s, 1),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "environment": environment(),
    }
    emit("text_tower" if not args.tiny else "text_tower_tiny", result)


if __name__ == "__main__":
    main()
