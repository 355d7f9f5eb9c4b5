"""Health, open to all: a load balancer's probe carries no API key."""

from __future__ import annotations

from fastapi import APIRouter

from mediasearch.core.records import ErrorResponse
from mediasearch.query.api.deps import Service

router = APIRouter(tags=["ops"])


@router.get(
    "/health",
    responses={
        503: {
            "model": ErrorResponse,
            "description": "the index cannot be read (no collection yet, damaged data, backend down); "
            "`detail.reason` says why",
        }
    },
)
def health(service: Service) -> dict[str, object]:
    """Status, version and document count, from a real read of the index: a 200 means searches can
    be answered, not just that the process is up."""
    return service.health()
