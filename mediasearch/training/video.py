"""Self-supervised training of the video encoder: Barlow Twins over pairs of segments of one video.

For every video: two random segments (default 32 s each), `frames` frames from each at `fps`, and one
random transformation (crop, resize, flip, colour jitter, grey, blur) applied to every frame of both.
The frozen CLIP image tower embeds the frames; the temporal encoder (`mediasearch.models.video_encoder`)
maps each segment's frame features to a `dim`-wide feature, and the Barlow Twins loss
(`mediasearch.training.barlow`) pulls the two segments' features together while decorrelating the
dimensions over the batch.

Choices, and why:

* **Feature cache.** The frozen tower is the whole cost on a CPU (ViT-B/32: ~30 ms a frame; a
  32-frame pair is 64 frames, 2 s). So for each video `aug_draws` pairs (two segments + one
  transformation) are drawn once, from a seed derived from `seed` and the video's key, their frame
  features are computed and cached under `out_dir/cache/`, and every epoch picks one cached draw per
  video and which segment is the first view. Training then costs milliseconds an epoch, a resumed or
  repeated run recomputes nothing, and the variety is `aug_draws` augmentations x 2 orders per video.
* **Short videos.** A video shorter than two segments is sampled at a proportionally faster rate:
  everything is scaled by duration / (2 x segment_seconds), so a segment is half the video and still
  has `frames` frames. Two segments then can be disjoint (otherwise both would be the whole video and
  identical, teaching nothing), and every video, however short, yields a training pair.
* **Deterministic resume.** Each epoch's shuffling and draw choices come from a generator seeded
  with (seed, epoch), and the checkpoint holds the weights, the optimizer, the epoch and step, the
  loss history and torch's RNG state: stopping after any epoch and resuming gives the same weights
  as a run straight through.
* **Fine-tuning** (`init_from`): the weights of a saved encoder (or a run's directory), a fresh
  optimizer, epoch 0: 5-10 epochs on a user's own videos.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field
from tqdm import tqdm

from mediasearch.core.errors import VideoEncoderLoadError
from mediasearch.core.images import is_video_key
from mediasearch.core.model_identity import ModelIdentity
from mediasearch.core.storage import ObjectStore, StoreError, open_store
from mediasearch.indexing.video import VideoError, probe
from mediasearch.models.video_encoder import (
    EncoderConfig,
    TemporalEncoder,
    load_encoder_module,
    save_encoder,
)
from mediasearch.training.augment import AugmentParams, apply_all, sample_params
from mediasearch.training.barlow import barlow_twins_loss
from mediasearch.training.config import VideoTrainConfig
from mediasearch.training.plot import draw_lines

CHECKPOINT = "checkpoint.pt"
ENCODER_DIR = "encoder"
LOSS_PLOT = "loss.png"
REPORT = "report.json"
# Config fields a resumed run may change: how long it goes on, nothing that changes what it learns.
RESUMABLE_CHANGES = {"epochs"}


class TrainingInputError(ValueError):
    """The training input is unusable (no videos, a bad checkpoint); the message names it."""


class FrameTower(Protocol):
    """What embeds frames: the project's CLIP image tower (`ClipModel`), frozen."""

    name: str

    @property
    def identity(self) -> ModelIdentity: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


class SkippedVideo(BaseModel):
    uri: str
    error: str


class VideoTrainReport(BaseModel):
    """What a run did, written to `out_dir/report.json`."""

    source: str
    out_dir: str
    encoder_dir: str
    checkpoint: str
    loss_plot: str | None
    videos: int
    skipped: list[SkippedVideo] = Field(default_factory=list)
    short_videos: int = Field(description="videos shorter than two segments, sampled at a faster rate")
    clip_model: str
    cached_draws: int = Field(description="augmented segment pairs per video whose features are cached")
    feature_seconds: float = Field(description="wall time computing (not reading) cached frame features")
    start_epoch: int
    epochs: int
    steps: int
    epoch_loss: list[float] = Field(description="mean loss of every epoch so far, resumed runs included")
    full_loss_before: float = Field(
        description="loss over every video and cached draw before this run trained"
    )
    full_loss_after: float = Field(description="the same after it: a measure free of batch sampling noise")
    epoch_seconds: list[float] = Field(description="wall time of each epoch this run trained")
    fine_tuned_from: str | None = None


