"""What routes are handed: the app's search service and settings, from `app.state`.

Dependencies rather than closures, so a route module needs no app to be defined, and a test can
build an app around any service. `async` because they only read state: a plain `def` would cost
each request a hop through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mediasearch.core.settings import Settings
from mediasearch.query.search import SearchService


async def search_service(request: Request) -> SearchService:
    service: SearchService = request.app.state.service
    return service


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Service = Annotated[SearchService, Depends(search_service)]
AppSettings = Annotated[Settings, Depends(app_settings)]
