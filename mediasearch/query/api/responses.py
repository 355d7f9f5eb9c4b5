"""What the OpenAPI document promises: the error bodies the app really sends, status by status.

FastAPI documents its own `{detail: [{loc, msg, type}]}` body for 422, while `errors.on_validation`
answers `{error, detail: [{field, message}]}`; and it cannot know which statuses the error handlers
produce. Routes list theirs with `documented(...)`; `finish_openapi` puts the real 422 body in place
of FastAPI's on every operation and, where the server has no API key, removes the key's security
scheme (so a client generated from the document asks for a key only where one is needed).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from mediasearch.core.records import ErrorResponse
from mediasearch.core.settings import Settings


class FieldError(BaseModel):
    field: str = Field(
        description="the part of the request at fault, dotted: `k`, `filters.min_width`, `body`"
    )
    message: str


class ValidationErrorResponse(BaseModel):
    """The 422 body: every field that does not match the schema, each with what is wrong with it."""

    error: Literal["invalid request"]
    detail: list[FieldError]


DESCRIPTIONS: dict[int, str] = {
    400: "the request is well formed but cannot be answered as asked (for example an image that does "
    "not decode, or two queries at once); `detail.field` names the part at fault",
    401: "the API key is missing or wrong (only when the server is configured with one)",
    404: "nothing indexed answers to this id, or the item has no such media",
    409: "the index cannot answer this kind of query: `encoder=learned` where it was built without a "
    "video encoder",
    413: "the request body or the query image is over its limit; `detail.limit_bytes` says which limit",
    416: "the Range header asks for bytes the file does not have; `Content-Range` gives its size",
    422: "the request does not match the schema; `detail` lists each field at fault",
    501: "caption search is not available on this server",
    503: "the index or a model cannot be used right now; `detail.reason` says why",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer these error statuses (422: see `finish_openapi`)."""
    return {status: {"model": ErrorResponse, "description": DESCRIPTIONS[status]} for status in statuses}


# FastAPI's own 422 schemas, referenced by nothing once every 422 is ours.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_REF = "#/components/schemas/{model}"


def finish_openapi(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` describe the app as configured (see the module docstring)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            schemas.pop(name, None)
        ours = ValidationErrorResponse.model_json_schema(ref_template=_REF)
        schemas.update(ours.pop("$defs", {}))
        schemas[ValidationErrorResponse.__name__] = ours
        body = {"application/json": {"schema": {"$ref": _REF.format(model=ValidationErrorResponse.__name__)}}}
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                if "422" in operation.get("responses", {}):
                    operation["responses"]["422"] = {"description": DESCRIPTIONS[422], "content": body}
        if settings.api_key is None:
            doc.get("components", {}).pop("securitySchemes", None)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
