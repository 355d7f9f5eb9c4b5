"""Named points where a test can have the process killed with SIGKILL, as a crash or `kill -9` would.

The crash tests run a real ingest process armed at one point (`MEDIASEARCH_FAILPOINT`, read by the
settings like every variable) and check that a re-run ends with the index a clean run gives. Unarmed,
`reach` is a comparison and nothing more.
"""

from __future__ import annotations

import os
import signal

# Every point, in the order an ingest reaches them.
POINTS = (
    "mid-move",  # a moved video's new documents and artefacts written, the old ones not yet deleted
    "after-preprocess",  # frames, thumbnails and sidecars written, nothing embedded
    "after-transform",  # outputs written, nothing loaded
    "mid-load",  # the first batch of documents written, the rest not
    "after-load",  # every document written, no maintenance (full-text index, ANN) yet
    "before-switch",  # maintenance done, the new generation not yet serving
)

_armed: str | None = None


def arm(name: str | None) -> None:
    if name is not None and name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}: one of {', '.join(POINTS)}")
    global _armed
    _armed = name


def reach(name: str) -> None:
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
