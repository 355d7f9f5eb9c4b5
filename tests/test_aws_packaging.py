"""model.tar.gz: layout, reproducibility, upload to S3 (moto over HTTP), and that it runs unpacked."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import boto3
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from typer.testing import CliRunner

from mediasearch import backends
from mediasearch.aws import container
from mediasearch.aws.packaging import PackagingError, build_model_archive, handler_dir
from mediasearch.aws.sagemaker import PYTORCH_INFERENCE_TAG
from mediasearch.cli import app
from mediasearch.indexing.handler import EntryPoints


@pytest.fixture(scope="module")
def archive(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_model_archive(tiny_clip_dir, tmp_path_factory.mktemp("pkg") / "model.tar.gz")


def test_layout(archive) -> None:
    with tarfile.open(archive.path) as tar:
        names = set(tar.getnames())
        members = tar.getmembers()
    # Weights at the root, where SageMaker's model_dir points.
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"} <= names
    assert {"code/inference.py", "code/requirements.txt"} <= names
    assert {
        "code/mediasearch/__init__.py",
        "code/mediasearch/indexing/handler.py",
        "code/mediasearch/models/clip.py",
        "code/mediasearch/web/index.html",
    } <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert all(m.mtime == 0 and m.uid == 0 for m in members)


def test_requirements_never_replace_the_container_torch(archive) -> None:
    with tarfile.open(archive.path) as tar:
        reqs = tar.extractfile("code/requirements.txt").read().decode()  # type: ignore[union-attr]
    names = {ln.split(">")[0].split("=")[0].split("<")[0].strip() for ln in reqs.splitlines()}
    names.discard("")
    names = {n for n in names if not n.startswith("#")}
    assert "transformers" in names and "pydantic-settings" in names
    assert "torch" not in names


@pytest.mark.parametrize("handler", ["clip", "captioning"])
def test_transformers_is_pinned_to_a_release_that_uses_the_container_torch(handler: str) -> None:
    """The toolkit pip-installs code/requirements.txt at every container start
    (sagemaker-pytorch-inference-toolkit torchserve.py: start_torchserve -> _install_requirements), so
    a range (`>=5.0,<6`) installs whatever 5.x is newest that day. transformers' is_torch_available()
    returns False below its torch floor (import_utils.py, 5.23.0: torch>=2.6), and the DLC's torch is
    2.6.0 (deep-learning-containers pytorch/inference/docker/2.6/py3/Dockerfile.cpu). So: one exact
    pin, the release these tests run, whose declared torch requirement the DLC's torch meets."""
    lines = [ln.strip() for ln in (handler_dir(handler) / "requirements.txt").read_text().splitlines()]
    (pin,) = [ln for ln in lines if ln.startswith("transformers")]
    name, _, version = pin.partition("==")
    assert name == "transformers" and version, f"{pin!r} is not an exact pin"
    tested = importlib.metadata.version("transformers")
    assert version == tested, f"requirements pin {version}, the tests run {tested}: test and re-pin together"
    floor = SpecifierSet(container._torch_requirement())
    dlc_torch = Version(PYTORCH_INFERENCE_TAG["cpu"].split("-")[0])
    assert dlc_torch == Version(PYTORCH_INFERENCE_TAG["gpu"].split("-")[0]) == Version("2.6.0")
    assert dlc_torch in floor, f"transformers {version} wants torch{floor}, the DLC has {dlc_torch}"


