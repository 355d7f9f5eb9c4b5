"""The index schema is derived from the record: LanceDB's Arrow schema and OpenSearch's mapping.

The OpenSearch mapping is compared with the documented one in test_index_opensearch.py; every field's
round trip through both backends is in test_index_contract.py.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from enum import Enum, StrEnum
from typing import Annotated, Any

import lancedb
import pyarrow as pa
import pytest
from pydantic import BaseModel, create_model

from mediasearch.core.records import DocumentFields, IndexDocument, Indexed, Vector
from mediasearch.index.base import IndexError_, IndexSpec, VectorField
from mediasearch.index.lancedb import SEARCH_TEXT, LanceDBIndex, schema_for
from mediasearch.index.opensearch import _knn_vector, index_body
from mediasearch.index.schema import (
    FIELDS,
    SchemaError,
    ValueKind,
    _check_split,
    arrow_schema,
    document_fields,
    opensearch_properties,
)

SPEC = IndexSpec(clip_dim=8, caption_dim=4)


def test_lancedb_schema_is_the_one_tables_were_created_with() -> None:
    # Written out as it stood before the derivation: existing tables on disk must keep matching it.
    assert schema_for(SPEC) == pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("video_id", pa.string()),
            pa.field("scene", pa.int32()),
            pa.field("t_start", pa.float64()),
            pa.field("t_end", pa.float64()),
            pa.field("thumbnail", pa.string()),
            pa.field("caption", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("duration", pa.float64()),
            pa.field("scene_count", pa.int32()),
            pa.field("strip", pa.string()),
            pa.field("fingerprint", pa.string()),
            # Added for sync (renames keep their embedding): a table made before it is refused by
            # writers with a message, and `mediasearch reindex` builds one with it.
            pa.field("content_hash", pa.string()),
            pa.field("model", pa.string()),
            # A photo's EXIF (as content_hash: older tables are refused by writers with a message).
            pa.field("taken_at", pa.timestamp("us", tz="UTC")),
            pa.field("camera", pa.string()),
            pa.field("gps_lat", pa.float64()),
            pa.field("gps_lon", pa.float64()),
            pa.field(SEARCH_TEXT, pa.string()),
            pa.field("clip_vector", pa.list_(pa.float32(), 8), nullable=False),
            pa.field("caption_vector", pa.list_(pa.float32(), 4)),
            pa.field("learned_vector", pa.list_(pa.float32(), 4096)),
        ]
    )


def test_both_backends_store_exactly_the_record_fields() -> None:
    names = list(IndexDocument.model_fields)
    assert [f.name for f in FIELDS] == names
    assert [n for n in schema_for(SPEC).names if n != SEARCH_TEXT] == names
    assert list(index_body(SPEC)["mappings"]["properties"]) == names


def test_vectors_are_exactly_what_plain_reads_leave_out() -> None:
    vectors = [f.name for f in FIELDS if f.kind is ValueKind.VECTOR]
    assert vectors == [v.value for v in VectorField]
    assert set(IndexDocument.model_fields) - set(DocumentFields.model_fields) == set(vectors)


class Mood(StrEnum):
    CALM = "calm"
    BUSY = "busy"


# One new field of every kind the schema knows, added the way a developer would add it to the record.
Extended: type[BaseModel] = create_model(
    "Extended",
    __base__=IndexDocument,
    rating=(int | None, None),
    views=(Annotated[int, Indexed(wide=True)], 0),
    score=(float | None, None),
    nsfw=(bool, False),
    mood=(Mood | None, None),
    source=(str | None, None),
    summary=(Annotated[str | None, Indexed(analysed=True)], None),
    preview=(Annotated[str | None, Indexed(searchable=False)], None),
    labels=(list[str], []),
    frames=(list[int], []),
)

NEW_FIELDS: dict[str, tuple[pa.DataType, dict[str, Any]]] = {
    "rating": (pa.int32(), {"type": "integer"}),
    "views": (pa.int64(), {"type": "long"}),
    "score": (pa.float64(), {"type": "float"}),
    "nsfw": (pa.bool_(), {"type": "boolean"}),
    "mood": (pa.string(), {"type": "keyword"}),
    "source": (pa.string(), {"type": "keyword"}),
    "summary": (pa.string(), {"type": "text", "analyzer": "english"}),
    "preview": (pa.string(), {"type": "keyword", "index": False}),
    "labels": (pa.list_(pa.string()), {"type": "keyword"}),
    "frames": (pa.list_(pa.int32()), {"type": "integer"}),
}


def test_a_field_added_to_the_record_appears_in_both_schemas() -> None:
    arrow = arrow_schema(SPEC, record=Extended)
    properties = opensearch_properties(SPEC, _knn_vector, record=Extended)
    for name, (arrow_type, mapping) in NEW_FIELDS.items():
        assert arrow.field(name).type == arrow_type, name
        assert properties[name] == mapping, name
    # Every kind of value the schema knows was exercised by one of the new fields or the record.
    kinds = {f.kind for f in document_fields(Extended)}
    assert kinds == set(ValueKind)
    # Still the vectors last, where LanceDB tables keep them.
    assert arrow.names[-3:] == ["clip_vector", "caption_vector", "learned_vector"]


def test_only_fields_without_a_default_are_required_columns() -> None:
    arrow = arrow_schema(SPEC, record=Extended)
    not_null = {f.name for f in arrow if not f.nullable}
    assert not_null == {"id", "kind", "uri", "clip_vector"}


class Plain(Enum):
    A = 1


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (dict[str, int] | None, "has no index mapping"),
        (date | None, "type date has no index mapping"),
        (int | str, "is a union"),
        (list[list[str]], "has no index mapping"),
        (Plain | None, "must be a StrEnum"),
        (Annotated[str | None, Indexed(wide=True)], "wide=True\\) applies to int fields only"),
        (Annotated[int | None, Indexed(analysed=True)], "apply to string fields only"),
        (Annotated[str | None, Indexed(analysed=True, searchable=False)], "both analysed and not searchable"),
        (Vector | None, "not a VectorField"),
        (list[Vector], "list of vectors"),
    ],
)
def test_a_field_no_backend_can_store_fails_loudly_and_names_itself(annotation: Any, message: str) -> None:
    record = create_model("Broken", __base__=IndexDocument, extra_field=(annotation, None))
    with pytest.raises(SchemaError, match=message) as raised:
        document_fields(record)
    assert "'extra_field'" in str(raised.value)


def test_the_fields_only_record_must_mirror_the_full_one() -> None:
    _check_split(IndexDocument, DocumentFields)
    with_extra = create_model("WithExtra", __base__=IndexDocument, rating=(int | None, None))
    with pytest.raises(SchemaError, match=r"differing: \['rating'\]"):
        _check_split(with_extra, DocumentFields)  # `rating` would be written but never shown


def test_lancedb_refuses_a_collection_made_before_a_field_existed(tmp_path) -> None:
    # A table written by an older version, without `strip`: writing to it must not drop the field.
    old = schema_for(SPEC)
    old = old.remove(old.get_field_index("strip"))
    lancedb.connect(str(tmp_path)).create_table("media", schema=old)
    index = LanceDBIndex(str(tmp_path), "media")
    with pytest.raises(IndexError_, match="has no column for strip"):
        index.create(SPEC)
    doc = IndexDocument(id="a", kind="video", uri="u", strip="s3://b/strip.jpg", clip_vector=[1.0] * 8)
    with pytest.raises(IndexError_, match="has no column for strip"):
        index.upsert([doc])


def test_the_opensearch_backend_derives_its_mapping_without_pyarrow() -> None:
    # The query Lambda installs opensearch-py but neither pyarrow nor lancedb.
    code = (
        "import sys\n"
        "from mediasearch.index.base import IndexSpec\n"
        "from mediasearch.index.opensearch import index_body\n"
        "assert index_body(IndexSpec(clip_dim=4))['mappings']['properties']\n"
        "print(sorted(m for m in ('pyarrow', 'lancedb') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