# ------------------------------------------------------------------------------------- sampling


def segment_times(duration: float, config: VideoTrainConfig, rng: np.random.Generator) -> np.ndarray:
    """(2, frames) times of two random segments' frames; see the module notes for short videos."""
    scale = min(1.0, duration / (2 * config.segment_seconds))
    span = config.segment_seconds * scale
    offsets = np.arange(config.frames) * (scale / config.fps)
    starts = rng.uniform(0.0, max(duration - span, 0.0), size=2)
    return np.clip(starts[:, None] + offsets[None, :], 0.0, max(duration - 1e-3, 0.0))


def disjoint_segment_times(duration: float, config: VideoTrainConfig) -> np.ndarray:
    """(2, frames) times of the first and the last segment of a video (disjoint): what evaluation uses."""
    scale = min(1.0, duration / (2 * config.segment_seconds))
    span = config.segment_seconds * scale
    offsets = np.arange(config.frames) * (scale / config.fps)
    starts = np.array([0.0, max(duration - span, 0.0)])
    return np.clip(starts[:, None] + offsets[None, :], 0.0, max(duration - 1e-3, 0.0))


def video_duration(path: Path) -> float:
    info = probe(path)
    if info.duration is not None and info.duration > 0:
        return info.duration
    if info.frames and info.fps:
        return info.frames / info.fps
    raise VideoError(f"{path} does not declare its duration")


def decode_at(path: Path, times: Sequence[float] | np.ndarray, max_side: int) -> dict[float, Image.Image]:
    """The frames on screen at `times` (RGB, scaled to fit `max_side`), in one sequential decode.

    Times past the last frame get the last frame. Sequential rather than seeking: training videos
    are decoded once per run (the features are cached), and the synthetic ones are short.
    """
    wanted = sorted(set(float(t) for t in times))
    out: dict[float, Image.Image] = {}
    last: av.VideoFrame | None = None
    image: Image.Image | None = None  # `last` converted, once, when a time first needs it

    def shown() -> Image.Image:
        nonlocal image
        assert last is not None
        if image is None:
            scale = min(1.0, max_side / max(last.width, last.height))
            image = last.to_image(
                width=max(1, round(last.width * scale)), height=max(1, round(last.height * scale))
            )
        return image

    i = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else 0.0
                # The frame on screen at a time is the last one that started at or before it.
                while i < len(wanted) and wanted[i] < t - 1e-4 and last is not None:
                    out[wanted[i]] = shown()
                    i += 1
                if i >= len(wanted):
                    break
                last, image = frame, None
    except (av.FFmpegError, IndexError) as exc:
        raise VideoError(f"{path} could not be decoded: {exc}") from None
    if last is None:
        raise VideoError(f"{path} holds no decodable video frames")
    for t in wanted[i:]:
        out[t] = shown()
    return out


def draw_seed(seed: int, key: str) -> np.random.Generator:
    """The generator of one video's draws: fixed by the run's seed and the video's key, not its order."""
    return np.random.default_rng([seed, int(hashlib.sha1(key.encode()).hexdigest()[:12], 16)])


def augmented_pair_features(
    tower: FrameTower,
    frames: dict[float, Image.Image],
    times: np.ndarray,
    params: AugmentParams,
    image_size: int,
) -> np.ndarray:
    """(2, F, D): both segments' frames under the one transformation, embedded by the frozen tower."""
    images = [frames[float(t)] for t in times.ravel()]
    feats = tower.embed_images(apply_all(images, params, image_size))
    return np.asarray(feats, dtype=np.float32).reshape(2, times.shape[1], -1)


def plain_features(tower: FrameTower, frames: dict[float, Image.Image], times: np.ndarray) -> np.ndarray:
    """(S, F, D) frame features of un-augmented segments (evaluation and indexing see plain frames)."""
    images = [frames[float(t)] for t in times.ravel()]
    return np.asarray(tower.embed_images(images), dtype=np.float32).reshape(*times.shape, -1)


# --------------------------------------------------------------------------------------- corpus


