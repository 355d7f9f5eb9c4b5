"""Batch job: scan -> preprocess videos -> manifests -> transform -> load, incrementally.

    python jobs/ingest.py s3://bucket/media [--captions]

The same command as `mediasearch ingest` (see its --help), kept as a file so that a container or a
scheduler can run the job by path; exits non-zero when any record failed.
"""

import sys

from mediasearch.cli import app

if __name__ == "__main__":
    app(["ingest", *sys.argv[1:]])
