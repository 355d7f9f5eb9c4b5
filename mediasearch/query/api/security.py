"""The API key: when `MEDIASEARCH_API_KEY` is set, guarded routes need the header `x-api-key`."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from mediasearch.query.api.deps import AppSettings
from mediasearch.query.api.errors import ApiError


async def require_key(settings: AppSettings, x_api_key: Annotated[str | None, Header()] = None) -> None:
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    # compare_digest: the time taken must not reveal how much of a guessed key was right.
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise ApiError(401, "missing or wrong API key", {"header": "x-api-key"})


# For every router but health: a liveness probe carries no key.
guarded = [Depends(require_key)]
