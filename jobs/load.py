"""Batch job: load the transform outputs (.out) under a location into the configured index.

    python jobs/load.py s3://bucket/media --prefix _mediasearch/manifests

The same command as `mediasearch load` (see its --help), kept as a file so that a container or a
scheduler can run the job by path; exits non-zero when any record failed.
"""

import sys

from mediasearch.cli import app

if __name__ == "__main__":
    app(["load", *sys.argv[1:]])
