"""Composed queries (`parts`): validation (422, never 500), the composition's math, the explanations,
and the CLI forms (`search TEXT --minus TEXT`, `--plus`, `--part`), over a real index and tiny CLIP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.records import SearchRequest, stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.query.api import create_app
from mediasearch.query.compose import compose, scene_coefficients
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import image_bytes, small_corpus


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory, clip_model: Any
) -> tuple[Path, LocalStore, LanceDBIndex]:
    root = tmp_path_factory.mktemp("composed")
    store, index = small_corpus(root, clip_model)
    return root, store, index


@pytest.fixture(scope="module")
def service(corpus: tuple[Path, LocalStore, LanceDBIndex], clip_model: Any) -> SearchService:
    _, store, index = corpus
    return SearchService(index, LocalEncoder(clip_model), store, MediaLinks())


@pytest.fixture(scope="module")
def client(corpus: tuple[Path, LocalStore, LanceDBIndex], service: SearchService) -> TestClient:
    _, store, _ = corpus
    return TestClient(create_app(Settings(store=str(store.root), max_image_bytes=4096), service=service))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"parts": []}, "at least 1"),
        ({"parts": [{"text": "sea"}] * 9}, "at most 8"),
        ({"parts": [{"text": "sea", "weight": 0}]}, "weight of 0"),
        ({"parts": [{"text": "sea", "weight": 1.5}]}, "less than or equal to 1"),
        ({"parts": [{"text": "sea", "weight": -2}]}, "greater than or equal to -1"),
        ({"parts": [{"text": "sea", "image_uri": "x"}]}, "exactly one of text, image, image_uri, video_id"),
        ({"parts": [{"weight": 1}]}, "got none"),
        ({"parts": [{"text": "   "}]}, "text is blank"),
        ({"parts": [{"text": None}]}, "leave the field out"),
        ({"parts": [{"text": "sea", "colour": "red"}]}, "Extra inputs"),
        ({"parts": [{"text": "people", "weight": -1}]}, "at least one positive weight"),
        ({"parts": [{"text": "sea"}], "text": "beach"}, "either parts or one of"),
        ({"parts": "sea"}, "valid list"),
        ({"parts": None}, "leave the field out"),
    ],
)
def test_bad_parts_are_422_with_the_reason(client: TestClient, body: dict[str, Any], says: str) -> None:
    r = client.post("/search", json=body)
    assert r.status_code == 422, r.text
    assert says in r.text


@pytest.mark.parametrize(
    ("part", "status", "field"),
    [
        ({"image": "not base64!"}, 400, "parts[1].image"),
        ({"image": b64(b"not an image")}, 400, "parts[1].image"),
        ({"image": b64(image_bytes((1, 2, 3), size=(400, 400), fmt="BMP"))}, 413, "parts[1].image"),
        ({"image_uri": "s3://elsewhere/x.png"}, 400, "parts[1].image_uri"),
        ({"image_uri": "STORE/photos/missing.png"}, 404, "parts[1].image_uri"),
        ({"video_id": "nope"}, 404, "parts[1].video_id"),
    ],
)
def test_a_bad_part_is_named_never_a_500(
    client: TestClient, corpus: Any, part: dict[str, Any], status: int, field: str
) -> None:
    if str(part.get("image_uri", "")).startswith("STORE/"):
        part = {"image_uri": corpus[1].uri(part["image_uri"].removeprefix("STORE/"))}
    r = client.post("/search", json={"parts": [{"text": "sea"}, {**part, "weight": 0.5}]})
    assert r.status_code == status, r.text
    assert field in r.text


def test_parts_that_cancel_out_are_refused(client: TestClient) -> None:
    r = client.post("/search", json={"parts": [{"text": "sea"}, {"text": "sea", "weight": -1}]})
    assert r.status_code == 400 and "cancel each other out" in r.text


def test_caption_mode_composes_text_parts_only(client: TestClient) -> None:
    r = client.post("/search", json={"mode": "caption", "parts": [{"text": "sea"}, {"video_id": "v"}]})
    assert r.status_code == 400 and "caption mode composes text parts only" in r.text


def test_hybrid_mode_needs_a_positive_text_part(client: TestClient, corpus: Any) -> None:
    _, store, _ = corpus
    uri = store.uri("photos/red.png")
    r = client.post(
        "/search", json={"mode": "hybrid", "parts": [{"image_uri": uri}, {"text": "x", "weight": -1}]}
    )
    assert r.status_code == 400 and "hybrid mode needs a text part" in r.text


def test_the_schema_offers_parts() -> None:
    schema = SearchRequest.model_json_schema()
    assert {"required": ["parts"]} in schema["oneOf"]
    part = schema["$defs"]["QueryPart"]
    assert part["properties"]["weight"]["minimum"] == -1 and part["properties"]["weight"]["maximum"] == 1


# -- the math -----------------------------------------------------------------------------------


def test_compose_is_the_normalised_weighted_sum() -> None:
    a, b = np.array([1.0, 0, 0], np.float32), np.array([0, 1.0, 0], np.float32)
    vector, norm = compose(np.stack([a, b]), np.array([1.0, -0.5], np.float32))
    assert norm == pytest.approx(np.sqrt(1.25))
    assert vector == pytest.approx(np.array([1, -0.5, 0]) / np.sqrt(1.25))
    with pytest.raises(ValueError, match="cancel"):
        compose(np.stack([a, a]), np.array([1.0, -1.0], np.float32))


def test_scene_coefficients_follow_the_aggregation() -> None:
    from mediasearch.core.records import Aggregation

    assert list(scene_coefficients(Aggregation.MAX, 3)) == [1, 0, 0]
    assert list(scene_coefficients(Aggregation.TOP3_MEAN, 4)) == pytest.approx([1 / 3] * 3 + [0])
    assert list(scene_coefficients(Aggregation.MEAN, 2)) == [0.5, 0.5]
    assert list(scene_coefficients(Aggregation.SUM, 2)) == [1, 1]


def test_one_part_of_weight_1_is_the_single_query(client: TestClient, corpus: Any) -> None:
    _, store, _ = corpus
    uri = store.uri("photos/blue.png")
    for single, part in [
        ({"text": "a blue square"}, {"text": "a blue square"}),
        ({"image_uri": uri}, {"image_uri": uri}),
        ({"image": b64(store.get("photos/red.png"))}, {"image": b64(store.get("photos/red.png"))}),
    ]:
        plain = client.post("/search", json={**single, "k": 10}).json()["results"]
        composed = client.post("/search", json={"parts": [part], "k": 10}).json()["results"]
        assert [r["id"] for r in composed] == [r["id"] for r in plain]
        assert [r["score"] for r in composed] == pytest.approx([r["score"] for r in plain], abs=1e-5)


def test_a_negative_part_lowers_what_looks_like_it(client: TestClient, corpus: Any) -> None:
    _, store, _ = corpus
    red, blue = store.uri("photos/red.png"), store.uri("photos/blue.png")
    text = {"text": "a colourful picture"}

    def scores(parts: list[dict[str, Any]]) -> dict[str, float]:
        r = client.post("/search", json={"parts": parts, "k": 20, "kinds": ["image"]})
        assert r.status_code == 200, r.text
        return {x["id"]: x["score"] for x in r.json()["results"]}

    plain = scores([text])
    away = scores([text, {"image_uri": red, "weight": -0.5}])
    towards = scores([text, {"image_uri": red, "weight": 0.5}])
    red_id, blue_id = stable_id(red), stable_id(blue)
    # Pushing away from the red image ranks it lower against the others than before; pulling ranks it higher.
    assert away[red_id] - away[blue_id] < plain[red_id] - plain[blue_id] < towards[red_id] - towards[blue_id]


def test_each_result_shows_each_parts_contribution(client: TestClient, corpus: Any) -> None:
    _, store, _ = corpus
    red = store.uri("photos/red.png")
    parts = [{"text": "beach"}, {"text": "people", "weight": -0.5}, {"image_uri": red, "weight": 0.3}]
    r = client.post("/search", json={"parts": parts, "k": 10})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert {x["kind"] for x in results} == {"image", "video"}
    for result in results:
        contributions = result["contributions"]
        assert [c["label"] for c in contributions] == ["beach", "people", red]
        assert [c["weight"] for c in contributions] == [1.0, -0.5, 0.3]
        # The contributions add up to the score (the video aggregates with max, the default).
        assert sum(c["contribution"] for c in contributions) == pytest.approx(result["score"], abs=1e-4)
        assert "composed of 3 parts" in result["explanation"] and "'people'" in result["explanation"]
    plain = client.post("/search", json={"text": "beach", "k": 3}).json()["results"]
    assert all(x.get("contributions") is None for x in plain)


def test_a_video_part_searches_near_that_video_but_leaves_it_out(client: TestClient, service: Any) -> None:
    video = next(r for r in client.post("/search", json={"text": "x", "kinds": ["video"]}).json()["results"])
    r = client.post("/search", json={"parts": [{"video_id": video["id"]}, {"text": "red", "weight": -0.2}]})
    assert r.status_code == 200, r.text
    assert video["id"] not in {x["id"] for x in r.json()["results"] if x["kind"] == "video"}
    assert r.json()["results"][0]["contributions"][0]["label"] == video["id"]


def test_hybrid_mode_with_parts_uses_the_positive_texts_as_keywords(client: TestClient) -> None:
    r = client.post(
        "/search", json={"mode": "hybrid", "parts": [{"text": "red"}, {"text": "people", "weight": -0.5}]}
    )
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]
    assert first["explanation"].startswith("hybrid") and len(first["contributions"]) == 2


# -- the CLI ----------------------------------------------------------------------------------------


def run_cli(corpus: Any, tiny_clip_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root, store, _ = corpus
    env = {
        **os.environ,
        "MEDIASEARCH_LANCEDB_URI": str(root / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_STORE": str(store.root),
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_CLIP_ENGINE": "torch",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    return subprocess.run(
        [sys.executable, "-m", "mediasearch.cli", "search", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_minus_plus_and_part(corpus: Any, tiny_clip_dir: Path, tmp_path: Path) -> None:
    _, store, _ = corpus
    picture = tmp_path / "red.png"
    picture.write_bytes(store.get("photos/red.png"))
    done = run_cli(
        corpus,
        tiny_clip_dir,
        "beach",
        "--minus",
        "people",
        "--plus",
        "sand",
        "--part",
        f"image:{picture}:-0.3",
        "--part",
        f"image_uri:{store.uri('photos/blue.png')}",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    contributions = results[0]["contributions"]
    assert [(c["label"], c["weight"]) for c in contributions] == [
        ("beach", 1.0),
        ("sand", 1.0),
        ("people", -0.5),
        ("image", -0.3),
        (store.uri("photos/blue.png"), 1.0),
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--minus", "people"], "--minus/--plus/--part need something to search towards"),
        (["beach", "--part", "sound:x"], "--part 'sound:x': the kind must be one of text, image"),
        (["beach", "--part", "text:sea:3"], "--part 'text:sea:3': the weight must be in [-1, 1]"),
        (["beach", "--part", "text:sea:0"], "--part 'text:sea:0': the weight must be in [-1, 1]"),
        (["beach", "--part", "image:/no/such.png"], "--part 'image:/no/such.png': no such file"),
        (["beach", "--minus", "beach", "--minus-weight", "-1"], "cancel each other out"),
        (["beach", "--minus-weight", "0.5", "--minus", "x"], "--minus-weight must be in [-1, 0)"),
    ],
)
def test_cli_mistakes_are_one_line(corpus: Any, tiny_clip_dir: Path, args: list[str], says: str) -> None:
    done = run_cli(corpus, tiny_clip_dir, *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and says in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
