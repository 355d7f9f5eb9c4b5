"""Relevance cutoffs: stop returning results that are clearly below the top group.

A search returns its k nearest neighbours whether or not any of them match; a flat `min_score` is
the obvious fix and a poor one, because similarity scales differ per query (one text query's good
matches score 0.31, another's unrelated items score 0.33). `cutoff=auto` decides per query, from the
shape of that query's own scores:

1. Take a candidate pool larger than k (AUTO_POOL_FACTOR x k, at least AUTO_MIN_POOL): the scores
   beyond the first k say what "background" looks like for this query.
2. For every place to cut inside the first k, split the pool into the results above the cut and
   every candidate below it, and measure how far apart the two groups are: the difference of their
   mean scores over their pooled within-group standard deviation (Cohen's d).
3. Cut at the best-separated split if its separation reaches SEPARATION: a split that clean arises by
   chance in only ~1 of 20 score lists holding no relevant item at all (the top of 360 Gaussian
   scores, the labelled corpus's size; see bench/bench_cutoff.py). Otherwise there is no clear edge
   and all k are kept: the rule only cuts where a cut is evident, never to a fixed count.

Both the rule and the threshold are scale-free: multiplying or shifting every score of a query leaves
the decision unchanged, which is exactly what a flat threshold cannot do. `bench/bench_cutoff.py`
measures precision at the cutoff against a fixed k on labelled queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mediasearch.core.choices import CutoffMode
from mediasearch.core.records import CutoffReport, SearchRequest, SearchResult

# Cut where the best split's separation (Cohen's d) reaches this: the 95th percentile of the best
# split's separation over lists of pure noise (median 3.9; 99th percentile 5.7-7.5 by pool size).
SEPARATION = 5.0
# The pool that gives the spread: this many times k candidates, at least AUTO_MIN_POOL, at most
# AUTO_MAX_POOL (the API's largest k).
AUTO_POOL_FACTOR = 3
AUTO_MIN_POOL = 30
AUTO_MAX_POOL = 100
# With fewer scores than this there is no distribution to judge a split against: with 6 candidates
# a split of 3 and 3 reached 7 standard deviations on random-weight scores.
MIN_SCORES = 12


__all__ = ["CutoffDecision", "CutoffMode", "auto_cutoff", "cut_results", "min_score_cutoff", "pool_size"]


def pool_size(k: int) -> int:
    """Candidates to fetch for `cutoff=auto` with `k` results asked for."""
    return max(k, min(AUTO_MAX_POOL, max(AUTO_MIN_POOL, AUTO_POOL_FACTOR * k)))


@dataclass(frozen=True)
class CutoffDecision:
    """Where a rule cut a ranked list: keep the first `kept`; `threshold` is the lowest score kept
    (None when nothing was cut); `reason` says why, in words."""

    rule: str
    kept: int
    threshold: float | None
    reason: str


def best_split(scores: Sequence[float], head: int) -> tuple[int, float]:
    """(keep, separation): the cut inside the first `head` scores (keep 1 to head - 1) whose two groups,
    above it and the rest of the pool below it, are furthest apart in pooled standard deviations."""
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    keep = np.arange(1, head)
    total, total_sq = np.cumsum(s), np.cumsum(s * s)
    above_sum, above_sq = total[keep - 1], total_sq[keep - 1]
    below_sum, below_sq = total[-1] - above_sum, total_sq[-1] - above_sq
    above_mean, below_mean = above_sum / keep, below_sum / (n - keep)
    # Within-group sums of squares from the running sums; clipped at 0 against rounding.
    within = np.maximum(above_sq - keep * above_mean**2, 0) + np.maximum(
        below_sq - (n - keep) * below_mean**2, 0
    )
    sd = np.sqrt(within / max(n - 2, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        separation = np.where(
            sd > 0, (above_mean - below_mean) / sd, np.where(above_mean > below_mean, np.inf, 0.0)
        )
    best = int(np.argmax(separation))
    return int(keep[best]), float(separation[best])


def auto_cutoff(scores: Sequence[float], k: int, separation: float = SEPARATION) -> CutoffDecision:
    """The per-query cutoff over `scores` (best first, the whole candidate pool) for `k` results."""
    head = min(k, len(scores))
    if len(scores) < MIN_SCORES or head < 2:
        return CutoffDecision("auto", head, None, f"no cut: {len(scores)} candidates are too few to judge")
    keep, found = best_split(scores, head)
    if found < separation:
        return CutoffDecision(
            "auto",
            head,
            None,
            f"no cut: the clearest split in the top {head} (after result {keep}) separates the groups by "
            f"{found:.1f} standard deviations of the {len(scores)} candidates' scores, below {separation:g}",
        )
    return CutoffDecision(
        "auto",
        keep,
        float(scores[keep - 1]),
        f"cut after result {keep} (score {scores[keep - 1]:.3f}, next {scores[keep]:.3f}): the results "
        f"above stand {found:.1f} standard deviations above the other {len(scores) - keep} candidates "
        f"(at least {separation:g} cuts)",
    )


def min_score_cutoff(scores: Sequence[float], k: int, min_score: float) -> CutoffDecision:
    """Keep the first `k` scores that reach `min_score` (scores best first)."""
    kept = sum(1 for s in scores[:k] if s >= min_score)
    head = min(k, len(scores))
    return CutoffDecision(
        "min_score",
        kept,
        min_score,
        f"min_score {min_score:g}: {head - kept} of the top {head} scored below it"
        if kept < head
        else f"min_score {min_score:g}: every one of the top {head} reached it",
    )


def cut_results(
    results: Sequence[SearchResult], req: SearchRequest
) -> tuple[list[SearchResult], CutoffReport | None]:
    """The results `req` asked for (best first, from a pool of `pool_size(req.k)` with cutoff=auto),
    cut by its `min_score` and `cutoff`, each result's explanation saying the cut it passed, and the
    report of where and why it cut (None when neither was asked for)."""
    if req.min_score is None and req.cutoff is None:
        return list(results[: req.k]), None
    scores = [r.score for r in results]
    head = min(req.k, len(scores))
    decisions: list[CutoffDecision] = []
    if req.cutoff is CutoffMode.AUTO:
        decisions.append(auto_cutoff(scores, req.k))
    if req.min_score is not None:
        decisions.append(min_score_cutoff(scores, req.k, req.min_score))
    kept = min([head, *(d.kept for d in decisions)])
    cutting = [d for d in decisions if d.kept < head]
    threshold = max((d.threshold for d in cutting if d.threshold is not None), default=None)
    rule = "+".join(d.rule for d in decisions)
    report = CutoffReport(
        rule=rule,
        threshold=threshold,
        kept=kept,
        dropped=head - kept,
        reason="; ".join(d.reason for d in decisions),
    )
    if cutting:
        note = f"kept by the {rule} cutoff: {kept} of the top {head} scored {scores[kept - 1]:.3f} or more"
    else:
        note = f"{rule} cutoff: no cut, all {head} kept"
    shown = [r.model_copy(update={"explanation": f"{r.explanation}; {note}"}) for r in results[:kept]]
    return shown, report
