"""The in-memory OpenSearch double refuses what OpenSearch 2.19 refuses, with its words.

Each case is one rule of `tests/fake_opensearch.py`, sent through the real opensearch-py client, and
names the source the rule comes from (KNN = k-NN 2.19.0.0, NS = neural-search 2.19.0.0, CORE =
OpenSearch's 2.19 line). The project's own request bodies pass every rule (last tests), so the index
contract suite, which runs against this double, cannot pass with a request a 2.19 domain refuses.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import RequestError

from mediasearch.index.base import HybridWeights, IndexFilter, IndexSpec
from mediasearch.index.opensearch import OpenSearchIndex, hybrid_query, index_body, knn_query
from tests.fake_opensearch import MemoryCluster, client_for

SPEC = IndexSpec(clip_dim=4, caption_dim=3)
VECTOR = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def cluster() -> MemoryCluster:
    cluster = MemoryCluster()
    OpenSearchIndex(client_for(cluster), "media").create(SPEC)
    return cluster


def refused(cluster: MemoryCluster, call: str, **kwargs: Any) -> str:
    """The reason the cluster gives for refusing `client.<call>(**kwargs)` (a 400)."""
    client = client_for(cluster)
    target: Any = client
    for part in call.split("."):
        target = getattr(target, part)
    with pytest.raises(RequestError) as caught:
        target(**kwargs)
    assert caught.value.status_code == 400
    return str(caught.value.info["error"]["reason"])


def pipeline(
    weights: list[Any], normalization: str = "min_max", combination: str = "arithmetic_mean"
) -> dict:
    return {
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": normalization},
                    "combination": {"technique": combination, "parameters": {"weights": weights}},
                }
            }
        ]
    }


def hybrid(queries: list[dict], **extra: Any) -> dict:
    return {"query": {"hybrid": {"queries": queries, **extra}}, "search_pipeline": pipeline([0.5, 0.5])}


KEYWORD = {"multi_match": {"query": "red", "fields": ["caption"]}}
KNN = {"knn": {"clip_vector": {"vector": VECTOR, "k": 3}}}


# ---------------------------------------------------------------- knn query (KNN KNNQueryBuilder)


@pytest.mark.parametrize("k", [0, 10_001, -1])
def test_knn_k_must_be_in_0_to_10000(cluster: MemoryCluster, k: int) -> None:
    """KNNQueryBuilder.K_MAX = 10000; Builder.validate(): "[knn] requires k to be in the range (0, 10000]"."""
    body = {"query": {"knn": {"clip_vector": {"vector": VECTOR, "k": k}}}}
    assert (
        refused(cluster, "search", index="media", body=body)
        == "[knn] requires k to be in the range (0, 10000]"
    )


def test_knn_needs_exactly_one_of_k_distance_score(cluster: MemoryCluster) -> None:
    body = {"query": {"knn": {"clip_vector": {"vector": VECTOR, "k": 3, "min_score": 0.5}}}}
    assert "exactly one of k, distance or score" in refused(cluster, "search", index="media", body=body)


def test_knn_refuses_unknown_parameters_and_method_parameters(cluster: MemoryCluster) -> None:
    """KNNQueryBuilderParser's fields; MethodParameter: ef_search and nprobes only, integers > 0."""
    body = {"query": {"knn": {"clip_vector": {"vector": VECTOR, "k": 3, "num_candidates": 9}}}}
    assert "unknown token [num_candidates]" in refused(cluster, "search", index="media", body=body)
    body = {"query": {"knn": {"clip_vector": {"vector": VECTOR, "k": 3, "method_parameters": {"ef": 5}}}}}
    assert "unknown method parameter found [ef]" in refused(cluster, "search", index="media", body=body)
    body = {
        "query": {"knn": {"clip_vector": {"vector": VECTOR, "k": 3, "method_parameters": {"ef_search": 0}}}}
    }
    assert "ef_search should be greater than 0" in refused(cluster, "search", index="media", body=body)


def test_knn_checks_the_vector_dimension_against_the_mapping(cluster: MemoryCluster) -> None:
    body = {"query": {"knn": {"clip_vector": {"vector": [1.0, 0.0], "k": 3}}}}
    reason = refused(cluster, "search", index="media", body=body)
    assert reason == "Query vector has invalid dimension: 2. Dimension should be: 4"


