"""`mediasearch train ...`: train the project's own encoders. Imported only when the group runs (torch loads then)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mediasearch.cli_support import error

train_app = typer.Typer(help="Train the project's own encoders (see README).", no_args_is_help=True)


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
