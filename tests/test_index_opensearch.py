"""OpenSearchIndex: request bodies against the documented formats, and the real client call paths.

The expected bodies are written out literally from the OpenSearch docs (knn_vector mapping, faiss
methods, efficient k-NN filtering, bulk NDJSON) rather than rebuilt from the code under test. The
client tests run a real `OpenSearch` client whose connection class records each HTTP request and
answers with responses shaped like a 2.x cluster's (tests/fake_opensearch.py), so opensearch-py's own
serialisation, bulk chunking and error mapping are exercised.
"""

from __future__ import annotations

import base64
import copy
import os
import uuid
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from opensearchpy import RequestsAWSV4SignerAuth, RequestsHttpConnection

from mediasearch import backends
from mediasearch.core.records import DocKind, DocumentFields, IndexDocument
from mediasearch.core.settings import Settings
from mediasearch.index.base import IndexError_, IndexFilter, IndexSpec, VectorField
from mediasearch.index.opensearch import (
    OpenSearchIndex,
    bulk_actions,
    cosine_from_score,
    filter_clause,
    index_body,
    knn_query,
)
from tests.fake_opensearch import (
    SHARDS,
    FakeCluster,
    MemoryCluster,
    Refused,
    check_pipeline,
    check_search,
    client_for,
    error,
)

SPEC = IndexSpec(clip_dim=4, caption_dim=3)

# PUT /media, per the knn_vector and "Methods and engines" pages (faiss hnsw, innerproduct).
EXPECTED_INDEX_BODY: dict[str, Any] = {
    "settings": {"index": {"knn": True}},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "id": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "uri": {"type": "keyword"},
            "video_id": {"type": "keyword"},
            "scene": {"type": "integer"},
            "t_start": {"type": "float"},
            "t_end": {"type": "float"},
            "thumbnail": {"type": "keyword", "index": False},
            "caption": {"type": "text", "analyzer": "english"},
            "tags": {"type": "keyword"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "duration": {"type": "float"},
            "scene_count": {"type": "integer"},
            "strip": {"type": "keyword", "index": False},
            "fingerprint": {"type": "keyword"},
            "content_hash": {"type": "keyword"},
            "model": {"type": "keyword"},
            "taken_at": {"type": "date"},
            "camera": {"type": "keyword"},
            "gps_lat": {"type": "float"},
            "gps_lon": {"type": "float"},
            "clip_vector": {
                "type": "knn_vector",
                "dimension": 4,
                "method": {
                    "name": "hnsw",
                    "engine": "faiss",
                    "space_type": "innerproduct",
                    "parameters": {"m": 32, "ef_construction": 128},
                },
            },
            "caption_vector": {
                "type": "knn_vector",
                "dimension": 3,
                "method": {
                    "name": "hnsw",
                    "engine": "faiss",
                    "space_type": "innerproduct",
                    "parameters": {"m": 32, "ef_construction": 128},
                },
            },
            "learned_vector": {
                "type": "knn_vector",
                "dimension": 4096,
                "method": {
                    "name": "hnsw",
                    "engine": "faiss",
                    "space_type": "innerproduct",
                    "parameters": {"m": 32, "ef_construction": 128},
                },
            },
        },
    },
}


def _docs() -> list[IndexDocument]:
    # Components are exact in float32 so the JSON lists below can be written literally.
    return [
        IndexDocument(
            id="img1",
            kind=DocKind.IMAGE,
            uri="s3://bucket/images/a.jpg",
            caption="a dog on a beach",
            tags=["beach", "dog"],
            width=640,
            height=480,
            fingerprint="etag-a",
            model="clip-b32",
            clip_vector=[1.0, 0.0, 0.0, 0.0],
            caption_vector=[0.0, 1.0, 0.0],
        ),
        IndexDocument(
            id="v1-s0",
            kind=DocKind.SCENE,
            uri="s3://bucket/videos/v1.mp4",
            video_id="v1",
            scene=0,
            t_start=0.0,
            t_end=2.5,
            thumbnail="s3://bucket/thumbs/v1-0.jpg",
            fingerprint="etag-v1",
            clip_vector=[0.0, 1.0, 0.0, 0.0],
        ),
        IndexDocument(
            id="v1",
            kind=DocKind.VIDEO,
            uri="s3://bucket/videos/v1.mp4",
            video_id="v1",
            duration=10.0,
            fingerprint="etag-v1",
            clip_vector=[0.5, 0.5, 0.5, 0.5],
        ),
    ]


