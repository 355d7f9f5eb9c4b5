"""OpenSearch k-NN backend: one index per collection, faiss HNSW over L2-normalised vectors.

The request bodies are built by the module-level pure functions below so tests can compare them with
the documented formats. Pages relied on (OpenSearch 2.11+, checked against the 2.19 docs):

- knn_vector mapping and ``index.knn``:
  https://docs.opensearch.org/latest/mappings/supported-field-types/knn-vector/
- faiss ``hnsw`` method, ``space_type``, ``parameters.m`` / ``ef_construction``:
  https://docs.opensearch.org/latest/mappings/supported-field-types/knn-methods-engines/
- how ``innerproduct`` distances become ``_score`` (see ``cosine_from_score``):
  https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/
- ``filter`` inside the ``knn`` clause (faiss efficient filtering, 2.9+):
  https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
- bulk, multi-get, count and delete-by-query request/response shapes:
  https://docs.opensearch.org/latest/api-reference/document-apis/bulk/ ,
  https://docs.opensearch.org/latest/api-reference/document-apis/multi-get/ ,
  https://docs.opensearch.org/latest/api-reference/search-apis/count/ ,
  https://docs.opensearch.org/latest/api-reference/document-apis/delete-by-query/
- SigV4 with opensearch-py: https://github.com/opensearch-project/opensearch-py/blob/main/guides/auth.md
- binary codes (MEDIASEARCH_VECTOR_CODES): see ``ON_DISK_32X`` and ``knn_query``'s ``oversample``;
  opensearch-project/k-NN at tag 2.19.0.0, files named there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from opensearchpy import OpenSearch, RequestsAWSV4SignerAuth, RequestsHttpConnection, helpers
from opensearchpy.exceptions import NotFoundError, OpenSearchException, RequestError

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
from mediasearch.index.codes import CodesConfig
from mediasearch.index.schema import FIELDS, VECTOR_FIELDS, opensearch_properties

# Left out of every _source that is read without vectors (hits, get_many).
VECTOR_NAMES: tuple[str, ...] = tuple(f.name for f in VECTOR_FIELDS)

# HNSW graph parameters. The documented faiss defaults are m=16, ef_construction=100; a slightly
# wider construction beam buys recall for a one-off cost at load time. m=32 as in the embedded graph
# (mediasearch.index.ann): on 1M x 512 clustered vectors faiss's m=16 graph levelled off at recall@10
# 0.93 whatever the beam, m=32 reached 0.96-0.97 (`bench/bench_hnsw_m.py --rows 1000000`); a segment
# merged to that size meets the same. Its cost in native memory, by the plugin's sizing rule
# 1.1 x (4 x dimension + 8 x m) bytes a vector: 2,534 instead of 2,394 bytes at 512-d (+6%). An index
# keeps the m it was created with (mappings are immutable); `mediasearch reindex` builds a new one.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128

# Bulk chunks stay under the 10 MiB HTTP payload limit of the smallest Amazon OpenSearch Service
# instance types: a 512-d vector is ~10 KB of JSON, so 500 docs with caption vectors is ~8 MB.
BULK_CHUNK_DOCS = 500
BULK_CHUNK_BYTES = 8 * 1024 * 1024
# A throttled cluster answers 429, for a whole bulk request or per document (its write queue is
# full). opensearch-py's streaming_bulk retries both, waiting initial_backoff * 2**n seconds (capped
# at max_backoff), but per-document 429s only with raise_on_error=False (helpers/actions.py: with it
# True the first error ends the chunk in a BulkIndexError); parallel_bulk retries neither. 2+4+8+16+
# 32+60 s rides out about two minutes of throttling before a document is reported as failed.
BULK_RETRIES = 6
BULK_BACKOFF_S = 2.0
BULK_MAX_BACKOFF_S = 60.0
# The k-NN plugin refuses a `knn` query with k outside (0, 10000] (KNNQueryBuilder.K_MAX); the same
# number is the default index.max_result_window, which bounds `size`.
KNN_K_MAX = 10_000
# Multi-get responses with vectors carry whole vectors; batches keep each response a few MB.
MGET_CHUNK_IDS = 500
# Documents per page of `scan` (a few fields each; 10,000 is the cluster's default result window).
SCAN_PAGE = 5000


def cosine_from_score(score: float) -> float:
    """Undo OpenSearch's faiss `innerproduct` scoring so the result is the inner product (== cosine).

    Per the Spaces page, faiss uses d = -ip and scores 1/(1+d) when d >= 0, -d+1 when d < 0; i.e.
    score = 1 + ip for ip >= 0 and 1/(1 - ip) for ip < 0. Both branches give 1 at ip == 0.
    """
    if score <= 0:
        raise ValueError(f"an innerproduct k-NN score is always positive, got {score}")
    ip = score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score
    # float32 rounding inside the engine can overshoot the unit interval by an ulp or two.
    return min(1.0, max(-1.0, ip))


def _knn_vector(dimension: int) -> dict[str, Any]:
    return {
        "type": "knn_vector",
        "dimension": dimension,
        "method": {
            "name": "hnsw",
            "engine": "faiss",
            # Vectors are L2-normalised, so inner product is cosine; faiss `cosinesimil` needs 2.19.
            "space_type": "innerproduct",
            "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
        },
    }


# Binary codes on OpenSearch: the k-NN plugin's disk-based mode rather than a second `binary` /
# `hamming` knn_vector field. With `mode: on_disk` the faiss HNSW graph holds 1-bit codes (32x is
# that mode's default compression; FaissMethodResolver.getDefaultCompressionLevel and resolveEncoder,
# which adds the `binary` QFrameBitEncoder with 1 bit per float), while the full-precision vectors
# stay on disk for the rescoring pass: the same codes-then-exact-re-rank as on LanceDB, done by the
# cluster, with scores on the full vectors (so `cosine_from_score` still holds). A separate binary
# field would need the float field too, and a client-side re-rank fetching each candidate's vector
# as JSON. The plugin's quantiser thresholds each dimension at its mean over the segment
# (quantization/quantizer/OneBitScalarQuantizer.java) instead of rotating first, so the rotation
# setting (random / itq) only applies on LanceDB.
ON_DISK_32X: dict[str, Any] = {"mode": "on_disk", "compression_level": "32x"}


def knn_vector_with_codes(dimension: int) -> dict[str, Any]:
    """The clip_vector mapping with binary codes: the usual method, in on_disk mode at 32x."""
    return {**_knn_vector(dimension), **ON_DISK_32X}


def index_body(spec: IndexSpec, codes: CodesConfig | None = None) -> dict[str, Any]:
    """The create-index request: k-NN enabled, one property per IndexDocument field, derived from the
    record by mediasearch.index.schema. With `codes`, clip_vector is kept as 1-bit codes (on_disk)."""
    properties = opensearch_properties(spec, _knn_vector)
    if codes is not None:
        properties[VectorField.CLIP.value] = knn_vector_with_codes(spec.clip_dim)
    return {
        "settings": {"index": {"knn": True}},
        "mappings": {
            # A document field this index lacks (one added to IndexDocument after the index was
            # created) fails the upsert loudly instead of being mapped dynamically, e.g. as `text`
            # where a filter needs `keyword`.
            "dynamic": "strict",
            "properties": properties,
        },
    }


def filter_clause(filter: IndexFilter | None) -> dict[str, Any] | None:
    """A bool query in filter context (no scoring) for `filter`; None when it restricts nothing."""
    if filter is None or filter.is_empty():
        return None
    must: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    if filter.kinds:
        must.append({"terms": {"kind": [str(kind) for kind in filter.kinds]}})
    if filter.video_id is not None:
        must.append({"term": {"video_id": filter.video_id}})
    if filter.exclude_video_id is not None:
        must_not.append({"term": {"video_id": filter.exclude_video_id}})
    # One term per tag: a document must carry every tag asked for, not any of them.
    must.extend({"term": {"tags": tag}} for tag in filter.tags)
    if filter.uri_prefix is not None:
        must.append({"prefix": {"uri": filter.uri_prefix}})
    if filter.min_width is not None:
        must.append({"range": {"width": {"gte": filter.min_width}}})
    if filter.min_height is not None:
        must.append({"range": {"height": {"gte": filter.min_height}}})
    must.extend(photo_clauses(filter))
    clause: dict[str, Any] = {}
    if must:
        clause["filter"] = must
    if must_not:
        clause["must_not"] = must_not
    return {"bool": clause}


def _iso(when: datetime) -> str:
    return (when.astimezone(UTC) if when.tzinfo is not None else when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def photo_clauses(filter: IndexFilter) -> list[dict[str, Any]]:
    """The EXIF filters as filter-context clauses.

    Times: a `range` on the `date` field with ISO 8601 bounds, which the default date format
    (strict_date_optional_time) parses (OpenSearch 2.19 docs: query-dsl/term/range, "Format" and
    field-types/supported-field-types/date). The GPS box: `range` on the two float fields, the same
    predicate LanceDB evaluates (a `geo_point` would need a composite field the derived schema and
    LanceDB do not have); a box crossing the antimeridian is a `should` of the two longitude ranges
    with `minimum_should_match: 1` (query-dsl/compound/bool).
    """
    clauses: list[dict[str, Any]] = []
    if filter.taken_after is not None or filter.taken_before is not None:
        bounds: dict[str, str] = {}
        if filter.taken_after is not None:
            bounds["gte"] = _iso(filter.taken_after)
        if filter.taken_before is not None:
            bounds["lt"] = _iso(filter.taken_before)
        clauses.append({"range": {"taken_at": bounds}})
    if filter.camera is not None:
        clauses.append({"term": {"camera": filter.camera}})
    if filter.bbox is not None:
        min_lat, min_lon, max_lat, max_lon = (float(v) for v in filter.bbox)
        clauses.append({"range": {"gps_lat": {"gte": min_lat, "lte": max_lat}}})
        if min_lon <= max_lon:
            clauses.append({"range": {"gps_lon": {"gte": min_lon, "lte": max_lon}}})
        else:
            clauses.append(
                {
                    "bool": {
                        "should": [
                            {"range": {"gps_lon": {"gte": min_lon}}},
                            {"range": {"gps_lon": {"lte": max_lon}}},
                        ],
                        "minimum_should_match": 1,
                    }
                }
            )
    return clauses


def knn_query(
    vector: np.ndarray,
    k: int,
    filter: IndexFilter | None = None,
    field: VectorField = VectorField.CLIP,
    oversample: int | None = None,
) -> dict[str, Any]:
    """The _search body: approximate k-NN on `field`, efficiently filtered, vectors left out of hits.

    `oversample` (binary codes on clip_vector) adds `rescore: {oversample_factor}`: the first pass
    over the codes returns min(10000, max(100, ceil(k x factor))) candidates per shard, which are
    re-scored on the full-precision vectors (query/rescore/RescoreContext.getFirstPassK; the factor
    must lie in [1, 100], query/parser/RescoreParser.validate).
    """
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"a query vector must be a non-empty 1-D array, got shape {arr.shape}")
    if not 1 <= k <= KNN_K_MAX:
        raise ValueError(f"k must be in [1, {KNN_K_MAX}], got {k}")
    knn: dict[str, Any] = {"vector": arr.tolist(), "k": k}
    clause = filter_clause(filter)
    if clause is not None:
        # Inside `knn` (not a bool post-filter) so faiss returns k hits that all match.
        knn["filter"] = clause
    if oversample is not None and field is VectorField.CLIP:
        knn["rescore"] = {"oversample_factor": float(oversample)}
    return {
        "size": k,
        "_source": {"excludes": list(VECTOR_NAMES)},
        "query": {"knn": {str(field): knn}},
    }


def hybrid_query(
    text: str,
    vector: np.ndarray,
    k: int,
    filter: IndexFilter | None = None,
    weights: HybridWeights = HybridWeights(),
    oversample: int | None = None,
) -> dict[str, Any]:
    """The _search body of a hybrid query: BM25 over caption and tags, and CLIP k-NN, fused by a
    temporary search pipeline carried in the body itself.

    https://docs.opensearch.org/latest/query-dsl/compound/hybrid/ — the filter goes into each
    subquery: the hybrid-level `filter` only exists from neural-search 3.0 (2.19's
    HybridQueryBuilder.fromXContent refuses it). The subquery order is the order of the weights.

    The pipeline goes in the body (`search_pipeline` as an object: SearchSourceBuilder, since 2.8; on
    by default) rather than as a named pipeline PUT once per weight pair: nothing accumulates in
    cluster state from request input, and the caller needs no write permission on the domain.
    """
    knn_body = knn_query(vector, k, filter, oversample=oversample)
    keyword: dict[str, Any] = {"multi_match": {"query": text, "fields": ["caption", "tags"]}}
    clause = filter_clause(filter)
    if clause is not None:
        keyword = {"bool": {"must": [keyword], **clause["bool"]}}
    return {
        "size": k,
        "_source": knn_body["_source"],
        "query": {"hybrid": {"queries": [keyword, knn_body["query"]]}},
        "search_pipeline": search_pipeline_body(weights),
    }


def search_pipeline_body(weights: HybridWeights) -> dict[str, Any]:
    """Min-max normalisation then the weighted arithmetic mean, the combination HybridWeights describes.

    https://docs.opensearch.org/latest/search-plugins/search-pipelines/normalization-processor/ —
    the weights must each lie in [0, 1] and sum to 1 +- 0.01 (ScoreCombinationUtil.validateWeights),
    which HybridWeights guarantees by keeping its pair normalised; they are sent as JSON floats
    (`1.0`, not `1`), as the processor reads them as a list of doubles.
    """
    return {
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": [float(weights.keyword), float(weights.vector)]},
                    },
                }
            }
        ],
    }


def _source(doc: IndexDocument) -> dict[str, Any]:
    # mode="json" turns vectors into plain lists and enums into strings; absent values (notably a
    # missing caption_vector, which knn_vector cannot hold as null) are left out.
    return doc.model_dump(mode="json", exclude_none=True)


def bulk_actions(collection: str, docs: Iterable[IndexDocument]) -> Iterator[dict[str, Any]]:
    """opensearch-py bulk helper actions: `index` (create or replace) keyed by the document id."""
    for doc in docs:
        yield {"_op_type": "index", "_index": collection, "_id": doc.id, "_source": _source(doc)}


def _delete_actions(collection: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    for doc_id in ids:
        yield {"_op_type": "delete", "_index": collection, "_id": doc_id}


def _query(filter: IndexFilter | None) -> dict[str, Any]:
    return filter_clause(filter) or {"match_all": {}}


def scan_body(filter: IndexFilter, columns: Sequence[str], size: int, after: str | None) -> dict[str, Any]:
    """One page of `scan`: documents matching `filter` in id order, after the id `after`.

    `search_after` on the unique `id` keyword rather than a scroll: no server-side context to keep
    alive or clear, and a page that fails can simply be asked again.
    """
    body: dict[str, Any] = {
        "query": _query(filter),
        "size": size,
        "sort": [{"id": "asc"}],
        "_source": list(columns),
        "track_total_hits": False,
    }
    if after is not None:
        body["search_after"] = [after]
    return body


def _chunks(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def build_client(
    url: str, *, aws_region: str | None = None, username: str | None = None, password: str = ""
) -> OpenSearch:
    """A client for the cluster at `url`: requests signed with SigV4 for `aws_region` (Amazon
    OpenSearch Service), or basic auth when a `username` is given, or neither (a local cluster).

    Which settings give these is `mediasearch.backends`' business.
    """
    if aws_region and username:
        raise ValueError("give aws_region (SigV4) or username (basic auth), not both")
    kwargs: dict[str, Any] = {"timeout": 30, "max_retries": 3, "retry_on_timeout": True}
    if aws_region:
        import boto3  # only AWS deployments pay for importing boto3 here

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ValueError(f"signing for {aws_region} needs AWS credentials, and boto3 found none")
        # The requests-based signer pairs with RequestsHttpConnection (opensearch-py guides/auth.md);
        # AWSV4SignerAuth is the deprecated alias of the same class.
        kwargs["http_auth"] = RequestsAWSV4SignerAuth(credentials, aws_region, "es")
        kwargs["connection_class"] = RequestsHttpConnection
    elif username:
        kwargs["http_auth"] = (username, password)
    return OpenSearch(hosts=[url], **kwargs)


class OpenSearchIndex(VectorIndex):
    """A collection stored as one OpenSearch index of the same name.

    Freshness: every request goes to the cluster, so a running server (or a warm Lambda) sees
    another process's writes as soon as the index refreshes: within its `refresh_interval` (1 s by
    default), and at once after `upsert` and `delete`, which refresh when they finish.
    """

    def __init__(
        self,
        client: OpenSearch,
        collection: str,
        *,
        bulk_retries: int = BULK_RETRIES,
        bulk_backoff_s: float = BULK_BACKOFF_S,
        codes: CodesConfig | None = None,
    ) -> None:
        self.client = client
        # Binary codes: indices this creates map clip_vector on_disk (32x), and queries rescore.
        self.codes = codes
        self.collection = collection
        self.bulk_retries = bulk_retries
        self.bulk_backoff_s = bulk_backoff_s
        # Set once the index is known to exist, so writes can refuse to auto-create an index with a
        # dynamic (non-k-NN) mapping without asking the cluster before every batch.
        self._exists = False

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except OpenSearchException as e:
            raise IndexError_(f"OpenSearch {operation} on collection {self.collection!r} failed: {e}") from e

    @staticmethod
    def _unless_missing(call: Callable[..., Any], **kwargs: Any) -> Any:
        """`call(**kwargs)`, or None when the collection's index does not exist: reading a collection
        that was never created finds nothing, as it does with the LanceDB backend."""
        try:
            return call(**kwargs)
        except NotFoundError as e:
            if e.error == "index_not_found_exception":
                return None
            raise

    def _require_index(self) -> bool:
        if not self._exists:
            self._exists = bool(self.client.indices.exists(index=self.collection))
        return self._exists

    def create(self, spec: IndexSpec) -> None:
        with self._errors("create"):
            if not self.client.indices.exists(index=self.collection):
                try:
                    self.client.indices.create(index=self.collection, body=index_body(spec, self.codes))
                    self._exists = True
                    return
                except RequestError as e:
                    # Another process won the race; fall through and check it made the same index.
                    if e.error != "resource_already_exists_exception":
                        raise
            self._check_mapping(spec)
            self._exists = True

    def _check_mapping(self, spec: IndexSpec) -> None:
        """Refuse an existing index that cannot hold this spec's documents."""
        response = self.client.indices.get_mapping(index=self.collection)
        # Keyed by the concrete index name, which differs from the collection when that is an alias.
        properties = next(iter(response.values()))["mappings"].get("properties", {})
        missing = [f.name for f in FIELDS if f.name not in properties]
        if missing:
            # Its strict mapping would refuse every document carrying these fields.
            raise IndexError_(
                f"collection {self.collection!r} already exists without {', '.join(missing)} in its "
                "mapping: it was created before these fields existed; re-ingest into a new collection"
            )
        for field in VECTOR_NAMES:
            dim = spec.dim(VectorField(field))
            found = properties[field].get("dimension")
            if found != dim:
                raise IndexError_(
                    f"collection {self.collection!r} already exists with {field} dimension {found}, "
                    f"but {dim} was asked for: use another collection or delete this one"
                )

    def exists(self) -> bool:
        with self._errors("exists"):
            self._exists = bool(self.client.indices.exists(index=self.collection))
            return self._exists

    def upsert(self, docs: Sequence[IndexDocument]) -> int:
        if not docs:
            return 0
        # The last write of an id wins: one version per id, so a retried chunk can never put an older
        # version back after a newer one.
        unique = list({doc.id: doc for doc in docs}.values())
        with self._errors("upsert"):
            if not self._require_index():
                raise IndexError_(f"collection {self.collection!r} does not exist: call create() first")
            written = 0
            failed: dict[str, str] = {}
            for ok, item in self._bulk(
                bulk_actions(self.collection, unique), BULK_CHUNK_DOCS, BULK_CHUNK_BYTES
            ):
                result = item["index"]
                if ok:
                    written += 1
                else:
                    failed[str(result.get("_id"))] = _reason(result)
            # One refresh after the whole load rather than one per chunk: writes are visible on return.
            self.client.indices.refresh(index=self.collection)
        if failed:
            raise IndexError_(_failure_message("upsert", self.collection, failed))
        return written

    def _bulk(
        self, actions: Iterable[dict[str, Any]], chunk_docs: int, chunk_bytes: int
    ) -> Iterator[tuple[bool, dict[str, Any]]]:
        """(ok, item) per action, 429s retried with backoff (see BULK_RETRIES); what still failed,
        a 429 after the last retry included, comes back not ok for the caller to report by id."""
        return helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=chunk_docs,
            max_chunk_bytes=chunk_bytes,
            raise_on_error=False,
            max_retries=self.bulk_retries,
            # The helper sleeps for these as floats; its annotations say int.
            initial_backoff=self.bulk_backoff_s,  # type: ignore[arg-type]
            max_backoff=BULK_MAX_BACKOFF_S,  # type: ignore[arg-type]
        )

    def knn(
        self,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        field: VectorField = VectorField.CLIP,
    ) -> list[Hit]:
        body = knn_query(vector, k, filter, field, oversample=self._oversample)
        with self._errors("knn search"):
            response = self._unless_missing(self.client.search, index=self.collection, body=body)
        if response is None:
            return []
        return [
            Hit(
                document=DocumentFields.model_validate(hit["_source"]), score=cosine_from_score(hit["_score"])
            )
            for hit in response["hits"]["hits"]
        ]

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        filter: IndexFilter | None = None,
        weights: HybridWeights = HybridWeights(),
    ) -> list[Hit]:
        with self._errors("hybrid search"):
            response = self._unless_missing(
                self.client.search,
                index=self.collection,
                body=hybrid_query(text, vector, k, filter, weights, oversample=self._oversample),
            )
        if response is None:
            return []
        # The fused score is already in [0, 1]; the per-part scores are not in the response (only the
        # 2.19+ explain processor exposes them, at a cost meant for debugging).
        return [
            Hit(document=DocumentFields.model_validate(hit["_source"]), score=float(hit["_score"]))
            for hit in response["hits"]["hits"]
        ]

    @property
    def _oversample(self) -> int | None:
        return None if self.codes is None else self.codes.oversample

    def get_many(self, ids: Iterable[str]) -> list[DocumentFields]:
        sources = self._mget(ids, {"_source_excludes": list(VECTOR_NAMES)})
        return [DocumentFields.model_validate(source) for source in sources]

    def get_many_with_vectors(self, ids: Iterable[str]) -> list[IndexDocument]:
        return [IndexDocument.model_validate(source) for source in self._mget(ids, {})]

    def _mget(self, ids: Iterable[str], params: dict[str, Any]) -> list[dict[str, Any]]:
        """The `_source` of each document found, in the order of `ids`."""
        sources: list[dict[str, Any]] = []
        with self._errors("get"):
            for chunk in _chunks(_unique(ids), MGET_CHUNK_IDS):
                response = self._unless_missing(
                    self.client.mget, index=self.collection, body={"ids": list(chunk)}, **params
                )
                if response is None:
                    break
                sources.extend(d["_source"] for d in response["docs"] if d.get("found"))
        return sources

    def delete(self, ids: Iterable[str]) -> int:
        wanted = _unique(ids)
        if not wanted:
            return 0
        with self._errors("delete"):
            if not self._require_index():
                # A bulk delete would auto-create the index with a dynamic mapping.
                return 0
            deleted = 0
            failed: dict[str, str] = {}
            for ok, item in self._bulk(
                _delete_actions(self.collection, wanted), BULK_CHUNK_DOCS * 2, BULK_CHUNK_BYTES
            ):
                result = item["delete"]
                if ok and result.get("result") == "deleted":
                    deleted += 1
                elif result.get("status") != 404:  # a missing id is not an error
                    failed[str(result.get("_id"))] = _reason(result)
            self.client.indices.refresh(index=self.collection)
        if failed:
            raise IndexError_(_failure_message("delete", self.collection, failed))
        return deleted

    def delete_where(self, filter: IndexFilter) -> int:
        with self._errors("delete_where"):
            response = self._unless_missing(
                self.client.delete_by_query,
                index=self.collection,
                body={"query": _query(filter)},
                refresh=True,
            )
        if response is None:
            return 0
        if response.get("failures"):
            raise IndexError_(
                f"OpenSearch delete_where on collection {self.collection!r} deleted "
                f"{response.get('deleted', 0)} documents, then failed: {response['failures'][:3]}"
            )
        return int(response["deleted"])

    def scan(self, filter: IndexFilter, fields: Sequence[str] | None = None) -> list[DocumentFields]:
        columns = self.scan_columns(fields)
        found: list[DocumentFields] = []
        after: str | None = None
        with self._errors("scan"):
            while True:
                response = self._unless_missing(
                    self.client.search,
                    index=self.collection,
                    body=scan_body(filter, columns, SCAN_PAGE, after),
                )
                hits = [] if response is None else response["hits"]["hits"]
                found += [DocumentFields.model_validate(hit["_source"]) for hit in hits]
                if len(hits) < SCAN_PAGE:
                    return found
                after = hits[-1]["sort"][0]

    def count(self, filter: IndexFilter | None = None) -> int:
        clause = filter_clause(filter)
        with self._errors("count"):
            body = None if clause is None else {"query": clause}
            response = self._unless_missing(self.client.count, index=self.collection, body=body)
        return 0 if response is None else int(response["count"])

    def fingerprints(self, ids: Iterable[str]) -> dict[str, str | None]:
        wanted = _unique(ids)
        found: dict[str, str | None] = {}
        with self._errors("fingerprints"):
            for chunk in _chunks(wanted, MGET_CHUNK_IDS):
                response = self._unless_missing(
                    self.client.mget,
                    index=self.collection,
                    body={"ids": list(chunk)},
                    _source_includes=["fingerprint"],
                )
                if response is None:
                    break
                for d in response["docs"]:
                    if d.get("found"):
                        found[d["_id"]] = d.get("_source", {}).get("fingerprint")
        return found

    def optimize(self) -> None:
        # The k-NN plugin builds HNSW graphs per segment as it indexes; a refresh makes the latest
        # segments searchable. A force-merge would speed search further but is too costly to do blind.
        with self._errors("optimize"):
            self.client.indices.refresh(index=self.collection)

    def close(self) -> None:
        self.client.close()


def _reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('reason')}"
    return str(error or f"status {result.get('status')}")


def _failure_message(operation: str, collection: str, failed: dict[str, str]) -> str:
    shown = list(failed.items())[:5]
    more = f"; and {len(failed) - len(shown)} more" if len(failed) > len(shown) else ""
    details = "; ".join(f"{doc_id} ({reason})" for doc_id, reason in shown)
    return (
        f"OpenSearch {operation} on collection {collection!r} failed for {len(failed)} document(s): "
        f"{details}{more}"
    )
