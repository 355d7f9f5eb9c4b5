"""A model's identity comes from its weights (or hub revision), never from the path it was loaded from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mediasearch.core.model_identity import identify
from mediasearch.models.random_init import build_random_clip


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIASEARCH_CACHE_DIR", str(tmp_path / "cache"))


def test_the_same_weights_elsewhere_are_the_same_model(tiny_clip_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "opt" / "ml" / "model"
    shutil.copytree(tiny_clip_dir, copy)
    a, b = identify(str(tiny_clip_dir)), identify(str(copy))
    assert a.id == b.id and a.id.startswith("sha256:")
    assert a.source != b.source  # where it came from is kept, but only as information
    assert str(tmp_path) not in a.id


def test_other_weights_are_another_model(tiny_clip_dir: Path, tmp_path: Path) -> None:
    other = build_random_clip(tmp_path / "other", seed=1)
    assert identify(str(other)).id != identify(str(tiny_clip_dir)).id


def test_a_changed_file_changes_the_identity_despite_the_cache(tiny_clip_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(tiny_clip_dir, copy)
    before = identify(str(copy)).id
    assert identify(str(copy)).id == before  # cached by size and mtime
    config = copy / "config.json"
    config.write_text(config.read_text().replace("{", '{"edited": true, ', 1))
    assert identify(str(copy)).id != before


def test_a_hub_id_without_a_cached_snapshot_is_named_by_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    identity = identify("some-org/not-cached-anywhere")
    assert (
        identity.id == "hub:some-org/not-cached-anywhere"
        and identity.source == "some-org/not-cached-anywhere"
    )
