"""What a model IS, as opposed to where it was loaded from.

Every document and every index generation records the identity of the model that embedded it, so
vectors of two models are never compared. A path is never an identity: SageMaker unpacks every model
to `/opt/ml/model`, and the same weights copied elsewhere are still the same model. So:

- a local directory is identified by a SHA-256 over its config and weight files (names and bytes);
- a hub id by the id and the commit of the cached snapshot it loads (`hub:<id>@<commit>`), which is
  what `from_pretrained` reads; without a cached snapshot, by the id alone (`hub:<id>`).

Hashing a ViT-B/32 checkpoint (~600 MB) takes about a second, so the digest of a directory is cached
under the user's cache folder, keyed by each file's size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

# What decides a model's outputs: its config and its weights. Tokenizer and processor files matter
# too (a different vocabulary gives different text vectors), so they are hashed as well.
IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".onnx")
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelIdentity:
    """`id` names the model (never a path); `source` says where it was loaded from (informational)."""

    id: str
    source: str

    @property
    def short(self) -> str:
        """A short, key-safe digest of the identity, for table and index names."""
        return hashlib.sha1(self.id.encode("utf-8")).hexdigest()[:10]


def cache_dir() -> Path:
    base = os.environ.get("MEDIASEARCH_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "mediasearch" if base else Path.home() / ".cache" / "mediasearch"


def _identity_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix in IDENTITY_SUFFIXES and not any(part.startswith(".") for part in p.parts)
    )


def directory_digest(directory: Path) -> str:
    """SHA-256 over the names and bytes of a model folder's identity files (cached by size + mtime)."""
    files = _identity_files(directory)
    if not files:
        raise ValueError(f"{directory} holds no model files (config.json, *.safetensors, ...)")
    stamp = hashlib.sha1(
        json.dumps(
            [[str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        ).encode()
    ).hexdigest()
    cache_file = cache_dir() / "model-digests.json"
    with _LOCK:
        cached = _read_cache(cache_file)
        if stamp in cached:
            return cached[stamp]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = digest.hexdigest()
    with _LOCK:
        cached = _read_cache(cache_file)
        cached[stamp] = value
        _write_cache(cache_file, cached)
    return value


def _read_cache(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only home only costs the hashing next time


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot `from_pretrained` would load, or None when none is cached."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or no hub library: the id alone will have to do
        return None
    return Path(path).name or None


def identify(source: str) -> ModelIdentity:
    """The identity of the model at `source` (a local directory or a hub id)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return ModelIdentity(id=f"sha256:{directory_digest(local)[:32]}", source=str(local.resolve()))
    revision = hub_revision(source)
    return ModelIdentity(id=f"hub:{source}@{revision}" if revision else f"hub:{source}", source=source)
