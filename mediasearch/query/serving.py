"""What a query is answered with: the serving generation's index and an encoder of the same model.

The pair changes when a writer switches the collection to a new generation (a new model). Readers
look at the catalog at most every `refresh_s` seconds and take the new pair as one value, so within a
request the index and the encoder always belong together: vectors of two models are never compared.

Two policies for the encoder:

- following (the default when no model is configured explicitly): the encoder is built from the
  serving generation's `model_source`. On a switch the new model is loaded in the background while
  the old generation keeps answering, then the new pair takes over: no query fails, none is mixed.
- pinned (a model configured explicitly, or a SageMaker endpoint): the encoder is fixed, and queries
  that need it are refused with a clear reason while the serving generation is of another model.

`ServedIndex` and `ServedEncoder` are the `VectorIndex` and `QueryEncoder` the search service holds;
`SearchService` pins one snapshot per request (`ServingView.pin`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from mediasearch.core.model_identity import clip_part
from mediasearch.core.records import DocumentFields, IndexDocument
from mediasearch.index.base import (
    Hit,
    HybridWeights,
    IndexError_,
    IndexFilter,
    IndexSpec,
    VectorField,
    VectorIndex,
)
from mediasearch.index.collection import Collection
from mediasearch.index.generations import Generation
from mediasearch.query.encoder import QueryEncoder

log = logging.getLogger("mediasearch.serving")


class ModelMismatch(IndexError_):
    """The query encoder's model is not the model of the serving generation; the message says both."""


@dataclass(frozen=True)
class Serving:
    generation: Generation | None
    index: VectorIndex
    encoder: QueryEncoder


class ServingView:
    def __init__(
        self,
        collection: Collection,
        *,
        fallback_index: VectorIndex,
        pinned: QueryEncoder | None = None,
        pinned_model: Callable[[], str | None] | None = None,
        build_encoder: Callable[[Generation], QueryEncoder] | None = None,
        refresh_s: float = 1.0,
    ) -> None:
        if pinned is None and build_encoder is None:
            raise ValueError("a serving view needs a pinned encoder or a way to build one per model")
        self.collection = collection
        self.fallback_index = fallback_index  # what is read while no generation exists yet
        self.pinned = pinned
        self.pinned_model = pinned_model or (lambda: None)
        self.build_encoder = build_encoder
        self.refresh_s = refresh_s
        self._state: Serving | None = None
        self._checked = float("-inf")
        self._guard = threading.Lock()
        self._encoders: dict[str, QueryEncoder] = {}
        self._loading: str | None = None
        self._pinned_state: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar(
            "serving", default=None
        )

    # -- one snapshot per request -------------------------------------------------------------------

    @contextmanager
    def pin(self) -> Iterator[None]:
        """Within the block every `current()` returns the same pair, resolved on first use (a request
        that never touches the index or the encoder never reads the catalog)."""
        if self._pinned_state.get() is not None:
            yield
            return
        token = self._pinned_state.set(_Slot())
        try:
            yield
        finally:
            self._pinned_state.reset(token)

    def current(self) -> Serving:
        slot = self._pinned_state.get()
        if slot is None:
            return self._current()
        if slot.state is None:
            slot.state = self._current()
        return slot.state

    def _current(self) -> Serving:
        now = time.monotonic()
        state = self._state
        if state is not None and now - self._checked < self.refresh_s:
            return state
        with self._guard:
            if self._state is not None and now - self._checked < self.refresh_s:
                return self._state
            self._checked = now
            self._state = self._resolve(self._state)
            return self._state

    def _resolve(self, old: Serving | None) -> Serving:
        generation = self.collection.serving()
        if old is not None and _same(old.generation, generation):
            return old
        if generation is None:
            return Serving(None, self.fallback_index, self._fallback_encoder())
        index = self.collection.index_of(generation)
        if self.pinned is not None:
            return Serving(generation, index, self._checked_pinned(generation))
        ready = self._encoders.get(generation.model_id)
        if ready is not None:
            return Serving(generation, index, ready)
        if old is not None and old.generation is not None:
            # Keep answering with the old pair while the new model loads: no query waits or fails.
            self._load_in_background(generation)
            return old
        encoder = self._build(generation)
        return Serving(generation, index, encoder)

    def _fallback_encoder(self) -> QueryEncoder:
        if self.pinned is not None:
            return self.pinned
        assert self.build_encoder is not None
        return self._encoders.setdefault("", self.build_encoder(_NO_GENERATION))

    def _checked_pinned(self, generation: Generation) -> QueryEncoder:
        assert self.pinned is not None
        model = self.pinned_model()
        if model is None or model == clip_part(generation.model_id):
            return self.pinned
        return RefusingEncoder(
            f"collection {self.collection.name!r} is served by generation {generation.name!r}, embedded "
            f"by {generation.model_id} ({generation.model_source}); this server encodes queries with "
            f"{model}. Unset MEDIASEARCH_CLIP_MODEL to follow the index, or switch generations "
            "(mediasearch generations)."
        )

    def _build(self, generation: Generation) -> QueryEncoder:
        assert self.build_encoder is not None
        encoder = self.build_encoder(generation)
        encoder.warm_up()
        self._encoders[generation.model_id] = encoder
        return encoder

    def _load_in_background(self, generation: Generation) -> None:
        if self._loading == generation.model_id:
            return
        self._loading = generation.model_id

        def load() -> None:
            try:
                self._build(generation)
                log.info("loaded %s for generation %s", generation.model_id, generation.name)
            except Exception:
                log.exception("cannot load the model of generation %s", generation.name)
            finally:
                self._loading = None
                self._checked = float("-inf")  # take the new pair on the next request

        threading.Thread(target=load, name="serving-model", daemon=True).start()

    def wait_until_current(self, timeout_s: float = 60.0) -> Serving:
        """Block until the serving pair matches the catalog (tests and warm-up use this)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._checked = float("-inf")
            state = self._current()
            if _same(state.generation, self.collection.serving()) or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


class _Slot:
    """The pair a request uses, once resolved."""

    state: Serving | None = None


_NO_GENERATION = Generation(name="", model_id="", model_source="")


def _same(a: Generation | None, b: Generation | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.name == b.name and a.model_id == b.model_id


class RefusingEncoder(QueryEncoder):
    """Stands in for an encoder of the wrong model: every query that needs encoding is refused."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def encode_text(self, text: str) -> np.ndarray:
        raise ModelMismatch(self.reason)

    def encode_image(self, data: bytes) -> np.ndarray:
        raise ModelMismatch(self.reason)


