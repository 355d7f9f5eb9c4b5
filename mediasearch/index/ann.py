"""An HNSW graph (faiss) beside a LanceDB table: a derived, rebuildable cache for k-NN on clip vectors.

LanceDB stays the store of record. Its own vector indices measured 8 ms (IVF_FLAT) and 4.5 ms
(IVF_HNSW_SQ) per query at 100k x 512 on a quiet 2-core machine, where a faiss HNSW graph answered in
0.14 ms and usearch's (f16) in 0.41 ms at the same recall (bench/bench_knn.py's data). faiss it is:
the fastest measured, filters applied inside the graph walk (an IDSelector in the search parameters),
the graph serialisable to bytes and its flat vector storage readable in place, and the same library
as the bench's reference. The graph is `IndexHNSWFlat` (M=32, L2) over the normalised vectors: on
unit vectors L2 ranks as cosine does, and faiss builds an L2 graph about twice as fast as an
inner-product one at the same recall; scores are recomputed as dot products from the stored vectors.

The sidecar file. The writer (`maintain`, from `LanceDBIndex.optimize`) keeps one file per table,
`<table>.lance/_mediasearch/ann_clip_vector.npz`: the serialised graph, and for each graph label the
Lance row address and the document id it was built from. It is saved atomically (a temp file, fsync,
rename), so a reader sees the old file or the new one, and a kill -9 mid-save leaves at most a temp
file. Living inside the table's directory, it goes when the table (a generation) is dropped. Remote
(S3) tables get no graph: they keep LanceDB's IVF_FLAT index.

Why row addresses make it safe to read at any version. A Lance row address (fragment id, offset)
names one immutable row: updates delete the old row and append a new one, compaction writes new
fragments, and fragment ids are never reused within a table. So for the table version a reader holds,
a live row whose address is in the graph is exactly the row the graph was built from (the document id
is checked too); graph labels whose row is gone (deleted, replaced, compacted away) are masked out of
the search; live rows the graph lacks (written since it was built) are the delta, searched exactly.
Results are therefore exact in what they may return (live rows matching the filter, true cosine
scores) whatever the age of the file; only recall depends on the graph. When the delta is too large
(a compaction just moved every row) or the file is missing, damaged or from another table, `knn`
answers None and the caller falls back to LanceDB's own search.

The writer matches rows to labels by id and by vector equality rather than by address, so a
compaction (which moves every row) costs a re-read of the vectors, not a rebuild; a rebuild happens
when a quarter of the graph is dead.

Readers hold, per table version, the graph, the delta's vectors and the document fields of every row
(in Arrow, no vectors), so a query's documents are a `take`, and filters are evaluated in memory
with Arrow compute (the same predicates as `lancedb.where_clause`), cached per filter.

Measured (bench/bench_knn.py, `LanceDBIndex.knn` end to end, documents returned, quiet 2-core machine,
load 0-1.9). 100k x 512: p50 0.43 ms unfiltered, recall@10 1.0: 0.98x faiss at the efSearch that
reaches 0.95 (256; faiss's default graph, efConstruction 40), 3.3x faiss at efSearch 64 (recall
0.88). Filtered, p50 and ratio to faiss at recall 0.95: min_width (79% of rows) 0.50 ms, 1.15x; kind
(30%) 0.84 ms, 1.96x; tags (10%, exact subset) 0.89 ms, 0.44x; uri_prefix (5%, exact subset) 0.49 ms
and video_id (0.03%, video index) 0.37 ms, recall 1.0 both, where faiss's filtered graph never
reaches 0.95 (0.94 and 0.35 at efSearch 2048). Build 17 s, sidecar 225 MB. 1M x 512: p50 1.31 ms
unfiltered (efSearch 404), recall@10 0.967; filtered 1.6-2.8 ms at recall 0.967-0.974, video_id
0.37 ms at 1.0. Build: upsert 116 s, optimize 310 s (graph 237 s), sidecar 2.25 GB, reader load 8 s.
With M=16 the same 1M graph levelled off at recall 0.93 (3.3 ms at efSearch 1015).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mediasearch.index.base import IndexFilter


def _faiss() -> Any:
    """faiss, imported where a graph is built, read or searched rather than with this module: a
    process that never meets a local graph (the Lambda reading S3) does not pay its import. Typed
    Any: faiss's own stubs lack most of what is used here (SearchParametersHNSW, get_xb)."""
    import faiss

    return faiss


