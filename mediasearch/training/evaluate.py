"""Segment-to-video retrieval: does a segment of a video find another segment of the same video?

For each held-out video, its first and its last segment (disjoint: a segment is at most half the
video) are embedded from plain, un-augmented frames. Every segment is a query against the other
segments of all the held-out videos; a hit is the other segment of its own video. Recall@k counts
the queries whose hit ranks in the top k. Two rankings are compared on the same frame features:
the trained encoder's features, and the baseline a CLIP index already has, the mean of the frames'
CLIP vectors (what whole-video vectors are in this project).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

from mediasearch.core.storage import ObjectStore
from mediasearch.core.vectors import l2_normalise
from mediasearch.training.config import VideoTrainConfig
from mediasearch.training.video import (
    FrameTower,
    decode_at,
    disjoint_segment_times,
    plain_features,
    video_duration,
)


class RetrievalScores(BaseModel):
    recall: dict[str, float] = Field(description="recall@k by k")
    mrr: float


class SegmentRetrievalReport(BaseModel):
    videos: int
    queries: int
    learned: RetrievalScores | None = None
    baseline: RetrievalScores = Field(description="mean of the segment's CLIP frame vectors")


def segment_pairs(
    store: ObjectStore,
    keys: Sequence[str],
    tower: FrameTower,
    config: VideoTrainConfig,
    progress: bool = True,
) -> np.ndarray:
    """(videos, 2, frames, D): the first and the last segment of each video, plain frames embedded."""
    out = []
    for key in tqdm(keys, desc="held-out segments", unit="video", disable=not progress, file=sys.stderr):
        with store.local_copy(key) as path:
            times = disjoint_segment_times(video_duration(path), config)
            frames = decode_at(path, times.ravel(), 2 * config.image_size)
        out.append(plain_features(tower, frames, times))
    return np.stack(out)


def retrieval(a: np.ndarray, b: np.ndarray, ks: Sequence[int]) -> RetrievalScores:
    """Queries are every row of `a` (against all of `b`) and of `b` (against all of `a`); row i of
    one matches row i of the other. Vectors are L2-normalised here."""
    a, b = l2_normalise(a), l2_normalise(b)
    ranks: list[int] = []
    for queries, gallery in ((a, b), (b, a)):
        sims = queries @ gallery.T
        own = np.diag(sims)
        # Rank of the own segment: 1 + how many others score strictly higher (ties go its way).
        ranks.extend((1 + (sims > own[:, None]).sum(axis=1)).tolist())
    r = np.asarray(ranks)
    return RetrievalScores(
        recall={str(k): round(float((r <= k).mean()), 4) for k in ks},
        mrr=round(float((1.0 / r).mean()), 4),
    )


def evaluate_segments(
    pairs: np.ndarray,
    encode: Callable[[np.ndarray], np.ndarray] | None,
    ks: Sequence[int] = (1, 5),
) -> SegmentRetrievalReport:
    """Recall@k of `encode` (frame-feature sequences -> video features) and of the frame-mean baseline."""
    baseline = retrieval(pairs[:, 0].mean(axis=1), pairs[:, 1].mean(axis=1), ks)
    learned = retrieval(encode(pairs[:, 0]), encode(pairs[:, 1]), ks) if encode is not None else None
    return SegmentRetrievalReport(
        videos=len(pairs), queries=2 * len(pairs), learned=learned, baseline=baseline
    )
