"""The HTTP API (FastAPI): the same app runs under uvicorn locally and under Mangum on Lambda.

Errors are JSON `{error, detail}`; input the caller controls never yields a 500 or a stack trace.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediasearch import __version__, backends
from mediasearch.core.logs import configure_logging
from mediasearch.core.records import (
    ErrorResponse,
    ItemResponse,
    ResultKind,
    SearchRequest,
    SearchResponse,
)
from mediasearch.core.settings import Settings, get_settings
from mediasearch.core.storage import LocalStore, StoreError, open_uri
from mediasearch.index.base import IndexError_
from mediasearch.query.search import QueryError, SearchService

log = logging.getLogger("mediasearch.query.api")
access_log = logging.getLogger("mediasearch.access")

# The page's own assets: a fixed list, so no path from the caller ever reaches the filesystem.
WEB_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page loads only its own script and style; media may come from presigned S3 (or LocalStack) URLs.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# A caller's x-request-id is echoed into logs and headers only if it looks like an id.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Ids are sha1 prefixes (plus a scene suffix); anything much longer is not one of ours.
ItemId = Annotated[str, Path(min_length=1, max_length=128)]

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


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a streamed body passes the limit.

    An HTTPException so that FastAPI's body parsing re-raises it as it is, instead of turning it into
    a 400 "error parsing the body".
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, "request too large")
        self.limit = limit


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "request too large", {"limit_bytes": limit})


class RequestContext:
    """The outermost layer of the app: request id, body size limit, last-resort 500, one log line.

    Plain ASGI rather than `@app.middleware("http")`: it must see the body as it streams (a chunked
    upload has no content-length to check) and it costs less per request.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        received = 0
        limit = self.max_body_bytes

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                out = MutableHeaders(scope=message)
                out["x-request-id"] = request_id
                out.setdefault("x-content-type-options", "nosniff")
            await send(message)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await _too_large(limit)(scope, receive, send_with_id)
            else:
                await self.app(scope, counting_receive, send_with_id)
        except BodyTooLarge:
            if not response_started:
                await _too_large(limit)(scope, receive, send_with_id)
        except Exception:  # the last line of defence: log it with its trace, never show the trace
            log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                await _error(500, "internal error", {"request_id": request_id})(scope, receive, send_with_id)
        finally:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            method, path = scope.get("method", ""), scope.get("path", "")
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                path,
                status,
                elapsed,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "elapsed_ms": elapsed,
                },
            )


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not logging.getLogger().handlers:
        # Nobody configured logging (a bare `uvicorn --factory`, a worker process): JSON lines.
        # Where a host already did (Lambda, pytest, `mediasearch serve`), its choice stands.
        configure_logging()
    if service is None:
        # The same service the CLI searches with, caption and hybrid modes included.
        service = backends.search_service(settings)

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

    # Added last, so it is outermost: it sees every request and every response, CORS ones included.
    app.add_middleware(RequestContext, max_body_bytes=settings.max_request_bytes)

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
        if isinstance(exc, BodyTooLarge):
            return _too_large(exc.limit)
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(IndexError_)
    async def on_index_error(request: Request, exc: IndexError_) -> JSONResponse:
        # The backend's message can name hosts and tables: it goes to the log, the caller gets an id.
        request_id = request.scope.get("state", {}).get("request_id")
        log.error("index error: %s", exc, extra={"request_id": request_id})
        return _error(503, "index unavailable", {"request_id": request_id})

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
        check_image_size(request)
        return service.search(request)

    def check_image_size(request: SearchRequest) -> None:
        # The request limit bounds the JSON; this bounds what the image decoder is handed.
        limit = settings.max_image_bytes
        if request.image is not None:
            decoded = len(request.image) * 3 // 4 - request.image[-2:].count("=")
            if decoded > limit:
                raise ApiError(413, "image too large", {"field": "image", "limit_bytes": limit})
        elif request.image_uri is not None and service.store is not None:
            key = service.store.key_of(request.image_uri)
            info = service.store.stat(key) if key is not None else None  # the service explains a miss
            if info is not None and info.size > limit:
                raise ApiError(413, "image too large", {"field": "image_uri", "limit_bytes": limit})

    @app.get(
        "/videos/{video_id}/similar",
        response_model=SearchResponse,
        dependencies=guarded,
        tags=["search"],
        responses={404: {"model": ErrorResponse}},
    )
    def similar_videos(
        video_id: Annotated[str, Path(min_length=1, max_length=64)],
        k: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> SearchResponse:
        return service.search(SearchRequest(video_id=video_id, k=k, kinds=[ResultKind.VIDEO]))

    @app.get(
        "/items/{item_id}",
        response_model=ItemResponse,
        dependencies=guarded,
        tags=["items"],
        responses={404: {"model": ErrorResponse}},
    )
    def item(item_id: ItemId) -> ItemResponse:
        doc = service.index.get(item_id)
        if doc is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        return ItemResponse(
            **service.media_fields(doc), kind=doc.kind, scene=doc.scene, t_start=doc.t_start, t_end=doc.t_end
        )

    @app.get(
        "/media/{item_id}", dependencies=guarded, tags=["items"], responses={404: {"model": ErrorResponse}}
    )
    def media(item_id: ItemId) -> Response:
        """The item's media file (videos support Range requests, so a player can seek to a scene)."""
        return _serve(item_id, "media")

    @app.get(
        "/media/{item_id}/{part}",
        dependencies=guarded,
        tags=["items"],
        responses={404: {"model": ErrorResponse}},
    )
    def media_part(item_id: ItemId, part: Literal["thumbnail", "strip"]) -> Response:
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
        # Errors name the item, never the file: paths and bucket layout stay in the log.
        missing = ApiError(404, "media not found", {"id": item_id, "part": part})
        try:
            store, key = open_uri(uri)
            media_type = MEDIA_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")
            headers = {"cache-control": "private, max-age=3600"}
            if isinstance(store, LocalStore):
                path = store.path(key)
                if not path.is_file():
                    log.warning("media of %s is missing: %s", item_id, uri)
                    raise missing
                return FileResponse(path, media_type=media_type, headers=headers)  # handles Range
            return Response(store.get(key), media_type=media_type, headers=headers)
        except StoreError as exc:
            log.warning("media of %s cannot be read: %s", item_id, exc)
            raise missing from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(
            _web_file("index.html"),
            headers={"content-security-policy": PAGE_CSP, "cache-control": "no-cache"},
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media_type = WEB_ASSETS.get(name)
        if media_type is None:
            raise ApiError(404, f"no asset {name!r}")
        return Response(_web_file(name), media_type=media_type, headers={"cache-control": "no-cache"})

    return app


def _web_file(name: str) -> str:
    # Read per request: a few KiB, and an edited page shows up without a restart.
    return resources.files("mediasearch").joinpath("web", name).read_text("utf-8")