# The NDJSON that POST /_bulk must carry for _docs(): action line, then the document source.
EXPECTED_BULK_LINES: list[dict[str, Any]] = [
    {"index": {"_index": "media", "_id": "img1"}},
    {
        "id": "img1",
        "kind": "image",
        "uri": "s3://bucket/images/a.jpg",
        "caption": "a dog on a beach",
        "tags": ["beach", "dog"],
        "width": 640,
        "height": 480,
        "fingerprint": "etag-a",
        "model": "clip-b32",
        "clip_vector": [1.0, 0.0, 0.0, 0.0],
        "caption_vector": [0.0, 1.0, 0.0],
    },
    {"index": {"_index": "media", "_id": "v1-s0"}},
    {
        "id": "v1-s0",
        "kind": "scene",
        "uri": "s3://bucket/videos/v1.mp4",
        "video_id": "v1",
        "scene": 0,
        "t_start": 0.0,
        "t_end": 2.5,
        "thumbnail": "s3://bucket/thumbs/v1-0.jpg",
        "tags": [],
        "fingerprint": "etag-v1",
        "clip_vector": [0.0, 1.0, 0.0, 0.0],
    },
    {"index": {"_index": "media", "_id": "v1"}},
    {
        "id": "v1",
        "kind": "video",
        "uri": "s3://bucket/videos/v1.mp4",
        "video_id": "v1",
        "tags": [],
        "duration": 10.0,
        "fingerprint": "etag-v1",
        "clip_vector": [0.5, 0.5, 0.5, 0.5],
    },
]


# ---------------------------------------------------------------- request bodies


def test_index_body_is_the_documented_knn_mapping() -> None:
    assert index_body(SPEC) == EXPECTED_INDEX_BODY


def test_mapping_names_every_index_document_field() -> None:
    # With dynamic: strict, a field missing here would make every upsert fail.
    assert set(index_body(SPEC)["mappings"]["properties"]) == set(IndexDocument.model_fields)


def test_bulk_actions_key_by_id_and_omit_a_missing_caption_vector() -> None:
    actions = list(bulk_actions("media", _docs()))
    assert [a["_op_type"] for a in actions] == ["index", "index", "index"]
    assert [a["_id"] for a in actions] == ["img1", "v1-s0", "v1"]
    assert {a["_index"] for a in actions} == {"media"}
    assert [a["_source"] for a in actions] == EXPECTED_BULK_LINES[1::2]
    assert "caption_vector" not in actions[1]["_source"]


def test_empty_filter_gives_no_clause() -> None:
    assert filter_clause(None) is None
    assert filter_clause(IndexFilter()) is None


def test_filter_clause_maps_every_field() -> None:
    f = IndexFilter(
        kinds=(DocKind.IMAGE, DocKind.SCENE),
        video_id="v1",
        exclude_video_id="v2",
        tags=("beach", "dog"),
        uri_prefix="s3://bucket/images/",
        min_width=320,
        min_height=200,
    )
    assert filter_clause(f) == {
        "bool": {
            "filter": [
                {"terms": {"kind": ["image", "scene"]}},
                {"term": {"video_id": "v1"}},
                {"term": {"tags": "beach"}},
                {"term": {"tags": "dog"}},
                {"prefix": {"uri": "s3://bucket/images/"}},
                {"range": {"width": {"gte": 320}}},
                {"range": {"height": {"gte": 200}}},
            ],
            "must_not": [{"term": {"video_id": "v2"}}],
        }
    }


def test_filter_clause_with_only_an_exclusion() -> None:
    assert filter_clause(IndexFilter(exclude_video_id="v2")) == {
        "bool": {"must_not": [{"term": {"video_id": "v2"}}]}
    }


def test_knn_query_puts_the_filter_inside_knn() -> None:
    body = knn_query(
        np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32),
        5,
        IndexFilter(kinds=(DocKind.SCENE,), video_id="v1"),
    )
    # The "Using a Faiss efficient filter" request, with our field names.
    assert body == {
        "size": 5,
        "_source": {"excludes": ["clip_vector", "caption_vector", "learned_vector"]},
        "query": {
            "knn": {
                "clip_vector": {
                    "vector": [0.5, 0.5, 0.5, 0.5],
                    "k": 5,
                    "filter": {
                        "bool": {
                            "filter": [
                                {"terms": {"kind": ["scene"]}},
                                {"term": {"video_id": "v1"}},
                            ]
                        }
                    },
                }
            }
        },
    }


