"""The SageMaker training container's contract, as the training jobs' entry point meets it.

What SageMaker gives the container (and the training toolkit in the PyTorch training DLC repeats as
SM_* variables; sagemaker-training-toolkit `environment.py`):

    /opt/ml/input/config/hyperparameters.json   the job's HyperParameters, every value a string
    /opt/ml/input/config/resourceconfig.json    hosts (one here: the jobs do not distribute)
    /opt/ml/input/data/<channel>/               each InputDataConfig channel, downloaded (File mode)
    /opt/ml/checkpoints/                        CheckpointConfig.LocalPath: synced with S3 both ways,
                                                restored before a restarted (spot) job starts

and what it expects back:

    /opt/ml/model/        tarred by SageMaker into <S3OutputPath>/<job>/output/model.tar.gz
    /opt/ml/output/failure  on error: its first 1024 characters become the job's FailureReason

`/opt/ml` is the toolkit's SAGEMAKER_BASE_DIR when that is set (how the tests lay the tree out in a
temporary folder); SM_MODEL_DIR, SM_OUTPUT_DIR and SM_CHANNEL_<NAME> win where the toolkit sets them.

/opt/ml/model is written in the layout of `mediasearch.aws.packaging` (weights at the root, `code/`
with the handler and this package), so the archive SageMaker makes of it is a model.tar.gz that
`mediasearch aws transform` and `aws deploy --endpoint-only` take as it is:

    clip            the fine-tuned CLIP at the root (what train_clip saves), `code/` = model_handlers/clip
    video-encoder   the frozen CLIP the encoder was trained over at the root (so the same handler embeds
                    the frames it reads), the encoder in `video_encoder/`, `code/` = model_handlers/clip;
                    the run itself (checkpoint.pt, feature cache) in /opt/ml/checkpoints/video-encoder,
                    resumed when a restarted job finds it there

Torch-free at import: the training functions are imported when a job runs.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from mediasearch.training.config import ClipTrainConfig, TrainConfig, VideoTrainConfig

Job = Literal["video-encoder", "clip"]
JOBS: dict[str, type[TrainConfig]] = {"video-encoder": VideoTrainConfig, "clip": ClipTrainConfig}
# The channel each job reads its data from (InputDataConfig ChannelName; the launcher uses the same).
DATA_CHANNEL: dict[str, str] = {"video-encoder": "videos", "clip": "pairs"}
# Optional channel: a saved CLIP (its files, or one model.tar.gz) to train from instead of a hub id.
MODEL_CHANNEL = "model"

SAGEMAKER_ROOT = Path("/opt/ml")
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"  # the toolkit's own name for a relocated /opt/ml
VIDEO_ENCODER_SUBDIR = "video_encoder"
# Hyperparameters that are not the config's: the toolkit's own (sagemaker_program, ...) and the
# launcher's job options (which job, the pairs file), kept apart by prefix.
TOOLKIT_PREFIX = "sagemaker_"
JOB_PREFIX = "mediasearch_"
JOB_KEY = "mediasearch_job"
PAIRS_KEY = "mediasearch_pairs"
PREFIX_KEY = "mediasearch_pairs_prefix"
FAILURE_MAX = 1024  # DescribeTrainingJob's FailureReason keeps this many characters of the file


class TrainingInputError(ValueError):
    """The job's inputs (hyperparameters, channels) are wrong; the message names the input."""


