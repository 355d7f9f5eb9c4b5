"""Batch job: the local batch transform over the manifests under a location (what SageMaker batch
transform does, with the same handler functions), writing <manifest>.out beside each.

    python jobs/transform.py s3://bucket/media --prefix _mediasearch/manifests [--captions]

The same command as `mediasearch transform` (see its --help), kept as a file so that a container or a
scheduler can run the job by path; exits non-zero when any record failed.
"""

import sys

from mediasearch.cli import app

if __name__ == "__main__":
    app(["transform", *sys.argv[1:]])
