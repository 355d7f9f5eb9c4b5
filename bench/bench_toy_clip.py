"""The offline demo's toy CLIP: time to make the training data and to train, and held-out recall@k.

The same steps and settings as `make demo-offline`'s training (`mediasearch train demo-pairs` with 6
copies, `mediasearch train clip --from-scratch --epochs 10 --batch-size 64`): seconds for the data,
seconds per epoch, and text -> image recall@1/5/10 on the held-out colour x shape combinations before
training (the random-weights baseline of the same model) and after. The load average is recorded with
them: on a shared 2-core machine the seconds mean little without it; the recall does not depend on it.

    python bench/bench_toy_clip.py                 # the demo's settings
    python bench/bench_toy_clip.py --epochs 2      # a quicker look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, environment, loadavg, log

from mediasearch.training.clip import RecallSummary, train_clip
from mediasearch.training.config import ClipTrainConfig
from mediasearch.training.pairs import write_demo_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-toy-clip-") as tmp:
        t0 = time.perf_counter()
        made = write_demo_pairs(Path(tmp) / "data", copies=args.copies)
        seconds_pairs = time.perf_counter() - t0
        log(f"{made.n_train} training pairs, {made.n_heldout} held out, in {seconds_pairs:.1f} s")
        config = ClipTrainConfig(from_scratch=True, epochs=args.epochs, batch_size=args.batch_size)
        report = train_clip(
            config,
            made.train,
            Path(tmp) / "model",
            eval_pairs=made.heldout,
            on_epoch=lambda e: log(f"epoch {e.epoch}: loss {e.loss:.3f} in {e.seconds:.1f} s"),
        )
    result = {
        "environment": environment(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "config": config.model_dump(mode="json"),
        "n_train": report.n_train,
        "n_heldout": report.n_eval,
        "seconds_pairs": round(seconds_pairs, 2),
        "seconds_images": round(report.seconds_data, 2),
        "seconds_train": round(report.seconds_train, 2),
        "seconds_per_epoch": [round(e.seconds, 2) for e in report.epochs],
        "loss_per_epoch": [round(e.loss, 4) for e in report.epochs],
        "heldout_captions": {"before": _dump(report.before), "after": _dump(report.after)},
        "heldout_colour_shape": {"before": _dump(report.labels_before), "after": _dump(report.labels_after)},
    }
    emit("toy_clip", result)


def _dump(summary: RecallSummary | None) -> dict[str, Any] | None:
    return None if summary is None else summary.model_dump(mode="json")


if __name__ == "__main__":
    main()
