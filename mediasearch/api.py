"""The HTTP API (FastAPI): the same app runs under uvicorn locally and under Mangum on Lambda.

Errors are JSON `{error, detail}`; input the caller controls never yields a 500 or a stack trace.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediasearch import __version__, backends
from mediasearch.config import Settings, get_settings
from mediasearch.index.base import IndexError_
from mediasearch.links import MediaLinks
from mediasearch.records import (
    ErrorResponse,
    ItemResponse,
    ResultKind,
    SearchRequest,
    SearchResponse,
)
from mediasearch.search import QueryError, SearchService
from mediasearch.storage import LocalStore, StoreError, open_uri

log = logging.getLogger("mediasearch.api")

MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: object = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def _error(status: int, error: str, detail: object = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error, detail=detail).model_dump(), status_code=status)


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    settings = settings or get_settings()
    if service is None:
        service = SearchService(
            backends.index(settings),
            backends.encoder(settings),
            backends.store(settings),
            MediaLinks(presign_expiry_s=settings.presign_expiry_s),
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.warm_up()  # the first user request should not pay for loading the model
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="mediasearch",
        version=__version__,
        description="Semantic search over images and videos: text, image and video queries; scenes with timestamps.",
    )
    app.state.service = service
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # type: ignore[no-untyped-def]
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_request_bytes):
            response: Response = _error(413, "request too large", {"limit_bytes": settings.max_request_bytes})
        else:
            try:
                response = await call_next(request)
            except Exception:  # the last line of defence: log it, never show it
                log.exception("unhandled error", extra={"request_id": request_id})
                response = _error(500, "internal error", {"request_id": request_id})
        elapsed = (time.perf_counter() - started) * 1000
        response.headers["x-request-id"] = request_id
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            elapsed,
            extra={"request_id": request_id, "elapsed_ms": round(elapsed, 2)},
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body") or "body", "message": e["msg"]}
            for e in exc.errors()
        ]
        return _error(422, "invalid request", detail)

    @app.exception_handler(QueryError)
    async def on_query_error(_: Request, exc: QueryError) -> JSONResponse:
        return _error(exc.status, str(exc), {"field": exc.field})

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(IndexError_)
    async def on_index_error(_: Request, exc: IndexError_) -> JSONResponse:
        return _error(503, "index unavailable", str(exc))

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if settings.api_key is None:
            return
        expected = settings.api_key.get_secret_value().encode()
        # compare_digest: the time taken must not reveal how much of a guessed key was right.
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
            raise ApiError(401, "missing or wrong API key", {"header": "x-api-key"})

    guarded = [Depends(require_key)]

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, object]:
        return {"status": "ok", "version": __version__, "documents": service.index.count()}

    @app.post(
        "/search",
        response_model=SearchResponse,
        dependencies=guarded,
        tags=["search"],
        responses={
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    def search(request: SearchRequest) -> SearchResponse:
        return service.search(request)

    @app.get(
        "/videos/{video_id}/similar",
        response_model=SearchResponse,
        dependencies=guarded,
        tags=["search"],
        responses={404: {"model": ErrorResponse}},
    )
    def similar_videos(video_id: str, k: Annotated[int, Query(ge=1, le=100)] = 5) -> SearchResponse:
        return service.search(SearchRequest(video_id=video_id, k=k, kinds=[ResultKind.VIDEO]))

    @app.get(
        "/items/{item_id}",
        response_model=ItemResponse,
        dependencies=guarded,
        tags=["items"],
        responses={404: {"model": ErrorResponse}},
    )
    def item(item_id: str) -> ItemResponse:
        doc = service.index.get(item_id)
        if doc is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        links = service.links
        return ItemResponse(
            **doc.model_dump(
                exclude={"clip_vector", "caption_vector", "fingerprint", "model", "thumbnail", "strip"}
            ),
            url=links.url(doc.id, doc.uri),
            thumbnail_url=links.url(doc.id, doc.thumbnail, "thumbnail"),
            strip_url=links.url(doc.id, doc.strip, "strip"),
        )

    @app.get(
        "/media/{item_id}", dependencies=guarded, tags=["items"], responses={404: {"model": ErrorResponse}}
    )
    def media(item_id: str) -> Response:
        """The item's media file (videos support Range requests, so a player can seek to a scene)."""
        return _serve(item_id, "media")

    @app.get(
        "/media/{item_id}/{part}",
        dependencies=guarded,
        tags=["items"],
        responses={404: {"model": ErrorResponse}},
    )
    def media_part(item_id: str, part: Literal["thumbnail", "strip"]) -> Response:
        """An item's thumbnail, or a video's scene strip."""
        return _serve(item_id, part)

    def _serve(item_id: str, part: str) -> Response:
        # Only objects that indexed documents point at are served: no path comes from the caller.
        doc = service.index.get(item_id)
        if doc is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        uri = {"media": doc.uri, "thumbnail": doc.thumbnail or doc.uri, "strip": doc.strip}[part]
        if uri is None:
            raise ApiError(404, f"item {item_id!r} has no {part}")
        try:
            store, key = open_uri(uri)
            media_type = MEDIA_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")
            headers = {"cache-control": "private, max-age=3600"}
            if isinstance(store, LocalStore):
                path = store.path(key)
                if not path.is_file():
                    raise ApiError(404, "media not found", uri)
                return FileResponse(path, media_type=media_type, headers=headers)  # handles Range
            return Response(store.get(key), media_type=media_type, headers=headers)
        except StoreError as exc:
            raise ApiError(404, "media not found", str(exc)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("mediasearch").joinpath("web/index.html").read_text("utf-8"))

    return app
