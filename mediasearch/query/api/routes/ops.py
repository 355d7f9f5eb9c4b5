"""Liveness, open to all: a load balancer's probe carries no API key."""

from __future__ import annotations

from fastapi import APIRouter

from mediasearch.query.api.deps import Service

router = APIRouter(tags=["ops"])


@router.get("/health")
def health(service: Service) -> dict[str, object]:
    return service.health()
