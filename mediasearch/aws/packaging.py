"""Builds `model.tar.gz` for a SageMaker model: weights at the root, the handler under `code/`.

Layout (what the SageMaker PyTorch inference container expects; it unpacks the archive to
/opt/ml/model, passes that directory to `model_fn` and puts `code/` on `sys.path`):

    config.json, model.safetensors, tokenizer + preprocessor files   <- the weights
    onnx/{image,text}.{fp32,int8}.onnx, tokenizer files, meta.json   <- their ONNX export (CLIP)
    code/inference.py                                                <- model_handlers/<name>/inference.py
    code/requirements.txt                                            <- pip-installed at container start
    code/mediasearch/...                                             <- this package's source

The archive is byte-for-byte reproducible (sorted entries, zeroed times and owners), so its digest
names the S3 key and re-packaging unchanged inputs uploads nothing.

The ONNX export lets a CPU container run ONNX Runtime without exporting at start-up (the engine setting
picks it, see `mediasearch.encoders.engine`). It sits in `onnx/`, which the model's identity skips, so
the unpacked folder is still the checkpoint it was made from (`mediasearch.core.model_identity`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mediasearch

PACKAGE_DIR = Path(mediasearch.__file__).resolve().parent
# model_handlers/ sits beside the package in the source tree (the package is installed editable
# wherever models are packaged); `--handler-dir` covers any other layout.
HANDLERS_DIR = PACKAGE_DIR.parent / "model_handlers"

# Hub snapshots often carry the same weights in several formats; the container needs one.
SKIP_WEIGHT_SUFFIXES = (".msgpack", ".h5", ".onnx", ".ot", ".tflite")
SKIP_WEIGHT_PREFIXES = ("tf_model", "flax_model", "rust_model", ".")


class PackagingError(RuntimeError):
    """The inputs cannot make a usable model archive; the message says what is missing."""


@dataclass(frozen=True)
class ModelArchive:
    path: Path
    sha256: str
    members: tuple[str, ...]


def handler_dir(name: str = "clip") -> Path:
    return HANDLERS_DIR / name


def _weight_files(weights: Path) -> list[Path]:
    files = sorted(p for p in weights.iterdir() if p.is_file())
    names = {p.name for p in files}
    keep = []
    for p in files:
        if p.name.endswith(SKIP_WEIGHT_SUFFIXES) or p.name.startswith(SKIP_WEIGHT_PREFIXES):
            continue
        # Prefer safetensors: it loads without pickle and is what save_pretrained writes.
        if p.name == "pytorch_model.bin" and "model.safetensors" in names:
            continue
        keep.append(p)
    if "config.json" not in {p.name for p in keep}:
        raise PackagingError(f"{weights} has no config.json: it is not a saved transformers model")
    return keep


def _package_files() -> Iterator[tuple[Path, str]]:
    """(file, arcname) for the package source: Python modules and package data, no caches."""
    for path in sorted(PACKAGE_DIR.rglob("*")):
        rel = path.relative_to(PACKAGE_DIR)
        if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        yield path, f"code/mediasearch/{rel.as_posix()}"


def _add(tar: tarfile.TarFile, data: bytes, arcname: str, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _export_files(weights: Path, onnx: Path) -> list[tuple[Path, str]]:
    """(file, arcname) of an ONNX export made from `weights`, under onnx/."""
    from mediasearch.core.model_identity import EXPORT_SUBDIR, identify
    from mediasearch.encoders.onnx_cache import OnnxCacheError, read_meta

    try:
        made_from = read_meta(onnx)["model_identity"]
    except OnnxCacheError as exc:
        raise PackagingError(str(exc)) from None
    if made_from != identify(str(weights)).id:
        raise PackagingError(f"{onnx} was exported from {made_from}, not from the weights in {weights}")
    return [(p, f"{EXPORT_SUBDIR}/{p.name}") for p in sorted(onnx.iterdir()) if p.is_file()]


def code_files(handler: Path | None = None) -> list[tuple[Path, str]]:
    """(file, arcname) of the archive's `code/` part: the handler's two files and this package's source."""
    handler = handler or handler_dir("clip")
    entry = handler / "inference.py"
    requirements = handler / "requirements.txt"
    for needed in (entry, requirements):
        if not needed.is_file():
            raise PackagingError(
                f"{needed} is missing: a handler directory needs inference.py and requirements.txt"
            )
    return [(entry, "code/inference.py"), (requirements, "code/requirements.txt"), *_package_files()]


