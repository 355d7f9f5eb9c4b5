"""LanceDB backend: the embedded default, one table per collection on local disk (or S3).

Small tables are searched exactly (a flat scan beats any ANN structure there). Once a table is large
enough, k-NN on clip vectors goes through an HNSW graph (faiss) kept beside a local table as a derived,
rebuildable cache (mediasearch.index.ann): LanceDB stays the store of record, `optimize()` brings the
graph up to each new version, and readers map it onto the version they read (rows written since are
searched exactly, removed ones masked), so results stay exactly as fresh and as filtered as the table.
LanceDB's own vector index cannot get within 3x of faiss's HNSW: at 100k x 512 on 2 cores IVF_FLAT
measured 8 ms per query and IVF_HNSW_SQ 4.5 ms, where the graph answers in ~0.2 ms plus ~0.2 ms to
return documents (bench/bench_knn.py). `optimize()` still builds an IVF_FLAT index (~sqrt(n)
partitions; full vectors, so exact distances), plus a bitmap index on `kind`: it answers where the
graph cannot (an S3 table, a caption-vector query, a graph file missing or damaged, the moments after
a compaction before the graph is updated).

Every index (full-text, vector, bitmap) is built, and the table compacted, in `optimize()` alone,
which writers call at the end of a write; queries only read, so concurrent queries never race on a
build, and a query that needs an index not built yet is told so (`IndexNotReady`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, Bitmap, BTree, IvfFlat
from lancedb.rerankers import Reranker

from mediasearch.core.defaults import INDEX_REFRESH_S
from mediasearch.core.records import DocKind, DocumentFields, IndexDocument
from mediasearch.index import ann, lancedb_codes
from mediasearch.index.base import (
    Hit,
    HybridWeights,
    IndexError_,
    IndexFilter,
    IndexNotReady,
    IndexSpec,
    IndexUnreadable,
    VectorField,
    VectorIndex,
)
from mediasearch.index.codes import CodesConfig
from mediasearch.index.lancedb_codes import CODE_COLUMN, RotationStore
from mediasearch.index.schema import FIELDS, SCALAR_FIELDS, VECTOR_FIELDS, FieldSchema, arrow_schema

# Below this many rows a flat scan is both exact and fast (<5 ms at 512-d), so no ANN index is built.
ANN_MIN_ROWS = 20_000
# Partitions probed per query. With ~sqrt(n) partitions of clustered embeddings, 16 probes give
# recall@10 >= 0.99 at 100k rows; a probe costs ~sqrt(n) exact distances, small next to a query's
# fixed overhead, so a generous value is cheap.
DEFAULT_NPROBES = 16

# optimize() retries after losing a commit race to another process this many times in all.
OPTIMIZE_ATTEMPTS = 5
OPTIMIZE_BACKOFF_S = 0.2
# Every write adds a fragment; past this many, optimize() compacts even with every index current.
MAX_FRAGMENTS = 16
# Ids per `id IN (...)` predicate, and row ids per delete of duplicates.
READ_CHUNK = 1000
DELETE_CHUNK = 1000

# What LanceDB, Lance and Arrow raise for a table that cannot be read or written: Lance's own errors
# (IO, commit conflicts, damaged files) arrive as RuntimeError, missing tables and bad input as
# ValueError, files as OSError; Arrow's derive from ArrowException.
BACKEND_ERRORS: tuple[type[Exception], ...] = (RuntimeError, OSError, ValueError, pa.ArrowException)

log = logging.getLogger(__name__)

# Captions and tags in one analysed column: LanceDB's native full-text index covers one column.
SEARCH_TEXT = "search_text"


def search_text(doc: IndexDocument) -> str | None:
    parts = [p for p in (doc.caption, " ".join(doc.tags)) if p]
    return " ".join(parts) or None


class MinMaxFusion(Reranker):
    """A LanceDB reranker that fuses the way OpenSearch's normalization-processor does.

    LanceDB hands `rerank_hybrid` both result lists already min-max normalised (distances: 0 best;
    BM25 scores: 1 best); this combines them with the weighted arithmetic mean and keeps the parts,
    so results explain themselves and rank the same way on both backends.
    """

    def __init__(self, weights: HybridWeights) -> None:
        super().__init__(return_score="all")
        self.weights = weights

    def rerank_hybrid(self, query: str, vector_results: pa.Table, fts_results: pa.Table) -> pa.Table:
        merged = self._merge_and_keep_scores(vector_results, fts_results)
        if merged.num_rows == 0:
            return merged.append_column("_relevance_score", pa.array([], pa.float32()))
        dist = merged["_distance"].to_numpy(zero_copy_only=False).astype(np.float64)
        bm25 = merged["_score"].to_numpy(zero_copy_only=False).astype(np.float64)
        vector_part = np.where(np.isnan(dist), 0.0, 1.0 - dist)
        present = ~np.isnan(bm25)
        if present.any() and np.all(bm25[present] == 0.0):
            # All keyword hits scored alike (e.g. a single hit): LanceDB's min-max maps them to 0,
            # OpenSearch's to 1. A keyword match must count, so follow OpenSearch.
            bm25 = np.where(present, 1.0, bm25)
        keyword_part = np.nan_to_num(bm25, nan=0.0)
        fused = self.weights.combine(keyword_part, vector_part)
        merged = merged.append_column("_keyword_part", pa.array(keyword_part, pa.float32()))
        merged = merged.append_column("_vector_part", pa.array(vector_part, pa.float32()))
        merged = merged.append_column("_relevance_score", pa.array(fused, pa.float32()))
        return merged.sort_by([("_relevance_score", "descending")])


def schema_for(spec: IndexSpec) -> pa.Schema:
    """The table schema: IndexDocument's fields (see mediasearch.index.schema) plus the search text."""
    return arrow_schema(spec, extra=[pa.field(SEARCH_TEXT, pa.string())])


