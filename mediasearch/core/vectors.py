"""Vector helpers shared by the model side, the loader and the query encoders (numpy only)."""

from __future__ import annotations

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Unit-length rows in float32, so inner product is cosine similarity on every backend."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
