"""What routes are handed: the app's search service and settings, from `app.state`.

Dependencies rather than closures, so a route module needs no app to be defined, and a test can
build an app around any service. `async` because they only read state: a plain `def` would cost
each request a hop through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

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


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (422 naming them).

    FastAPI ignores them, so `?treshold=0.99` would silently run with the default threshold; the
    OpenAPI document declares each route's parameters as the whole set (schemathesis checks it).
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    declared = set(query_names(dependant))
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown query parameter; this route takes {', '.join(sorted(declared)) or 'none'}",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


def query_names(dependant: Dependant) -> list[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names.extend(query_names(sub))
    return names


strict_query = [Depends(known_query)]
