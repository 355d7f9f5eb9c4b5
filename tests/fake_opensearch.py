"""Stand-ins for an OpenSearch 2.19 cluster behind a real `opensearchpy.OpenSearch` client.

`RecordingConnection` replaces the client's HTTP connection, so opensearch-py's own serialisation,
bulk chunking, retries and error mapping run as they do against a cluster. It hands each parsed
request to a cluster object: `FakeCluster` answers from canned responses (to check request bodies),
and `MemoryCluster` keeps documents and answers searches (the index contract suite runs against it).

Both first check every request by the rules of the 2.19 sources the deployment targets (`check`),
and refuse what a 2.19 domain would refuse, with its error type and message. Each rule names where it
comes from:

- KNN: opensearch-project/k-NN at tag 2.19.0.0 (knn_vector mapping, the `knn` query)
- NS: opensearch-project/neural-search at tag 2.19.0.0 (the `hybrid` query, normalization-processor)
- CORE: opensearch-project/OpenSearch, the 2.19 line (search request body, search pipelines)

Error messages quoted in the sources are used verbatim (the weights, k, hybrid and pipeline
rules); where a source was read for the rule but not its wording, the message is the fake's own.
A few answers are stricter than a cluster and say so: a hybrid query without a normalization
pipeline is refused here, where a cluster answers it with raw per-query scores and delimiter
documents (neural-search issue #1011), and a knn_vector field in an index without `index.knn`.
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection

SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: Any  # parsed JSON; a list of parsed lines for NDJSON; None when there was no body


class Cluster(Protocol):
    def handle(self, request: Request) -> tuple[int, Any]: ...


def error(kind: str, reason: str, status: int) -> dict[str, Any]:
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


# ------------------------------------------------------------------------------ the 2.19 rules


class Refused(Exception):
    """A request a 2.19 cluster refuses: the error type and reason it answers with."""

    def __init__(self, kind: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind, self.reason, self.status = kind, reason, status

    def response(self) -> tuple[int, dict[str, Any]]:
        return self.status, error(self.kind, self.reason, self.status)


def _mapping_error(reason: str) -> Refused:
    return Refused("mapper_parsing_exception", reason)


def _parsing_error(reason: str) -> Refused:
    return Refused("parsing_exception", reason)


def _illegal(reason: str) -> Refused:
    return Refused("illegal_argument_exception", reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# KNN mapper/KNNVectorFieldMapper.java (Builder parameters) and the common mapping parameters.
KNN_VECTOR_PARAMETERS = frozenset(
    {"type", "dimension", "data_type", "model_id", "method", "mode", "compression_level", "space_type"}
)
# KNN VectorDataType.
KNN_DATA_TYPES = frozenset({"float", "byte", "binary"})
# KNN Mode.java; KNNVectorFieldMapper MAPPING_COMPRESSION_NAMES_ARRAY (64x is in the enum, not accepted).
KNN_MODES = frozenset({"in_memory", "on_disk"})
KNN_COMPRESSION_LEVELS = frozenset({"1x", "2x", "4x", "8x", "16x", "32x"})
# KNN KNNEngine.MAX_DIMENSIONS_BY_ENGINE: 16,000 for every engine.
KNN_MAX_DIMENSION = 16_000
# KNN engine/faiss/FaissHNSWMethod.java and the IVF method: spaces and HNSW parameters.
FAISS_SPACES = frozenset({"l2", "innerproduct", "cosinesimil", "hamming"})
FAISS_HNSW_PARAMETERS = frozenset({"m", "ef_construction", "ef_search", "encoder"})
FAISS_IVF_PARAMETERS = frozenset({"nlist", "nprobes", "encoder"})
# KNN engine/lucene: HNSW over l2, cosinesimil, innerproduct, hamming.
LUCENE_SPACES = frozenset({"l2", "cosinesimil", "innerproduct", "hamming"})
LUCENE_HNSW_PARAMETERS = frozenset({"m", "ef_construction", "encoder"})
# Field types the fake stores besides knn_vector, and the mapping parameters it understands for them.
PLAIN_TYPES = frozenset({"keyword", "text", "integer", "long", "float", "double", "boolean", "date"})
PLAIN_PARAMETERS = frozenset({"type", "index", "analyzer", "search_analyzer", "doc_values", "store"})


def check_knn_vector(name: str, mapping: Mapping[str, Any]) -> None:
    """A knn_vector field's mapping, by KNN 2.19's KNNVectorFieldMapper and method resolvers."""
    unknown = set(mapping) - KNN_VECTOR_PARAMETERS
    if unknown:
        raise _mapping_error(
            f"unknown parameter [{sorted(unknown)[0]}] on mapper [{name}] of type [knn_vector]"
        )
    dimension = mapping.get("dimension")
    if "model_id" not in mapping:
        # KNNVectorFieldMapper: "Dimension value must be greater than 0 for vector: %s".
        if not _is_int(dimension) or dimension <= 0:
            raise _mapping_error(f"Dimension value must be greater than 0 for vector: {name}")
        if dimension > KNN_MAX_DIMENSION:
            raise _mapping_error(
                f"Dimension value cannot be greater than {KNN_MAX_DIMENSION} for vector: {name}"
            )
    data_type = mapping.get("data_type", "float")
    if data_type not in KNN_DATA_TYPES:
        raise _mapping_error(
            "Invalid value provided for [data_type] field. Supported values are [float, byte, binary]"
        )
    # AbstractKNNLibrary: binary vectors are packed 8 dimensions to a byte.
    if data_type == "binary" and _is_int(dimension) and dimension % 8:
        raise _mapping_error("Dimension should be multiply of 8 for binary vector data type")
    mode, compression = mapping.get("mode"), mapping.get("compression_level")
    if mode is not None and mode not in KNN_MODES:
        raise _mapping_error(f"Invalid mode [{mode}]: it must be one of {sorted(KNN_MODES)}")
    if compression is not None and compression not in KNN_COMPRESSION_LEVELS:
        raise _mapping_error(f"Invalid compression level [{compression}]")
    if (mode or compression) and data_type != "float":
        # KNNVectorFieldMapper L455.
        raise _mapping_error(
            f"Compression and mode cannot be used for non-float32 data type for field {name}"
        )
    method = mapping.get("method")
    top_space = mapping.get("space_type")
    if method is None:
        if top_space is not None:
            _check_space(top_space, data_type)
        return
    if not isinstance(method, Mapping) or set(method) - {"name", "engine", "space_type", "parameters"}:
        raise _mapping_error(f"invalid method for field [{name}]: {method!r}")
    method_space = method.get("space_type")
    # KNNVectorFieldMapper: top-level and method space types must agree when both are given.
    if top_space is not None and method_space is not None and top_space != method_space:
        raise _mapping_error(
            'Space type in "method" and top level space type should be same or one of them should be defined'
        )
    space = method_space or top_space or ("hamming" if data_type == "binary" else "l2")  # SpaceType.DEFAULT
    _check_space(space, data_type)
    # KNNEngine.DEFAULT is FAISS in 2.19; nmslib is deprecated there (and kept out of this project).
    engine = method.get("engine", "faiss")
    name_ = method.get("name")
    parameters = method.get("parameters") or {}
    if engine == "faiss":
        allowed_spaces = FAISS_SPACES
        allowed = {"hnsw": FAISS_HNSW_PARAMETERS, "ivf": FAISS_IVF_PARAMETERS}.get(name_)
    elif engine == "lucene":
        allowed_spaces = LUCENE_SPACES
        allowed = {"hnsw": LUCENE_HNSW_PARAMETERS}.get(name_)
    else:
        raise _mapping_error(f"Invalid engine [{engine}] for field [{name}]: the fake knows faiss and lucene")
    if allowed is None:
        raise _mapping_error(f"Invalid method name [{name_}] for engine [{engine}]")
    if space not in allowed_spaces:
        raise _mapping_error(f"{engine} does not support space type [{space}]")
    for key, value in parameters.items():
        if key not in allowed:
            raise _mapping_error(f"Invalid parameter [{key}] for method [{name_}] of engine [{engine}]")
        # FaissHNSWMethod / MethodComponent: the graph parameters are positive integers.
        if key in {"m", "ef_construction", "ef_search", "nlist", "nprobes"} and (
            not _is_int(value) or value <= 0
        ):
            raise _mapping_error(f"Parameter [{key}] must be a positive integer, got [{value}]")
    # FaissMethodResolver L37-43: faiss has no 4x compression (only lucene does).
    if engine == "faiss" and compression == "4x":
        raise _mapping_error('"faiss" does not support "4x" compression')


def _check_space(space: str, data_type: str) -> None:
    # KNN SpaceType.validateVectorDataType: hamming only for binary, the others only float and byte.
    if space not in FAISS_SPACES | LUCENE_SPACES:
        raise _mapping_error(f"Unable to find space: {space}")
    if (space == "hamming") != (data_type == "binary"):
        raise _mapping_error(f"Space type [{space}] is not supported with [{data_type}] data type")


def check_index_body(body: Mapping[str, Any] | None) -> None:
    """PUT /<index>: settings and mappings the fake can hold, each field checked."""
    body = body or {}
    knn = body.get("settings", {}).get("index", {}).get("knn", False)
    # KNN KNNSettings: `index.knn` is a static boolean (default false).
    if not isinstance(knn, bool):
        raise Refused(
            "illegal_argument_exception",
            f"Failed to parse value [{knn}] as only [true] or [false] are allowed.",
        )
    mappings = body.get("mappings", {})
    dynamic = mappings.get("dynamic", True)
    # CORE ObjectMapper.Dynamic: true, false, strict (and runtime from 2.x).
    if dynamic not in (True, False, "true", "false", "strict", "runtime"):
        raise _mapping_error(f"No enum constant for dynamic [{dynamic}]")
    for name, mapping in mappings.get("properties", {}).items():
        kind = mapping.get("type")
        if kind == "knn_vector":
            # KNNVectorFieldMapper: a knn_vector field in an index without index.knn is not searchable by
            # the ANN engines; 2.19 still maps it (as a flat field), which this project never wants.
            if not knn:
                raise _mapping_error(
                    f"field [{name}]: knn_vector needs index.knn: true (the fake refuses a flat field)"
                )
            check_knn_vector(name, mapping)
        elif kind in PLAIN_TYPES:
            unknown = set(mapping) - PLAIN_PARAMETERS
            if unknown:
                raise _mapping_error(
                    f"unknown parameter [{sorted(unknown)[0]}] on mapper [{name}] of type [{kind}]"
                )
        else:
            raise _mapping_error(f"No handler for type [{kind}] declared on field [{name}]")


# KNN index/query/KNNQueryBuilder.java and query/parser/KNNQueryBuilderParser.java (2.19).
KNN_QUERY_FIELDS = frozenset(
    {
        "vector",
        "k",
        "filter",
        "ignore_unmapped",
        "max_distance",
        "min_score",
        "method_parameters",
        "rescore",
        "expand_nested_docs",
        "boost",
        "_name",
    }
)
KNN_K_MAX = 10_000  # KNNQueryBuilder.K_MAX
KNN_METHOD_PARAMETERS = frozenset({"ef_search", "nprobes"})  # query/request/MethodParameter.java


def check_knn_query(knn: Mapping[str, Any]) -> None:
    if len(knn) != 1:
        raise _parsing_error("[knn] query malformed, found multiple fields or none")
    ((_name, params),) = knn.items()
    unknown = set(params) - KNN_QUERY_FIELDS
    if unknown:
        raise _parsing_error(f"[knn] unknown token [{sorted(unknown)[0]}]")
    vector = params.get("vector")
    if not isinstance(vector, list) or not vector or not all(map(_is_number, vector)):
        raise _illegal("[knn] requires query vector")
    given = [key for key in ("k", "max_distance", "min_score") if key in params]
    # KNNQueryBuilder.Builder.validate().
    if len(given) != 1:
        raise _illegal("[knn] requires exactly one of k, distance or score to be set")
    if "k" in params:
        k = params["k"]
        if not _is_int(k) or k <= 0 or k > KNN_K_MAX:
            raise _illegal(f"[knn] requires k to be in the range (0, {KNN_K_MAX}]")
    if "min_score" in params and not (_is_number(params["min_score"]) and params["min_score"] > 0):
        raise _illegal("[knn] requires minScore to be greater than 0")
    if "method_parameters" in params:
        method_parameters = params["method_parameters"]
        if not method_parameters:
            raise _illegal("method_parameters cannot be empty")
        for key, value in method_parameters.items():
            if key not in KNN_METHOD_PARAMETERS:
                raise _illegal(f"[knn] unknown method parameter found [{key}]")
            if not _is_int(value) or value <= 0:
                raise _illegal(f"[knn] errors in method parameter [{key} should be greater than 0]")
    rescore = params.get("rescore")
    if isinstance(rescore, Mapping):
        factor = rescore.get("oversample_factor", 1.0)
        # RescoreContext L20-21.
        if not _is_number(factor) or not 1.0 <= factor <= 100.0:
            raise _illegal(f"Oversample factor [{factor}] must be in [1.0, 100.0]")
    if rescore is not None and ("max_distance" in params or "min_score" in params):
        raise _illegal("[knn] rescore cannot be combined with max_distance or min_score")
    if "filter" in params:
        check_query(params["filter"], top_level=False)


# NS query/HybridQueryBuilder.java (2.19): the fields fromXContent accepts, and the sub-query limit.
HYBRID_FIELDS = frozenset({"queries", "_name", "boost", "pagination_depth"})
HYBRID_MAX_SUB_QUERIES = 5  # MAX_NUMBER_OF_SUB_QUERIES


def check_hybrid_query(hybrid: Mapping[str, Any]) -> list[dict[str, Any]]:
    for key in hybrid:
        if key not in HYBRID_FIELDS:
            # 2.19 has no `filter` here (added in 3.0-beta1, neural-search #1206): filter each sub-query.
            raise _parsing_error("Field is not supported by [hybrid] query")
    if hybrid.get("boost", 1.0) != 1.0:
        raise _parsing_error("[hybrid] query does not support [boost]")
    queries = hybrid.get("queries") or []
    if not queries:
        raise _parsing_error("[hybrid] requires 'queries' field with at least one clause")
    if len(queries) > HYBRID_MAX_SUB_QUERIES:
        raise _parsing_error("Number of sub-queries exceeds maximum supported by [hybrid] query")
    for query in queries:
        check_query(query, top_level=False)
    return list(queries)


def check_query(query: Mapping[str, Any], *, top_level: bool) -> None:
    """A query clause: knn and hybrid by the rules above; hybrid only at the top level
    (NS search/query/HybridQueryPhaseSearcher.java L127, L145)."""
    if not isinstance(query, Mapping) or len(query) != 1:
        raise _parsing_error(f"a query clause has exactly one key, got {query!r}")
    ((kind, body),) = query.items()
    if kind == "hybrid":
        if not top_level:
            raise _illegal("hybrid query must be a top level query and cannot be wrapped into other queries")
        check_hybrid_query(body)
    elif kind == "knn":
        check_knn_query(body)
    elif kind == "bool":
        for clause in ("must", "filter", "should", "must_not"):
            value = body.get(clause, [])
            for sub in value if isinstance(value, list) else [value]:
                check_query(sub, top_level=False)
    elif kind not in {"match_all", "term", "terms", "prefix", "range", "multi_match", "ids"}:
        raise _parsing_error(f"unknown query [{kind}] (or one the fake does not evaluate)")


# NS processor: normalization-processor and score-ranker-processor (NormalizationProcessorFactory,
# RRFProcessorFactory), their techniques (ScoreNormalizationFactory, ScoreCombinationFactory).
# z_score is not in 2.19 (first in 3.0-beta1); the 2.19 docs list min_max and l2, the factory also
# maps rrf.
NORMALIZATION_TECHNIQUES = frozenset({"min_max", "l2", "rrf"})
COMBINATION_TECHNIQUES = frozenset({"arithmetic_mean", "geometric_mean", "harmonic_mean", "rrf"})
WEIGHTS_DELTA = 0.01  # ScoreCombinationUtil.DELTA_FOR_WEIGHTS_ASSERTION
PIPELINE_KEYS = frozenset(
    {"description", "version", "request_processors", "response_processors", "phase_results_processors"}
)


@dataclass(frozen=True)
class Fusion:
    """How a pipeline's normalization-processor fuses hybrid sub-query scores."""

    normalization: str = "min_max"
    combination: str = "arithmetic_mean"
    weights: tuple[float, ...] | None = None


