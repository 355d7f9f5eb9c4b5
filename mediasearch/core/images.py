"""Image decoding for both sides: the transform handler and query images go through `decode_image`.

Pillow only; no model code. The pixel limit is defined here once and is the settings' default.

The work a decode may cost is bounded, because a few bytes of PNG can describe a huge image: the pixel
count, the aspect ratio and the memory the decoded pixels take are checked from the header before
anything is decoded; JPEGs are decoded at a reduced scale (`Image.draft`); other images are reduced
in horizontal bands while they are converted; and at most `DECODE_SLOTS` decodes run at once in a
process, so concurrent requests queue instead of multiplying the peak.
"""

from __future__ import annotations

import io
import threading
import warnings

from PIL import Image, UnidentifiedImageError

# Images larger than this are refused before they are decoded (a decompression bomb guard).
MAX_IMAGE_PIXELS = 40_000_000
# Longest side over shortest side. The models scale the shortest side to 224 px, so a 1 x 4000 strip
# would become 224 x 896000; panoramas and long screenshots stay well under this.
MAX_ASPECT_RATIO = 20
# What the decoded pixels may take in memory, in Pillow's own buffers: the image as decoded plus the
# reduced RGB copy handed on. A JPEG is measured at the scale it is decoded at, so this only limits
# other formats: an RGB PNG up to 4096 x 4096 passes. Sized so that no accepted image costs a request
# more than 100 MB (bench/bench_decode_memory.py).
MAX_DECODE_BYTES = 72 * 1024 * 1024
# Images are reduced (by a whole factor) toward this shortest side while decoding: twice what the
# models look at (224 px), so their own resize still has pixels to average.
REDUCE_TO = 448
# Decodes running at once in this process; the rest wait. Each may use up to MAX_DECODE_BYTES.
DECODE_SLOTS = 4
# Rows converted at a time when reducing: bounds the temporary copy to about this many bytes.
_BAND_BYTES = 4 * 1024 * 1024

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# A GIF is either: one frame is an image, several a video (see `gif_frame_count`).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".gif"})

_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def _suffix(key: str) -> str:
    name = key.rsplit("/", 1)[-1].lower()
    return "" if name.startswith(".") or "." not in name else name[name.rindex(".") :]


def is_image_key(key: str) -> bool:
    return _suffix(key) in IMAGE_EXTENSIONS


def is_video_key(key: str) -> bool:
    return _suffix(key) in VIDEO_EXTENSIONS


def gif_frame_count(data: bytes) -> int:
    """Frames in a GIF: one makes it an image, more a video. An unreadable GIF counts as an image, so
    the image decoder reports why it is unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (empty, truncated, not an image, too large, too thin)."""


def source_size(image: Image.Image) -> tuple[int, int]:
    """The (width, height) of the image as stored, before `decode_image` reduced it."""
    size = image.info.get("source_size")
    return (int(size[0]), int(size[1])) if size else image.size


def _bytes_per_pixel(mode: str) -> int:
    # Pillow keeps 1-bit, greyscale and palette images at a byte a pixel, 16-bit ones at two, and
    # everything else (RGB included) at four.
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _reduction(width: int, height: int) -> int:
    return max(1, min(width, height) // REDUCE_TO)


def _check_shape(image: Image.Image, max_pixels: int) -> None:
    """Refuse sizes no caller needs, from the header alone."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image is {width}x{height} pixels: it has no pixels")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image is {width}x{height} pixels, more than the limit of {max_pixels}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(
            f"image is {width}x{height} pixels: its sides differ by more than {MAX_ASPECT_RATIO}:1"
        )


def _check_memory(image: Image.Image) -> int:
    """Refuse an image whose pixels, at the scale it will be decoded at, would take too much memory;
    return the factor to reduce it by."""
    width, height = image.size
    factor = _reduction(width, height)
    needed = width * height * _bytes_per_pixel(image.mode) + (width // factor) * (height // factor) * 4
    if needed > MAX_DECODE_BYTES:
        mib = 1024 * 1024
        raise ImageDecodeError(
            f"image is {width}x{height} pixels ({image.mode}), which would take {needed // mib} MiB to "
            f"decode, more than the limit of {MAX_DECODE_BYTES // mib} MiB: send a JPEG or a smaller image"
        )
    return factor


def _to_rgb(image: Image.Image, factor: int) -> Image.Image:
    """The image in RGB, reduced by `factor`, converting a band of rows at a time so that no full
    size copy is ever made besides the decoded image itself."""
    if factor == 1:
        return image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    out = Image.new("RGB", (width // factor, height // factor))
    rows = max(1, _BAND_BYTES // (width * 4) // factor) * factor
    for top in range(0, out.height * factor, rows):
        bottom = min(top + rows, out.height * factor)
        band = image.crop((0, top, out.width * factor, bottom)).convert("RGB")
        out.paste(band.reduce(factor), (0, top // factor))
    return out


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image to RGB, refusing empty, truncated, non-image and too costly input.

    Large images come back reduced by a whole factor (shortest side at least `REDUCE_TO`);
    `source_size` gives the size as stored.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with _decode_slots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                stored = image.size
                _check_shape(image, max_pixels)
                # A JPEG decodes straight to a smaller scale (1/2 to 1/8): far less memory and time.
                image.draft(None, (REDUCE_TO, REDUCE_TO))
                factor = _check_memory(image)
                image.load()  # decode now, so a truncated file fails here and not inside the model
                rgb = _to_rgb(image, factor)
        except ImageDecodeError:
            raise
        except UnidentifiedImageError:
            raise ImageDecodeError("not a recognised image format") from None
        except (
            OSError,
            SyntaxError,
            ValueError,
            MemoryError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as exc:
            raise ImageDecodeError(f"cannot decode image: {exc}") from None
    rgb.info["source_size"] = stored
    return rgb
