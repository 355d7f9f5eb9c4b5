"""CLI start-up: commands that need no model load none, and `--help` imports neither the records (pydantic,
numpy), the backends nor the aws plumbing; `mediasearch export-onnx` prints the export and its agreement.

Timings are bench/bench_cli.py's; these tests check what is imported, which does not depend on the
machine's load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mediasearch.cli import LAZY_GROUPS, app
from mediasearch.core.model_identity import identify

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["numpy", "pydantic", "torch", "transformers", "lancedb", "onnxruntime", "boto3"]


def modules_after(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """Runs the CLI with `args` in a fresh interpreter: (exit code, output, heavy modules imported)."""
    code = textwrap.dedent(
        f"""
        import sys
        from mediasearch.cli import app
        try:
            app({args!r}, prog_name="mediasearch")
        except SystemExit as exc:
            code = exc.code or 0
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        ours = sorted(m for m in sys.modules if m in ("mediasearch.backends", "mediasearch.aws.cli"))
        print("MODULES", " ".join(heavy + ours), file=sys.stderr)
        sys.exit(code)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=300,
    )
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES"))
    return proc.returncode, proc.stdout + proc.stderr, line.split()[1:]


def test_help_imports_nothing_heavy() -> None:
    code, output, loaded = modules_after(["--help"])
    assert code == 0 and "export-onnx" in output and "aws" in output
    assert loaded == []


def test_aws_loads_when_it_runs_and_lists_its_help_line() -> None:
    from mediasearch.aws.cli import aws_app

    code, output, loaded = modules_after(["aws", "--help"])
    assert code == 0 and "package" in output and "transform" in output
    assert "mediasearch.aws.cli" in loaded
    assert "--install-completion" not in output  # a sub-app, not a second program
    # The line --help lists without importing the group is the group's own.
    assert LAZY_GROUPS["aws"][2] == aws_app.info.help


def test_similar_loads_no_model(tmp_path: Path, tiny_clip_dir: Path) -> None:
    """`similar` reads a video's stored vector: no model stack, no ONNX Runtime."""
    env = {
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_DEVICE": "cpu",
    }
    _, output, loaded = modules_after(["similar", "no-such-video"], env)
    assert "torch" not in loaded and "transformers" not in loaded and "onnxruntime" not in loaded, output


def test_export_onnx_prints_the_folder_and_its_agreement(tiny_clip_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["export-onnx", str(tiny_clip_dir), "--cache-dir", str(tmp_path / "onnx")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    folder = Path(summary["folder"])
    assert folder.parent == tmp_path / "onnx" and (folder / "meta.json").is_file()
    assert summary["model_identity"] == identify(str(tiny_clip_dir)).id and summary["cached"] is False
    assert summary["agreement"]["fp32_vs_torch"]["text_min_cosine"] >= 0.9999
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["cached"] is True
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["cached"] is False


@pytest.mark.parametrize("model", ["/no/such/checkpoint", "org/not-in-the-hub-cache"])
def test_export_onnx_of_nothing_it_can_find_is_one_line(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["export-onnx", model])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
