"""Composed queries: several parts (text, image, image_uri, video_id), each with a weight in [-1, 1].

The query vector is the normalised weighted sum of the parts' unit vectors, q = s / |s| with
s = sum(w_i * v_i), and the index is asked once with q. Why vector-level composition rather than
fusing the scores of one k-NN search per part:

- A negative part has no neighbour list to fuse: "away from people" is not a set of candidates, so a
  score-level fusion could only re-rank what the positive parts fetched, and the k-NN candidate pool
  would still be full of what the caller wanted pushed away. Composing first moves the search itself.
- One k-NN query instead of one per part: the same latency as a single query, on both backends.
- It is what the systems people compare with do: Marqo's weighted multi-term queries sum weighted
  vectors (negative weights allowed), Weaviate's moveTo / moveAwayFrom move the query vector.

And it stays explainable exactly: a result's cosine with q is sum(w_i * cos(d, v_i)) / |s|, so each
part's contribution, w_i * cos(d, v_i) / |s|, adds up to the score (`PartContribution`).

Modes: clip composes CLIP vectors of any part; caption composes the caption-text vectors of text
parts only (images and videos have no caption-space vector); hybrid searches with the composed CLIP
vector plus BM25 over the positive text parts (a keyword engine cannot "subtract" words from a
relevance score, so negative texts act only through the vector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mediasearch.core.records import (
    Aggregation,
    PartContribution,
    QueryPart,
    ResultKind,
    SearchMode,
    SearchRequest,
    SearchResult,
)
from mediasearch.index.base import VectorField

if TYPE_CHECKING:
    from mediasearch.query.search import Query, SearchService

# Below this the parts cancel out (e.g. "cat" 1 and "cat" -1): there is no direction to search in.
MIN_COMPOSED_NORM = 1e-4


@dataclass(frozen=True)
class ComposedParts:
    """The parts as searched: one unit vector per part, their weights, and |sum of weighted vectors|."""

    parts: tuple[QueryPart, ...]
    vectors: np.ndarray  # (P, d), each row unit length
    weights: np.ndarray  # (P,)
    norm: float
    field: VectorField

    @property
    def video_ids(self) -> frozenset[str]:
        return frozenset(p.video_id for p in self.parts if p.video_id is not None)


def compose(vectors: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit query vector of weighted unit vectors, and the norm it was divided by.

    Raises `ValueError` when the parts cancel out.
    """
    total = (weights[:, None] * vectors).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < MIN_COMPOSED_NORM:
        raise ValueError("the parts cancel each other out: there is no direction left to search in")
    return (total / norm).astype(np.float32), norm


def contributions(doc_vector: np.ndarray, composed: ComposedParts) -> tuple[np.ndarray, np.ndarray]:
    """Each part's cosine with a document, and its contribution (weight x cosine / norm)."""
    cosines = composed.vectors @ np.asarray(doc_vector, np.float32)
    return cosines, composed.weights * cosines / composed.norm


def scene_coefficients(aggregation: Aggregation, n: int) -> np.ndarray:
    """How much each of a video's `n` scenes (best first) counts in its score, for the aggregations that
    are linear in the scenes they pick: per-part scene contributions combined with these add up to the
    video's score, as the scene scores do."""
    coefficients = np.zeros(n, np.float64)
    if n == 0:
        return coefficients
    if aggregation is Aggregation.MAX:
        coefficients[0] = 1.0
    elif aggregation is Aggregation.TOP3_MEAN:
        coefficients[: min(3, n)] = 1.0 / min(3, n)
    elif aggregation is Aggregation.MEAN:
        coefficients[:] = 1.0 / n
    else:  # SUM
        coefficients[:] = 1.0
    return coefficients


def _label(part: QueryPart) -> str:
    if part.image is not None:
        return "image"
    return str(part.text or part.image_uri or part.video_id)


