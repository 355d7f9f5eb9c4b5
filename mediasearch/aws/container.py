"""Checks that the SageMaker inference container can serve the handlers, run by `model_fn`.

Both failures below would otherwise surface late and unexplained: transformers silently disables
PyTorch when the container's torch is older than its floor (`is_torch_available()` returns False at
import; only `from_pretrained` fails, with "requires PyTorch"), and the Hugging Face toolkit answers
every request with a 503. Failing in `model_fn` with the reason puts one clear line in the endpoint's
or the transform job's CloudWatch log, at container start, before any request.

Only the standard library is imported at module level: this runs inside the serving container.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

# The PyTorch toolkit's transformer.py unpacks output_fn's (body, content type) tuple; the Hugging
# Face toolkit's handler_service.py does not (sagemaker-huggingface-inference-toolkit 2.6.0).
HUGGING_FACE_TOOLKIT = "sagemaker_huggingface_inference_toolkit"


class ContainerError(RuntimeError):
    """The serving container cannot run the handlers; the message says why and what to change."""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_requirement() -> str:
    """The torch specifier transformers declares for its `torch` extra, e.g. `>=2.6`."""
    for requirement in importlib.metadata.requires("transformers") or []:
        match = re.match(r"torch\s*([<>=!~][^;]*);.*extra\s*==\s*['\"]torch['\"]", requirement)
        if match:
            return match.group(1).strip()
    return "(see transformers' release notes)"


def check_torch_for_transformers() -> None:
    """Raise `ContainerError` unless transformers can use the installed torch."""
    from transformers.utils import is_torch_available

    if is_torch_available():
        return
    torch = _version("torch")
    raise ContainerError(
        f"transformers {_version('transformers')} cannot use torch {torch or '(not installed)'}: it "
        f"needs torch{_torch_requirement()}. The container's torch comes with its image; pin a "
        "transformers release that supports it in model_handlers/<name>/requirements.txt (installed "
        "at every container start as code/requirements.txt), repackage and redeploy."
    )


def check_toolkit() -> None:
    """Raise `ContainerError` inside a Hugging Face inference container (see sagemaker.unsupported_image)."""
    if importlib.util.find_spec(HUGGING_FACE_TOOLKIT) is not None:
        raise ContainerError(
            "this container serves with the Hugging Face inference toolkit, which does not unpack "
            "output_fn's (body, content type) pair and would answer every request with a 503: use "
            "the AWS PyTorch inference DLC (the default image) or an image built on it"
        )


def check_serving_container() -> None:
    check_toolkit()
    check_torch_for_transformers()
