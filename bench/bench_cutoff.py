"""Relevance cutoff: precision and recall at `cutoff=auto` against a fixed k and a flat min_score.

The queries and relevant sets are the labelled corpus's (mediasearch/corpus/images.py: 6 shapes x 6
colours x 5 backgrounds x 2 sizes = 360 images; a query "a red circle" has the 10 red circles as its
relevant set, as `mediasearch eval` scores it). The scores are SIMULATED: the tests' random-weight
CLIP ranks at random, and no trained model was available when this was written. Per query, an
image scores

    base + shape_weight x [same shape] + colour_weight x [same colour] + both_weight x [both] + noise

with base, the three weights and the noise drawn per query: scales and offsets differ from query to
query, as CLIP's do (the complaint a flat cutoff fails on), and some queries get noise as large as
their signal, where no cutoff should find an edge. The flat min_score is given its best single value
for the whole query set, chosen on the same queries (an optimistic baseline).

    python bench/bench_cutoff.py
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from _common import emit, loadavg, log

from mediasearch.corpus.images import BACKGROUNDS, COLOURS, SHAPES, SIZES
from mediasearch.eval.metrics import precision_at_k, recall_at_k
from mediasearch.query.cutoff import SEPARATION, auto_cutoff, pool_size

KS = (10, 24)
SEPARATION_SWEEP = (4.0, 5.0, 6.0, 7.0)


def simulated_queries(rng: np.random.Generator) -> list[tuple[list[str], set[str]]]:
    """(ranked ids, relevant ids) per (colour, shape) query over the labelled corpus."""
    images = [
        (f"{size}-{colour}-{shape}-{bg}", shape, colour)
        for shape, colour, bg, size in itertools.product(SHAPES, COLOURS, BACKGROUNDS, SIZES)
    ]
    out = []
    for shape, colour in itertools.product(SHAPES, COLOURS):
        base = rng.uniform(0.12, 0.32)
        shape_w, colour_w, both_w = rng.uniform(0.005, 0.04, 3)
        noise = rng.uniform(0.004, 0.03)
        scores = np.array(
            [
                base
                + shape_w * (s == shape)
                + colour_w * (c == colour)
                + both_w * (s == shape and c == colour)
                + rng.normal(0, noise)
                for _, s, c in images
            ]
        )
        order = np.argsort(-scores, kind="stable")
        ranked = [images[i][0] for i in order]
        relevant = {name for name, s, c in images if s == shape and c == colour}
        out.append((ranked, relevant, scores[order].tolist()))
    return out  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="independent draws of the 36 queries")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    queries = [q for _ in range(args.repeats) for q in simulated_queries(rng)]
    log(f"{len(queries)} simulated queries")
    result: dict[str, object] = {"queries": len(queries), "load_average": loadavg(), "by_k": {}}
    for k in KS:
        fixed_p = np.mean([precision_at_k(r, rel, k) for r, rel, _ in queries])
        fixed_r = np.mean([recall_at_k(r, rel, k) for r, rel, _ in queries])
        # The best flat min_score for the whole set, by mean F1 at the cut (tuned on the test queries).
        best: tuple[float, float, float, float, float] | None = None
        for threshold in np.linspace(0.1, 0.5, 161):
            ps, rs, f1s = [], [], []
            for ranked, rel, scores in queries:
                kept = sum(1 for s in scores[:k] if s >= threshold)
                p = precision_at_k(ranked, rel, kept) if kept else 0.0
                r = recall_at_k(ranked, rel, kept) if kept else 0.0
                ps.append(p), rs.append(r), f1s.append(2 * p * r / (p + r) if p + r else 0.0)
            if best is None or np.mean(f1s) > best[3]:
                best = (float(threshold), float(np.mean(ps)), float(np.mean(rs)), float(np.mean(f1s)), 0.0)
        assert best is not None
        auto: dict[str, dict[str, float]] = {}
        for gap in SEPARATION_SWEEP:
            ps, rs, f1s, kept_n, cut_n = [], [], [], [], 0
            for ranked, rel, scores in queries:
                decision = auto_cutoff(scores[: pool_size(k)], k, separation=gap)
                kept = decision.kept
                p, r = precision_at_k(ranked, rel, kept), recall_at_k(ranked, rel, kept)
                ps.append(p), rs.append(r), f1s.append(2 * p * r / (p + r) if p + r else 0.0)
                kept_n.append(kept)
                cut_n += kept < k
            auto[f"separation_{gap:g}" + (" (default)" if gap == SEPARATION else "")] = {
                "precision_at_cut": round(float(np.mean(ps)), 3),
                "recall_at_cut": round(float(np.mean(rs)), 3),
                "f1": round(float(np.mean(f1s)), 3),
                "mean_kept": round(float(np.mean(kept_n)), 2),
                "queries_cut": cut_n,
            }
        fixed_f1 = np.mean(
            [
                2
                * precision_at_k(r, rel, k)
                * recall_at_k(r, rel, k)
                / (precision_at_k(r, rel, k) + recall_at_k(r, rel, k))
                if precision_at_k(r, rel, k) + recall_at_k(r, rel, k)
                else 0.0
                for r, rel, _ in queries
            ]
        )
        result["by_k"][str(k)] = {  # type: ignore[index]
            "fixed_k": {
                "precision": round(float(fixed_p), 3),
                "recall": round(float(fixed_r), 3),
                "f1": round(float(fixed_f1), 3),
            },
            "best_flat_min_score": {
                "min_score": round(best[0], 4),
                "precision_at_cut": round(best[1], 3),
                "recall_at_cut": round(best[2], 3),
                "f1": round(best[3], 3),
            },
            "auto": auto,
        }
        log(f"k={k}: {result['by_k'][str(k)]}")  # type: ignore[index]
    emit("cutoff", result)


if __name__ == "__main__":
    main()
