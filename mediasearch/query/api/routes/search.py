"""Search: a query of any kind, and "more like this video"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from mediasearch.core.choices import VideoEncoder
from mediasearch.core.records import ResultKind, SearchRequest, SearchResponse
from mediasearch.query.api.deps import AppSettings, Service, strict_query
from mediasearch.query.api.responses import documented
from mediasearch.query.api.security import guarded
from mediasearch.query.search import SearchService
from mediasearch.query.timing import Timings, phase

router = APIRouter(tags=["search"], dependencies=[*guarded, *strict_query])


def timed_search(service: SearchService, request: SearchRequest) -> Response:
    """The search's JSON with a `Server-Timing` header (mediasearch.query.timing names the parts).

    Serialised here rather than by FastAPI's `response_model` so that serialising can be timed, and
    because FastAPI would validate the service's own, already valid, response once more before
    dumping it. `response_model` stays on the routes for the OpenAPI schema.
    """
    timings = Timings()
    with timings.active():
        response = service.search(request)
        with phase("serialise"):
            body = response.model_dump_json()
    timings.finish()
    return Response(body, media_type="application/json", headers={"Server-Timing": timings.header()})


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=documented(400, 401, 404, 409, 413, 501, 503),
)
def search(request: SearchRequest, service: Service, settings: AppSettings) -> Response:
    """Search with exactly one of `text`, `image` (base64), `image_uri` (inside the store) or
    `video_id` (videos like it), or `parts`: several of those with weights in [-1, 1] (negative pushes
    away), each result then showing each part's `contributions`. 404: no such video or `image_uri`
    object; 501: caption mode where the server cannot embed text; 503: the index or the query model is
    not available."""
    service.check_image_size(request, settings.max_image_bytes)
    return timed_search(service, request)


@router.get(
    "/videos/{video_id}/similar",
    response_model=SearchResponse,
    responses=documented(401, 404, 409, 503),
)
def similar_videos(
    video_id: Annotated[str, Path(min_length=1, max_length=64)],
    service: Service,
    k: Annotated[int, Query(ge=1, le=100)] = 5,
    encoder: Annotated[
        VideoEncoder,
        Query(description="clip: whole-video CLIP vectors; learned: the trained video encoder's features"),
    ] = VideoEncoder.CLIP,
) -> Response:
    """The k videos most like this one, by whole-video vectors. 409: `encoder=learned` on an index
    built without a video encoder."""
    return timed_search(
        service, SearchRequest(video_id=video_id, k=k, kinds=[ResultKind.VIDEO], encoder=encoder)
    )
