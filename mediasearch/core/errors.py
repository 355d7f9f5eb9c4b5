"""Errors both sides raise and catch, defined where catching them costs no model stack.

`ModelLoadError` is raised by the model classes (`mediasearch.models`, which import torch), and the
query side catches it to answer 503; defining it here lets the search service name it without
importing torch.
"""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names it and says what to check."""


class VideoEncoderLoadError(ModelLoadError):
    """The trained video encoder (MEDIASEARCH_VIDEO_ENCODER) could not be loaded."""
