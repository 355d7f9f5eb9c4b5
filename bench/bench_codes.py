"""Binary codes: bits per vector, memory, recall@10 against exact float search, p50 latency.

The vectors are bench_knn.py's Gaussian mixture (imported, not copied) at 100k x 512 by default.
Three quantisers, each 1 bit per dimension (512 bits = 64 bytes, 32x below float32):

- `random`: a random rotation then the sign (mediasearch.index.codes),
- `itq`: the rotation learned by ITQ on a sample,
- `mean_threshold`: no rotation, each dimension thresholded at its mean: what OpenSearch 2.19's
  on_disk mode at 32x does (OneBitScalarQuantizer), so its recall for a given oversample_factor,
  with the plugin's first pass of max(100, k x factor) candidates, is estimated here too.

For each: recall@10 of the Hamming top 10 alone, and after an exact re-rank of k x oversample
Hamming candidates on the float vectors (numpy, flat). Then LanceDB end to end: the same table
searched through `LanceDBIndex.knn` with codes (Hamming over an IVF_FLAT index of the codes, then
the re-rank) and without (the float path), for p50 latency and recall.

    python bench/bench_codes.py                               # 100k, numpy + LanceDB
    python bench/bench_codes.py --rows 1000000 --no-lancedb   # 1M, numpy only
    python bench/bench_codes.py --tiny                        # a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import emit, environment, loadavg, log, percentiles_ms
from bench_knn import documents, exact_top_k, mixture, recall_at_k, unit

from mediasearch.index.base import IndexSpec
from mediasearch.index.codes import CodeMethod, CodesConfig, Rotation, hamming, quantisation_error
from mediasearch.index.lancedb import LanceDBIndex

OVERSAMPLES = (1, 5, 10, 20, 40)


def mean_threshold_codes(data: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thresholds = data.mean(axis=0)
    return np.packbits(data > thresholds, axis=1), np.packbits(queries > thresholds, axis=1)


def code_recalls(
    data: np.ndarray,
    codes: np.ndarray,
    qcodes: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    floor: int = 0,
) -> dict[str, float]:
    """recall@k of the Hamming top k, and after re-ranking max(floor, k x m) candidates exactly."""
    found_raw: list[list[int]] = []
    found: dict[int, list[list[int]]] = {m: [] for m in OVERSAMPLES}
    for qc, q in zip(qcodes, queries, strict=True):
        order = np.argsort(hamming(qc, codes), kind="stable")
        found_raw.append(order[:k].tolist())
        for m in OVERSAMPLES:
            cand = order[: max(floor, k * m)]
            found[m].append(cand[np.argsort(-(data[cand] @ q), kind="stable")[:k]].tolist())
    out = {"hamming_only": round(recall_at_k(found_raw, truth, k), 4)}
    out.update({f"rerank_x{m}": round(recall_at_k(found[m], truth, k), 4) for m in OVERSAMPLES})
    return out


def timed(
    index: LanceDBIndex, queries: np.ndarray, k: int, warmup: int
) -> tuple[dict[str, float], list[list[int]]]:
    for q in queries[:warmup]:
        index.knn(q, k)
    latencies, found = [], []
    for q in queries:
        started = time.perf_counter()
        hits = index.knn(q, k)
        latencies.append(time.perf_counter() - started)
        found.append([int(h.document.id[1:]) for h in hits])
    return percentiles_ms(latencies), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.9)
    parser.add_argument("--query-noise", type=float, default=0.3)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--oversample", type=int, default=20, help="LanceDB run: candidates per result")
    parser.add_argument("--method", choices=[m.value for m in CodeMethod], default="itq", help="LanceDB run")
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lancedb", action="store_true", help="numpy figures only (no table)")
    parser.add_argument("--tiny", action="store_true", help="5k vectors, 30 queries: a smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.queries, args.clusters, args.chunk, args.warmup = 5000, 30, 50, 1000, 3

    load_start = loadavg()
    rng = np.random.default_rng(args.seed)
    log(f"generating {args.rows} x {args.dim} vectors")
    data, facts = mixture(args.rows, args.dim, args.clusters, args.spread, rng)
    picks = rng.choice(args.rows, size=args.queries, replace=False)
    queries = unit(
        data[picks] + rng.standard_normal((args.queries, args.dim)) * (args.query_noise / np.sqrt(args.dim))
    )
    truth = exact_top_k(data, queries, args.k)

    float_bytes = args.dim * 4
    code_bytes = args.dim // 8
    quantisers: dict[str, dict[str, object]] = {}
    for method in CodeMethod:
        log(f"fitting {method.value}")
        started = time.perf_counter()
        rotation = Rotation.fit(data, method, seed=args.seed)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        codes = rotation.encode(data)
        encode_s = time.perf_counter() - started
        sample = data[: min(len(data), 10_000)] - rotation.mean
        started = time.perf_counter()
        recalls = code_recalls(data, codes, rotation.encode(queries), queries, truth, args.k)
        quantisers[method.value] = {
            "fit_s": round(fit_s, 2),
            "encode_us_per_vector": round(encode_s / len(data) * 1e6, 3),
            "quantisation_error": round(quantisation_error(sample, rotation.matrix), 4),
            "recall_at_k": recalls,
            "numpy_flat_query_ms": round((time.perf_counter() - started) / len(queries) * 1000, 2),
        }
        log(f"{method.value}: {quantisers[method.value]}")
    codes, qcodes = mean_threshold_codes(data, queries)
    quantisers["mean_threshold_opensearch_on_disk"] = {
        "recall_at_k": code_recalls(data, codes, qcodes, queries, truth, args.k, floor=100),
        "note": "first pass max(100, k x oversample) as RescoreContext.getFirstPassK",
    }
    log(f"mean threshold: {quantisers['mean_threshold_opensearch_on_disk']}")

    lancedb: dict[str, object] | None = None
    if not args.no_lancedb:
        config = CodesConfig(method=CodeMethod(args.method), oversample=args.oversample, seed=args.seed)
        with tempfile.TemporaryDirectory(prefix="bench-codes-") as tmp:
            index = LanceDBIndex(tmp, "bench", codes=config)
            index.create(IndexSpec(clip_dim=args.dim))
            log(f"upserting {args.rows} rows")
            for start in range(0, args.rows, args.chunk):
                index.upsert(documents(data[start : start + args.chunk], start))
            started = time.perf_counter()
            index.optimize()  # fits the rotation, codes every row, builds the IVF indices
            optimize_s = time.perf_counter() - started
            log(f"optimize (fit + code + indices) {optimize_s:.1f}s")
            coded, found_coded = timed(index, queries, args.k, args.warmup)
            plain = LanceDBIndex(tmp, "bench")  # the same table through the float path
            floats, found_floats = timed(plain, queries, args.k, args.warmup)
            lancedb = {
                "method": args.method,
                "oversample": args.oversample,
                "optimize_s": round(optimize_s, 1),
                "codes": {**coded, "recall_at_k": round(recall_at_k(found_coded, truth, args.k), 4)},
                "floats_ivf_flat": {
                    **floats,
                    "recall_at_k": round(recall_at_k(found_floats, truth, args.k), 4),
                },
            }
            log(f"lancedb: {lancedb}")

    emit(
        "codes" if args.rows == 100_000 else f"codes_{args.rows}",
        {
            "environment": environment(),
            "load_average_start": load_start,
            "load_average_end": loadavg(),
            "rows": args.rows,
            "dim": args.dim,
            "k": args.k,
            "queries": args.queries,
            "data": facts,
            "bits_per_vector": args.dim,
            "bytes_per_vector": {
                "float32": float_bytes,
                "code": code_bytes,
                "ratio": float_bytes // code_bytes,
            },
            "memory_mb": {
                "float32": round(args.rows * float_bytes / 2**20, 1),
                "codes": round(args.rows * code_bytes / 2**20, 1),
            },
            "quantisers": quantisers,
            "lancedb": lancedb,
        },
    )


if __name__ == "__main__":
    main()