def check_pipeline(body: Mapping[str, Any]) -> Fusion | None:
    """A search pipeline definition (stored or ad hoc): the fusion it describes, if any."""
    if not isinstance(body, Mapping):
        raise _parsing_error("a search pipeline is an object")
    unknown = set(body) - PIPELINE_KEYS
    if unknown:
        # CORE Pipeline.create: leftover keys are refused.
        raise Refused(
            "parse_exception",
            f"pipeline doesn't support one or more provided configuration parameters {sorted(unknown)}",
        )
    fusion: Fusion | None = None
    for processor in body.get("phase_results_processors", []):
        ((kind, config),) = processor.items()
        if kind == "normalization-processor":
            fusion = _check_normalization_processor(config)
        elif kind == "score-ranker-processor":
            combination = (config.get("combination") or {}).get("technique", "rrf")
            if combination != "rrf":
                raise _illegal("provided combination technique is not supported")
            fusion = Fusion("rrf", "rrf")
        else:
            raise Refused("parse_exception", f"Invalid processor type {kind}")
    return fusion


def _check_normalization_processor(config: Mapping[str, Any]) -> Fusion:
    normalization = (config.get("normalization") or {}).get("technique", "min_max")
    if normalization not in NORMALIZATION_TECHNIQUES:
        raise _illegal("provided normalization technique is not supported")
    combination_config = config.get("combination") or {}
    combination = combination_config.get("technique", "arithmetic_mean")
    if combination not in COMBINATION_TECHNIQUES:
        raise _illegal("provided combination technique is not supported")
    parameters = combination_config.get("parameters") or {}
    # ScoreCombinationUtil.validateParams: `weights` is the only parameter.
    if set(parameters) - {"weights"}:
        raise _illegal(
            "provided parameter for combination technique is not supported. supported parameters are [weights]"
        )
    if "weights" not in parameters:
        return Fusion(normalization, combination)
    weights = parameters["weights"]
    if not isinstance(weights, list) or not all(map(_is_number, weights)):
        raise _illegal("parameter [weights] must be a collection of numbers")
    # getWeights casts each element to Double: a JSON integer (`1`) arrives as an Integer. Inferred from
    # the code, not run against a cluster: the fake refuses it, floats cost nothing.
    if any(isinstance(w, int) for w in weights):
        raise _illegal(f"weights must be JSON floats (1.0, not 1), submitted weights: {weights}")
    # ScoreCombinationUtil.validateWeights: each in [0.0, 1.0], the sum 1.0 within 0.01.
    if not all(0.0 <= w <= 1.0 for w in weights):
        raise _illegal(f"all weights must be in range [0.0 ... 1.0], submitted weights: {weights}")
    if abs(sum(weights) - 1.0) > WEIGHTS_DELTA:
        raise _illegal(f"sum of weights for combination must be equal to 1.0, submitted weights: {weights}")
    return Fusion(normalization, combination, tuple(float(w) for w in weights))


