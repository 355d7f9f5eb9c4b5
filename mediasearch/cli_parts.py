"""The CLI's composed-query options (`search --plus / --minus / --part`) turned into request parts.

Imported at start-up for its default (see `mediasearch.cli`), so it imports nothing beyond the stdlib.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

# CLIP text vectors of unrelated phrases already share much of their direction (cosines around 0.7-0.8
# on ViT-B/32), so subtracting a phrase at full weight swings the query far from what was asked for;
# half weight pushes away while keeping the positive part in charge.
DEFAULT_MINUS_WEIGHT = -0.5

# --part's KIND -> the request field.
PART_KINDS = {"text": "text", "image": "image", "image_uri": "image_uri", "video": "video_id"}


def parse_part(spec: str) -> dict[str, object]:
    """`KIND:VALUE[:WEIGHT]` -> a part; the weight, when given, is after the last colon (so an image_uri
    such as s3://bucket/key keeps its own colons). Raises `ValueError` naming the option."""
    kind, sep, rest = spec.partition(":")
    if kind not in PART_KINDS or not sep:
        raise ValueError(
            f"--part {spec!r}: the kind must be one of {', '.join(PART_KINDS)} (KIND:VALUE[:WEIGHT])"
        )
    value, weight = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    given = _number(tail) if colon else None
    if given is not None:  # else there is no weight: the colon belongs to the value
        weight, value = given, head
    if not -1 <= weight <= 1 or weight == 0:
        raise ValueError(f"--part {spec!r}: the weight must be in [-1, 1] and not 0, not {weight:g}")
    if not value.strip():
        raise ValueError(f"--part {spec!r}: the value is empty")
    field = PART_KINDS[kind]
    if field == "image":
        path = Path(value)
        if not path.is_file():
            what = "no such file" if not path.exists() else "a folder, not an image"
            raise ValueError(f"--part {spec!r}: {what}: {value}")
        return {"image": base64.b64encode(path.read_bytes()).decode(), "weight": weight}
    return {field: value, "weight": weight}


def composed_parts(
    first: dict[str, object],
    plus: Sequence[str],
    minus: Sequence[str],
    minus_weight: float,
    parts: Sequence[str],
) -> list[dict[str, object]]:
    """The request's parts: the main query (weight 1), each --plus, each --minus, each --part, in that order."""
    if not -1 <= minus_weight < 0:
        raise ValueError(f"--minus-weight must be in [-1, 0), not {minus_weight:g}")
    out: list[dict[str, object]] = [{**first, "weight": 1.0}]
    out += [{"text": text, "weight": 1.0} for text in plus]
    out += [{"text": text, "weight": minus_weight} for text in minus]
    out += [parse_part(spec) for spec in parts]
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
