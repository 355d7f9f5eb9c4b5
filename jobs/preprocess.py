"""Batch job: preprocess every video under a prefix (scenes, frames, thumbnails, manifests).

    python jobs/preprocess.py --store s3://bucket/media --prefix videos/

Prints the run summary as JSON on stdout; progress goes to stderr. Exits 1 when any video failed,
after processing all the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mediasearch import backends
from mediasearch.core.layout import WorkLayout
from mediasearch.core.settings import get_settings
from mediasearch.core.storage import open_store
from mediasearch.indexing.pipeline import Pipeline
from mediasearch.indexing.video import VideoOptions


def main(argv: Sequence[str] | None = None) -> int:
    # Every default is the settings' (MEDIASEARCH_*), as for `mediasearch preprocess`; options override.
    settings = get_settings()
    defaults = backends.video_options(settings)
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--store", default=settings.store, help="folder, file:// or s3://bucket/prefix")
    p.add_argument("--prefix", default="", help="only videos under this key prefix")
    p.add_argument(
        "--work-prefix",
        default=settings.work_prefix,
        help="the work folder inside the store, where artefacts and manifests go",
    )
    p.add_argument("--threshold", type=float, default=defaults.threshold, help="ContentDetector threshold")
    p.add_argument(
        "--frames-per-scene", type=int, default=defaults.frames_per_scene, help="frames sampled per scene"
    )
    p.add_argument(
        "--max-scene-s", type=float, default=defaults.max_scene_s, help="longer shots are split into windows"
    )
    p.add_argument("--min-scene-s", type=float, default=defaults.min_scene_s, help="closer cuts are merged")
    p.add_argument(
        "--frame-max-side", type=int, default=defaults.frame_max_side, help="sampled frames fit this"
    )
    p.add_argument("--thumb-width", type=int, default=defaults.thumb_width, help="scene thumbnail width")
    p.add_argument(
        "--workers",
        type=int,
        default=settings.video_workers,
        help="videos processed at once (2 on 2 cores measured 1.6x faster than 1: bench/bench_preprocess.py)",
    )
    p.add_argument("--force", action="store_true", help="redo videos whose sidecar is current")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    try:
        options = VideoOptions(
            threshold=args.threshold,
            frames_per_scene=args.frames_per_scene,
            max_scene_s=args.max_scene_s,
            min_scene_s=args.min_scene_s,
            frame_max_side=args.frame_max_side,
            thumb_width=args.thumb_width,
        )
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        pipeline = Pipeline(
            open_store(args.store),
            WorkLayout.for_source("", args.work_prefix),
            prefix=args.prefix,
            manifest_lines=settings.manifest_lines,
            video_options=options,
            video_workers=args.workers,
            progress=not args.no_progress,
        )
    except ValueError as exc:  # pydantic's ValidationError is one; the message names the field
        p.error(str(exc))
    summary = pipeline.preprocess(force=args.force)
    print(summary.model_dump_json(indent=2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
