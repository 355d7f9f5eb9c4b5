"""Which engine runs CLIP when the setting says `auto`: ONNX Runtime on CPU, PyTorch on CUDA.

On CPU the fp32 ONNX graphs agree with PyTorch (cosine 1.0 over the sample corpus) and ran 2.7x faster
on images and 2.1x on text queries (bench/bench_onnx.py), so they win there. On CUDA PyTorch runs in
fp16; ONNX Runtime's CUDA provider has not been measured against it (no GPU where this was built), so
PyTorch stays. int8 exists only as ONNX, and an export folder only loads in ONNX Runtime.

Deciding must stay cheap: `mediasearch search` should not pay torch's import (1-2 s) to learn that it
runs on CPU, so torch is asked only where an NVIDIA driver is visible.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from mediasearch.encoders.onnx_cache import is_export_dir

ENGINES = ("torch", "onnx")


def choose_engine(engine: str, precision: str, device: str, model: str) -> str:
    """`torch` or `onnx` for the settings' engine, precision, device and model (a StrEnum works too)."""
    engine, precision = str(engine), str(precision)
    if engine == "auto":
        engine = _auto(precision, device, model)
    if engine not in ENGINES:
        raise ValueError(f"unknown CLIP engine {engine!r}: use auto, torch or onnx")
    if engine == "torch" and precision != "fp32":
        raise ValueError(
            f"CLIP precision {precision} exists only on ONNX Runtime: set MEDIASEARCH_CLIP_ENGINE=onnx "
            "(or auto), or MEDIASEARCH_CLIP_PRECISION=fp32"
        )
    if engine == "torch" and is_export_dir(Path(model).expanduser()):
        raise ValueError(f"{model} is an ONNX export folder: it runs on MEDIASEARCH_CLIP_ENGINE=onnx only")
    return engine


def _auto(precision: str, device: str, model: str) -> str:
    if precision != "fp32" or is_export_dir(Path(model).expanduser()):
        return "onnx"
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"  # e.g. a SageMaker container whose requirements do not list it
    return "torch" if runs_on_cuda(device) else "onnx"


def runs_on_cuda(device: str) -> bool:
    """Whether the torch models would run on CUDA with this device setting."""
    if device.startswith("cuda"):
        return True
    if device != "auto" or not nvidia_driver_visible():
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def nvidia_driver_visible() -> bool:
    """A cheap necessary condition for CUDA: the driver's device node, proc entry or tool is present."""
    nodes = ("/dev/nvidiactl", "/proc/driver/nvidia/version")
    return any(Path(node).exists() for node in nodes) or shutil.which("nvidia-smi") is not None
