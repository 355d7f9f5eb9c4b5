"""Multilingual queries: a query text tower aligned to the CLIP image space (MEDIASEARCH_QUERY_TEXT_MODEL),
its torch-free ONNX export, the checks against the image model, and a multilingual caption embedder
(MEDIASEARCH_TEXT_MODEL), all with tiny random models built offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch import backends
from mediasearch.core.errors import ModelLoadError
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.encoders.onnx_text_tower import OnnxTextTower
from mediasearch.models.text_embedder import TextEmbedder
from mediasearch.models.text_tower import TextTower, build_random_text_tower, export_text_tower
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.text_tower import TextTowerEncoder, is_aligned
from tests.conftest import image_bytes, small_corpus

QUERY = "两个孩子在一栋房子前面奔跑"  # "two children running in front of a house"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_text_tower(tmp_path_factory.mktemp("tower") / "tiny-mclip", out_dim=16)  # tiny CLIP's


@pytest.fixture(scope="module")
def wrong_tower_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_text_tower(tmp_path_factory.mktemp("tower") / "tiny-mclip-24", out_dim=24)


@pytest.fixture(scope="module")
def tower_export(tower_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_text_tower(str(tower_dir), tmp_path_factory.mktemp("tower") / "export")


def settings_for(clip_dir: Path, tower: Path | None, **extra: Any) -> Settings:
    return Settings(
        clip_model=str(clip_dir),
        clip_engine="torch",
        device="cpu",
        query_text_model=str(tower) if tower else None,
        **extra,
    )


def test_the_tower_tokenises_chinese_and_makes_unit_vectors_of_the_clip_size(tower_dir: Path) -> None:
    tower = TextTower(str(tower_dir), device="cpu").load()
    ids = tower._tokenizer(QUERY)["input_ids"]
    assert tower._tokenizer.unk_token_id not in ids and len(ids) == len(QUERY) + 2  # one per character
    vectors = tower.embed([QUERY, "two children running"])
    assert vectors.shape == (2, 16) and tower.dim == 16
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1], abs=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9999  # the two texts differ


def test_text_goes_through_the_tower_and_images_through_clip(tiny_clip_dir: Path, tower_dir: Path) -> None:
    encoder = backends.encoder(settings_for(tiny_clip_dir, tower_dir))
    assert isinstance(encoder, TextTowerEncoder)
    plain = backends.encoder(settings_for(tiny_clip_dir, None))
    assert isinstance(plain, LocalEncoder)
    via_tower = encoder.encode_text(QUERY)
    assert via_tower == pytest.approx(TextTower(str(tower_dir), device="cpu").embed([QUERY])[0], abs=1e-5)
    assert not np.allclose(via_tower, plain.encode_text(QUERY), atol=1e-3)
    picture = image_bytes((220, 20, 30))
    assert encoder.encode_image(picture) == pytest.approx(plain.encode_image(picture), abs=1e-5)


def test_a_tower_of_another_size_is_one_clear_line(tiny_clip_dir: Path, wrong_tower_dir: Path) -> None:
    encoder = backends.encoder(settings_for(tiny_clip_dir, wrong_tower_dir))
    with pytest.raises(ModelLoadError) as caught:
        encoder.warm_up()
    message = str(caught.value)
    assert "makes 24-d vectors but the image model" in message and "16-d" in message
    assert "\n" not in message
    assert encoder.encode_image(image_bytes((1, 2, 3))).shape == (16,)  # images still work


def test_the_aligned_to_setting_is_checked_against_the_image_model(
    tiny_clip_dir: Path, tower_dir: Path
) -> None:
    refused = backends.encoder(
        settings_for(tiny_clip_dir, tower_dir, query_text_aligned_to="openai/clip-vit-base-patch32")
    )
    with pytest.raises(ModelLoadError, match="is aligned to openai/clip-vit-base-patch32"):
        refused.encode_text(QUERY)
    fine = backends.encoder(settings_for(tiny_clip_dir, tower_dir, query_text_aligned_to=str(tiny_clip_dir)))
    assert fine.encode_text(QUERY).shape == (16,)
    commit = "a" * 40
    assert is_aligned(
        "openai/clip-vit-base-patch32", "/opt/ml/model", f"hub:openai/clip-vit-base-patch32@{commit}"
    )
    assert not is_aligned("openai/clip-vit-base-patch32", "openai/clip-vit-large-patch14", None)


def test_the_onnx_export_agrees_and_is_used_for_an_export_folder(
    tiny_clip_dir: Path, tower_dir: Path, tower_export: Path
) -> None:
    meta = json.loads((tower_export / "text_tower.json").read_text())
    assert meta["dim"] == 16 and meta["agreement_min_cosine"] >= 0.9999
    onnx = OnnxTextTower(str(tower_export)).embed([QUERY, "a house"])
    torch_vectors = TextTower(str(tower_dir), device="cpu").embed([QUERY, "a house"])
    assert (onnx * torch_vectors).sum(axis=1) == pytest.approx([1, 1], abs=1e-4)
    encoder = backends.encoder(settings_for(tiny_clip_dir, tower_export))
    assert isinstance(encoder, TextTowerEncoder)
    assert encoder.encode_text(QUERY) == pytest.approx(onnx[0], abs=1e-5)


def test_the_exported_tower_runs_without_torch(tower_export: Path) -> None:
    """With the SageMaker image encoder and the tower's export, the query side loads no model stack."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from mediasearch import backends
