"""Indexed items and their media: only what documents point at is served, never a caller's path."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse, Response

from mediasearch.core.records import ErrorResponse, ItemResponse
from mediasearch.query.api.deps import Service
from mediasearch.query.api.security import guarded
from mediasearch.query.search import MediaFile

router = APIRouter(tags=["items"], dependencies=guarded, responses={404: {"model": ErrorResponse}})

# Ids are sha1 prefixes (plus a scene suffix); anything much longer is not one of ours.
ItemId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/items/{item_id}", response_model=ItemResponse)
def item(item_id: ItemId, service: Service) -> ItemResponse:
    return service.item(item_id)


@router.get("/media/{item_id}")
def media(item_id: ItemId, service: Service) -> Response:
    """The item's media file (videos support Range requests, so a player can seek to a scene)."""
    return _send(service.media(item_id, "media"))


@router.get("/media/{item_id}/{part}")
def media_part(item_id: ItemId, part: Literal["thumbnail", "strip"], service: Service) -> Response:
    """An item's thumbnail, or a video's scene strip."""
    return _send(service.media(item_id, part))


def _send(media: MediaFile) -> Response:
    headers = {"cache-control": "private, max-age=3600"}
    if media.path is not None:
        return FileResponse(media.path, media_type=media.media_type, headers=headers)  # handles Range
    return Response(media.data, media_type=media.media_type, headers=headers)
