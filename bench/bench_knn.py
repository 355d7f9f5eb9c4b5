"""k-NN latency and recall@k at 100k x 512 (or --rows): the index's mechanism against faiss and exact search.

The vectors are a Gaussian mixture on the unit sphere, not uniform noise: uniform random vectors in
512-d are all nearly orthogonal, have no neighbourhood structure and make every ANN index look bad
(or, with a loose definition of recall, good) for reasons that say nothing about real embeddings.
Here clusters of varied size sit around a shared mean direction, as CLIP embeddings do, and queries
are data points perturbed a little, like a near-duplicate or a paraphrase.

The index is built the way the loader builds it: `upsert` in chunks, then `optimize()` (which builds
LanceDB's indices and the HNSW graph beside the table, mediasearch.index.ann). Latency is
`LanceDBIndex.knn` end to end (query, documents), one query at a time, unfiltered and with each filter
type: kind, tags, uri_prefix, video_id (a different video per query, so never a cached filter) and
min_width, each against the exact top-k of the rows that filter allows. In the same run, on the same
data: faiss HNSW (M=16, efSearch 64; filtered through an IDSelectorBitmap; and, per filter, at the
smallest efSearch that reaches recall@10 0.95, the reference the target's "3x" is read against) and
exact NumPy search, as references, and LanceDB's own search (the fallback path) for comparison.

    python bench/bench_knn.py                  # 100k vectors, 200 queries
    python bench/bench_knn.py --rows 1000000   # the 1M target: p50 <= 10 ms, recall@10 >= 0.95
    python bench/bench_knn.py --tiny           # a few seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from _common import emit, environment, loadavg, log, percentiles_ms

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index import lancedb as lancedb_module
from mediasearch.index.base import IndexFilter, IndexSpec
from mediasearch.index.lancedb import LanceDBIndex

TARGET_RECALL = 0.95
TARGET_P50_MS = 10.0
# faiss's efSearch values tried, per filter, for the reference that reaches the target recall.
EF_LADDER = (64, 128, 256, 512, 1024, 2048)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def mixture(
    rows: int, dim: int, clusters: int, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float]]:
    """Unit vectors from a Gaussian mixture; returns them and a few facts that describe them."""
    shared = unit(rng.standard_normal(dim))
    # Centres lean towards one shared direction, so unrelated items are not orthogonal (CLIP's aren't).
    centres = unit(0.6 * shared + unit(rng.standard_normal((clusters, dim))))
    # Log-normal cluster sizes: a few big topics and a long tail, rather than equal-sized blobs.
    weights = rng.lognormal(0.0, 1.0, clusters)
    labels = rng.choice(clusters, size=rows, p=weights / weights.sum())
    noise = rng.standard_normal((rows, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    data = unit(centres[labels] + noise)
    sample = data[rng.choice(rows, size=min(rows, 2000), replace=False)]
    sims = sample @ sample.T
    off_diag = sims[~np.eye(len(sample), dtype=bool)]
    same = labels[:2000] == labels[:2000, None]
    first = data[:2000]
    same_cluster = (first @ first.T)[same & ~np.eye(len(first), dtype=bool)]
    facts = {
        "mean_cosine_random_pairs": round(float(off_diag.mean()), 3),
        "mean_cosine_same_cluster": round(float(same_cluster.mean()), 3) if same_cluster.size else None,
    }
    return data, facts


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ data.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


# Metadata, drawn independently of the vectors, so each filter allows a known share of rows.
FOLDERS = 20  # uri_prefix: one folder, ~5%
TAG_RATES = {"outdoor": 0.2, "people": 0.1, "night": 0.02}  # tags
SCENE_SHARE = 0.3  # kind: scenes, ~30%
SCENES_PER_VIDEO = 40  # video_id: one video's scenes, ~0.01% at 100k


def metadata(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    scene = rng.random(rows) < SCENE_SHARE
    tags = {name: rng.random(rows) < rate for name, rate in TAG_RATES.items()}
    return {
        "scene": scene,
        "folder": rng.integers(0, FOLDERS, rows),
        "video": np.where(scene, rng.integers(0, max(1, int(scene.sum()) // SCENES_PER_VIDEO), rows), -1),
        "width": rng.integers(200, 4000, rows),
        **{f"tag_{name}": has for name, has in tags.items()},
    }


def documents(data: np.ndarray, start: int, meta: dict[str, np.ndarray]) -> list[IndexDocument]:
    # model_construct skips validation: these vectors are known to be finite float32 of the right size,
    # and validating 100k documents would time pydantic rather than the index.
    docs = []
    for i, vec in enumerate(data):
        row = start + i
        scene = bool(meta["scene"][row])
        docs.append(
            IndexDocument.model_construct(
                id=f"v{row:07d}",
                kind=DocKind.SCENE if scene else DocKind.IMAGE,
                uri=f"s3://bench/f{int(meta['folder'][row]):02d}/{row:07d}.{'mp4' if scene else 'jpg'}",
                video_id=f"video{int(meta['video'][row]):05d}" if scene else None,
                scene=0 if scene else None,
                tags=[name for name in TAG_RATES if meta[f"tag_{name}"][row]],
                width=int(meta["width"][row]),
                height=720,
                clip_vector=vec,
            )
        )
    return docs


def filters(meta: dict[str, np.ndarray], rng: np.random.Generator, queries: int) -> dict[str, Any]:
    """Each filter type: (a filter per query, the rows each allows)."""
    videos = np.unique(meta["video"][meta["video"] >= 0])
    picked = rng.choice(videos, size=queries)
    return {
        "kind": ([IndexFilter(kinds=(DocKind.SCENE,))] * queries, [meta["scene"]] * queries),
        "tags": ([IndexFilter(tags=("people",))] * queries, [meta["tag_people"]] * queries),
        "uri_prefix": (
            [IndexFilter(uri_prefix="s3://bench/f07/")] * queries,
            [meta["folder"] == 7] * queries,
        ),
        "video_id": (
            [IndexFilter(video_id=f"video{int(v):05d}") for v in picked],
            [meta["video"] == v for v in picked],
        ),
        "min_width": ([IndexFilter(min_width=1000)] * queries, [meta["width"] >= 1000] * queries),
    }


def exact_filtered(data: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    sims = data[rows] @ query
    return rows[np.argsort(-sims)[:k]]


def timed(
    search: Callable[[np.ndarray, int, Any], list[int]],
    queries: np.ndarray,
    k: int,
    flts: list[Any],
    warmup: int,
) -> tuple[list[float], list[list[int]], float]:
    """Latencies, found rows and the first query's latency (cold: nothing cached for its filter)."""
    started = time.perf_counter()
    search(queries[0], k, flts[0])
    cold = time.perf_counter() - started
    for q, f in zip(queries[:warmup], flts[:warmup], strict=True):
        search(q, k, f)
    latencies: list[float] = []
    found: list[list[int]] = []
    for q, f in zip(queries, flts, strict=True):
        started = time.perf_counter()
        rows = search(q, k, f)
        latencies.append(time.perf_counter() - started)
        found.append(rows)
    return latencies, found, cold


