from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mediasearch.models.base import ModelLoadError
from mediasearch.models.clip import ClipModel
from tests.conftest import COLOURS, image_bytes


def _img(colour: str) -> Image.Image:
    return Image.open(io.BytesIO(image_bytes(COLOURS[colour]))).convert("RGB")


def test_loads_lazily_from_a_local_directory(tiny_clip_dir) -> None:
    model = ClipModel(str(tiny_clip_dir), device="cpu")
    assert not model.loaded
    vecs = model.embed_texts(["a red circle"])
    assert model.loaded
    assert vecs.shape == (1, model.dim) and model.dim == 16


def test_image_and_text_embeddings_are_unit_float32(clip_model: ClipModel) -> None:
    imgs = clip_model.embed_images([_img("red"), _img("blue"), _img("green")])
    txts = clip_model.embed_texts(["one", "two words", ""])
    for vecs in (imgs, txts):
        assert vecs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(imgs[0], imgs[1])


def test_batching_does_not_change_embeddings(clip_model: ClipModel) -> None:
    images = [_img(c) for c in COLOURS]
    together = clip_model.embed_images(images)  # batch_size=8 -> one batch
    alone = np.concatenate([clip_model.embed_images([im]) for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    texts = [f"text number {i}" for i in range(11)]  # two batches with padding to different lengths
    np.testing.assert_allclose(
        clip_model.embed_texts(texts), np.concatenate([clip_model.embed_texts([t]) for t in texts]), atol=1e-5
    )


def test_long_text_is_truncated_not_an_error(clip_model: ClipModel) -> None:
    assert clip_model.embed_texts(["word " * 500]).shape == (1, 16)


def test_missing_model_gives_a_clear_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load CLIP model"):
        ClipModel(str(tmp_path / "no-such-model")).load()


def test_empty_batches(clip_model: ClipModel) -> None:
    assert clip_model.embed_images([]).shape == (0, 16)
    assert clip_model.embed_texts([]).shape == (0, 16)
