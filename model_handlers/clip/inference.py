"""SageMaker entry point for the CLIP embedding model: batch transform and the query endpoint.

Thin on purpose: the logic is `mediasearch.inference.ClipHandler`, which the local transform runner
also uses, so what runs on SageMaker is what the tests run. Settings come from MEDIASEARCH_*
environment variables on the SageMaker model (device, batch size, decode workers, pixel limit); the
weights are always the unpacked model directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# In model.tar.gz the package ships beside this file (code/mediasearch). The container already puts
# code/ on sys.path; doing it here too lets tests and other hosts load this file by path.
_HERE = Path(__file__).resolve().parent
if (_HERE / "mediasearch").is_dir() and str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from mediasearch import backends  # noqa: E402
from mediasearch.config import Settings  # noqa: E402
from mediasearch.inference import BadRequest, ClipHandler  # noqa: E402

# input_fn and output_fn get no model argument under the SageMaker contract, so the handler that
# model_fn built is kept here (one model per worker process).
_handler: ClipHandler | None = None


def _bad_request(exc: BadRequest) -> Exception:
    """A 400 for the caller under the SageMaker toolkit (plain exceptions become 500s)."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:  # not inside a SageMaker container
        return exc
    return GenericInferenceToolkitError(400, str(exc))


def _current() -> ClipHandler:
    if _handler is None:
        raise RuntimeError("model_fn has not run: the serving container calls it before any request")
    return _handler


def model_fn(model_dir: str) -> ClipHandler:
    global _handler
    handler = backends.clip_handler(Settings(clip_model=model_dir))
    # Load now: the container reports healthy only after model_fn, so the first request stays fast.
    handler.model.load()
    _handler = handler
    return handler


def input_fn(request_body: bytes | str, request_content_type: str) -> Any:
    try:
        return _current().input_fn(request_body, request_content_type)
    except BadRequest as exc:
        raise _bad_request(exc) from None


def predict_fn(input_data: Any, model: ClipHandler) -> Any:
    return model.predict_fn(input_data)


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return _current().output_fn(prediction, accept)
