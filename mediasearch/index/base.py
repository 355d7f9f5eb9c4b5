"""The index interface: what search needs from a vector + metadata store.

Two implementations honour it (LanceDB embedded, OpenSearch k-NN) and one contract test suite runs
against both. Scores are cosine similarities in [-1, 1] whatever the backend does internally.

Vectors are written with every document but read back only when asked for: k-NN and hybrid hits,
`get` and `get_many` carry `DocumentFields` (everything needed to show a document), and
`get_with_vectors` / `get_many_with_vectors` return whole `IndexDocument`s. A vector is several KB per
document; search results and item pages never show one, and OpenSearch would have to ship each one
in its response as JSON.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import numpy as np

from mediasearch.core.defaults import HYBRID_CLIP_WEIGHT, HYBRID_KEYWORD_WEIGHT
from mediasearch.core.records import DocKind, DocumentFields, IndexDocument

# What `VectorIndex.scan` reads unless told otherwise: enough to plan a sync, a few bytes a document.
SCAN_FIELDS = ("id", "kind", "uri", "video_id", "scene", "fingerprint", "content_hash", "model")


class VectorField(StrEnum):
    CLIP = "clip_vector"
    CAPTION = "caption_vector"
    LEARNED = "learned_vector"


class IndexError_(Exception):
    """The index backend failed; the message says which operation and why.

    The message may name hosts, paths and the backend's own words: the API logs it and shows the
    caller only a request id. The subclasses below carry a message that is safe to show.
    """


class IndexNotReady(IndexError_):
    """The index cannot answer this yet: the collection does not exist, or lacks a structure the
    query needs (the full-text index). Only writers build them; the message says so and is safe to
    show (the API answers 503 with it as the reason)."""


class IndexUnreadable(IndexError_):
    """The collection exists but its data could not be read (damaged or missing files).

    The message names the collection and nothing of the backend (safe to show); the backend's error
    is the exception's `__cause__`, for the log.
    """


@dataclass(frozen=True)
class IndexFilter:
    """Pre-filter applied before ranking (efficient filtering: the k results all match)."""

    kinds: tuple[DocKind, ...] = ()
    video_id: str | None = None
    exclude_video_id: str | None = None
    tags: tuple[str, ...] = ()
    uri_prefix: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    taken_after: datetime | None = None  # aware (UTC); at or after
    taken_before: datetime | None = None  # before
    camera: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # min_lat, min_lon, max_lat, max_lon

    def is_empty(self) -> bool:
        return self == IndexFilter()


@dataclass(frozen=True)
class Hit:
    document: DocumentFields  # without vectors, on every backend
    score: float  # cosine similarity; for hybrid hits the fused score in [0, 1]
    parts: Mapping[str, float] = field(default_factory=dict)  # hybrid: normalised "keyword" and "vector"


# One score or a column of them: the fusion is the same elementwise (LanceDB fuses whole columns).
Scores = TypeVar("Scores", float, np.ndarray)


@dataclass(frozen=True)
class HybridWeights:
    """How keyword relevance and vector similarity are mixed after min-max normalisation.

    Built from any non-negative pair (not both 0) and kept scaled to sum to 1: OpenSearch's
    normalization-processor refuses weights outside [0, 1] or summing to other than 1 +- 0.01
    (neural-search 2.19, ScoreCombinationUtil.validateWeights), and every backend and explanation
    then uses the same two numbers. Scaling changes no ranking: the combination is a weighted mean.
    """

    keyword: float = HYBRID_KEYWORD_WEIGHT
    vector: float = HYBRID_CLIP_WEIGHT

    def __post_init__(self) -> None:
        total = float(self.keyword) + float(self.vector)
        if not (self.keyword >= 0 and self.vector >= 0 and 0 < total < math.inf):
            raise ValueError(f"hybrid weights must be finite, >= 0 and not both 0, got {self}")
        # Frozen, so set through object. Each divided by the sum keeps the ratio exact (1 - keyword
        # would round a tiny weight to 0); the sum is 1 within a rounding error.
        object.__setattr__(self, "keyword", float(self.keyword) / total)
        object.__setattr__(self, "vector", float(self.vector) / total)

    def combine(self, keyword: Scores, vector: Scores) -> Scores:
        """The weighted arithmetic mean, as OpenSearch's normalization-processor computes it."""
        return self.keyword * keyword + self.vector * vector


