"""The HNSW graph's density (M) against recall@10 and latency, faiss alone, on bench_knn's data.

Why the graph beside each LanceDB table (mediasearch.index.ann) is built with the M it is: for each M
given, the same vectors and queries as `bench/bench_knn.py` (its Gaussian mixture, seed and query
noise), an `IndexHNSWFlat` built with ann's efConstruction, then recall@10 against exact search and
single-query p50 (one faiss thread, as a server answers one query per request) over an efSearch
ladder. Build time is wall time with faiss's default threads.

    python bench/bench_hnsw_m.py                   # 100k vectors, M 16 and 32
    python bench/bench_hnsw_m.py --rows 1000000    # where M=16 levels off below recall 0.95
    python bench/bench_hnsw_m.py --tiny            # a few seconds, to check that it runs
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import faiss
import numpy as np
from _common import emit, environment, loadavg, log, percentiles_ms
from bench_knn import exact_top_k, metadata, mixture, recall_at_k, unit

from mediasearch.index import ann

EF_LADDER = (64, 128, 256, 384, 512, 768, 1024, 2048)
TARGET_RECALL = 0.95


def sweep(index: Any, queries: np.ndarray, truth: np.ndarray, k: int) -> list[dict[str, Any]]:
    out = []
    for ef in EF_LADDER:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        latencies: list[float] = []
        found: list[list[int]] = []
        for q in queries:
            started = time.perf_counter()
            _, labels = index.search(q.reshape(1, -1), k, params=params)
            latencies.append(time.perf_counter() - started)
            found.append([int(i) for i in labels[0] if i >= 0])
        out.append(
            {
                "ef_search": ef,
                "recall_at_10": round(recall_at_k(found, list(truth), k), 4),
                **percentiles_ms(latencies),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--m", type=int, nargs="+", default=[16, 32], help="graph densities to compare")
    parser.add_argument("--ef-construction", type=int, default=ann.EF_CONSTRUCTION)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="20k vectors, 50 queries")
    args = parser.parse_args()
    clusters = 1000
    if args.tiny:
        args.rows, args.queries, clusters = 20_000, 50, 50
    k, dim = 10, 512
    load_start = loadavg()
    rng = np.random.default_rng(args.seed)
    log(f"generating {args.rows} x {dim} vectors")
    # bench_knn's draws in bench_knn's order (its metadata comes between the data and the queries,
    # and is drawn here too so that the queries are the same ones).
    data, facts = mixture(args.rows, dim, clusters, 0.9, rng)
    metadata(args.rows, rng)
    picks = rng.choice(args.rows, size=args.queries, replace=False)
    queries = unit(data[picks] + rng.standard_normal((args.queries, dim)) * (0.3 / np.sqrt(dim)))
    truth = exact_top_k(data, queries, k)
    graphs: dict[str, Any] = {}
    threads = faiss.omp_get_max_threads()
    for m in args.m:
        faiss.omp_set_num_threads(threads)
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_L2)
        index.hnsw.efConstruction = args.ef_construction
        index.add(data)
        build_s = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        ladder = sweep(index, queries, truth, k)
        reaching = [step for step in ladder if step["recall_at_10"] >= TARGET_RECALL]
        graphs[f"M={m}"] = {
            "m": m,
            "build_s": round(build_s, 1),
            "link_bytes_per_node_base_layer": 2 * m * 4,
            "best_recall_at_10": max(step["recall_at_10"] for step in ladder),
            "smallest_ef_search_reaching_target": reaching[0]["ef_search"] if reaching else None,
            "p50_ms_at_target": reaching[0]["p50_ms"] if reaching else None,
            "ladder": ladder,
        }
        log(
            f"M={m}: build {build_s:.1f}s; "
            + ", ".join(f"ef {s['ef_search']}: {s['recall_at_10']}" for s in ladder)
        )
        del index
    emit(
        "bench_hnsw_m" if args.rows == 100_000 else f"bench_hnsw_m_{args.rows}",
        {
            "bench": "hnsw_m",
            "rows": args.rows,
            "dim": dim,
            "queries": args.queries,
            "ef_construction": args.ef_construction,
            "data": facts,
            "chosen_m": ann.HNSW_M,
            "ef_search_chosen_for_rows": ann.ef_search(args.rows),
            "graphs": graphs,
            "load_average": {"start": load_start, "end": loadavg()},
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
