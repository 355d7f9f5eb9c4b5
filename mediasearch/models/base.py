"""What every model class shares: lazy, thread-safe loading from a hub id or a local directory.

As in Immich's ML service, a model object is cheap to create and loads its weights on first use, so
the API starts fast and a job with nothing to do never loads anything; each subclass says how to
load its checkpoint (`_load`) and what it predicts.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

from mediasearch.core.errors import ModelLoadError
from mediasearch.core.model_identity import ModelIdentity, identify
from mediasearch.models.device import Placement, resolve

__all__ = ["LazyModel", "ModelLoadError"]


class LazyModel(ABC):
    task: str = "model"  # named in load errors, e.g. "CLIP model"
    files: str = "config.json and weights"  # what a local directory must hold, for the same errors

    def __init__(
        self, name: str, device: str = "auto", batch_size: int = 32, digest_cache: str | Path | None = None
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.digest_cache = digest_cache  # where identify() remembers checkpoint digests (None: default)
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._identity: ModelIdentity | None = None
        self.placement: Placement | None = None

    @property
    def identity(self) -> ModelIdentity:
        """What this model is (weights hash or hub id + revision), recorded on everything it embeds.

        Computed after loading when possible, so a hub id resolves to the snapshot actually loaded.
        """
        if self._identity is None:
            self._identity = identify(self.name, cache_dir=self.digest_cache)
        return self._identity

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Self:
        with self._lock:
            if self._model is not None:
                return self
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # our own bars report progress; theirs would interleave
            local = Path(self.name).expanduser()
            source = str(local) if local.is_dir() else self.name
            try:
                model = self._load(source)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(
                    f"cannot load {self.task} {self.name!r}: {exc}. Give a hub id you can download "
                    f"or a local directory with {self.files}."
                ) from exc
            self.placement = resolve(self._device)
            # fp16 on CUDA (see device.resolve); eval() because these models only ever predict.
            self._model = model.to(self.placement.device, dtype=self.placement.dtype).eval()
            self._identity = None  # a hub download may have just made the revision known
        return self

    @abstractmethod
    def _load(self, source: str) -> Any:
        """Load the checkpoint at `source` (and its processors); return the torch module."""

    @property
    def model(self) -> Any:
        return self.load()._model
