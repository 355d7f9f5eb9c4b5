"""Image captions from a vision encoder-decoder (ViT-GPT2 by default).

Loads lazily, from a hub id or a local directory such as the one SageMaker unpacks from
model.tar.gz. Preprocessing is separate from generation so decode and resize can run in worker
threads while the model generates for the previous batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mediasearch.models.base import LazyModel, ModelLoadError

DEFAULT_CAPTIONER = "nlpconnect/vit-gpt2-image-captioning"


def _first_id(*candidates: Any) -> int | None:
    for value in candidates:
        if isinstance(value, int):
            return value
    return None


class CaptionModel(LazyModel):
    """Greedy (or beam) captions for batches of images.

    `max_length` bounds the generated tokens of a caption (the decoder start token is not counted);
    `min_new_tokens` forces captions to at least that many tokens, which only benchmarks want: it
    makes the cost of random weights, that may emit EOS at once or never, a fixed one.
    """

    task = "captioning model"
    files = "config.json, weights, tokenizer and preprocessor files"

    def __init__(
        self,
        name: str = DEFAULT_CAPTIONER,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 24,
        num_beams: int = 1,
        min_new_tokens: int = 0,
        digest_cache: str | Path | None = None,
    ) -> None:
        if max_length < 1 or num_beams < 1 or min_new_tokens > max_length:
            raise ValueError(
                f"need max_length >= 1, num_beams >= 1 and min_new_tokens <= max_length, got "
                f"max_length={max_length}, num_beams={num_beams}, min_new_tokens={min_new_tokens}"
            )
        super().__init__(name, device, batch_size, digest_cache)
        self.max_length = max_length
        self.num_beams = num_beams
        self.min_new_tokens = min_new_tokens
        self._image_processor: Any = None
        self._tokenizer: Any = None

    def _load(self, source: str) -> Any:
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        model = VisionEncoderDecoderModel.from_pretrained(source)
        # Without torchvision installed this resolves to the PIL backend of the processor.
        self._image_processor = AutoImageProcessor.from_pretrained(source)
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        self._set_special_tokens(model)
        return model

    def _set_special_tokens(self, model: Any) -> None:
        """generate() needs a decoder start and a pad id; GPT2 decoders ship neither as such.

        ViT-GPT2 starts from and pads with EOS; a checkpoint that sets its own ids keeps them.
        """
        config, decoder, tok = model.config, model.config.decoder, self._tokenizer

        def ids(name: str) -> list[Any]:
            # Top-level config first (what ViT-GPT2 sets), then the decoder's, then the tokenizer's.
            return [getattr(config, name, None), getattr(decoder, name, None), getattr(tok, name, None)]

        eos = _first_id(*ids("eos_token_id"))
        start = _first_id(getattr(config, "decoder_start_token_id", None), *ids("bos_token_id"), eos)
        pad = _first_id(*ids("pad_token_id"), eos)
        if start is None or pad is None:
            raise ModelLoadError(
                f"captioning model {self.name!r} defines no decoder start, EOS or pad token id; "
                "set decoder_start_token_id and pad_token_id in its config.json"
            )
        for target in (config, model.generation_config):
            target.decoder_start_token_id = start
            target.pad_token_id = pad
            if eos is not None:
                target.eos_token_id = eos

    # -- captions -------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize and normalise one image to CHW float32; pure CPU work, safe in worker threads."""
        self.load()
        pixels = self._image_processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"]
        return pixels[0].astype(np.float32, copy=False)

    @torch.inference_mode()
    def generate_ids(self, pixels: np.ndarray) -> list[torch.Tensor]:
        """Token ids per batch of a (N, 3, H, W) array from `preprocess`, decoder start token first."""
        model = self.model
        assert self.placement is not None
        out: list[torch.Tensor] = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(pixels[start : start + self.batch_size]))
            chunk = chunk.to(self.placement.device, dtype=self.placement.dtype)
            # max_new_tokens rather than max_length: a checkpoint's generation_config.json may set
            # either, and max_new_tokens wins over both.
            ids = model.generate(
                pixel_values=chunk,
                max_new_tokens=self.max_length,
                min_new_tokens=self.min_new_tokens,
                num_beams=self.num_beams,
                do_sample=False,
            )
            out.append(ids.cpu())
        return out

    def caption_pixels(self, pixels: np.ndarray) -> list[str]:
        """One caption per image of a (N, 3, H, W) batch that `preprocess` produced."""
        if len(pixels) == 0:
            return []
        captions: list[str] = []
        for ids in self.generate_ids(pixels):
            texts = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
            captions.extend(t.strip() for t in texts)
        return captions

    def caption_images(self, images: Sequence[Image.Image]) -> list[str]:
        if not images:
            return []
        return self.caption_pixels(np.stack([self.preprocess(im) for im in images]))
