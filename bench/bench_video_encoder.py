"""The self-supervised video encoder: training time per epoch, and segment-to-video retrieval on
held-out videos against the CLIP frame-mean baseline.

A synthetic corpus (`mediasearch.corpus.videos.varied_specs`: each video cuts between scenes of its
own palette, at its own size, rate and grain) is split into training and held-out videos. The
encoder is trained on the first with `train_video_encoder` (the `mediasearch train video-encoder`
code path); on the held-out ones, the first and last segment of each video must find each other
(recall@1 and @5 over both directions). Figures: the loss curve, recall bars and seconds per stage.

The frame tower is a random-weight CLIP unless --clip-model names a trained one: random weights
make frame features that are deterministic functions of the pixels (colour and layout survive a
random ViT), not semantic ones.

    python bench/bench_video_encoder.py                       # tiny random CLIP, 80 + 40 videos
    python bench/bench_video_encoder.py --clip-model DIR      # a real or trained CLIP checkpoint
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, environment, loadavg, log
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.videos import render_video, varied_specs
from mediasearch.models.clip import ClipModel
from mediasearch.models.random_init import build_random_clip
from mediasearch.models.video_encoder import VideoEncoder
from mediasearch.training.config import VideoTrainConfig
from mediasearch.training.evaluate import evaluate_segments, segment_pairs
from mediasearch.training.plot import draw_bars, draw_lines
from mediasearch.training.video import build_encoder, train_video_encoder

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=120)
    p.add_argument("--holdout", type=int, default=40)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-seconds", type=float, default=8.0)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--aug-draws", type=int, default=4)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip-model", default=None, help="a CLIP checkpoint (default: a tiny random one)")
    p.add_argument("--clip-size", choices=["tiny", "base"], default="tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="keep videos and runs here (default: a temp dir)")
    p.add_argument("--figures", type=Path, default=FIGURES)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-video-encoder-"))
    load_before = loadavg()

    t0 = time.perf_counter()
    specs = varied_specs(args.videos, prefix="", seed=0)
    data = work / "videos"
    train_dir, held_dir = data / "train", data / "held-out"
    for i, spec in enumerate(specs):
        target = (held_dir if i >= args.videos - args.holdout else train_dir) / Path(spec.key).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(render_video(spec, seed=i)[0])
    render_s = time.perf_counter() - t0
    log(f"{args.videos} videos in {render_s:.1f} s ({args.holdout} held out)")

    if args.clip_model:
        clip_dir, clip_what = Path(args.clip_model), args.clip_model
    else:
        clip_dir = build_random_clip(work / f"clip-{args.clip_size}", size=args.clip_size, projection_dim=64)
        clip_what = f"random {args.clip_size} CLIP" + (" (64-d)" if args.clip_size == "tiny" else "")
    tower = ClipModel(str(clip_dir), device="cpu", batch_size=32)
    config = VideoTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        segment_seconds=args.segment_seconds,
        frames=args.frames,
        fps=args.fps,
        dim=args.dim,
        hidden=args.hidden,
        aug_draws=args.aug_draws,
        image_size=224 if args.clip_size == "base" or args.clip_model else 64,
    )
    run = work / f"run-{int(time.time())}"
    report = train_video_encoder(
        config, str(train_dir), run, tower=tower, progress=True, threads=args.threads
    )
    log(f"trained: loss {report.epoch_loss[0]:.1f} -> {report.epoch_loss[-1]:.1f}")

    t0 = time.perf_counter()
    store = LocalStore(held_dir)
    keys = sorted(o.key for o in store.list())
    pairs = segment_pairs(store, keys, tower, config)
    held_features_s = time.perf_counter() - t0
    encoder = VideoEncoder(report.encoder_dir)
    scores = evaluate_segments(pairs, encoder.encode)
    untrained = build_encoder(config, pairs.shape[-1], tower).eval()
    with torch.no_grad():
        reference = evaluate_segments(pairs, lambda x: untrained(torch.from_numpy(x)).numpy())
    assert scores.learned is not None and reference.learned is not None

    figures = args.figures
    draw_lines(
        {"Barlow Twins loss": [(i + 1, v) for i, v in enumerate(report.epoch_loss)]},
        figures / "video_encoder_loss.png",
        title=f"video encoder training: {report.videos} videos, batch {config.batch_size}, {clip_what}",
        xlabel="epoch",
        ylabel="loss",
    )
    draw_bars(
        {
            f"R@{k}": {
                "trained encoder": scores.learned.recall[k],
                "CLIP frame mean": scores.baseline.recall[k],
                "untrained encoder": reference.learned.recall[k],
            }
            for k in ("1", "5")
        },
        figures / "video_encoder_recall.png",
        title=f"segment-to-video retrieval, {scores.videos} held-out videos ({scores.queries} queries)",
        ylabel="recall",
    )
    per_video_feature_s = report.feature_seconds / max(1, report.videos)
    epoch_s = float(np.median(report.epoch_seconds))
    draw_bars(
        {
            "frame features / video": {"seconds": per_video_feature_s},
            "training epoch": {"seconds": epoch_s},
        },
        figures / "video_encoder_time.png",
        title=f"time on {environment()['cpu_count']} CPU cores ({config.aug_draws} cached draws/video, "
        f"{report.videos} videos/epoch)",
        ylabel="seconds",
        y_max=max(per_video_feature_s, epoch_s) * 1.2,
    )
    emit(
        "video_encoder",
        {
            "clip": clip_what,
            "config": config.model_dump(mode="json"),
            "train_videos": report.videos,
            "held_out_videos": scores.videos,
            "render_s": round(render_s, 2),
            "feature_s_per_train_video": round(per_video_feature_s, 3),
            "feature_s_total": report.feature_seconds,
            "epoch_s_median": round(epoch_s, 4),
            "epoch_s": report.epoch_seconds,
            "steps": report.steps,
            "loss_first": round(report.epoch_loss[0], 3),
            "loss_last": round(report.epoch_loss[-1], 3),
            "full_loss_before": report.full_loss_before,
            "full_loss_after": report.full_loss_after,
            "held_out_feature_s": round(held_features_s, 2),
            "segment_retrieval": {
                "trained": scores.learned.model_dump(),
                "clip_frame_mean": scores.baseline.model_dump(),
                "untrained": reference.learned.model_dump(),
            },
            "figures": [
                str(figures / f)
                for f in ("video_encoder_loss.png", "video_encoder_recall.png", "video_encoder_time.png")
            ],
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
