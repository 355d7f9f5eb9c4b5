"""Batch job: the local batch transform over a source's work-area manifests (what SageMaker batch
transform does, with the same handler functions), writing one output per manifest and model.

    python jobs/transform.py s3://bucket/media [--captions]

The same command as `mediasearch transform` (see its --help), kept as a file so that a container or a
scheduler can run the job by path; exits non-zero when any record failed.
"""

import sys

from mediasearch.cli import app

if __name__ == "__main__":
    app(["transform", *sys.argv[1:]])
