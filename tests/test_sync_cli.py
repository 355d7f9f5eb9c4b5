"""`mediasearch ingest` says what the sync did in its summary line, and `--no-delete` keeps what is gone."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.storage import LocalStore
from tests.conftest import COLOURS, image_bytes


def summary(stdout: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("scanned ")]
    return line


def test_the_summary_counts_what_the_sync_did(tmp_path: Path, app_env: None) -> None:
    store = LocalStore(tmp_path / "media")
    for name in ("red", "green", "blue", "yellow"):
        store.put(f"{name}.png", image_bytes(COLOURS[name]))
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(store.root)])
    assert first.exit_code == 0, first.output
    assert summary(first.stdout) == (
        "scanned 4, unchanged 0, embedded 4, indexed 4 (0 videos), failed 0; "
        "added 4, updated 0, moved 0, touched 0, removed 0; index holds 4 documents"
    )

    store.delete("red.png")
    os.rename(store.root / "green.png", store.root / "lime.png")
    st = (store.root / "blue.png").stat()
    os.utime(store.root / "blue.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    store.put("yellow.png", image_bytes(COLOURS["white"]))  # the same name, other bytes
    second = runner.invoke(app, ["ingest", str(store.root)])
    assert second.exit_code == 0, second.output
    assert summary(second.stdout) == (
        "scanned 3, unchanged 0, embedded 1, indexed 1 (0 videos), failed 0; "
        "added 0, updated 1, moved 1, touched 1, removed 1; index holds 3 documents"
    )

    store.delete("yellow.png")
    store.put("black.png", image_bytes(COLOURS["black"]))
    kept = runner.invoke(app, ["ingest", "--no-delete", str(store.root)])
    assert kept.exit_code == 0, kept.output
    assert summary(kept.stdout) == (
        "scanned 3, unchanged 2, embedded 1, indexed 1 (0 videos), failed 0; "
        "added 1, updated 0, moved 0, touched 0, removed 0, kept 1 gone (append-only); index holds 4 documents"
    )
