"""Hybrid weights from the API to OpenSearch: any pair the API accepts searches, with the pair scaled
to sum to 1, and the explanation shows the pair that made the score.

Runs the search service over the OpenSearch backend on the in-memory 2.19 cluster, which refuses a
normalization-processor whose weights do not sum to 1 +- 0.01 (neural-search 2.19,
ScoreCombinationUtil.validateWeights): `{"keyword": 0.5, "clip": 0.7}` used to end as a 503.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from mediasearch.core.records import DocKind, IndexDocument, SearchRequest
from mediasearch.index.base import IndexSpec
from mediasearch.index.opensearch import OpenSearchIndex
from mediasearch.query.encoder import QueryEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.fake_opensearch import MemoryCluster, client_for


class Fixed(QueryEncoder):
    def encode_text(self, text: str) -> np.ndarray:
        return np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)

    def encode_image(self, data: bytes) -> np.ndarray:
        raise AssertionError("text queries only")


def image(i: int, caption: str, vector: list[float]) -> IndexDocument:
    return IndexDocument(
        id=f"img{i}",
        kind=DocKind.IMAGE,
        uri=f"/data/{i}.png",  # a local path: links need no S3 presigning
        caption=caption,
        clip_vector=np.asarray(vector, dtype=np.float32),
    )


@pytest.fixture
def searched() -> tuple[MemoryCluster, SearchService]:
    cluster = MemoryCluster()
    index = OpenSearchIndex(client_for(cluster), "media")
    index.create(IndexSpec(clip_dim=4, caption_dim=3))
    index.upsert(
        [
            image(0, "a red circle", [1.0, 0.0, 0.0, 0.0]),
            image(1, "a blue square", [0.0, 1.0, 0.0, 0.0]),
            image(2, "a green star", [0.6, 0.8, 0.0, 0.0]),
        ]
    )
    return cluster, SearchService(index, Fixed(), None, MediaLinks())


def test_an_unnormalised_pair_searches_with_the_scaled_pair(
    searched: tuple[MemoryCluster, SearchService],
) -> None:
    cluster, service = searched
    request = SearchRequest(
        text="red circle", mode="hybrid", kinds=["image"], k=3, weights={"keyword": 0.5, "clip": 0.7}
    )
    response = service.search(request)
    assert [r.id for r in response.results][:1] == ["img1"]  # clip outweighs keyword, as asked
    (search,) = [r for r in cluster.requests if r.path == "/media/_search"]
    processor = search.body["search_pipeline"]["phase_results_processors"][0]["normalization-processor"]
    assert processor["combination"]["parameters"]["weights"] == pytest.approx([0.5 / 1.2, 0.7 / 1.2])
    assert not [r for r in cluster.requests if r.path.startswith("/_search/pipeline")]
    for result in response.results:
        # The explanation names the pair the cluster used, not the caller's unscaled one.
        found = re.search(r"keyword weight ([\d.]+), clip weight ([\d.]+)", result.explanation)
        assert found, result.explanation
        assert [float(w) for w in found.groups()] == pytest.approx([0.5 / 1.2, 0.7 / 1.2], abs=1e-3)
        assert 0.0 <= result.score <= 1.0


def test_the_ratio_decides_not_the_scale(searched: tuple[MemoryCluster, SearchService]) -> None:
    _, service = searched

    def ranking(keyword: float, clip: float) -> list[tuple[str, float]]:
        request = SearchRequest(
            text="red circle", mode="hybrid", kinds=["image"], k=3, weights={"keyword": keyword, "clip": clip}
        )
        return [(r.id, round(r.score, 6)) for r in service.search(request).results]

    assert ranking(0.2, 0.4) == ranking(0.5, 1.0) == ranking(0.1, 0.2)
    assert ranking(1.0, 0.0)[0][0] == "img0"  # keyword only: the caption match
