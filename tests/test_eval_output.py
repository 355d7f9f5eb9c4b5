"""What `mediasearch eval` shows: a table whose columns are all filled, MRR with its cut-off, and a
plot with both axes labelled and the model it measured named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mediasearch.eval.metrics import EvalReport, QueryRow
from mediasearch.eval.plot import MARGIN, draw_recall_plot


def report(ks: list[int]) -> EvalReport:
    row = QueryRow(
        text="a photo of a red circle",
        n_relevant=3,
        recall={k: min(1.0, k / 10) for k in ks},
        precision={k: 0.5 for k in ks},
        reciprocal_rank=0.5,
        first_relevant_rank=2,
    )
    return EvalReport(
        ks=ks,
        n_queries=1,
        recall=row.recall,
        precision=row.precision,
        mrr=0.5,
        rows=[row],
    )


def test_the_means_alone_have_no_empty_columns() -> None:
    table = report([1, 5, 20]).to_table(per_query=False)
    head, means = table.splitlines()
    assert "rel" not in head and "first" not in head and "query" not in head
    assert head.split() == ["MRR@20", "R@1", "R@5", "R@20", "P@1", "P@5", "P@20"]
    assert means.split()[-7:] == ["0.500", "0.100", "0.500", "1.000", "0.500", "0.500", "0.500"]


def test_per_query_lines_label_the_cut_off_too() -> None:
    table = report([1, 10]).to_table(per_query=True)
    assert "RR@10" in table.splitlines()[0] and "MRR@10" in table
    assert "a photo of a red circle" in table


def _ink(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    pixels = np.asarray(image.convert("L").crop(box))
    return int((pixels < 200).sum())


def test_the_plot_labels_the_y_axis_and_names_the_model(tmp_path: Path) -> None:
    ks = list(range(1, 11))
    plain = Image.open(draw_recall_plot(report(ks), tmp_path / "a.png"))
    named = Image.open(draw_recall_plot(report(ks), tmp_path / "b.png", model="openai/clip-vit-base-patch32"))
    left, top, _, bottom = MARGIN
    # The y-axis label sits left of the tick labels, over the plot's height.
    assert _ink(plain, (0, top, 28, plain.height - bottom)) > 100
    # The model's line is under the title, and only where a model is given.
    model_line = (left, 24, left + 300, 36)
    assert _ink(plain, model_line) == 0 and _ink(named, model_line) > 100


def test_a_long_model_path_is_shortened_to_fit(tmp_path: Path) -> None:
    long = "/very/long/path/" + "x" * 300 + "/clip"
    image = Image.open(draw_recall_plot(report(list(range(1, 11))), tmp_path / "c.png", model=long))
    left, _, right, _ = MARGIN
    # The model's line stops short of the legend's side of the title area.
    line_ends = left + int((image.width - left - right) * 0.55)
    assert _ink(image, (left, 26, line_ends, 36)) > 100
    assert _ink(image, (line_ends + 2, 30, image.width, 38)) == 0  # below the legend's descenders
