"""The learned video encoder: a temporal model over per-frame CLIP image features, then a projector.

Input is a sequence of F frame features (L2-normalised CLIP image embeddings, the frozen tower's
output); output is one `dim`-wide video feature (4096 by default, Barlow Twins' projector width),
L2-normalised for cosine similarity. It is trained by `mediasearch.training.video` and saved as a
directory (`config.json` + `weights.pt`) that `VideoEncoder` loads for indexing and evaluation.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mediasearch.core.errors import VideoEncoderLoadError
from mediasearch.core.model_identity import ModelIdentity
from mediasearch.core.storage import content_digest
from mediasearch.core.vectors import l2_normalise

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


class EncoderConfig(BaseModel):
    """The shape of a saved encoder and the frame tower it expects its inputs from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_dim: int  # the CLIP image embedding width
    frames: int  # the sequence length it was trained on (positions beyond are interpolated)
    hidden: int
    layers: int
    dim: int
    clip_model: str  # what produced the frame features, as the training job named it
    clip_identity: str  # that model's identity: frame features of another CLIP are meaningless here


class TemporalEncoder(nn.Module):
    """Frame features -> linear -> + learned positions -> transformer layers -> mean pool -> projector."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.frame_dim, config.hidden)
        self.positions = nn.Parameter(torch.zeros(1, config.frames, config.hidden))
        nn.init.normal_(self.positions, std=0.02)
        heads = next(h for h in (8, 4, 2, 1) if config.hidden % h == 0)
        self.temporal = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.hidden, heads, 2 * config.hidden, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.hidden)
        # Barlow Twins' projector: linear-BN-ReLU then linear to the feature width.
        self.projector = nn.Sequential(
            nn.Linear(config.hidden, config.hidden, bias=False),
            nn.BatchNorm1d(config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, config.dim, bias=False),
        )

    def _positions(self, n: int) -> torch.Tensor:
        if n == self.positions.shape[1]:
            return self.positions
        # Another length (a whole video resampled differently): stretch the learned positions.
        stretched = nn.functional.interpolate(
            self.positions.transpose(1, 2), size=n, mode="linear", align_corners=True
        )
        return stretched.transpose(1, 2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, frame_dim) -> (B, dim), not normalised (the loss standardises over the batch)."""
        x = self.embed(frames) + self._positions(frames.shape[1])
        for layer in self.temporal:
            x = layer(x)
        return self.projector(self.norm(x).mean(1))


def save_encoder(model: TemporalEncoder, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(model.config.model_dump_json(indent=2))
    return path


def load_encoder_module(path: Path) -> TemporalEncoder:
    """The module saved at `path` (a directory from `save_encoder`); VideoEncoderLoadError naming it if not."""
    try:
        config = EncoderConfig.model_validate_json((path / CONFIG_FILE).read_text())
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model = TemporalEncoder(config)
        model.load_state_dict(state)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise VideoEncoderLoadError(
            f"cannot load the video encoder {str(path)!r}: {exc}. Give the `encoder` directory a "
            "`mediasearch train video-encoder` run wrote (config.json and weights.pt)."
        ) from None
    return model.eval()


def resample(times: np.ndarray, n: int) -> np.ndarray:
    """Indices of `n` frames spread evenly over frames shown at `times` (sorted): the nearest to
    each of n evenly spaced instants; repeats where there are fewer than n frames."""
    if len(times) == 0:
        raise ValueError("no frames to resample")
    lo, hi = float(times[0]), float(times[-1])
    targets = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    idx = np.searchsorted(times, targets).clip(0, len(times) - 1)
    prev = (idx - 1).clip(0)
    closer = np.abs(times[prev] - targets) <= np.abs(times[idx] - targets)
    return np.where(closer, prev, idx)


class VideoEncoder:
    """A saved encoder, loaded lazily: frame-feature sequences in, L2-normalised video vectors out."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._model: TemporalEncoder | None = None

    @property
    def model(self) -> TemporalEncoder:
        with self._lock:
            if self._model is None:
                self._model = load_encoder_module(self.path)
            return self._model

    @property
    def config(self) -> EncoderConfig:
        return self.model.config

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def clip_identity(self) -> str:
        """The identity of the CLIP whose frame features this encoder takes."""
        return self.config.clip_identity

    @property
    def identity(self) -> ModelIdentity:
        """The weights' digest: a changed encoder is a new model for the index."""
        try:
            digest = content_digest((self.path / WEIGHTS_FILE).read_bytes())
        except OSError as exc:
            raise VideoEncoderLoadError(
                f"cannot load the video encoder {str(self.path)!r}: {exc.strerror or exc}. Give the "
                "`encoder` directory a `mediasearch train video-encoder` run wrote (config.json and weights.pt)."
            ) from None
        return ModelIdentity(id=f"video-encoder:md5:{digest}", source=str(self.path))

    @torch.inference_mode()
    def encode(self, sequences: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, F, frame_dim) frame features -> (N, dim) video vectors. Sequences of one length per call."""
        batch = torch.from_numpy(np.ascontiguousarray(np.asarray(sequences, dtype=np.float32)))
        if batch.ndim != 3 or batch.shape[2] != self.config.frame_dim:
            raise ValueError(
                f"frame features must be (videos, frames, {self.config.frame_dim}), got {tuple(batch.shape)}"
            )
        return l2_normalise(self.model(batch).numpy())

    def encode_video(self, frame_vectors: np.ndarray, times: np.ndarray) -> np.ndarray:
        """One whole video's vector from its frames' CLIP vectors shown at `times` (any number):
        resampled to the trained sequence length, evenly over the video."""
        order = np.argsort(times, kind="stable")
        picks = order[resample(np.asarray(times, dtype=np.float64)[order], self.config.frames)]
        return self.encode(frame_vectors[picks][None])[0]
