"""LanceDB backend: the embedded default, one table per collection on local disk (or S3).

Small tables are searched exactly (a flat scan beats any ANN structure there); once a table is
large enough, `optimize()` builds an IVF_FLAT index with ~sqrt(n) partitions, plus a bitmap index on
`kind`. IVF_FLAT keeps full vectors in its partitions, so distances are exact and no refine step (a
random read of every candidate's full vector) is needed; recall only depends on how many partitions
are probed. At 100k x 512 that gives recall@10 ~0.99 at under 10 ms per query on 2 cores
(bench/bench_knn.py), where IVF_HNSW_SQ with refinement measured ~3x slower for the same recall.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.rerankers import Reranker

from mediasearch.core.records import DocKind, DocumentFields, IndexDocument
from mediasearch.index.base import (
    Hit,
    HybridWeights,
    IndexError_,
    IndexFilter,
    IndexSpec,
    VectorField,
    VectorIndex,
)
from mediasearch.index.schema import FIELDS, SCALAR_FIELDS, VECTOR_FIELDS, FieldSchema, arrow_schema

# Below this many rows a flat scan is both exact and fast (<5 ms at 512-d), so no ANN index is built.
ANN_MIN_ROWS = 20_000
# Partitions probed per query. With ~sqrt(n) partitions of clustered embeddings, 16 probes give
# recall@10 >= 0.99 at 100k rows; a probe costs ~sqrt(n) exact distances, small next to a query's
# fixed overhead, so a generous value is cheap.
DEFAULT_NPROBES = 16

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
    return " AND ".join(parts)


class LanceDBIndex(VectorIndex):
    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        nprobes: int = DEFAULT_NPROBES,
        refine_factor: int | None = None,
    ) -> None:
        import lancedb

        self.uri = uri
        self.collection = collection
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self._db = lancedb.connect(uri)
        self._table: Any = None
        # (table version, kinds with at least one row): lets a search for a kind the collection does
        # not hold (scenes in an image-only corpus; a default API search asks for images and scenes)
        # skip its query. Keyed on the table version, so any write invalidates it.
        self._kinds: tuple[int, frozenset[str]] | None = None
        # LanceDB writes are safe across threads but merge_insert races on the same ids; serialise them.
        self._write_lock = threading.Lock()

    # -- table handling -------------------------------------------------------------------------

    @property
    def table(self) -> Any:
        if self._table is None:
            if not self.exists():
                raise IndexError_(
                    f"collection {self.collection!r} does not exist in {self.uri}: ingest something first"
                )
            self._table = self._db.open_table(self.collection)
        return self._table

    def exists(self) -> bool:
        return self.collection in self._db.list_tables().tables

    def create(self, spec: IndexSpec) -> None:
        if self.exists():
            schema = self._db.open_table(self.collection).schema
            self._check_columns(schema)
            current = schema.field(VectorField.CLIP.value).type
            if current.list_size != spec.clip_dim:
                raise IndexError_(
                    f"collection {self.collection!r} holds {current.list_size}-d vectors, "
                    f"but the model gives {spec.clip_dim}-d: use another collection or drop this one"
                )
            return
        self._table = self._db.create_table(self.collection, schema=schema_for(spec), exist_ok=True)

    # -- writes ---------------------------------------------------------------------------------

    def _to_arrow(self, docs: Sequence[IndexDocument]) -> pa.Table:
        schema = self.table.schema
        self._check_columns(schema)
        columns: dict[str, Any] = {f.name: [getattr(d, f.name) for d in docs] for f in SCALAR_FIELDS}
        columns[SEARCH_TEXT] = [search_text(d) for d in docs]
        for f in VECTOR_FIELDS:
            columns[f.name] = _vector_column(f, docs, schema.field(f.name).type.list_size)
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
        if not docs:
            return 0
        unique = {d.id: d for d in docs}  # the last write of an id in a batch wins, as in a bulk request
        data = self._to_arrow(list(unique.values()))
        with self._write_lock:
            (
                self.table.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                # Null caption vectors are legitimate (captions are optional); LanceDB's default would
                # reject them as "bad vectors". Records already guarantee finite vectors.
                .execute(data, on_bad_vectors="null")
            )
        return len(unique)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids or not self.exists():
            return 0
        where = f"id IN ({', '.join(sql_literal(i) for i in ids)})"
        with self._write_lock:
            before = self.table.count_rows(where)
            self.table.delete(where)
        return before

    def delete_where(self, filter: IndexFilter) -> int:
        where = where_clause(filter)
        if where is None:
            raise IndexError_("refusing to delete with an empty filter (that would drop the collection)")
        if not self.exists():
            return 0
        with self._write_lock:
            before = self.table.count_rows(where)
            if before:
                self.table.delete(where)
        return before

    def optimize(self) -> None:
        table = self.table
        n = table.count_rows()
        names = {ix.name for ix in table.list_indices()}
        if f"{SEARCH_TEXT}_idx" not in names and n:
            from lancedb.index import FTS

            # English stemming and stop words, like the OpenSearch mapping's english analyzer.
            table.create_index(SEARCH_TEXT, config=FTS(with_position=False, language="English", stem=True))
        has_index = f"{VectorField.CLIP.value}_idx" in names
        if not has_index and n >= ANN_MIN_ROWS:
            # ~sqrt(n) partitions balances the centroid search against the partition scans.
            table.create_index(
                metric="cosine",
                vector_column_name=VectorField.CLIP.value,
                index_type="IVF_FLAT",
                num_partitions=max(1, round(float(np.sqrt(n)))),
            )
        elif has_index:
            table.optimize()  # folds rows added since the indices were built into them
        if "kind_idx" not in names and n >= ANN_MIN_ROWS:
            # Every API search pre-filters on kind; unindexed, that filter reads the whole column on
            # each query (~+5 ms at 100k rows); with a bitmap index it is a lookup.
            table.create_scalar_index("kind", index_type="BITMAP")

    # -- reads ----------------------------------------------------------------------------------

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        field: VectorField = VectorField.CLIP,
    ) -> list[Hit]:
        if not self.exists():
            return []
        if filter is not None and filter.kinds:
            present, wanted = self._kinds_present(), {k.value for k in filter.kinds}
            if not present & wanted:
                return []
            if present <= wanted:
                # Every row is of a wanted kind (images only, asked for images): the predicate would
                # select everything and only cost a pre-filter pass.
                filter = replace(filter, kinds=())
        query = (
            self.table.search(np.asarray(vector, dtype=np.float32), vector_column_name=field.value)
            .distance_type("cosine")
            .limit(k)
            .nprobes(self.nprobes)
        )
        if self.refine_factor:
            query = query.refine_factor(self.refine_factor)
        where = where_clause(filter)
        if field is VectorField.CAPTION:
            where = f"({where}) AND caption_vector IS NOT NULL" if where else "caption_vector IS NOT NULL"
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(_FIELD_COLUMNS).to_arrow().to_pylist()
        # LanceDB's cosine distance is 1 - cos; report the similarity itself.
        return [Hit(score=float(1.0 - row.pop("_distance")), document=self._fields(row)) for row in rows]

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        weights: HybridWeights = HybridWeights(),
    ) -> list[Hit]:
        if not self.exists():
            return []
        if f"{SEARCH_TEXT}_idx" not in {ix.name for ix in self.table.list_indices()}:
            self.optimize()  # the full-text index is built lazily; hybrid search needs it
        query = (
            self.table.search(
                query_type="hybrid", vector_column_name=VectorField.CLIP.value, fts_columns=SEARCH_TEXT
            )
            .vector(np.asarray(vector, dtype=np.float32))
            .text(text)
            .distance_type("cosine")
            .rerank(MinMaxFusion(weights))
            .limit(k)
            .select(_FIELD_COLUMNS)
        )
        where = where_clause(filter)
        if where:
            query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().to_pylist():
            parts = {"keyword": float(row.pop("_keyword_part")), "vector": float(row.pop("_vector_part"))}
            score = float(row.pop("_relevance_score"))
            hits.append(Hit(score=score, document=self._fields(row), parts=parts))
        return hits

    def _kinds_present(self) -> frozenset[str]:
        table = self.table
        version = table.version
        cached = self._kinds
        if cached is None or cached[0] != version:
            present = frozenset(
                k.value for k in DocKind if table.count_rows(f"kind = {sql_literal(k.value)}") > 0
            )
            cached = self._kinds = (version, present)
        return cached[1]

    def get_many(self, ids: Iterable[str]) -> list[DocumentFields]:
        ids = list(dict.fromkeys(ids))
        by_id = {r["id"]: self._fields(r) for r in self._read(ids, _FIELD_COLUMNS).to_pylist()}
        return [by_id[i] for i in ids if i in by_id]

    def get_many_with_vectors(self, ids: Iterable[str]) -> list[IndexDocument]:
        ids = list(dict.fromkeys(ids))
        by_id = {r["id"]: self._doc(r) for r in self._rows(self._read(ids, [f.name for f in FIELDS]))}
        return [by_id[i] for i in ids if i in by_id]

    def _read(self, ids: list[str], columns: list[str]) -> pa.Table:
        if not ids or not self.exists():
            return pa.table({})
        where = f"id IN ({', '.join(sql_literal(i) for i in ids)})"
        return self.table.search().where(where).select(columns).limit(len(ids)).to_arrow()

    def fingerprints(self, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(dict.fromkeys(ids))
        if not ids or not self.exists():
            return {}
        out: dict[str, str | None] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            where = f"id IN ({', '.join(sql_literal(i) for i in chunk)})"
            rows = self.table.search().where(where).select(["id", "fingerprint"]).limit(len(chunk)).to_arrow()
            out.update(zip(rows["id"].to_pylist(), rows["fingerprint"].to_pylist(), strict=True))
        return out

    def count(self, filter: IndexFilter | None = None) -> int:
        if not self.exists():
            return 0
        return int(self.table.count_rows(where_clause(filter)))

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
