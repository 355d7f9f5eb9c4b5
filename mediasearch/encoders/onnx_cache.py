"""Where ONNX exports of a CLIP model live, keyed by the model's identity (torch-free).

An export folder holds everything the runtime needs and nothing else: the two towers in fp32 and int8,
the tokenizer and preprocessor files copied from the checkpoint, and `meta.json`. Its name comes from
what the model *is*, never from where it is:

- a hub id: the repo id and the resolved commit (`main` moves; a commit does not);
- a local directory: a sha256 over the bytes of its weight and config files (names included, paths not),
  so the same checkpoint unpacked in two places shares one export, and edited weights never reuse one.

Folders appear atomically: an export is written to a staging folder beside its final place and renamed
into it, so a reader sees either nothing or a complete folder, and two processes exporting the same
model at once end with one folder (the loser of the rename discards its copy). A lock file avoids the
duplicated work where the OS offers one; correctness never depends on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FORMAT_VERSION = 1  # bump when the folder's contents change meaning; old folders are then ignored
META_NAME = "meta.json"
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
TOWERS: tuple[str, ...] = ("image", "text")

# Copied beside the graphs: the runtime tokenises and preprocesses from these alone.
RUNTIME_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
)
# Everything an export depends on besides the weights; hashed with them into a local identity.
_IDENTITY_FILES = frozenset({"config.json", "vocab.json", "merges.txt", *RUNTIME_FILES})
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin"})
_DIGEST_MEMO = ".digests.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class OnnxCacheError(RuntimeError):
    """The model's identity cannot be established, or an export folder is not usable."""


def onnx_file(tower: str, precision: str) -> str:
    """The file name of one tower's graph at one precision, e.g. `image.int8.onnx`."""
    return f"{tower}.{precision}.onnx"


def default_cache_dir() -> Path:
    """`MEDIASEARCH_ONNX_CACHE`, else `$XDG_CACHE_HOME/mediasearch/onnx`, else `~/.cache/mediasearch/onnx`."""
    explicit = os.environ.get("MEDIASEARCH_ONNX_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mediasearch" / "onnx"


@dataclass(frozen=True)
class ModelIdentity:
    """What a checkpoint is: a hub repo at a commit, or the digest of a local directory's files."""

    kind: Literal["hub", "local"]
    repo_id: str | None = None
    revision: str | None = None  # a commit sha, for kind "hub"
    sha256: str | None = None  # for kind "local"

    @property
    def key(self) -> str:
        """The identity as one string, recorded in meta.json."""
        if self.kind == "hub":
            return f"hub:{self.repo_id}@{self.revision}"
        return f"sha256:{self.sha256}"

    @property
    def slug(self) -> str:
        """A folder name: readable for hub models, a digest prefix for local ones (no path in it)."""
        if self.kind == "hub":
            assert self.repo_id is not None and self.revision is not None
            return f"{self.repo_id.replace('/', '--')}--{self.revision[:12]}"
        assert self.sha256 is not None
        return f"sha256-{self.sha256[:32]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "sha256": self.sha256,
        }


def model_identity(
    name: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    hf_cache_dir: str | Path | None = None,
) -> ModelIdentity:
    """The identity of `name`: a local directory if one exists there (as `LazyModel` decides), else a hub id.

    `cache_dir` holds a memo of local digests keyed by file sizes and mtimes, so a 600 MB checkpoint is
    hashed once rather than on every start; the memo only saves time, the identity is still the bytes.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        memo = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        return ModelIdentity(kind="local", sha256=local_digest(local, memo))
    return ModelIdentity(kind="hub", repo_id=name, revision=hub_commit(name, revision, hf_cache_dir))


def _identity_files(directory: Path) -> list[Path]:
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _IDENTITY_FILES)
    )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise OnnxCacheError(f"{directory} holds no weight files (*.safetensors or *.bin)")
    return files


def local_digest(directory: Path, memo_dir: Path | None = None) -> str:
    """sha256 over the names, sizes and bytes of the directory's weight and config files."""
    files = _identity_files(directory)
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo_key = str(directory.resolve())
    memo = _read_memo(memo_dir) if memo_dir is not None else {}
    entry = memo.get(memo_key)
    if isinstance(entry, dict) and entry.get("stat") == stamp and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    for path in files:
        # Name and size delimit each file's bytes, so moving bytes between files changes the digest.
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    hexdigest = digest.hexdigest()
    if memo_dir is not None:
        memo[memo_key] = {"stat": stamp, "sha256": hexdigest}
        _write_memo(memo_dir, memo)
    return hexdigest