def plan_parts(service: SearchService, req: SearchRequest) -> Query:
    """The `Query` of a composed request: each part embedded as a single query would be, then composed."""
    from mediasearch.query.search import Query, QueryError

    assert req.parts is not None
    parts = tuple(req.parts)
    if req.mode is SearchMode.CAPTION:
        wrong = [i for i, p in enumerate(parts) if p.text is None]
        if wrong:
            raise QueryError(
                f"parts[{wrong[0]}]",
                f"parts[{wrong[0]}]: caption mode composes text parts only (images and videos have no "
                "caption vector); use the clip or hybrid mode",
            )
    keywords = " ".join(p.text for p in parts if p.text is not None and p.weight > 0)
    if req.mode is SearchMode.HYBRID and not keywords:
        raise QueryError(
            "parts",
            "hybrid mode needs a text part with a positive weight (its words are the keyword query)",
        )
    vectors = []
    for i, part in enumerate(parts):
        try:
            if req.mode is SearchMode.CAPTION:
                assert part.text is not None
                vectors.append(service.caption_vector(part.text))
            else:
                single = SearchRequest.model_validate({part.kind: getattr(part, part.kind)})
                vectors.append(service.query_vector(single)[0])
        except QueryError as exc:
            if exc.field == "mode":  # the server's own limits (501/503), not this part's fault
                raise
            message = str(exc).removeprefix(f"{exc.field}: ")
            raise QueryError(
                f"parts[{i}].{exc.field}",
                f"parts[{i}].{exc.field}: {message}",
                status=exc.status,
                **{k: v for k, v in exc.detail.items() if k != "field"},
            ) from None
    matrix = np.stack([np.asarray(v, np.float32) for v in vectors])
    if len({v.shape for v in vectors}) > 1:
        raise QueryError("parts", "the parts' vectors have different sizes: they come from different models")
    weights = np.asarray([p.weight for p in parts], np.float32)
    try:
        vector, norm = compose(matrix, weights)
    except ValueError as exc:
        raise QueryError("parts", str(exc)) from None
    field = VectorField.CAPTION if req.mode is SearchMode.CAPTION else VectorField.CLIP
    composed = ComposedParts(parts, matrix, weights, norm, field)
    return Query(
        vector,
        field=field,
        text=keywords if req.mode is SearchMode.HYBRID else None,
        composed=composed,
    )


def check_part_sizes(service: SearchService, req: SearchRequest, limit_bytes: int) -> None:
    """`SearchService.check_image_size` for each image part, naming the part that is too large."""
    from mediasearch.query.search import QueryError

    for i, part in enumerate(req.parts or ()):
        if part.image is None and part.image_uri is None:
            continue
        single = SearchRequest.model_validate({part.kind: getattr(part, part.kind)})
        try:
            service.check_image_size(single, limit_bytes)
        except QueryError as exc:
            detail = {k: v for k, v in exc.detail.items() if k != "field"}
            raise QueryError(
                f"parts[{i}].{exc.field}", f"parts[{i}].{exc.field}: {exc}", status=exc.status, **detail
            ) from None


def explain_parts(
    service: SearchService, composed: ComposedParts, results: Sequence[SearchResult], req: SearchRequest
) -> list[SearchResult]:
    """The best `req.k` results but the videos given as parts, each with its parts' contributions.

    Images: the result's own vector. Videos: the scenes shown (their score is made of scenes), combined
    as the aggregation combines scene scores, so the contributions add up to the video's score (exactly
    for max and top3_mean, and for mean and sum where all its matching scenes are shown).
    """
    kept = [r for r in results if not (r.kind is ResultKind.VIDEO and r.id in composed.video_ids)][: req.k]
    wanted = {r.id for r in kept if r.kind is ResultKind.IMAGE}
    wanted |= {s.id for r in kept if r.kind is ResultKind.VIDEO for s in r.scenes}
    docs = {d.id: d for d in service.index.get_many_with_vectors(sorted(wanted))}

    def vector_of(doc_id: str) -> np.ndarray | None:
        doc = docs.get(doc_id)
        if doc is None:
            return None
        return doc.caption_vector if composed.field is VectorField.CAPTION else doc.clip_vector

    out = []
    for result in kept:
        if result.kind is ResultKind.VIDEO and result.scenes:
            rows = [(vector_of(s.id), s) for s in result.scenes]
            coefficients = scene_coefficients(req.aggregation, len(rows))
            cosines = np.zeros(len(composed.parts))
            shares = np.zeros(len(composed.parts))
            for (vector, _), c in zip(rows, coefficients, strict=True):
                if vector is not None and c:
                    cos, share = contributions(vector, composed)
                    cosines += c * cos
                    shares += c * share
            over = f" ({req.aggregation.value} over its scenes)"
        else:
            vector = vector_of(result.id)
            if vector is None:
                out.append(result)
                continue
            cosines, shares = contributions(vector, composed)
            over = ""
        parts = [
            PartContribution(
                part=i,
                kind=part.kind,
                label=_label(part),
                weight=part.weight,
                cosine=round(float(cosines[i]), 6),
                contribution=round(float(shares[i]), 6),
            )
            for i, part in enumerate(composed.parts)
        ]
        shown = ", ".join(
            f"{p.weight:+.2g} x {p.label!r}: cosine {p.cosine:.3f} -> {p.contribution:+.3f}" for p in parts
        )
        explanation = (
            f"{result.explanation}; composed of {len(parts)} parts{over}, each part's weight x cosine / "
            f"{composed.norm:.3f} (|weighted sum|): {shown}"
        )
        out.append(result.model_copy(update={"contributions": parts, "explanation": explanation}))
    return out