def list_videos(store: ObjectStore) -> list[tuple[str, str]]:
    """(key, fingerprint) of every video object in `store`, by key."""
    return sorted((o.key, o.fingerprint) for o in store.list() if is_video_key(o.key))


def _cache_name(key: str, fingerprint: str, tower: FrameTower, config: VideoTrainConfig) -> str:
    # Everything the cached features depend on, and nothing else (not epochs, lr or the model shape).
    what = [
        key,
        fingerprint,
        tower.identity.id,
        config.seed,
        config.segment_seconds,
        config.frames,
        config.fps,
        config.aug_draws,
        config.image_size,
        "v1",
    ]
    return hashlib.sha1(repr(what).encode()).hexdigest()[:20] + ".npy"


def video_features(
    store: ObjectStore,
    key: str,
    fingerprint: str,
    tower: FrameTower,
    config: VideoTrainConfig,
    cache_dir: Path,
) -> tuple[np.ndarray, bool, bool]:
    """(aug_draws, 2, frames, D) features of one video's cached draws; whether it was computed now and
    whether the video is short. Raises VideoError naming the video."""
    cache = cache_dir / _cache_name(key, fingerprint, tower, config)
    with store.local_copy(key) as path:
        duration = video_duration(path)
        short = duration < 2 * config.segment_seconds
        if cache.exists():
            return np.load(cache), False, short
        rng = draw_seed(config.seed, key)
        info = probe(path)
        aspect = info.width / info.height
        draws = []
        for _ in range(config.aug_draws):
            draws.append((sample_params(rng, aspect), segment_times(duration, config, rng)))
        frames = decode_at(path, np.concatenate([t.ravel() for _, t in draws]), 2 * config.image_size)
    feats = np.stack([augmented_pair_features(tower, frames, t, p, config.image_size) for p, t in draws])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(cache)  # a killed run never leaves half a cache file
    return feats, True, short


# ------------------------------------------------------------------------------------- training