# ---------------------------------------------------------------- hybrid query (NS HybridQueryBuilder)


def test_hybrid_allows_at_most_5_sub_queries(cluster: MemoryCluster) -> None:
    """MAX_NUMBER_OF_SUB_QUERIES = 5, enforced while parsing."""
    client = client_for(cluster)
    five = hybrid([KEYWORD, KNN, KEYWORD, KNN, KEYWORD])
    five["search_pipeline"] = pipeline([0.2] * 5)
    client.search(index="media", body=five)
    six = hybrid([KEYWORD, KNN] * 3)
    six["search_pipeline"] = pipeline([0.1, 0.1, 0.2, 0.2, 0.2, 0.2])
    reason = refused(cluster, "search", index="media", body=six)
    assert reason == "Number of sub-queries exceeds maximum supported by [hybrid] query"


def test_hybrid_has_no_top_level_filter_in_2_19(cluster: MemoryCluster) -> None:
    """fromXContent has no `filter` branch before neural-search 3.0 (#1206)."""
    body = hybrid([KEYWORD, KNN], filter={"term": {"kind": "image"}})
    assert refused(cluster, "search", index="media", body=body) == "Field is not supported by [hybrid] query"


def test_hybrid_must_be_the_top_level_query(cluster: MemoryCluster) -> None:
    """HybridQueryPhaseSearcher L127/L145."""
    body = {
        "query": {"bool": {"must": [{"hybrid": {"queries": [KEYWORD, KNN]}}]}},
        "search_pipeline": pipeline([0.5, 0.5]),
    }
    reason = refused(cluster, "search", index="media", body=body)
    assert reason == "hybrid query must be a top level query and cannot be wrapped into other queries"


def test_hybrid_needs_at_least_one_sub_query_and_no_boost(cluster: MemoryCluster) -> None:
    assert "at least one clause" in refused(cluster, "search", index="media", body=hybrid([]))
    boosted = hybrid([KEYWORD, KNN], boost=2.0)
    assert (
        refused(cluster, "search", index="media", body=boosted) == "[hybrid] query does not support [boost]"
    )


# ---------------------------------------------------------------- pipelines (NS normalization-processor)


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ([0.5, 0.7], "sum of weights for combination must be equal to 1.0"),
        ([0.3, 0.68], "sum of weights for combination must be equal to 1.0"),
        ([1.2, -0.2], "all weights must be in range [0.0 ... 1.0]"),
        (["a", 1.0], "parameter [weights] must be a collection of numbers"),
    ],
)
def test_weights_are_in_0_1_and_sum_to_1(cluster: MemoryCluster, weights: list[Any], reason: str) -> None:
    """ScoreCombinationUtil.validateWeights: Range.of(0.0f, 1.0f) each, DoubleMath.fuzzyEquals(1.0f,
    sum, 0.01). Checked when the pipeline is made, stored or ad hoc."""
    body = {"query": {"hybrid": {"queries": [KEYWORD, KNN]}}, "search_pipeline": pipeline(weights)}
    assert refused(cluster, "search", index="media", body=body).startswith(reason)
    assert refused(cluster, "search_pipeline.put", id="p", body=pipeline(weights)).startswith(reason)


def test_weights_within_the_tolerance_pass(cluster: MemoryCluster) -> None:
    client = client_for(cluster)
    body = {"query": {"hybrid": {"queries": [KEYWORD, KNN]}}, "search_pipeline": pipeline([0.3, 0.695])}
    assert client.search(index="media", body=body)["hits"]["hits"] == []


def test_weights_count_must_match_the_sub_queries(cluster: MemoryCluster) -> None:
    """validateIfWeightsMatchScores, at query time."""
    body = {"query": {"hybrid": {"queries": [KEYWORD, KNN]}}, "search_pipeline": pipeline([0.2, 0.3, 0.5])}
    reason = refused(cluster, "search", index="media", body=body)
    assert reason == "number of weights [3] must match number of sub-queries [2] in hybrid query"


