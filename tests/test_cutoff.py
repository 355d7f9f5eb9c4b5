"""Relevance cutoffs: min_score and cutoff=auto (mediasearch.query.cutoff), in the service, the API
and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.records import SearchRequest, SearchResult
from mediasearch.core.settings import Settings, get_settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.query.api import create_app
from mediasearch.query.cutoff import SEPARATION, auto_cutoff, cut_results, min_score_cutoff, pool_size
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import COLOURS, image_bytes


def two_groups(seed: int, top: int = 6, pool: int = 30) -> list[float]:
    """A clear top group of `top` scores well above a background of `pool - top`."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([0.32 + 0.01 * rng.random(top), 0.20 + 0.02 * rng.random(pool - top)])
    return sorted(scores.tolist(), reverse=True)


def test_auto_cuts_at_the_edge_of_a_clear_top_group() -> None:
    decision = auto_cutoff(two_groups(0), k=10)
    assert decision.kept == 6 and decision.rule == "auto"
    assert decision.threshold == pytest.approx(two_groups(0)[5])
    assert "cut after result 6" in decision.reason and "standard deviations" in decision.reason


def test_auto_is_scale_and_shift_free() -> None:
    # The flat threshold's failure: another query's scores are shifted and squeezed. The rule's
    # decision is the same (a min_score of 0.3 keeps 6 here and none there).
    scores = two_groups(1)
    other = [0.05 + 0.5 * s for s in scores]
    assert auto_cutoff(other, 10).kept == auto_cutoff(scores, 10).kept == 6
    assert min_score_cutoff(scores, 10, 0.3).kept == 6 and min_score_cutoff(other, 10, 0.3).kept == 0


def test_auto_keeps_everything_without_a_clear_edge() -> None:
    # The top of a list of pure noise: no relevant group to find. The separation threshold is the
    # 95th percentile of such lists, so most are left uncut.
    rng = np.random.default_rng(2)
    cuts = 0
    for _ in range(60):
        scores = np.sort(rng.normal(0.2, 0.02, 360))[::-1][: pool_size(24)].tolist()
        decision = auto_cutoff(scores, 24)
        cuts += decision.kept < 24
        if decision.kept == 24:
            assert decision.threshold is None and decision.reason.startswith("no cut")
    assert cuts <= 9  # ~5% expected
    assert auto_cutoff([0.3, 0.2, 0.1], 10).reason.endswith("too few to judge")
    assert SEPARATION == 5.0


def _result(i: int, score: float) -> SearchResult:
    return SearchResult(
        id=f"d{i}",
        uri=f"s3://b/{i}.png",
        url="",
        kind="image",
        score=score,
        explanation=f"cosine {score:.3f}",
    )


def test_cut_results_reports_and_explains() -> None:
    scores = two_groups(3, pool=pool_size(10))
    results = [_result(i, s) for i, s in enumerate(scores)]
    shown, report = cut_results(results, SearchRequest(text="x", k=10, cutoff="auto"))
    assert report is not None and (report.rule, report.kept, report.dropped) == ("auto", 6, 4)
    assert len(shown) == 6 and report.threshold == pytest.approx(scores[5])
    assert all(
        "kept by the auto cutoff" in r.explanation and r.explanation.startswith("cosine") for r in shown
    )
    shown, report = cut_results(results, SearchRequest(text="x", k=10, min_score=0.325, cutoff="auto"))
    assert report is not None and report.rule == "auto+min_score"
    assert report.kept == len(shown) == sum(s >= 0.325 for s in scores[:10])
    shown, report = cut_results(results, SearchRequest(text="x", k=3))
    assert report is None and len(shown) == 3 and shown[0].explanation == "cosine " + f"{scores[0]:.3f}"


# ------------------------------------------------------------------------------ service and API


@pytest.fixture(scope="module")
def service(tmp_path_factory, clip_model) -> SearchService:
    root = tmp_path_factory.mktemp("cutoff")
    store = LocalStore(root / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    index = LanceDBIndex(str(root / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), progress=False)
    return SearchService(index, LocalEncoder(clip_model), store, MediaLinks())


def test_search_with_min_score_and_auto(service: SearchService) -> None:
    everything = service.search(SearchRequest(text="a red thing", k=6, kinds=["image"]))
    assert everything.cutoff is None and len(everything.results) == 6
    median = sorted(r.score for r in everything.results)[3]
    cut = service.search(SearchRequest(text="a red thing", k=6, kinds=["image"], min_score=median))
    assert cut.cutoff is not None and cut.cutoff.rule == "min_score"
    assert [r.id for r in cut.results] == [r.id for r in everything.results if r.score >= median]
    assert cut.cutoff.kept + cut.cutoff.dropped == 6
    auto = service.search(SearchRequest(text="a red thing", k=6, kinds=["image"], cutoff="auto"))
    assert auto.cutoff is not None and auto.cutoff.rule == "auto"
    # Six documents are too few to judge a distribution by: all kept, and said so.
    assert auto.cutoff.kept == 6 and "too few" in auto.cutoff.reason
    assert all("auto cutoff: no cut" in r.explanation for r in auto.results)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "a", "min_score": 1.5}, "min_score"),
        ({"text": "a", "min_score": -2}, "min_score"),
        ({"text": "a", "min_score": "high"}, "min_score"),
        ({"text": "a", "cutoff": "sometimes"}, "cutoff"),
    ],
)
def test_api_refuses_bad_cutoffs_with_422(service: SearchService, tmp_path, payload, field) -> None:
    client = TestClient(create_app(Settings(store=str(tmp_path)), service=service))
    r = client.post("/search", json=payload)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]]


def test_api_answers_with_the_cutoff(service: SearchService, tmp_path) -> None:
    client = TestClient(create_app(Settings(store=str(tmp_path)), service=service))
    body = client.post("/search", json={"text": "a red thing", "kinds": ["image"], "min_score": 1.0}).json()
    assert body["results"] == [] and body["cutoff"]["rule"] == "min_score" and body["cutoff"]["kept"] == 0


def test_cli_min_score_out_of_range_is_one_line(tmp_path) -> None:
    get_settings.cache_clear()
    env = {"MEDIASEARCH_STORE": str(tmp_path), "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "db")}
    result = CliRunner().invoke(app, ["search", "dog", "--min-score", "2"], env=env)
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0 and "--min-score" in result.output
    assert "Traceback" not in result.output
