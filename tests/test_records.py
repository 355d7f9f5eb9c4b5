import numpy as np
import pytest
from pydantic import ValidationError

from mediasearch.core.records import IndexDocument, ManifestRecord, SearchRequest, TransformResult, stable_id


def test_vectors_are_float32_arrays_inside_and_lists_on_the_wire() -> None:
    doc = IndexDocument(id="a", kind="image", uri="s3://b/k.png", clip_vector=[1, 0, 0])
    assert doc.clip_vector.dtype == np.float32
    again = IndexDocument.model_validate_json(doc.model_dump_json())
    np.testing.assert_array_equal(again.clip_vector, doc.clip_vector)


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [float("nan"), 1.0], "abc"])
def test_bad_vectors_are_rejected(bad: object) -> None:
    with pytest.raises(ValidationError):
        IndexDocument(id="a", kind="image", uri="u", clip_vector=bad)


def test_transform_result_needs_an_outcome() -> None:
    with pytest.raises(ValidationError, match="embedding, a caption or an error"):
        TransformResult(id="a", uri="u")
    assert not TransformResult(id="a", uri="u", error="boom").ok


def test_manifest_line_round_trip_ignores_unknown_fields() -> None:
    rec = ManifestRecord.model_validate_json(
        '{"id": "x", "uri": "s3://b/k", "kind": "frame", "t": 1.5, "extra": 1}'
    )
    assert rec.kind == "frame" and rec.t == 1.5


@pytest.mark.parametrize(
    "payload",
    [{}, {"text": "a", "video_id": "v"}, {"image": "aGk=", "image_uri": "s3://b/k"}],
)
def test_search_request_needs_exactly_one_query(payload: dict) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SearchRequest(**payload)


def test_search_request_limits() -> None:
    with pytest.raises(ValidationError):
        SearchRequest(text="a", k=0)
    with pytest.raises(ValidationError):
        SearchRequest(text="a" * 1001)
    with pytest.raises(ValidationError):
        SearchRequest(text="a", kinds=[])


def test_stable_id_is_deterministic_and_distinct() -> None:
    assert stable_id("s3://b/a.png") == stable_id("s3://b/a.png")
    assert stable_id("s3://b/a.png") != stable_id("s3://b/b.png")