def write_code(model_dir: Path, handler: Path | None = None) -> list[str]:
    """Write the `code/` part of the archive into `model_dir` as files: what a SageMaker training job
    must leave in /opt/ml/model so that the model.tar.gz SageMaker makes of it serves as ours does."""
    written = []
    for path, arcname in code_files(handler):
        dest = model_dir / arcname
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
        written.append(arcname)
    return written


def copy_weights(weights: Path, model_dir: Path) -> list[str]:
    """Copy the files of a saved model that an archive keeps (see `_weight_files`) into `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for path in _weight_files(weights):
        (model_dir / path.name).write_bytes(path.read_bytes())
        names.append(path.name)
    return names


def build_model_archive(
    weights: Path, dest: Path, handler: Path | None = None, onnx: Path | None = None
) -> ModelArchive:
    """Write `dest` (model.tar.gz) from a saved-model directory, a handler directory and optionally the
    weights' ONNX export folder."""
    code_files(handler)  # a handler that cannot serve fails before the weights are read
    if not weights.is_dir():
        raise PackagingError(f"{weights} is not a directory of model weights")

    files: list[tuple[Path, str]] = [(p, p.name) for p in _weight_files(weights)]
    if onnx is not None:
        files += _export_files(weights, onnx)
    files += code_files(handler)
    return write_archive(files, dest)


def write_archive(files: list[tuple[Path, str]], dest: Path) -> ModelArchive:
    """A reproducible tar.gz of (file, arcname) pairs (sorted entries, zeroed times and owners)."""
    files = sorted(files, key=lambda f: f[1])
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in files:
            _add(tar, path.read_bytes(), arcname)
    # gzip's header carries a timestamp and a file name; zero both so equal inputs give equal bytes.
    with open(dest, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    return ModelArchive(dest, digest, tuple(a for _, a in files))


def stage_weights(model: str, dest: Path) -> Path:
    """A directory holding `model`'s weights: the directory itself, or a hub id saved to `dest`.

    Saving through transformers (rather than copying a hub snapshot) keeps exactly one weights file
    in safetensors format, whatever formats the hub repository holds.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    from transformers import AutoProcessor, CLIPModel

    dest.mkdir(parents=True, exist_ok=True)
    CLIPModel.from_pretrained(model).save_pretrained(dest)
    AutoProcessor.from_pretrained(model).save_pretrained(dest)
    return dest


def archive_key(prefix: str, archive: ModelArchive) -> str:
    return f"{prefix.strip('/')}/{archive.sha256[:16]}/model.tar.gz"


def upload_archive(archive: ModelArchive, bucket: str, prefix: str, s3) -> str:  # s3: boto3 S3 client
    """Upload under a digest-named key (skipped when already there); returns the s3:// URI."""
    from botocore.exceptions import ClientError

    key = archive_key(prefix, archive)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        s3.upload_file(str(archive.path), bucket, key, ExtraArgs={"ContentType": "application/gzip"})
    return f"s3://{bucket}/{key}"


def package_model(
    model: str,
    bucket: str,
    prefix: str,
    s3,
    out_dir: Path,
    handler: Path | None = None,
    *,
    onnx: bool = True,
    onnx_cache: Path | None = None,
    digest_cache: str | Path | None = None,
) -> tuple[ModelArchive, str]:
    """Stage weights (and, with `onnx`, their ONNX export, made or found in `onnx_cache`), build
    `out_dir/model.tar.gz` and upload it; returns (archive, s3 URI)."""
    with tempfile.TemporaryDirectory(prefix="mediasearch-weights-") as tmp:
        weights = stage_weights(model, Path(tmp))
        export = None
        if onnx:
            from mediasearch.models.onnx_export import export_clip

            export = export_clip(str(weights), cache_dir=onnx_cache, digest_cache=digest_cache)
        archive = build_model_archive(weights, out_dir / "model.tar.gz", handler, onnx=export)
    return archive, upload_archive(archive, bucket, prefix, s3)
