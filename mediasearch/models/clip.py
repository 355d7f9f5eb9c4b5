"""CLIP: one checkpoint, an image tower and a text tower projecting into the same space.

Loads lazily (the API starts fast and a job that finds nothing to do never loads weights), from a hub
id or a local directory such as the one SageMaker unpacks from model.tar.gz.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mediasearch.core.vectors import l2_normalise
from mediasearch.models.base import LazyModel


class ClipModel(LazyModel):
    """CLIP image and text embeddings, L2-normalised float32."""

    task = "CLIP model"
    files = "config.json, weights, tokenizer and preprocessor files"

    def __init__(
        self, name: str, device: str = "auto", batch_size: int = 32, digest_cache: str | Path | None = None
    ) -> None:
        super().__init__(name, device, batch_size, digest_cache)
        self._image_processor: Any = None
        self._tokenizer: Any = None

    def _load(self, source: str) -> Any:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        model = CLIPModel.from_pretrained(source)
        self._image_processor = AutoImageProcessor.from_pretrained(source)
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        return model

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def max_text_tokens(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize, crop and normalise one image to CHW float32; pure CPU work, safe in worker threads."""
        self.load()
        pixels = self._image_processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"]
        return pixels[0].astype(np.float32, copy=False)

    @torch.inference_mode()
    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a (N, 3, H, W) batch that `preprocess` produced."""
        model = self.model
        assert self.placement is not None
        out: list[np.ndarray] = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(pixels[start : start + self.batch_size]))
            chunk = chunk.to(self.placement.device, dtype=self.placement.dtype)
            # transformers 5 returns an output object; the projected embedding is its pooler_output.
            feats = model.get_image_features(pixel_values=chunk).pooler_output
            out.append(feats.float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([self.preprocess(im) for im in images]))

    # -- text -----------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        model = self.model
        assert self.placement is not None
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            ).to(self.placement.device)
            feats = model.get_text_features(**tokens).pooler_output
            out.append(feats.float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)
