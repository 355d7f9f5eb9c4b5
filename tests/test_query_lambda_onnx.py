"""The query Lambda encoding in the function: ONNX Runtime on an export folder baked into the image, with
only the image's packages (no torch, transformers, LanceDB or video stack), no SageMaker endpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mediasearch.core.model_identity import identify
from mediasearch.models.onnx_export import export_clip
from tests.test_query_lambda import AWS_ENV, HANDLER, NOT_IN_LAMBDA_IMAGE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_clip(str(tiny_clip_dir), cache_dir=tmp_path_factory.mktemp("onnx"))


def test_the_lambda_encodes_text_in_process_with_its_image_packages(
    export: Path, tiny_clip_dir: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, json, sys
        sys.path.insert(0, {str(ROOT)!r})
        BLOCKED = {sorted(NOT_IN_LAMBDA_IMAGE)!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(name + " is not in the Lambda image", name=name)
        sys.meta_path.insert(0, Block())
        spec = importlib.util.spec_from_file_location("handler", {str(HANDLER)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # init: the app, and a warm-up that may not reach the cluster
        from mediasearch import backends
        from mediasearch.core.settings import get_settings
        encoder = backends.encoder(get_settings())
        vector = encoder.encode_text("a red square")
        print(json.dumps({{
            "encoder": type(encoder).__name__,
            "model": type(encoder.model).__name__,
            "identity": encoder.model.identity.id,
            "dim": len(vector),
            "towers": sorted(encoder.model._sessions),
            "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers"}}),
        }}))
        """
    )
    env = {
        **AWS_ENV,
        # Nothing listens there: the init's warm-up cannot read the serving generation, and must not fail.
        "MEDIASEARCH_OPENSEARCH_URL": "http://127.0.0.1:9",
        "MEDIASEARCH_OPENSEARCH_AWS_REGION": "",
        "MEDIASEARCH_ENCODER_BACKEND": "local",
        "MEDIASEARCH_CLIP_MODEL": str(export),
    }
    env.pop("MEDIASEARCH_SAGEMAKER_ENDPOINT", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["encoder"], out["model"], out["dim"]) == ("LocalEncoder", "OnnxClipModel", 16)
    assert out["identity"] == identify(str(tiny_clip_dir)).id  # the index's model, encoded without torch
    assert out["towers"] == ["text"] and out["heavy"] == []


def test_the_image_installs_onnx_runtime_and_tokenizers_only_beyond_the_endpoint_setup() -> None:
    lines = (ROOT / "query_lambda" / "requirements.txt").read_text().splitlines()
    names = {m.group().lower() for line in lines if (m := re.match(r"[A-Za-z0-9_.-]+", line))}
    assert {"onnxruntime", "tokenizers"} <= names
    assert not names & (NOT_IN_LAMBDA_IMAGE | {"onnx"})  # the exporter's libraries stay out
    dockerfile = (ROOT / "docker" / "lambda.Dockerfile").read_text()
    default = re.search(r"^ARG CLIP_ONNX=(\S+)$", dockerfile, re.M)
    assert default and (ROOT / default.group(1)).is_dir()  # the default build copies an empty stand-in
