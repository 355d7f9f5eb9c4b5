"""Indexed items and their media: only what documents point at is served, never a caller's path."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from mediasearch.core.records import ItemResponse
from mediasearch.query.api.deps import Service, strict_query
from mediasearch.query.api.responses import documented
from mediasearch.query.api.security import guarded
from mediasearch.query.search import MEDIA_TYPES, MediaFile

router = APIRouter(
    tags=["items"], dependencies=[*guarded, *strict_query], responses=documented(401, 404, 503)
)

# Ids are sha1 prefixes (plus a scene suffix); anything much longer is not one of ours.
ItemId = Annotated[str, Path(min_length=1, max_length=128)]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_MEDIA_CONTENT = {
    media_type: _BINARY for media_type in sorted({*MEDIA_TYPES.values(), "application/octet-stream"})
}
MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file", "content": _MEDIA_CONTENT},
    206: {"description": "the bytes a Range header asked for", "content": _MEDIA_CONTENT},
    **documented(400, 416),
}
MEDIA_RESPONSES[400]["description"] = "the Range header is malformed"


@router.get("/items/{item_id}", response_model=ItemResponse)
def item(item_id: ItemId, service: Service) -> ItemResponse:
    """A document without its vectors, with URLs for its media."""
    return service.item(item_id)


@router.get("/media/{item_id}", response_class=Response, responses=MEDIA_RESPONSES)
def media(item_id: ItemId, service: Service) -> Response:
    """The item's media file (videos support Range requests, so a player can seek to a scene)."""
    return _send(service.media(item_id, "media"))


@router.get("/media/{item_id}/{part}", response_class=Response, responses=MEDIA_RESPONSES)
def media_part(item_id: ItemId, part: Literal["thumbnail", "strip"], service: Service) -> Response:
    """An item's thumbnail, or a video's scene strip."""
    return _send(service.media(item_id, part))


class RangeError(HTTPException):
    """A Range header the file cannot answer, raised while the response starts, so that it is
    answered as JSON by the app's error handlers rather than Starlette's plain text."""


class MediaFileResponse(FileResponse):
    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise RangeError(400, f"bad Range header: {exc.content}") from None
        except RangeNotSatisfiable as exc:
            raise RangeError(
                416, "range not satisfiable", headers={"content-range": f"bytes */{exc.max_size}"}
            ) from None


def _send(media: MediaFile) -> Response:
    headers = {"cache-control": "private, max-age=3600"}
    if media.path is not None:
        return MediaFileResponse(media.path, media_type=media.media_type, headers=headers)  # handles Range
    return Response(media.data, media_type=media.media_type, headers=headers)
