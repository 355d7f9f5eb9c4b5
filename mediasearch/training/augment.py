"""The video augmentation: one random transformation, sampled once, applied to every frame of both segments.

Barlow Twins learns what two views share; for video the two views are two segments of the same
video, and the transformation must not be what tells them apart, so both get the *same* crop, flip,
colour jitter, greying and blur (and a frame tower cannot tell the segments apart by them either).
The parameters are drawn from a numpy Generator, so a seed fixes them, and are plain numbers relative
to the frame size, so one draw applies to frames of any size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from pydantic import BaseModel, ConfigDict

# SimCLR / Barlow Twins' image recipe (Zbontar et al. 2021, appendix): crop 8-100 % of the area at
# aspect 3/4-4/3, flip at 0.5, jitter (0.4, 0.4, 0.2, 0.1) at 0.8, grey at 0.2, blur sigma 0.1-2 at 0.5.
# The crop keeps at least 30 % here: a clip's frames are small scenes, and an 8 % crop of a synthetic
# frame is often flat colour.
CROP_SCALE = (0.3, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
P_FLIP, P_JITTER, P_GREY, P_BLUR = 0.5, 0.8, 0.2, 0.5
BLUR_SIGMA = (0.1, 2.0)


class AugmentParams(BaseModel):
    """One sampled transformation; crop box in fractions of the frame's width and height."""

    model_config = ConfigDict(frozen=True)

    crop: tuple[float, float, float, float]  # left, top, right, bottom in [0, 1]
    flip: bool
    brightness: float  # factors: 1 leaves the frame as it is
    contrast: float
    saturation: float
    hue: float  # shift in turns, in [-0.5, 0.5]
    jitter_order: tuple[int, ...]  # the four jitter operations are applied in a random order
    grey: bool
    blur_sigma: float  # 0: no blur; relative to a 224-pixel frame, scaled with the output size

    @classmethod
    def identity(cls) -> AugmentParams:
        return cls(
            crop=(0.0, 0.0, 1.0, 1.0),
            flip=False,
            brightness=1.0,
            contrast=1.0,
            saturation=1.0,
            hue=0.0,
            jitter_order=(0, 1, 2, 3),
            grey=False,
            blur_sigma=0.0,
        )


def sample_params(rng: np.random.Generator, aspect: float = 16 / 9) -> AugmentParams:
    """Draw one transformation; `aspect` (width / height of the frames) makes the crop's ratio true."""
    crop = (0.0, 0.0, 1.0, 1.0)
    for _ in range(10):  # torchvision's RandomResizedCrop: try, then fall back to the whole frame
        area = rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w = math.sqrt(area * ratio / aspect)  # fractions of the frame's width and height
        h = math.sqrt(area / ratio * aspect)
        if w <= 1 and h <= 1:
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            crop = (x, y, x + w, y + h)
            break
    flip = bool(rng.random() < P_FLIP)
    b, c, s, hue = 1.0, 1.0, 1.0, 0.0
    if rng.random() < P_JITTER:
        b = rng.uniform(1 - JITTER[0], 1 + JITTER[0])
        c = rng.uniform(1 - JITTER[1], 1 + JITTER[1])
        s = rng.uniform(1 - JITTER[2], 1 + JITTER[2])
        hue = rng.uniform(-JITTER[3], JITTER[3])
    order = tuple(int(i) for i in rng.permutation(4))
    grey = bool(rng.random() < P_GREY)
    sigma = float(rng.uniform(*BLUR_SIGMA)) if rng.random() < P_BLUR else 0.0
    return AugmentParams(
        crop=crop,
        flip=flip,
        brightness=float(b),
        contrast=float(c),
        saturation=float(s),
        hue=float(hue),
        jitter_order=order,
        grey=grey,
        blur_sigma=sigma,
    )


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
    if abs(shift) < 1e-6:
        return image
    h, s, v = image.convert("HSV").split()
    lut = [round((i + shift * 256) % 256) % 256 for i in range(256)]
    return Image.merge("HSV", (h.point(lut), s, v)).convert("RGB")


def apply(image: Image.Image, params: AugmentParams, size: int) -> Image.Image:
    """`image` transformed by `params`: crop, resize to size x size, flip, jitter, grey, blur."""
    image = image.convert("RGB")
    left, top, right, bottom = params.crop
    box = (
        round(left * image.width),
        round(top * image.height),
        max(round(left * image.width) + 1, round(right * image.width)),
        max(round(top * image.height) + 1, round(bottom * image.height)),
    )
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if params.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for op in params.jitter_order:
        if op == 0 and params.brightness != 1.0:
            out = ImageEnhance.Brightness(out).enhance(params.brightness)
        elif op == 1 and params.contrast != 1.0:
            out = ImageEnhance.Contrast(out).enhance(params.contrast)
        elif op == 2 and params.saturation != 1.0:
            out = ImageEnhance.Color(out).enhance(params.saturation)
        elif op == 3:
            out = _shift_hue(out, params.hue)
    if params.grey:
        out = out.convert("L").convert("RGB")
    if params.blur_sigma > 0:
        out = out.filter(ImageFilter.GaussianBlur(params.blur_sigma * size / 224))
    return out


def apply_all(images: list[Image.Image], params: AugmentParams, size: int) -> list[Image.Image]:
    """The same transformation on every frame (of both segments: call it once with all of them)."""
    return [apply(im, params, size) for im in images]
