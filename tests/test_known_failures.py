"""Known-bad inputs (issue 11, item 8): an item that failed is remembered in the work area and skipped,
not decoded again, until it changes or `--retry-failed`; failures tried again are counted apart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.layout import WorkLayout
from mediasearch.core.settings import get_settings
from tests.conftest import image_bytes


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(image_bytes((200, 30, 30)))
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "readme.png").write_text("not an image")
    (photos / "truncated.jpg").write_bytes(image_bytes((30, 200, 30), fmt="JPEG")[:200])
    return photos


@pytest.fixture
def ingest(tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import mediasearch.indexing.handler as handler

    decoded: list[int] = []
    real = handler.decode_image

    def counting(data: bytes, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "decode_image", counting)
    env = {
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "index"),
    }

    def run(*args: str) -> tuple[int, str, str, int]:
        decoded.clear()
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["ingest", *args], env=env)
        get_settings.cache_clear()
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.stdout, result.stderr, len(decoded)

    return run


def test_known_bad_items_are_skipped_until_they_change(folder: Path, ingest) -> None:  # type: ignore[no-untyped-def]
    code, out, err, decoded = ingest(str(folder))
    assert code == 1 and "embedded 4" in out and "failed 3" in out and decoded == 4
    for name in ("zero.jpg", "readme.png", "truncated.jpg"):
        line = next(ln for ln in err.splitlines() if name in ln)
        assert line.count(name) == 1, line  # the URI once per failure line
    record = json.loads((folder / WorkLayout.for_source().failures()).read_text())
    assert sorted(f["key"] for f in record["failures"]) == ["readme.png", "truncated.jpg", "zero.jpg"]

    # Nothing changed: nothing is decoded again, and the run says why the source is still not whole.
    code, out, err, decoded = ingest(str(folder))
    assert decoded == 0 and "embedded 0" in out and "failed 0" in out
    assert "3 known-bad item(s) skipped" in err and "--retry-failed" in err
    assert code == 1

    # One of them changes (still bad): it alone is tried, and counted as tried again.
    (folder / "readme.png").write_text("still not an image, but different")
    stamp = (folder / "readme.png").stat().st_mtime_ns + 10**9
    os.utime(folder / "readme.png", ns=(stamp, stamp))
    code, out, err, decoded = ingest(str(folder))
    assert decoded == 1 and "embedded 1" in out and "failed 1" in out
    assert "1 of these had failed before" in err and "2 known-bad item(s) skipped" in err

    # --retry-failed tries every one of them.
    code, out, err, decoded = ingest(str(folder), "--retry-failed")
    assert decoded == 3 and "failed 3" in out and "3 of these had failed before" in err
    assert "skipped" not in err

    # Fixed ones are indexed and forgotten.
    for name in ("readme.png", "zero.jpg"):
        (folder / name).write_bytes(image_bytes((10, 10, 240)))
    code, out, err, decoded = ingest(str(folder))
    assert "failed 0" in out and decoded == 2
    assert "1 known-bad item(s) skipped" in err and "truncated.jpg" in err
    record = json.loads((folder / WorkLayout.for_source().failures()).read_text())
    assert [f["key"] for f in record["failures"]] == ["truncated.jpg"]
