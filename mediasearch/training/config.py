"""Hyperparameters of the training jobs, one pydantic model per job (torch-free).

The same models are the CLI's options, the checkpoint's recorded settings and a SageMaker training
job's `HyperParameters` (which SageMaker hands to the container as strings in
`/opt/ml/input/config/hyperparameters.json`; `from_hyperparameters` parses them back).
"""

from __future__ import annotations

import json
from typing import Any, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _types(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation) or (annotation,)


def _plain(value: Any) -> str:
    """A value as a hyperparameter string. A string stays as it is unless it reads as JSON ("12",
    "true", "null"): the reader (ours, and the training toolkit's `read_hyperparameters`) tries JSON
    first, so such a string is quoted to come back a string."""
    if not isinstance(value, str):
        return json.dumps(value)
    try:
        json.loads(value)
    except json.JSONDecodeError:
        return value
    return json.dumps(value)


class TrainConfig(BaseModel):
    """What every training job shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(
        default=8, ge=2, le=4096, description="at least 2: the losses compare samples in a batch"
    )
    lr: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = 0

    def to_hyperparameters(self) -> dict[str, str]:
        """SageMaker's HyperParameters: a flat map of strings (JSON for anything not a plain scalar)."""
        return {
            name: _plain(value) for name, value in self.model_dump(mode="json", exclude_none=True).items()
        }

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> Self:
        """The inverse of `to_hyperparameters` (values may also arrive already typed)."""
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, str) and name in cls.model_fields:
                try:
                    decoded = json.loads(value)
                except json.JSONDecodeError:
                    decoded = value  # a plain string (a model id, a path)
                # A text field keeps text: "123" stays "123" when the toolkit already decoded '"123"'.
                text = str in _types(cls.model_fields[name].annotation)
                parsed[name] = value if text and not isinstance(decoded, str) else decoded
            else:
                parsed[name] = value
        return cls.model_validate(parsed)


class VideoTrainConfig(TrainConfig):
    """The self-supervised video encoder (Barlow Twins over frozen CLIP frame features)."""

    segment_seconds: float = Field(default=32.0, gt=0, description="length of each of the two segments")
    frames: int = Field(default=32, ge=1, description="frames sampled from each segment")
    fps: float = Field(default=1.0, gt=0, description="rate the frames are sampled at")
    dim: int = Field(default=4096, ge=8, description="dimension of the learned video feature")
    lambda_offdiag: float = Field(default=0.001, ge=0, description="λ: weight of the off-diagonal terms")
    clip_model: str | None = Field(
        default=None, description="frozen frame tower (default: the configured CLIP)"
    )
    init_from: str | None = Field(default=None, description="fine-tune: start from this checkpoint")
    aug_draws: int = Field(
        default=4,
        ge=1,
        le=64,
        description="augmented segment pairs per video whose frozen CLIP features are computed once and cached",
    )
    image_size: int = Field(default=224, ge=16, le=1024, description="side of the augmented frames")
    hidden: int = Field(default=512, ge=8, description="width of the temporal model before the projector")
    layers: int = Field(default=1, ge=0, le=12, description="transformer layers of the temporal model")

    @model_validator(mode="after")
    def _frames_fit_segment(self) -> VideoTrainConfig:
        if self.frames / self.fps > self.segment_seconds + 1e-9:
            raise ValueError(
                f"{self.frames} frames at {self.fps} fps span {self.frames / self.fps:g} s, longer than "
                f"segment_seconds={self.segment_seconds:g}"
            )
        return self


class ClipTrainConfig(TrainConfig):
    """Contrastive fine-tuning of CLIP on (image, text) pairs, or a small CLIP trained from scratch."""

    lr: float = Field(default=1e-5, gt=0, le=1)
    batch_size: int = Field(default=32, ge=2, le=4096)
    epochs: int = Field(default=5, ge=1, le=10_000)
    base_model: str | None = Field(
        default=None, description="model to fine-tune (default: the configured CLIP)"
    )
    from_scratch: bool = Field(default=False, description="train a small randomly initialised CLIP instead")
    holdout_fraction: float = Field(default=0.2, ge=0, lt=1, description="pairs held out for recall@k")
    # The shape of a model trained from scratch (ignored when fine-tuning): both towers share width and depth.
    image_size: int = Field(default=48, ge=8, description="from scratch: input side in pixels")
    patch_size: int = Field(default=8, ge=2, description="from scratch: ViT patch side in pixels")
    width: int = Field(default=96, ge=8, description="from scratch: hidden size of both towers")
    layers: int = Field(default=2, ge=1, description="from scratch: transformer layers in each tower")
    heads: int = Field(default=4, ge=1, description="from scratch: attention heads")
    projection_dim: int = Field(default=64, ge=2, description="from scratch: embedding dimension")
    max_text_tokens: int = Field(default=32, ge=8, description="from scratch: text positions")
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="linear warm-up, then cosine decay")

    @model_validator(mode="before")
    @classmethod
    def _scratch_lr(cls, values: Any) -> Any:
        # A random model needs a far larger step than fine-tuning pretrained weights does; an lr given
        # explicitly is kept.
        if (
            isinstance(values, dict)
            and values.get("from_scratch") in (True, "true", "True")
            and "lr" not in values
        ):
            return {**values, "lr": SCRATCH_LR}
        return values


SCRATCH_LR = 1e-3