def test_knn_query_without_filter_on_the_caption_field() -> None:
    body = knn_query(np.array([0.0, 1.0, 0.0]), 2, None, VectorField.CAPTION)
    assert body["query"] == {"knn": {"caption_vector": {"vector": [0.0, 1.0, 0.0], "k": 2}}}


@pytest.mark.parametrize(
    ("vector", "k"),
    [(np.zeros((2, 2)), 3), (np.array([]), 3), (np.array([1.0, 0.0]), 0), (np.array([1.0, 0.0]), 10_001)],
)
def test_knn_query_rejects_bad_input(vector: np.ndarray, k: int) -> None:
    """k in (0, 10000] is k-NN 2.19's own rule (KNNQueryBuilder.K_MAX): refused here, before a request."""
    with pytest.raises(ValueError):
        knn_query(vector, k)
    assert knn_query(np.array([1.0, 0.0]), 10_000)["size"] == 10_000


# ---------------------------------------------------------------- score conversion


def _documented_faiss_score(ip: float) -> float:
    # Spaces page, innerproduct with NMSLIB/Faiss: d = -x.y; score = 1/(1+d) if d >= 0 else -d + 1.
    d = -ip
    return 1.0 / (1.0 + d) if d >= 0 else -d + 1.0


@pytest.mark.parametrize("ip", [-1.0, -0.75, -0.2, 0.0, 0.1, 0.5, 0.99, 1.0])
def test_cosine_from_score_inverts_the_documented_formula(ip: float) -> None:
    assert cosine_from_score(_documented_faiss_score(ip)) == pytest.approx(ip, abs=1e-12)


@pytest.mark.parametrize(("score", "cosine"), [(2.0, 1.0), (1.8, 0.8), (1.0, 0.0), (0.8, -0.25), (0.5, -1.0)])
def test_cosine_from_score_known_values(score: float, cosine: float) -> None:
    assert cosine_from_score(score) == pytest.approx(cosine)


def test_cosine_from_score_clamps_rounding_and_rejects_nonsense() -> None:
    assert cosine_from_score(2.0000002) == 1.0
    assert cosine_from_score(0.4999999) == -1.0
    with pytest.raises(ValueError):
        cosine_from_score(0.0)


# ---------------------------------------------------------------- through a recording fake cluster


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def index(cluster: FakeCluster) -> OpenSearchIndex:
    return OpenSearchIndex(client_for(cluster), "media")


def _bulk_item(op: str, id: str, status: int, result: str) -> dict[str, Any]:
    return {
        op: {
            "_index": "media",
            "_id": id,
            "_version": 1,
            "result": result,
            "_shards": SHARDS,
            "status": status,
        }
    }


def _source_without_vectors(doc: IndexDocument) -> dict[str, Any]:
    return doc.model_dump(
        mode="json", exclude_none=True, exclude={"clip_vector", "caption_vector", "learned_vector"}
    )