# faiss parameters: M=32 links per node (64 on the base layer), efConstruction 80, efSearch 64 up to
# EF_SCALE_ROWS nodes. M: at 1M x 512 (`python bench/bench_hnsw_m.py --rows 1000000`: bench_knn's
# vectors and queries, efConstruction 80, one query thread, quiet 2-core machine) M=16 levels off below
# the target, recall@10 0.84 at efSearch 256, 0.93 at 1024 (2.0 ms) and 2048 (4.8 ms), where M=32 gives
# 0.947 at 256 (0.79 ms), 0.962 at 384 (1.0 ms) and 0.972 at 512; its build took 186 s against 168 s
# and its links add 128 bytes a node to the 2 KB of a 512-d vector. At 100k both reach 0.997+ at
# efSearch 128 (M=32 build 13.7 s vs 10.3 s). efConstruction 80, twice faiss's default: at 100k 40
# gave recall@10 0.90 at efSearch 64 and needed efSearch 128 (0.21 ms) for 0.95, where 80 gives 0.985
# at efSearch 64 (0.19 ms), for a build that takes 1.8x as long.
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 64
# A filtered graph search walks disallowed nodes too but collects only allowed ones, so its beam holds
# fewer good candidates: with a fraction s of the nodes allowed, the beam is efSearch / s (213 at 30%:
# recall@10 0.986 at 100k; efSearch / sqrt(s) gave only 0.93 at 10% and 0.84 at 5%).
EF_SEARCH_MAX = 1024
# Past this many nodes the beam grows as (nodes / EF_SCALE_ROWS) ** EF_SCALE_POWER: a bigger graph of
# the same M and efConstruction needs a wider beam for the same recall. 0.8 puts 1M nodes at efSearch
# 404, past the 256 that falls just short of 0.95 and below the 512 where M=32's recall levels off.
EF_SCALE_ROWS = 100_000
EF_SCALE_POWER = 0.8
# Filters allowing at most this many graph rows are searched exactly, over a copy of their vectors
# kept with the filter (20 MB at 10k x 512): the graph with a beam of efSearch / sqrt(share) gave
# recall 0.93 at 10% and 0.84 at 5% of 100k, and faiss's flat search through a bitmap (no copy)
# measured 3-14 ms for 5-10k rows on the loaded 2-core machine, its threads contending. The copy is
# scored in NumPy's single-threaded loop (`_dot`): 1.5 ms end to end for 10k rows at 100k under load,
# where faiss's graph through a bitmap needed efSearch 1024 and 9.9 ms to reach recall 0.95.
SUBSET_MAX_ROWS = 10_000
# Live rows missing from the graph that a reader searches exactly; beyond, the graph is not used
# (LanceDB searches) until the writer's next `optimize` has folded them in.
DELTA_MAX_ROWS = 50_000
# Rows whose vectors a reader compares with the graph's when it loads a file.
SAMPLE_ROWS = 16
# The writer rebuilds instead of adding once this fraction of the graph's labels is dead.
REBUILD_DEAD_FRACTION = 0.25
# Filters whose masks (and subsets, up to 20 MB each) a reader keeps, per table version.
FILTER_CACHE = 16

# Rows whose vectors the writer compares with the graph's at a time.
COMPARE_CHUNK = 65_536
# Sidecar format; a file of another format is ignored (rebuilt by the writer).
FORMAT = 1
SIDECAR_DIR = "_mediasearch"
DEAD = np.uint64(np.iinfo(np.uint64).max)
# Temp files older than this are debris of a killed save.
STALE_TEMP_S = 3600.0

