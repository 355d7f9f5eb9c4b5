"""A model's identity comes from its weights (or hub revision), never from the path it was loaded from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mediasearch.core.model_identity import identify
from mediasearch.models.random_init import build_random_clip


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The digest cache's fallback folder (the cache_dir setting is passed in by backends).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


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


def test_digests_are_remembered_in_the_cache_folder_given(tiny_clip_dir: Path, tmp_path: Path) -> None:
    identify(str(tiny_clip_dir), cache_dir=tmp_path / "given")
    assert (tmp_path / "given" / "model-digests.json").is_file()
    assert not (tmp_path / "cache").exists()  # the fallback folder was not touched


def test_hidden_files_and_the_packaged_export_are_not_the_model(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """What a checkpoint folder carries besides the model (its ONNX export in onnx/, dot folders) leaves
    its identity alone; a checkpoint under a hidden folder (~/.cache/...) is still hashed."""
    hidden = shutil.copytree(tiny_clip_dir, tmp_path / ".cache" / "m")
    base = identify(str(hidden)).id
    assert base == identify(str(tiny_clip_dir)).id
    for extra in ("onnx/text.fp32.onnx", "onnx/meta.json", ".git/config.json"):
        (hidden / extra).parent.mkdir(parents=True, exist_ok=True)
        (hidden / extra).write_text("{}")
    assert identify(str(hidden)).id == base
    (hidden / "extra.onnx").write_text("x")  # a graph beside the weights is part of the folder
    assert identify(str(hidden)).id != base


def test_an_export_needs_the_hub_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    from mediasearch.core.model_identity import ModelIdentityError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelIdentityError, match="HF_HUB_OFFLINE"):
        identify("some-org/not-cached-anywhere", require_revision=True)
    with pytest.raises(ModelIdentityError, match="neither a local directory nor a valid hub id"):
        identify("/no/such/folder", require_revision=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert identify("org/m", commit, require_revision=True).id == f"hub:org/m@{commit}"
