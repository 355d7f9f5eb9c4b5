"""Where a model runs, decided once: CUDA with half precision when present, else CPU in float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def resolve(device: str = "auto") -> Placement:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available on this machine")
    # fp16 halves memory and doubles tensor-core throughput; on CPU it is slower than fp32.
    return Placement(dev, torch.float16 if dev.type == "cuda" else torch.float32)
