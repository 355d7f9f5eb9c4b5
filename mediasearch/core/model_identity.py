"""What a model IS, as opposed to where it was loaded from.

Every document and every index generation records the identity of the model that embedded it, so
vectors of two models are never compared. A path is never an identity: SageMaker unpacks every model
to `/opt/ml/model`, and the same weights copied elsewhere are still the same model. So:

- a local directory is identified by a SHA-256 over its config and weight files (names and bytes);
- a hub id by the id and the commit of the cached snapshot it loads (`hub:<id>@<commit>`), which is
  what `from_pretrained` reads; without a cached snapshot, by the id alone (`hub:<id>`).

Hashing a ViT-B/32 checkpoint (~600 MB) takes about a second, so the digest of a directory is cached
under the cache folder (the `cache_dir` setting, passed in), keyed by each file's size and modification
time.

The ONNX backend keys its exports by this same identity (`require_revision=True`: an export of a hub
model must name the commit it was made from, since `main` moves). An export shipped inside a checkpoint
folder (`onnx/`, as in model.tar.gz) is derived from the checkpoint, not part of it, so it is skipped,
as is the archive's handler folder (`code/`): the unpacked archive keeps the checkpoint's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

# What decides a model's outputs: its config and its weights. Tokenizer and processor files matter
# too (a different vocabulary gives different text vectors), so they are hashed as well.
IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".onnx")
EXPORT_SUBDIR = "onnx"  # where a checkpoint folder carries its own ONNX export (not hashed)
# What an unpacked model.tar.gz holds beside the checkpoint: its ONNX export and the SageMaker handler
# (code/: inference.py, requirements.txt, the package). Neither changes what the weights compute, so the
# unpacked archive is the model it was packaged from, and a handler change re-embeds nothing.
NOT_THE_MODEL = frozenset({EXPORT_SUBDIR, "code"})
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_LOCK = threading.Lock()


class ModelIdentityError(ValueError):
    """The identity cannot be established (e.g. a hub model's commit, offline and not cached)."""


@dataclass(frozen=True)
class ModelIdentity:
    """`id` names the model (never a path); `source` says where it was loaded from (informational)."""

    id: str
    source: str

    @property
    def short(self) -> str:
        """A short, key-safe digest of the identity, for table and index names."""
        return hashlib.sha1(self.id.encode("utf-8")).hexdigest()[:10]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mediasearch`, else `~/.cache/mediasearch`: where no cache folder is configured."""
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base).expanduser() / "mediasearch" if base else Path.home() / ".cache" / "mediasearch"


def _identity_files(directory: Path) -> list[Path]:
    def counted(p: Path) -> bool:
        # Relative parts only: a checkpoint under a hidden folder (~/.cache/...) is still hashed.
        parts = p.relative_to(directory).parts
        return (
            p.is_file()
            and p.suffix in IDENTITY_SUFFIXES
            and parts[0] not in NOT_THE_MODEL
            and not any(part.startswith(".") for part in parts)
        )

    return sorted(p for p in directory.rglob("*") if counted(p))


def directory_digest(directory: Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 over the names and bytes of a model folder's identity files (cached by size + mtime)."""
    files = _identity_files(directory)
    if not files:
        raise ValueError(f"{directory} holds no model files (config.json, *.safetensors, ...)")
    stamp = hashlib.sha1(
        json.dumps(
            [[str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        ).encode()
    ).hexdigest()
    cache_file = Path(cache_dir or default_cache_dir()) / "model-digests.json"
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


def hub_revision(
    repo_id: str, revision: str | None = None, hf_cache_dir: str | Path | None = None
) -> str | None:
    """The commit of the cached snapshot `from_pretrained` would load (at `revision`, default `main`),
    or None when none is cached. A full commit sha is taken as is."""
    if revision and _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo_id,
            revision=revision,
            local_files_only=True,
            cache_dir=str(hf_cache_dir) if hf_cache_dir else None,
        )
    except Exception:  # not cached, or no hub library: the id alone will have to do
        return None
    return Path(path).name or None


def _hub_commit_online(repo_id: str, revision: str | None) -> str:
    """Ask the hub for the commit `revision` points at, unless HF_HUB_OFFLINE forbids it."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise ModelIdentityError(
            f"cannot resolve the commit of {repo_id!r} (revision {revision or 'main'}): it is not in the "
            "local hub cache and HF_HUB_OFFLINE is set. Download it once, or point the model setting at an "
            "export folder or a local checkpoint directory."
        )
    from huggingface_hub import HfApi

    try:
        sha = HfApi().model_info(repo_id, revision=revision).sha
    except Exception as exc:  # any hub failure means the same thing here: no identity
        raise ModelIdentityError(f"cannot resolve the commit of {repo_id!r} on the hub: {exc}") from exc
    if not sha:
        raise ModelIdentityError(f"the hub gave no commit for {repo_id!r} at {revision or 'main'}")
    return sha


def identify(
    source: str,
    revision: str | None = None,
    *,
    require_revision: bool = False,
    cache_dir: str | Path | None = None,
    hf_cache_dir: str | Path | None = None,
) -> ModelIdentity:
    """The identity of the model at `source` (a local directory or a hub id).

    `revision`: a hub branch, tag or commit (default: what `main` points at). `require_revision`: a hub
    id must resolve to a commit (from the local hub cache, else the hub), or `ModelIdentityError`; what
    keys a derived artefact such as an ONNX export needs. `cache_dir`: where directory digests are
    remembered (default `default_cache_dir()`).
    """
    local = Path(source).expanduser()
    if local.is_dir():
        digest = directory_digest(local, cache_dir)
        return ModelIdentity(id=f"sha256:{digest[:32]}", source=str(local.resolve()))
    if require_revision:
        _check_hub_id(source)
    commit = hub_revision(source, revision, hf_cache_dir)
    if commit is None and require_revision:
        commit = _hub_commit_online(source, revision)
    return ModelIdentity(id=f"hub:{source}@{commit}" if commit else f"hub:{source}", source=source)


def _check_hub_id(source: str) -> None:
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(source)
    except ImportError:  # no hub library: the lookups below fail with their own message
        return
    except ValueError as exc:  # HFValidationError
        raise ModelIdentityError(
            f"{source!r} is neither a local directory nor a valid hub id: {exc}"
        ) from None


# A generation built with a trained video encoder as well as CLIP (MEDIASEARCH_VIDEO_ENCODER) records
# both: "<clip id> + <encoder id>". Queries are encoded by the CLIP part alone.
VIDEO_ENCODER_JOIN = " + "


def with_video_encoder(clip: ModelIdentity, encoder: ModelIdentity) -> ModelIdentity:
    """The identity of an index built with `clip` and the video encoder `encoder`."""
    return ModelIdentity(id=f"{clip.id}{VIDEO_ENCODER_JOIN}{encoder.id}", source=clip.source)


def clip_part(model_id: str) -> str:
    """The CLIP's identity in a generation's model id (the id itself when no video encoder is part)."""
    return model_id.split(VIDEO_ENCODER_JOIN, 1)[0]
