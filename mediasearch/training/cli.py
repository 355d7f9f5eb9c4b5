"""`mediasearch train ...`: train the project's own encoders on a folder (or S3 prefix) of media.

Imported only when `mediasearch train` runs (a lazy group of `mediasearch.cli`); the heavy modules
(torch, the training loops) are imported inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mediasearch.cli_support import CliError, folder

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