# CORE SearchSourceBuilder: the body fields the fake understands (a subset of the real parser's).
SEARCH_FIELDS = frozenset(
    {
        "size",
        "from",
        "query",
        "_source",
        "sort",
        "search_after",
        "track_total_hits",
        "search_pipeline",
        "timeout",
    }
)
MAX_RESULT_WINDOW = 10_000  # CORE IndexSettings.MAX_RESULT_WINDOW_SETTING default


@dataclass(frozen=True)
class SearchPlan:
    query: dict[str, Any]
    hybrid: list[dict[str, Any]] | None
    fusion: Fusion | None


def check_search(
    body: Mapping[str, Any] | None, params: Mapping[str, str], pipelines: Mapping[str, Fusion | None]
) -> SearchPlan:
    body = body or {}
    for key in body:
        if key not in SEARCH_FIELDS:
            raise _parsing_error(f"Unknown key for a START_OBJECT in [{key}].")
    size, start = body.get("size", 10), body.get("from", 0)
    if start + size > MAX_RESULT_WINDOW:
        raise _illegal(
            f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}]"
        )
    query = body.get("query", {"match_all": {}})
    check_query(query, top_level=True)
    inline, named = body.get("search_pipeline"), params.get("search_pipeline")
    # CORE SearchPipelineService.resolvePipeline.
    if isinstance(inline, Mapping) and named is not None:
        raise _illegal(
            "Both named and inline search pipeline were specified. Please only specify one or the other."
        )
    fusion: Fusion | None = None
    if isinstance(inline, Mapping):
        fusion = check_pipeline(inline)  # the ad hoc pipeline, built from the same factories
    else:
        name = named if named is not None else inline
        if name is not None:
            if name not in pipelines:
                # CORE SearchPipelineService.resolvePipeline (an IllegalArgumentException: 400).
                raise _illegal(f"Pipeline {name} is not defined")
            fusion = pipelines[name]
    hybrid = None
    if "hybrid" in query:
        hybrid = query["hybrid"]["queries"]
        if fusion is None:
            raise _illegal(
                "hybrid query without a normalization pipeline: a cluster returns raw sub-query scores and "
                "delimiter documents (neural-search #1011); the fake refuses it"
            )
        if fusion.weights is not None and len(fusion.weights) != len(hybrid):
            # ScoreCombinationUtil.validateIfWeightsMatchScores, at query time.
            raise _illegal(
                f"number of weights [{len(fusion.weights)}] must match number of sub-queries [{len(hybrid)}] in hybrid query"
            )
    return SearchPlan(query, hybrid, fusion)


