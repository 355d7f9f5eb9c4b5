"""Decoding is bounded: shapes no caller needs are refused from the header, large images are reduced
while decoding, and concurrent decodes queue. The memory figures are bench/bench_decode_memory.py's."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from mediasearch.core import images
from mediasearch.core.images import (
    MAX_ASPECT_RATIO,
    REDUCE_TO,
    ImageDecodeError,
    decode_image,
    source_size,
)


def encoded(mode: str, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1, 40_000), (1, 4000), (40_000_000, 1), (30, 30 * MAX_ASPECT_RATIO + 1)])
def test_extreme_aspect_ratios_are_refused_before_decoding(size: tuple[int, int]) -> None:
    data = encoded("1", size)
    assert len(data) < 10_000  # the point: a few bytes that would decode to a huge strip
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=f"differ by more than {MAX_ASPECT_RATIO}:1"):
        decode_image(data)
    assert time.perf_counter() - started < 1.0


def test_the_widest_accepted_shape_decodes() -> None:
    image = decode_image(encoded("L", (30 * MAX_ASPECT_RATIO, 30)))
    assert image.size == (30 * MAX_ASPECT_RATIO, 30) and image.mode == "RGB"


def test_a_large_one_bit_png_is_reduced_while_decoding() -> None:
    data = encoded("1", (6000, 6000))
    image = decode_image(data)
    # Reduced by a whole factor, the shortest side kept at REDUCE_TO or more for the models' resize.
    assert REDUCE_TO <= image.width < 2 * REDUCE_TO and image.width == image.height
    assert image.mode == "RGB"
    assert source_size(image) == (6000, 6000)


def test_a_large_jpeg_is_decoded_at_a_smaller_scale() -> None:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(buf, "JPEG")
    image = decode_image(buf.getvalue())
    assert image.size == (1000, 750)  # 1/4 scale: the largest draft scale keeping 448 px
    assert source_size(image) == (4000, 3000)


def test_reduction_keeps_the_picture() -> None:
    # Left half red, right half blue, with the rows cut into bands: the bands must line up.
    source = Image.new("RGB", (3000, 2000), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 1500, 2000))
    buf = io.BytesIO()
    source.convert("P").save(buf, "PNG")
    image = decode_image(buf.getvalue())
    assert image.size == (3000 // 4, 2000 // 4)
    assert image.getpixel((10, 10)) == (255, 0, 0)
    assert image.getpixel((image.width - 10, image.height - 10)) == (0, 0, 255)
    assert image.getpixel((10, image.height - 1)) == (255, 0, 0)  # the last band was written


def test_small_images_are_untouched() -> None:
    image = decode_image(encoded("RGB", (64, 48)))
    assert image.size == source_size(image) == (64, 48)


def test_decoded_memory_is_bounded_for_formats_without_reduced_decoding() -> None:
    # An RGB PNG of 4500 x 4500 needs 77 MiB before anything can be reduced: refused, with why.
    with pytest.raises(ImageDecodeError, match=r"would take \d+ MiB to decode.*send a JPEG"):
        decode_image(encoded("RGB", (4500, 4500)))
    # The same pixels as a 1-bit image take a byte each: accepted.
    assert source_size(decode_image(encoded("1", (4500, 4500)))) == (4500, 4500)


def test_pixel_limit_still_applies() -> None:
    with pytest.raises(ImageDecodeError, match="more than the limit of 10000"):
        decode_image(encoded("1", (200, 200)), max_pixels=10_000)


def test_concurrent_decodes_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    slots = threading.BoundedSemaphore(2)
    monkeypatch.setattr(images, "_decode_slots", slots)
    running = 0
    most = 0
    lock = threading.Lock()
    real = images._to_rgb

    def slow_to_rgb(image: Image.Image, factor: int) -> Image.Image:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return real(image, factor)

    monkeypatch.setattr(images, "_to_rgb", slow_to_rgb)
    data = encoded("RGB", (32, 32))
    threads = [threading.Thread(target=decode_image, args=(data,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 2


def test_the_transform_records_the_stored_size(tmp_path, clip_model) -> None:  # type: ignore[no-untyped-def]
    from mediasearch.core.records import ManifestRecord, MediaKind
    from mediasearch.indexing.handler import ClipHandler

    path = tmp_path / "big.png"
    Image.new("1", (3000, 2000)).save(path)
    handler = ClipHandler(clip_model)
    (result,) = handler.embed(
        handler.prepare([ManifestRecord(id="x", uri=path.as_uri(), kind=MediaKind.IMAGE)])
    )
    assert result.error is None and (result.width, result.height) == (3000, 2000)
