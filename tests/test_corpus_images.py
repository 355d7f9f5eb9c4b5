from __future__ import annotations

import colorsys
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediasearch.core.records import stable_id
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import COLOURS, ImageLabel, generate_images, load_labels

PREFIX = "demo/images"
_HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in COLOURS.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, list[ImageLabel]]:
    store = LocalStore(tmp_path_factory.mktemp("corpus"))
    return store, generate_images(store, PREFIX, seed=0)


def _pixels(store: LocalStore, key: str) -> np.ndarray:
    with Image.open(io.BytesIO(store.get(key))) as img:
        return np.asarray(img.convert("RGB"))


def _shape_mask(rgb: np.ndarray) -> np.ndarray:
    # Backgrounds are grey-scale, so every clearly saturated pixel belongs to the shape.
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).astype(int)
    return (hsv[..., 1] > 120) & (hsv[..., 2] > 80)


def _dominant_colour(rgb: np.ndarray) -> str | None:
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).astype(int)
    hues = hsv[..., 0][_shape_mask(rgb)] * 360 / 256
    if hues.size == 0:
        return None
    names = list(_HUES)
    centres = np.array([_HUES[n] for n in names])
    dist = np.abs(hues[:, None] - centres[None, :])
    dist = np.minimum(dist, 360 - dist)
    votes = Counter(names[i] for i in dist.argmin(axis=1))
    return votes.most_common(1)[0][0]


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of integer (x, y) points (Andrew's monotone chain + shoelace)."""
    pts = sorted(set(map(tuple, points.tolist())))

    def turn(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    hull = np.array(half(pts) + half(pts[::-1]), dtype=float)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _classify_shape(mask: np.ndarray) -> str:
    """Tell the shapes apart by two pose-free measures, using the known geometry of each.

    fill = area / area of the circle around the centroid that holds the shape (circle 1, hexagon .83,
    square .64, cross .64, triangle .41, star .39); solidity = area / convex hull area (star .5 and
    cross .7, the convex shapes about 1).
    """
    ys, xs = np.nonzero(mask)
    area = float(mask.sum())
    reach = np.sqrt((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2).max() + 0.5
    fill = area / (np.pi * reach**2)
    # The hull of each row's outermost pixel corners is the hull of the whole shape, and far cheaper.
    rows = np.flatnonzero(mask.any(axis=1))
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - mask[rows, ::-1].argmax(axis=1)
    corners = [np.stack([x, rows + dy], axis=1) for x in (left, right) for dy in (0, 1)]
    solidity = area / _hull_area(np.concatenate(corners))
    if solidity < 0.85:
        return "star" if fill < 0.5 else "cross"
    if fill < 0.5:
        return "triangle"
    if fill < 0.72:
        return "square"
    return "hexagon" if fill < 0.9 else "circle"


def test_corpus_is_big_varied_and_labelled(corpus: tuple[LocalStore, list[ImageLabel]]) -> None:
    store, labels = corpus
    assert len(labels) >= 200
    assert len({label.key for label in labels}) == len(labels)
    assert len({label.id for label in labels}) == len(labels)
    assert labels[0].id == stable_id(labels[0].uri)
    formats = Counter(Path(label.key).suffix for label in labels)
    assert formats[".png"] > 0 and 0 < formats[".jpg"] < len(labels) / 4
    for label in labels:
        assert label.uri == store.uri(label.key)
        assert label.caption.startswith(f"a {label.size} {label.colour} {label.shape} on ")
    assert load_labels(store, PREFIX) == labels
    # Every (colour, shape) query has the same number of right answers.
    assert len(set(Counter((label.colour, label.shape) for label in labels).values())) == 1


def test_labels_match_pixels(corpus: tuple[LocalStore, list[ImageLabel]]) -> None:
    store, labels = corpus
    shape_area: dict[tuple[str, str, str, str], int] = {}
    for label in labels:
        rgb = _pixels(store, label.key)
        assert rgb.shape == (256, 256, 3)
        centre = rgb[64:192, 64:192]
        assert _dominant_colour(centre) == label.colour, label
        corners = np.concatenate([rgb[:6, :6], rgb[:6, -6:], rgb[-6:, :6], rgb[-6:, -6:]]).reshape(-1, 3)
        brightness = corners.mean()
        if label.background == "white":
            assert brightness > 245, label
        elif label.background == "black":
            assert brightness < 10, label
        elif label.background == "gray":
            assert 118 < brightness < 138, label
        mask = _shape_mask(rgb)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), label
        assert _classify_shape(mask) == label.shape, label
        area = int(mask.sum())
        assert 0.01 * rgb.shape[0] * rgb.shape[1] < area < 0.6 * rgb.shape[0] * rgb.shape[1], label
        shape_area[(label.shape, label.colour, label.background, label.size)] = area
    for (shape, colour, background, size), area in shape_area.items():
        if size == "small":
            assert shape_area[(shape, colour, background, "large")] > 3 * area


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    one, two = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "two")
    labels_one = generate_images(one, PREFIX, seed=3, limit=40)
    labels_two = generate_images(two, PREFIX, seed=3, limit=40)
    keys = [label.key for label in labels_one]
    assert keys == [label.key for label in labels_two]
    assert sorted(info.key for info in one.list(PREFIX)) == sorted(info.key for info in two.list(PREFIX))
    for key in keys:
        assert one.get(key) == two.get(key), key
    # The labels name each store's own URIs, and agree on everything else.
    assert [label.model_dump(exclude={"uri"}) for label in labels_one] == [
        label.model_dump(exclude={"uri"}) for label in labels_two
    ]
    assert load_labels(one, PREFIX) == labels_one

    other = LocalStore(tmp_path / "other")
    labels_other = generate_images(other, PREFIX, seed=4, limit=40)
    assert [label.key for label in labels_other] != keys  # another seed picks another sample
    shared = set(keys) & {label.key for label in labels_other}
    assert all(one.get(key) != other.get(key) for key in shared)  # the jitter follows the seed


def test_an_image_does_not_depend_on_the_rest_of_the_run(
    tmp_path: Path, corpus: tuple[LocalStore, list[ImageLabel]]
) -> None:
    full_store, _ = corpus
    small = LocalStore(tmp_path)
    for label in generate_images(small, PREFIX, seed=0, limit=25):
        assert small.get(label.key) == full_store.get(label.key)


def test_rerun_does_not_rewrite(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    generate_images(store, PREFIX, seed=1, limit=30)
    before = {info.key: info.fingerprint for info in store.list(PREFIX)}
    assert len(before) == 31  # 30 images + labels.jsonl

    generate_images(store, PREFIX, seed=1, limit=30)
    assert {info.key: info.fingerprint for info in store.list(PREFIX)} == before

    # A damaged file is put right, and only that one is touched.
    victim = next(key for key in before if key.endswith(".png"))
    good = store.get(victim)
    store.put(victim, good[:-10] + b"0123456789")
    damaged = {info.key: info.fingerprint for info in store.list(PREFIX)}
    generate_images(store, PREFIX, seed=1, limit=30)
    after = {info.key: info.fingerprint for info in store.list(PREFIX)}
    assert store.get(victim) == good
    assert after[victim] != damaged[victim]
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}


def test_limit_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_images(LocalStore(tmp_path), PREFIX, limit=-1)
