"""model.tar.gz carries the checkpoint's ONNX export: SageMaker runs ONNX Runtime on it without torch or
an export at start-up, and the unpacked archive is still the checkpoint (same identity, same documents)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mediasearch.aws.packaging import PackagingError, build_model_archive, package_model
from mediasearch.core.model_identity import identify
from mediasearch.encoders.onnx_clip import OnnxClipModel
from mediasearch.models.onnx_export import export_clip
from mediasearch.models.random_init import build_random_clip


@pytest.fixture(scope="module")
def export(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_clip(str(tiny_clip_dir), cache_dir=tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def unpacked(tiny_clip_dir: Path, export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What SageMaker unpacks to /opt/ml/model."""
    root = tmp_path_factory.mktemp("pkg")
    archive = build_model_archive(tiny_clip_dir, root / "model.tar.gz", onnx=export)
    with tarfile.open(archive.path) as tar:
        tar.extractall(root / "model", filter="data")
    return root / "model"


def test_the_archive_carries_the_export_beside_the_weights(unpacked: Path, export: Path) -> None:
    assert (unpacked / "model.safetensors").is_file() and (unpacked / "code" / "inference.py").is_file()
    assert sorted(p.name for p in (unpacked / "onnx").iterdir()) == sorted(p.name for p in export.iterdir())


def test_the_unpacked_archive_is_the_checkpoint(unpacked: Path, tiny_clip_dir: Path, tmp_path: Path) -> None:
    """Neither the export (onnx/) nor the handler (code/) is part of the model: the identity SageMaker's
    documents record is the one a local ingest of the same weights records."""
    checkpoint = identify(str(tiny_clip_dir), cache_dir=tmp_path).id
    assert identify(str(unpacked), cache_dir=tmp_path).id == checkpoint
    model = OnnxClipModel(str(unpacked), device="cpu", cache_dir=tmp_path / "no-cache", auto_export=False)
    assert model.load().folder == unpacked / "onnx" and model.identity.id == checkpoint


def test_an_export_of_other_weights_is_refused(tiny_clip_dir: Path, export: Path, tmp_path: Path) -> None:
    other = build_random_clip(tmp_path / "other", size="tiny", seed=3)
    with pytest.raises(PackagingError, match="exported from"):
        build_model_archive(other, tmp_path / "m.tar.gz", onnx=export)
    with pytest.raises(PackagingError, match="not an ONNX export folder"):
        build_model_archive(tiny_clip_dir, tmp_path / "m.tar.gz", onnx=tmp_path)


def test_the_unpacked_archive_serves_on_onnx_runtime(unpacked: Path, tmp_path: Path) -> None:
    """model_fn on a CPU instance (the PyTorch container, torch and transformers installed): the engine is
    ONNX Runtime on the packaged export (nothing exported at start-up), and the response names the
    checkpoint's identity."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, json, sys
        BLOCKED = {{"lancedb", "pyarrow", "opensearchpy", "fastapi", "av", "cv2"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(name + " is blocked in this test")
        sys.meta_path.insert(0, Block())
        spec = importlib.util.spec_from_file_location("inference", {str(unpacked / "code" / "inference.py")!r})
        h = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(h)
        handler = h.model_fn({str(unpacked)!r})
        data = h.input_fn(b'{{"text": ["a red square"]}}', "application/json")
        body, ctype = h.output_fn(h.predict_fn(data, handler), "application/json")
        print(json.dumps({{"engine": type(handler.model).__name__, "folder": str(handler.model.folder),
                          "response": json.loads(body)}}))
        """
    )
    env = {
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["engine"] == "OnnxClipModel" and out["folder"] == str(unpacked / "onnx")
    assert len(out["response"]["embeddings"][0]) == 16
    assert out["response"]["model"] == identify(str(unpacked)).id
    assert not (tmp_path / "cache" / "onnx").exists()  # nothing exported at start-up


class FakeS3:
    """head_object says 404, upload_file keeps the path: enough for package_model."""

    def __init__(self) -> None:
        self.uploaded: list[str] = []

    def head_object(self, **_: Any) -> None:
        raise ClientError({"Error": {"Code": "404"}}, "HeadObject")

    def upload_file(self, path: str, bucket: str, key: str, ExtraArgs: dict[str, str]) -> None:
        self.uploaded.append(key)


def test_package_model_exports_into_the_cache_and_packs_it(tiny_clip_dir: Path, tmp_path: Path) -> None:
    s3 = FakeS3()
    archive, uri = package_model(
        str(tiny_clip_dir), "bucket", "models/clip", s3, tmp_path / "out", onnx_cache=tmp_path / "onnx"
    )
    assert uri == f"s3://bucket/{s3.uploaded[0]}"
    assert {"onnx/meta.json", "onnx/text.fp32.onnx", "onnx/image.int8.onnx"} <= set(archive.members)
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.is_dir()]  # the export is cached for next time
    again, _ = package_model(
        str(tiny_clip_dir), "bucket", "models/clip", s3, tmp_path / "again", onnx_cache=tmp_path / "onnx"
    )
    assert again.sha256 == archive.sha256  # the cached export: a reproducible archive, one S3 key
    bare, _ = package_model(str(tiny_clip_dir), "bucket", "models/clip", s3, tmp_path / "bare", onnx=False)
    assert not [m for m in bare.members if m.startswith("onnx/")]