@dataclass(frozen=True)
class ContainerLayout:
    root: Path
    model_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    environ: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ContainerLayout:
        root = Path(environ.get(BASE_DIR_ENV) or SAGEMAKER_ROOT)
        return cls(
            root=root,
            model_dir=Path(environ.get("SM_MODEL_DIR") or root / "model"),
            output_dir=Path(environ.get("SM_OUTPUT_DIR") or root / "output"),
            # CheckpointConfig.LocalPath: the launcher sets /opt/ml/checkpoints, which has no SM_ variable.
            checkpoint_dir=root / "checkpoints",
            environ=environ,
        )

    @property
    def hyperparameters_file(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def channel(self, name: str, required: bool = True) -> Path | None:
        path = Path(self.environ.get(f"SM_CHANNEL_{name.upper()}") or self.root / "input" / "data" / name)
        if path.is_dir():
            return path
        if required:
            raise TrainingInputError(f"channel {name!r}: {path} is not a directory (was the channel given?)")
        return None


def read_hyperparameters(path: Path) -> dict[str, str]:
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TrainingInputError(f"{path}: not a JSON object of hyperparameters ({exc})") from None
    if not isinstance(values, dict):
        raise TrainingInputError(f"{path}: not a JSON object of hyperparameters")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _option(values: Mapping[str, str], key: str) -> str | None:
    """A job option as the launcher wrote it (a plain string), or as an SDK would (JSON-quoted)."""
    value = values.get(key)
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def parse_config(job: str, values: Mapping[str, str]) -> TrainConfig:
    """The job's config from its hyperparameters, the toolkit's and the launcher's own keys left out."""
    own = {k: v for k, v in values.items() if not k.startswith((TOOLKIT_PREFIX, JOB_PREFIX))}
    try:
        return JOBS[job].from_hyperparameters(own)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'hyperparameters'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TrainingInputError(f"hyperparameters for {job}: {problems}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_failure(layout: ContainerLayout, reason: str) -> None:
    """The reason SageMaker reports as FailureReason: one line, first writer wins (as the toolkit's
    `files.write_failure_file`, so its traceback does not replace ours)."""
    layout.output_dir.mkdir(parents=True, exist_ok=True)
    if not layout.failure_file.exists():
        layout.failure_file.write_text(_one_line(reason)[:FAILURE_MAX])


def saved_model(channel: Path, scratch: Path) -> Path:
    """The saved model a `model` channel holds: its files, or one model.tar.gz (what a training job or
    `aws package` wrote), unpacked into `scratch`."""
    if (channel / "config.json").is_file():
        return channel
    archives = sorted(channel.rglob("*.tar.gz"))
    if len(archives) == 1:
        with tarfile.open(archives[0]) as tar:
            tar.extractall(scratch, filter="data")
        if (scratch / "config.json").is_file():
            return scratch
    raise TrainingInputError(
        f"channel {MODEL_CHANNEL!r}: {channel} holds neither a saved model (config.json) nor one model.tar.gz"
    )


def resolve_pairs(channel: Path, name: str | None, s3_prefix: str | None, dest: Path) -> Path:
    """Write the pairs file with every image `uri` made a local path, and return it.

    The `pairs` channel is the S3 folder of the JSON Lines file: SageMaker downloads it (and the images
    the launcher listed) under the channel directory with the keys relative to that folder. So a `uri`
    is either relative to the JSON Lines file's folder, or an s3:// URI under the channel's S3 folder
    (`s3_prefix`, the launcher's PREFIX_KEY hyperparameter; it checks every uri before the job starts).
    """
    if name:
        pairs = channel / name
    else:
        found = sorted(channel.glob("*.jsonl"))
        if len(found) != 1:
            raise TrainingInputError(
                f"channel 'pairs': expected one .jsonl file at {channel}, found {len(found)}"
                f" (name it with the {PAIRS_KEY} hyperparameter)"
            )
        pairs = found[0]
    if not pairs.is_file():
        raise TrainingInputError(f"channel 'pairs': {pairs} is missing")
    base = pairs.parent
    lines = []
    for number, raw in enumerate(pairs.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record: dict[str, Any] = json.loads(raw)
            uri = str(record["uri"])
        except (ValueError, KeyError, TypeError):
            raise TrainingInputError(f"{pairs.name} line {number}: not a JSON object with a uri") from None
        local = base / image_path(uri, s3_prefix)
        if not local.is_file():
            raise TrainingInputError(f"{pairs.name} line {number}: {uri} is not in the channel ({local})")
        record["uri"] = str(local)
        lines.append(json.dumps(record))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(f"{line}\n" for line in lines))
    return dest


def image_path(uri: str, s3_prefix: str | None) -> str:
    """Where a pairs `uri` lies relative to the channel folder (see `resolve_pairs`)."""
    if uri.startswith("s3://"):
        if not s3_prefix or not uri.startswith(s3_prefix):
            raise TrainingInputError(f"pairs uri {uri!r} is not under the channel's folder {s3_prefix!r}")
        return uri.removeprefix(s3_prefix)
    if uri.startswith("/") or ".." in Path(uri).parts:
        raise TrainingInputError(f"pairs uri {uri!r}: give a path relative to the JSON Lines file")
    return uri


def _report_json(report: Any) -> str:
    dump = getattr(report, "model_dump_json", None)
    return dump() if callable(dump) else json.dumps(report, default=str)


def train(job: str, layout: ContainerLayout, values: Mapping[str, str]) -> Any:
    """Run `job` in `layout` and leave the servable model in `layout.model_dir`; returns the report."""
    from mediasearch.aws.packaging import write_code

    config = parse_config(job, values)
    layout.model_dir.mkdir(parents=True, exist_ok=True)
    layout.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="mediasearch-train-"))
    try:
        model_channel = layout.channel(MODEL_CHANNEL, required=False)
        # Unpacked to a fixed place: the video run's checkpoint records the tower's path, and a resumed
        # job must name the same one.
        base = saved_model(model_channel, layout.root / "base-model") if model_channel else None
        if job == "clip":
            assert isinstance(config, ClipTrainConfig)
            channel = layout.channel(DATA_CHANNEL[job])
            assert channel is not None
            pairs = resolve_pairs(
                channel, _option(values, PAIRS_KEY), _option(values, PREFIX_KEY), scratch / "pairs.jsonl"
            )
            if base is not None:
                config = config.model_copy(update={"base_model": str(base)})
            report = _train_clip(config, pairs, layout)
        else:
            assert isinstance(config, VideoTrainConfig)
            report = _train_video(config, layout, base, scratch)
        write_code(layout.model_dir)
        (layout.output_dir / "data").mkdir(parents=True, exist_ok=True)
        (layout.output_dir / "data" / "report.json").write_text(_report_json(report))
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_clip(config: ClipTrainConfig, pairs: Path, layout: ContainerLayout) -> Any:
    """The fine-tuned CLIP is saved straight into /opt/ml/model (a checkpoint folder is its layout).

    train_clip keeps no mid-run checkpoint: a restarted (spot) job trains again from the start."""
    from mediasearch.core.errors import ModelLoadError
    from mediasearch.training.clip import train_clip
    from mediasearch.training.pairs import PairsError

    try:
        return train_clip(config, pairs, layout.model_dir)
    except (PairsError, ModelLoadError) as exc:
        raise TrainingInputError(str(exc)) from None