from mediasearch.core.settings import Settings
encoder = backends.encoder(Settings(encoder_backend="sagemaker", sagemaker_endpoint="x",
                                    query_text_model={str(tower_export)!r}))
vector = encoder.encode_text({QUERY!r})
print(json.dumps({{"dim": len(vector), "heavy": sorted({{"torch", "transformers"}} & set(sys.modules))}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"dim": 16, "heavy": []}


def test_a_chinese_query_searches_the_clip_index_through_the_api(
    tmp_path: Path, tiny_clip_dir: Path, clip_model: Any, tower_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, index = small_corpus(tmp_path, clip_model)
    settings = settings_for(
        tiny_clip_dir, tower_dir, store=str(store.root), lancedb_uri=str(tmp_path / "lancedb")
    )
    client = TestClient(create_app(settings, service=backends.search_service(settings)))
    r = client.post("/search", json={"text": QUERY, "k": 3, "kinds": ["image"]})
    assert r.status_code == 200, r.text
    best = r.json()["results"][0]
    query = TextTower(str(tower_dir), device="cpu").embed([QUERY])[0]
    doc = index.get_with_vectors(best["id"])
    assert doc is not None
    assert best["score"] == pytest.approx(float(query @ doc.clip_vector), abs=1e-4)  # the tower's vector


def test_a_wrong_tower_is_one_line_in_the_cli(
    tmp_path: Path, tiny_clip_dir: Path, clip_model: Any, wrong_tower_dir: Path
) -> None:
    store, _ = small_corpus(tmp_path, clip_model)
    env = {
        **os.environ,
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_CLIP_ENGINE": "torch",
        "MEDIASEARCH_STORE": str(store.root),
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_QUERY_TEXT_MODEL": str(wrong_tower_dir),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "mediasearch.cli", "search", QUERY],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "makes 24-d vectors" in last and "Traceback" not in done.stderr


def test_the_caption_embedder_setting_makes_caption_vectors_and_caption_queries(
    tmp_path: Path, tiny_clip_dir: Path, tower_dir: Path
) -> None:
    # The tower's transformer with mean pooling is a small multilingual sentence embedder of its own.
    settings = settings_for(tiny_clip_dir, None, text_model=str(tower_dir), lancedb_uri=str(tmp_path / "db"))
    loader = backends.loader(settings, LocalStore(tmp_path / "media"))
    assert isinstance(loader.text_embedder, TextEmbedder) and loader.text_embedder.name == str(tower_dir)
    service = backends.search_service(settings)
    expected = TextEmbedder(str(tower_dir), device="cpu").embed([QUERY])[0]
    assert service.caption_vector(QUERY) == pytest.approx(expected, abs=1e-5)


def test_export_text_tower_command(tower_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "mediasearch.cli", "export-text-tower"]
    done = subprocess.run(
        [*run, str(tower_dir), "--dest", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["dim"] == 16 and (tmp_path / "out" / "text_tower.onnx").is_file()
    bad = subprocess.run(
        [*run, str(tmp_path), "--dest", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "has no modules.json" in bad.stderr, (
        bad.stderr
    )
