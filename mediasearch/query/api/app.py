"""`create_app`: the FastAPI app, its middleware and error mapping, and the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mediasearch import __version__, backends
from mediasearch.core.logs import configure_logging
from mediasearch.core.settings import Settings, get_settings
from mediasearch.query.api.errors import install_error_handlers
from mediasearch.query.api.middleware import RequestContext
from mediasearch.query.api.responses import finish_openapi
from mediasearch.query.api.routes import ROUTERS
from mediasearch.query.api.security import check_key_setting
from mediasearch.query.search import SearchService


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.service.warm_up()  # the first user request should not pay for loading the model
    yield


def create_app(settings: Settings | None = None, service: SearchService | None = None) -> FastAPI:
    settings = settings or get_settings()
    check_key_setting(settings)
    if not logging.getLogger().handlers:
        # Nobody configured logging (a bare `uvicorn --factory`, a worker process): JSON lines.
        # Where a host already did (Lambda, pytest, `mediasearch serve`), its choice stands.
        configure_logging()
    if service is None:
        # The same service the CLI searches with, caption and hybrid modes included.
        service = backends.search_service(settings)
    app = FastAPI(
        lifespan=lifespan,
        title="mediasearch",
        version=__version__,
        description="Semantic search over images and videos: text, image and video queries; scenes with timestamps.",
    )
    # What the routes' dependencies (deps.py) hand them, and what the lifespan warms up.
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
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    finish_openapi(app, settings)
    return app
