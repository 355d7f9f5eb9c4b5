"""The CLIP engine is a setting: ONNX Runtime or PyTorch behind one protocol, in the transform handler,
the SageMaker handler and the query side, with the same vectors (fp32) and the same identity."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from mediasearch import backends
from mediasearch.core.model_identity import identify
from mediasearch.core.settings import ClipEngine, ClipPrecision, Settings, get_settings
from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import parse_output_lines
from mediasearch.encoders import engine as engine_module
from mediasearch.encoders.base import ClipEncoder
from mediasearch.encoders.engine import choose_engine
from mediasearch.encoders.onnx_clip import OnnxClipModel
from mediasearch.models.clip import ClipModel
from mediasearch.models.onnx_export import export_clip
from mediasearch.query.encoder import LocalEncoder
from tests.conftest import COLOURS, image_bytes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_clip(str(tiny_clip_dir), cache_dir=tmp_path_factory.mktemp("onnx"))


def settings_for(tiny_clip_dir: Path, tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "clip_model": str(tiny_clip_dir),
        "device": "cpu",
        "cache_dir": str(tmp_path / "cache"),
        "lancedb_uri": str(tmp_path / "lancedb"),
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[arg-type]


# -- choosing the engine ---------------------------------------------------------------------------


def test_auto_is_onnx_on_cpu_and_torch_on_cuda(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_engine("auto", "fp32", "cpu", "org/clip") == "onnx"
    assert choose_engine("auto", "fp32", "cuda", "org/clip") == "torch"
    assert choose_engine("auto", "fp32", "cuda:1", "org/clip") == "torch"
    assert choose_engine(ClipEngine.TORCH, ClipPrecision.FP32, "cpu", "org/clip") == "torch"  # as asked
    # int8 and export folders exist only on ONNX Runtime.
    assert choose_engine("auto", "int8", "cuda", "org/clip") == "onnx"
    assert choose_engine("auto", "fp32", "cuda", str(export)) == "onnx"
    with pytest.raises(ValueError, match="int8 exists only on ONNX Runtime"):
        choose_engine("torch", "int8", "cpu", "org/clip")
    with pytest.raises(ValueError, match="export folder"):
        choose_engine("torch", "fp32", "cpu", str(export))

    # device auto: no NVIDIA driver means CPU, decided without asking torch.
    monkeypatch.setattr(engine_module, "nvidia_driver_visible", lambda: False)
    assert choose_engine("auto", "fp32", "auto", "org/clip") == "onnx"

    # Where onnxruntime is not installed (a container whose requirements leave it out), auto is torch.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        engine_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a),
    )
    assert choose_engine("auto", "fp32", "cpu", "org/clip") == "torch"


def test_deciding_auto_on_a_cpu_machine_does_not_import_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from mediasearch.encoders import engine
        engine.nvidia_driver_visible = lambda: False  # this machine's truth, pinned for the check
        assert engine.choose_engine("auto", "fp32", "auto", "org/clip") == "onnx"
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_settings_pick_the_engine_precision_and_caches(tiny_clip_dir: Path, tmp_path: Path) -> None:
    model = backends.clip_model(settings_for(tiny_clip_dir, tmp_path))
    assert isinstance(model, OnnxClipModel) and model.precision == "fp32"
    assert model.cache_dir == tmp_path / "cache" / "onnx"  # exports under MEDIASEARCH_CACHE_DIR
    assert model.identity.id == identify(str(tiny_clip_dir)).id
    assert (tmp_path / "cache" / "model-digests.json").is_file()  # the digest remembered there

    model = backends.clip_model(settings_for(tiny_clip_dir, tmp_path, onnx_cache=str(tmp_path / "x")))
    assert isinstance(model, OnnxClipModel) and model.cache_dir == tmp_path / "x"

    model = backends.clip_model(settings_for(tiny_clip_dir, tmp_path, clip_precision="int8"))
    assert isinstance(model, OnnxClipModel) and model.precision == "int8"
    assert model.identity.id == f"{identify(str(tiny_clip_dir)).id}#onnx-int8"

    torch_model = backends.clip_model(settings_for(tiny_clip_dir, tmp_path, clip_engine="torch"))
    assert isinstance(torch_model, ClipModel) and torch_model.digest_cache == str(tmp_path / "cache")
    with pytest.raises(ValueError, match="int8"):
        backends.clip_model(settings_for(tiny_clip_dir, tmp_path, clip_engine="torch", clip_precision="int8"))


def test_the_environment_names_the_engine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDIASEARCH_CLIP_ENGINE", "torch")
    monkeypatch.setenv("MEDIASEARCH_CLIP_PRECISION", "int8")
    monkeypatch.setenv("MEDIASEARCH_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("MEDIASEARCH_ONNX_CACHE", str(tmp_path / "o"))
    settings = Settings(_env_file=None)
    assert (settings.clip_engine, settings.clip_precision) == (ClipEngine.TORCH, ClipPrecision.INT8)
    assert backends.onnx_cache(settings) == tmp_path / "o"
    assert backends.onnx_cache(settings.model_copy(update={"onnx_cache": None})) == tmp_path / "c" / "onnx"


def test_both_engines_are_clip_encoders(clip_model: ClipModel, export: Path) -> None:
    assert isinstance(clip_model, ClipEncoder)
    assert isinstance(OnnxClipModel(str(export)), ClipEncoder)


# -- the same outputs whichever engine runs ---------------------------------------------------------


def test_the_transform_handler_writes_the_same_outputs_on_either_engine(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "media")
    lines = []
    for name, colour in COLOURS.items():
        store.put(f"{name}.png", image_bytes(colour))
        lines.append(json.dumps({"id": name, "uri": store.uri(f"{name}.png"), "kind": "image"}))
    body = ("\n".join(lines) + "\n").encode()

    def run(**values: object) -> tuple[str, list]:
        handler = backends.clip_handler(settings_for(tiny_clip_dir, tmp_path, **values), captions=False)
        try:
            out, _ = handler.output_fn(
                handler.predict_fn(handler.input_fn(body, "application/jsonlines")), "application/jsonlines"
            )
        finally:
            handler.close()
        return handler.output_tag, parse_output_lines(out)

    torch_tag, torch_rows = run(clip_engine="torch")
    onnx_tag, onnx_rows = run()  # auto: ONNX Runtime on this CPU
    int8_tag, int8_rows = run(clip_precision="int8")
    # fp32 vectors are interchangeable: the same model, the same output folder (no re-embedding).
    assert onnx_tag == torch_tag and {r.model for r in onnx_rows} == {r.model for r in torch_rows}
    a = np.array([r.clip for r in onnx_rows])
    b = np.array([r.clip for r in torch_rows])
    assert (a * b).sum(axis=1).min() >= 0.9999
    # int8 is its own model: its outputs never land in fp32's folder.
    assert int8_tag != onnx_tag and {r.model for r in int8_rows} == {f"{torch_rows[0].model}#onnx-int8"}


def test_the_local_query_encoder_warms_up_the_text_tower_only(export: Path) -> None:
    model = OnnxClipModel(str(export), device="cpu")
    encoder = LocalEncoder(model)
    encoder.warm_up()
    assert set(model._sessions) == {"text"}
    assert encoder.encode_text("a red circle").shape == (16,)


def test_a_following_server_encodes_with_the_generations_precision(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(tiny_clip_dir, tmp_path)
    checkpoint = identify(str(tiny_clip_dir)).id
    int8 = backends.for_model(settings, f"{checkpoint}#onnx-int8", str(tiny_clip_dir))
    assert (int8.clip_precision, int8.clip_engine) == (ClipPrecision.INT8, ClipEngine.ONNX)
    assert backends.clip_model(int8).identity.id == f"{checkpoint}#onnx-int8"
    # An fp32 generation is served at fp32 on whichever engine is configured.
    fp32 = backends.for_model(settings.model_copy(update={"clip_precision": "int8"}), checkpoint, "m")
    assert (fp32.clip_precision, fp32.clip_model) == (ClipPrecision.FP32, "m")
    torch_fp32 = backends.for_model(settings.model_copy(update={"clip_engine": "torch"}), checkpoint, "m")
    assert torch_fp32.clip_engine == ClipEngine.TORCH
    # No generation yet: what is configured.
    assert backends.for_model(int8, "", "m").clip_precision is ClipPrecision.INT8


def test_search_mixes_fp32_engines_and_refuses_int8_on_an_fp32_index(
    tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingested with ONNX fp32, searched with PyTorch (the same model: answers) and with int8 pinned
    (another model: refused, never mixed)."""
    from mediasearch.cli import app

    media = tmp_path / "media"
    store = LocalStore(media)
    for name in ("red", "green", "blue"):
        store.put(f"{name}.png", image_bytes(COLOURS[name]))
    monkeypatch.setenv("MEDIASEARCH_LANCEDB_URI", str(tmp_path / "lancedb"))
    monkeypatch.setenv("MEDIASEARCH_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("MEDIASEARCH_DEVICE", "cpu")
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Result:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            return runner.invoke(app, list(args))
        finally:
            for key in env:
                monkeypatch.delenv(key)
            get_settings.cache_clear()

    done = invoke("ingest", str(media))
    assert done.exit_code == 0, done.output
    hits = invoke("search", "red", "--json", MEDIASEARCH_CLIP_ENGINE="torch")
    assert hits.exit_code == 0, hits.output
    assert len(json.loads(hits.stdout)["results"]) == 3
    refused = invoke("search", "red", MEDIASEARCH_CLIP_PRECISION="int8")
    assert refused.exit_code != 0
    assert "#onnx-int8" in f"{refused.output} {refused.exception}"
