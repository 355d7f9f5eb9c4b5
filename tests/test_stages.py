"""The stage commands (`preprocess`, `transform`, `load`) act only on the work area and together build
the same index as `ingest` (issue 11, item 2): images included, the user's own `*.jsonl` files never
taken for manifests, and nothing written outside `_mediasearch/`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.settings import get_settings
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.videos import default_specs, write_corpus
from tests.conftest import COLOURS, image_bytes

QUERIES = ["a red square", "a blue circle on a white background", "a video of shapes"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file outside the work area, with a digest of its bytes and its modification time."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "_mediasearch" not in path.relative_to(folder).parts:
            out[path.relative_to(folder).as_posix()] = (
                f"{hashlib.sha1(path.read_bytes()).hexdigest()} {path.stat().st_mtime_ns}"
            )
    return out


def run(env: dict[str, str], *args: str) -> str:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args), env=env)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def ranked(env: dict[str, str]) -> list[list[tuple[str, float]]]:
    out = []
    for query in QUERIES:
        body = json.loads(run(env, "search", query, "--k", "100", "--json"))
        out.append([(r["id"], round(r["score"], 4)) for r in body["results"]])
    return out


@pytest.fixture
def source(tmp_path: Path) -> Path:
    store = LocalStore(tmp_path / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    short = [s for s in default_specs("videos") if s.key.endswith("short.mp4")]
    write_corpus(store, "videos", specs=short, duplicates=[])
    # The user's own JSON Lines, as the demo corpus has (labels.jsonl): data, not manifests.
    store.put("photos/labels.jsonl", b'{"id": "x", "uri": "photos/red.png", "kind": "image"}\n')
    return tmp_path / "media"


def test_stages_build_the_same_index_as_ingest_and_write_only_the_work_area(
    tmp_path: Path, source: Path, tiny_clip_dir: Path
) -> None:
    base = {"MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir), "MEDIASEARCH_DEVICE": "cpu"}
    staged = {**base, "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "staged")}
    ingested = {**base, "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "ingested")}
    before = snapshot(source)

    assert "6 images in 1 manifest(s)" in run(staged, "preprocess", str(source))
    transformed = run(staged, "transform", str(source))
    assert "0 failed" in transformed
    loaded = run(staged, "load", str(source))
    assert "0 error records" in loaded
    assert snapshot(source) == before  # nothing outside _mediasearch/ written or touched

    summary = run(ingested, "ingest", str(source))
    assert "failed 0" in summary
    assert snapshot(source) == before

    staged_ranking, ingested_ranking = ranked(staged), ranked(ingested)
    assert staged_ranking == ingested_ranking
    # Images are indexed by the stages too (they used to be left out), and the video as well.
    everything = json.loads(run(staged, "search", "anything", "--k", "100", "--json"))["results"]
    assert sum(r["kind"] == "image" for r in everything) == len(COLOURS)
    assert sum(r["kind"] == "video" for r in everything) == 1


def test_a_second_run_of_the_stages_does_nothing_new(
    tmp_path: Path, source: Path, tiny_clip_dir: Path
) -> None:
    env = {
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_DEVICE": "cpu",
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "staged"),
    }
    for command in ("preprocess", "transform", "load"):
        run(env, command, str(source))
    again = run(env, "preprocess", str(source))
    assert "6 images in 1 manifest(s)" in again and "0 processed, 1 unchanged" in again
    assert "0 manifest(s) run" in run(env, "transform", str(source))
