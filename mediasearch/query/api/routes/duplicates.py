"""Near-duplicates: clusters of images, videos or overlapping scenes found by a k-NN self-join."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mediasearch.core.records import DocKind, DuplicatesResponse
from mediasearch.query.api.deps import Service, strict_query
from mediasearch.query.api.responses import documented
from mediasearch.query.api.security import guarded
from mediasearch.query.duplicates import (
    DEFAULT_LIMIT,
    DEFAULT_NEIGHBOURS,
    DEFAULT_THRESHOLD,
    MAX_LIMIT,
    MAX_NEIGHBOURS,
)

router = APIRouter(tags=["duplicates"], dependencies=[*guarded, *strict_query])


@router.get("/duplicates", response_model=DuplicatesResponse, responses=documented(401, 503))
def duplicates(
    service: Service,
    threshold: Annotated[
        float, Query(ge=0.0, le=1.0, description="the lowest cosine similarity of a duplicate pair")
    ] = DEFAULT_THRESHOLD,
    kind: Annotated[
        DocKind, Query(description="image; video (whole-video vectors); scene (scenes of different videos)")
    ] = DocKind.IMAGE,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="the most clusters returned")
    ] = DEFAULT_LIMIT,
    neighbours: Annotated[
        int, Query(ge=1, le=MAX_NEIGHBOURS, description="nearest neighbours asked per document")
    ] = DEFAULT_NEIGHBOURS,
) -> DuplicatesResponse:
    """Clusters of near-duplicates, biggest and closest first: each document's nearest neighbours at
    or above `threshold` are linked, and linked documents form a cluster. One k-NN query per document
    of `kind`, so the time grows with the collection: meant for curation, not for every page view."""
    return service.duplicates(kind, threshold, neighbours, limit)