def test_create_puts_the_mapping_when_the_index_is_missing(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    cluster.respond("HEAD", "/media", status=404)
    cluster.respond("PUT", "/media", {"acknowledged": True, "shards_acknowledged": True, "index": "media"})
    index.create(SPEC)
    assert cluster.calls() == [("HEAD", "/media"), ("PUT", "/media")]
    assert cluster.only("PUT", "/media").body == EXPECTED_INDEX_BODY


def test_create_is_a_no_op_when_the_index_has_the_same_dimensions(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    cluster.respond("HEAD", "/media")
    cluster.respond("GET", "/media/_mapping", {"media": {"mappings": EXPECTED_INDEX_BODY["mappings"]}})
    index.create(SPEC)
    assert cluster.calls() == [("HEAD", "/media"), ("GET", "/media/_mapping")]


def test_create_refuses_an_existing_index_with_other_dimensions(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    cluster.respond("HEAD", "/media")
    cluster.respond(
        "GET",
        "/media/_mapping",
        {"media": {"mappings": index_body(IndexSpec(clip_dim=8, caption_dim=3))["mappings"]}},
    )
    with pytest.raises(IndexError_, match="clip_vector dimension 8"):
        index.create(SPEC)


def test_create_refuses_an_existing_index_without_a_document_field(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    # An index made before `strip` existed: its strict mapping would refuse every video document.
    mappings = copy.deepcopy(EXPECTED_INDEX_BODY["mappings"])
    del mappings["properties"]["strip"]
    cluster.respond("HEAD", "/media")
    cluster.respond("GET", "/media/_mapping", {"media": {"mappings": mappings}})
    with pytest.raises(IndexError_, match="already exists without strip in its mapping"):
        index.create(SPEC)


def test_create_tolerates_losing_the_race_to_another_creator(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    cluster.respond("HEAD", "/media", status=404)
    cluster.respond(
        "PUT",
        "/media",
        error("resource_already_exists_exception", "index [media/x1] already exists", 400),
        400,
    )
    cluster.respond("GET", "/media/_mapping", {"media": {"mappings": EXPECTED_INDEX_BODY["mappings"]}})
    index.create(SPEC)
    assert cluster.calls() == [("HEAD", "/media"), ("PUT", "/media"), ("GET", "/media/_mapping")]


def test_exists(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media", status=404)
    cluster.respond("HEAD", "/media")
    assert index.exists() is False
    assert index.exists() is True


def test_upsert_sends_bulk_ndjson_then_refreshes(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media")
    cluster.respond(
        "POST",
        "/_bulk",
        {
            "took": 12,
            "errors": False,
            "items": [_bulk_item("index", id, 201, "created") for id in ("img1", "v1-s0", "v1")],
        },
    )
    assert index.upsert(_docs()) == 3
    assert cluster.calls() == [("HEAD", "/media"), ("POST", "/_bulk"), ("POST", "/media/_refresh")]
    assert cluster.only("POST", "/_bulk").body == EXPECTED_BULK_LINES


def test_upsert_names_the_ids_that_failed(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media")
    failed = {
        "index": {
            "_index": "media",
            "_id": "v1-s0",
            "status": 400,
            "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [clip_vector]"},
        }
    }
    cluster.respond(
        "POST",
        "/_bulk",
        {
            "took": 3,
            "errors": True,
            "items": [
                _bulk_item("index", "img1", 201, "created"),
                failed,
                _bulk_item("index", "v1", 200, "updated"),
            ],
        },
    )
    with pytest.raises(
        IndexError_, match=r"failed for 1 document\(s\): v1-s0 \(mapper_parsing_exception: failed to parse"
    ):
        index.upsert(_docs())
    # What did succeed is still made visible.
    assert cluster.calls()[-1] == ("POST", "/media/_refresh")


def test_upsert_sends_one_version_of_a_repeated_id_the_last(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    first, second = _docs()[0], _docs()[0].model_copy(update={"fingerprint": "etag-new"})
    cluster.respond("HEAD", "/media")
    cluster.respond(
        "POST", "/_bulk", {"took": 1, "errors": False, "items": [_bulk_item("index", "img1", 200, "updated")]}
    )
    assert index.upsert([first, second]) == 1
    lines = cluster.only("POST", "/_bulk").body
    assert len(lines) == 2
    assert lines[1]["fingerprint"] == "etag-new"


def test_upsert_refuses_to_auto_create_the_index(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media", status=404)
    with pytest.raises(IndexError_, match="call create"):
        index.upsert(_docs())
    assert cluster.calls() == [("HEAD", "/media")]


def test_upsert_of_nothing_sends_nothing(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    assert index.upsert([]) == 0
    assert cluster.requests == []


def test_knn_searches_with_the_filter_and_returns_cosines(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    docs = _docs()
    cluster.respond(
        "POST",
        "/media/_search",
        {
            "took": 4,
            "timed_out": False,
            "_shards": SHARDS,
            "hits": {
                "total": {"value": 2, "relation": "eq"},
                "max_score": 1.5,
                "hits": [
                    {
                        "_index": "media",
                        "_id": "v1",
                        "_score": 1.5,
                        "_source": _source_without_vectors(docs[2]),
                    },
                    {
                        "_index": "media",
                        "_id": "v1-s0",
                        "_score": 0.8,
                        "_source": _source_without_vectors(docs[1]),
                    },
                ],
            },
        },
    )
    hits = index.knn(np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32), 2, IndexFilter(video_id="v1"))

    assert cluster.only("POST", "/media/_search").body == {
        "size": 2,
        "_source": {"excludes": ["clip_vector", "caption_vector", "learned_vector"]},
        "query": {
            "knn": {
                "clip_vector": {
                    "vector": [0.5, 0.5, 0.5, 0.5],
                    "k": 2,
                    "filter": {"bool": {"filter": [{"term": {"video_id": "v1"}}]}},
                }
            }
        },
    }
    assert [h.document.id for h in hits] == ["v1", "v1-s0"]
    assert [h.score for h in hits] == pytest.approx([0.5, -0.25])
    assert hits[0].document.kind is DocKind.VIDEO
    assert hits[1].document.t_end == 2.5
    # Hits carry no vectors (the request excludes them from _source), and their type says so.
    assert all(type(h.document) is DocumentFields for h in hits)


def _mget_response(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "docs": [
            {
                "_index": "media",
                "_id": "img1",
                "_version": 1,
                "_seq_no": 0,
                "_primary_term": 1,
                "found": True,
                "_source": source,
            },
            {"_index": "media", "_id": "nope", "found": False},
        ]
    }


def test_get_many_uses_mget_without_vectors_and_leaves_out_missing_ids(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    docs = _docs()
    cluster.respond("POST", "/media/_mget", _mget_response(_source_without_vectors(docs[0])))
    got = index.get_many(["img1", "nope", "img1"])
    request = cluster.only("POST", "/media/_mget")
    assert request.body == {"ids": ["img1", "nope"]}
    # The URL form of source filtering (multi-get API): vectors never leave the cluster.
    assert request.params == {"_source_excludes": "clip_vector,caption_vector,learned_vector"}
    assert [d.id for d in got] == ["img1"] and type(got[0]) is DocumentFields
    assert got[0].tags == ["beach", "dog"]


def test_get_many_with_vectors_fetches_whole_sources(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    docs = _docs()
    cluster.respond(
        "POST", "/media/_mget", _mget_response(docs[0].model_dump(mode="json", exclude_none=True))
    )
    got = index.get_many_with_vectors(["img1", "nope", "img1"])
    assert cluster.only("POST", "/media/_mget").body == {"ids": ["img1", "nope"]}
    assert cluster.only("POST", "/media/_mget").params == {}
    assert [d.id for d in got] == ["img1"]
    assert got[0].clip_vector.dtype == np.float32
    np.testing.assert_array_equal(got[0].clip_vector, docs[0].clip_vector)
    np.testing.assert_array_equal(got[0].caption_vector, docs[0].caption_vector)
    assert got[0].tags == ["beach", "dog"]


def test_fingerprints_fetch_only_the_fingerprint(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond(
        "POST",
        "/media/_mget",
        {
            "docs": [
                {"_index": "media", "_id": "img1", "found": True, "_source": {"fingerprint": "etag-a"}},
                {"_index": "media", "_id": "old", "found": True, "_source": {}},
                {"_index": "media", "_id": "nope", "found": False},
            ]
        },
    )
    assert index.fingerprints(["img1", "old", "nope"]) == {"img1": "etag-a", "old": None}
    request = cluster.only("POST", "/media/_mget")
    assert request.body == {"ids": ["img1", "old", "nope"]}
    assert request.params == {"_source_includes": "fingerprint"}


def test_count_with_and_without_a_filter(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("POST", "/media/_count", {"count": 3, "_shards": SHARDS})
    cluster.respond("POST", "/media/_count", {"count": 1, "_shards": SHARDS})
    assert index.count() == 3
    assert index.count(IndexFilter(kinds=(DocKind.IMAGE,), tags=("dog",))) == 1
    first, second = cluster.requests
    assert first.body is None
    assert second.body == {
        "query": {"bool": {"filter": [{"terms": {"kind": ["image"]}}, {"term": {"tags": "dog"}}]}}
    }


def test_delete_counts_deleted_and_ignores_missing_ids(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media")
    cluster.respond(
        "POST",
        "/_bulk",
        {
            "took": 2,
            "errors": False,
            "items": [
                _bulk_item("delete", "img1", 200, "deleted"),
                _bulk_item("delete", "gone", 404, "not_found"),
            ],
        },
    )
    assert index.delete(["img1", "gone"]) == 1
    assert cluster.calls() == [("HEAD", "/media"), ("POST", "/_bulk"), ("POST", "/media/_refresh")]
    assert cluster.only("POST", "/_bulk").body == [
        {"delete": {"_index": "media", "_id": "img1"}},
        {"delete": {"_index": "media", "_id": "gone"}},
    ]


def test_delete_on_a_missing_index_deletes_nothing(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond("HEAD", "/media", status=404)
    assert index.delete(["img1"]) == 0
    assert cluster.calls() == [("HEAD", "/media")]


def test_delete_where_uses_delete_by_query_with_refresh(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond(
        "POST",
        "/media/_delete_by_query",
        {
            "took": 7,
            "timed_out": False,
            "total": 2,
            "deleted": 2,
            "batches": 1,
            "version_conflicts": 0,
            "noops": 0,
            "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0,
            "requests_per_second": -1.0,
            "throttled_until_millis": 0,
            "failures": [],
        },
    )
    assert index.delete_where(IndexFilter(video_id="v1", kinds=(DocKind.SCENE,))) == 2
    request = cluster.only("POST", "/media/_delete_by_query")
    assert request.params == {"refresh": "true"}
    assert request.body == {
        "query": {"bool": {"filter": [{"terms": {"kind": ["scene"]}}, {"term": {"video_id": "v1"}}]}}
    }


def test_optimize_refreshes(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    index.optimize()
    assert cluster.calls() == [("POST", "/media/_refresh")]


def test_cluster_errors_become_index_errors(cluster: FakeCluster, index: OpenSearchIndex) -> None:
    cluster.respond(
        "POST",
        "/media/_search",
        error(
            "search_phase_execution_exception",
            "query vector has invalid dimension: 3. Dimension should be: 4",
            400,
        ),
        400,
    )
    with pytest.raises(
        IndexError_, match=r"knn search on collection 'media' failed: .*search_phase_execution"
    ):
        index.knn(np.array([1.0, 0.0, 0.0]), 3)


def test_reads_of_a_collection_never_created_find_nothing(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    missing = error("index_not_found_exception", "no such index [media]", 404)
    for path in (
        "/media/_search",
        "/media/_count",
        "/media/_mget",
        "/media/_mget",
        "/media/_delete_by_query",
    ):
        cluster.respond("POST", path, missing, 404)
    assert index.knn(np.array([1.0, 0.0, 0.0, 0.0]), 3) == []
    assert index.count() == 0
    assert index.get_many(["img1"]) == []
    assert index.fingerprints(["img1"]) == {}
    assert index.delete_where(IndexFilter(video_id="v1")) == 0


# ---------------------------------------------------------------- backends.opensearch_index (settings -> client)


def test_opensearch_index_requires_a_url() -> None:
    with pytest.raises(ValueError, match="MEDIASEARCH_OPENSEARCH_URL"):
        backends.opensearch_index(Settings(_env_file=None, opensearch_url=None))


def test_opensearch_index_uses_basic_auth_when_a_username_is_set() -> None:
    settings = Settings(
        _env_file=None,
        opensearch_url="https://search.example:9200",
        opensearch_username="admin",
        opensearch_password="s3cret",
        opensearch_aws_region=None,
        collection="photos",
    )
    index = backends.opensearch_index(settings)
    connection = index.client.transport.get_connection()
    assert index.collection == "photos"
    assert connection.host == "https://search.example:9200"
    assert connection.headers["authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()


def test_opensearch_index_signs_with_sigv4_when_a_region_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings(
        _env_file=None,
        opensearch_url="https://search-media.eu-west-1.es.amazonaws.com",
        opensearch_aws_region="eu-west-1",
        opensearch_username=None,
    )
    connection = backends.opensearch_index(settings).client.transport.get_connection()
    assert isinstance(connection, RequestsHttpConnection)
    assert isinstance(connection.session.auth, RequestsAWSV4SignerAuth)
    # Sign a request offline to check the credential scope names the region and the "es" service.
    signed = connection.session.auth(
        requests.Request("GET", settings.opensearch_url + "/_cluster/health").prepare()
    )
    assert "Credential=AKIDEXAMPLE/" in signed.headers["Authorization"]
    assert "/eu-west-1/es/aws4_request" in signed.headers["Authorization"]


def test_opensearch_index_refuses_both_sigv4_and_basic_auth() -> None:
    settings = Settings(
        _env_file=None,
        opensearch_url="https://search.example",
        opensearch_aws_region="eu-west-1",
        opensearch_username="admin",
    )
    with pytest.raises(ValueError, match="not both"):
        backends.opensearch_index(settings)


# ---------------------------------------------------------------- a real cluster, when there is one


@pytest.mark.skipif(
    not os.environ.get("OPENSEARCH_URL"), reason="set OPENSEARCH_URL to run against a cluster"
)
def test_smoke_against_a_real_cluster() -> None:
    settings = Settings(
        opensearch_url=os.environ["OPENSEARCH_URL"], collection=f"smoke-{uuid.uuid4().hex[:12]}"
    )
    index = backends.opensearch_index(settings)
    try:
        index.create(SPEC)
        index.create(SPEC)  # idempotent
        assert index.upsert(_docs()) == 3
        assert index.count() == 3

        query = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)
        hits = index.knn(query, 3, IndexFilter(video_id="v1"))
        assert [h.document.id for h in hits] == ["v1-s0", "v1"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[1].score == pytest.approx(0.5, abs=1e-5)
        assert index.fingerprints(["img1", "nope"]) == {"img1": "etag-a"}
    finally:
        index.client.indices.delete(index=settings.collection, ignore_unavailable=True)
        index.close()


def test_hybrid_query_body_filters_both_subqueries_and_carries_its_pipeline() -> None:
    from mediasearch.index.base import HybridWeights
    from mediasearch.index.opensearch import hybrid_query

    body = hybrid_query(
        "red car", np.array([1.0, 0.0], dtype=np.float32), 3, IndexFilter(tags=("car",)), HybridWeights(1, 3)
    )
    tag_filter = [{"term": {"tags": "car"}}]
    assert body == {
        "size": 3,
        "_source": {"excludes": ["clip_vector", "caption_vector", "learned_vector"]},
        "query": {
            "hybrid": {
                "queries": [
                    {
                        "bool": {
                            "must": [{"multi_match": {"query": "red car", "fields": ["caption", "tags"]}}],
                            "filter": tag_filter,
                        }
                    },
                    {
                        "knn": {
                            "clip_vector": {
                                "vector": [1.0, 0.0],
                                "k": 3,
                                "filter": {"bool": {"filter": tag_filter}},
                            }
                        }
                    },
                ]
            }
        },
        # A temporary pipeline in the request (docs 2.19, "Using a temporary search pipeline for a
        # request"; CORE SearchSourceBuilder parses an object `search_pipeline` since 2.8).
        "search_pipeline": {
            "phase_results_processors": [
                {
                    "normalization-processor": {
                        "normalization": {"technique": "min_max"},
                        "combination": {
                            "technique": "arithmetic_mean",
                            "parameters": {"weights": [0.25, 0.75]},
                        },
                    }
                }
            ]
        },
    }
    check_search(body, {}, {})  # and the 2.19 rules accept it


@settings(max_examples=300, deadline=None)
@given(
    keyword=st.floats(min_value=0, max_value=1, allow_nan=False),
    clip=st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_any_pair_the_api_accepts_makes_weights_opensearch_accepts(keyword: float, clip: float) -> None:
    """The API takes any pair in [0, 1], not both 0 (HybridWeightsModel). NS 2.19
    ScoreCombinationUtil.validateWeights wants each in [0, 1] and a sum of 1 within 0.01, so
    {"keyword": 0.5, "clip": 0.7} used to be refused by the cluster (a 503 to the caller)."""
    from mediasearch.core.records import HybridWeightsModel
    from mediasearch.index.base import HybridWeights
    from mediasearch.index.opensearch import search_pipeline_body

    assume(keyword + clip > 0)
    HybridWeightsModel(keyword=keyword, clip=clip)  # the API accepts it
    weights = HybridWeights(keyword, clip)
    fusion = check_pipeline(search_pipeline_body(weights))
    assert fusion is not None and fusion.weights is not None
    assert abs(sum(fusion.weights) - 1.0) <= 1e-9
    # Scaling keeps the ratio, so the ranking is the caller's.
    assert weights.keyword * clip == pytest.approx(weights.vector * keyword, rel=1e-9, abs=1e-300)


def test_the_unscaled_pair_is_what_2_19_refuses() -> None:
    body = {
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.7]}}
                }
            }
        ]
    }
    with pytest.raises(Refused, match=r"sum of weights for combination must be equal to 1\.0"):
        check_pipeline(body)


def test_hybrid_sends_each_requests_weights_and_creates_no_pipeline(
    cluster: FakeCluster, index: OpenSearchIndex
) -> None:
    """No PUT /_search/pipeline/...: a pipeline per weight pair grew cluster state without bound from
    public input, and needed a write verb the query Lambda is no longer granted (infra/template.yaml)."""
    from mediasearch.index.base import HybridWeights

    docs = _docs()
    hit = {"_index": "media", "_id": docs[0].id, "_score": 0.9, "_source": _source_without_vectors(docs[0])}
    response = {
        "took": 1,
        "timed_out": False,
        "_shards": SHARDS,
        "hits": {"total": {"value": 1}, "hits": [hit]},
    }
    cluster.respond("POST", "/media/_search", response)
    cluster.respond("POST", "/media/_search", response)
    vector = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    hits = index.hybrid("red", vector, 1)
    index.hybrid("red", vector, 1, weights=HybridWeights(keyword=0.5, vector=0.7))
    assert cluster.calls() == [("POST", "/media/_search")] * 2
    searches = cluster.requests
    assert all(r.params == {} for r in searches)  # a named pipeline and an inline one cannot mix
    weights = [
        r.body["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]["combination"][
            "parameters"
        ]["weights"]
        for r in searches
    ]
    assert weights[0] == [0.3, 0.7]
    assert weights[1] == pytest.approx([0.5 / 1.2, 0.7 / 1.2]) and sum(weights[1]) == pytest.approx(1.0)
    assert "hybrid" in searches[0].body["query"]
    assert [h.document.id for h in hits] == [docs[0].id] and hits[0].score == pytest.approx(0.9)


# ---------------------------------------------------------------- bulk loads on a throttled cluster


def _memory_index(collection: str = "media") -> tuple[MemoryCluster, OpenSearchIndex]:
    cluster = MemoryCluster()
    # No waiting between retries in tests; the production backoff is BULK_BACKOFF_S doubling.
    index = OpenSearchIndex(client_for(cluster), collection, bulk_backoff_s=0.0)
    index.create(SPEC)
    return cluster, index


def test_upsert_retries_documents_a_throttled_cluster_rejects() -> None:
    """A busy domain answers some bulk items with 429 (es_rejected_execution_exception). opensearch-py
    retries those only in streaming_bulk with max_retries and raise_on_error=False
    (helpers/actions.py); parallel_bulk, used before, gave up and the load failed."""
    cluster, index = _memory_index()
    cluster.throttle(bulk_documents=2)
    assert index.upsert(_docs()) == 3
    assert cluster.rejected_documents == 2
    assert sorted(cluster.indices["media"].docs) == ["img1", "v1", "v1-s0"]
    bulks = [r for r in cluster.requests if r.path == "/_bulk"]
    assert len(bulks) == 2 and len(bulks[1].body) == 4  # the retry carries only the two rejected


def test_upsert_retries_a_whole_bulk_request_answered_429() -> None:
    cluster, index = _memory_index()
    cluster.throttle(bulk_requests=2)
    assert index.upsert(_docs()) == 3
    assert cluster.rejected_requests == 2 and len(cluster.indices["media"].docs) == 3


def test_upsert_still_names_other_failures_and_gives_up_after_its_retries() -> None:
    cluster, index = _memory_index()
    bad = _docs()[0].model_copy(update={"id": "bad", "clip_vector": np.zeros(3, dtype=np.float32)})
    cluster.throttle(bulk_documents=2)
    with pytest.raises(IndexError_, match=r"failed for 1 document\(s\): bad \(mapper_parsing_exception"):
        index.upsert([*_docs(), bad])
    assert sorted(cluster.indices["media"].docs) == ["img1", "v1", "v1-s0"]

    cluster, index = _memory_index()
    cluster.throttle(bulk_documents=1000)  # throttled for longer than the retries last
    with pytest.raises(
        IndexError_, match=r"failed for 3 document\(s\): img1 \(es_rejected_execution_exception"
    ):
        index.upsert(_docs())
    assert cluster.rejected_documents == 3 * (1 + index.bulk_retries)
    assert cluster.indices["media"].docs == {}


def test_delete_retries_throttled_documents_too() -> None:
    cluster, index = _memory_index()
    index.upsert(_docs())
    cluster.throttle(bulk_documents=1)
    assert index.delete(["img1", "v1"]) == 2
    assert sorted(cluster.indices["media"].docs) == ["v1-s0"]
