"""The API key: when `MEDIASEARCH_API_KEY` is set, guarded routes need the header `x-api-key`.

Declared as an OpenAPI security scheme (`APIKeyHeader`), not a header parameter, so generated
clients and /docs treat it as a credential; `responses.finish_openapi` drops the scheme where the
server has no key.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader

from mediasearch.core.settings import Settings
from mediasearch.query.api.deps import AppSettings
from mediasearch.query.api.errors import ApiError

API_KEY_HEADER = "x-api-key"

# auto_error=False: a missing key is answered by `require_key` as JSON, like every other error.
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="required on every route but /health when the server sets MEDIASEARCH_API_KEY",
)


def check_key_setting(settings: Settings) -> None:
    """Refuse to start with an empty key: it would accept an empty header, which is no protection.

    An empty value is most often a variable meant to carry a secret that was not set
    (`MEDIASEARCH_API_KEY=$KEY`), so the server stops rather than run open.
    """
    if settings.api_key is not None and not settings.api_key.get_secret_value().strip():
        raise ValueError(
            "MEDIASEARCH_API_KEY is set but empty: set it to a key, or unset it to serve without one"
        )


async def require_key(
    settings: AppSettings, x_api_key: Annotated[str | None, Security(api_key_header)] = None
) -> None:
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    # compare_digest: the time taken must not reveal how much of a guessed key was right. An empty
    # expected key never matches (create_app refuses one; this covers an app built another way).
    if not expected or x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise ApiError(401, "missing or wrong API key", {"header": API_KEY_HEADER})


# For every router but health: a liveness probe carries no key.
guarded = [Depends(require_key)]
