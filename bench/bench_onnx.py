"""CLIP towers on ONNX Runtime (fp32, int8) against PyTorch eager, side by side in one run, on this CPU.

ViT-B/32 shapes with random weights (nothing can be downloaded here): the compute is the real model's,
the embeddings are noise. Measured:

- image tower: images/s at batch 32 (`embed_pixels` on preprocessed pixels: the forward pass alone);
- text tower: ms per single query, p50 (`embed_texts([q])`: tokenising included, as a query pays it);
- agreement over the sample corpus (360 images, `mediasearch demo-data`'s) and its eval queries: min
  and mean cosine of each backend against PyTorch (fp32) and against ONNX fp32 (int8), and the top-10
  overlap of each query's ranking with fp32's. Random weights make rankings near-ties, so that overlap
  understates what trained weights would give; it is reported as measured.
- int8 twice: the export's weight scales (per-channel) and the other choice (per-tensor), to compare.

Passes alternate between the backends (torch, fp32, int8, the other int8, then again), because other
people's jobs share this machine and its load swings; per-backend figures are the median over passes,
and the ratios are taken pass by pass.

    python bench/bench_onnx.py            # base shapes, 5 passes
    python bench/bench_onnx.py --tiny     # tiny model, 1 pass: a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from _common import emit, environment, loadavg, log, percentiles_ms

from mediasearch.core.images import decode_image
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.encoders.onnx_cache import read_meta
from mediasearch.encoders.onnx_clip import OnnxClipModel, cpu_threads
from mediasearch.eval.metrics import queries_from_labels
from mediasearch.models.clip import ClipModel
from mediasearch.models.onnx_export import INT8_OP_TYPES, PER_CHANNEL, export_clip, quantise
from mediasearch.models.random_init import build_random_clip


class Encoder(Protocol):
    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray: ...
    def embed_images(self, images: Any) -> np.ndarray: ...
    def embed_texts(self, texts: Any) -> np.ndarray: ...
    def preprocess(self, image: Any) -> np.ndarray: ...


def requantised_copy(folder: Path, dest: Path, per_channel: bool) -> Path:
    """The export with its int8 graphs quantised again, with the other choice of weight scales."""
    shutil.copytree(folder, dest)
    meta = read_meta(dest)
    for tower in ("image", "text"):
        fp32, int8 = dest / meta["files"]["fp32"][tower], dest / meta["files"]["int8"][tower]
        quantise(fp32, int8, per_channel=per_channel, op_types=INT8_OP_TYPES)
    meta["quantisation"]["per_channel"] = per_channel
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))
    return dest


def image_rate(model: Encoder, pixels: np.ndarray, reps: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) over `reps` batches."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        model.embed_pixels(pixels)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = reps * len(pixels)
    return n / wall, 1000 * cpu / n


def text_times(model: Encoder, queries: list[str]) -> list[float]:
    out: list[float] = []
    for q in queries:
        started = time.perf_counter()
        model.embed_texts([q])
        out.append(time.perf_counter() - started)
    return out


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ corpus.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [len(set(x) & set(y)) / a.shape[1] for x, y in zip(a.tolist(), b.tolist(), strict=True)]


def cos_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["base", "tiny"], default="base", help="random model shapes")
    parser.add_argument("--batch", type=int, default=32, help="image batch size")
    parser.add_argument("--passes", type=int, default=5, help="timed passes of each backend, interleaved")
    parser.add_argument("--reps", type=int, default=2, help="image batches per pass")
    parser.add_argument("--queries", type=int, default=30, help="single text queries per pass")
    parser.add_argument("--images", type=int, default=None, help="corpus images for agreement (default 360)")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 1 pass, 60 images: a smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.size, args.passes, args.images = "tiny", 1, 60

    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp_name:
        tmp = Path(tmp_name)
        log(f"building a random {args.size} CLIP")
        model_dir = build_random_clip(tmp / "model", size=args.size)
        log("exporting to ONNX (fp32 + int8)")
        started = time.perf_counter()
        folder = export_clip(str(model_dir), cache_dir=tmp / "onnx")
        export_s = time.perf_counter() - started
        meta = read_meta(folder)
        log(f"exported in {export_s:.1f}s; agreement at export: {meta['agreement']}")
        alt_scales = "per_tensor" if PER_CHANNEL else "per_channel"
        alt_name = f"ort_int8_{alt_scales}"
        log(f"re-quantising int8 with {alt_scales} scales, to compare")
        started = time.perf_counter()
        alt_folder = requantised_copy(folder, tmp / f"onnx-{alt_scales}", per_channel=not PER_CHANNEL)
        alt_quant_s = time.perf_counter() - started

        models: dict[str, Encoder] = {
            "torch_eager": ClipModel(str(model_dir), device="cpu", batch_size=args.batch).load(),
            "ort_fp32": OnnxClipModel(str(folder), device="cpu", batch_size=args.batch).load(),
            "ort_int8": OnnxClipModel(
                str(folder), device="cpu", batch_size=args.batch, precision="int8"
            ).load(),
            alt_name: OnnxClipModel(
                str(alt_folder), device="cpu", batch_size=args.batch, precision="int8"
            ).load(),
        }

        log("generating the sample corpus")
        store = LocalStore(tmp / "store")
        labels = generate_images(store, "demo/images", seed=0, limit=args.images)
        pil_images = [decode_image(store.get(label.key)) for label in labels]
        eval_queries = queries_from_labels(labels)
        query_texts = [q.text for q in eval_queries]

        torch_model = models["torch_eager"]
        pixels = np.stack([torch_model.preprocess(im) for im in pil_images[: args.batch]])
        timing_queries = (query_texts * (args.queries // max(len(query_texts), 1) + 1))[: args.queries]

        log("warming up")
        for model in models.values():
            model.embed_pixels(pixels)
            text_times(model, timing_queries[:3])

        rates: dict[str, list[float]] = {name: [] for name in models}
        cpu_ms: dict[str, list[float]] = {name: [] for name in models}
        text_s: dict[str, list[float]] = {name: [] for name in models}
        text_p50: dict[str, list[float]] = {name: [] for name in models}
        for p in range(args.passes):
            for name, model in models.items():
                rate, cpu = image_rate(model, pixels, args.reps)
                rates[name].append(rate)
                cpu_ms[name].append(cpu)
                times = text_times(model, timing_queries)
                text_s[name].extend(times)
                text_p50[name].append(float(np.median(times)) * 1000)
            log(
                f"pass {p + 1}: "
                + ", ".join(f"{n} {rates[n][-1]:.1f} img/s {text_p50[n][-1]:.1f} ms" for n in models)
                + f"; load {loadavg()[0]}"
            )

        log(f"agreement over {len(pil_images)} images and {len(query_texts)} eval queries")
        image_vecs = {name: model.embed_images(pil_images) for name, model in models.items()}
        text_vecs = {name: model.embed_texts(query_texts) for name, model in models.items()}
        sizes_mb = {
            name: {
                tower: round((sub / meta["files"][precision][tower]).stat().st_size / 1e6, 1)
                for tower in ("image", "text")
            }
            for name, sub, precision in (
                ("ort_fp32", folder, "fp32"),
                ("ort_int8", folder, "int8"),
                (alt_name, alt_folder, "int8"),
            )
        }

    k = 10
    tops = {name: top_k(text_vecs[name], image_vecs[name], k) for name in models}
    fp32_index = image_vecs["ort_fp32"]

    def agreement(name: str, ref: str) -> dict[str, Any]:
        mixed = overlap(top_k(text_vecs[name], fp32_index, k), tops[ref])
        same = overlap(tops[name], tops[ref])
        scores, ref_scores = text_vecs[name] @ image_vecs[name].T, text_vecs[ref] @ image_vecs[ref].T
        ranked = -np.sort(-ref_scores, axis=1)
        return {
            # Why the overlap is what it is: how far apart the 10th and 11th scores are, against how far
            # this backend moves a score. With random weights the gap is the smaller of the two.
            "score_gap_10th_11th_median": float(f"{np.median(ranked[:, k - 1] - ranked[:, k]):.3g}"),
            "score_abs_change_median": float(f"{np.median(np.abs(scores - ref_scores)):.3g}"),
            "image_cosine": cos_stats(image_vecs[name], image_vecs[ref]),
            "text_cosine": cos_stats(text_vecs[name], text_vecs[ref]),
            f"top{k}_overlap_mean": round(float(np.mean(same)), 4),
            f"top{k}_overlap_min": round(float(np.min(same)), 4),
            f"top{k}_overlap_mean_queries_only": round(float(np.mean(mixed)), 4),
        }

    def median(xs: list[float]) -> float:
        return float(np.median(xs))

    backends: dict[str, Any] = {}
    for name in models:
        backends[name] = {
            "image_images_per_s": round(median(rates[name]), 2),
            "image_images_per_s_best": round(max(rates[name]), 2),
            "image_images_per_s_each_pass": [round(r, 2) for r in rates[name]],
            "image_cpu_ms_per_image": round(min(cpu_ms[name]), 2),
            "text_ms_per_query": percentiles_ms(text_s[name]),
            "text_p50_ms_each_pass": [round(t, 3) for t in text_p50[name]],
        }
        if name != "torch_eager":
            torch_rates, torch_text = rates["torch_eager"], text_p50["torch_eager"]
            backends[name]["image_speedup_vs_torch"] = round(
                median([r / t for r, t in zip(rates[name], torch_rates, strict=True)]), 3
            )
            backends[name]["text_speedup_vs_torch"] = round(
                median([t / r for r, t in zip(text_p50[name], torch_text, strict=True)]), 3
            )
            backends[name]["vs_torch"] = agreement(name, "torch_eager")
        if name.startswith("ort_int8"):
            backends[name]["vs_ort_fp32"] = agreement(name, "ort_fp32")
        if name in sizes_mb:
            backends[name]["model_mb"] = sizes_mb[name]
    fp32 = backends["ort_fp32"]["vs_torch"]
    result = {
        "bench": "onnx",
        "model": f"random-init CLIP, {args.size} shapes" + (" (ViT-B/32)" if args.size == "base" else ""),
        "batch_size": args.batch,
        "passes": args.passes,
        "image_batches_per_pass": args.reps,
        "text_queries_per_pass": args.queries,
        "corpus_images": len(pil_images),
        "eval_queries": len(query_texts),
        "ort_threads": cpu_threads(),
        "export_seconds": round(export_s, 2),
        "int8_weight_scales": "per_channel" if PER_CHANNEL else "per_tensor",
        f"{alt_name}_quantise_seconds": round(alt_quant_s, 2),
        "export_agreement": meta["agreement"],
        "backends": backends,
        "fp32_agrees": min(fp32["image_cosine"]["min"], fp32["text_cosine"]["min"]) >= 0.9999,
        "int8_default_rule": "int8 becomes the default only with top-10 overlap >= 0.95 vs fp32",
        "int8_top10_overlap": backends["ort_int8"]["vs_ort_fp32"][f"top{k}_overlap_mean"],
        "note": (
            "random weights: rankings are near-ties, so top-10 overlap understates trained weights; "
            "figures per backend are medians over interleaved passes, speedups are per-pass ratios"
        ),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        **environment(),
    }
    emit("bench_onnx", result)


if __name__ == "__main__":
    main()