def test_model_fn_stops_with_the_reason_when_transformers_cannot_use_torch(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a transformers release with a higher torch floor does in the 2.6 container: PyTorch is
    disabled at import (is_torch_available() False, a log line only). model_fn says so at once."""
    import transformers.utils

    real_version = importlib.metadata.version
    monkeypatch.setattr(transformers.utils, "is_torch_available", lambda: False)
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "2.5.1" if name == "torch" else real_version(name)
    )
    entry = EntryPoints(backends.sagemaker_clip_handler)
    with pytest.raises(container.ContainerError, match=r"cannot use torch 2\.5\.1: it needs torch>=2\.6"):
        entry.model_fn(str(tiny_clip_dir))
    with pytest.raises(container.ContainerError, match=r"requirements\.txt"):
        EntryPoints(backends.sagemaker_caption_handler).model_fn(str(tiny_clip_dir))
    assert entry.handler is None


def test_model_fn_refuses_the_hugging_face_toolkit(
    tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a Hugging Face DLC the toolkit package is importable; its handler service would send the
    handlers' (bytes, content type) tuple to the model server as is (a 503 for every request)."""
    (tmp_path / container.HUGGING_FACE_TOOLKIT).mkdir()
    (tmp_path / container.HUGGING_FACE_TOOLKIT / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(container.ContainerError, match="Hugging Face inference toolkit"):
        EntryPoints(backends.sagemaker_clip_handler).model_fn(str(tiny_clip_dir))


def test_reproducible(archive, tiny_clip_dir: Path, tmp_path: Path) -> None:
    again = build_model_archive(tiny_clip_dir, tmp_path / "again.tar.gz")
    assert again.sha256 == archive.sha256
    assert again.path.read_bytes() == archive.path.read_bytes()


def test_refuses_incomplete_inputs(tmp_path: Path, tiny_clip_dir: Path) -> None:
    with pytest.raises(PackagingError, match=r"config\.json"):
        build_model_archive(tmp_path, tmp_path / "m.tar.gz")
    with pytest.raises(PackagingError, match=r"inference\.py"):
        build_model_archive(tiny_clip_dir, tmp_path / "m.tar.gz", handler=tmp_path)
    assert (handler_dir("clip") / "inference.py").is_file()


def test_unpacked_archive_serves_with_its_own_code_and_requirements_only(archive, tmp_path: Path) -> None:
    """What SageMaker does: unpack to a model dir, import code/inference.py, call model_fn(model_dir).

    The PyTorch container provides torch, numpy and boto3; requirements.txt adds the rest. Neither
    has lancedb, opensearch-py, FastAPI or the video stack, so those imports are blocked here, and the
    mediasearch package must come from the archive, not from this checkout."""
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(archive.path) as tar:
        tar.extractall(model_dir, filter="data")
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, sys
        BLOCKED = {{"lancedb", "pyarrow", "opensearchpy", "fastapi", "starlette", "uvicorn", "mangum",
                   "typer", "av", "scenedetect", "cv2"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(name + " is not in the SageMaker container")
        sys.meta_path.insert(0, Block())
        spec = importlib.util.spec_from_file_location("inference", {str(model_dir / "code" / "inference.py")!r})
        h = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(h)
        model = h.model_fn({str(model_dir)!r})
        data = h.input_fn(b'{{"text": ["a red square"]}}', "application/json")
        body, ctype = h.output_fn(h.predict_fn(data, model), "application/json")
        import mediasearch
        print(mediasearch.__file__)
        print(ctype, len(__import__("json").loads(body)["embeddings"][0]))
        """
    )
    env = {"MEDIASEARCH_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    origin, result = proc.stdout.strip().splitlines()[-2:]
    assert origin.startswith(str(model_dir / "code" / "mediasearch"))
    assert result == "application/json 16"


def test_package_command_uploads_once(
    moto_endpoint: str, s3_bucket: str, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    args = [
        "aws",
        "package",
        "--model",
        str(tiny_clip_dir),
        "--bucket",
        s3_bucket,
        "--out-dir",
        str(tmp_path),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout)
    assert info["model_data"] == f"s3://{s3_bucket}/models/clip/{info['sha256'][:16]}/model.tar.gz"

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    key = info["model_data"].split("/", 3)[3]
    head = s3.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentLength"] == (tmp_path / "model.tar.gz").stat().st_size
    assert head["ContentType"] == "application/gzip"
    body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    local = tmp_path / "downloaded.tar.gz"
    local.write_bytes(body)
    with tarfile.open(local) as tar:
        assert {"config.json", "code/inference.py", "code/requirements.txt"} <= set(tar.getnames())

    second = runner.invoke(app, args)
    assert second.exit_code == 0 and json.loads(second.stdout)["model_data"] == info["model_data"]
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="models/")["Contents"]
    # The archive once, and beside it the identity of its model (what aws transform plans against).
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["identity.json", "model.tar.gz"]
    recorded = json.loads(
        s3.get_object(Bucket=s3_bucket, Key=key.replace("model.tar.gz", "identity.json"))["Body"].read()
    )
    assert recorded["model_id"] == info["model_id"] and info["model_id"].startswith("sha256:")