def _train_video(config: VideoTrainConfig, layout: ContainerLayout, base: Path | None, scratch: Path) -> Any:
    """The run's directory (checkpoint.pt, the frame-feature cache) is in /opt/ml/checkpoints, which
    SageMaker syncs to S3 and restores into a restarted job: a checkpoint found there is resumed, so
    a spot interruption costs at most the epoch in progress and no frame is embedded twice."""
    from mediasearch.aws.packaging import copy_weights, stage_weights
    from mediasearch.core.settings import get_settings
    from mediasearch.models.clip import ClipModel
    from mediasearch.training import video

    channel = layout.channel(DATA_CHANNEL["video-encoder"])
    assert channel is not None
    if base is not None:
        config = config.model_copy(update={"clip_model": str(base)})
    settings = get_settings()
    clip = config.clip_model or settings.clip_model
    run = layout.checkpoint_dir / "video-encoder"
    resume = (run / video.CHECKPOINT).is_file()
    if resume:
        print(f"resuming from {run / video.CHECKPOINT}", file=sys.stderr)
    try:
        report = video.train_video_encoder(
            config,
            str(channel),
            run,
            resume=resume,
            # The frame tower on the instance's device (the library's default tower is CPU-only).
            tower=ClipModel(clip, device=settings.device),
        )
    except video.TrainingInputError as exc:
        raise TrainingInputError(str(exc)) from None
    shutil.copytree(run / video.ENCODER_DIR, layout.model_dir / VIDEO_ENCODER_SUBDIR, dirs_exist_ok=True)
    data = layout.output_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in (video.LOSS_PLOT, video.REPORT):
        if (run / name).is_file():
            shutil.copy2(run / name, data / name)
    # The frozen frame tower at the root: the archive's handler embeds frames with the very CLIP whose
    # features the encoder was trained on (the encoder records that CLIP's identity).
    copy_weights(stage_weights(clip, scratch / "clip"), layout.model_dir)
    return report


def main(environ: Mapping[str, str], argv: list[str] | None = None) -> int:
    """The entry point: 0 with the model written, else the failure file written and 1 (2 for inputs).

    `argv` is what the toolkit passes (`--name value` for each hyperparameter); the file is read instead,
    so the values are the ones the launcher wrote whatever the toolkit's parsing of them.
    """
    layout = ContainerLayout.from_environ(environ)
    try:
        values = read_hyperparameters(layout.hyperparameters_file)
        job = _option(values, JOB_KEY) or (argv[0] if argv else "")
        if job not in JOBS:
            raise TrainingInputError(
                f"which job? set the {JOB_KEY} hyperparameter to one of {sorted(JOBS)}, got {job!r}"
            )
        report = train(job, layout, values)
    except TrainingInputError as exc:
        write_failure(layout, f"input error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # any failure must reach FailureReason; the trace goes to the log
        traceback.print_exc()
        write_failure(layout, f"{type(exc).__name__}: {exc}")
        return 1
    print(_report_json(report))
    return 0
