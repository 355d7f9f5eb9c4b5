"""Image decoding for both sides: the transform handler and query images go through `decode_image`.

Pillow only; no model code. The pixel limit is defined here once and is the settings' default.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

# Images larger than this are refused before they are decoded (a decompression bomb guard).
MAX_IMAGE_PIXELS = 40_000_000

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# A GIF is either: one frame is an image, several a video (see `gif_frame_count`).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".gif"})


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
    """The bytes are not a decodable image (empty, truncated, not an image, too large)."""


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode and fully load an image, refusing empty, truncated, non-image and oversized input."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ImageDecodeError(
                    f"image is {image.width}x{image.height} pixels, more than the limit of {max_pixels}"
                )
            image.load()  # decode now, so a truncated file fails here and not inside the model
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from None
    return image.convert("RGB")