log = logging.getLogger(__name__)

# What reading or writing a sidecar may raise: a damaged file fails in numpy's zip reader, in faiss's
# deserialiser (RuntimeError) or in json; a full disk or a missing folder in the OS.
SIDECAR_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
)
# What `maintain` logs instead of failing the write: the graph is a cache.
MAINTAIN_ERRORS: tuple[type[Exception], ...] = (*SIDECAR_ERRORS, MemoryError)


def sidecar_path(table_uri: str, field: str) -> Path | None:
    """Where the graph of `field` of the table at `table_uri` lives; None where no graph is kept."""
    if "://" in table_uri and not table_uri.startswith("file://"):
        return None
    return Path(table_uri.removeprefix("file://")) / SIDECAR_DIR / f"ann_{field}.npz"


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): inner product is then cosine similarity."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass
class Graph:
    """A graph and, per label, the row it was built from (`DEAD` address and "" id once gone)."""

    index: Any  # faiss.IndexHNSWFlat, inner product
    rowaddr: np.ndarray  # uint64 per label
    ids: np.ndarray  # str per label
    version: int  # the table version the writer last brought it up to
    _view: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def vectors(self) -> np.ndarray:
        """The stored (normalised) vectors, a view of the graph's own storage: no copy."""
        view = self._view
        if view is None or len(view) != self.index.ntotal:  # an add may have moved the storage
            faiss = _faiss()

            storage = faiss.downcast_index(self.index.storage)
            flat = faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.index.d)
            view = self._view = np.asarray(flat).reshape(self.index.ntotal, self.index.d)
        return view


def build(vectors: np.ndarray) -> Any:
    faiss = _faiss()

    # L2 on unit vectors ranks as cosine does; faiss builds an L2 graph about twice as fast as an
    # inner-product one, at the same recall.
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_L2)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(vectors)
    return index


def graph_m(index: Any) -> int:
    """The M an HNSW graph was built with (faiss keeps 2M neighbours on the base layer, M above)."""
    return int(index.hnsw.nb_neighbors(1))


