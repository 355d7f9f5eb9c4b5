"""Training pictures drawn with Pillow (no plotting library): a loss curve, and grouped bars for reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = (720, 440)
MARGIN = (70, 50, 30, 60)  # left, top, right, bottom
COLOURS = ("#2457d6", "#e07b00", "#2a9d4b", "#c0392b", "#7d3c98")
GRID, INK = "#e4e4e4", "#222222"
# The plotting area inside the margins.
PLOT_SIZE = (SIZE[0] - MARGIN[0] - MARGIN[2], SIZE[1] - MARGIN[1] - MARGIN[3])


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    image = Image.new("RGB", SIZE, "white")
    return image, ImageDraw.Draw(image), ImageFont.load_default(size=13)


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _nice_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        hi = lo + max(abs(lo), 1.0) * 0.1
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def draw_lines(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
) -> Path:
    """A PNG of one or more (x, y) series on shared axes, with a legend."""
    points = [p for s in series.values() for p in s]
    if not points:
        raise ValueError("nothing to plot")
    image, draw, font = _canvas()
    left, top = MARGIN[:2]
    width, height = PLOT_SIZE
    x_lo, x_hi = _nice_range([x for x, _ in points])
    y_lo, y_hi = _nice_range([y for _, y in points])

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + (x - x_lo) / (x_hi - x_lo) * width, top + (1 - (y - y_lo) / (y_hi - y_lo)) * height

    for tick in range(6):
        y = y_lo + (y_hi - y_lo) * tick / 5
        _, py = xy(x_lo, y)
        draw.line([(left, py), (left + width, py)], fill=GRID)
        draw.text((left - 8, py), _number(y, y_hi - y_lo), fill=INK, font=font, anchor="rm")
    xs = sorted({x for x, _ in points})
    if all(float(x).is_integer() for x in xs):  # epochs, steps: whole-number ticks only
        step = max(1, round((xs[-1] - xs[0]) / 6))
        x_ticks = [float(x) for x in range(int(xs[0]), int(xs[-1]) + 1, step)]
    else:
        x_ticks = [x_lo + (x_hi - x_lo) * tick / 5 for tick in range(6)]
    for x in x_ticks:
        px, _ = xy(x, y_lo)
        draw.text((px, top + height + 8), _number(x, x_hi - x_lo), fill=INK, font=font, anchor="mt")
    draw.rectangle([left, top, left + width, top + height], outline=INK)
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        pts = [xy(x, y) for x, y in values]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts if len(pts) <= 60 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((left + width - 10, top + 10 + 18 * n), name, fill=colour, font=font, anchor="ra")
    draw.text((SIZE[0] / 2, 14), title, fill=INK, font=font, anchor="mt")
    draw.text((left + width / 2, SIZE[1] - 18), xlabel, fill=INK, font=font, anchor="mb")
    draw.text((left, top - 6), ylabel, fill=INK, font=font, anchor="lb")
    return _save(image, path)


def _number(value: float, span: float) -> str:
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{value:.0f}"
    if span >= 10:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def draw_bars(
    groups: Mapping[str, Mapping[str, float]], path: str | Path, title: str, ylabel: str, y_max: float = 1.0
) -> Path:
    """A PNG of grouped bars: `groups` maps a group label (e.g. "R@1") to {series name: value}."""
    names = list(dict.fromkeys(n for g in groups.values() for n in g))
    if not names:
        raise ValueError("nothing to plot")
    image, draw, font = _canvas()
    left, top = MARGIN[:2]
    width, height = PLOT_SIZE
    for tick in range(6):
        value = y_max * tick / 5
        py = top + (1 - value / y_max) * height
        draw.line([(left, py), (left + width, py)], fill=GRID)
        draw.text((left - 8, py), f"{value:.2g}", fill=INK, font=font, anchor="rm")
    slot = width / len(groups)
    bar = slot * 0.8 / len(names)
    for g, (label, values) in enumerate(groups.items()):
        x0 = left + g * slot + slot * 0.1
        for n, name in enumerate(names):
            value = values.get(name, 0.0)
            py = top + (1 - min(value, y_max) / y_max) * height
            box = [x0 + n * bar, py, x0 + (n + 1) * bar - 4, top + height]
            draw.rectangle(box, fill=COLOURS[n % len(COLOURS)])
            draw.text(((box[0] + box[2]) / 2, py - 4), f"{value:.2f}", fill=INK, font=font, anchor="mb")
        draw.text((left + (g + 0.5) * slot, top + height + 8), label, fill=INK, font=font, anchor="mt")
    for n, name in enumerate(names):
        draw.text(
            (left + width - 10, top + 10 + 18 * n),
            name,
            fill=COLOURS[n % len(COLOURS)],
            font=font,
            anchor="ra",
        )
    draw.rectangle([left, top, left + width, top + height], outline=INK)
    draw.text((SIZE[0] / 2, 14), title, fill=INK, font=font, anchor="mt")
    draw.text((left, top - 6), ylabel, fill=INK, font=font, anchor="lb")
    return _save(image, path)
