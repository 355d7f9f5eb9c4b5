"""The CLI as a user runs it: --help everywhere, the demo corpus, ingest, search and eval."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.settings import get_settings

COMMANDS = ["demo-data", "ingest", "transform", "load", "serve", "search", "similar", "eval", "random-model"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_demo_corpus_ingest_search_eval(tmp_path, tiny_clip_dir) -> None:
    env = {
        "MEDIASEARCH_STORE": str(tmp_path / "data"),
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
    }

    def run(*args: str):
        get_settings.cache_clear()
        return CliRunner().invoke(app, list(args), env=env)

    made = run("demo-data", "--limit", "24")
    assert made.exit_code == 0 and "24 images with labels" in made.output
    assert "14 videos with scene labels" in made.output
    ingested = run("ingest", str(tmp_path / "data" / "demo"))
    assert ingested.exit_code == 0, ingested.output
    assert "scanned 38, unchanged 0" in ingested.output
    assert "(14 videos), failed 0" in ingested.output
    again = run("ingest", str(tmp_path / "data" / "demo"))
    assert "scanned 38, unchanged 38, embedded 0" in again.output

    videos = run("search", "a red circle", "--kind", "video", "--k", "3", "--json")
    assert videos.exit_code == 0, videos.output
    best = json.loads(videos.stdout)["results"][0]
    assert best["kind"] == "video" and best["scenes"] and best["explanation"].startswith("max over")
    similar = run("similar", best["id"], "--k", "2")
    assert similar.exit_code == 0 and similar.output.count(" video ") == 2

    found = run("search", "a red circle", "--kind", "image", "--k", "5", "--json")
    assert found.exit_code == 0, found.output
    body = json.loads(found.stdout)
    assert len(body["results"]) == 5 and all(r["kind"] == "image" for r in body["results"])

    report = run("eval", "--json", "--k", "5", "--k", "10", "--plot", str(tmp_path / "recall.png"))
    assert report.exit_code == 0, report.output
    assert (tmp_path / "recall.png").read_bytes().startswith(b"\x89PNG")
    metrics = json.loads(report.stdout)
    assert metrics["n_queries"] > 0 and set(metrics["recall"]) == {"5", "10"}
    assert 0.0 <= metrics["mrr"] <= 1.0

    blank = run("search", "   ")
    assert blank.exit_code == 2 and "text is blank" in blank.output
    get_settings.cache_clear()
