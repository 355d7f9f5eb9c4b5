"""Near-duplicate detection: pair precision and recall on a corpus with known copies, and the
self-join's time as the collection grows.

Quality. The synthetic image corpus plus near-duplicate copies made by the corpus generator
(`generate_near_duplicates`: re-encoded as JPEG quality 40, resized to half, cropped to 85%), and the
video corpus with its re-encoded copies, are ingested with a CLIP and `find_duplicates` runs at
several thresholds. A predicted pair is two documents in the same cluster (what a user is shown;
union-find chains through intermediate documents), and `direct_pairs` counts only the pairs the
join found at or above the threshold; the truth pairs are (source, copy). Also reported: the cosine of each copy to its source and of unrelated pairs, which
says why the curve looks as it does.

Scale. Random clustered unit vectors (bench_knn's Gaussian mixture) with planted near-copies (5% of
the documents, noise of norm 0.05: cosine ~0.999) in LanceDB, built as the loader builds it. The
self-join makes one k-NN query per document; the exact all-pairs alternative (blocked matrix
products, n^2/2 comparisons) is timed beside it on the same vectors.

    python bench/bench_duplicates.py                       # random ViT-B/32, 120 images; 25k and 50k vectors
    python bench/bench_duplicates.py --model PATH          # a trained checkpoint instead
    python bench/bench_duplicates.py --sizes 25000 50000 100000
    python bench/bench_duplicates.py --tiny                # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import emit, environment, loadavg, log
from bench_knn import documents, mixture, unit

from mediasearch.core.records import DocKind, DuplicatesResponse
from mediasearch.core.storage import LocalStore
from mediasearch.index import lancedb as lancedb_module
from mediasearch.index.base import IndexFilter, IndexSpec
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.query.duplicates import find_duplicates, self_join

THRESHOLDS = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995)


def pairs_of(response: DuplicatesResponse) -> set[tuple[str, str]]:
    """Every two members of a cluster: what a user shown the cluster takes for copies."""
    out: set[tuple[str, str]] = set()
    for cluster in response.clusters:
        ids = sorted(m.id for m in cluster.members)
        out.update(itertools.combinations(ids, 2))
    return out


def linked_pairs(response: DuplicatesResponse) -> set[tuple[str, str]]:
    """Only the pairs the self-join found at or above the threshold (no chaining through others)."""
    return {(p.a, p.b) if p.a < p.b else (p.b, p.a) for c in response.clusters for p in c.pairs}


def scores(predicted: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict[str, float]:
    hit = len(predicted & truth)
    precision = hit / len(predicted) if predicted else 1.0
    recall = hit / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "predicted_pairs": len(predicted),
    }


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from mediasearch.core.records import stable_id
    from mediasearch.corpus.images import generate_images, generate_near_duplicates
    from mediasearch.corpus.videos import trim, write_corpus
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.pipeline import ingest
    from mediasearch.indexing.video import VideoOptions
    from mediasearch.models.clip import ClipModel
    from mediasearch.models.random_init import build_random_clip

    with tempfile.TemporaryDirectory(prefix="bench-dups-") as tmp:
        root = Path(tmp)
        model_path = args.model or str(build_random_clip(root / "clip", size=args.random_size))
        store = LocalStore(root / "media")
        labels = generate_images(store, "images", limit=args.images)
        copies = generate_near_duplicates(store, labels, "copies", every=args.every)
        truths = write_corpus(store, "videos") if args.videos else {}
        trimmed: dict[str, str] = {}
        if args.videos:
            # A copy that overlaps its source rather than repeating it: cuts_b from its second scene on.
            source = "videos/cuts_b.mp4"
            trimmed["videos/dups/cuts_b_trimmed.mp4"] = source
            store.put("videos/dups/cuts_b_trimmed.mp4", trim(store.get(source), "cuts_b_trimmed.mp4", 1.2))
        index = LanceDBIndex(str(root / "lancedb"), "media")
        model = ClipModel(model_path, device="cpu", batch_size=32).load()
        log(f"ingesting {len(labels)} images, {len(copies)} copies, {len(truths)} videos with {model_path}")
        started = time.perf_counter()
        report = ingest(
            store, index, ClipHandler(model), video_options=VideoOptions(max_scene_s=3.0), progress=False
        )
        ingest_s = time.perf_counter() - started
        failed = [f.uri for f in report.failures]

        # Cosines straight from the vectors, to show what separates copies from other pictures.
        image_docs = index.get_many_with_vectors(
            d.id for d in index.scan(IndexFilter(kinds=(DocKind.IMAGE,)))
        )
        ids = [d.id for d in image_docs]
        where = {i: n for n, i in enumerate(ids)}
        vectors = np.stack([d.clip_vector for d in image_docs])
        sims = vectors @ vectors.T
        truth = {tuple(sorted((c.source_id, c.id))) for c in copies}
        copy_cos: dict[str, list[float]] = {}
        for c in copies:
            copy_cos.setdefault(c.edit, []).append(float(sims[where[c.source_id], where[c.id]]))
        mask = np.triu(np.ones_like(sims, dtype=bool), 1)
        for a, b in truth:
            mask[min(where[a], where[b]), max(where[a], where[b])] = False
        unrelated = sims[mask]

        images: list[dict[str, Any]] = []
        for threshold in THRESHOLDS:
            found = find_duplicates(index, DocKind.IMAGE, threshold, neighbours=10, limit=1000)
            predicted = pairs_of(found)
            by_edit = {
                edit: round(
                    sum(tuple(sorted((c.source_id, c.id))) in predicted for c in copies if c.edit == edit)
                    / max(1, sum(c.edit == edit for c in copies)),
                    4,
                )
                for edit in sorted(copy_cos)
            }
            images.append(
                {
                    "threshold": threshold,
                    **scores(predicted, truth),
                    "recall_by_edit": by_edit,
                    "direct_pairs": scores(linked_pairs(found), truth),
                    "largest_cluster": max((c.size for c in found.clusters), default=0),
                    "took_ms": found.took_ms,
                }
            )
            log(f"images @ {threshold}: {images[-1]}")

        videos: list[dict[str, Any]] = []
        if truths:
            video_truth = {
                tuple(sorted((stable_id(store.uri(t.duplicate_of)), stable_id(store.uri(key)))))
                for key, t in truths.items()
                if t.duplicate_of
            } | {
                tuple(sorted((stable_id(store.uri(src)), stable_id(store.uri(dst)))))
                for dst, src in trimmed.items()
            }
            for threshold in THRESHOLDS:
                found = find_duplicates(index, DocKind.VIDEO, threshold, neighbours=10, limit=1000)
                scenes = find_duplicates(index, DocKind.SCENE, threshold, neighbours=10, limit=1000)
                # Scene clusters name the videos that overlap: the pairs of videos they link.
                linked = {
                    tuple(sorted(pair))
                    for c in scenes.clusters
                    for pair in itertools.combinations({m.video_id for m in c.members if m.video_id}, 2)
                }
                videos.append(
                    {
                        "threshold": threshold,
                        "whole_videos": scores(pairs_of(found), video_truth),
                        "whole_videos_direct_pairs": scores(linked_pairs(found), video_truth),
                        "overlapping_scenes_as_video_pairs": scores(linked, video_truth),
                    }
                )
                log(f"videos @ {threshold}: {videos[-1]}")

    best = max(images, key=lambda r: (r["f1"], r["threshold"]))
    return {
        "model": args.model or f"random-weight CLIP ({args.random_size}; the demo-offline model)",
        "images": len(labels),
        "copies": len(copies),
        "copies_by_edit": {e: len(v) for e, v in copy_cos.items()},
        "videos": len(truths) + len(trimmed),
        "video_copies": "re-encoded smaller (corpus default_duplicates) and one trimmed (cuts_b from 1.2 s)",
        "ingest_s": round(ingest_s, 1),
        "failed": failed,
        "cosine_copy_to_source": {
            e: {"min": round(min(v), 4), "median": round(float(np.median(v)), 4)} for e, v in copy_cos.items()
        },
        "cosine_unrelated_pairs": {
            "median": round(float(np.median(unrelated)), 4),
            "p99": round(float(np.percentile(unrelated, 99)), 4),
            "max": round(float(unrelated.max()), 4),
        },
        "image_pairs_by_threshold": images,
        "best_image_threshold_by_f1": best,
        "video_pairs_by_threshold": videos,
    }


def exact_pairs(data: np.ndarray, threshold: float, block: int = 4096) -> tuple[int, float]:
    """All pairs at or above `threshold` by blocked matrix products: n^2/2 comparisons."""
    started = time.perf_counter()
    found = 0
    for start in range(0, len(data), block):
        sims = data[start : start + block] @ data[start:].T
        rows, cols = np.nonzero(sims >= threshold)
        found += int(np.sum(cols > rows))  # each pair once, without the diagonal
    return found, time.perf_counter() - started


def scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        planted = max(1, n // 20)
        base, _ = mixture(n - planted, args.dim, max(10, n // 100), 0.9, rng)
        sources = rng.choice(len(base), size=planted, replace=False)
        copies = unit(base[sources] + rng.standard_normal((planted, args.dim)) * (0.05 / np.sqrt(args.dim)))
        data = np.concatenate([base, copies]).astype(np.float32)
        truth = {(f"v{int(s):07d}", f"v{len(base) + i:07d}") for i, s in enumerate(sources)}
        with tempfile.TemporaryDirectory(prefix="bench-dups-scale-") as tmp:
            index = LanceDBIndex(tmp, "bench")
            index.create(IndexSpec(clip_dim=args.dim))
            for start in range(0, n, 10_000):
                index.upsert(documents(data[start : start + 10_000], start))
            index.optimize()
            kinds = [ix.index_type for ix in index.table.list_indices()]
            log(f"{n} vectors loaded, indices {kinds}; self-join")
            started = time.perf_counter()
            join = self_join(index, DocKind.IMAGE, args.threshold, neighbours=10)
            join_s = time.perf_counter() - started
        found = set(join.pairs)
        exact_found, exact_s = exact_pairs(data, args.threshold)
        run = {
            "documents": n,
            "planted_pairs": len(truth),
            "vector_index": kinds,
            "self_join_s": round(join_s, 2),
            "self_join_ms_per_document": round(1000 * join_s / n, 3),
            "knn_calls": join.knn_calls,
            "pairs_found": len(found),
            "planted_recall": round(len(found & truth) / len(truth), 4),
            "exact_all_pairs_s": round(exact_s, 2),
            "exact_comparisons": n * (n - 1) // 2,
            "exact_pairs_found": exact_found,
        }
        log(f"scale {n}: {run}")
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a CLIP checkpoint directory (default: random ViT-B/32 weights)")
    parser.add_argument("--random-size", choices=["tiny", "base"], default="base")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--every", type=int, default=2, help="copy every n-th image")
    parser.add_argument("--no-videos", dest="videos", action="store_false")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.99, help="the scale runs' threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 24 images, 5k vectors: a smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.random_size, args.images, args.sizes, args.videos = "tiny", 24, [5000], False

    load_start = loadavg()
    result: dict[str, Any] = {"bench": "duplicates"}
    if not args.skip_quality:
        result["quality"] = quality(args)
    if args.skip_scale:
        args.sizes = []
    result["scale"] = {
        "data": f"{args.dim}-d Gaussian mixture (bench_knn) with 5% planted copies (noise norm 0.05)",
        "threshold": args.threshold,
        "neighbours": 10,
        "ann_min_rows": lancedb_module.ANN_MIN_ROWS,
        "runs": scale(args),
    }
    runs = result["scale"]["runs"]
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        result["scale"]["growth"] = {
            "documents_x": round(last["documents"] / first["documents"], 2),
            "self_join_time_x": round(last["self_join_s"] / first["self_join_s"], 2),
            "exact_time_x": round(last["exact_all_pairs_s"] / first["exact_all_pairs_s"], 2),
        }
    result.update({"loadavg_start": load_start, "loadavg_end": loadavg(), **environment()})
    emit("bench_duplicates", result)


if __name__ == "__main__":
    main()
