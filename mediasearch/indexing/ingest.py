"""Ingest into a collection: one writer, the generation of the model, and every source it must hold.

`Pipeline` makes one source's documents in one index mirror that source. This module decides which
index: it takes the collection's writer lock, picks the generation of the embedding model (the
serving one, or a new one beside it when the model changed, or a fresh one for `reindex`), runs the
pipeline for every source that generation must hold (on a model change, the serving generation's
sources too, so the new generation is complete before anyone reads it), and commits: maintenance,
then the atomic switch.

The CLI's `ingest` and `reindex`, `jobs/ingest.py` and `mediasearch aws transform` all come through
here, so a local run and an AWS run take the same lock and write the same generations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mediasearch.core.model_identity import ModelIdentity
from mediasearch.index.base import VectorIndex
from mediasearch.index.collection import Collection
from mediasearch.index.generations import Generation
from mediasearch.indexing.pipeline import PipelineReport

# Runs the pipeline for one source (its root URI) into one index, and says what it did.
SourceRun = Callable[[str, VectorIndex], PipelineReport]


@dataclass
class CollectionReport:
    generation: Generation
    serving: Generation | None  # after the run
    switched: bool  # True when this run made its generation the serving one
    runs: dict[str, PipelineReport] = field(default_factory=dict)  # by source

    @property
    def report(self) -> PipelineReport:
        """The report of the source the user asked for (the last one run)."""
        return next(reversed(self.runs.values()))


def ingest_collection(
    collection: Collection,
    model: ModelIdentity,
    source: str,
    run: SourceRun,
    *,
    wait: bool = False,
    fresh: bool = False,
    notify: Callable[[str], None] = lambda message: None,
) -> CollectionReport:
    """Ingest `source` (a root URI) into `collection` with `model`; see the module docstring."""
    with collection.writer(model, wait=wait, fresh=fresh) as write:
        before = write.serving
        if write.builds_new:
            inherited = [s for s in write.sources(source) if s != source]
            what = "a fresh rebuild" if fresh else "a new model"
            notify(
                f"building generation {write.generation.name} ({what}: {model.id}) beside "
                f"{before.name if before else 'nothing'}"
                + (f"; re-ingesting {len(inherited)} other source(s) it must hold" if inherited else "")
            )
        runs: dict[str, PipelineReport] = {}
        for each in write.sources(source):
            if each != source:
                notify(f"source {each}")
            runs[each] = run(each, write.index)
            collection.add_source(write, each)
        serving = collection.commit(write)
    switched = serving is not None and (before is None or serving.name != before.name)
    if switched and serving is not None:
        notify(f"generation {serving.name} now serves (was {before.name if before else 'nothing'})")
    return CollectionReport(write.generation, serving, switched, runs)
