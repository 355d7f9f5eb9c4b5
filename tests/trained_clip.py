"""A small CLIP really trained (from scratch, seconds) on the synthetic shapes, for tests that need real rankings.

Import the fixture into a test module (`from tests.trained_clip import trained_clip`); it is session-
scoped, so the modules that use it share one training run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.training.clip import ClipTrainReport, train_clip
from mediasearch.training.config import ClipTrainConfig
from mediasearch.training.pairs import label_pair, write_pairs

# Two plain backgrounds keep the task learnable in a few dozen steps of a tiny model.
BACKGROUNDS = ("white", "black")
SEEDS = (1, 2, 3)

TINY_TRAIN = ClipTrainConfig(
    from_scratch=True,
    epochs=15,
    batch_size=32,
    lr=2e-3,
    image_size=32,
    patch_size=8,
    width=64,
    layers=2,
    heads=4,
    projection_dim=32,
    max_text_tokens=16,
    holdout_fraction=0.1,
)


def synthetic_pairs(root: Path, seeds: tuple[int, ...] = SEEDS) -> Path:
    """Pairs (image, caption) of the synthetic corpus on `BACKGROUNDS`, rendered with `seeds`."""
    store = LocalStore(root)
    pairs = [
        label_pair(label)
        for seed in seeds
        for label in generate_images(store, f"seed-{seed}", seed=seed)
        if label.background in BACKGROUNDS
    ]
    return write_pairs(root / "pairs.jsonl", pairs)


def train_tiny(root: Path, config: ClipTrainConfig = TINY_TRAIN) -> ClipTrainReport:
    return train_clip(config, synthetic_pairs(root / "data"), root / "model", progress=False)


@pytest.fixture(scope="session")
def trained_clip(tmp_path_factory: pytest.TempPathFactory) -> ClipTrainReport:
    """The report of a tiny CLIP trained on the shapes; the model is at `report.out_dir`."""
    return train_tiny(tmp_path_factory.mktemp("trained-clip"))
