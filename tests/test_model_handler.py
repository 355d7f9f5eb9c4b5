"""model_handlers/clip/inference.py loaded from its file path, called the way SageMaker calls it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import parse_output_lines
from mediasearch.indexing.handler import BadRequest
from tests.conftest import COLOURS, image_bytes

ROOT = Path(__file__).resolve().parents[1]
HANDLER = ROOT / "model_handlers" / "clip" / "inference.py"


def load_handler_module(path: Path = HANDLER) -> ModuleType:
    spec = importlib.util.spec_from_file_location("sagemaker_clip_inference", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def served(tiny_clip_dir: Path) -> tuple[ModuleType, object]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIASEARCH_DEVICE", "cpu")
    mp.setenv("MEDIASEARCH_DECODE_WORKERS", "2")
    module = load_handler_module()
    model = module.model_fn(str(tiny_clip_dir))
    yield module, model
    mp.undo()


def invoke(
    module: ModuleType, model: object, body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    """What the SageMaker inference toolkit does for one request."""
    data = module.input_fn(body, content_type)
    prediction = module.predict_fn(data, model)
    return module.output_fn(prediction, accept)


def test_model_fn_loads_the_weights_from_model_dir(served, tiny_clip_dir: Path) -> None:
    _, model = served
    assert model.model.loaded
    assert model.model.name == str(tiny_clip_dir)


def test_jsonlines_batch_with_a_bad_line_and_a_missing_file(served, tmp_path: Path) -> None:
    module, model = served
    store = LocalStore(tmp_path)
    for name in ("red", "blue", "green"):
        store.put(f"img/{name}.png", image_bytes(COLOURS[name]))
    lines = [
        json.dumps({"id": "red", "uri": store.uri("img/red.png"), "kind": "image"}),
        "{this is not json",
        json.dumps({"id": "gone", "uri": store.uri("img/missing.png"), "kind": "image"}),
        json.dumps({"id": "blue", "uri": store.uri("img/blue.png"), "kind": "image"}),
        json.dumps({"id": "green", "uri": store.uri("img/green.png"), "kind": "image"}),
    ]
    body, ctype = invoke(
        module, model, ("\n".join(lines) + "\n").encode(), "application/jsonlines", "application/jsonlines"
    )
    assert ctype == "application/jsonlines"
    results = parse_output_lines(body)
    # One output line per input line, in order (AssembleWith=Line relies on it).
    assert len(results) == len(lines)
    ids = [r.id for r in results]
    assert ids[0] == "red" and ids[2:] == ["gone", "blue", "green"]
    assert results[1].error and "line 2" in results[1].error and results[1].clip is None
    assert results[2].error and "does not exist" in results[2].error and results[2].clip is None
    for r in (results[0], results[3], results[4]):
        assert r.ok and r.clip is not None
        assert r.clip.shape == (16,)
        assert np.linalg.norm(r.clip) == pytest.approx(1.0, abs=1e-5)
        assert r.model == model.model.identity.id and (r.width, r.height) == (64, 48)


def test_x_image(served) -> None:
    module, model = served
    body, ctype = invoke(
        module, model, image_bytes(COLOURS["red"]), "application/x-image", "application/json"
    )
    assert ctype == "application/json"
    parsed = json.loads(body)
    assert len(parsed["embeddings"]) == 1 and len(parsed["embeddings"][0]) == 16
    assert np.linalg.norm(parsed["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)


def test_json_text(served) -> None:
    module, model = served
    request = json.dumps({"text": ["a red square", "a blue circle"]}).encode()
    body, ctype = invoke(module, model, request, "application/json", "application/json")
    parsed = json.loads(body)
    assert ctype == "application/json" and len(parsed["embeddings"]) == 2
    assert parsed["embeddings"][0] != parsed["embeddings"][1]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [(b"x", "text/csv"), (b'{"texts": ["a"]}', "application/json"), (b"not an image", "application/x-image")],
)
def test_bad_requests_are_bad_request(served, body: bytes, ctype: str) -> None:
    module, _ = served
    with pytest.raises(BadRequest):
        module.input_fn(body, ctype)


def test_captioning_handler_under_the_same_contract(tmp_path: Path) -> None:
    """model_handlers/captioning: the same contract, captions instead of embeddings."""
    from mediasearch.models.random_init import build_random_captioner

    weights = build_random_captioner(tmp_path / "captioner", size="tiny")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIASEARCH_DEVICE", "cpu")
    mp.setenv("MEDIASEARCH_CAPTION_MAX_LENGTH", "6")
    try:
        module = load_handler_module(ROOT / "model_handlers" / "captioning" / "inference.py")
        model = module.model_fn(str(weights))
        assert model.model is None and model.captioner.loaded
        store = LocalStore(tmp_path / "media")
        store.put("a.png", image_bytes(COLOURS["red"]))
        lines = [
            json.dumps({"id": "a", "uri": store.uri("a.png")}),
            json.dumps({"id": "gone", "uri": store.uri("gone.png")}),
        ]
        body, ctype = invoke(
            module, model, "\n".join(lines).encode(), "application/jsonlines", "application/jsonlines"
        )
        good, missing = parse_output_lines(body)
        assert ctype == "application/jsonlines"
        assert isinstance(good.caption, str) and good.clip is None and good.ok
        assert "does not exist" in (missing.error or "")
        body, ctype = invoke(
            module, model, image_bytes(COLOURS["blue"]), "application/x-image", "application/json"
        )
        reply = json.loads(body)
        assert ctype == "application/json" and len(reply["captions"]) == 1 and reply["embeddings"] == []
        with pytest.raises(BadRequest, match="no text encoder"):
            module.predict_fn(module.input_fn(b'{"text": ["a"]}', "application/json"), model)
    finally:
        mp.undo()