# Columns a read without vectors selects: no vector is read from disk or converted.
_FIELD_COLUMNS = [f.name for f in SCALAR_FIELDS]
# A stored null in a field that cannot be None (a list) reads back as the field's default.
_NOT_NULLABLE = frozenset(f.name for f in FIELDS if not f.nullable)


def _vector_column(field: FieldSchema, docs: Sequence[IndexDocument], dim: int) -> pa.Array:
    vectors: list[np.ndarray | None] = [getattr(d, field.name) for d in docs]
    for doc, vector in zip(docs, vectors, strict=True):
        if vector is not None and vector.shape[0] != dim:
            raise IndexError_(
                f"{field.name} of {doc.id} is {vector.shape[0]}-d, the collection expects {dim}-d"
            )
    present = [v for v in vectors if v is not None]
    if len(present) == len(vectors):
        # One contiguous buffer: much cheaper than a list of lists for a bulk load.
        flat = np.stack(present).astype(np.float32, copy=False).ravel()
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)
    return pa.array([None if v is None else v.tolist() for v in vectors], type=pa.list_(pa.float32(), dim))


def lost_a_race(exc: BaseException) -> bool:
    """Whether a Lance error says another writer committed first (the work may be done already)."""
    message = str(exc).lower()
    return "commit conflict" in message or ("index name" in message and "already exists" in message)


def _unique_hits(hits: Iterable[Hit]) -> list[Hit]:
    """Hits with each id once, the best kept: duplicate rows must not show a result twice."""
    seen: set[str] = set()
    unique = []
    for hit in hits:
        if hit.document.id not in seen:
            seen.add(hit.document.id)
            unique.append(hit)
    return unique


def sql_literal(value: str) -> str:
    """A SQL string literal; quotes are doubled so filter values cannot break out of the literal."""
    return "'" + value.replace("'", "''") + "'"


def where_clause(filter: IndexFilter | None) -> str | None:
    """The SQL predicate LanceDB pre-filters with, or None for no filter."""
    if filter is None or filter.is_empty():
        return None
    parts: list[str] = []
    if filter.kinds:
        parts.append(f"kind IN ({', '.join(sql_literal(k.value) for k in filter.kinds)})")
    if filter.video_id is not None:
        parts.append(f"video_id = {sql_literal(filter.video_id)}")
    if filter.exclude_video_id is not None:
        parts.append(f"(video_id IS NULL OR video_id != {sql_literal(filter.exclude_video_id)})")
    if filter.tags:
        parts.append(f"array_has_all(tags, [{', '.join(sql_literal(t) for t in filter.tags)}])")
    if filter.uri_prefix is not None:
        parts.append(f"starts_with(uri, {sql_literal(filter.uri_prefix)})")
    if filter.min_width is not None:
        parts.append(f"width >= {int(filter.min_width)}")
    if filter.min_height is not None:
        parts.append(f"height >= {int(filter.min_height)}")
    parts.extend(photo_predicates(filter))
    return " AND ".join(parts)


def sql_timestamp(when: datetime) -> str:
    """A SQL timestamp literal of an instant, in UTC (the column's zone; DataFusion reads a literal
    without a zone as UTC)."""
    utc = when.astimezone(UTC) if when.tzinfo is not None else when
    return f"TIMESTAMP '{utc.replace(tzinfo=None).isoformat(sep=' ', timespec='microseconds')}'"


def photo_predicates(filter: IndexFilter) -> list[str]:
    """The EXIF filters (taken-at range, camera, GPS box) as SQL predicates."""
    parts: list[str] = []
    if filter.taken_after is not None:
        parts.append(f"taken_at >= {sql_timestamp(filter.taken_after)}")
    if filter.taken_before is not None:
        parts.append(f"taken_at < {sql_timestamp(filter.taken_before)}")
    if filter.camera is not None:
        parts.append(f"camera = {sql_literal(filter.camera)}")
    if filter.bbox is not None:
        min_lat, min_lon, max_lat, max_lon = (f"{float(v):.7f}" for v in filter.bbox)
        parts.append(f"gps_lat >= {min_lat} AND gps_lat <= {max_lat}")
        if float(min_lon) <= float(max_lon):
            parts.append(f"gps_lon >= {min_lon} AND gps_lon <= {max_lon}")
        else:  # the box crosses the antimeridian
            parts.append(f"(gps_lon >= {min_lon} OR gps_lon <= {max_lon})")
    return parts


