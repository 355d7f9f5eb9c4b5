"""A deterministic, labelled corpus of synthetic images: shapes x colours x backgrounds x sizes.

Every image shows one filled shape in one saturated colour on a neutral (achromatic) background, so the
colour label is unambiguous both to a person and to a pixel test, and text queries such as "a red circle"
have a known set of right answers. `generate_images` writes the images and `<prefix>/labels.jsonl`
into an `ObjectStore`; `mediasearch.eval.metrics` turns the labels into queries and scores a search.

Keys are neutral (`<prefix>/img-017.png`) rather than descriptive, so no stage can "find" a red circle by
reading its file name: retrieval has to come from the pixels. The number in a key is the image's place
in the full cartesian product, so it does not depend on `seed` or `limit`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageDraw
from pydantic import BaseModel

from mediasearch.core.records import stable_id
from mediasearch.core.storage import ObjectStore, content_digest

log = logging.getLogger(__name__)

SIZE_PX = 256
# Shapes are drawn at 4x and box-filtered down: 17 coverage levels give smooth edges, and reduce() is
# several times cheaper than a Lanczos resize.
_SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")

# Hues sit far apart (0, 30, 51, 128, 226, 281 degrees) so that no two colours blur into each other,
# for CLIP or for the pixel check in the tests.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 210, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}

# Backgrounds are all grey-scale: a coloured background would make "a red circle on ..." ambiguous.
BACKGROUNDS: dict[str, str] = {
    "white": "a white background",
    "black": "a black background",
    "gray": "a gray background",
    "gradient": "a gradient background",
    "noise": "a noisy textured background",
}

# Fraction of the image width taken by the shape's radius, and how far its centre may wander.
SIZES: dict[str, tuple[float, float]] = {"small": (0.17, 0.09), "large": (0.33, 0.05)}

# Each shape's radius is scaled so that the shapes look about equally big at the same size label.
_SHAPE_SCALE: dict[str, float] = {
    "circle": 1.0,
    "square": 1.15,
    "triangle": 1.2,
    "star": 1.2,
    "hexagon": 1.05,
    "cross": 1.1,
}

LABELS_NAME = "labels.jsonl"
_JPEG_EVERY = 10  # about one image in ten is a JPEG, so readers of both formats are exercised


class ImageLabel(BaseModel):
    """The ground truth for one generated image; one line of `<prefix>/labels.jsonl`."""

    key: str
    uri: str
    shape: str
    colour: str
    background: str
    size: str
    caption: str

    @property
    def id(self) -> str:
        """The id the image's index document has: `stable_id` of its URI."""
        return stable_id(self.uri)


@dataclass(frozen=True)
class _Spec:
    index: int
    shape: str
    colour: str
    background: str
    size: str

    @property
    def name(self) -> str:
        return f"{self.size}-{self.colour}-{self.shape}-{self.background}"

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} on {BACKGROUNDS[self.background]}"


def _all_specs() -> list[_Spec]:
    combos = itertools.product(SHAPES, COLOURS, BACKGROUNDS, SIZES)
    return [_Spec(i, *combo) for i, combo in enumerate(combos)]


def _digest_int(text: str) -> int:
    # Python's hash() is salted per process; a digest keeps keys and pixels stable across runs.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _is_jpeg(spec: _Spec) -> bool:
    return _digest_int(spec.name) % _JPEG_EVERY == 0


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _key(prefix: str, spec: _Spec) -> str:
    return _join(prefix, f"img-{spec.index:03d}.{'jpg' if _is_jpeg(spec) else 'png'}")


