"""Near-duplicate detection: a k-NN self-join of the index, then connected components.

Each document of one kind asks the index for its nearest neighbours (`VectorIndex.knn`, the same
query a search makes), and every neighbour at or above the threshold is a pair. Pairs are joined into
clusters with union-find, so copies of copies land together even where each document saw only a few
of the others. The work is one k-NN query per document: n x (the cost of one query), which the
backends keep sublinear in n with their ANN indices (LanceDB IVF, OpenSearch HNSW), never the
n^2 / 2 comparisons of all pairs (`bench/bench_duplicates.py` measures both).

Kinds:
- images: image vectors;
- videos: whole-video vectors (the mean of their frames), so re-encoded or trimmed copies match;
- scenes: scene vectors, pairing only scenes of *different* videos (a video's own repeated shots
  are not copies), each member carrying its time span: which clips overlap, and where.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mediasearch.core.records import (
    DocKind,
    DocumentFields,
    DuplicateCluster,
    DuplicateMember,
    DuplicatePair,
    DuplicatesResponse,
    IndexDocument,
    MediaView,
)
from mediasearch.index.base import Hit, IndexFilter, VectorIndex

DEFAULT_THRESHOLD = 0.95
DEFAULT_NEIGHBOURS = 10
MAX_NEIGHBOURS = 100
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Vectors are read this many documents at a time, so memory holds one batch, not the collection.
VECTOR_BATCH = 256
DEFAULT_WORKERS = 4

Progress = Callable[[int, int], None]  # (documents done, documents in all)


class DuplicatesError(ValueError):
    """A parameter out of range; `field` names it and the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_parameters(threshold: float, neighbours: int, limit: int) -> None:
    if not (np.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise DuplicatesError("threshold", f"must be a cosine similarity in [0, 1], got {threshold}")
    if not 1 <= neighbours <= MAX_NEIGHBOURS:
        raise DuplicatesError("neighbours", f"must be 1 to {MAX_NEIGHBOURS}, got {neighbours}")
    if not 1 <= limit <= MAX_LIMIT:
        raise DuplicatesError("limit", f"must be 1 to {MAX_LIMIT}, got {limit}")


class UnionFind:
    """Disjoint sets over string ids, with path halving and union by size."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, x: str) -> str:
        parent = self.parent.setdefault(x, x)
        self.size.setdefault(x, 1)
        while parent != x:
            grand = self.parent[parent]
            self.parent[x] = grand
            x, parent = parent, self.parent[grand]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list[str]]:
        by_root: dict[str, list[str]] = {}
        for x in self.parent:
            by_root.setdefault(self.find(x), []).append(x)
        return list(by_root.values())


@dataclass
class SelfJoin:
    """What the self-join found: every pair at or above the threshold, and what it cost."""

    documents: int = 0
    knn_calls: int = 0
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)  # (a, b) with a < b -> cosine


def _batches(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def self_join(
    index: VectorIndex,
    kind: DocKind,
    threshold: float,
    neighbours: int = DEFAULT_NEIGHBOURS,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> SelfJoin:
    """Every pair of `kind` documents whose cosine similarity is >= `threshold`, among each
    document's `neighbours` nearest (one k-NN query per document)."""
    ids = sorted(d.id for d in index.scan(IndexFilter(kinds=(kind,)), fields=["video_id"]))
    join = SelfJoin(documents=len(ids))
    of_kind = IndexFilter(kinds=(kind,))

    def neighbours_of(doc: IndexDocument) -> tuple[str, list[Hit]]:
        flt = of_kind
        if kind is DocKind.SCENE and doc.video_id is not None:
            flt = IndexFilter(kinds=(kind,), exclude_video_id=doc.video_id)
        # One more than asked: the document itself is usually its own nearest neighbour.
        return doc.id, index.knn(doc.clip_vector, neighbours + 1, flt)

    done = 0
    # Queries of a batch run on a few threads: LanceDB searches outside the GIL and OpenSearch
    # answers over the network, so a single caller would leave both waiting.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="duplicates") as pool:
        for batch in _batches(ids, VECTOR_BATCH):
            for doc_id, hits in pool.map(neighbours_of, index.get_many_with_vectors(batch)):
                join.knn_calls += 1
                for hit in hits:
                    other = hit.document.id
                    if other == doc_id or hit.score < threshold:
                        continue
                    key = (doc_id, other) if doc_id < other else (other, doc_id)
                    join.pairs[key] = max(join.pairs.get(key, -1.0), float(hit.score))
            done += len(batch)
            if progress is not None:
                progress(done, len(ids))
    return join


def clusters_of(pairs: dict[tuple[str, str], float]) -> list[list[str]]:
    """The connected components of the pairs, each sorted by id."""
    sets = UnionFind()
    for a, b in pairs:
        sets.union(a, b)
    return [sorted(group) for group in sets.groups()]


def media_view(doc: DocumentFields) -> dict[str, Any]:
    """A document's `MediaView` fields without URLs (the CLI's view; the API adds links)."""
    return doc.model_dump(include=set(MediaView.model_fields) - {"url", "thumbnail_url", "strip_url"})


def find_duplicates(
    index: VectorIndex,
    kind: DocKind = DocKind.IMAGE,
    threshold: float = DEFAULT_THRESHOLD,
    neighbours: int = DEFAULT_NEIGHBOURS,
    limit: int = DEFAULT_LIMIT,
    view: Callable[[DocumentFields], dict[str, Any]] = media_view,
    progress: Progress | None = None,
) -> DuplicatesResponse:
    """Near-duplicate clusters of `kind`, biggest first, then closest, then by representative id.

    A cluster's representative is the member with the highest mean similarity to the others; each
    member's score is its similarity to the representative. `view` gives a document's shown fields
    (the API passes one that adds URLs).
    """
    check_parameters(threshold, neighbours, limit)
    started = time.perf_counter()
    join = self_join(index, kind, threshold, neighbours, progress)
    groups = clusters_of(join.pairs)
    where = {member: n for n, group in enumerate(groups) for member in group}
    linked: list[list[DuplicatePair]] = [[] for _ in groups]
    for (a, b), score in join.pairs.items():
        linked[where[a]].append(DuplicatePair(a=a, b=b, score=round(score, 6)))
    # Ordered (and cut to `limit`) from the pairs alone, so only the clusters shown read vectors.
    ranked = sorted(
        range(len(groups)),
        key=lambda n: (-len(groups[n]), -max(p.score for p in linked[n]), groups[n][0]),
    )
    clusters = [_cluster(index, kind, groups[n], linked[n], view) for n in ranked[:limit]]
    return DuplicatesResponse(
        kind=kind,
        threshold=threshold,
        neighbours=neighbours,
        documents=join.documents,
        knn_calls=join.knn_calls,
        clusters=clusters,
        truncated=len(groups) > limit,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _cluster(
    index: VectorIndex,
    kind: DocKind,
    group: list[str],
    pairs: list[DuplicatePair],
    view: Callable[[DocumentFields], dict[str, Any]],
) -> DuplicateCluster:
    docs = {d.id: d for d in index.get_many_with_vectors(group)}
    members = [i for i in group if i in docs]  # one deleted since the join is left out
    vectors = np.stack([docs[i].clip_vector for i in members]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = vectors @ vectors.T
    mean_to_others = (sims.sum(axis=1) - np.diag(sims)) / max(len(members) - 1, 1)
    # Highest mean similarity; ties go to the smallest id (members are sorted), so runs agree.
    rep = int(np.argmax(mean_to_others))
    order = sorted(range(len(members)), key=lambda j: (j != rep, -float(sims[rep, j]), members[j]))
    shown = [
        DuplicateMember(
            **view(docs[members[j]]),
            kind=docs[members[j]].kind,
            score=1.0 if j == rep else round(float(sims[rep, j]), 6),
            scene=docs[members[j]].scene,
            t_start=docs[members[j]].t_start,
            t_end=docs[members[j]].t_end,
        )
        for j in order
    ]
    inside = set(members)
    pairs = sorted((p for p in pairs if p.a in inside and p.b in inside), key=lambda p: (-p.score, p.a, p.b))
    scores = [p.score for p in pairs] or [1.0]
    return DuplicateCluster(
        representative=members[rep],
        kind=kind,
        size=len(members),
        max_score=max(scores),
        min_score=min(scores),
        members=shown,
        pairs=pairs,
    )


def _span(member: DuplicateMember) -> str:
    if member.t_start is None or member.t_end is None:
        return ""
    return f" {member.t_start:.1f}-{member.t_end:.1f}s of video {member.video_id}"


def cluster_table(response: DuplicatesResponse) -> str:
    """The clusters as text: a heading per cluster, then a line per member (score, kind, id, URI)."""
    lines = [
        f"{len(response.clusters)} cluster(s){' (more not shown)' if response.truncated else ''} of "
        f"{response.kind.value}s at cosine >= {response.threshold:g} among {response.documents} "
        f"document(s), {response.knn_calls} k-NN queries, {response.took_ms / 1000:.2f} s"
    ]
    for n, cluster in enumerate(response.clusters, 1):
        lines.append(
            f"cluster {n}: {cluster.size} members, pair scores {cluster.min_score:.3f}-{cluster.max_score:.3f}"
        )
        for member in cluster.members:
            mark = "*" if member.id == cluster.representative else " "
            lines.append(
                f"  {mark} {member.score:.3f}  {member.kind.value:<5} {member.id}  {member.uri}{_span(member)}"
            )
    return "\n".join(lines)
