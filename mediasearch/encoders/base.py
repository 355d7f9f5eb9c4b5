"""What the transform handler and the query encoder need from a CLIP model, whichever engine runs it.

`mediasearch.models.clip.ClipModel` (PyTorch) and `mediasearch.encoders.onnx_clip.OnnxClipModel` (ONNX
Runtime) both satisfy `ClipEncoder`; `mediasearch.backends.clip_model` picks one from the settings.
Typing against this protocol instead of either class keeps the handler and the query side free of
torch imports: this module imports nothing heavy, even for its annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from mediasearch.core.model_identity import ModelIdentity


@runtime_checkable
class ClipEncoder(Protocol):
    """CLIP image and text embeddings, L2-normalised float32, loaded on first use."""

    name: str
    batch_size: int

    @property
    def identity(self) -> ModelIdentity:
        """What every vector it makes records; equal identities give interchangeable vectors."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def max_text_tokens(self) -> int: ...

    @property
    def loaded(self) -> bool: ...

    def load(self) -> object:
        """Load everything now (both towers), so the first batch or request does not wait."""
        ...

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image to CHW float32; pure CPU work, safe in worker threads."""
        ...

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """A (N, 3, H, W) batch that `preprocess` produced to (N, dim)."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
