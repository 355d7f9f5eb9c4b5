"""Settings in one place: the environment is read by the settings and the backend factory only, and every
default that a library type shares with a setting is written once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from mediasearch import backends
from mediasearch.aws import cli as aws_cli
from mediasearch.core.images import MAX_IMAGE_PIXELS
from mediasearch.core.layout import WORK_DIR
from mediasearch.core.records import HybridWeightsModel
from mediasearch.core.settings import Settings
from mediasearch.index.base import HybridWeights
from mediasearch.indexing.video import VideoOptions
from tests.test_infra import TEMPLATE, CfnLoader

ROOT = Path(__file__).resolve().parents[1]
# What ships and runs: the package, the batch jobs, the SageMaker handlers and the Lambda entry point.
SOURCES = ["mediasearch", "jobs", "model_handlers", "query_lambda"]
READERS = {"mediasearch/core/settings.py", "mediasearch/backends.py"}
# Readers of MEDIASEARCH_* variables outside the settings that are still to move into them; nothing may
# join this list.
NOT_YET_SETTINGS: set[tuple[str, str]] = set()


def _environment_reads(tree: ast.AST) -> list[str]:
    """The MEDIASEARCH_* names a module reads itself: os.environ[...] / .get(...), os.getenv(...), and
    Typer's envvar=... (anything but the settings reading them)."""
    found = []
    for node in ast.walk(tree):
        strings = []
        if isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
            strings.append(node.slice)
        elif isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called.endswith(("environ.get", "getenv", "environ.setdefault")) and node.args:
                strings.append(node.args[0])
            strings += [k.value for k in node.keywords if k.arg == "envvar"]
        found += [
            s.value
            for s in strings
            if isinstance(s, ast.Constant) and isinstance(s.value, str) and s.value.startswith("MEDIASEARCH_")
        ]
    return found


def _settings_built(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and ast.unparse(node.func) in ("Settings", "settings.Settings")
        for node in ast.walk(tree)
    )


def test_only_the_settings_and_the_backends_read_the_environment() -> None:
    readers: set[tuple[str, str]] = set()
    builders: set[str] = set()
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in READERS:
                continue
            tree = ast.parse(path.read_text(), name)
            readers |= {(name, variable) for variable in _environment_reads(tree)}
            if _settings_built(tree):
                builders.add(name)
    assert readers <= NOT_YET_SETTINGS, f"read outside the settings: {sorted(readers - NOT_YET_SETTINGS)}"
    # Settings() reads the environment; everything else takes a Settings or calls get_settings().
    assert builders == set(), f"Settings built (the environment read) in {sorted(builders)}"


def test_the_scan_finds_a_reader() -> None:
    """The check above can fail: it sees each way of reading a variable."""
    code = (
        "import os\n"
        "a = os.environ['MEDIASEARCH_A']\n"
        "b = os.environ.get('MEDIASEARCH_B')\n"
        "c = os.getenv('MEDIASEARCH_C')\n"
        "d = typer.Option(envvar='MEDIASEARCH_D')\n"
        "e = Settings(store='x')\n"
    )
    tree = ast.parse(code)
    assert _environment_reads(tree) == ["MEDIASEARCH_A", "MEDIASEARCH_B", "MEDIASEARCH_C", "MEDIASEARCH_D"]
    assert _settings_built(tree)


def test_video_defaults_are_the_settings_defaults() -> None:
    settings = Settings(_env_file=None)
    assert backends.video_options(settings) == VideoOptions()
    defaults = VideoOptions()
    assert (settings.scene_threshold, settings.frames_per_scene, settings.max_scene_s) == (
        defaults.threshold,
        defaults.frames_per_scene,
        defaults.max_scene_s,
    )


def test_hybrid_weights_default_alike_in_settings_requests_and_the_index() -> None:
    settings = Settings(_env_file=None)
    request = HybridWeightsModel()
    index = HybridWeights()
    assert (settings.hybrid_keyword_weight, settings.hybrid_clip_weight) == (request.keyword, request.clip)
    assert (request.keyword, request.clip) == (index.keyword, index.vector)


def test_pixel_limit_and_work_folder_defaults_are_the_libraries() -> None:
    settings = Settings(_env_file=None)
    assert settings.max_image_pixels == MAX_IMAGE_PIXELS
    assert settings.work_prefix == WORK_DIR
    assert backends.clip_handler(settings, captions=False).max_pixels == MAX_IMAGE_PIXELS


def test_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDIASEARCH_LANCEDB_URI", str(tmp_path / "lancedb"))
    monkeypatch.setenv("MEDIASEARCH_FRAMES_PER_SCENE", "1")
    monkeypatch.setenv("MEDIASEARCH_HYBRID_KEYWORD_WEIGHT", "0.5")
    monkeypatch.setenv("MEDIASEARCH_LOG_LEVEL", "DEBUG")
    settings = Settings(_env_file=None)
    assert backends.video_options(settings).frames_per_scene == 1
    # The service keeps the pair scaled to sum to 1 (HybridWeights), so the setting shows as the ratio.
    weights = backends.search_service(settings).hybrid_weights
    assert weights.keyword / weights.vector == pytest.approx(0.5 / settings.hybrid_clip_weight)
    assert settings.log_level == "DEBUG"


def test_the_query_endpoint_environment_is_the_templates() -> None:
    """`aws deploy --endpoint-only` and the stack make the same serverless query model."""
    template = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    environment = template["Resources"]["ClipModel"]["Properties"]["PrimaryContainer"]["Environment"]
    assert environment["MEDIASEARCH_BATCH_SIZE"] == str(aws_cli.QUERY_ENDPOINT_BATCH_SIZE)
    assert environment["MEDIASEARCH_DECODE_WORKERS"] == str(aws_cli.QUERY_ENDPOINT_DECODE_WORKERS)
