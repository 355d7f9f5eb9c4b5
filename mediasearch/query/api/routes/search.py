"""Search: a query of any kind, and "more like this video"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from mediasearch.core.records import ErrorResponse, ResultKind, SearchRequest, SearchResponse
from mediasearch.query.api.deps import AppSettings, Service
from mediasearch.query.api.security import guarded

router = APIRouter(tags=["search"], dependencies=guarded)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses={
        400: {"model": ErrorResponse},
        401: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
def search(request: SearchRequest, service: Service, settings: AppSettings) -> SearchResponse:
    service.check_image_size(request, settings.max_image_bytes)
    return service.search(request)


@router.get(
    "/videos/{video_id}/similar",
    response_model=SearchResponse,
    responses={404: {"model": ErrorResponse}},
)
def similar_videos(
    video_id: Annotated[str, Path(min_length=1, max_length=64)],
    service: Service,
    k: Annotated[int, Query(ge=1, le=100)] = 5,
) -> SearchResponse:
    return service.search(SearchRequest(video_id=video_id, k=k, kinds=[ResultKind.VIDEO]))
