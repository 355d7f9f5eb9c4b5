"""Retrieval metrics over a labelled corpus: recall@k, precision@k and mean reciprocal rank.

Queries come from the synthetic image labels (`mediasearch.corpus.images`): one text query per
(colour, shape) pair, whose relevant items are every image of that colour and shape, whatever its
background or size. Items are matched by index document id, and the id of an image's document is
`mediasearch.core.records.stable_id(uri)` where `uri` is the image's URI in the object store, so
`search_fn` must return those ids.

Rankings are scored as returned: the top k are the first k entries, duplicates included, so a search that
repeats a hit loses a slot to it; a relevant id that appears twice is still counted once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from pydantic import BaseModel, Field

from mediasearch.corpus.images import ImageLabel


class EvalQuery(BaseModel):
    text: str
    # Empty for queries that are not built from the synthetic labels (a pairs file's captions).
    colour: str = ""
    shape: str = ""
    relevant_ids: list[str] = Field(min_length=1)


class QueryRow(BaseModel):
    """How one query did."""

    text: str
    n_relevant: int
    recall: dict[int, float]
    precision: dict[int, float]
    reciprocal_rank: float
    first_relevant_rank: int | None = Field(description="1-based; None when no relevant item was returned")


class EvalReport(BaseModel):
    ks: list[int]
    n_queries: int
    recall: dict[int, float] = Field(description="mean recall@k over the queries")
    precision: dict[int, float] = Field(description="mean precision@k over the queries")
    mrr: float = Field(
        description="mean reciprocal rank of the first relevant item within the deepest k (0 when none)"
    )
    rows: list[QueryRow]

    @property
    def mrr_label(self) -> str:
        """MRR is cut off at the deepest k asked for: a first relevant item below it counts as 0."""
        return f"MRR@{self.ks[-1]}"

    def to_table(self, per_query: bool = True) -> str:
        """A fixed-width text table: one line per query (optional), then the means.

        Without the per-query lines, only the columns the means fill are shown.
        """
        metrics = [f"R@{k}" for k in self.ks] + [f"P@{k}" for k in self.ks]
        widths = [max(5, len(m)) for m in [self.mrr_label, *metrics]]

        def cells(values: list[str]) -> list[str]:
            return [f"{v:>{w}}" for v, w in zip(values, widths, strict=True)]

        means = [f"{self.mrr:.3f}"]
        means += [f"{self.recall[k]:.3f}" for k in self.ks] + [f"{self.precision[k]:.3f}" for k in self.ks]
        mean_label = f"mean of {self.n_queries} queries"
        if not per_query:
            text_w = len(mean_label)
            lines = ["  ".join([" " * text_w, *cells([self.mrr_label, *metrics])])]
            lines.append("  ".join([mean_label, *cells(means)]))
            return "\n".join(line.rstrip() for line in lines)

        text_w = max([len("query"), len(mean_label), *(len(r.text) for r in self.rows)])
        rr_label = f"RR@{self.ks[-1]}"
        head = [f"{'query':<{text_w}}", f"{'rel':>4}", f"{'first':>5}", *cells([rr_label, *metrics])]
        lines = ["  ".join(head)]
        for r in self.rows:
            first = "-" if r.first_relevant_rank is None else str(r.first_relevant_rank)
            values = [f"{r.reciprocal_rank:.3f}"]
            values += [f"{r.recall[k]:.3f}" for k in self.ks] + [f"{r.precision[k]:.3f}" for k in self.ks]
            lines.append(
                "  ".join([f"{r.text:<{text_w}}", f"{r.n_relevant:>4}", f"{first:>5}", *cells(values)])
            )
        lines.append("-" * len(lines[0]))
        mean_head = [f"{'':<{text_w}}", f"{'':>4}", f"{'':>5}", *cells([self.mrr_label, *metrics])]
        lines.append("  ".join(mean_head))
        lines.append("  ".join([f"{mean_label:<{text_w}}", f"{'':>4}", f"{'':>5}", *cells(means)]))
        return "\n".join(line.rstrip() for line in lines)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_at_k(ranked_ids: Sequence[str], relevant_ids: Collection[str], k: int) -> float:
    """The fraction of the relevant ids found among the first `k` ranked ids.

    A k beyond the end of the ranking just means the whole ranking. Recall of an empty relevant set is
    undefined, and raises rather than silently scoring 0 or 1.
    """
    _check_k(k)
    relevant = set(relevant_ids)
    if not relevant:
        raise ValueError("recall is undefined without relevant ids")
    return len(relevant.intersection(ranked_ids[:k])) / len(relevant)


def precision_at_k(ranked_ids: Sequence[str], relevant_ids: Collection[str], k: int) -> float:
    """The fraction of the first `k` slots that hold a distinct relevant id.

    The denominator is k even when fewer than k ids were returned: an empty slot is not a hit.
    """
    _check_k(k)
    return len(set(relevant_ids).intersection(ranked_ids[:k])) / k


def first_relevant_rank(ranked_ids: Sequence[str], relevant_ids: Collection[str]) -> int | None:
    """The 1-based rank of the first relevant id, or None when there is none."""
    relevant = set(relevant_ids)
    return next((i for i, doc_id in enumerate(ranked_ids, start=1) if doc_id in relevant), None)


def reciprocal_rank(ranked_ids: Sequence[str], relevant_ids: Collection[str]) -> float:
    """1 / the rank of the first relevant id; 0.0 when no relevant id was returned."""
    rank = first_relevant_rank(ranked_ids, relevant_ids)
    return 0.0 if rank is None else 1.0 / rank


def queries_from_labels(labels: Iterable[ImageLabel]) -> list[EvalQuery]:
    """One query per (colour, shape) pair present, e.g. "a photo of a red circle", in sorted order.

    Relevant ids are `label.id` (`stable_id(label.uri)`), the ids the images' index documents carry.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for label in labels:
        groups.setdefault((label.colour, label.shape), []).append(label.id)
    return [
        EvalQuery(text=f"a photo of a {colour} {shape}", colour=colour, shape=shape, relevant_ids=ids)
        for (colour, shape), ids in sorted(groups.items())
    ]


