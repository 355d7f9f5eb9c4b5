"""`mediasearch train ...`: train the project's own encoders on a folder (or S3 prefix) of media.

Imported only when `mediasearch train` runs (a lazy group of `mediasearch.cli`); the heavy modules
(torch, the training loops) are imported inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mediasearch.cli_support import CliError, error, folder

train_app = typer.Typer(
    help="Train the project's own encoders (the self-supervised video encoder; CLIP fine-tuning).",
    no_args_is_help=True,
)


@train_app.command("video-encoder")
def video_encoder(
    source: Annotated[str, typer.Argument(help="a folder (or s3://bucket/prefix) of videos")],
    out: Annotated[
        Path, typer.Option(help="run directory: encoder/, checkpoint.pt, loss.png, report.json")
    ] = Path("video-encoder"),
    epochs: Annotated[int, typer.Option(min=1, help="epochs (in all, counting a resumed run's)")] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="videos per batch (the loss compares them)")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-3,
    segment_seconds: Annotated[float, typer.Option(help="length of each of the two segments")] = 32.0,
    frames: Annotated[int, typer.Option(min=1, help="frames per segment")] = 32,
    fps: Annotated[float, typer.Option(help="rate the frames are taken at")] = 1.0,
    dim: Annotated[int, typer.Option(min=8, help="width of the learned video feature")] = 4096,
    hidden: Annotated[int, typer.Option(min=8, help="width of the temporal model")] = 512,
    layers: Annotated[int, typer.Option(min=0, help="transformer layers of the temporal model")] = 1,
    lambda_offdiag: Annotated[float, typer.Option("--lambda", help="λ, the off-diagonal weight")] = 0.001,
    aug_draws: Annotated[
        int, typer.Option(min=1, help="augmented segment pairs per video, their CLIP features cached")
    ] = 4,
    image_size: Annotated[int, typer.Option(help="side of the augmented frames")] = 224,
    clip_model: Annotated[
        str | None, typer.Option(help="frozen frame tower (default: MEDIASEARCH_CLIP_MODEL)")
    ] = None,
    init_from: Annotated[
        str | None, typer.Option(help="fine-tune: start from this encoder (or run) directory")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    seed: Annotated[int, typer.Option(help="fixes the draws, the shuffling and the initial weights")] = 0,
    threads: Annotated[
        int,
        typer.Option(min=0, help="torch CPU threads (0: torch's default; 1 is fastest on a busy machine)"),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Train the video encoder (Barlow Twins over two segments of each video, frozen CLIP frames).

    Point MEDIASEARCH_VIDEO_ENCODER at OUT/encoder to index its feature with every video.
    """
    from pydantic import ValidationError

    from mediasearch.training.config import VideoTrainConfig

    source = folder(source)  # a missing folder or a file is a one-line error before any model loads
    try:
        config = VideoTrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            segment_seconds=segment_seconds,
            frames=frames,
            fps=fps,
            dim=dim,
            hidden=hidden,
            layers=layers,
            lambda_offdiag=lambda_offdiag,
            aug_draws=aug_draws,
            image_size=image_size,
            clip_model=clip_model,
            init_from=init_from,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-") if first["loc"] else "options"
        raise CliError(f"{where}: {first['msg']}") from None

    from mediasearch.training.video import TrainingInputError, train_video_encoder

    try:
        report = train_video_encoder(config, source, out, resume=resume, threads=threads or None)
    except TrainingInputError as exc:
        raise CliError(str(exc), code=1) from None
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    typer.echo(
        f"trained on {report.videos} videos ({report.short_videos} shorter than two segments), "
        f"epochs {report.start_epoch + 1}-{report.epochs}, {report.steps} steps; "
        f"loss {report.epoch_loss[0]:.2f} -> {report.epoch_loss[-1]:.2f}"
        if report.epoch_loss
        else f"nothing to train: {out} is already at epoch {report.epochs}"
    )
    for s in report.skipped:
        typer.echo(f"skipped {s.uri}: {s.error}", err=True)
    typer.echo(f"encoder: {report.encoder_dir}  (MEDIASEARCH_VIDEO_ENCODER={report.encoder_dir})")
    if report.loss_plot:
        typer.echo(f"loss curve: {report.loss_plot}")