@pytest.mark.parametrize(
    ("normalization", "combination"),
    [("z_score", "arithmetic_mean"), ("min_max", "sum"), ("minmax", "arithmetic_mean")],
)
def test_only_2_19_techniques(cluster: MemoryCluster, normalization: str, combination: str) -> None:
    """ScoreNormalizationFactory: min_max, l2, rrf (z_score arrives in 3.0-beta1);
    ScoreCombinationFactory: arithmetic_mean, geometric_mean, harmonic_mean, rrf."""
    reason = refused(
        cluster, "search_pipeline.put", id="p", body=pipeline([0.5, 0.5], normalization, combination)
    )
    assert reason.startswith("provided ") and reason.endswith("technique is not supported")


def test_only_weights_as_a_combination_parameter(cluster: MemoryCluster) -> None:
    body = pipeline([0.5, 0.5])
    body["phase_results_processors"][0]["normalization-processor"]["combination"]["parameters"]["rank"] = 1
    assert "supported parameters are [weights]" in refused(cluster, "search_pipeline.put", id="p", body=body)


def test_a_named_and_an_inline_pipeline_cannot_mix(cluster: MemoryCluster) -> None:
    """CORE SearchPipelineService.resolvePipeline."""
    client_for(cluster).search_pipeline.put(id="stored", body=pipeline([0.5, 0.5]))
    body = {"query": {"hybrid": {"queries": [KEYWORD, KNN]}}, "search_pipeline": pipeline([0.5, 0.5])}
    reason = refused(cluster, "search", index="media", body=body, params={"search_pipeline": "stored"})
    assert reason.startswith("Both named and inline search pipeline were specified")


def test_a_stored_pipeline_still_works_by_name(cluster: MemoryCluster) -> None:
    client = client_for(cluster)
    client.search_pipeline.put(id="stored", body=pipeline([0.5, 0.5]))
    body = {"query": {"hybrid": {"queries": [KEYWORD, KNN]}}}
    client.search(index="media", body=body, params={"search_pipeline": "stored"})
    reason = refused(cluster, "search", index="media", body=body, params={"search_pipeline": "missing"})
    assert reason == "Pipeline missing is not defined"


# ---------------------------------------------------------------- mappings (KNN KNNVectorFieldMapper)


def _with_vector(**changes: Any) -> dict:
    body = copy.deepcopy(index_body(SPEC))
    vector = body["mappings"]["properties"]["clip_vector"]
    for key, value in changes.items():
        if key.startswith("method."):
            vector["method"][key.removeprefix("method.")] = value
        else:
            vector[key] = value
    return body


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dimension": 0}, "Dimension value must be greater than 0"),
        ({"dimension": 16_001}, "Dimension value cannot be greater than 16000"),
        ({"method.space_type": "hamming"}, "Space type [hamming] is not supported with [float] data type"),
        ({"space_type": "l2"}, 'Space type in "method" and top level space type should be same'),
        ({"compression_level": "4x"}, '"faiss" does not support "4x" compression'),
        ({"compression_level": "64x"}, "Invalid compression level [64x]"),
        ({"data_type": "binary", "dimension": 12, "method.space_type": "hamming"}, "multiply of 8"),
        ({"method.parameters": {"m": 0}}, "Parameter [m] must be a positive integer"),
        ({"method.parameters": {"m_max": 16}}, "Invalid parameter [m_max]"),
        ({"similarity": "cosine"}, "unknown parameter [similarity]"),
    ],
)
def test_knn_vector_mappings(changes: dict[str, Any], reason: str) -> None:
    cluster = MemoryCluster()
    assert reason in refused(cluster, "indices.create", index="other", body=_with_vector(**changes))


# ---------------------------------------------------------------- the project's own requests pass


def test_the_projects_bodies_pass_every_rule(cluster: MemoryCluster) -> None:
    client = client_for(cluster)
    flt = IndexFilter(tags=("dog",), min_width=10, uri_prefix="s3://b/")
    client.search(index="media", body=knn_query(np.array(VECTOR), 10_000, flt))
    for weights in (HybridWeights(), HybridWeights(1, 0), HybridWeights(0.5, 0.7), HybridWeights(0, 1e-9)):
        client.search(index="media", body=hybrid_query("red dog", np.array(VECTOR), 100, flt, weights))
    assert len(cluster.requests) == 2 + 5  # HEAD + PUT, then the searches, all answered 200
