"""Where ONNX exports of a CLIP model live, keyed by the model's identity (torch-free).

An export folder holds everything the runtime needs and nothing else: the two towers in fp32 and int8,
the tokenizer and preprocessor files copied from the checkpoint, and `meta.json`. Its name comes from
what the model *is* (`mediasearch.core.model_identity.identify`, the identity documents record), never
from where it is:

- a hub id: the repo id and the resolved commit (`main` moves; a commit does not);
- a local directory: the sha256 of its config, tokenizer and weight files, so the same checkpoint
  unpacked in two places shares one export, and edited weights never reuse one.

Folders appear atomically: an export is written to a staging folder beside its final place and renamed
into it, so a reader sees either nothing or a complete folder, and two processes exporting the same
model at once end with one folder (the loser of the rename discards its copy). A lock file avoids the
duplicated work where the OS offers one; correctness never depends on it.

The cache folder is passed in (the `onnx_cache` setting, see `mediasearch.backends`); without one it is
`onnx/` under the default cache folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mediasearch.core.model_identity import (
    EXPORT_SUBDIR,
    ModelIdentity,
    ModelIdentityError,
    default_cache_dir,
    identify,
)

# 2: folders keyed by core.model_identity (one identity for documents and exports), `identity` in
# meta.json is that id. Folders of another format are ignored (and re-exported).
FORMAT_VERSION = 2
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


class OnnxCacheError(RuntimeError):
    """The model's identity cannot be established, or an export folder is not usable."""


def identity_suffix(precision: str) -> str:
    """What a precision adds to the checkpoint's identity: nothing for fp32 (its vectors agree with
    PyTorch's to cosine 1.0 and mix with them), `#onnx-int8` for int8 (its rankings differ: another model)."""
    return "" if precision == "fp32" else f"#onnx-{precision}"


def precision_of(model_id: str) -> str:
    """The ONNX precision whose vectors carry `model_id` (fp32 for any id without a precision suffix)."""
    for precision in PRECISIONS:
        if identity_suffix(precision) and model_id.endswith(identity_suffix(precision)):
            return precision
    return "fp32"


def onnx_file(tower: str, precision: str) -> str:
    """The file name of one tower's graph at one precision, e.g. `image.int8.onnx`."""
    return f"{tower}.{precision}.onnx"


def default_export_root() -> Path:
    """`onnx/` under the default cache folder (`$XDG_CACHE_HOME/mediasearch` or `~/.cache/mediasearch`)."""
    return default_cache_dir() / "onnx"


def export_identity(
    name: str,
    revision: str | None = None,
    digest_cache: str | Path | None = None,
    hf_cache_dir: str | Path | None = None,
) -> ModelIdentity:
    """The identity an export of `name` is keyed by: `identify` with the hub commit required."""
    try:
        return identify(
            name,
            revision,
            require_revision=True,
            cache_dir=digest_cache,
            hf_cache_dir=hf_cache_dir,
        )
    except (ModelIdentityError, ValueError) as exc:  # ValueError: a directory without model files
        raise OnnxCacheError(str(exc)) from None


def export_slug(identity: ModelIdentity) -> str:
    """A folder name for an identity: readable for hub models, the digest for local ones (no path in it)."""
    kind, _, rest = identity.id.partition(":")
    if kind == "sha256" and rest:
        return f"sha256-{rest}"
    repo, _, commit = rest.partition("@")
    if kind != "hub" or not commit:
        raise OnnxCacheError(f"an export needs a checkpoint digest or a hub commit, not {identity.id!r}")
    return f"{repo.replace('/', '--')}--{commit[:12]}"


# -- export folders ---------------------------------------------------------------------------------


def export_dir(identity: ModelIdentity, cache_dir: str | Path | None = None) -> Path:
    """Where the export of `identity` lives under the cache folder (whether or not it exists yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_export_root()
    return root / f"{export_slug(identity)}.v{FORMAT_VERSION}"


def packaged_export(checkpoint: str | Path) -> Path | None:
    """The export a checkpoint folder carries in `onnx/` (model.tar.gz does), if it has a usable one."""
    folder = Path(checkpoint).expanduser() / EXPORT_SUBDIR
    return folder if is_export_dir(folder) else None


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
