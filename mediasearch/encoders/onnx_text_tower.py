"""The query text tower's ONNX export on ONNX Runtime, without torch or transformers.

The export folder (written by `mediasearch export-text-tower`, see `mediasearch.models.text_tower`) holds
text_tower.onnx (transformer, pooling, Dense and normalisation in one graph), tokenizer.json and
text_tower.json (dimension, max tokens, pad token, the checkpoint's identity). This is what the query
side loads where torch is not installed (the query Lambda); loading is deferred to first use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.core.vectors import l2_normalise

TOWER_ONNX = "text_tower.onnx"  # the names mediasearch.models.text_tower writes
TOWER_META = "text_tower.json"


def is_tower_export(folder: str | Path) -> bool:
    path = Path(folder).expanduser()
    return (path / TOWER_ONNX).is_file() and (path / TOWER_META).is_file()


class OnnxTextTower:
    """Unit-length float32 text vectors from an export folder; `dim` is read from its meta."""

    def __init__(self, folder: str, device: str = "cpu") -> None:
        self.name = folder
        self.device = device
        self._folder = Path(folder).expanduser()
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        if not is_tower_export(self._folder):
            raise ValueError(f"{folder} is not a text tower export (no {TOWER_ONNX} and {TOWER_META})")
        self.meta: dict[str, Any] = json.loads((self._folder / TOWER_META).read_text())

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def _open(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            from tokenizers import Tokenizer

            from mediasearch.encoders.onnx_clip import make_session

            tokenizer = Tokenizer.from_file(str(self._folder / "tokenizer.json"))
            pad = str(self.meta.get("pad_token") or "[PAD]")
            pad_id = tokenizer.token_to_id(pad)
            if pad_id is None:
                raise ValueError(f"pad token {pad!r} is not in {self._folder / 'tokenizer.json'}")
            tokenizer.enable_truncation(max_length=int(self.meta["max_tokens"]))
            tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)
            self._tokenizer = tokenizer
            self._session = make_session(self._folder / TOWER_ONNX, self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        self._open()
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        (out,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask})
        return l2_normalise(np.asarray(out, np.float32))