def recall_at_k(found: list[list[int]], truth: list[np.ndarray], k: int) -> float:
    scores = []
    for f, t in zip(found, truth, strict=True):
        want = set(t[:k].tolist())
        scores.append(len(set(f[:k]) & want) / len(want) if want else 1.0)
    return float(np.mean(scores))


def stats(latencies: list[float], found: list[list[int]], truth: list[np.ndarray], k: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(percentiles_ms(latencies))
    out["p95_ms"] = round(float(np.percentile(np.asarray(latencies) * 1000.0, 95)), 3)
    out[f"recall_at_{k}"] = round(recall_at_k(found, truth, k), 4)
    return out


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000, help="mixture components")
    parser.add_argument("--spread", type=float, default=0.9, help="noise norm around a cluster centre")
    parser.add_argument("--query-noise", type=float, default=0.3, help="noise norm added to a query's point")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=10_000, help="documents per upsert")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="25k vectors, 50 queries: a smoke run")
    parser.add_argument(
        "--skip-faiss", action="store_true", help="no faiss reference (its build doubles a 1M run's time)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.queries, args.clusters, args.chunk, args.warmup = 25_000, 50, 50, 5000, 5
    name = "bench_knn" if args.rows == 100_000 else f"bench_knn_{args.rows}"

    load_start = loadavg()
    rng = np.random.default_rng(args.seed)
    log(f"generating {args.rows} x {args.dim} vectors")
    data, facts = mixture(args.rows, args.dim, args.clusters, args.spread, rng)
    meta = metadata(args.rows, rng)
    picks = rng.choice(args.rows, size=args.queries, replace=False)
    queries = unit(
        data[picks] + rng.standard_normal((args.queries, args.dim)) * (args.query_noise / np.sqrt(args.dim))
    )
    cases: dict[str, Any] = {"unfiltered": ([None] * args.queries, [None] * args.queries)}
    cases.update(filters(meta, rng, args.queries))
    truth: dict[str, list[np.ndarray]] = {"unfiltered": list(exact_top_k(data, queries, args.k))}
    for case, (_, allowed) in cases.items():
        if case != "unfiltered":
            truth[case] = [exact_filtered(data, q, a, args.k) for q, a in zip(queries, allowed, strict=True)]
    share = {
        case: round(float(np.mean(allowed[0])), 5)
        for case, (_, allowed) in cases.items()
        if case != "unfiltered"
    }
    rss_data = rss_mb()

    runs: dict[str, Any] = {}
    references: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-knn-") as tmp:
        index = LanceDBIndex(tmp, "bench")
        index.create(IndexSpec(clip_dim=args.dim))
        log(f"upserting in chunks of {args.chunk}")
        started = time.perf_counter()
        upsert_s: list[float] = []
        for start in range(0, args.rows, args.chunk):
            docs = documents(data[start : start + args.chunk], start, meta)
            t0 = time.perf_counter()
            index.upsert(docs)
            upsert_s.append(time.perf_counter() - t0)
        load_s = time.perf_counter() - started
        rss_loaded = rss_mb()
        log(f"loaded {index.count()} rows in {load_s:.1f}s; optimize()")

        graph_s: list[float] = []
        maintain = lancedb_module.ann.maintain

        def timed_maintain(*a: Any, **kw: Any) -> str:
            t0 = time.perf_counter()
            outcome = maintain(*a, **kw)
            graph_s.append(time.perf_counter() - t0)
            return outcome

        lancedb_module.ann.maintain = timed_maintain  # type: ignore[assignment]
        started = time.perf_counter()
        index.optimize()
        optimize_s = time.perf_counter() - started
        lancedb_module.ann.maintain = maintain  # type: ignore[assignment]
        rss_optimized = rss_mb()
        indices = [ix.index_type for ix in index.table.list_indices()]
        sidecar = lancedb_module.ann.sidecar_path(index.table.uri, "clip_vector")
        sidecar_mb = round(os.path.getsize(sidecar) / 2**20, 1) if sidecar and sidecar.exists() else None
        log(f"optimize took {optimize_s:.1f}s (graph {sum(graph_s):.1f}s); indices {indices}")

        def ours(q: np.ndarray, k: int, flt: Any) -> list[int]:
            return [int(h.document.id[1:]) for h in index.knn(q, k, flt)]

        started = time.perf_counter()
        index.knn(queries[0], args.k)
        reader_load_s = time.perf_counter() - started
        rss_reader = rss_mb()
        for case, (flts, _) in cases.items():
            latencies, found, cold = timed(ours, queries, args.k, flts, args.warmup)
            runs[case] = {
                **stats(latencies, found, truth[case], args.k),
                "cold_first_query_ms": round(cold * 1e3, 2),
            }
            log(f"ours {case}: p50 {runs[case]['p50_ms']} ms, recall {runs[case][f'recall_at_{args.k}']}")

        # LanceDB's own search on the same table: what answers when the graph cannot (the fallback).
        index._ann_knn = lambda *a, **kw: None  # type: ignore[method-assign]
        latencies, found, _ = timed(ours, queries[:50], args.k, [None] * 50, 5)
        references["lancedb_own_unfiltered"] = stats(latencies, found, truth["unfiltered"][:50], args.k)
        log(f"LanceDB own search: p50 {references['lancedb_own_unfiltered']['p50_ms']} ms")

    log("faiss HNSW reference (M=16, efSearch 64)" + (": skipped" if args.skip_faiss else ""))
    started = time.perf_counter()
    # faiss's defaults (efConstruction 40), L2 on the unit vectors: the same ranking as cosine.
    ref = faiss.IndexHNSWFlat(args.dim, 16)
    if not args.skip_faiss:
        ref.add(data)
    faiss_build_s = time.perf_counter() - started
    bitmaps: dict[int, Any] = {}

    def faiss_search(q: np.ndarray, k: int, allowed: np.ndarray | None, ef: int = 64) -> list[int]:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if allowed is not None:
            key = id(allowed)
            if key not in bitmaps:
                bits = np.packbits(allowed, bitorder="little")
                bitmaps[key] = (bits, faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)))
            params.sel = bitmaps[key][1]
        _, labels = ref.search(q.reshape(1, -1), k, params=params)
        return [int(i) for i in labels[0] if i >= 0]

    def numpy_search(q: np.ndarray, k: int, allowed: np.ndarray | None) -> list[int]:
        if allowed is None:
            return exact_top_k(data, q.reshape(1, -1), k)[0].tolist()
        return exact_filtered(data, q, allowed, k).tolist()

    for case, (_, allowed) in cases.items() if not args.skip_faiss else ():
        latencies, found, _ = timed(faiss_search, queries, args.k, allowed, args.warmup)
        references.setdefault("faiss_hnsw", {})[case] = stats(latencies, found, truth[case], args.k)
        runs[case]["ratio_p50_vs_faiss"] = round(
            runs[case]["p50_ms"] / references["faiss_hnsw"][case]["p50_ms"], 2
        )
        log(
            f"faiss {case}: p50 {references['faiss_hnsw'][case]['p50_ms']} ms; ours x{runs[case]['ratio_p50_vs_faiss']}"
        )
    # The target reads "within 3x of faiss HNSW at recall@10 >= 0.95": at efSearch 64 faiss misses that
    # recall on most filters (a bitmap leaves its beam short of allowed nodes), so the ratio that counts
    # is against faiss at the smallest efSearch on EF_LADDER that reaches it (the largest if none does).
    for case, (_, allowed) in cases.items() if not args.skip_faiss else ():
        for ef in EF_LADDER:
            latencies, found, _ = timed(
                lambda q, k, a, ef=ef: faiss_search(q, k, a, ef), queries, args.k, allowed, args.warmup
            )
            at = {"ef_search": ef, **stats(latencies, found, truth[case], args.k)}
            if at[f"recall_at_{args.k}"] >= TARGET_RECALL:
                break
        at["reached_target_recall"] = at[f"recall_at_{args.k}"] >= TARGET_RECALL
        references.setdefault("faiss_hnsw_at_target_recall", {})[case] = at
        runs[case]["ratio_p50_vs_faiss_at_target_recall"] = round(runs[case]["p50_ms"] / at["p50_ms"], 2)
        log(
            f"faiss {case} at recall >= {TARGET_RECALL}: efSearch {ef}, p50 {at['p50_ms']} ms, "
            f"recall {at[f'recall_at_{args.k}']}; ours x{runs[case]['ratio_p50_vs_faiss_at_target_recall']}"
        )
    latencies, found, _ = timed(numpy_search, queries[:50], args.k, [None] * 50, 5)
    references["exact_numpy_unfiltered"] = stats(latencies, found, truth["unfiltered"][:50], args.k)

    main_run = runs["unfiltered"]
    recall_key = f"recall_at_{args.k}"
    result = {
        "bench": "knn",
        "rows": args.rows,
        "dim": args.dim,
        "data": (
            f"Gaussian mixture on the unit sphere: {args.clusters} clusters with log-normal sizes around a "
            f"shared direction, noise norm {args.spread}; not uniform noise"
        ),
        **facts,
        "queries": args.queries,
        "query_kind": f"random data points plus Gaussian noise of norm {args.query_noise}, renormalised",
        "k": args.k,
        "filters": {case: str(flts[0]) for case, (flts, _) in cases.items() if case != "unfiltered"},
        "filter_share_of_rows": share,
        "index": {
            "mechanism": "faiss HNSW graph beside the LanceDB table (mediasearch.index.ann), LanceDB the store",
            "lancedb_indices": indices,
            "ann_min_rows": lancedb_module.ANN_MIN_ROWS,
            "hnsw_m": lancedb_module.ann.HNSW_M,
            "ef_construction": lancedb_module.ann.EF_CONSTRUCTION,
            "ef_search": lancedb_module.ann.EF_SEARCH,
            "sidecar_mb": sidecar_mb,
        },
        "load_s": round(load_s, 2),
        "upsert_chunk": args.chunk,
        "upsert_s_per_chunk_first_last": [round(upsert_s[0], 3), round(upsert_s[-1], 3)],
        "optimize_s": round(optimize_s, 2),
        "graph_build_s": round(sum(graph_s), 2),
        "reader_first_query_s": round(reader_load_s, 2),
        "rss_mb": {
            "data_and_truth": rss_data,
            "after_load": rss_loaded,
            "after_optimize_writer": rss_optimized,
            "after_reader_loaded": rss_reader,
            "peak": peak_rss_mb(),
            "note": "one process holds the bench's own copy of the vectors, the writer's and the reader's",
        },
        "knn": runs,
        "references": {**references, "faiss_build_s": round(faiss_build_s, 2)},
        "latency": (
            "LanceDBIndex.knn end to end (documents returned), sequential, after warm-up; the same filter "
            "repeats except video_id (a different video per query); cold_first_query_ms is a filter's first use"
        ),
        "target": f"recall@{args.k} >= {TARGET_RECALL}, p50 <= 3x faiss HNSW (and <= {TARGET_P50_MS} ms at 1M)",
        "target_met": all(r[recall_key] >= TARGET_RECALL for r in runs.values())
        and main_run["p50_ms"] <= TARGET_P50_MS,
        "within_3x_faiss": {
            case: r["ratio_p50_vs_faiss"] <= 3.0 for case, r in runs.items() if "ratio_p50_vs_faiss" in r
        },
        "within_3x_faiss_at_target_recall": {
            case: r["ratio_p50_vs_faiss_at_target_recall"] <= 3.0
            for case, r in runs.items()
            if "ratio_p50_vs_faiss_at_target_recall" in r
        },
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        **environment(),
    }
    emit(name, result)


if __name__ == "__main__":
    main()
