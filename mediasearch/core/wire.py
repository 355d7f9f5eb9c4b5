"""Wire formats: manifest and transform-output JSON Lines, and the endpoint's JSON bodies.

The transform handler, the manifest writers, the loader and the SageMaker query encoder all read and
write these, so the forms are defined once here, beside the records they carry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, Field, ValidationError

from mediasearch.core.records import ManifestRecord, TransformResult, stable_id

JSONLINES_CONTENT_TYPE = "application/jsonlines"
JSONLINES_TYPES = (JSONLINES_CONTENT_TYPE, "application/x-jsonlines", "application/jsonl")
IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")
MAX_TEXTS = 256


class TextQuery(BaseModel):
    """`application/json` request body of the embedding endpoint: texts to embed."""

    text: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class EmbeddingResponse(BaseModel):
    """The endpoint's JSON response for texts or one image."""

    model: str
    embeddings: list[list[float]] = Field(default_factory=list)
    captions: list[str] | None = None


def dumps_manifest(records: Sequence[ManifestRecord]) -> bytes:
    """Manifest lines (exclude_none keeps them short); every manifest writer uses this."""
    return "".join(json.dumps(r.model_dump(mode="json", exclude_none=True)) + "\n" for r in records).encode()


def parse_manifest_line(line: str, line_no: int) -> ManifestRecord | TransformResult:
    """A manifest record, or an error result naming the line when it is not a valid record."""
    try:
        return ManifestRecord.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "line"
        message = f"manifest line {line_no} is not a valid record ({where}: {first['msg']})"
        return TransformResult(id=f"line-{line_no}-{stable_id(line)[:8]}", uri="-", error=message)


def dumps_results(results: Sequence[TransformResult]) -> bytes:
    return "".join(r.model_dump_json(exclude_none=True) + "\n" for r in results).encode()


def parse_output_lines(body: bytes | str) -> list[TransformResult]:
    """Read a `.out` file back; used by the loader and by tests."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return [TransformResult.model_validate_json(ln) for ln in text.splitlines() if ln.strip()]


def error_result(record: ManifestRecord, message: str) -> TransformResult:
    return TransformResult(**record.model_dump(), error=message)
