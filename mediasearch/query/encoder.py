"""Query encoders: turn a query's text or image into a CLIP vector.

Two implementations behind one interface: in-process (the local default, the API container, and the
query Lambda with the ONNX engine, which holds only ONNX Runtime and the export) and a SageMaker
real-time/serverless endpoint (the query Lambda without a model). The endpoint speaks the handler's
JSON contract, so one model artefact serves batch transform and queries.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mediasearch.core.images import decode_image
from mediasearch.core.vectors import l2_normalise
from mediasearch.core.wire import EmbeddingResponse, TextQuery
from mediasearch.query.text_cache import TextVectorCache

if TYPE_CHECKING:
    # Type-only: the model stack is for whoever builds a LocalEncoder, never for this import.
    from mediasearch.encoders.base import ClipEncoder


class TextVectoriser(Protocol):
    """What caption mode needs: the caption text embedder (see `mediasearch.models.text_embedder`)."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class LazyTextEmbedder:
    """A `TextVectoriser` built on first use.

    Building the caption text embedder imports torch and transformers. Deferring that keeps the
    search service buildable without them (the query Lambda installs neither): there, only caption
    queries fail, with the `ImportError` the service turns into a 501.
    """

    def __init__(self, build: Callable[[], TextVectoriser]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._embedder: TextVectoriser | None = None
        self._missing: ImportError | None = None

    def get(self) -> TextVectoriser:
        with self._lock:
            if self._embedder is None:
                if self._missing is not None:
                    # A fresh error each time: re-raising one instance would grow its traceback per query.
                    raise ImportError(str(self._missing), name=self._missing.name)
                try:
                    self._embedder = self._build()
                except ImportError as exc:
                    self._missing = exc  # a library that is not installed stays so: no import per query
                    raise
            return self._embedder

    @property
    def dim(self) -> int:
        return self.get().dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.get().embed(texts)


class QueryEncoder(ABC):
    @abstractmethod
    def encode_text(self, text: str) -> np.ndarray: ...

    @abstractmethod
    def encode_image(self, data: bytes) -> np.ndarray:
        """Raises `ImageDecodeError` for bytes that are not a usable image."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Load what the first query would otherwise wait for."""


class LocalEncoder(QueryEncoder):
    """Encodes in this process with either engine's CLIP (PyTorch or ONNX Runtime)."""

    def __init__(
        self, model: ClipEncoder, max_pixels: int = 40_000_000, text_cache: TextVectorCache | None = None
    ) -> None:
        self.model = model
        self.max_pixels = max_pixels
        self.text_cache = text_cache

    def encode_text(self, text: str) -> np.ndarray:
        if self.text_cache is None:
            return self.model.embed_texts([text])[0]
        # Keyed by the identity the index's generations are keyed by: a vector of another model
        # (another checkpoint, or int8 rather than fp32) is never served from the cache.
        return self.text_cache.get_or_compute(
            self.model.identity.id, text, lambda: self.model.embed_texts([text])[0]
        )

    def encode_image(self, data: bytes) -> np.ndarray:
        return self.model.embed_images([decode_image(data, self.max_pixels)])[0]

    def warm_up(self) -> None:
        # One text query through the text tower: most queries are text, and with ONNX Runtime the image
        # tower (over twice the text tower's size) then loads only when an image query comes. The
        # forward also pays the first-run allocations the first real query would otherwise wait for.
        self.model.embed_texts(["warm-up"])


class SageMakerEncoder(QueryEncoder):
    """Calls a SageMaker endpoint running `model_handlers/clip` (same input_fn/output_fn contract)."""

    def __init__(self, endpoint: str, client: object | None = None, max_pixels: int = 40_000_000) -> None:
        self.endpoint = endpoint
        self.max_pixels = max_pixels
        if client is None:
            import boto3

            # botocore takes the region from AWS_DEFAULT_REGION or the config file only, never from
            # AWS_REGION (configprovider.py), and sagemaker-runtime has no global endpoint: with only
            # AWS_REGION set, a client without region_name raises NoRegionError.
            client = boto3.client("sagemaker-runtime", region_name=os.environ.get("AWS_REGION") or None)
        # A boto3 client, or a stand-in in tests; typed loosely so boto3's stubs stay optional.
        self.client: Any = client

    def _invoke(self, body: bytes, content_type: str) -> np.ndarray:
        response = self.client.invoke_endpoint(
            EndpointName=self.endpoint, Body=body, ContentType=content_type, Accept="application/json"
        )
        parsed = EmbeddingResponse.model_validate_json(response["Body"].read())
        return l2_normalise(np.asarray(parsed.embeddings[0], dtype=np.float32))

    def encode_text(self, text: str) -> np.ndarray:
        return self._invoke(TextQuery(text=[text]).model_dump_json().encode(), "application/json")

    def encode_image(self, data: bytes) -> np.ndarray:
        decode_image(data, self.max_pixels)  # reject bad input here rather than as an endpoint error
        return self._invoke(data, "application/x-image")
