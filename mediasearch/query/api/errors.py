"""Every error the API answers, as JSON `{error, detail}` with a 4xx or 503 status.

The last-resort 500 is the request-context middleware's (middleware.py), so that even an error raised
outside a route is answered as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediasearch.core.errors import ModelLoadError
from mediasearch.core.records import ErrorResponse
from mediasearch.index.base import IndexError_, IndexNotReady, IndexUnreadable
from mediasearch.query.search import NotFound, QueryError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error only the HTTP layer knows of (the API key); the service raises its own."""

    def __init__(self, status: int, error: str, detail: object = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` when a streamed body passes the limit.

    An HTTPException so that FastAPI's body parsing re-raises it as it is, instead of turning it into
    a 400 "error parsing the body".
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, "request too large")
        self.limit = limit


def error_response(
    status: int, error: str, detail: object = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error, detail=detail).model_dump(), status_code=status, headers=headers
    )


def too_large(limit: int) -> JSONResponse:
    return error_response(413, "request too large", {"limit_bytes": limit})


async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    # pydantic prefixes a validator's own message with "Value error, ": the caller needs only the message.
    detail = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p != "body") or "body",
            "message": e["msg"].removeprefix("Value error, "),
        }
        for e in exc.errors()
    ]
    return error_response(422, "invalid request", detail)


async def on_query_error(_: Request, exc: QueryError) -> JSONResponse:
    return error_response(exc.status, str(exc), exc.detail)


async def on_not_found(_: Request, exc: NotFound) -> JSONResponse:
    return error_response(404, str(exc), exc.detail)


async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.error, exc.detail)


async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc, BodyTooLarge):
        return too_large(exc.limit)
    # The exception's headers are part of the answer: `Allow` on a 405, `Content-Range` on a 416.
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def on_model_unavailable(request: Request, exc: ModelLoadError) -> JSONResponse:
    # The server's setup, not the caller's input. The message names the model's path or hub id:
    # that goes to the log, the caller gets an id.
    request_id = _request_id(request)
    log.error("model unavailable: %s", exc, extra={"request_id": request_id})
    reason = "the query model could not be loaded; the server log has the details under this request id"
    return error_response(503, "model unavailable", {"reason": reason, "request_id": request_id})


def _request_id(request: Request) -> object:
    return request.scope.get("state", {}).get("request_id")


async def on_index_error(request: Request, exc: IndexError_) -> JSONResponse:
    # The backend's message can name hosts and tables: it goes to the log, the caller gets an id.
    request_id = _request_id(request)
    log.error("index error: %s", exc, extra={"request_id": request_id})
    reason = "the index backend failed; the server log has the details under this request id"
    return error_response(503, "index unavailable", {"reason": reason, "request_id": request_id})


async def on_index_not_ready(request: Request, exc: IndexNotReady) -> JSONResponse:
    # Written to be shown: what is missing and what builds it. Not the operator's fault until an
    # ingest has run, so a warning, not an error.
    log.warning("index not ready: %s", exc, extra={"request_id": _request_id(request)})
    return error_response(503, "index not ready", {"reason": str(exc)})


async def on_index_unreadable(request: Request, exc: IndexUnreadable) -> JSONResponse:
    # The message names only the collection; the backend's own error (paths, files) is the cause,
    # and goes to the log with the request id the caller is given.
    request_id = _request_id(request)
    log.error("index unreadable: %s (cause: %r)", exc, exc.__cause__, extra={"request_id": request_id})
    return error_response(503, "index unreadable", {"reason": str(exc), "request_id": request_id})


def install_error_handlers(app: FastAPI) -> None:
    # The decorator form, called directly: unlike add_exception_handler, it takes handlers typed for
    # their own exception class.
    app.exception_handler(RequestValidationError)(on_validation)
    app.exception_handler(QueryError)(on_query_error)
    app.exception_handler(NotFound)(on_not_found)
    app.exception_handler(ApiError)(on_api_error)
    app.exception_handler(StarletteHTTPException)(on_http_error)
    app.exception_handler(ModelLoadError)(on_model_unavailable)
    # Starlette picks the handler of the most specific class, so these two win over IndexError_'s.
    app.exception_handler(IndexError_)(on_index_error)
    app.exception_handler(IndexNotReady)(on_index_not_ready)
    app.exception_handler(IndexUnreadable)(on_index_unreadable)
