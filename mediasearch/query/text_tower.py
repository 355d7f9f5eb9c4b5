"""Query text through a separate text tower aligned to the index's CLIP image space (e.g. multilingual).

`MEDIASEARCH_QUERY_TEXT_MODEL` names a sentence-transformers text model trained into a CLIP model's
image space, such as `sentence-transformers/clip-ViT-B-32-multilingual-v1` for `clip-ViT-B-32`
(= `openai/clip-vit-base-patch32`): text queries in 50+ languages go through it, image queries still
through the CLIP image tower, and the index and its generation stay the image model's (the tower embeds
no document, so it never changes what an index is).

A tower made for another image model gives vectors that only look comparable, so two checks:
dimensions (at start-up, and per query since the serving generation can change), and, where
`MEDIASEARCH_QUERY_TEXT_ALIGNED_TO` records which image model the tower was trained for, that model
against the one being served. Either failure is one line saying both sides (`ModelLoadError`: 503 in
the API, one line in the CLI: `QueryTextModelError`); image queries keep working.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mediasearch.core.errors import ModelLoadError
from mediasearch.query.encoder import QueryEncoder, TextVectoriser


class QueryTextModelError(ModelLoadError):
    """The query text tower cannot serve the image model (or cannot run here); one line saying why."""


def is_aligned(aligned_to: str, image_model: str, image_identity: str | None = None) -> bool:
    """Whether the image model (a hub id or folder as configured, and its identity) is `aligned_to`
    (a hub id, or an identity such as `hub:openai/clip-vit-base-patch32@<commit>` or `sha256:...`)."""
    names = {image_model.rstrip("/")}
    if image_identity:
        names.add(image_identity)
        if image_identity.startswith("hub:"):
            names.add(image_identity.removeprefix("hub:").split("@", 1)[0])
    return aligned_to.rstrip("/") in names or aligned_to.removeprefix("hub:").split("@", 1)[0] in names


class TextTowerEncoder(QueryEncoder):
    """Text through `tower`, images through `image_encoder`; refuses text the image space cannot take."""

    def __init__(
        self,
        image_encoder: QueryEncoder,
        tower: TextVectoriser,
        *,
        tower_name: str,
        image_model: str,
        image_dim: Callable[[], int | None],
        image_identity: Callable[[], str | None] = lambda: None,
        aligned_to: str | None = None,
    ) -> None:
        self.image_encoder = image_encoder
        self.tower = tower
        self.tower_name = tower_name
        self.image_model = image_model
        self.image_dim = image_dim
        self.image_identity = image_identity
        self.aligned_to = aligned_to
        self._checked = False

    def check(self) -> None:
        """Raise `ModelLoadError` (one line) where the tower cannot serve this image model."""
        if self._checked:
            return
        if self.aligned_to and not is_aligned(self.aligned_to, self.image_model, self.image_identity()):
            raise QueryTextModelError(
                f"the query text model {self.tower_name} is aligned to {self.aligned_to} "
                f"(MEDIASEARCH_QUERY_TEXT_ALIGNED_TO), but the index is embedded by {self.image_model}: "
                "its text vectors would not be comparable; use a text tower trained for that image model"
            )
        try:
            tower_dim = self.tower.dim
        except ImportError as exc:
            raise QueryTextModelError(
                f"the query text model {self.tower_name} needs torch and transformers ({exc.name or exc} is "
                "not installed): export it where they are (mediasearch export-text-tower) and point "
                "MEDIASEARCH_QUERY_TEXT_MODEL at the export folder"
            ) from None
        image_dim = self.image_dim()
        if image_dim is not None and tower_dim != image_dim:
            raise QueryTextModelError(
                f"the query text model {self.tower_name} makes {tower_dim}-d vectors but the image model "
                f"{self.image_model} makes {image_dim}-d ones: the text tower must be trained for that image "
                "model (e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 for openai/clip-vit-base-patch32)"
            )
        self._checked = True

    def encode_text(self, text: str) -> np.ndarray:
        self.check()
        return np.asarray(self.tower.embed([text])[0], np.float32)

    def encode_image(self, data: bytes) -> np.ndarray:
        return self.image_encoder.encode_image(data)

    def warm_up(self) -> None:
        # The text side is what most queries use: check and load it now, not in the first request.
        self.check()
        self.tower.embed(["warm-up"])
