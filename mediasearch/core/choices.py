"""The closed vocabularies of a search request: result kinds, search modes, video score aggregations.

`mediasearch.core.records` uses them in its request and result models; they live here, importing only
`enum`, because the CLI lists them as option choices at start-up, and importing the records (pydantic,
numpy) would cost `mediasearch --help` about 0.2 s.
"""

from __future__ import annotations

from enum import StrEnum


class ResultKind(StrEnum):
    """What a search returns: images, or videos (built from their scenes)."""

    IMAGE = "image"
    VIDEO = "video"


class Aggregation(StrEnum):
    """How a video's score is built from its matching scenes' scores."""

    MAX = "max"
    MEAN = "mean"
    SUM = "sum"
    TOP3_MEAN = "top3_mean"


class SearchMode(StrEnum):
    CLIP = "clip"
    CAPTION = "caption"
    HYBRID = "hybrid"


class VideoEncoder(StrEnum):
    """Which whole-video vectors "videos like this one" compares."""

    CLIP = "clip"  # the mean of the video's CLIP frame vectors
    LEARNED = "learned"  # the trained video encoder's feature (MEDIASEARCH_VIDEO_ENCODER at ingest)


class CutoffMode(StrEnum):
    """`cutoff` of a search: `auto`, a per-query cut at a clear drop in the scores
    (mediasearch.query.cutoff)."""

    AUTO = "auto"
