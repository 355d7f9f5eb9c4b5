"""The captioner through the real loading path, on a tiny random ViT-GPT2 saved like a hub checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediasearch.models.base import ModelLoadError
from mediasearch.models.captioner import CaptionModel
from mediasearch.models.random_init import build_random_captioner


@pytest.fixture(scope="module")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_captioner(tmp_path_factory.mktemp("models") / "tiny-captioner", size="tiny")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    # Different sizes and modes: preprocessing must bring them all to the model's input.
    shapes = [(40, 50, 3), (64, 48, 3), (33, 90, 3), (50, 50, 3)]
    ims = [Image.fromarray(rng.integers(0, 256, s, dtype=np.uint8)) for s in shapes]
    ims.append(ims[0].convert("L"))
    return ims


@pytest.fixture(scope="module")
def captioner(tiny_captioner_dir: Path) -> CaptionModel:
    return CaptionModel(str(tiny_captioner_dir), device="cpu", batch_size=3, max_length=8).load()


def test_loads_lazily_and_sets_generation_ids(tiny_captioner_dir: Path) -> None:
    model = CaptionModel(str(tiny_captioner_dir), device="cpu")
    assert not model.loaded
    model.load()
    assert model.loaded
    config = model.model.generation_config
    # ViT-GPT2 starts from and pads with EOS, as GPT2 has no pad token.
    assert config.decoder_start_token_id == config.pad_token_id == config.eos_token_id == 256


def test_missing_start_and_pad_ids_fall_back_to_eos(tiny_captioner_dir: Path, tmp_path: Path) -> None:
    # A checkpoint with only GPT2's own BOS/EOS (no decoder start, no pad) must still generate.
    stripped = tmp_path / "no-start-no-pad"
    shutil.copytree(tiny_captioner_dir, stripped)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((stripped / name).read_text())
        for key in ("decoder_start_token_id", "pad_token_id"):
            config.pop(key, None)
            config.get("decoder", {}).pop(key, None)
        (stripped / name).write_text(json.dumps(config))
    model = CaptionModel(str(stripped), device="cpu", max_length=4).load()
    config = model.model.generation_config
    assert config.decoder_start_token_id == config.pad_token_id == 256
    assert len(model.caption_pixels(np.zeros((2, 3, 32, 32), np.float32))) == 2


def test_preprocess_gives_chw_float32(captioner: CaptionModel, images: list[Image.Image]) -> None:
    for image in images:
        pixels = captioner.preprocess(image)
        assert pixels.shape == (3, 32, 32)
        assert pixels.dtype == np.float32


def test_batched_captions_equal_one_by_one(captioner: CaptionModel, images: list[Image.Image]) -> None:
    # batch_size 3 over 5 images: a full batch, then a partial one.
    captions = captioner.caption_images(images)
    assert len(captions) == len(images)
    assert all(isinstance(c, str) for c in captions)
    assert any(captions), "random weights should still emit some tokens"
    assert all(c == c.strip() for c in captions)
    assert captions == [captioner.caption_images([im])[0] for im in images]
    assert captioner.caption_images([]) == []
    assert captioner.caption_pixels(np.zeros((0, 3, 32, 32), np.float32)) == []


def test_max_length_bounds_the_generated_tokens(tiny_captioner_dir: Path, images: list[Image.Image]) -> None:
    short = CaptionModel(str(tiny_captioner_dir), device="cpu", max_length=3)
    pixels = np.stack([short.preprocess(im) for im in images])
    (ids,) = short.generate_ids(pixels)
    assert ids.shape[1] <= 1 + 3  # the decoder start token, then at most max_length tokens
    # Forced length, as the benchmark uses it: every caption gets exactly max_length tokens.
    fixed = CaptionModel(str(tiny_captioner_dir), device="cpu", max_length=6, min_new_tokens=6)
    (ids,) = fixed.generate_ids(pixels)
    assert ids.shape == (len(images), 1 + 6)
    assert (ids[:, 1:] != 256).all()


def test_invalid_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        CaptionModel("x", max_length=0)
    with pytest.raises(ValueError):
        CaptionModel("x", max_length=4, min_new_tokens=5)


def test_missing_model_dir_is_a_clear_load_error(tmp_path: Path) -> None:
    model = CaptionModel(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelLoadError, match="no-such-model"):
        model.load()
    assert not model.loaded
