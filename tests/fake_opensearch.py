"""Stand-ins for an OpenSearch cluster behind a real `opensearchpy.OpenSearch` client.

`RecordingConnection` replaces the client's HTTP connection, so opensearch-py's own serialisation,
bulk chunking and error mapping run as they do against a cluster. It hands each parsed request to a
cluster object: `FakeCluster` answers from canned responses (to check request bodies), and
`MemoryCluster` keeps documents (to check that they come back as they went in).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import defaultdict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
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


class FakeCluster:
    """Records requests and answers each from a queue of canned responses per (method, path)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._canned: dict[tuple[str, str], deque[tuple[int, Any]]] = defaultdict(deque)
        self._lock = threading.Lock()  # parallel_bulk sends from worker threads

    def respond(self, method: str, path: str, body: Any = None, status: int = 200) -> None:
        self._canned[(method, path)].append((status, body))

    def handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
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
    return OpenSearch(
        hosts=["http://fake-cluster:9200"], connection_class=RecordingConnection, cluster=cluster
    )


def error(kind: str, reason: str, status: int) -> dict[str, Any]:
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


# ------------------------------------------------------------------------------ a stateful fake


@dataclass
class _Index:
    mappings: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Which JSON values a field of each mapped type accepts (a list holds several values of the type).
_ACCEPTS = {
    "keyword": lambda v: isinstance(v, str),
    "text": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**31) <= v < 2**31,
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": _is_number,
    "boolean": lambda v: isinstance(v, bool),
}


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


def _faiss_innerproduct_score(ip: float) -> float:
    # The Spaces page: d = -ip; score = 1 / (1 + d) when d >= 0, else -d + 1.
    d = -ip
    return 1.0 / (1.0 + d) if d >= 0 else -d + 1.0


class MemoryCluster:
    """Just enough of a 2.x cluster to store documents and read them back, behind the real client.

    Indices live in memory. Create/exists/get-mapping, bulk index and delete, refresh, multi-get with
    source filtering, count and unfiltered k-NN search (exact, scored like faiss `innerproduct`) are
    answered in the documented shapes; documents are kept as the JSON they arrived as, and a strict
    mapping refuses fields it does not name or values of the wrong type, as a cluster does. Anything
    else fails the test rather than being answered wrongly.
    """

    def __init__(self) -> None:
        self.indices: dict[str, _Index] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()  # parallel_bulk sends from worker threads

    def handle(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            return self._route(request)

    def _route(self, request: Request) -> tuple[int, Any]:
        parts = request.path.strip("/").split("/")
        match request.method, parts:
            case "HEAD", [name]:
                return (200 if name in self.indices else 404), None
            case "PUT", [name]:
                if name in self.indices:
                    reason = f"index [{name}/x] already exists"
                    return 400, error("resource_already_exists_exception", reason, 400)
                self.indices[name] = _Index(copy.deepcopy(request.body["mappings"]))
                return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
            case "POST", ["_bulk"]:
                return 200, self._bulk(request.body)
        if len(parts) < 1 or parts[0] not in self.indices:
            name = parts[0] if parts else ""
            return 404, error("index_not_found_exception", f"no such index [{name}]", 404)
        index = self.indices[parts[0]]
        match request.method, parts[1:]:
            case "GET", ["_mapping"]:
                return 200, {parts[0]: {"mappings": index.mappings}}
            case "POST", ["_refresh"]:
                return 200, {"_shards": SHARDS}
            case "POST", ["_mget"]:
                return 200, self._mget(parts[0], index, request)
            case "POST", ["_count"]:
                assert request.body in (None, {"query": {"match_all": {}}}), (
                    "MemoryCluster counts everything only"
                )
                return 200, {"count": len(index.docs), "_shards": SHARDS}
            case "POST", ["_search"]:
                return self._knn(parts[0], index, request.body)
        raise AssertionError(f"MemoryCluster does not implement {request.method} {request.path}")

    def _bulk(self, lines: list[dict[str, Any]]) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        rest = iter(lines)
        for action in rest:
            ((op, meta),) = action.items()
            name, doc_id = meta["_index"], meta["_id"]
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            index = self.indices.get(name)
            if op == "index":
                source = next(rest)
                if index is None:
                    raise AssertionError("the index would be auto-created with a dynamic mapping")
                mappings = index.mappings
                problem = _source_error(mappings["properties"], mappings.get("dynamic") == "strict", source)
                if problem:
                    result.update(status=400, error=problem)
                else:
                    created = doc_id not in index.docs
                    index.docs[doc_id] = copy.deepcopy(source)
                    result.update(status=201 if created else 200, result="created" if created else "updated")
            elif op == "delete":
                found = index is not None and index.docs.pop(doc_id, None) is not None
                result.update(status=200 if found else 404, result="deleted" if found else "not_found")
            else:
                raise AssertionError(f"MemoryCluster does not implement bulk {op}")
            items.append({op: result})
        return {"took": 1, "errors": any(i[op]["status"] >= 300 for i in items for op in i), "items": items}

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

    @staticmethod
    def _knn(name: str, index: _Index, body: dict[str, Any]) -> tuple[int, Any]:
        ((field_name, knn),) = body["query"]["knn"].items()
        assert set(knn) == {"vector", "k"}, "MemoryCluster searches without filters only"
        query = np.asarray(knn["vector"], dtype=np.float64)
        dimension = index.mappings["properties"][field_name]["dimension"]
        if query.size != dimension:
            reason = f"Query vector has invalid dimension: {query.size}. Dimension should be: {dimension}"
            return 400, error("search_phase_execution_exception", reason, 400)
        scored = sorted(
            (
                (_faiss_innerproduct_score(float(np.dot(query, source[field_name]))), doc_id)
                for doc_id, source in index.docs.items()
                if source.get(field_name) is not None
            ),
            reverse=True,
        )[: min(knn["k"], body.get("size", 10))]
        excludes = body.get("_source", {}).get("excludes", [])
        hits = [
            {
                "_index": name,
                "_id": doc_id,
                "_score": score,
                "_source": _filtered(index.docs[doc_id], None, excludes),
            }
            for score, doc_id in scored
        ]
        return 200, {
            "took": 1,
            "timed_out": False,
            "_shards": SHARDS,
            "hits": {
                "total": {"value": len(hits), "relation": "eq"},
                "max_score": hits[0]["_score"] if hits else None,
                "hits": hits,
            },
        }