def epoch_plan(
    config: VideoTrainConfig, epoch: int, videos: int
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """The batches of one epoch: (video indices, their draw indices, swap the views), from (seed, epoch)."""
    rng = np.random.default_rng([config.seed, epoch, 0x7B])
    order = rng.permutation(videos)
    draws = rng.integers(0, config.aug_draws, size=videos)
    swaps = rng.random(videos) < 0.5
    batch = min(config.batch_size, videos)
    plan = []
    for start in range(0, videos, batch):
        idx = order[start : start + batch]
        if len(idx) < 2:
            continue  # the loss normalises over the batch: a batch of one has no statistics
        plan.append((idx, draws[idx], bool(swaps[idx[0]])))
    return plan


@torch.no_grad()
def full_loss(model: TemporalEncoder, features: torch.Tensor, lambda_offdiag: float) -> float:
    """The loss with every video in one batch, averaged over the cached draws: what training lowers,
    without the noise of which batch and draw an epoch happened to pick. On a copy, so that
    BatchNorm's running statistics (and so a resumed run's weights) are not touched."""
    probe_model = copy.deepcopy(model).train()
    losses = [
        float(
            barlow_twins_loss(probe_model(features[:, d, 0]), probe_model(features[:, d, 1]), lambda_offdiag)
        )
        for d in range(features.shape[1])
    ]
    return float(np.mean(losses))


def build_encoder(config: VideoTrainConfig, frame_dim: int, tower: FrameTower) -> TemporalEncoder:
    torch.manual_seed(config.seed)
    return TemporalEncoder(
        EncoderConfig(
            frame_dim=frame_dim,
            frames=config.frames,
            hidden=config.hidden,
            layers=config.layers,
            dim=config.dim,
            clip_model=tower.name,
            clip_identity=tower.identity.id,
        )
    )


def _fine_tune_source(init_from: str) -> TemporalEncoder:
    """The saved encoder `init_from` names (an encoder directory or a run's), loaded before any work."""
    path = Path(init_from).expanduser()
    if (path / ENCODER_DIR).is_dir():
        path = path / ENCODER_DIR  # a run's directory: its saved encoder
    try:
        return load_encoder_module(path)
    except VideoEncoderLoadError as exc:
        raise TrainingInputError(f"cannot fine-tune from {init_from!r}: {exc}") from None


def _initial_weights(init_from: str, source: TemporalEncoder, model: TemporalEncoder) -> None:
    ours, theirs = model.config, source.config
    if (ours.frame_dim, ours.hidden, ours.layers, ours.dim) != (
        theirs.frame_dim,
        theirs.hidden,
        theirs.layers,
        theirs.dim,
    ):
        raise TrainingInputError(
            f"cannot fine-tune from {init_from!r}: it was trained with frame_dim={theirs.frame_dim}, "
            f"hidden={theirs.hidden}, layers={theirs.layers}, dim={theirs.dim}; this run has "
            f"frame_dim={ours.frame_dim}, hidden={ours.hidden}, layers={ours.layers}, dim={ours.dim}"
        )
    if theirs.clip_identity != ours.clip_identity:
        raise TrainingInputError(
            f"cannot fine-tune from {init_from!r}: it was trained on frame features of "
            f"{theirs.clip_model!r}, this run uses {ours.clip_model!r}"
        )
    state = source.state_dict()
    if state["positions"].shape != model.positions.shape:  # another frame count: stretch the positions
        state["positions"] = source._positions(model.positions.shape[1]).detach()
    model.load_state_dict(state)


def _load_checkpoint(path: Path, config: VideoTrainConfig) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = VideoTrainConfig.model_validate(ckpt["config"])
    except (OSError, RuntimeError, KeyError, ValueError, EOFError) as exc:
        raise TrainingInputError(f"cannot resume from {path}: not a readable checkpoint ({exc})") from None
    changed = {
        name
        for name in VideoTrainConfig.model_fields
        if getattr(saved, name) != getattr(config, name) and name not in RESUMABLE_CHANGES
    }
    if changed:
        raise TrainingInputError(
            f"cannot resume from {path}: it was trained with other settings ({', '.join(sorted(changed))}); "
            "resume with the same ones, or start a new run in another directory"
        )
    return ckpt


def _default_tower(config: VideoTrainConfig) -> FrameTower:
    from mediasearch.core.settings import get_settings
    from mediasearch.models.clip import ClipModel

    return ClipModel(config.clip_model or get_settings().clip_model, device="cpu")


def train_video_encoder(
    config: VideoTrainConfig,
    source: str,
    out_dir: Path,
    *,
    resume: bool = False,
    tower: FrameTower | None = None,
    progress: bool = True,
    plot: bool = True,
    threads: int | None = None,
) -> VideoTrainReport:
    """Train (or fine-tune, or resume) the video encoder on every video in `source` (a store location).

    Writes `out_dir/encoder/` (the model indexing loads), `checkpoint.pt` after every epoch,
    `loss.png` and `report.json`. Raises TrainingInputError for unusable input, naming it.
    `threads` caps torch's CPU threads for the run: small models on a shared machine run many
    times faster on one thread than on several spinning against other processes.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(config, source, Path(out_dir), resume, tower, progress, plot)
    finally:
        torch.set_num_threads(previous)


def _train(
    config: VideoTrainConfig,
    source: str,
    out_dir: Path,
    resume: bool,
    tower: FrameTower | None,
    progress: bool,
    plot: bool,
) -> VideoTrainReport:
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise TrainingInputError(
            f"{out_dir} already holds a training run: pass resume to continue it, or give another directory"
        )
    if resume and not checkpoint_path.exists():
        raise TrainingInputError(f"nothing to resume: {checkpoint_path} does not exist")
    try:
        store = open_store(source)
        listed = list_videos(store)
    except (StoreError, OSError, ValueError) as exc:
        raise TrainingInputError(f"cannot list the videos in {source!r}: {exc}") from None
    if not listed:
        raise TrainingInputError(
            f"{source!r} holds no videos (looked for .mp4 .mov .m4v .webm .mkv .gif files)"
        )
    ckpt = _load_checkpoint(checkpoint_path, config) if resume else None
    fine_tune = _fine_tune_source(config.init_from) if config.init_from and ckpt is None else None
    tower = tower or _default_tower(config)

    feats: list[np.ndarray] = []
    skipped: list[SkippedVideo] = []
    short = 0
    computing = 0.0
    bar = tqdm(listed, desc="frame features", unit="video", disable=not progress, file=sys.stderr)
    for key, fingerprint in bar:
        t0 = time.perf_counter()
        try:
            f, computed, is_short = video_features(store, key, fingerprint, tower, config, out_dir / "cache")
        except (VideoError, StoreError) as exc:
            skipped.append(SkippedVideo(uri=store.uri(key), error=str(exc)))
            continue
        if computed:
            computing += time.perf_counter() - t0
        feats.append(f)
        short += is_short
    if len(feats) < 2:
        reasons = "; ".join(s.error for s in skipped[:3])
        raise TrainingInputError(
            f"{source!r} has {len(feats)} readable video(s): Barlow Twins compares videos in a batch and "
            f"needs at least 2" + (f" ({reasons})" if reasons else "")
        )
    features = torch.from_numpy(np.stack(feats))  # (videos, draws, 2, frames, D)

    model = build_encoder(config, int(features.shape[-1]), tower)
    if fine_tune is not None and config.init_from:
        _initial_weights(config.init_from, fine_tune, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, step, epoch_loss = 0, 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, epoch_loss = ckpt["epoch"], ckpt["step"], list(ckpt["epoch_loss"])
        torch.set_rng_state(ckpt["torch_rng"])

    before = full_loss(model, features, config.lambda_offdiag)
    epoch_seconds: list[float] = []
    steps_per_epoch = len(epoch_plan(config, 0, len(feats)))
    bar = tqdm(
        total=(config.epochs - start_epoch) * steps_per_epoch,
        desc="train",
        unit="step",
        disable=not progress,
        file=sys.stderr,
    )
    model.train()
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        losses = []
        for idx, draws, swap in epoch_plan(config, epoch, len(feats)):
            pair = features[torch.from_numpy(idx), torch.from_numpy(draws)]  # (B, 2, F, D)
            v1, v2 = (pair[:, 1], pair[:, 0]) if swap else (pair[:, 0], pair[:, 1])
            loss = barlow_twins_loss(model(v1), model(v2), config.lambda_offdiag)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.2f}")
        epoch_loss.append(float(np.mean(losses)) if losses else math.nan)
        epoch_seconds.append(time.perf_counter() - t0)
        _save(model, optimizer, config, epoch + 1, step, epoch_loss, out_dir)
    bar.close()
    model.eval()
    save_encoder(model, out_dir / ENCODER_DIR)
    loss_plot = None
    if plot and epoch_loss:
        loss_plot = str(
            draw_lines(
                {"Barlow Twins loss": [(i + 1, v) for i, v in enumerate(epoch_loss)]},
                out_dir / LOSS_PLOT,
                title=f"video encoder: {len(feats)} videos, batch {config.batch_size}, λ={config.lambda_offdiag:g}",
                xlabel="epoch",
                ylabel="loss",
            )
        )
    report = VideoTrainReport(
        source=source,
        out_dir=str(out_dir),
        encoder_dir=str(out_dir / ENCODER_DIR),
        checkpoint=str(checkpoint_path),
        loss_plot=loss_plot,
        videos=len(feats),
        skipped=skipped,
        short_videos=short,
        clip_model=tower.name,
        cached_draws=config.aug_draws,
        feature_seconds=round(computing, 3),
        start_epoch=start_epoch,
        epochs=config.epochs,
        steps=step,
        epoch_loss=epoch_loss,
        full_loss_before=round(before, 6),
        full_loss_after=round(full_loss(model, features, config.lambda_offdiag), 6),
        epoch_seconds=[round(s, 4) for s in epoch_seconds],
        fine_tuned_from=config.init_from,
    )
    (out_dir / REPORT).write_text(report.model_dump_json(indent=2))
    return report


def _save(
    model: TemporalEncoder,
    optimizer: torch.optim.Optimizer,
    config: VideoTrainConfig,
    epoch: int,
    step: int,
    epoch_loss: list[float],
    out_dir: Path,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (CHECKPOINT + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": config.model_dump(mode="json"),
            "epoch": epoch,
            "step": step,
            "epoch_loss": epoch_loss,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(out_dir / CHECKPOINT)  # a kill mid-save leaves the previous epoch's checkpoint
