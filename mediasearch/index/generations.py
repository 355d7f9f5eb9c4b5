"""Index generations: one table (LanceDB) or index (OpenSearch) per model, and a pointer to the one that serves.

A collection's documents are embedded by one model. Ingesting with another model builds a new
generation beside the serving one; the serving one keeps answering queries until the new one is
complete, then a single atomic step points the collection at it (a rewritten catalog object for
LanceDB, an alias swap for OpenSearch). Vectors of two models are never in one generation, and a
query is only ever compared with vectors of the model that encoded it.

Only writers change a catalog (they hold the collection's writer lock); readers just read it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from mediasearch.core.model_identity import ModelIdentity
from mediasearch.core.storage import ObjectNotFound, ObjectStore, StoreError
from mediasearch.index.base import IndexError_


class Generation(BaseModel):
    """One generation of a collection: where its documents live and which model embedded them."""

    name: str = Field(description="the LanceDB table or OpenSearch index holding it")
    model_id: str = Field(description="the model's identity (never a path)")
    model_source: str = Field(description="where that model was loaded from (hub id or folder)")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sources: list[str] = Field(default_factory=list, description="the source URIs ingested into it")
    switched_at: datetime | None = Field(default=None, description="when it last became the serving one")

    @property
    def model(self) -> ModelIdentity:
        return ModelIdentity(id=self.model_id, source=self.model_source)


class CatalogState(BaseModel):
    """The whole catalog of one collection, written as one object so a switch is one atomic write."""

    collection: str
    serving: str | None = None
    generations: list[Generation] = Field(default_factory=list)

    def get(self, name: str) -> Generation | None:
        return next((g for g in self.generations if g.name == name), None)


def generation_name(collection: str, model: ModelIdentity, rebuild: int = 0) -> str:
    """Table/index name of the collection's generation for `model` (stable, so a build resumes);
    `rebuild` numbers the fresh rebuilds of the same model (`mediasearch reindex`)."""
    return f"{collection}-{model.short}" + (f"-r{rebuild}" if rebuild else "")


class GenerationCatalog(ABC):
    """The generations of one collection and which one serves."""

    collection: str

    @abstractmethod
    def read(self) -> CatalogState: ...

    @abstractmethod
    def write(self, state: CatalogState) -> None:
        """Replace the catalog atomically (writers only)."""

    def serving(self) -> Generation | None:
        state = self.read()
        return state.get(state.serving) if state.serving else None

    def for_model(self, model: ModelIdentity, fresh: bool = False) -> Generation:
        """The generation of `model`: the serving one when it is of `model`, else the recorded one (a
        build that was interrupted resumes), else a new one. `fresh`: always a new one, beside the
        others, even for the serving model (a rebuild from scratch)."""
        state = self.read()
        serving = state.get(state.serving) if state.serving else None
        if not fresh:
            if serving is not None and serving.model_id == model.id:
                return serving
            found = state.get(generation_name(self.collection, model))
            if found is not None:
                return found
        taken = {g.name for g in state.generations}
        rebuild = 0
        while (name := generation_name(self.collection, model, rebuild)) in taken:
            rebuild += 1
        generation = Generation(name=name, model_id=model.id, model_source=model.source)
        state.generations.append(generation)
        self.write(state)
        return generation

    def add_source(self, name: str, source: str) -> Generation:
        """Record that generation `name` holds `source`; returns the generation as recorded now."""
        state = self.read()
        generation = self._require(state, name)
        if source not in generation.sources:
            generation.sources.append(source)
            self.write(state)
        return generation

    def switch(self, name: str) -> Generation:
        """Make `name` the serving generation in one atomic write."""
        state = self.read()
        generation = self._require(state, name)
        generation.switched_at = datetime.now(UTC)
        state.serving = name
        self.write(state)
        return generation

    def adopt(self, name: str, model_id: str) -> Generation:
        """Record a table written before generations existed as the serving generation."""
        state = self.read()
        generation = Generation(name=name, model_id=model_id, model_source="")
        state.generations.append(generation)
        state.serving = name
        self.write(state)
        return generation

    def forget(self, name: str) -> None:
        state = self.read()
        if state.serving == name:
            raise IndexError_(f"generation {name!r} is serving: switch to another one before dropping it")
        self._require(state, name)
        state.generations = [g for g in state.generations if g.name != name]
        self.write(state)

    def _require(self, state: CatalogState, name: str) -> Generation:
        generation = state.get(name)
        if generation is None:
            known = ", ".join(g.name for g in state.generations) or "none"
            raise IndexError_(f"collection {self.collection!r} has no generation {name!r} (it has: {known})")
        return generation


class StoreCatalog(GenerationCatalog):
    """The catalog as one JSON object in an object store (beside LanceDB's tables, locally or on S3).

    Both stores replace an object atomically (a rename on disk, a PUT on S3), so a reader sees the
    old catalog or the new one, never a mixture: that is the LanceDB generation pointer.
    """

    def __init__(self, store: ObjectStore, collection: str) -> None:
        self.store = store
        self.collection = collection
        self.key = f"_generations/{collection}.json"

    def read(self) -> CatalogState:
        try:
            return CatalogState.model_validate_json(self.store.get(self.key))
        except ObjectNotFound:
            return CatalogState(collection=self.collection)
        except (StoreError, ValidationError, ValueError) as exc:
            raise IndexError_(
                f"the generation catalog {self.store.uri(self.key)} cannot be read: {exc}"
            ) from None

    def write(self, state: CatalogState) -> None:
        body = json.dumps(state.model_dump(mode="json"), indent=1).encode()
        self.store.put(self.key, body, "application/json")

    def exists(self) -> bool:
        return self.store.exists(self.key)


class OpenSearchCatalog(GenerationCatalog):
    """The catalog on the cluster: the generations in a catalog document, the serving one as an alias.

    Readers resolve the alias named after the collection; a switch moves it with one `_aliases`
    request (remove + add), which OpenSearch applies atomically, so a search through the alias sees
    the old generation or the new one, never neither.
    """

    CATALOG_INDEX = "mediasearch-generations"

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.collection = collection

    def _alias_target(self) -> str | None:
        from opensearchpy.exceptions import NotFoundError

        try:
            found = self.client.indices.get_alias(name=self.collection)
        except NotFoundError:
            return None
        names = sorted(found)
        return names[0] if names else None

    def read(self) -> CatalogState:
        from opensearchpy.exceptions import NotFoundError, OpenSearchException

        try:
            source = self.client.get(index=self.CATALOG_INDEX, id=self.collection)["_source"]
            state = CatalogState.model_validate(source)
        except NotFoundError:
            state = CatalogState(collection=self.collection)
        except (OpenSearchException, ValidationError) as exc:
            raise IndexError_(
                f"the generation catalog of {self.collection!r} cannot be read: {exc}"
            ) from None
        target = self._alias_target()
        if target is not None:
            state.serving = target  # the alias is what searches use: it is the truth
        return state

    def write(self, state: CatalogState) -> None:
        target = self._alias_target()
        self.client.index(
            index=self.CATALOG_INDEX,
            id=self.collection,
            body=json.loads(json.dumps(state.model_dump(mode="json"))),
            refresh="true",
        )
        if state.serving is None or state.serving == target or state.serving == self.collection:
            return  # nothing to move (a pre-generation index named like the collection has no alias)
        actions: list[dict[str, Any]] = []
        if target is not None:
            actions.append({"remove": {"index": target, "alias": self.collection}})
        actions.append({"add": {"index": state.serving, "alias": self.collection}})
        self.client.indices.update_aliases(body={"actions": actions})
