"""Where a search's time goes, per request, as a W3C `Server-Timing` response header.

The service marks its phases with `phase("encode")` etc.; outside a request that records (`Timings.
active`), a phase costs one context-variable read. A context variable rather than an argument: the
phases sit deep in the service (the k-NN of images, of scenes, the video documents) and the
service's public signatures stay as they are for every other caller (CLI, Lambda, tests).

The names are a contract the benches read (bench/bench_search_api.py) and the README documents:

- `encode`: the query vector (the text tower, a cache hit, an image decode and the image tower);
- `knn`: the index's nearest-neighbour queries, documents of the hits included;
- `docs`: documents fetched by id after the k-NN (the videos that matched scenes belong to);
- `build`: the result records, facets and score explanations;
- `serialise`: the response JSON;
- `total`: the route from entry to serialised body (the sum of the above and the glue between).

Durations are milliseconds (the header's unit), summed over the phase's occurrences in a request.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = ("encode", "knn", "docs", "build", "serialise", "total")

_current: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("timings", default=None)


class Timings:
    """Milliseconds per phase for one request."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def active(self) -> Iterator[Timings]:
        """Phases marked inside the block (in this thread or context) are recorded here."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def add(self, name: str, seconds: float) -> None:
        self.ms[name] = self.ms.get(name, 0.0) + seconds * 1000.0

    def finish(self) -> None:
        """Record `total`: from this object's creation until now."""
        self.ms["total"] = (time.perf_counter() - self._started) * 1000.0

    def header(self) -> str:
        """`encode;dur=3.21, knn;dur=1.05, ...`: the phases that ran, in the documented order."""
        return ", ".join(f"{name};dur={self.ms[name]:.3f}" for name in PHASES if name in self.ms)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as `name` in the request's `Timings`, if one is recording."""
    timings = _current.get()
    if timings is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        timings.add(name, time.perf_counter() - started)


def parse_header(value: str) -> dict[str, float]:
    """`Server-Timing` back into {name: ms}; for clients (the bench) and tests."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                out[name.strip()] = float(number)
    return out