def _read_memo(memo_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((memo_dir / _DIGEST_MEMO).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(memo_dir: Path, memo: dict[str, Any]) -> None:
    # A lost race only loses a memo entry (the next start hashes again); never fail the caller for it.
    with contextlib.suppress(OSError):
        memo_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=memo_dir)
        with os.fdopen(fd, "w") as fh:
            json.dump(memo, fh)
        os.replace(tmp, memo_dir / _DIGEST_MEMO)


def hub_commit(repo_id: str, revision: str | None = None, hf_cache_dir: str | Path | None = None) -> str:
    """The commit that `revision` (default `main`) of a hub repo points at.

    The local hub cache answers first, so an offline machine with the model downloaded needs no network;
    otherwise the hub is asked, unless HF_HUB_OFFLINE forbids it.
    """
    if revision and _COMMIT.match(revision):
        return revision
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(
            repo_id, "config.json", cache_dir=str(hf_cache_dir) if hf_cache_dir else None, revision=revision
        )
    except HFValidationError as exc:
        raise OnnxCacheError(f"{repo_id!r} is neither a local directory nor a valid hub id: {exc}") from None
    if isinstance(cached, str):
        commit = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        if _COMMIT.match(commit):
            return commit
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise OnnxCacheError(
            f"cannot resolve the commit of {repo_id!r} (revision {revision or 'main'}): it is not in the "
            "local hub cache and HF_HUB_OFFLINE is set. Download it once, or point the model setting at an "
            "export folder or a local checkpoint directory."
        )
    try:
        sha = HfApi().model_info(repo_id, revision=revision).sha
    except Exception as exc:  # any hub failure means the same thing here: no identity
        raise OnnxCacheError(f"cannot resolve the commit of {repo_id!r} on the hub: {exc}") from exc
    if not sha:
        raise OnnxCacheError(f"the hub gave no commit for {repo_id!r} at {revision or 'main'}")
    return sha


# -- export folders ---------------------------------------------------------------------------------


def export_dir(identity: ModelIdentity, cache_dir: str | Path | None = None) -> Path:
    """Where the export of `identity` lives (whether or not it exists yet)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{identity.slug}.v{FORMAT_VERSION}"


def read_meta(folder: str | Path) -> dict[str, Any]:
    """meta.json of an export folder; raises OnnxCacheError when the folder is not a usable export."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_NAME).read_text())
    except FileNotFoundError:
        raise OnnxCacheError(f"{folder} is not an ONNX export folder (no {META_NAME})") from None
    except (OSError, ValueError) as exc:
        raise OnnxCacheError(f"cannot read {folder / META_NAME}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise OnnxCacheError(f"{folder} has export format {found!r}; this version reads {FORMAT_VERSION}")
    missing = [
        name
        for files in meta.get("files", {}).values()
        for name in files.values()
        if not (folder / name).is_file()
    ]
    if missing or not meta.get("files"):
        raise OnnxCacheError(f"{folder} is incomplete: missing {', '.join(missing) or 'its file list'}")
    return meta


def is_export_dir(folder: str | Path) -> bool:
    try:
        read_meta(folder)
    except OnnxCacheError:
        return False
    return True


def staging_dir(final: Path) -> Path:
    """A fresh, uniquely named folder beside `final` (same filesystem, so the rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


def publish(staging: Path, final: Path) -> Path:
    """Rename a complete staging folder into place; if another process got there first, keep theirs."""
    try:
        os.rename(staging, final)
    except OSError:
        # rename(2) refuses to replace a non-empty directory: someone else published the same export.
        shutil.rmtree(staging, ignore_errors=True)
        if not is_export_dir(final):
            raise OnnxCacheError(
                f"{final} exists but is not a complete export; remove it and retry"
            ) from None
    return final


@contextlib.contextmanager
def export_lock(final: Path) -> Iterator[None]:
    """Serialise exports of one identity across processes, so the second waits instead of redoing it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): both export, and publish() keeps one
        yield
        return
    with (final.parent / f".{final.name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