@dataclass(frozen=True)
class IndexSpec:
    clip_dim: int
    caption_dim: int = 384
    learned_dim: int = 4096  # the trained video encoder's feature (VideoTrainConfig.dim)
    extra: dict[str, str] = field(default_factory=dict)

    def dim(self, vector: VectorField) -> int:
        """The dimension of a vector field in collections made for this spec."""
        match vector:
            case VectorField.CLIP:
                return self.clip_dim
            case VectorField.CAPTION:
                return self.caption_dim
            case VectorField.LEARNED:
                return self.learned_dim


class VectorIndex(ABC):
    """One collection of documents with their vectors.

    Maintenance (index builds, compaction, repairs) happens only in `optimize()`, which writers call
    at the end of a write; no read ever builds anything, so concurrent queries cannot collide on it.
    """

    collection: str

    @abstractmethod
    def create(self, spec: IndexSpec) -> None:
        """Create the collection if it does not exist; a no-op when it does with the same dimensions."""

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def upsert(self, docs: Sequence[IndexDocument]) -> int:
        """Insert or replace by id; returns how many were written."""

    @abstractmethod
    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        field: VectorField = VectorField.CLIP,
    ) -> list[Hit]:
        """The k nearest documents by cosine similarity, best first, all matching `filter`.

        Hits carry their documents without vectors (`DocumentFields`).
        """

    @abstractmethod
    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        weights: HybridWeights = HybridWeights(),
    ) -> list[Hit]:
        """Keyword relevance (BM25 over captions and tags) fused with CLIP k-NN, best first.

        Each list is min-max normalised and the two are combined with `weights.combine`; a document
        one list did not return scores 0 there. `Hit.parts` holds the normalised parts when the
        backend can report them. Hits carry their documents without vectors, as `knn`'s do.
        """

    @abstractmethod
    def get_many(self, ids: Iterable[str]) -> list[DocumentFields]:
        """Documents by id without their vectors, in the order asked (missing ids are left out)."""

    @abstractmethod
    def get_many_with_vectors(self, ids: Iterable[str]) -> list[IndexDocument]:
        """Whole documents by id, vectors included, in the order asked (missing ids are left out):
        every field as it was upserted."""

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int: ...

    @abstractmethod
    def delete_where(self, filter: IndexFilter) -> int:
        """Delete every document matching `filter` (used to drop a changed video's stale scenes)."""

    @abstractmethod
    def count(self, filter: IndexFilter | None = None) -> int: ...

    @abstractmethod
    def fingerprints(self, ids: Iterable[str]) -> dict[str, str | None]:
        """id -> stored fingerprint, for incremental ingest without fetching vectors."""

    def scan(self, filter: IndexFilter, fields: Sequence[str] | None = None) -> list[DocumentFields]:
        """Every document matching `filter`, unranked and without a limit or vectors: what a sync of a
        source plans with (its images and videos, or one video's scenes).

        Only `fields` are read (default `SCAN_FIELDS`; `id`, `kind` and `uri` always); the other
        fields hold their defaults.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its documents")

    @staticmethod
    def scan_columns(fields: Sequence[str] | None) -> list[str]:
        """The fields `scan` reads for `fields`."""
        return list(dict.fromkeys(["id", "kind", "uri", *(SCAN_FIELDS if fields is None else fields)]))

    @abstractmethod
    def optimize(self) -> None:
        """Build or refresh the search structures after a write (a no-op where the backend does it itself).

        Writers call it at the end of every write, a re-run after a kill included: it must be cheap
        when there is nothing to do, and safe when two processes call it at once.
        """

    def probe(self) -> int:
        """A cheap real read of the collection for health checks: its document count.

        Raises `IndexNotReady` when the collection does not exist, `IndexError_` when it cannot be
        read. Backends whose count is answered from metadata alone override this to touch the data.
        """
        if not self.exists():
            raise IndexNotReady(
                f"collection {self.collection!r} does not exist: run `mediasearch ingest` to build it"
            )
        return self.count()

    def get(self, id: str) -> DocumentFields | None:
        """A document without its vectors, or None."""
        docs = self.get_many([id])
        return docs[0] if docs else None

    def get_with_vectors(self, id: str) -> IndexDocument | None:
        """A whole document, vectors included, or None."""
        docs = self.get_many_with_vectors([id])
        return docs[0] if docs else None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
