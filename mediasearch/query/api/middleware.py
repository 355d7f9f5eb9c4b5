"""The outermost layer of the app: request id, body size limit, last-resort 500, one log line."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediasearch.query.api.errors import BodyTooLarge, error_response, too_large

log = logging.getLogger(__name__)
access_log = logging.getLogger("mediasearch.access")

# A caller's x-request-id is echoed into logs and headers only if it looks like an id.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContext:
    """Request id, body size limit, last-resort 500 and the access log line, for every request.

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
                await too_large(limit)(scope, receive, send_with_id)
            else:
                await self.app(scope, counting_receive, send_with_id)
        except BodyTooLarge:
            if not response_started:
                await too_large(limit)(scope, receive, send_with_id)
        except Exception:  # the last line of defence: log it with its trace, never show the trace
            log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                await error_response(500, "internal error", {"request_id": request_id})(
                    scope, receive, send_with_id
                )
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