def save(path: Path, graph: Graph) -> None:
    """Write atomically: a reader or a killed writer never meets half a file."""
    faiss = _faiss()

    blob = faiss.serialize_index(graph.index)
    meta = {"format": FORMAT, "version": graph.version, "dim": graph.dim, "digest": _digest(blob)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_debris(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(
                out,
                meta=np.array(json.dumps(meta)),
                graph=blob,
                rowaddr=graph.rowaddr.astype(np.uint64),
                ids=graph.ids.astype(str),
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Graph | None:
    """The graph in `path`, or None when it is missing, damaged or of another format (logged)."""
    faiss = _faiss()

    try:
        # Straight from the file, not through a bytes copy: at 1M x 512 the graph is 2 GB.
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            blob, rowaddr, ids = npz["graph"], npz["rowaddr"], npz["ids"]
        if meta.get("format") != FORMAT:
            return None
        if _digest(blob) != meta["digest"]:
            raise ValueError("digest mismatch")
        index = faiss.deserialize_index(blob)
        if index.ntotal != len(rowaddr) or len(ids) != len(rowaddr) or index.d != meta["dim"]:
            raise ValueError("label arrays do not match the graph")
        return Graph(index=index, rowaddr=rowaddr.astype(np.uint64), ids=ids, version=int(meta["version"]))
    except FileNotFoundError:
        return None
    except SIDECAR_ERRORS as exc:  # json's errors are ValueErrors
        log.warning("ANN sidecar %s is damaged (%s); ignoring it until the writer rebuilds it", path, exc)
        return None


def _digest(blob: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(blob).data, digest_size=16).hexdigest()


def _clear_debris(folder: Path) -> None:
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except OSError:
            pass


def _file_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# -- writer ---------------------------------------------------------------------------------------


def maintain(table: Any, field: str, min_rows: int) -> str:
    """Bring the table's graph up to its current version; returns what was done (for the log/tests).

    Called by `optimize()` after compaction, with the writer lock held. Cheap when the file already
    describes this version; a graph is a cache, so a failure here is logged, never raised.
    """
    path = sidecar_path(table.uri, field)
    if path is None:
        return "remote"
    try:
        return _maintain(table, field, min_rows, path)
    except MAINTAIN_ERRORS as exc:
        log.warning("could not update the ANN graph %s (%s); queries fall back to LanceDB", path, exc)
        return "failed"


def _maintain(table: Any, field: str, min_rows: int, path: Path) -> str:
    version = int(table.version)
    n = int(table.count_rows())
    if n < min_rows:
        path.unlink(missing_ok=True)  # small tables are searched exactly
        return "small"
    old = load(path)
    if old is not None and old.version == version:
        return "current"
    rows = table.search().select(["id", field]).with_row_id(True).limit(None).to_arrow()
    if pc.count_distinct(rows["id"]).as_py() != rows.num_rows:
        return "duplicates"  # optimize repairs them first; do not build from an ambiguous table
    ids = np.asarray(rows["id"].to_numpy(zero_copy_only=False)).astype(str)
    rowaddr = rows["_rowid"].to_numpy().astype(np.uint64)
    column = rows[field].combine_chunks()
    vectors = normalised(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size))
    del rows, column
    # A graph of another M (one built before HNSW_M changed) is rebuilt rather than grown: adds keep
    # the old density. Readers use it meanwhile.
    if old is not None and old.dim == vectors.shape[1] and graph_m(old.index) == HNSW_M:
        updated = _update(old, ids, rowaddr, vectors)
        if updated is not None:
            updated.version = version
            save(path, updated)
            return "updated"
    save(path, Graph(index=build(vectors), rowaddr=rowaddr, ids=ids, version=version))
    return "built"


def _update(old: Graph, ids: np.ndarray, rowaddr: np.ndarray, vectors: np.ndarray) -> Graph | None:
    """The old graph with each row matched to its label (same id, same vector) and the rest added; None
    when too much of it is dead to keep."""
    label_of = {id_: label for label, id_ in enumerate(old.ids.tolist()) if old.rowaddr[label] != DEAD}
    labels = np.fromiter((label_of.get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
    known = labels >= 0
    stored = old.vectors()
    same = np.zeros(len(ids), dtype=bool)
    for start in range(0, len(ids), COMPARE_CHUNK):  # in chunks: a whole comparison is n x dim bytes
        part = slice(start, start + COMPARE_CHUNK)
        ok = known[part]
        chunk = np.zeros(int(ok.sum()), dtype=bool)
        if ok.any():
            chunk = np.all(stored[labels[part][ok]] == vectors[part][ok], axis=1)
        same[part][ok] = chunk
    new = np.flatnonzero(~same)
    dead = old.index.ntotal - int(same.sum())
    if dead > REBUILD_DEAD_FRACTION * (old.index.ntotal + len(new)):
        return None
    start = old.index.ntotal
    if len(new):
        old.index.add(vectors[new])
    total = old.index.ntotal
    new_rowaddr = np.full(total, DEAD, dtype=np.uint64)
    new_ids = np.full(
        total, "", dtype=ids.dtype if ids.dtype.itemsize >= old.ids.dtype.itemsize else old.ids.dtype
    )
    new_rowaddr[labels[same]] = rowaddr[same]
    new_ids[labels[same]] = ids[same]
    new_rowaddr[start:] = rowaddr[new]
    new_ids[start:] = ids[new]
    return Graph(index=old.index, rowaddr=new_rowaddr, ids=new_ids, version=old.version)


# -- reader ---------------------------------------------------------------------------------------


@dataclass
class _Allowed:
    """What a filter allows in one snapshot."""

    labels: np.ndarray  # graph labels, live and matching
    delta: np.ndarray  # positions into the snapshot's delta rows
    bitmap: np.ndarray | None = None  # faiss IDSelectorBitmap's bits (kept alive with the selector)
    selector: Any = None
    subset: np.ndarray | None = None  # the allowed labels' vectors, when few


@dataclass
class Snapshot:
    """One table version as the graph sees it."""

    version: int  # the table version it describes
    # The sidecar file it was loaded from (inode, size, mtime): a dropped and re-created table starts
    # its versions again, but its file (deleted with the old table) is another one.
    file_key: tuple[int, int, int] | None
    graph: Graph
    fields: pa.Table  # every live row's document fields, no vectors
    row_of_label: np.ndarray  # int64: the row (position in fields) of each graph label, -1 when dead
    all_live: bool  # no label is dead: an unfiltered search needs no selector
    delta_rows: np.ndarray  # positions in fields of rows the graph lacks
    delta_vectors: np.ndarray  # their normalised vectors
    # Rows per video id and the graph label of each row (-1: a delta row), built on the first query
    # naming a video (`_video_allowed`).
    videos: dict[str, np.ndarray] | None = None
    label_of_row: np.ndarray | None = None
    filters: OrderedDict[IndexFilter | None, _Allowed] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class AnnReader:
    """A process's view of one table's graph, rebuilt when the table version or the file changes."""

    def __init__(
        self, table_uri: str, field: str, columns: list[str], min_rows: int, refresh_s: float
    ) -> None:
        self.path = sidecar_path(table_uri, field)
        self.field = field
        self.columns = columns
        self.min_rows = min_rows
        self.refresh_s = refresh_s
        self._snapshot: Snapshot | None = None
        # When the table version and the file were last looked at (monotonic seconds).
        self._checked: float | None = None
        # (table version, file key) last found unusable: not tried again until either changes.
        self._unusable: tuple[int, tuple[int, int, int] | None] | None = None
        self._lock = threading.Lock()

    def snapshot(self, table: Any) -> Snapshot | None:
        """The snapshot for the table's current version, or None where the graph cannot answer.

        The table version and the file are looked at once per `refresh_s` (every call when 0): each
        look is a round trip into LanceDB, several times the cost of the search itself. LanceDB's
        handle re-reads the version at most that often too, so writes still show within `refresh_s`.
        """
        if self.path is None:
            return None
        now = time.monotonic()
        if self._checked is not None and now - self._checked < self.refresh_s:
            return self._snapshot
        version, file_key = int(table.version), _file_key(self.path)
        with self._lock:
            snap = self._snapshot
            if snap is None or snap.version != version or snap.file_key != file_key:
                if self._unusable == (version, file_key) or file_key is None:
                    snap = None
                else:
                    snap = self._load(table, version, file_key)
                    self._unusable = None if snap is not None else (version, file_key)
                self._snapshot = snap
            self._checked = now
            return snap

    def _load(self, table: Any, version: int, file_key: tuple[int, int, int] | None) -> Snapshot | None:
        assert self.path is not None
        old = self._snapshot
        # The same file as the last snapshot: keep its graph, only the table moved on.
        graph = old.graph if old is not None and old.file_key == file_key else load(self.path)
        if graph is None:
            return None
        fields = table.search().select(self.columns).with_row_id(True).limit(None).to_arrow()
        if fields.num_rows < self.min_rows or pc.count_distinct(fields["id"]).as_py() != fields.num_rows:
            return None
        rowaddr = fields["_rowid"].to_numpy().astype(np.uint64)
        fields = fields.drop_columns(["_rowid"]).combine_chunks()
        order = np.argsort(graph.rowaddr, kind="stable")
        sorted_addr = graph.rowaddr[order]
        pos = np.minimum(np.searchsorted(sorted_addr, rowaddr), len(sorted_addr) - 1)
        matched = sorted_addr[pos] == rowaddr
        labels = order[pos[matched]]
        rows = np.flatnonzero(matched)
        same_ids = pc.all(pc.equal(pa.array(graph.ids[labels]), fields["id"].take(pa.array(rows)))).as_py()
        if same_ids is False:
            log.warning("ANN sidecar %s does not describe this table (ids differ); not using it", self.path)
            return None
        # Ids can coincide between tables (a file copied from a table with the same ids and layout):
        # a few stored vectors must match the table's too.
        sample = np.linspace(0, len(rows) - 1, min(len(rows), SAMPLE_ROWS)).astype(np.int64)
        stored = self._vectors(table, rowaddr[rows[sample]], graph.dim)
        if stored is None or not np.allclose(stored, graph.vectors()[labels[sample]], atol=1e-6):
            log.warning(
                "ANN sidecar %s does not describe this table (vectors differ); not using it", self.path
            )
            return None
        delta_rows = np.flatnonzero(~matched)
        if len(delta_rows) > DELTA_MAX_ROWS:
            log.info("%d rows are not in the ANN graph yet; LanceDB searches until optimize", len(delta_rows))
            return None
        delta_vectors = self._vectors(table, rowaddr[delta_rows], graph.dim)
        if delta_vectors is None:
            return None
        row_of_label = np.full(graph.index.ntotal, -1, dtype=np.int64)
        row_of_label[labels] = rows
        all_live = bool(len(labels) == graph.index.ntotal)
        return Snapshot(version, file_key, graph, fields, row_of_label, all_live, delta_rows, delta_vectors)

    def _vectors(self, table: Any, rowaddr: np.ndarray, dim: int) -> np.ndarray | None:
        if not len(rowaddr):
            return np.zeros((0, dim), dtype=np.float32)
        got = table.take_row_ids(rowaddr.tolist()).select([self.field]).with_row_id().to_arrow()
        if got.num_rows != len(rowaddr):
            return None  # the version moved under us; the next query tries again
        column = got[self.field].combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
        if vectors.shape[1] != dim:
            return None
        # take_row_ids returns rows in address order, not in the order asked.
        where = {int(a): i for i, a in enumerate(got["_rowid"].to_numpy())}
        return normalised(vectors[[where[int(a)] for a in rowaddr]])

    # -- search -----------------------------------------------------------------------------------

    def search(
        self, snap: Snapshot, vector: np.ndarray, k: int, flt: IndexFilter | None
    ) -> list[tuple[float, dict[str, Any]]]:
        """The k best live rows matching `flt`: (cosine similarity, document fields), best first."""
        query = normalised(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        allowed = self._allowed(snap, flt)
        scores: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        if allowed is None or len(allowed.labels):
            labels, sims = self._graph_part(snap, allowed, query, k)
            scores.append(sims)
            rows.append(snap.row_of_label[labels])
        delta = snap.delta_rows if allowed is None else snap.delta_rows[allowed.delta]
        if len(delta):
            dvec = snap.delta_vectors if allowed is None else snap.delta_vectors[allowed.delta]
            sims = _dot(dvec, query[0])
            top = _top(sims, k)
            scores.append(sims[top])
            rows.append(delta[top])
        if not scores:
            return []
        all_scores, all_rows = np.concatenate(scores), np.concatenate(rows)
        best = np.argsort(-all_scores, kind="stable")[:k]
        docs = snap.fields.take(pa.array(all_rows[best])).to_pylist()
        # Rounding can take a normalised dot product a hair past 1.
        return [(min(1.0, max(-1.0, s)), d) for s, d in zip(all_scores[best].tolist(), docs, strict=True)]

    def _graph_part(
        self, snap: Snapshot, allowed: _Allowed | None, query: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()

        graph = snap.graph
        if allowed is not None and allowed.subset is not None:
            labels = allowed.labels[_top(_dot(allowed.subset, query[0]), k)]
        else:
            ef = max(ef_search(graph.index.ntotal), k)
            params = faiss.SearchParametersHNSW(efSearch=ef)
            if allowed is not None:
                # faiss walks disallowed nodes too but collects only allowed ones; a larger beam makes
                # up for the candidates a sparse filter leaves out of it.
                fraction = len(allowed.labels) / max(1, graph.index.ntotal)
                params.efSearch = min(EF_SEARCH_MAX, math.ceil(ef / fraction))
                params.sel = allowed.selector
            _, found = graph.index.search(query, k, params=params)
            labels = found[0][found[0] >= 0]
        # Scores from the stored vectors themselves: the cosine similarity, not 1 - L2^2 / 2 rounded.
        return labels, _dot(graph.vectors()[labels], query[0])

    def _allowed(self, snap: Snapshot, flt: IndexFilter | None) -> _Allowed | None:
        """The live rows `flt` allows (None: every row, and every graph label is live)."""
        if flt is None or flt.is_empty():
            if snap.all_live:
                return None
            flt = IndexFilter()  # no filter, but the dead labels must be skipped
        with snap.lock:
            cached = snap.filters.get(flt)
            if cached is not None:
                snap.filters.move_to_end(flt)
                return cached
        faiss = _faiss()

        if flt.video_id is not None:
            allowed = _video_allowed(snap, flt)
        else:
            mask = filter_mask(snap.fields, flt)
            live = snap.row_of_label >= 0
            label_ok = np.zeros(len(snap.row_of_label), dtype=bool)
            label_ok[live] = mask[snap.row_of_label[live]]
            allowed = _Allowed(labels=np.flatnonzero(label_ok), delta=np.flatnonzero(mask[snap.delta_rows]))
        labels = allowed.labels
        if len(labels) <= SUBSET_MAX_ROWS:
            allowed.subset = np.ascontiguousarray(snap.graph.vectors()[labels])
        else:
            label_ok = np.zeros(len(snap.row_of_label), dtype=bool)
            label_ok[labels] = True
            allowed.bitmap = np.packbits(label_ok, bitorder="little")
            allowed.selector = faiss.IDSelectorBitmap(snap.graph.index.ntotal, faiss.swig_ptr(allowed.bitmap))
        with snap.lock:
            snap.filters[flt] = allowed
            while len(snap.filters) > FILTER_CACHE:
                snap.filters.popitem(last=False)
        return allowed


def ef_search(nodes: int) -> int:
    """The unfiltered beam for a graph of `nodes` nodes (EF_SCALE_ROWS)."""
    return min(
        EF_SEARCH_MAX, max(EF_SEARCH, math.ceil(EF_SEARCH * (nodes / EF_SCALE_ROWS) ** EF_SCALE_POWER))
    )


def _video_allowed(snap: Snapshot, flt: IndexFilter) -> _Allowed:
    """What a filter naming a video allows, found among that video's rows only: such a filter is
    rarely cached (each query tends to name another video), and a mask over every row per query made
    video_id queries 3.4x the unfiltered ones at 100k (1.67 ms against 0.49)."""
    assert flt.video_id is not None
    with snap.lock:
        if snap.videos is None or snap.label_of_row is None:
            snap.videos = _video_rows(snap.fields)
            # Rows the graph holds map to their labels; the others are delta rows.
            label_of_row = np.full(snap.fields.num_rows, -1, dtype=np.int64)
            live = np.flatnonzero(snap.row_of_label >= 0)
            label_of_row[snap.row_of_label[live]] = live
            snap.label_of_row = label_of_row
        rows = snap.videos.get(flt.video_id, np.zeros(0, dtype=np.int64))
        label_of_row = snap.label_of_row
    if len(rows):
        rows = rows[filter_mask(snap.fields.take(pa.array(rows)), flt)]
    labels = label_of_row[rows]
    delta = np.searchsorted(snap.delta_rows, rows[labels < 0])
    return _Allowed(labels=np.sort(labels[labels >= 0]), delta=np.sort(delta))


def _video_rows(fields: pa.Table) -> dict[str, np.ndarray]:
    """Each video id's rows (positions in `fields`), ascending."""
    encoded = pc.dictionary_encode(fields["video_id"]).combine_chunks()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    names = encoded.dictionary.to_pylist()
    return {name: order[starts[i] : starts[i + 1]] for i, name in enumerate(names)}


def _dot(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`vectors @ query` in NumPy's own single-threaded loop: OpenBLAS's gemv splits 10k x 512 across
    threads, and on the loaded 2-core machine that measured 12 ms where einsum took 0.6 ms."""
    return np.einsum("ij,j->i", vectors, query)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (a partition, then a sort of those k only)."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def filter_mask(fields: pa.Table, flt: IndexFilter) -> np.ndarray:
    """Which rows match `flt`: the predicates of `lancedb.where_clause`, in Arrow compute (a null
    compares false, as in SQL)."""
    n = fields.num_rows
    conditions: list[Callable[[], Any]] = []
    if flt.kinds:
        conditions.append(lambda: pc.is_in(fields["kind"], pa.array([k.value for k in flt.kinds])))
    if flt.video_id is not None:
        conditions.append(lambda: pc.equal(fields["video_id"], flt.video_id))
    if flt.exclude_video_id is not None:
        conditions.append(
            lambda: pc.or_kleene(
                pc.is_null(fields["video_id"]), pc.not_equal(fields["video_id"], flt.exclude_video_id)
            )
        )
    if flt.uri_prefix is not None:
        conditions.append(lambda: pc.starts_with(fields["uri"], pattern=flt.uri_prefix))
    if flt.min_width is not None:
        conditions.append(lambda: pc.greater_equal(fields["width"], int(flt.min_width or 0)))
    if flt.min_height is not None:
        conditions.append(lambda: pc.greater_equal(fields["height"], int(flt.min_height or 0)))
    conditions.extend(photo_conditions(fields, flt))
    mask = np.ones(n, dtype=bool)
    for condition in conditions:
        mask &= pc.fill_null(condition(), False).to_numpy(zero_copy_only=False)
    if flt.tags:
        tags = fields["tags"].combine_chunks()
        flat, parents = pc.list_flatten(tags), pc.list_parent_indices(tags).to_numpy(zero_copy_only=False)
        for tag in flt.tags:
            has = np.zeros(n, dtype=bool)
            hit = pc.fill_null(pc.equal(flat, tag), False).to_numpy(zero_copy_only=False)
            has[parents[hit]] = True
            mask &= has
    return mask


def photo_conditions(fields: pa.Table, flt: IndexFilter) -> list[Callable[[], Any]]:
    """The EXIF filters as `lancedb.photo_predicates` writes them in SQL: a taken-at range, a camera, a
    GPS box that may cross the antimeridian. A filter the graph path ignored would return documents
    it excludes, so every `IndexFilter` field has its condition here (a test holds the two together)."""
    conditions: list[Callable[[], Any]] = []
    if flt.taken_after is not None:
        after = pa.scalar(flt.taken_after, type=fields.schema.field("taken_at").type)
        conditions.append(lambda: pc.greater_equal(fields["taken_at"], after))
    if flt.taken_before is not None:
        before = pa.scalar(flt.taken_before, type=fields.schema.field("taken_at").type)
        conditions.append(lambda: pc.less(fields["taken_at"], before))
    if flt.camera is not None:
        conditions.append(lambda: pc.equal(fields["camera"], flt.camera))
    if flt.bbox is not None:
        min_lat, min_lon, max_lat, max_lon = (float(v) for v in flt.bbox)
        lat, lon = fields["gps_lat"], fields["gps_lon"]
        conditions.append(lambda: pc.and_(pc.greater_equal(lat, min_lat), pc.less_equal(lat, max_lat)))
        if min_lon <= max_lon:
            conditions.append(lambda: pc.and_(pc.greater_equal(lon, min_lon), pc.less_equal(lon, max_lon)))
        else:  # across the antimeridian
            conditions.append(lambda: pc.or_(pc.greater_equal(lon, min_lon), pc.less_equal(lon, max_lon)))
    return conditions
