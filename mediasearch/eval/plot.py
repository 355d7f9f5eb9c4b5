"""The eval report as a picture: recall@k and precision@k curves against a random ranking.

Drawn with Pillow (already a dependency) so the plot needs no plotting library.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mediasearch.eval.metrics import EvalReport

SIZE = (720, 440)
MARGIN = (70, 40, 30, 60)  # left, top, right, bottom
RECALL, PRECISION, RANDOM, GRID, INK = "#2457d6", "#e07b00", "#9a9a9a", "#e4e4e4", "#222222"


def draw_recall_plot(
    report: EvalReport, path: str | Path, corpus_size: int | None = None, model: str | None = None
) -> Path:
    """Write a PNG of mean recall@k and precision@k for every k in the report.

    With `corpus_size`, a random ranking's expected recall@k (k / corpus size) is drawn too: the
    line any real model must clear. `model` names what was measured, under the title (a plot passed
    around without it is a plot of nothing in particular).
    """
    if len(report.ks) < 2:
        raise ValueError("a recall curve needs at least two values of k")
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom
    k_min, k_max = report.ks[0], report.ks[-1]

    def xy(k: float, value: float) -> tuple[float, float]:
        return left + (k - k_min) / (k_max - k_min) * width, top + (1.0 - value) * height

    for tick in range(11):
        y = top + tick / 10 * height
        draw.line([(left, y), (left + width, y)], fill=GRID)
        draw.text((left - 8, y), f"{1 - tick / 10:.1f}", fill=INK, font=font, anchor="rm")
    step = max(1, (k_max - k_min) // 10)
    for k in range(k_min, k_max + 1, step):
        x, _ = xy(k, 0)
        draw.line([(x, top + height), (x, top + height + 4)], fill=INK)
        draw.text((x, top + height + 8), str(k), fill=INK, font=font, anchor="mt")
    draw.rectangle([left, top, left + width, top + height], outline=INK)
    draw.text((left + width / 2, SIZE[1] - 18), "k (results looked at)", fill=INK, font=font, anchor="mm")
    _draw_y_label(image, "mean over the queries", font, (16, top + height / 2))

    if corpus_size:
        draw.line([xy(k, min(1.0, k / corpus_size)) for k in report.ks], fill=RANDOM, width=2)
    draw.line([xy(k, report.recall[k]) for k in report.ks], fill=RECALL, width=3)
    draw.line([xy(k, report.precision[k]) for k in report.ks], fill=PRECISION, width=3)

    title = f"{report.n_queries} text queries   {report.mrr_label} {report.mrr:.3f}"
    draw.text((left, 6), title, fill=INK, font=font)
    if model:
        draw.text((left, 22), _shorten(f"model: {model}", draw, font, width * 0.55), fill=INK, font=font)
    legend = [("recall@k", RECALL), ("precision@k", PRECISION)]
    if corpus_size:
        legend.append(("random ranking", RANDOM))
    x = left + width
    for label, colour in reversed(legend):
        w = draw.textlength(label, font=font)
        draw.text((x, 12), label, fill=colour, font=font, anchor="ra")
        x -= w + 24
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _draw_y_label(
    image: Image.Image,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    centre: tuple[float, float],
) -> None:
    """Text turned a quarter left, centred on `centre` (Pillow draws text horizontally only)."""
    probe = ImageDraw.Draw(image)
    w = int(probe.textlength(text, font=font)) + 4
    label = Image.new("RGB", (w, 18), "white")
    ImageDraw.Draw(label).text((w / 2, 9), text, fill=INK, font=font, anchor="mm")
    turned = label.rotate(90, expand=True)
    image.paste(turned, (int(centre[0] - turned.width / 2), int(centre[1] - turned.height / 2)))


def _shorten(
    text: str, draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float
) -> str:
    """`text`, cut from the left with an ellipsis so that it fits `width` (model paths can be long)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text