def evaluate(
    queries: list[EvalQuery],
    search_fn: Callable[[str, int], list[str]],
    ks: Sequence[int] = (1, 5, 10),
) -> EvalReport:
    """Run every query through `search_fn(text, k)` (returning ranked document ids) and score it.

    `search_fn` is asked once per query for max(ks) results; the reciprocal rank is taken over what it
    returned, so a relevant item below max(ks) counts as not found.
    """
    if not queries:
        raise ValueError("no queries to evaluate")
    k_values = sorted(set(ks))
    if not k_values:
        raise ValueError("give at least one k")
    for k in k_values:
        _check_k(k)
    depth = k_values[-1]

    rows: list[QueryRow] = []
    for query in queries:
        ranked = list(search_fn(query.text, depth))[:depth]
        rank = first_relevant_rank(ranked, query.relevant_ids)
        rows.append(
            QueryRow(
                text=query.text,
                n_relevant=len(set(query.relevant_ids)),
                recall={k: recall_at_k(ranked, query.relevant_ids, k) for k in k_values},
                precision={k: precision_at_k(ranked, query.relevant_ids, k) for k in k_values},
                reciprocal_rank=0.0 if rank is None else 1.0 / rank,
                first_relevant_rank=rank,
            )
        )
    n = len(rows)
    return EvalReport(
        ks=k_values,
        n_queries=n,
        recall={k: sum(r.recall[k] for r in rows) / n for k in k_values},
        precision={k: sum(r.precision[k] for r in rows) / n for k in k_values},
        mrr=sum(r.reciprocal_rank for r in rows) / n,
        rows=rows,
    )