def check(request: Request, pipelines: Mapping[str, Fusion | None]) -> None:
    """Raise `Refused` for a request a 2.19 cluster would refuse (the parts the fakes see)."""
    parts = request.path.strip("/").split("/")
    match request.method, parts:
        case "PUT", ["_search", "pipeline", _]:
            check_pipeline(request.body)
        case "PUT", [name] if not name.startswith("_"):
            check_index_body(request.body)
        case (("POST" | "GET"), [_, "_search"]):
            check_search(request.body, request.params, pipelines)
        case "POST", [_, "_count" | "_delete_by_query"]:
            if request.body and "query" in request.body:
                check_query(request.body["query"], top_level=False)


# ------------------------------------------------------------------------------ the connection


class RecordingConnection(Connection):
    """An opensearch-py connection that talks to a fake cluster instead of the network."""

    def __init__(self, *, cluster: Cluster, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster

    def perform_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
        ignore: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if not text:
            parsed: Any = None
        elif url.endswith("/_bulk"):
            parsed = [json.loads(line) for line in text.splitlines() if line]
        else:
            parsed = json.loads(text)
        status, payload = self.cluster.handle(
            Request(
                method,
                url,
                {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (params or {}).items()},
                parsed,
            )
        )
        raw = "" if payload is None else json.dumps(payload)
        if not 200 <= status < 300 and status not in ignore:
            self._raise_error(status, raw, "application/json")
        return status, {"content-type": "application/json; charset=UTF-8"}, raw

    def close(self) -> None:
        """Nothing to release (OpenSearchIndex.close() closes the client's connections)."""


def client_for(cluster: Cluster) -> OpenSearch:
    # No transport-level retries: opensearch-py's bulk helpers do their own, which is what is tested.
    return OpenSearch(
        hosts=["http://fake-cluster:9200"],
        connection_class=RecordingConnection,
        cluster=cluster,
        max_retries=0,
    )


# ------------------------------------------------------------------------------ canned answers


class FakeCluster:
    """Records requests and answers each from a queue of canned responses per (method, path),
    after checking it by the 2.19 rules (a refused request is answered as the cluster would)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.pipelines: dict[str, Fusion | None] = {}  # stored by PUT, for searches that name one
        self._canned: dict[tuple[str, str], deque[tuple[int, Any]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def respond(self, method: str, path: str, body: Any = None, status: int = 200) -> None:
        self._canned[(method, path)].append((status, body))

    def handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            try:
                check(request, self.pipelines)
            except Refused as refused:
                return refused.response()
            parts = request.path.strip("/").split("/")
            if request.method == "PUT" and parts[:2] == ["_search", "pipeline"]:
                self.pipelines[parts[2]] = check_pipeline(request.body)
            queue = self._canned[(request.method, request.path)]
            if queue:
                return queue.popleft()
        if request.path.endswith("/_refresh"):
            return 200, {"_shards": SHARDS}
        raise AssertionError(f"unexpected request {request.method} {request.path}")

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def only(self, method: str, path: str) -> Request:
        matching = [r for r in self.requests if (r.method, r.path) == (method, path)]
        assert len(matching) == 1, self.calls()
        return matching[0]


# ------------------------------------------------------------------------------ a stateful fake


@dataclass
class _Index:
    mappings: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind(self, name: str) -> str | None:
        return self.mappings.get("properties", {}).get(name, {}).get("type")


# Which JSON values a field of each mapped type accepts (a list holds several values of the type).
_ACCEPTS = {
    "keyword": lambda v: isinstance(v, str),
    "text": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": _is_number,
    "double": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "date": lambda v: _date_millis(v) is not None,
}


def _date_millis(value: Any) -> int | None:
    """A `date` value as epoch milliseconds, by the default format
    `strict_date_time_no_millis||strict_date_optional_time||epoch_millis` (OpenSearch docs,
    field-types/supported-field-types/date, "format"): an ISO 8601 date with an optional time and
    zone (no zone is UTC), or a number of milliseconds; None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?", value
    ):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round(when.timestamp() * 1000)


