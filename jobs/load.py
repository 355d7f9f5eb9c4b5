"""Batch job: load the configured model's transform outputs of a source into the configured index.

    python jobs/load.py s3://bucket/media

The same command as `mediasearch load` (see its --help), kept as a file so that a container or a
scheduler can run the job by path; exits non-zero when any record failed.
"""

import sys

from mediasearch.cli import app

if __name__ == "__main__":
    app(["load", *sys.argv[1:]])