def _background(name: str, rng: np.random.Generator) -> Image.Image:
    n = SIZE_PX
    if name == "white":
        return Image.new("RGB", (n, n), (255, 255, 255))
    if name == "black":
        return Image.new("RGB", (n, n), (0, 0, 0))
    if name == "gray":
        return Image.new("RGB", (n, n), (128, 128, 128))
    if name == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1) - 0.5
        # The centred projection spans at most +-sqrt(0.5), so this maps the image corners to 0 and 1.
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / (2 * math.sqrt(0.5)) + 0.5
        grey = 30 + 200 * np.clip(t, 0, 1)
    elif name == "noise":
        # Coarse blobs plus fine grain reads as a texture rather than as TV static.
        coarse = rng.uniform(60, 200, size=(16, 16)).astype(np.float32)
        grey = np.asarray(Image.fromarray(coarse).resize((n, n), Image.Resampling.BICUBIC))
        grey = grey + rng.normal(0, 18, size=(n, n))
    else:
        raise ValueError(f"unknown background {name!r}")
    arr = np.clip(grey, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([arr] * 3, axis=-1))


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(radii: list[float], start: float) -> list[tuple[float, float]]:
        step = 2 * math.pi / len(radii)
        return [
            (cx + rr * math.cos(start + rot + i * step), cy + rr * math.sin(start + rot + i * step))
            for i, rr in enumerate(radii)
        ]

    up = -math.pi / 2  # image y grows downwards, so -90 degrees points up
    if shape == "square":
        return ring([r] * 4, math.pi / 4)
    if shape == "triangle":
        return ring([r] * 3, up)
    if shape == "hexagon":
        return ring([r] * 6, 0.0)
    if shape == "star":
        return ring([r, 0.42 * r] * 5, up)
    if shape == "cross":
        w = 0.34 * r
        pts = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r)]
        pts += [(-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(f"unknown shape {shape!r}")


def _render(spec: _Spec, seed: int) -> Image.Image:
    # Seeded by the image's own name, not its position in a run, so an image is the same whether it
    # was made alone, in a `limit`ed run or in the full corpus.
    rng = np.random.default_rng([seed, _digest_int(spec.name)])
    bg = _background(spec.background, rng)

    big = SIZE_PX * _SUPERSAMPLE
    radius_frac, wander = SIZES[spec.size]
    r = big * radius_frac * _SHAPE_SCALE[spec.shape] * rng.uniform(0.94, 1.06)
    cx, cy = big * (0.5 + rng.uniform(-wander, wander, size=2))
    rot = math.radians(rng.uniform(-12, 12))

    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if spec.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_polygon(spec.shape, cx, cy, r, rot), fill=255)
    mask = mask.reduce(_SUPERSAMPLE)

    fill = Image.new("RGB", (SIZE_PX, SIZE_PX), COLOURS[spec.colour])
    return Image.composite(fill, bg, mask)


def _encode(img: Image.Image, jpeg: bool) -> bytes:
    buf = io.BytesIO()
    if jpeg:
        # Full-resolution chroma keeps colour from bleeding over the (grey) background.
        img.save(buf, format="JPEG", quality=92, subsampling=0, optimize=False)
    else:
        # Level 3 is ~3x faster than the default 6 and, on these images, no bigger.
        img.save(buf, format="PNG", compress_level=3, optimize=False)
    return buf.getvalue()


def _put_if_changed(store: ObjectStore, key: str, data: bytes, content_type: str) -> bool:
    """Write `data` unless the object already holds exactly it; True when written.

    Rewriting identical bytes would still change a LocalStore fingerprint (size+mtime) and make an
    incremental ingest re-embed the whole corpus.
    """
    info = store.stat(key)
    # An S3 single-part ETag is the MD5 of the content, which saves a download when it matches.
    if (
        info is not None
        and info.size == len(data)
        and (info.fingerprint == content_digest(data) or store.get(key) == data)
    ):
        return False
    store.put(key, data, content_type=content_type)
    return True


def _select(seed: int, limit: int | None) -> list[_Spec]:
    specs = _all_specs()
    if limit is None or limit >= len(specs):
        return specs
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    chosen = random.Random(seed).sample(specs, limit)
    return sorted(chosen, key=lambda s: s.index)


def generate_images(
    store: ObjectStore, prefix: str = "demo/images", seed: int = 0, limit: int | None = None
) -> list[ImageLabel]:
    """Write the synthetic corpus under `prefix` and its labels to `<prefix>/labels.jsonl`.

    With `limit=None` this is the full product of shapes, colours, backgrounds and sizes (360 images);
    otherwise a `seed`ed sample of `limit` of them. The same seed gives byte-identical files, and files
    that already hold the right bytes are left alone. Images from an earlier, larger run under the same
    prefix are not deleted; the labels file lists only this run's images.
    """
    prefix = prefix.strip("/")
    labels: list[ImageLabel] = []
    written = 0
    for spec in _select(seed, limit):
        key = _key(prefix, spec)
        jpeg = _is_jpeg(spec)
        data = _encode(_render(spec, seed), jpeg)
        written += _put_if_changed(store, key, data, "image/jpeg" if jpeg else "image/png")
        labels.append(
            ImageLabel(
                key=key,
                uri=store.uri(key),
                shape=spec.shape,
                colour=spec.colour,
                background=spec.background,
                size=spec.size,
                caption=spec.caption,
            )
        )
    body = "".join(label.model_dump_json() + "\n" for label in labels).encode("utf-8")
    _put_if_changed(store, _join(prefix, LABELS_NAME), body, "application/x-ndjson")
    log.info("synthetic images: %d under %s/%s, %d written", len(labels), store.root_uri, prefix, written)
    return labels


def load_labels(store: ObjectStore, prefix: str = "demo/images") -> list[ImageLabel]:
    """Read `<prefix>/labels.jsonl` back, as written by `generate_images`."""
    text = store.get(_join(prefix.strip("/"), LABELS_NAME)).decode("utf-8")
    return [ImageLabel.model_validate_json(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------- near-duplicates

DUPLICATES_NAME = "duplicates.jsonl"
# The edits a copy goes through, as people make copies: saved again as a lower-quality JPEG, scaled
# down, or cropped (and saved as a JPEG).
NEAR_DUPLICATE_EDITS: tuple[str, ...] = ("reencode", "resize", "crop")


class NearDuplicate(BaseModel):
    """The ground truth for one near-duplicate copy: which image it copies and how it was made."""

    key: str
    uri: str
    source_key: str
    source_uri: str
    edit: str

    @property
    def id(self) -> str:
        return stable_id(self.uri)

    @property
    def source_id(self) -> str:
        return stable_id(self.source_uri)


def near_duplicate(data: bytes, edit: str) -> tuple[bytes, str]:
    """A copy of the image `data` made by `edit`, and its file extension."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    buf = io.BytesIO()
    if edit == "reencode":
        image.save(buf, format="JPEG", quality=40)
        return buf.getvalue(), "jpg"
    if edit == "resize":
        image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS).save(
            buf, format="PNG", compress_level=3
        )
        return buf.getvalue(), "png"
    if edit == "crop":
        # 85% of each side, off-centre: the shape stays in the picture, the framing changes.
        w, h = image.width, image.height
        left, top = int(w * 0.05), int(h * 0.10)
        image.crop((left, top, left + int(w * 0.85), top + int(h * 0.85))).save(
            buf, format="JPEG", quality=85
        )
        return buf.getvalue(), "jpg"
    raise ValueError(f"unknown near-duplicate edit {edit!r}: one of {', '.join(NEAR_DUPLICATE_EDITS)}")


def generate_near_duplicates(
    store: ObjectStore,
    labels: list[ImageLabel],
    prefix: str = "demo/duplicates",
    every: int = 3,
) -> list[NearDuplicate]:
    """Copies of every `every`-th labelled image under `prefix`, each by one edit in turn
    (`NEAR_DUPLICATE_EDITS`), and their truth in `<prefix>/duplicates.jsonl`."""
    prefix = prefix.strip("/")
    out: list[NearDuplicate] = []
    for n, label in enumerate(labels[::every]):
        edit = NEAR_DUPLICATE_EDITS[n % len(NEAR_DUPLICATE_EDITS)]
        data, ext = near_duplicate(store.get(label.key), edit)
        stem = label.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        key = _join(prefix, f"{stem}-{edit}.{ext}")
        _put_if_changed(store, key, data, "image/jpeg" if ext == "jpg" else "image/png")
        out.append(
            NearDuplicate(key=key, uri=store.uri(key), source_key=label.key, source_uri=label.uri, edit=edit)
        )
    body = "".join(d.model_dump_json() + "\n" for d in out).encode("utf-8")
    _put_if_changed(store, _join(prefix, DUPLICATES_NAME), body, "application/x-ndjson")
    return out


def load_near_duplicates(store: ObjectStore, prefix: str = "demo/duplicates") -> list[NearDuplicate]:
    text = store.get(_join(prefix.strip("/"), DUPLICATES_NAME)).decode("utf-8")
    return [NearDuplicate.model_validate_json(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ EXIF photos

# Photos with what cameras write: time (with and without an offset), make and model, GPS in all four
# hemispheres; and one with a broken date, which must cost only that field.
EXIF_PHOTOS: dict[str, dict[str, Any]] = {
    "paris.jpg": dict(taken_at=datetime(2024, 5, 1, 14, 0), offset="+02:00", make="Canon", model="Canon EOS 5D", lat=48.8566, lon=2.3522),
    "sydney.jpg": dict(taken_at=datetime(2023, 1, 15, 19, 0), offset="+11:00", make="Apple", model="iPhone 13", lat=-33.8688, lon=151.2093),
    "new-york.jpg": dict(taken_at=datetime(2022, 7, 4, 21, 30), make="Apple", model="iPhone 13", lat=40.7128, lon=-74.006),
    "lima.png": dict(taken_at=datetime(2021, 3, 2, 9, 15), make="FUJIFILM", model="X-T3", lat=-12.0464, lon=-77.0428),
    "no-gps.jpg": dict(taken_at=datetime(2024, 12, 24, 18, 0), make="Canon", model="Canon EOS 5D"),
    "broken-date.jpg": dict(taken_at="not a date", make="FUJIFILM", model="X-T3", lat=35.6762, lon=139.6503),
}  # fmt: skip


def generate_exif_photos(store: ObjectStore, prefix: str = "demo/photos") -> dict[str, str]:
    """Write `EXIF_PHOTOS` under `prefix` (a coloured shape each, so they embed as pictures do);
    returns key -> URI."""
    from mediasearch.core.exif import DATE_TIME_ORIGINAL, exif_bytes

    prefix = prefix.strip("/")
    written: dict[str, str] = {}
    specs = _all_specs()
    for n, (name, fields) in enumerate(EXIF_PHOTOS.items()):
        fields = dict(fields)
        bad_date = fields.get("taken_at") if isinstance(fields.get("taken_at"), str) else None
        if bad_date is not None:
            fields["taken_at"] = None
        block = exif_bytes(**fields)
        if bad_date is not None:
            exif = Image.Exif()
            exif.load(block)
            exif.get_ifd(ExifTags.IFD.Exif)[DATE_TIME_ORIGINAL] = bad_date
            block = exif.tobytes()
        image = _render(specs[(n * 61) % len(specs)], seed=n)
        buf = io.BytesIO()
        jpeg = name.endswith(".jpg")
        image.save(buf, format="JPEG" if jpeg else "PNG", exif=block, **({"quality": 90} if jpeg else {}))
        key = _join(prefix, name)
        _put_if_changed(store, key, buf.getvalue(), "image/jpeg" if jpeg else "image/png")
        written[key] = store.uri(key)
    return written
