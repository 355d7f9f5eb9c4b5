"""A collection as writers and readers see it: its generations, the one that serves, one writer at a time.

Readers ask `serving()` and open that generation's index; they never wait for a writer. A writer
enters `writer(model)`: it takes the collection's lock (stopping at once, or waiting, when another
writer has it), gets the generation of its model (the serving one, or a new one built beside it),
writes, and `commit`s: maintenance (full-text, vector and scalar indices, compaction) runs then and
only then, and a new generation becomes the serving one in one atomic step once it is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mediasearch.core import failpoints
from mediasearch.core.model_identity import ModelIdentity
from mediasearch.index.base import IndexError_, VectorIndex
from mediasearch.index.generations import Generation, GenerationCatalog
from mediasearch.index.locks import WriterLock


@dataclass
class GenerationWrite:
    """What a writer writes into: `generation`'s `index`; `serving` is what readers see meanwhile."""

    generation: Generation
    index: VectorIndex
    serving: Generation | None
    lock: WriterLock

    @property
    def builds_new(self) -> bool:
        """True when this write builds a generation beside the serving one (a model change)."""
        return self.serving is None or self.serving.name != self.generation.name

    def sources(self, source: str) -> list[str]:
        """The sources this write must ingest so that its generation is complete: `source`, and when a
        new model replaces a serving generation, every source that generation holds as well."""
        inherited = self.serving.sources if self.serving is not None and self.builds_new else []
        return list(dict.fromkeys([*inherited, *self.generation.sources, source]))


class Collection:
    def __init__(
        self,
        name: str,
        catalog: GenerationCatalog,
        lock: Callable[[], WriterLock],
        open_index: Callable[[str], VectorIndex],
        drop_index: Callable[[str], None],
    ) -> None:
        self.name = name
        self.catalog = catalog
        self._lock = lock
        self._open_index = open_index
        self._drop_index = drop_index

    # -- readers ----------------------------------------------------------------------------------

    def generations(self) -> list[Generation]:
        return self.catalog.read().generations

    def serving(self) -> Generation | None:
        return self.catalog.serving()

    def index_of(self, generation: Generation) -> VectorIndex:
        return self._open_index(generation.name)

    # -- writers ----------------------------------------------------------------------------------

    @contextmanager
    def writer(
        self,
        model: ModelIdentity,
        wait: bool = False,
        timeout_s: float | None = None,
        fresh: bool = False,
        poll_s: float = 0.2,
    ) -> Iterator[GenerationWrite]:
        """Hold the writer lock and write into `model`'s generation (see the module docstring);
        `fresh`: into a new generation even when the serving one is of `model` (a rebuild)."""
        lock = self._lock()
        lock.acquire(wait=wait, timeout_s=timeout_s, poll_s=poll_s)
        try:
            self._adopt_legacy()
            serving = self.catalog.serving()
            generation = self.catalog.for_model(model, fresh=fresh)
            yield GenerationWrite(generation, self._open_index(generation.name), serving, lock)
        finally:
            lock.release()

    def _adopt_legacy(self) -> None:
        """A table named after the collection, written before generations existed, becomes its first
        generation. Its model is unknown (documents recorded a path), so the next ingest rebuilds."""
        if self.catalog.read().generations:
            return
        legacy = self._open_index(self.name)
        if legacy.exists():
            self.catalog.adopt(self.name, model_id="unknown (written before model identities)")

    def add_source(self, write: GenerationWrite, source: str) -> None:
        write.generation = self.catalog.add_source(write.generation.name, source)

    def commit(self, write: GenerationWrite) -> Generation | None:
        """Maintain the written index, then make its generation the serving one if it is not yet.

        Called at the end of every write, a re-run after a kill included, so an index whose last
        writer died before its maintenance gets it now. Returns the serving generation, or None when
        a new generation holds nothing (an empty source): it is then not switched to.
        """
        if write.index.exists():
            write.index.optimize()
        write.lock.check()  # a lease lost meanwhile means another writer may be here: do not switch
        if not write.builds_new:
            return write.generation
        if not write.index.exists() or write.index.count() == 0:
            return write.serving
        failpoints.reach("before-switch")
        return self.catalog.switch(write.generation.name)

    def switch(self, name: str, wait: bool = False) -> Generation:
        """Make an existing generation the serving one (e.g. back to the previous model)."""
        lock = self._lock()
        lock.acquire(wait=wait)
        try:
            target = self.catalog.read().get(name)
            if target is None or not self._open_index(name).exists():
                raise IndexError_(f"collection {self.name!r} has no generation {name!r} with an index")
            return self.catalog.switch(name)
        finally:
            lock.release()

    def drop(self, name: str, wait: bool = False) -> None:
        """Delete a generation that is not serving, with its table or index."""
        lock = self._lock()
        lock.acquire(wait=wait)
        try:
            self.catalog.forget(name)  # refuses the serving generation
            self._drop_index(name)
        finally:
            lock.release()
