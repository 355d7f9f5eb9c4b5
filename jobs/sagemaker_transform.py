"""Batch job: embed a library on SageMaker batch transform, then load the outputs into the index.

    python jobs/sagemaker_transform.py s3://bucket/media --stack mediasearch

The same as `mediasearch aws transform` (all options: --help): scan -> manifests (frame manifests
written by jobs/preprocess.py are picked up too) -> CreateModel -> CreateTransformJob -> wait -> load.
"""

from __future__ import annotations

import typer

from mediasearch.aws.cli import transform

if __name__ == "__main__":
    typer.run(transform)