class ServedEncoder(QueryEncoder):
    """The encoder of the request's serving pair."""

    def __init__(self, view: ServingView) -> None:
        self.view = view

    def encode_text(self, text: str) -> np.ndarray:
        return self.view.current().encoder.encode_text(text)

    def encode_image(self, data: bytes) -> np.ndarray:
        return self.view.current().encoder.encode_image(data)

    def warm_up(self) -> None:
        self.view.current().encoder.warm_up()


class ServedIndex(VectorIndex):
    """The index of the request's serving pair (reads only: writers go through `Collection.writer`)."""

    def __init__(self, view: ServingView) -> None:
        self.view = view

    @property
    def _index(self) -> VectorIndex:
        return self.view.current().index

    @property
    def collection(self) -> str:  # type: ignore[override]
        return self._index.collection

    def probe(self) -> int:
        return self._index.probe()

    def create(self, spec: IndexSpec) -> None:
        raise IndexError_("the served index is read-only: write through the collection's writer")

    def upsert(self, docs: Sequence[IndexDocument]) -> int:
        raise IndexError_("the served index is read-only: write through the collection's writer")

    def delete(self, ids: Iterable[str]) -> int:
        raise IndexError_("the served index is read-only: write through the collection's writer")

    def delete_where(self, filter: IndexFilter) -> int:
        raise IndexError_("the served index is read-only: write through the collection's writer")

    def optimize(self) -> None:
        raise IndexError_("maintenance runs in writers only")

    def exists(self) -> bool:
        return self._index.exists()

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        field: VectorField = VectorField.CLIP,
    ) -> list[Hit]:
        return self._index.knn(vector, k, filter, field)

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        weights: HybridWeights = HybridWeights(),
    ) -> list[Hit]:
        return self._index.hybrid(text, vector, k, filter, weights)

    def get_many(self, ids: Iterable[str]) -> list[DocumentFields]:
        return self._index.get_many(ids)

    def get_many_with_vectors(self, ids: Iterable[str]) -> list[IndexDocument]:
        return self._index.get_many_with_vectors(ids)

    def scan(self, filter: IndexFilter, fields: Sequence[str] | None = None) -> list[DocumentFields]:
        # The duplicates self-join lists every document of a kind.
        return self._index.scan(filter, fields)

    def count(self, filter: IndexFilter | None = None) -> int:
        return self._index.count(filter)

    def fingerprints(self, ids: Iterable[str]) -> dict[str, str | None]:
        return self._index.fingerprints(ids)
