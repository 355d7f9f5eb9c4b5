"""The self-supervised video encoder: loss, augmentation, training, resume, fine-tuning and the CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle
from mediasearch.models.clip import ClipModel
from mediasearch.models.video_encoder import VideoEncoder, load_encoder_module, resample
from mediasearch.training import augment
from mediasearch.training.barlow import barlow_twins_loss, cross_correlation
from mediasearch.training.config import VideoTrainConfig
from mediasearch.training.video import (
    CHECKPOINT,
    TrainingInputError,
    augmented_pair_features,
    decode_at,
    segment_times,
    train_video_encoder,
)

ROOT = Path(__file__).resolve().parents[1]


def loop_loss(z1: np.ndarray, z2: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    """The loss written out term by term, in float64, with no matrix algebra."""
    n, d = z1.shape

    def standardised(z: np.ndarray) -> list[list[float]]:
        cols = []
        for j in range(d):
            mean = sum(z[i, j] for i in range(n)) / n
            var = sum((z[i, j] - mean) ** 2 for i in range(n)) / n
            cols.append([(z[i, j] - mean) / (var + eps) ** 0.5 for i in range(n)])
        return cols

    a, b = standardised(z1), standardised(z2)
    total = 0.0
    for i, j in itertools.product(range(d), range(d)):
        c = sum(a[i][k] * b[j][k] for k in range(n)) / n
        total += (1 - c) ** 2 if i == j else lam * c**2
    return total


@pytest.mark.parametrize("lam", [0.001, 0.5])
def test_loss_matches_a_term_by_term_computation(lam: float) -> None:
    rng = np.random.default_rng(3)
    z1 = rng.normal(size=(6, 5))
    z2 = z1 * 0.7 + rng.normal(size=(6, 5)) * 0.5
    got = barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), lam).item()
    assert got == pytest.approx(loop_loss(z1, z2, lam), rel=1e-9)
    # And the D x D matrix the formula names agrees with it, term by term.
    c = cross_correlation(torch.tensor(z1), torch.tensor(z2))
    direct = ((1 - torch.diagonal(c)) ** 2).sum() + lam * (c**2).sum() - lam * (torch.diagonal(c) ** 2).sum()
    assert direct.item() == pytest.approx(got, rel=1e-9)


def test_loss_is_near_zero_for_identical_decorrelated_views_and_refuses_a_batch_of_one() -> None:
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # standardised, uncorrelated
    assert barlow_twins_loss(z, z, 0.001).item() < 1e-4
    with pytest.raises(ValueError, match="at least 2"):
        barlow_twins_loss(z[:1], z[:1])


def test_one_draw_transforms_every_frame_of_both_segments_alike() -> None:
    rng = np.random.default_rng(0)
    params = augment.sample_params(rng, aspect=4 / 3)
    frame = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    other = Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = augment.apply_all([frame, other, frame.copy(), other.copy()], params, 32)
    assert all(im.size == (32, 32) for im in out)
    # Equal inputs, wherever they are in the two segments, come out equal: one transformation.
    assert np.array_equal(np.asarray(out[0]), np.asarray(out[2]))
    assert np.array_equal(np.asarray(out[1]), np.asarray(out[3]))
    # And a transformation does something: another draw changes the frame.
    second = augment.apply(frame, augment.sample_params(rng, 4 / 3), 32)
    assert not np.array_equal(np.asarray(out[0]), np.asarray(second))


class RecordingTower:
    """Wraps the tiny CLIP, remembering every batch of images it embedded."""

    def __init__(self, clip: ClipModel) -> None:
        self.clip = clip
        self.name = clip.name
        self.batches: list[list[Image.Image]] = []

    @property
    def identity(self):
        return self.clip.identity

    def embed_images(self, images):
        self.batches.append(list(images))
        return self.clip.embed_images(images)


def test_the_pair_is_embedded_under_one_transformation(clip_model: ClipModel, tmp_path: Path) -> None:
    data, _ = render_video(VideoSpec("v.mp4", 64, 48, 8, scenes_cycle([1.0, 1.0])))
    (tmp_path / "v.mp4").write_bytes(data)
    config = VideoTrainConfig(segment_seconds=1.0, frames=2, fps=2.0, image_size=32)
    times = segment_times(2.0, config, np.random.default_rng(0))
    frames = decode_at(tmp_path / "v.mp4", times.ravel(), 64)
    params = augment.sample_params(np.random.default_rng(5), 4 / 3)
    tower = RecordingTower(clip_model)
    feats = augmented_pair_features(tower, frames, times, params, 32)
    assert feats.shape == (2, 2, clip_model.dim)
    (batch,) = tower.batches
    expected = [augment.apply(frames[float(t)], params, 32) for t in times.ravel()]
    assert [np.asarray(a).tolist() for a in batch] == [np.asarray(b).tolist() for b in expected]


def test_short_videos_get_two_segments_of_half_their_length() -> None:
    config = VideoTrainConfig()  # 32 s segments, 32 frames at 1 fps
    long = segment_times(600.0, config, np.random.default_rng(0))
    assert long.shape == (2, 32) and np.allclose(np.diff(long, axis=1), 1.0)
    short = segment_times(8.0, config, np.random.default_rng(0))
    # An 8 s video: 4 s segments, still 32 frames each, 1/8 s apart, inside the video.
    assert short.shape == (2, 32) and np.allclose(np.diff(short, axis=1), 0.125)
    assert short.min() >= 0 and short.max() < 8.0


def test_frames_must_fit_the_segment() -> None:
    with pytest.raises(ValueError, match="longer than segment_seconds"):
        VideoTrainConfig(segment_seconds=10, frames=32, fps=1)


def test_resample_spreads_frames_over_the_video() -> None:
    times = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert resample(times, 3).tolist() == [0, 3, 4]  # 0, 5 (nearest: 3.0), 10
    assert resample(np.array([4.0]), 3).tolist() == [0, 0, 0]


# -------------------------------------------------------------------------------------- training

TINY = dict(
    segment_seconds=2.0,
    frames=4,
    fps=4.0,
    dim=16,
    hidden=16,
    layers=1,
    aug_draws=2,
    image_size=32,
    batch_size=4,
    lr=3e-3,
    seed=0,
)


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six tiny videos, each its own colours and cut pattern, 1.5-2.5 s long (short: scaled segments)."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        lengths = [0.5 + 0.25 * (i % 3), 1.0, 0.5 + 0.25 * (i % 2)]
        spec = VideoSpec(f"clip{i}.mp4", 64, 48, 8, scenes_cycle(lengths, offset=i))
        (root / spec.key).write_bytes(render_video(spec, seed=i)[0])
    (root / "notes.txt").write_text("not a video")
    return root


def test_a_short_seeded_run_lowers_the_loss(
    video_folder: Path, clip_model: ClipModel, tmp_path: Path
) -> None:
    config = VideoTrainConfig(epochs=40, **{**TINY, "batch_size": 6})
    report = train_video_encoder(
        config, str(video_folder), tmp_path / "run", tower=clip_model, progress=False, threads=1
    )
    assert report.videos == 6 and report.short_videos == 6 and not report.skipped
    assert report.steps == 40  # one batch of the 6 videos an epoch
    # Per-epoch losses are noisy (batches of 4 and 2, one of two draws); the loss over every video
    # and draw at once is not.
    assert report.full_loss_after < 0.5 * report.full_loss_before, report
    assert (tmp_path / "run" / "loss.png").read_bytes().startswith(b"\x89PNG")
    encoder = VideoEncoder(tmp_path / "run" / "encoder")
    vec = encoder.encode(np.random.default_rng(0).normal(size=(3, 4, clip_model.dim)))
    assert vec.shape == (3, 16) and np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    # A second run from the same seed reads the cached features: no frame tower work, same losses.
    again = train_video_encoder(
        config, str(video_folder), tmp_path / "run2", tower=clip_model, progress=False, threads=1
    )
    assert again.epoch_loss == pytest.approx(report.epoch_loss, rel=1e-5)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_encoder_module(run / "encoder").state_dict()


def test_resuming_continues_identically(video_folder: Path, clip_model: ClipModel, tmp_path: Path) -> None:
    straight = train_video_encoder(
        VideoTrainConfig(epochs=4, **TINY),
        str(video_folder),
        tmp_path / "a",
        tower=clip_model,
        progress=False,
        threads=1,
    )
    train_video_encoder(
        VideoTrainConfig(epochs=2, **TINY),
        str(video_folder),
        tmp_path / "b",
        tower=clip_model,
        progress=False,
        threads=1,
    )
    with pytest.raises(TrainingInputError, match="already holds a training run"):
        train_video_encoder(
            VideoTrainConfig(epochs=4, **TINY),
            str(video_folder),
            tmp_path / "b",
            tower=clip_model,
            progress=False,
            threads=1,
        )
    resumed = train_video_encoder(
        VideoTrainConfig(epochs=4, **TINY),
        str(video_folder),
        tmp_path / "b",
        tower=clip_model,
        progress=False,
        threads=1,
        resume=True,
    )
    assert resumed.start_epoch == 2 and resumed.steps == straight.steps
    assert resumed.epoch_loss == straight.epoch_loss
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The optimizer's state was restored too (Adam's moments): checked by the equal weights above,
    # which a fresh optimizer after epoch 2 would not give.
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    assert ckpt["epoch"] == 4 and ckpt["optimizer"]["state"]
    with pytest.raises(TrainingInputError, match=r"other settings.*lr"):
        train_video_encoder(
            VideoTrainConfig(epochs=5, **{**TINY, "lr": 1e-2}),
            str(video_folder),
            tmp_path / "b",
            tower=clip_model,
            progress=False,
            threads=1,
            resume=True,
        )


def test_fine_tuning_starts_from_the_saved_weights(
    video_folder: Path, clip_model: ClipModel, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    train_video_encoder(
        VideoTrainConfig(epochs=3, **TINY),
        str(video_folder),
        base,
        tower=clip_model,
        progress=False,
        threads=1,
    )
    tuned = train_video_encoder(
        VideoTrainConfig(epochs=1, init_from=str(base), **{**TINY, "lr": 1e-9}),
        str(video_folder),
        tmp_path / "tuned",
        tower=clip_model,
        progress=False,
        threads=1,
    )
    assert tuned.start_epoch == 0 and tuned.fine_tuned_from == str(base)
    a, b = _weights(base), _weights(tmp_path / "tuned")
    # With a vanishing learning rate the fine-tuned weights are the base's (BatchNorm's running
    # statistics move on, as they do in any training step).
    params = [k for k in a if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in params)
    with pytest.raises(TrainingInputError, match="dim=16"):
        train_video_encoder(
            VideoTrainConfig(epochs=1, init_from=str(base), **{**TINY, "dim": 32}),
            str(video_folder),
            tmp_path / "wide",
            tower=clip_model,
            progress=False,
            threads=1,
        )


# ------------------------------------------------------------------------------------------- CLI


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediasearch.cli", "train", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        timeout=300,
    )


def test_cli_trains_and_refuses_bad_input_in_one_line(
    video_folder: Path, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    env = {"MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir), "MEDIASEARCH_DEVICE": "cpu"}
    small = ["--segment-seconds", "2", "--frames", "4", "--fps", "4", "--dim", "16", "--hidden", "16"]
    small += ["--aug-draws", "1", "--image-size", "32", "--batch-size", "4", "--threads", "1"]
    out = tmp_path / "run"
    done = _cli(
        "video-encoder", str(video_folder), "--out", str(out), "--epochs", "2", *small, "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["videos"] == 6 and len(report["epoch_loss"]) == 2
    assert (out / "encoder" / "weights.pt").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    cases = {
        "holds no videos": ["video-encoder", str(empty), "--out", str(tmp_path / "e")],
        "no such folder": ["video-encoder", str(tmp_path / "missing"), "--out", str(tmp_path / "m")],
        "longer than segment_seconds": ["video-encoder", str(video_folder), "--frames", "64", "--fps", "1"],
        "already holds a training run": ["video-encoder", str(video_folder), "--out", str(out), *small],
        "nothing to resume": ["video-encoder", str(video_folder), "--out", str(tmp_path / "n"), "--resume"],
        "cannot fine-tune from": [
            "video-encoder",
            str(video_folder),
            "--out",
            str(tmp_path / "f"),
            "--init-from",
            str(tmp_path / "nope"),
            *small,
        ],
    }
    for expected, args in cases.items():
        # The first case in a process of its own (exit code and stderr as a shell sees them); the
        # rest through the same top-level group in-process, which is what turns errors into lines.
        if expected == "holds no videos":
            proc = _cli(*args, env=env)
            code, stderr = proc.returncode, proc.stderr
        else:
            result = CliRunner().invoke(app, ["train", *args], env=env)
            code, stderr = result.exit_code, result.stderr
        lines = stderr.strip().splitlines()
        assert code != 0 and len(lines) == 1 and expected in lines[0], (expected, stderr)
        assert "Traceback" not in stderr


def test_segment_retrieval_ranks_each_segment_against_the_other_videos() -> None:
    from mediasearch.training.evaluate import evaluate_segments, retrieval

    a = np.eye(4, dtype=np.float32)
    b = np.eye(4, dtype=np.float32)
    b[2] = [0, 1, 0.1, 0]  # video 2's second segment looks like video 1's
    scores = retrieval(a, b, ks=(1, 2))
    # Every segment finds its own video first except b2, whose nearest first segment is a1's.
    assert scores.recall == {"1": 0.875, "2": 1.0}
    assert scores.mrr == pytest.approx((7 + 0.5) / 8)
    pairs = np.stack([np.stack([a, a], 1), np.stack([b, b], 1)], 1)  # (4 videos, 2, 2 frames, 4)
    report = evaluate_segments(pairs, lambda x: x.mean(axis=1), ks=(1, 2))
    assert report.videos == 4 and report.queries == 8
    assert report.learned == report.baseline == scores
