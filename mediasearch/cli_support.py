"""What the CLI says when something is wrong: one line (at most one short paragraph), never a traceback.

- `ReportingGroup` is the top-level command group: click's usage errors become one line naming the
  command's --help, and an error a command meets because of its input or its setup (no such folder, no
  index, a model that cannot be fetched, a bad setting) becomes one line and a non-zero exit. Anything
  else is a bug: one line that says so; with MEDIASEARCH_LOG_LEVEL=DEBUG the traceback is shown too.
- The checks commands make before they do anything costly: the source exists (`checked_source`), the
  index exists (`require_index`: a read never creates one).

Exit codes: 2 for a mistake on the command line, 1 for a command that could not do its work.

Imported at start-up, so it imports only typer at module level (see `mediasearch.cli`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from mediasearch.core.settings import Settings

EXIT_USAGE = 2
EXIT_FAILED = 1

IMAGE_SUFFIXES = ".jpg .jpeg .png .webp .bmp .tif .tiff"
VIDEO_SUFFIXES = ".mp4 .mov .m4v .webm .mkv .gif"
MEDIA_SUFFIXES = f"images: {IMAGE_SUFFIXES}; videos: {VIDEO_SUFFIXES}"


class CliError(Exception):
    """A mistake or a condition the user can act on; the message is shown as it is."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def error(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


# -- the group ------------------------------------------------------------------------------------


class ReportingGroup(TyperGroup):
    """Runs the command line, turning every error into one line on stderr and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # click's usage errors, raised before the command ran
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
            else:
                typer.secho(f"error: {_usage_line(exc)}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(EXIT_FAILED)
        except Exception as exc:
            explained = explain(exc)
            if explained is None:
                if logging.getLogger().isEnabledFor(logging.DEBUG):
                    raise
                explained = (
                    f"error: unexpected {type(exc).__name__}: {_first_line(exc)} (a bug: run again with "
                    "MEDIASEARCH_LOG_LEVEL=DEBUG for the traceback, and report it)",
                    EXIT_FAILED,
                )
            message, code = explained
            typer.secho(message, fg="red", err=True)
            sys.exit(code)
        sys.exit(result if isinstance(result, int) else 0)


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{exc.format_message()}{where}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _is_instance(exc: BaseException, module: str, *names: str) -> bool:
    # Only modules already imported can have raised: looking them up never imports anything.
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(
        exc, tuple(getattr(loaded, n) for n in names if hasattr(loaded, n))
    )


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The line to show for an error a user can act on, with its exit code; None for a bug."""
    if isinstance(exc, CliError):
        return f"error: {exc}", exc.code
    if _is_instance(exc, "mediasearch.query.text_tower", "QueryTextModelError"):
        return f"error: {_first_line(exc)}", EXIT_FAILED  # a setting's mismatch, not a download to fix
    if is_model_error(exc):
        return model_paragraph(exc), EXIT_FAILED
    if _is_instance(exc, "pydantic", "ValidationError") and getattr(exc, "title", "") == "Settings":
        return settings_line(exc), EXIT_USAGE
    if _is_instance(exc, "mediasearch.index.base", "IndexError_"):
        return f"error: {_first_line(exc)}", EXIT_FAILED
    if _is_instance(exc, "mediasearch.index.locks", "LockHeld"):
        return f"error: {_first_line(exc)}", EXIT_USAGE
    if _is_instance(exc, "mediasearch.core.storage", "StoreError"):
        return f"error: {_first_line(exc)}", EXIT_FAILED
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"error: {exc.strerror}{where}", EXIT_FAILED
    if isinstance(exc, ValueError) and type(exc) is ValueError:
        # What the backends raise for a setting that cannot work (an OpenSearch backend without a URL).
        return f"error: {_first_line(exc)}", EXIT_USAGE
    return None


def settings_line(exc: Any) -> str:
    """One line per bad MEDIASEARCH_* variable (pydantic's ValidationError of `Settings`)."""
    parts = []
    for e in exc.errors():
        name = "MEDIASEARCH_" + "_".join(str(p) for p in e["loc"]).upper()
        parts.append(f"{name}={e.get('input')!r}: {e['msg']}")
    return "error: invalid setting " + "; ".join(parts)


# -- a model that cannot be loaded (issue 11, item 3) --------------------------------------------------


def is_model_error(exc: BaseException) -> bool:
    return (
        _is_instance(exc, "mediasearch.core.errors", "ModelLoadError")
        or _is_instance(exc, "mediasearch.encoders.onnx_clip", "OnnxModelError")
        or _is_instance(exc, "mediasearch.encoders.onnx_cache", "OnnxCacheError")
    )