class _NoRows:
    """What `_narrow_kinds` answers when no row can match: the query need not run."""


NO_ROWS = _NoRows()


class LanceDBIndex(VectorIndex):
    """One collection as one LanceDB table.

    Freshness: a process sees another process's committed writes within `refresh_s` seconds. Open
    table handles re-check for a newer version at most that often (LanceDB's read consistency
    interval), and a collection that does not exist yet (a server started before the first ingest)
    is looked for again at most that often; an existing table costs a query no listing at all.

    Errors: every public method turns what LanceDB, Lance and Arrow raise into `IndexError_` naming
    the collection. Reads raise `IndexUnreadable` (a message safe to show, the cause chained for the
    log); a query that needs a structure only writers build raises `IndexNotReady`.
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        nprobes: int = DEFAULT_NPROBES,
        refine_factor: int | None = None,
        refresh_s: float = INDEX_REFRESH_S,
        codes: CodesConfig | None = None,
    ) -> None:
        if refresh_s < 0:
            raise ValueError(f"refresh_s must be >= 0, got {refresh_s}")
        self.uri = uri
        self.collection = collection
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.refresh_s = refresh_s
        # 0 makes every read check for a newer version (strong consistency); without an interval
        # LanceDB never re-reads, and a long-lived server would serve the table it first opened.
        self._db = lancedb.connect(uri, read_consistency_interval=timedelta(seconds=refresh_s))
        self._table: Any = None
        # When the collection was last found missing (monotonic seconds): bounds how often a server
        # waiting for its first ingest lists the tables.
        self._missing_checked: float | None = None
        # ((table version, row count), kinds with at least one row): lets a search for a kind the
        # collection does not hold (scenes in an image-only corpus; a default API search asks for
        # images and scenes) skip its query. The row count is in the key because a dropped and
        # re-created table starts its versions again, so a version alone could match stale kinds.
        self._kinds: tuple[tuple[int, int], frozenset[str]] | None = None
        # This process's view of the HNSW graph kept beside the table (mediasearch.index.ann).
        self._ann: Any = None
        # The document columns this table has, read once per handle (see `_read_columns`).
        self._columns: list[str] | None = None
        # (snapshot, id -> its row in the snapshot's fields): reads by id from the k-NN snapshot.
        self._snapshot_ids: tuple[Any, dict[str, int]] | None = None
        # Whether this object has written: only then can its table handle be ahead of the k-NN snapshot
        # between two of the snapshot's refreshes (`_snapshot_rows`).
        self._wrote = False
        # Serialises this process's writers only: merge_insert races on the same ids. Other
        # processes are kept out by the collection's writer lock (mediasearch.index.locks).
        self._write_lock = threading.Lock()
        # Binary codes (mediasearch.index.lancedb_codes): None keeps to the float path, unless the
        # collection already has a rotation (then writes keep coding their rows).
        self.codes = codes
        self._rotations = RotationStore(self._db, collection)

    # -- table handling -------------------------------------------------------------------------

    def _open(self, *, fresh: bool = False) -> Any | None:
        """The table, or None while the collection does not exist.

        An open handle is kept: it follows new versions by itself, a re-created table included. A
        missing collection is looked for again once `refresh_s` has passed, or at once if `fresh`.
        """
        table = self._table
        if table is not None:
            return table
        checked = self._missing_checked
        if not fresh and checked is not None and time.monotonic() - checked < self.refresh_s:
            return None
        if self.collection not in self._db.list_tables().tables:
            self._missing_checked = time.monotonic()
            return None
        self._table = table = self._db.open_table(self.collection)
        self._missing_checked = None
        return table

    def _forget(self) -> None:
        """Drop the handle and what is cached about it: the table may have been dropped or replaced."""
        self._table = None
        self._kinds = None
        self._columns = None
        self._missing_checked = None

    def _read_columns(self, table: Any) -> list[str]:
        """The document columns reads select: those of `_FIELD_COLUMNS` the table has. A collection
        created before a field existed (EXIF, learned_vector) still answers queries, the field at its
        default, until `mediasearch reindex`; writers refuse it (`_check_columns`). Cached per handle:
        asking the table for its schema costs ~0.3 ms, on every query."""
        columns = self._columns
        if columns is None:
            names = set(table.schema.names)
            columns = self._columns = [c for c in _FIELD_COLUMNS if c in names]
        return columns

    @property
    def table(self) -> Any:
        """The table, for writers (no throttling: a writer must see a table created a moment ago)."""
        table = self._open(fresh=True)
        if table is None:
            raise IndexError_(
                f"collection {self.collection!r} does not exist in {self.uri}: ingest something first"
            )
        return table

    def _reading(self, operation: str) -> AbstractContextManager[None]:
        return self._guarded(
            lambda exc: IndexUnreadable(
                f"collection {self.collection!r} could not be read ({operation}): its data may be "
                "damaged or missing; the server log has the details"
            )
        )

    def _writing(self, operation: str) -> AbstractContextManager[None]:
        return self._guarded(
            lambda exc: IndexError_(
                f"LanceDB {operation} on collection {self.collection!r} in {self.uri} failed: {exc}"
            )
        )

    @contextmanager
    def _write_locked(self) -> Iterator[None]:
        """This process's writers one at a time; from the first write on, this object's reads by id
        compare table versions (`_snapshot_rows`)."""
        with self._write_lock:
            self._wrote = True
            yield

    @contextmanager
    def _guarded(self, error: Callable[[BaseException], IndexError_]) -> Iterator[None]:
        """Backend errors become index errors naming the collection (readers get a message safe to
        show); the cached table is forgotten, so the next call opens it afresh."""
        try:
            yield
        except IndexError_:
            raise
        except BACKEND_ERRORS as exc:
            self._forget()
            raise error(exc) from exc

    def exists(self) -> bool:
        """Whether the collection exists now (always asks: writers and health checks need the truth)."""
        with self._reading("exists"):
            found = self.collection in self._db.list_tables().tables
        if not found:
            self._forget()
        return found

    def create(self, spec: IndexSpec) -> None:
        with self._writing("create"):
            if self.exists():
                schema = self.table.schema
                self._check_columns(schema)
                current = schema.field(VectorField.CLIP.value).type
                if current.list_size != spec.clip_dim:
                    raise IndexError_(
                        f"collection {self.collection!r} holds {current.list_size}-d vectors, "
                        f"but the model gives {spec.clip_dim}-d: use another collection or drop this one"
                    )
                return
            self._table = self._db.create_table(self.collection, schema=schema_for(spec), exist_ok=True)
            self._missing_checked = None

    # -- writes ---------------------------------------------------------------------------------

    def _to_arrow(self, docs: Sequence[IndexDocument]) -> pa.Table:
        schema = self.table.schema
        self._check_columns(schema)
        columns: dict[str, Any] = {f.name: [getattr(d, f.name) for d in docs] for f in SCALAR_FIELDS}
        columns[SEARCH_TEXT] = [search_text(d) for d in docs]
        for f in VECTOR_FIELDS:
            columns[f.name] = _vector_column(f, docs, schema.field(f.name).type.list_size)
        if CODE_COLUMN in schema.names:
            rotation = self._rotations.load()
            columns[CODE_COLUMN] = (
                pa.nulls(len(docs), schema.field(CODE_COLUMN).type)
                if rotation is None
                else lancedb_codes.code_column(rotation, columns[VectorField.CLIP.value])
            )
        return pa.table(columns, schema=schema)

    def _check_columns(self, schema: pa.Schema) -> None:
        # pa.table(columns, schema=...) silently drops a column the table does not have: a field added
        # to IndexDocument after this collection was created would be written nowhere.
        missing = [f.name for f in FIELDS if f.name not in schema.names]
        if missing:
            raise IndexError_(
                f"collection {self.collection!r} in {self.uri} has no column for {', '.join(missing)}: "
                "it was created before these fields existed; re-ingest into a new collection"
            )

    def upsert(self, docs: Sequence[IndexDocument]) -> int:
        """Insert or replace by id.

        Safe across threads of this process only. Two processes upserting the same new ids at once
        both find no match and both insert (how older versions left duplicate rows): cross-process
        safety comes from the collection's writer lock (mediasearch.index.locks), which the
        pipeline takes around every write. `optimize()` repairs duplicates left from before.
        """
        if not docs:
            return 0
        unique = {d.id: d for d in docs}  # the last write of an id in a batch wins, as in a bulk request
        with self._writing("upsert"):
            data = self._to_arrow(list(unique.values()))
            with self._write_locked():
                (
                    self.table.merge_insert("id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    # Null caption vectors are legitimate (captions are optional); LanceDB's default
                    # would reject them as "bad vectors". Records already guarantee finite vectors.
                    .execute(data, on_bad_vectors="null")
                )
        return len(unique)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids or not self.exists():
            return 0
        where = f"id IN ({', '.join(sql_literal(i) for i in ids)})"
        with self._writing("delete"), self._write_locked():
            before = int(self.table.count_rows(where))
            self.table.delete(where)
        return before

    def delete_where(self, filter: IndexFilter) -> int:
        where = where_clause(filter)
        if where is None:
            raise IndexError_("refusing to delete with an empty filter (that would drop the collection)")
        if not self.exists():
            return 0
        with self._writing("delete_where"), self._write_locked():
            before = int(self.table.count_rows(where))
            if before:
                self.table.delete(where)
        return before

    def optimize(self) -> None:
        """Repair duplicate ids, build the missing indices and fold new rows into existing ones.

        The only place anything is built: queries never build (a hybrid query without its full-text
        index answers `IndexNotReady`). Idempotent, and without a commit when there is nothing to do,
        so writers can call it at the end of every ingest. Two processes calling it at once collide
        on Lance's commit (a "retryable commit conflict"); the loser looks again at the latest
        version, where the winner's work is usually already done, and retries what is left.
        """
        for attempt in range(1, OPTIMIZE_ATTEMPTS + 1):
            try:
                with self._write_locked():
                    self._optimize_once()
                return
            except BACKEND_ERRORS as exc:
                if attempt == OPTIMIZE_ATTEMPTS or not lost_a_race(exc):
                    self._forget()
                    raise IndexError_(
                        f"LanceDB optimize on collection {self.collection!r} in {self.uri} failed: {exc}"
                    ) from exc
                log.info("optimize of %r lost a commit race (attempt %d); retrying", self.collection, attempt)
                time.sleep(OPTIMIZE_BACKOFF_S * attempt)

    def _optimize_once(self) -> None:
        table = self._open(fresh=True)
        if table is None:
            return
        # Another process may have written or built an index since this handle last looked: plan
        # from the latest version, not from up to `refresh_s` ago.
        table.checkout_latest()
        self._repair_duplicates(table)
        n = table.count_rows()
        if not n:
            return
        self._optimize_codes(table, n)
        indices = {ix.name: ix for ix in table.list_indices()}
        if f"{SEARCH_TEXT}_idx" not in indices:
            # English stemming and stop words, like the OpenSearch mapping's english analyzer.
            table.create_index(
                SEARCH_TEXT, config=FTS(with_position=False, language="English", stem=True), replace=False
            )
        if f"{VectorField.CLIP.value}_idx" not in indices and n >= ANN_MIN_ROWS:
            # ~sqrt(n) partitions balances the centroid search against the partition scans.
            partitions = max(1, round(float(np.sqrt(n))))
            table.create_index(
                VectorField.CLIP.value,
                config=IvfFlat(distance_type="cosine", num_partitions=partitions),
                replace=False,
            )
        if "kind_idx" not in indices and n >= ANN_MIN_ROWS:
            # Every API search pre-filters on kind; unindexed, that filter reads the whole column on
            # each query (~+5 ms at 100k rows); with a bitmap index it is a lookup.
            table.create_index("kind", config=Bitmap(), replace=False)
        if "id_idx" not in indices and n >= ANN_MIN_ROWS:
            # Reads by id (`id IN (...)`: a search's video documents, a sync's fingerprints) otherwise
            # scan the id column: at 100k rows 28 ms for 10 ids, 7.7 ms with this index (bench_search_api).
            table.create_index("id", config=BTree(), replace=False)
        behind = any(ix.num_unindexed_rows for ix in indices.values())
        fragments = int(table.stats()["fragment_stats"]["num_fragments"])
        if behind or fragments > MAX_FRAGMENTS:
            # Folds rows added since the indices were built into them, and compacts small fragments
            # (each write adds one). Skipped otherwise: LanceDB commits a new version even when it
            # finds nothing to do.
            table.optimize()
        self._maintain_ann(table)

    def _maintain_ann(self, table: Any) -> None:
        """Bring the HNSW graph beside the table up to this version (mediasearch.index.ann)."""
        outcome = ann.maintain(table, VectorField.CLIP.value, ANN_MIN_ROWS)
        # Every write ends here: only a graph built or updated is worth a line at INFO.
        level = logging.INFO if outcome in ("built", "updated", "failed") else logging.DEBUG
        log.log(level, "ANN graph of %r: %s", self.collection, outcome)

    def _ann_knn(
        self, table: Any, vector: np.ndarray, k: int, filter: IndexFilter | None
    ) -> list[Hit] | None:
        """k-NN through the HNSW graph, or None where it cannot answer (no graph, remote table, a
        graph too far behind): LanceDB's own search answers then."""
        reader = self._ann
        if reader is None:
            # One per index: the table's location never changes, and asking LanceDB for it costs.
            reader = self._ann = ann.AnnReader(
                table.uri, VectorField.CLIP.value, self._read_columns(table), ANN_MIN_ROWS, self.refresh_s
            )
        if reader.path is None:
            return None  # remote tables keep LanceDB's own vector index only
        snapshot = reader.snapshot(table)
        if snapshot is None:
            return None
        found = reader.search(snapshot, vector, k, filter)
        return _unique_hits(Hit(score=score, document=self._fields(row)) for score, row in found)

    def _repair_duplicates(self, table: Any) -> int:
        """Keep one row per id, the last written; returns how many rows were removed.

        Older versions' racing ingests left several rows for one id. "Last written" is the highest
        row address, which follows write order until a compaction rewrites the rows (this runs before
        the compaction in `optimize`).
        """
        rows = table.search().select(["id"]).with_row_id(True).limit(None).to_arrow()
        if rows.num_rows == 0 or pc.count_distinct(rows["id"]).as_py() == rows.num_rows:
            return 0
        ids, row_ids = rows["id"].to_pylist(), rows["_rowid"].to_pylist()
        last: dict[str, int] = {}
        for id_, row_id in zip(ids, row_ids, strict=True):
            last[id_] = max(row_id, last.get(id_, row_id))
        stale = [(id_, row_id) for id_, row_id in zip(ids, row_ids, strict=True) if row_id != last[id_]]
        drop = [row_id for _, row_id in stale]
        duplicated = sorted({id_ for id_, _ in stale})
        kept = self._latest_rows(table, duplicated, table.schema.names)
        for start in range(0, len(drop), DELETE_CHUNK):
            chunk = drop[start : start + DELETE_CHUNK]
            # The ids in the predicate too: should the rows have moved since they were read (another
            # writer compacting, despite the writer lock), only duplicated ids can lose rows.
            table.delete(
                f"_rowid IN ({', '.join(str(r) for r in chunk)}) "
                f"AND id IN ({', '.join(sql_literal(i) for i in duplicated)})"
            )
        lost = set(duplicated) - set(self._latest_rows(table, duplicated, ["id"])["id"].to_pylist())
        if lost:
            restore = kept.filter(pc.is_in(kept["id"], pa.array(sorted(lost))))
            table.merge_insert("id").when_not_matched_insert_all().execute(restore, on_bad_vectors="null")
        log.warning(
            "collection %r held %d duplicate rows for %d ids; kept the last written of each",
            self.collection,
            len(drop),
            len(duplicated),
        )
        return len(drop)

    # -- reads ----------------------------------------------------------------------------------

    def probe(self) -> int:
        with self._reading("health check"):
            table = self._open()
            if table is None:
                raise IndexNotReady(
                    f"no index at {self.uri.rstrip('/')}/{self.collection}: run `mediasearch ingest` to build it"
                )
            # A connection of its own: this one caches the files' metadata, so a file damaged after
            # it was first read would pass. A bare count is answered from the manifest; a predicate
            # on a column makes Lance open every data file (~16 ms at 100k rows in 100 fragments).
            fresh = lancedb.connect(self.uri).open_table(self.collection)
            return int(fresh.count_rows("length(id) >= 0"))

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        field: VectorField = VectorField.CLIP,
    ) -> list[Hit]:
        if self.codes is not None and field is VectorField.CLIP:
            coded = self._codes_knn(vector, k, filter)
            if coded is not None:
                return coded
        with self._reading("knn"):
            table = self._open()
            if table is None:
                return []
            # The HNSW graph beside the table, when there is one that can answer (mediasearch.index.ann).
            if field is VectorField.CLIP and k > 0:
                hits = self._ann_knn(table, vector, k, filter)
                if hits is not None:
                    return hits
            narrowed = self._narrow_kinds(table, filter)
            if isinstance(narrowed, _NoRows):
                return []
            filter = narrowed
            query = (
                table.search(np.asarray(vector, dtype=np.float32), vector_column_name=field.value)
                .distance_type("cosine")
                .limit(k)
                .nprobes(self.nprobes)
            )
            if self.refine_factor:
                query = query.refine_factor(self.refine_factor)
            where = where_clause(filter)
            if field is VectorField.CAPTION:
                where = f"({where}) AND caption_vector IS NOT NULL" if where else "caption_vector IS NOT NULL"
            if field is VectorField.LEARNED:
                where = f"({where}) AND learned_vector IS NOT NULL" if where else "learned_vector IS NOT NULL"
            if where:
                query = query.where(where, prefilter=True)
            rows = query.select(self._read_columns(table)).to_arrow().to_pylist()
            # LanceDB's cosine distance is 1 - cos; report the similarity itself.
            return _unique_hits(
                Hit(score=float(1.0 - row.pop("_distance")), document=self._fields(row)) for row in rows
            )

    def _codes_knn(self, vector: np.ndarray, k: int, filter: IndexFilter | None) -> list[Hit] | None:
        """k-NN by Hamming distance over the codes, re-ranked on the floats; None while the collection
        has no rotation yet (the float path answers, exactly)."""
        assert self.codes is not None
        with self._reading("knn"):
            table = self._open()
            if table is None or CODE_COLUMN not in table.schema.names:
                return None
            rotation = self._rotations.load(self.refresh_s)
            if rotation is None:
                return None
            narrowed = self._narrow_kinds(table, filter)
            if isinstance(narrowed, _NoRows):
                return []
            filter = narrowed
            rows = lancedb_codes.search(
                table,
                rotation,
                vector,
                k,
                self.codes.oversample,
                where_clause(filter),
                self._read_columns(table),
                self.nprobes,
            )
            return _unique_hits(Hit(score=score, document=self._fields(row)) for score, row in rows)

    def _optimize_codes(self, table: Any, n: int) -> None:
        """Fit (or re-fit) the rotation and code the rows; code rows left without one; index the codes."""
        rotation = self._rotations.load()
        if self.codes is not None and lancedb_codes.needs_fit(rotation, self.codes, n):
            rotation = lancedb_codes.fit_and_code(table, self._rotations, self.codes)
            if f"{CODE_COLUMN}_idx" in {ix.name for ix in table.list_indices()}:
                table.drop_index(f"{CODE_COLUMN}_idx")  # its partitions were trained on the old codes
        if rotation is None or CODE_COLUMN not in table.schema.names:
            return
        if table.count_rows(f"{CODE_COLUMN} IS NULL AND {VectorField.CLIP.value} IS NOT NULL"):
            # Rows written before the rotation was stored (a fit interrupted by a kill).
            lancedb_codes.recode(table, rotation, f"{CODE_COLUMN} IS NULL")
        if n >= ANN_MIN_ROWS and f"{CODE_COLUMN}_idx" not in {ix.name for ix in table.list_indices()}:
            table.create_index(
                CODE_COLUMN,
                config=IvfFlat(distance_type="hamming", num_partitions=max(1, round(float(np.sqrt(n))))),
                replace=False,
            )

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        weights: HybridWeights = HybridWeights(),
    ) -> list[Hit]:
        with self._reading("hybrid"):
            table = self._open()
            if table is None:
                return []
            if f"{SEARCH_TEXT}_idx" not in {ix.name for ix in table.list_indices()}:
                if not table.count_rows():
                    return []  # nothing to find; writers build the index once there are rows
                # Building it here raced between concurrent queries (commit conflicts, 500s) and
                # made one query pay for the whole build: only writers build it (optimize()).
                raise IndexNotReady(
                    f"the full-text index of collection {self.collection!r} is not built yet: "
                    "run `mediasearch ingest` to build it"
                )
            query = (
                table.search(
                    query_type="hybrid", vector_column_name=VectorField.CLIP.value, fts_columns=SEARCH_TEXT
                )
                .vector(np.asarray(vector, dtype=np.float32))
                .text(text)
                .distance_type("cosine")
                .rerank(MinMaxFusion(weights))
                .limit(k)
                .select(self._read_columns(table))
            )
            where = where_clause(filter)
            if where:
                query = query.where(where, prefilter=True)
            hits = []
            for row in query.to_arrow().to_pylist():
                parts = {"keyword": float(row.pop("_keyword_part")), "vector": float(row.pop("_vector_part"))}
                score = float(row.pop("_relevance_score"))
                hits.append(Hit(score=score, document=self._fields(row), parts=parts))
            return _unique_hits(hits)

    def _narrow_kinds(self, table: Any, filter: IndexFilter | None) -> IndexFilter | _NoRows | None:
        """`filter` as a query should send it: `NO_ROWS` when the table holds none of the kinds asked
        for (a default API search asks for images and scenes of an image-only corpus), and without its
        kind predicate when every row is of a wanted kind (it would select everything and only cost a
        pre-filter pass)."""
        if filter is None or not filter.kinds:
            return filter
        present, wanted = self._kinds_present(table), {k.value for k in filter.kinds}
        if not present & wanted:
            return NO_ROWS
        return replace(filter, kinds=()) if present <= wanted else filter

    def _kinds_present(self, table: Any) -> frozenset[str]:
        key = (int(table.version), int(table.count_rows()))
        cached = self._kinds
        if cached is None or cached[0] != key:
            present = frozenset(
                k.value for k in DocKind if table.count_rows(f"kind = {sql_literal(k.value)}") > 0
            )
            cached = self._kinds = (key, present)
        return cached[1]

    def get_many(self, ids: Iterable[str]) -> list[DocumentFields]:
        ids = list(dict.fromkeys(ids))
        with self._reading("get"):
            table = self._open()
            if table is None or not ids:
                return []
            rows = self._snapshot_rows(table, ids)
            if rows is None:
                rows = self._latest_rows(table, ids, self._read_columns(table)).to_pylist()
            by_id = {r["id"]: self._fields(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def _snapshot_rows(self, table: Any, ids: list[str]) -> list[dict[str, Any]] | None:
        """The rows of `ids` from the k-NN reader's in-memory snapshot, where it holds this very table
        version (None otherwise: the caller queries LanceDB).

        A search's video documents were an `id IN (...)` query: 7-13 ms at 100k rows under load,
        the largest part of a search once k-NN went through the graph. The snapshot already holds
        every live row's fields, one row per id, so this is a dict lookup and a take. An object that
        has written compares the version on each call (one round trip, 0.2-0.5 ms), so a writer reading
        its own writes never gets an older snapshot; a reader's handle follows other processes' commits
        only once per `refresh_s`, as the snapshot does, so it has nothing to compare.
        """
        reader = self._ann
        if reader is None or reader.path is None:
            return None
        snap = reader.snapshot(table)
        if snap is None or (self._wrote and snap.version != int(table.version)):
            return None
        cached = self._snapshot_ids
        if cached is None or cached[0] is not snap:
            cached = self._snapshot_ids = (
                snap,
                dict(zip(snap.fields["id"].to_pylist(), range(snap.fields.num_rows), strict=True)),
            )
        positions = [cached[1][i] for i in ids if i in cached[1]]
        return snap.fields.take(pa.array(positions, type=pa.int64())).to_pylist()

    def get_many_with_vectors(self, ids: Iterable[str]) -> list[IndexDocument]:
        ids = list(dict.fromkeys(ids))
        with self._reading("get"):
            table = self._open()
            if table is None or not ids:
                return []
            # Only the columns the table has: one made before a vector field was added (learned_vector)
            # still reads, the field as None; writers refuse it with a message (`_check_columns`).
            names = set(table.schema.names)
            rows = self._rows(self._latest_rows(table, ids, [f.name for f in FIELDS if f.name in names]))
            by_id = {r["id"]: self._doc(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def fingerprints(self, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(dict.fromkeys(ids))
        with self._reading("fingerprints"):
            table = self._open()
            if table is None or not ids:
                return {}
            rows = self._latest_rows(table, ids, ["id", "fingerprint"])
            return dict(zip(rows["id"].to_pylist(), rows["fingerprint"].to_pylist(), strict=True))

    @staticmethod
    def _latest_rows(table: Any, ids: list[str], columns: list[str]) -> pa.Table:
        """The rows of `ids`, one per id, in no particular order.

        No `limit(len(ids))`: where an id has several rows (left by older versions' racing ingests),
        such a limit ran out before every id was read. Of several rows the last written (the highest
        row address) is taken, the one `optimize()` keeps.
        """
        parts = []
        for start in range(0, len(ids), READ_CHUNK):
            where = f"id IN ({', '.join(sql_literal(i) for i in ids[start : start + READ_CHUNK])})"
            parts.append(table.search().where(where).select(columns).with_row_id(True).limit(None).to_arrow())
        rows = pa.concat_tables(parts)
        if rows.num_rows == 0 or pc.count_distinct(rows["id"]).as_py() == rows.num_rows:
            return rows.drop_columns(["_rowid"])
        rows = rows.sort_by([("_rowid", "descending")])
        first: dict[str, int] = {}
        for position, id_ in enumerate(rows["id"].to_pylist()):
            first.setdefault(id_, position)
        return rows.take(sorted(first.values())).drop_columns(["_rowid"])

    def scan(self, filter: IndexFilter, fields: Sequence[str] | None = None) -> list[DocumentFields]:
        with self._reading("scan"):
            table = self._open(fresh=True)
            if table is None:
                return []
            # A sync plans from this: the latest version, not one up to `refresh_s` old.
            table.checkout_latest()
            query = table.search().select(self.scan_columns(fields)).with_row_id(True).limit(None)
            where = where_clause(filter)
            if where:
                query = query.where(where)
            rows = query.to_arrow().sort_by([("_rowid", "descending")]).drop_columns(["_rowid"]).to_pylist()
            # An id with several rows (racing ingests of older versions) is listed once, as its last
            # written row, the one reads by id return.
            latest: dict[str, dict[str, Any]] = {}
            for row in rows:
                latest.setdefault(row["id"], row)
            return [self._fields(row) for row in latest.values()]

    def count(self, filter: IndexFilter | None = None) -> int:
        with self._reading("count"):
            table = self._open()
            return 0 if table is None else int(table.count_rows(where_clause(filter)))

    @staticmethod
    def _rows(table: pa.Table) -> list[dict[str, Any]]:
        """Arrow rows as dicts, with vector columns as float32 arrays: going through Python floats
        (`to_pylist`) costs more than the rest of a small query's conversion together."""
        vectors: dict[str, list[np.ndarray | None]] = {}
        for name in (f.name for f in VECTOR_FIELDS):
            if name not in table.column_names:
                continue
            column = table.column(name).combine_chunks()
            flat = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            rows_of = iter(flat)
            # flatten() drops null lists, so valid rows take the flat rows in order.
            vectors[name] = [next(rows_of) if ok else None for ok in valid]
            table = table.drop_columns([name])
        rows = table.to_pylist()
        for name, values in vectors.items():
            for row, value in zip(rows, values, strict=True):
                row[name] = value
        return rows

    @staticmethod
    def _doc(row: dict[str, Any]) -> IndexDocument:
        return IndexDocument.model_validate(_stored(row))

    @staticmethod
    def _fields(row: dict[str, Any]) -> DocumentFields:
        return DocumentFields.model_validate(_stored(row))


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row's document fields, with the nulls Arrow stores for fields that cannot be None dropped so
    the record's default applies (an empty list of tags may come back as null)."""
    return {
        f.name: row[f.name]
        for f in FIELDS
        if f.name in row and (row[f.name] is not None or f.name not in _NOT_NULLABLE)
    }