@train_app.command("demo-pairs")
def demo_pairs(
    dest: Annotated[Path, typer.Argument(help="folder to write the images and the two pairs files to")],
    copies: Annotated[int, typer.Option(help="renderings (seeds) of each training combination")] = 6,
) -> None:
    """Synthetic training pairs with held-out colour x shape combinations: DEST/train.jsonl and DEST/heldout.jsonl.

    Captions come from the corpus labels ("a small red circle on a white background"). Six colour x
    shape combinations (each colour and each shape once) are left out of training and make the
    held-out file, rendered with a seed no training image used.
    """
    from mediasearch.training.pairs import write_demo_pairs

    if copies < 1:
        raise error(f"--copies must be at least 1, not {copies}")
    made = write_demo_pairs(dest, copies=copies)
    typer.echo(made.model_dump_json(indent=2))


@train_app.command("clip")
def train_clip_command(
    pairs: Annotated[Path, typer.Argument(help="JSON Lines of {uri, text}: the training pairs")],
    out: Annotated[Path, typer.Option(help="folder to save the model (a CLIP checkpoint) to")] = Path(
        "models/clip-trained"
    ),
    eval_pairs: Annotated[
        Path | None,
        typer.Option("--eval", help="held-out pairs for recall@k (default: --holdout-fraction of PAIRS)"),
    ] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="train a small randomly initialised CLIP instead")
    ] = False,
    base_model: Annotated[
        str | None, typer.Option(help="checkpoint to fine-tune (default: MEDIASEARCH_CLIP_MODEL)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="passes over the training pairs")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="pairs per step (the negatives of each pair)")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate (default 1e-5; 1e-3 from scratch)")
    ] = None,
    holdout_fraction: Annotated[
        float | None, typer.Option(help="share of PAIRS' texts held out when no --eval is given")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="from scratch: input side in pixels")] = None,
    patch_size: Annotated[int | None, typer.Option(help="from scratch: ViT patch side")] = None,
    width: Annotated[int | None, typer.Option(help="from scratch: hidden size of both towers")] = None,
    layers: Annotated[int | None, typer.Option(help="from scratch: layers in each tower")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Contrastive training of CLIP on (image, text) pairs; prints held-out recall@k before and after.

    Fine-tunes MEDIASEARCH_CLIP_MODEL (or --base-model), or with --from-scratch trains a small CLIP
    (see `mediasearch train demo-pairs`). The folder written is a CLIP checkpoint: point
    MEDIASEARCH_CLIP_MODEL at it, or package it with `mediasearch aws package`.
    """
    from pydantic import ValidationError

    from mediasearch.training.config import ClipTrainConfig

    given = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "holdout_fraction": holdout_fraction,
        "image_size": image_size,
        "patch_size": patch_size,
        "width": width,
        "layers": layers,
        "seed": seed,
        "base_model": base_model,
    }
    try:
        config = ClipTrainConfig.model_validate(
            {"from_scratch": from_scratch, **{k: v for k, v in given.items() if v is not None}}
        )
    except ValidationError as exc:
        e = exc.errors()[0]
        raise error(f"--{str(e['loc'][0]).replace('_', '-')}={e.get('input')!r}: {e['msg']}") from None
    if from_scratch and base_model:
        raise error("--from-scratch and --base-model exclude each other")
    if eval_pairs is None and config.holdout_fraction == 0:
        typer.echo("no --eval and --holdout-fraction 0: recall is not measured", err=True)

    from mediasearch.training.clip import train_clip
    from mediasearch.training.pairs import PairsError

    try:
        report = train_clip(config, pairs, out, eval_pairs=eval_pairs, progress=not quiet)
    except PairsError as exc:
        raise error(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
