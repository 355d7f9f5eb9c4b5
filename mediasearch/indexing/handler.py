"""The CLIP embedding handler under the SageMaker inference contract.

`model_handlers/clip/inference.py` exposes `model_fn`, `input_fn`, `predict_fn` and `output_fn` from
an instance of `ClipHandler`; the local batch-transform runner calls the same methods in-process.
`predict_fn` is split into `prepare` (fetch + decode + preprocess: I/O and CPU, run in threads) and
`embed` (the model), so the runner can overlap one batch's decoding with the previous one's forward.

Content types:
- `application/jsonlines` (batch transform, SplitType=Line): manifest lines in, result lines out, one
  per input line and in order; a line that fails carries `"error"` and never fails the batch.
- `application/x-image` (or image/*): one image in, `{"model", "embeddings": [[...]]}` out.
- `application/json` `{"text": [...]}`: texts in, the same shape out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from mediasearch.core.exif import PhotoMetadata, read_exif
from mediasearch.core.images import MAX_IMAGE_PIXELS, ImageDecodeError, decode_image, source_size
from mediasearch.core.layout import model_tag
from mediasearch.core.records import ManifestRecord, MediaKind, TransformResult
from mediasearch.core.storage import StoreError, read_uri
from mediasearch.core.wire import (
    IMAGE_TYPES,
    JSONLINES_TYPES,
    EmbeddingResponse,
    TextQuery,
    dumps_results,
    error_result,
    parse_manifest_line,
)
from mediasearch.encoders.base import ClipEncoder

if TYPE_CHECKING:
    # Type-only: with the ONNX engine and no captioner, the SageMaker handler never imports torch.
    from mediasearch.models.captioner import CaptionModel


class BadRequest(ValueError):
    """The request body cannot be handled; the message says which part and why."""


@dataclass
class ManifestBatch:
    """Parsed manifest lines: a record, or the error for a line that was not a valid record."""

    items: list[ManifestRecord | TransformResult]


@dataclass
class PreparedBatch:
    records: list[ManifestRecord | TransformResult]
    pixels: np.ndarray | None  # CLIP input rows for the records that decoded, in order
    caption_pixels: np.ndarray | None = None  # captioner input rows, same order
    ok_rows: list[int] = field(default_factory=list)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    photos: dict[int, PhotoMetadata] = field(default_factory=dict)  # images' EXIF, by record


class ClipHandler:
    """CLIP embeddings, and captions when a captioner is given (one decode feeds both models).

    `model` is either engine's CLIP (PyTorch or ONNX Runtime, see `ClipEncoder`). With `model=None` and
    a captioner it is the captioning handler (`model_handlers/captioning`).
    """

    def __init__(
        self,
        model: ClipEncoder | None,
        fetch: Callable[[str], bytes] = read_uri,
        decode_workers: int = 2,
        max_pixels: int = MAX_IMAGE_PIXELS,
        captioner: CaptionModel | None = None,
    ) -> None:
        if model is None and captioner is None:
            raise ValueError("a handler needs a CLIP model, a captioner or both")
        self.model = model
        self.captioner = captioner
        self.fetch = fetch
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode")

    @property
    def model_ids(self) -> tuple[str, ...]:
        """Identities of the models whose output this handler writes (CLIP, then the captioner)."""
        return tuple(m.identity.id for m in (self.model, self.captioner) if m is not None)

    @property
    def output_tag(self) -> str:
        """The work layout's folder for this handler's outputs: a model change never reuses them."""
        return model_tag(*self.model_ids)

    # -- the SageMaker contract -------------------------------------------------------------------

    def input_fn(self, body: bytes | str, content_type: str) -> ManifestBatch | Image.Image | TextQuery:
        ctype = (content_type or "").split(";")[0].strip().lower()
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if ctype in JSONLINES_TYPES:
            text = raw.decode("utf-8", errors="replace")
            lines = [ln for ln in text.splitlines() if ln.strip()]
            return ManifestBatch([parse_manifest_line(ln, i + 1) for i, ln in enumerate(lines)])
        if ctype in IMAGE_TYPES:
            try:
                return decode_image(raw, self.max_pixels)
            except ImageDecodeError as exc:
                raise BadRequest(f"request body: {exc}") from None
        if ctype == "application/json":
            try:
                return TextQuery.model_validate_json(raw)
            except ValidationError as exc:
                raise BadRequest(
                    f'request body must be {{"text": [str, ...]}}: {exc.errors()[0]["msg"]}'
                ) from None
        raise BadRequest(
            f"unsupported content type {content_type!r}: use application/jsonlines, application/x-image "
            "or application/json"
        )

    def predict_fn(
        self, data: ManifestBatch | Image.Image | TextQuery
    ) -> list[TransformResult] | EmbeddingResponse:
        if isinstance(data, ManifestBatch):
            return self.embed(self.prepare(data.items))
        if isinstance(data, TextQuery):
            if self.model is None:
                raise BadRequest("this endpoint captions images; it has no text encoder")
            return EmbeddingResponse(
                model=self.model.identity.id, embeddings=self.model.embed_texts(data.text).tolist()
            )
        # __init__ refuses a handler with neither model.
        source = self.model if self.model is not None else self.captioner
        assert source is not None
        response = EmbeddingResponse(model=source.identity.id)
        if self.model is not None:
            response.embeddings = self.model.embed_images([data]).tolist()
        if self.captioner is not None:
            response.captions = self.captioner.caption_images([data])
        return response

    def output_fn(
        self, prediction: list[TransformResult] | EmbeddingResponse, accept: str
    ) -> tuple[bytes, str]:
        if isinstance(prediction, EmbeddingResponse):
            return prediction.model_dump_json().encode(), "application/json"
        return dumps_results(prediction), "application/jsonlines"

    # -- the two halves of a batch prediction ------------------------------------------------------

    def _load_one(
        self, record: ManifestRecord
    ) -> tuple[np.ndarray | None, np.ndarray | None, tuple[int, int], PhotoMetadata]:
        data = self.fetch(record.uri)
        image = decode_image(data, self.max_pixels)
        clip = self.model.preprocess(image) if self.model is not None else None
        caption = self.captioner.preprocess(image) if self.captioner is not None else None
        # EXIF here, from the bytes already fetched: the transform runs the same way locally and on
        # SageMaker, and the loader would have to read every image again to get it. Frames are JPEGs
        # of our own making, with none.
        photo = read_exif(data) if record.kind is MediaKind.IMAGE else PhotoMetadata()
        # The size as stored, not as decoded: large images come back reduced (core.images).
        return clip, caption, source_size(image), photo

    def prepare(self, records: Sequence[ManifestRecord | TransformResult]) -> PreparedBatch:
        """Fetch, decode and preprocess concurrently; failures become per-record errors."""
        for m in (self.model, self.captioner):
            if m is not None:
                m.load()
        batch = PreparedBatch(records=list(records), pixels=None)
        todo = [(i, r) for i, r in enumerate(records) if not isinstance(r, TransformResult)]
        futures = [(i, self._pool.submit(self._load_one, r)) for i, r in todo]
        rows: list[np.ndarray] = []
        caption_rows: list[np.ndarray] = []
        for i, fut in futures:
            try:
                pixels, caption_pixels, size, photo = fut.result()
            except (ImageDecodeError, StoreError) as exc:
                batch.errors[i] = str(exc)
                continue
            except Exception as exc:  # one bad record must never fail the batch
                batch.errors[i] = f"{type(exc).__name__}: {exc}"
                continue
            batch.ok_rows.append(i)
            batch.sizes[i] = size
            batch.photos[i] = photo
            if pixels is not None:
                rows.append(pixels)
            if caption_pixels is not None:
                caption_rows.append(caption_pixels)
        batch.pixels = np.stack(rows) if rows else None
        batch.caption_pixels = np.stack(caption_rows) if caption_rows else None
        return batch

    def embed(self, batch: PreparedBatch) -> list[TransformResult]:
        vectors = (
            self.model.embed_pixels(batch.pixels)
            if self.model is not None and batch.pixels is not None
            else None
        )
        captions = (
            self.captioner.caption_pixels(batch.caption_pixels)
            if self.captioner is not None and batch.caption_pixels is not None
            else None
        )
        row_of = {i: n for n, i in enumerate(batch.ok_rows)}
        out: list[TransformResult] = []
        for i, record in enumerate(batch.records):
            if isinstance(record, TransformResult):
                out.append(record)
            elif i in batch.errors:
                out.append(error_result(record, batch.errors[i]))
            else:
                w, h = batch.sizes[i]
                row = row_of[i]
                out.append(
                    TransformResult(
                        **record.model_dump(),
                        clip=vectors[row] if vectors is not None else None,
                        model=self.model.identity.id if self.model is not None else None,
                        caption=captions[row] if captions is not None else None,
                        width=w,
                        height=h,
                        **asdict(batch.photos.get(i, PhotoMetadata())),
                    )
                )
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class EntryPoints:
    """The four module-level functions the SageMaker inference toolkit looks up in `inference.py`.

    `input_fn` and `output_fn` get no model argument under that contract, so the handler that
    `model_fn` built is kept here (the toolkit runs one model per worker process). A handler script
    is then two lines: build this from a factory and export its four functions.
    """

    def __init__(self, factory: Callable[[str], ClipHandler]) -> None:
        self.factory = factory
        self.handler: ClipHandler | None = None

    def _current(self) -> ClipHandler:
        if self.handler is None:
            raise RuntimeError("model_fn has not run: the serving container calls it before any request")
        return self.handler

    def model_fn(self, model_dir: str) -> ClipHandler:
        handler = self.factory(model_dir)
        # Load now: the container reports healthy only after model_fn, so the first request stays fast.
        for model in (handler.model, handler.captioner):
            if model is not None:
                model.load()
        self.handler = handler
        return handler

    def input_fn(self, request_body: bytes | str, request_content_type: str) -> Any:
        try:
            return self._current().input_fn(request_body, request_content_type)
        except BadRequest as exc:
            raise _toolkit_bad_request(exc) from None

    def predict_fn(self, input_data: Any, model: ClipHandler) -> Any:
        return model.predict_fn(input_data)

    def output_fn(self, prediction: Any, accept: str) -> tuple[bytes, str]:
        return self._current().output_fn(prediction, accept)


def _toolkit_bad_request(exc: BadRequest) -> Exception:
    """A 400 for the caller under the SageMaker toolkit (a plain exception becomes a 500)."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:  # not inside a SageMaker container
        return exc
    return GenericInferenceToolkitError(400, str(exc))