def model_paragraph(exc: BaseException) -> str:
    """Which model could not be had, why in a few words, and the two ways on; not the chained traces."""
    message = _first_line(exc)
    if _is_instance(exc, "mediasearch.core.errors", "VideoEncoderLoadError"):
        return f"error: {message.rstrip('.')}, or unset MEDIASEARCH_VIDEO_ENCODER."
    quoted = re.search(r"'([^']+)'", message)
    name = quoted.group(1) if quoted else ""
    if name and not Path(name).expanduser().exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub could not be reached"
        return (
            f"error: cannot load the model {name!r}: it is not in the local cache and {why}.\n"
            "Either run `make demo-offline` (the same demo with a toy CLIP trained here on synthetic\n"
            "shapes), or set MEDIASEARCH_CLIP_MODEL=<a local directory with a CLIP checkpoint>."
        )
    return f"error: {message.rstrip('.')}.\nSet MEDIASEARCH_CLIP_MODEL to a hub id you can download or a local checkpoint directory."


# -- checks before the work --------------------------------------------------------------------------


def _local_path(location: str) -> Path | None:
    """The local path a source names, or None for an object store (checked when it is listed)."""
    if location.startswith("file://"):
        from mediasearch.core.storage import StoreError, open_store

        try:
            return Path(open_store(location).display_root)
        except StoreError as exc:  # file://other-host/...: not a path on this machine
            raise CliError(str(exc)) from None
    if "://" in location:
        return None
    return Path(location).expanduser()


def checked_source(source: str, *, file_ok: bool) -> tuple[str, str]:
    """(the folder to open as the store, a key prefix selecting what to ingest in it).

    A folder is itself with no prefix; a single file (where `file_ok`) is its folder with its name as
    the prefix, so it is ingested as itself. A path that does not exist is a one-line error.
    """
    if not source.strip():
        raise CliError("give a folder (or s3://bucket/prefix) to work on")
    path = _local_path(source)
    if path is None:
        return source, ""
    if path.is_dir():
        return source, ""
    if path.is_file():
        if not file_ok:
            raise CliError(f"{source} is a file: give the folder that holds it")
        suffix = path.suffix.lower()
        if suffix not in (IMAGE_SUFFIXES + " " + VIDEO_SUFFIXES).split():
            raise CliError(f"{source} is not an image or a video ({MEDIA_SUFFIXES})")
        return str(path.resolve().parent), path.name
    # A name with a media suffix was meant as a file; anything else as a folder.
    what = "file" if path.suffix.lower() in MEDIA_SUFFIXES.split() else "folder"
    raise CliError(f"no such {what}: {source}")


def require_index(settings: Settings) -> None:
    """Stop (one line) when there is no index to read; a read must never create one.

    LanceDB's `connect` creates its folder, so a missing folder is refused here, before any backend is
    built. Elsewhere (OpenSearch, an object store) the backend's own "not ready" error says it.
    """
    from mediasearch.core.settings import IndexBackend

    if settings.index_backend is not IndexBackend.LANCEDB:
        return
    path = _local_path(settings.lancedb_uri)
    if path is not None and not path.is_dir():
        raise CliError(
            f"there is no index at {path}: build one with `mediasearch ingest FOLDER`, or point "
            "MEDIASEARCH_LANCEDB_URI at an existing one",
            EXIT_FAILED,
        )


def folder(source: str) -> str:
    """A folder the stage commands work on (they take the source folder, never one of its files)."""
    return checked_source(source, file_ok=False)[0]


def source_uri(source: str) -> str:
    """The URI a source is recorded under in the collection: its folder's, or a single file's."""
    from mediasearch.core.storage import open_store

    folder, name = checked_source(source, file_ok=True)
    store = open_store(folder)
    return store.uri(name) if name else store.root_uri


def source_store(location: str, work_prefix: str) -> tuple[Any, bool]:
    """(the store to ingest `location` from, whether it is a single file).

    A single file is its folder seen as holding that file only (and the work area beside it), so it is
    ingested as itself and nothing else of the folder is listed, added or removed.
    """
    from mediasearch.core.storage import LocalStore, ObjectInfo, open_store

    folder, name = checked_source(location, file_ok=True)
    if not name:
        return open_store(folder), False
    work = work_prefix.strip("/") + "/"

    class OneFileStore(LocalStore):
        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            info = self.stat(name)
            if info is not None and name.startswith(prefix):
                yield info
            # The work area is listed as it is; nothing else of the folder is walked.
            inside = super().list(prefix if prefix.startswith(work) else work)
            yield from (o for o in inside if o.key.startswith(prefix))

    return OneFileStore(folder), True


def query_model(settings: Settings) -> str:
    """The model queries are encoded with: MEDIASEARCH_CLIP_MODEL where it is set, else the model the
    serving generation was built with (what `mediasearch.backends.search_service` follows)."""
    from mediasearch.core.settings import EncoderBackend

    if settings.encoder_backend is EncoderBackend.SAGEMAKER:
        return f"of the SageMaker endpoint {settings.sagemaker_endpoint}"
    if "clip_model" in settings.model_fields_set:
        return settings.clip_model
    from mediasearch import backends

    try:
        state = backends.collection(settings).catalog.read()
    except Exception:  # only naming the model is at stake here; the load itself reports what is wrong
        return settings.clip_model
    serving = next((g for g in state.generations if g.name == state.serving), None)
    return (serving.model_source if serving is not None else None) or settings.clip_model
