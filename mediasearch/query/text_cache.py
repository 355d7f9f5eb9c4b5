"""A bounded LRU of query-text vectors, keyed by the model that made them and the exact text.

Search traffic repeats itself (the same few queries from a page's suggestions, a user paging
through results, a load balancer's retries); the text tower is most of a text query's time on CPU.
The key holds the model's identity (`ModelIdentity.id`: checkpoint digest, and precision where it
changes the vectors), so a server that switches generations, or two encoders sharing one cache,
never answer one model's query with another model's vector. The text is kept exactly as given: the
tokeniser's own normalisation is the model's business, and a cache that guessed it could be wrong.

Two misses of one text at once both run the model and store the same vector: simpler than making
the second wait, and the bound on entries holds either way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class TextVectorCache:
    """`max_entries` vectors at most (0 disables it); safe to share between threads."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_compute(self, model: str, text: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The vector of `text` by `model`, from the cache or from `compute()` (then remembered).

        Returns a copy: a caller that changes its vector in place cannot change what the next caller
        gets (512 floats: about a microsecond).
        """
        if self.max_entries == 0:
            return compute()
        key = (model, text)
        with self._lock:
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return vector.copy()
            self.misses += 1
        # The model runs outside the lock: a slow miss must not hold up hits of other texts.
        vector = np.array(compute(), dtype=np.float32, copy=True)
        vector.setflags(write=False)
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return vector.copy()
