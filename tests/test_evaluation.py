from __future__ import annotations

import pytest

from mediasearch.corpus.images import ImageLabel
from mediasearch.eval.metrics import (
    EvalQuery,
    EvalReport,
    evaluate,
    first_relevant_rank,
    precision_at_k,
    queries_from_labels,
    recall_at_k,
    reciprocal_rank,
)


def test_recall_at_k() -> None:
    ranked = ["a", "x", "b", "y", "c"]
    relevant = {"a", "b", "c", "d"}
    assert recall_at_k(ranked, relevant, 1) == 0.25
    assert recall_at_k(ranked, relevant, 2) == 0.25
    assert recall_at_k(ranked, relevant, 3) == 0.5
    assert recall_at_k(ranked, relevant, 5) == 0.75


def test_recall_when_nothing_relevant_is_found() -> None:
    assert recall_at_k(["x", "y"], {"a"}, 2) == 0.0
    assert recall_at_k([], {"a"}, 10) == 0.0
    assert reciprocal_rank(["x", "y"], {"a"}) == 0.0
    assert reciprocal_rank([], {"a"}) == 0.0
    assert first_relevant_rank(["x"], {"a"}) is None


def test_k_larger_than_the_ranking() -> None:
    assert recall_at_k(["a", "b"], {"a", "b"}, 100) == 1.0
    # Slots the search did not fill are misses, not excused.
    assert precision_at_k(["a", "b"], {"a", "b"}, 4) == 0.5


def test_duplicates_count_once_and_take_a_slot() -> None:
    ranked = ["a", "a", "a", "b"]
    assert recall_at_k(ranked, {"a", "b"}, 3) == 0.5
    assert recall_at_k(ranked, {"a", "b"}, 4) == 1.0
    assert precision_at_k(ranked, {"a", "b"}, 3) == pytest.approx(1 / 3)
    # Duplicated relevant ids do not inflate the denominator.
    assert recall_at_k(["a"], ["a", "a", "b"], 1) == 0.5
    assert reciprocal_rank(["x", "x", "a"], {"a"}) == pytest.approx(1 / 3)


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(["a", "b"], {"a"}) == 1.0
    assert reciprocal_rank(["x", "b", "a"], {"a", "b"}) == 0.5
    assert first_relevant_rank(["x", "b", "a"], {"a", "b"}) == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        recall_at_k(["a"], {"a"}, 0)
    with pytest.raises(ValueError):
        recall_at_k(["a"], set(), 1)
    with pytest.raises(ValueError):
        evaluate([], lambda text, k: [])
    query = EvalQuery(text="q", colour="red", shape="circle", relevant_ids=["a"])
    with pytest.raises(ValueError):
        evaluate([query], lambda text, k: [], ks=(0, 5))


def _label(key: str, colour: str, shape: str, background: str = "white", size: str = "small") -> ImageLabel:
    return ImageLabel(
        key=key,
        uri=f"file:///store/{key}",
        shape=shape,
        colour=colour,
        background=background,
        size=size,
        caption=f"a {size} {colour} {shape} on a {background} background",
    )


LABELS = [
    _label("img/1.png", "red", "circle"),
    _label("img/2.png", "red", "circle", background="black"),
    _label("img/3.png", "blue", "square"),
    _label("img/4.png", "red", "square"),
]


def test_queries_from_labels() -> None:
    queries = queries_from_labels(LABELS)
    assert [q.text for q in queries] == [
        "a photo of a blue square",
        "a photo of a red circle",
        "a photo of a red square",
    ]
    red_circle = queries[1]
    assert (red_circle.colour, red_circle.shape) == ("red", "circle")
    assert red_circle.relevant_ids == [LABELS[0].id, LABELS[1].id]


def test_evaluate() -> None:
    ids = {label.key: label.id for label in LABELS}
    rankings = {
        "a photo of a red circle": [ids["img/1.png"], ids["img/4.png"], ids["img/2.png"]],  # RR 1
        "a photo of a blue square": [ids["img/4.png"], ids["img/3.png"]],  # RR 1/2
        "a photo of a red square": [ids["img/1.png"], ids["img/2.png"], ids["img/3.png"]],  # not found
    }
    asked: list[tuple[str, int]] = []

    def search(text: str, k: int) -> list[str]:
        asked.append((text, k))
        return rankings[text]

    report = evaluate(queries_from_labels(LABELS), search, ks=(3, 1))
    assert report.ks == [1, 3]
    assert {k for _, k in asked} == {3}
    assert report.n_queries == 3
    assert report.mrr == pytest.approx((1 + 0.5 + 0) / 3)
    assert report.recall[1] == pytest.approx((0.5 + 0 + 0) / 3)
    assert report.recall[3] == pytest.approx((1 + 1 + 0) / 3)
    assert report.precision[3] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    rows = {row.text: row for row in report.rows}
    assert rows["a photo of a red square"].first_relevant_rank is None
    assert rows["a photo of a blue square"].first_relevant_rank == 2

    # The report survives a JSON round trip (int keys come back as ints) and renders as a table.
    assert EvalReport.model_validate_json(report.model_dump_json()) == report
    table = report.to_table()
    assert "a photo of a red circle" in table and "R@3" in table and "mean of 3 queries" in table
    assert "a photo of a red circle" not in report.to_table(per_query=False)


def test_evaluate_truncates_an_overlong_ranking() -> None:
    query = EvalQuery(text="q", colour="red", shape="circle", relevant_ids=["a"])
    report = evaluate([query], lambda text, k: ["x", "y", "a"], ks=(2,))
    assert report.recall[2] == 0.0 and report.mrr == 0.0


def test_recall_plot_draws_the_curves_where_the_values_are(tmp_path) -> None:
    from PIL import Image

    from mediasearch.eval.metrics import EvalReport
    from mediasearch.eval.plot import MARGIN, RECALL, SIZE, draw_recall_plot

    ks = list(range(1, 11))
    report = EvalReport(
        ks=ks,
        n_queries=3,
        recall={k: k / 10 for k in ks},  # a straight line from 0.1 to 1.0
        precision={k: 0.5 for k in ks},
        mrr=0.5,
        rows=[],
    )
    path = draw_recall_plot(report, tmp_path / "plots" / "recall.png", corpus_size=100)
    image = Image.open(path).convert("RGB")
    assert image.size == SIZE
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom
    # recall@k = 0.55 at k = 5.5: on the recall line, halfway between the ticks.
    x, y = left + 0.5 * width, top + (1 - 0.55) * height
    colour = "#{:02x}{:02x}{:02x}".format(*image.getpixel((round(x), round(y))))
    assert colour == RECALL
    with pytest.raises(ValueError, match="at least two values of k"):
        draw_recall_plot(report.model_copy(update={"ks": [1]}), tmp_path / "x.png")
