"""The search page and its own assets (not part of the API schema)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from mediasearch.query.api.errors import ApiError

router = APIRouter(include_in_schema=False)

# The page's own assets: a fixed list, so no path from the caller ever reaches the filesystem.
WEB_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page loads only its own script and style; media may come from presigned S3 (or LocalStack) URLs.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(
        _web_file("index.html"),
        headers={"content-security-policy": PAGE_CSP, "cache-control": "no-cache"},
    )


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page says; they all take an SVG."""
    return static("favicon.svg")


@router.get("/static/{name}")
def static(name: str) -> Response:
    media_type = WEB_ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no asset {name!r}")
    return Response(_web_file(name), media_type=media_type, headers={"cache-control": "no-cache"})


def _web_file(name: str) -> str:
    # Read per request: a few KiB, and an edited page shows up without a restart.
    return resources.files("mediasearch").joinpath("web", name).read_text("utf-8")