def _source_error(
    properties: Mapping[str, Any], strict: bool, source: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The error a 2.x cluster gives for a document its mapping refuses, or None."""
    for name, value in source.items():
        mapping = properties.get(name)
        if mapping is None:
            if strict:
                return {
                    "type": "strict_dynamic_mapping_exception",
                    "reason": f"mapping set to strict, dynamic introduction of [{name}] within [_doc] is not allowed",
                }
            continue
        kind = mapping["type"]
        if kind == "knn_vector":
            ok = (
                isinstance(value, list) and len(value) == mapping["dimension"] and all(map(_is_number, value))
            )
        else:
            ok = all(v is None or _ACCEPTS[kind](v) for v in (value if isinstance(value, list) else [value]))
        if not ok:
            return {
                "type": "mapper_parsing_exception",
                "reason": f"failed to parse field [{name}] of type [{kind}]",
            }
    return None


def _filtered(source: dict[str, Any], includes: list[str] | None, excludes: list[str]) -> dict[str, Any]:
    kept = {k: v for k, v in source.items() if k not in excludes}
    return kept if includes is None else {k: v for k, v in kept.items() if k in includes}


def _source_filter(spec: Any) -> tuple[list[str] | None, list[str]]:
    """(includes, excludes) of a search body's `_source` (CORE FetchSourceContext)."""
    if spec is None or spec is True:
        return None, []
    if spec is False:
        return [], []
    if isinstance(spec, str):
        return [spec], []
    if isinstance(spec, list):
        return list(spec), []
    includes = spec.get("includes", spec.get("include"))
    return (list(includes) if includes is not None else None), list(
        spec.get("excludes", spec.get("exclude", []))
    )


def _faiss_innerproduct_score(ip: float) -> float:
    # KNN engine/faiss/Faiss.java + SpaceType.INNER_PRODUCT: 1/(1 - ip) for ip <= 0, ip + 1 above.
    d = -ip
    return 1.0 / (1.0 + d) if d >= 0 else -d + 1.0


# The english analyzer's stop words (Lucene EnglishAnalyzer.ENGLISH_STOP_WORDS_SET).
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


def _analyse(text: str) -> list[str]:
    """Roughly the english analyzer: lower case, words, no stop words, a plural `s` dropped."""
    words = [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def _values(source: Mapping[str, Any], name: str) -> list[Any]:
    value = source.get(name)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class MemoryCluster:
    """Enough of a 2.19 cluster to store documents, search them and read them back, behind the real
    client, after the same 2.19 checks as `FakeCluster`.

    Indices live in memory; documents are kept as the JSON they arrived as, and a strict mapping
    refuses fields it does not name or values of the wrong type. Queries are evaluated exactly: bool,
    term(s), prefix, range, match_all, multi_match (BM25 over analysed text, exact over keywords), knn
    with its filter (exact search scored like faiss `innerproduct`), and top-level hybrid fused by the
    pipeline's min-max normalisation and weighted arithmetic mean (NS MinMaxScoreNormalizationTechnique,
    ArithmeticMeanScoreCombinationTechnique). `throttle` makes it answer bulk requests with 429, whole
    or per document, as a busy domain does. Anything else fails the test rather than being answered.
    """

    def __init__(self) -> None:
        self.indices: dict[str, _Index] = {}
        self.pipelines: dict[str, Fusion | None] = {}
        self.requests: list[Request] = []
        self.rejected_requests = 0
        self.rejected_documents = 0
        self._throttle_requests = 0
        self._throttle_documents = 0
        self._lock = threading.Lock()

    def throttle(self, *, bulk_requests: int = 0, bulk_documents: int = 0) -> None:
        """Answer the next `bulk_requests` bulk requests with a whole 429, and the next
        `bulk_documents` document actions inside bulk requests with a per-item 429."""
        self._throttle_requests += bulk_requests
        self._throttle_documents += bulk_documents

    def handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            try:
                check(request, self.pipelines)
                return self._route(request)
            except Refused as refused:
                return refused.response()

    def _route(self, request: Request) -> tuple[int, Any]:
        parts = request.path.strip("/").split("/")
        match request.method, parts:
            case "PUT", ["_search", "pipeline", name]:
                self.pipelines[name] = check_pipeline(request.body)
                return 200, {"acknowledged": True}
            case "HEAD", [name]:
                return (200 if name in self.indices else 404), None
            case "PUT", [name]:
                if name in self.indices:
                    reason = f"index [{name}/x] already exists"
                    return 400, error("resource_already_exists_exception", reason, 400)
                self.indices[name] = _Index(copy.deepcopy((request.body or {}).get("mappings", {})))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            case "POST", ["_bulk"]:
                return self._bulk(request.body)
        if len(parts) < 1 or parts[0] not in self.indices:
            name = parts[0] if parts else ""
            return 404, error("index_not_found_exception", f"no such index [{name}]", 404)
        name, index = parts[0], self.indices[parts[0]]
        match request.method, parts[1:]:
            case "DELETE", []:
                del self.indices[name]
                return 200, {"acknowledged": True}
            case "GET", ["_mapping"]:
                return 200, {name: {"mappings": index.mappings}}
            case "POST", ["_refresh"]:
                return 200, {"_shards": SHARDS}
            case "POST", ["_mget"]:
                return 200, self._mget(name, index, request)
            case "POST", ["_count"]:
                query = (request.body or {}).get("query", {"match_all": {}})
                return 200, {"count": len(self._evaluate(index, query)), "_shards": SHARDS}
            case "POST", ["_delete_by_query"]:
                matched = self._evaluate(index, request.body["query"])
                for doc_id in matched:
                    del index.docs[doc_id]
                return 200, {
                    "took": 1,
                    "timed_out": False,
                    "total": len(matched),
                    "deleted": len(matched),
                    "failures": [],
                }
            case (("POST" | "GET"), ["_search"]):
                return 200, self._search(name, index, request)
        raise AssertionError(f"MemoryCluster does not implement {request.method} {request.path}")

    # -- writes --------------------------------------------------------------------------------------

    def _bulk(self, lines: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if self._throttle_requests:
            self._throttle_requests -= 1
            self.rejected_requests += 1
            # What a domain whose write queue is full answers for the whole request.
            reason = "rejected execution of coordinating operation [coordinating_and_primary_bytes=...]"
            return 429, error("es_rejected_execution_exception", reason, 429)
        items: list[dict[str, Any]] = []
        rest = iter(lines)
        for action in rest:
            ((op, meta),) = action.items()
            name, doc_id = meta["_index"], meta["_id"]
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            index = self.indices.get(name)
            source = next(rest) if op == "index" else None
            if self._throttle_documents:
                self._throttle_documents -= 1
                self.rejected_documents += 1
                reason = "rejected execution of primary operation [shard_detail=[media][0][P]]"
                result.update(status=429, error={"type": "es_rejected_execution_exception", "reason": reason})
            elif op == "index":
                if index is None:
                    raise AssertionError("the index would be auto-created with a dynamic mapping")
                mappings = index.mappings
                problem = _source_error(
                    mappings.get("properties", {}), mappings.get("dynamic") == "strict", source or {}
                )
                if problem:
                    result.update(status=400, error=problem)
                else:
                    created = doc_id not in index.docs
                    index.docs[doc_id] = copy.deepcopy(source or {})
                    result.update(status=201 if created else 200, result="created" if created else "updated")
            elif op == "delete":
                found = index is not None and index.docs.pop(doc_id, None) is not None
                result.update(status=200 if found else 404, result="deleted" if found else "not_found")
            else:
                raise AssertionError(f"MemoryCluster does not implement bulk {op}")
            items.append({op: result})
        errors = any(i[op]["status"] >= 300 for i in items for op in i)
        return 200, {"took": 1, "errors": errors, "items": items}

    # -- reads ---------------------------------------------------------------------------------------

    @staticmethod
    def _mget(name: str, index: _Index, request: Request) -> dict[str, Any]:
        includes = request.params.get("_source_includes")
        excludes = request.params.get("_source_excludes")
        docs = []
        for doc_id in request.body["ids"]:
            source = index.docs.get(doc_id)
            if source is None:
                docs.append({"_index": name, "_id": doc_id, "found": False})
                continue
            kept = _filtered(
                source, includes.split(",") if includes else None, excludes.split(",") if excludes else []
            )
            docs.append({"_index": name, "_id": doc_id, "_version": 1, "found": True, "_source": kept})
        return {"docs": docs}

    def _search(self, name: str, index: _Index, request: Request) -> dict[str, Any]:
        body = request.body or {}
        plan = check_search(body, request.params, self.pipelines)
        size, start = body.get("size", 10), body.get("from", 0)
        if plan.hybrid is not None:
            assert plan.fusion is not None
            scored = self._hybrid(index, plan.hybrid, plan.fusion, size)
        else:
            scored = self._evaluate(index, plan.query)
        ranked = sorted(scored.items(), key=lambda item: -item[1])  # stable: ties keep insertion order
        sort = body.get("sort")
        if sort:
            ((sort_field, order),) = sort[0].items() if isinstance(sort[0], dict) else [(sort[0], "asc")]
            order = order if isinstance(order, str) else order.get("order", "asc")
            keyed = [(doc_id, _values(index.docs[doc_id], sort_field)[0]) for doc_id, _ in ranked]
            keyed.sort(key=lambda item: item[1], reverse=order == "desc")
            after = body.get("search_after")
            if after is not None:
                keyed = [
                    item for item in keyed if (item[1] < after[0] if order == "desc" else item[1] > after[0])
                ]
            page = [(doc_id, None, [value]) for doc_id, value in keyed[start : start + size]]
        else:
            page = [(doc_id, score, None) for doc_id, score in ranked[start : start + size]]
        includes, excludes = _source_filter(body.get("_source"))
        hits = []
        for doc_id, score, sort_values in page:
            hit: dict[str, Any] = {
                "_index": name,
                "_id": doc_id,
                "_score": score,
                "_source": _filtered(index.docs[doc_id], includes, excludes),
            }
            if sort_values is not None:
                hit["sort"] = sort_values
            hits.append(hit)
        scores = [h["_score"] for h in hits if h["_score"] is not None]
        return {
            "took": 1,
            "timed_out": False,
            "_shards": SHARDS,
            "hits": {
                "total": {"value": len(scored), "relation": "eq"},
                "max_score": max(scores) if scores else None,
                "hits": hits,
            },
        }

    def _hybrid(
        self, index: _Index, queries: list[dict[str, Any]], fusion: Fusion, size: int
    ) -> dict[str, float]:
        """Each sub-query's top `size`, min-max normalised, combined by the weighted arithmetic mean."""
        if (fusion.normalization, fusion.combination) != ("min_max", "arithmetic_mean"):
            raise AssertionError(f"MemoryCluster fuses with min_max + arithmetic_mean only, not {fusion}")
        weights = fusion.weights or tuple(1.0 for _ in queries)
        per_query: list[dict[str, float]] = []
        for query in queries:
            scored = self._evaluate(index, query)
            top = dict(sorted(scored.items(), key=lambda item: -item[1])[:size])
            if top:
                low, high = min(top.values()), max(top.values())
                # MinMaxScoreNormalizationTechnique: one distinct score normalises to 1; a normalised 0
                # becomes MIN_SCORE (0.001) so the document still counts.
                top = {
                    doc_id: 1.0 if high == low else max((score - low) / (high - low), 0.001)
                    for doc_id, score in top.items()
                }
            per_query.append(top)
        fused: dict[str, float] = {}
        for doc_id in dict.fromkeys(d for top in per_query for d in top):
            parts = [top.get(doc_id, 0.0) for top in per_query]
            # ArithmeticMeanScoreCombinationTechnique: sum of w * s over sum of w.
            fused[doc_id] = sum(w * s for w, s in zip(weights, parts, strict=True)) / sum(weights)
        return fused

    def _evaluate(self, index: _Index, query: Mapping[str, Any]) -> dict[str, float]:
        """The documents `query` matches, with their scores (0 in filter-only clauses)."""
        ((kind, body),) = query.items()
        docs = index.docs
        if kind == "match_all":
            return dict.fromkeys(docs, 1.0)
        if kind == "ids":
            return {d: 1.0 for d in body["values"] if d in docs}
        if kind == "term":
            ((name, value),) = body.items()
            value = value["value"] if isinstance(value, dict) else value
            return {d: 1.0 for d, s in docs.items() if value in _values(s, name)}
        if kind == "terms":
            ((name, values),) = body.items()
            return {d: 1.0 for d, s in docs.items() if set(values) & set(_values(s, name))}
        if kind == "prefix":
            ((name, value),) = body.items()
            value = value["value"] if isinstance(value, dict) else value
            return {
                d: 1.0 for d, s in docs.items() if any(str(v).startswith(value) for v in _values(s, name))
            }
        if kind == "range":
            ((name, bounds),) = body.items()
            if index.kind(name) == "date":
                # CORE DateFieldMapper: a date range compares epoch milliseconds, bounds parsed with
                # the field's format.
                millis = {op: _date_millis(b) for op, b in bounds.items()}
                if any(m is None for op, m in millis.items() if op in {"gte", "gt", "lte", "lt"}):
                    raise Refused("parse_exception", f"failed to parse date field in range on [{name}]")
                bounds = millis
                docs = {d: {name: [_date_millis(v) for v in _values(s, name)]} for d, s in docs.items()}
            tests = {
                "gte": lambda v, b: v >= b,
                "gt": lambda v, b: v > b,
                "lte": lambda v, b: v <= b,
                "lt": lambda v, b: v < b,
            }
            return {
                d: 1.0
                for d, s in docs.items()
                if any(
                    all(tests[op](v, b) for op, b in bounds.items() if op in tests) for v in _values(s, name)
                )
            }
        if kind == "bool":
            return self._bool(index, body)
        if kind == "multi_match":
            return self._multi_match(index, body["query"], body["fields"])
        if kind == "knn":
            return self._knn(index, body)
        raise AssertionError(f"MemoryCluster does not evaluate [{kind}]")

    def _bool(self, index: _Index, body: Mapping[str, Any]) -> dict[str, float]:
        def clauses(name: str) -> list[dict[str, Any]]:
            value = body.get(name, [])
            return value if isinstance(value, list) else [value]

        candidates: dict[str, float] = dict.fromkeys(index.docs, 0.0)
        for clause in clauses("must"):
            matched = self._evaluate(index, clause)
            candidates = {d: score + matched[d] for d, score in candidates.items() if d in matched}
        for clause in clauses("filter"):
            matched = self._evaluate(index, clause)
            candidates = {d: score for d, score in candidates.items() if d in matched}
        for clause in clauses("must_not"):
            matched = self._evaluate(index, clause)
            candidates = {d: score for d, score in candidates.items() if d not in matched}
        should = clauses("should")
        if should:
            matches = [self._evaluate(index, clause) for clause in should]
            # CORE BoolQueryBuilder: minimum_should_match (an integer here) when given; otherwise one
            # should clause must match only where there is no must or filter clause.
            at_least = body.get("minimum_should_match")
            if not isinstance(at_least, int):
                at_least = 0 if (clauses("must") or clauses("filter")) else 1
            candidates = {
                d: score + sum(m.get(d, 0.0) for m in matches)
                for d, score in candidates.items()
                if sum(d in m for m in matches) >= at_least
            }
        return candidates

    def _multi_match(self, index: _Index, text: str, fields: Iterable[str]) -> dict[str, float]:
        """best_fields: each document's best per-field BM25 (k1 1.2, b 0.75, Lucene's defaults); text
        fields are analysed, keyword fields match the whole query string."""
        best: dict[str, float] = {}
        for name in fields:
            analysed = index.kind(name) == "text"
            terms = set(_analyse(text)) if analysed else {text}
            tokens = {
                d: _analyse(" ".join(map(str, _values(s, name))))
                if analysed
                else [str(v) for v in _values(s, name)]
                for d, s in index.docs.items()
            }
            present = {d: Counter(t) for d, t in tokens.items() if t}
            if not present:
                continue
            average = sum(c.total() for c in present.values()) / len(present)
            field_scores: dict[str, float] = defaultdict(float)
            for term in terms:
                df = sum(1 for counts in present.values() if counts[term])
                idf = math.log(1 + (len(present) - df + 0.5) / (df + 0.5))
                for d, counts in present.items():
                    tf = counts[term]
                    if tf:
                        norm = 1.2 * (0.25 + 0.75 * counts.total() / average)
                        field_scores[d] += idf * tf * 2.2 / (tf + norm)
            for d, score in field_scores.items():
                best[d] = max(best.get(d, 0.0), score)
        return best

    def _knn(self, index: _Index, knn: Mapping[str, Any]) -> dict[str, float]:
        ((name, params),) = knn.items()
        mapping = index.mappings.get("properties", {}).get(name)
        if mapping is None or mapping.get("type") != "knn_vector":
            raise Refused("illegal_argument_exception", f"Field '{name}' is not knn_vector type.")
        query = np.asarray(params["vector"], dtype=np.float64)
        if query.size != mapping["dimension"]:
            reason = f"Query vector has invalid dimension: {query.size}. Dimension should be: {mapping['dimension']}"
            raise Refused("search_phase_execution_exception", reason)
        allowed = self._evaluate(index, params["filter"]) if "filter" in params else index.docs
        if mapping.get("mode") == "on_disk" and mapping.get("compression_level", "32x") == "32x":
            return self._knn_on_disk(index, name, query, params, allowed)
        scored = sorted(
            (
                (_faiss_innerproduct_score(float(np.dot(query, source[name]))), doc_id)
                for doc_id, source in index.docs.items()
                if doc_id in allowed and source.get(name) is not None
            ),
            key=lambda item: -item[0],
        )[: params["k"]]
        return {doc_id: score for score, doc_id in scored}

    @staticmethod
    def _knn_on_disk(
        index: _Index, name: str, query: np.ndarray, params: Mapping[str, Any], allowed: Any
    ) -> dict[str, float]:
        """k-NN on an `on_disk` field at 32x, as KNN 2.19 runs it: a first pass by Hamming distance over
        1-bit codes, each dimension thresholded at its mean (quantization/quantizer/
        OneBitScalarQuantizer.java; the fake holds one segment), the query coded alike; then the
        first-pass candidates re-scored on the full vectors. First-pass size: RescoreContext.getFirstPassK
        = min(10000, max(100, ceil(k x oversample_factor))); without a `rescore` in the query, the
        field's default (CompressionLevel.getDefaultRescoreContext: 5.0 for dimension <= 1000)."""
        ids = [d for d, source in index.docs.items() if source.get(name) is not None]
        if not ids:
            return {}
        vectors = np.asarray([index.docs[d][name] for d in ids], dtype=np.float64)
        thresholds = vectors.mean(axis=0)
        codes = vectors > thresholds
        hamming = np.count_nonzero(codes != (query > thresholds), axis=1)
        k = int(params["k"])
        rescore = params.get("rescore")
        factor = rescore.get("oversample_factor", 1.0) if isinstance(rescore, Mapping) else 5.0
        first_pass = min(10_000, max(100, int(np.ceil(k * factor))))
        # Faiss walks the binary graph with the filter applied, so the first pass holds allowed docs.
        order = [i for i in np.argsort(hamming, kind="stable") if ids[i] in allowed][:first_pass]
        scored = sorted(
            ((_faiss_innerproduct_score(float(np.dot(query, vectors[i]))), ids[i]) for i in order),
            key=lambda item: -item[0],
        )[:k]
        return {doc_id: score for score, doc_id in scored}
