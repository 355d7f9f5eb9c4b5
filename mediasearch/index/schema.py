"""The index document schema, derived once from the record for every backend.

`IndexDocument`'s fields (their annotations, plus an `Indexed` mark where the type alone does not say
how to keep a field) are the only description of what an index stores. LanceDB's Arrow schema and
OpenSearch's mapping are both built here from `document_fields()`, so a new field is stored by both
backends, or, when its type has no mapping here, importing this module fails and names the field. A
backend never drops a field silently.

Vector fields are named by `VectorField`; their dimensions come from `IndexSpec`, so a collection is
created for whatever model fills it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mediasearch.core.records import DocumentFields, IndexDocument, Indexed
from mediasearch.index.base import IndexSpec, VectorField

if TYPE_CHECKING:  # pyarrow is only installed where LanceDB is (not in the query Lambda)
    import pyarrow as pa


class SchemaError(TypeError):
    """A document field the index schema cannot map; the message names the field and what to do."""


class ValueKind(StrEnum):
    """What the backends store for one field (one value, or each item of a list)."""

    KEYWORD = "keyword"  # a string matched exactly: filters, terms, facets
    TEXT = "text"  # a string analysed into words for keyword relevance
    STORED = "stored"  # a string kept and returned, never searched
    INT = "int"  # 32-bit
    LONG = "long"  # 64-bit
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"  # an instant, stored in UTC
    VECTOR = "vector"  # a float32 embedding, searched by k-NN


@dataclass(frozen=True)
class FieldSchema:
    """One document field as the backends see it."""

    name: str
    kind: ValueKind
    repeated: bool = False  # a list of `kind` values
    required: bool = False  # no default: a document always has it, so storage may refuse nulls
    nullable: bool = True  # None is a valid value (otherwise a stored null reads back as the default)
    vector: VectorField | None = None  # set for VECTOR fields: which IndexSpec dimension applies


def _unwrap_optional(annotation: Any, name: str) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise SchemaError(f"document field {name!r} is a union ({annotation!r}): give it one type")
        return members[0], True
    return annotation, False


def _unwrap_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        return base, metadata
    return annotation, []


def _field_schema(name: str, info: FieldInfo) -> FieldSchema:
    annotation, nullable = _unwrap_optional(info.annotation, name)
    # Pydantic lifts a top-level Annotated's metadata into `info.metadata`, but not one nested in an
    # Optional (`Vector | None`); collect both.
    annotation, metadata = _unwrap_annotated(annotation)
    metadata = [*info.metadata, *metadata]
    repeated = get_origin(annotation) is list
    if repeated:
        (annotation,) = get_args(annotation)
        annotation, item_metadata = _unwrap_annotated(annotation)
        metadata += item_metadata
    marks = [m for m in metadata if isinstance(m, Indexed)]
    mark = marks[0] if marks else Indexed()
    kind = _value_kind(name, annotation, mark)
    vector = None
    if kind is ValueKind.VECTOR:
        if repeated:
            raise SchemaError(f"document field {name!r} is a list of vectors, which no backend indexes")
        try:
            vector = VectorField(name)
        except ValueError:
            raise SchemaError(
                f"document field {name!r} is a vector but not a VectorField: add it to VectorField and "
                "its dimension to IndexSpec, so collections know how wide it is"
            ) from None
    return FieldSchema(
        name=name,
        kind=kind,
        repeated=repeated,
        required=info.is_required(),
        nullable=nullable,
        vector=vector,
    )


def _value_kind(name: str, annotation: Any, mark: Indexed) -> ValueKind:
    def refuse(what: str) -> SchemaError:
        return SchemaError(f"document field {name!r}: {what}")

    if not isinstance(annotation, type):
        raise refuse(
            f"type {annotation!r} has no index mapping (use str, int, float, bool, datetime, a list of one of them, or Vector)"
        )
    if mark.wide and not (issubclass(annotation, int) and annotation is not bool):
        raise refuse("Indexed(wide=True) applies to int fields only")
    if (mark.analysed or not mark.searchable) and not issubclass(annotation, str):
        raise refuse("Indexed(analysed=...) and Indexed(searchable=...) apply to string fields only")
    if issubclass(annotation, np.ndarray):
        return ValueKind.VECTOR
    if issubclass(annotation, Enum):
        if not issubclass(annotation, StrEnum):
            raise refuse(f"enum {annotation.__name__} must be a StrEnum to be stored as its value")
        return ValueKind.KEYWORD
    if issubclass(annotation, str):
        if mark.analysed and not mark.searchable:
            raise refuse("a field cannot be both analysed and not searchable")
        if mark.analysed:
            return ValueKind.TEXT
        return ValueKind.KEYWORD if mark.searchable else ValueKind.STORED
    if issubclass(annotation, datetime):
        return ValueKind.DATE
    if issubclass(annotation, bool):  # before int: bool is an int subclass
        return ValueKind.BOOL
    if issubclass(annotation, int):
        return ValueKind.LONG if mark.wide else ValueKind.INT
    if issubclass(annotation, float):
        return ValueKind.FLOAT
    raise refuse(
        f"type {annotation.__name__} has no index mapping "
        "(use str, int, float, bool, a list of one of them, or Vector; or map it in mediasearch/index/schema.py)"
    )


def document_fields(record: type[BaseModel] = IndexDocument) -> tuple[FieldSchema, ...]:
    """Every field of `record`, in declaration order, as the backends store it; SchemaError if one
    has a type no backend can map."""
    return tuple(_field_schema(name, info) for name, info in record.model_fields.items())


def _check_split(full: type[BaseModel], fields_only: type[BaseModel]) -> None:
    # Plain reads and k-NN hits validate into the fields-only record: a scalar declared only on the
    # full record would be written but never shown, a vector on the fields-only one never left out.
    vectors = {f.name for f in document_fields(full) if f.kind is ValueKind.VECTOR}
    scalars = set(full.model_fields) - vectors
    if set(fields_only.model_fields) != scalars:
        raise SchemaError(
            f"{fields_only.__name__} must hold exactly the non-vector fields of {full.__name__}; "
            f"differing: {sorted(set(fields_only.model_fields) ^ scalars)}"
        )


# Derived at import, so a field no backend can store fails every entry point and test at once.
FIELDS: tuple[FieldSchema, ...] = document_fields(IndexDocument)
_check_split(IndexDocument, DocumentFields)
VECTOR_FIELDS: tuple[FieldSchema, ...] = tuple(f for f in FIELDS if f.kind is ValueKind.VECTOR)
SCALAR_FIELDS: tuple[FieldSchema, ...] = tuple(f for f in FIELDS if f.kind is not ValueKind.VECTOR)


# ---------------------------------------------------------------------------------------- LanceDB


def _arrow_value_type(kind: ValueKind) -> pa.DataType:
    import pyarrow as pa

    match kind:
        case ValueKind.KEYWORD | ValueKind.TEXT | ValueKind.STORED:
            return pa.string()
        case ValueKind.INT:
            return pa.int32()
        case ValueKind.LONG:
            return pa.int64()
        case ValueKind.FLOAT:
            return pa.float64()
        case ValueKind.BOOL:
            return pa.bool_()
        case ValueKind.DATE:
            return pa.timestamp("us", tz="UTC")
    raise SchemaError(f"no Arrow type for {kind!r}")


def arrow_field(field: FieldSchema, spec: IndexSpec) -> pa.Field:
    import pyarrow as pa

    if field.vector is not None:
        value_type: pa.DataType = pa.list_(pa.float32(), spec.dim(field.vector))
    else:
        value_type = _arrow_value_type(field.kind)
        if field.repeated:
            value_type = pa.list_(value_type)
    return pa.field(field.name, value_type, nullable=not field.required)


def arrow_schema(
    spec: IndexSpec, extra: Sequence[pa.Field] = (), record: type[BaseModel] = IndexDocument
) -> pa.Schema:
    """The Arrow schema of a collection: `record`'s fields, with `extra` (columns a backend derives
    for itself) between the scalar fields and the vectors, the column order tables have always had."""
    import pyarrow as pa

    fields = document_fields(record)
    scalars = [arrow_field(f, spec) for f in fields if f.kind is not ValueKind.VECTOR]
    vectors = [arrow_field(f, spec) for f in fields if f.kind is ValueKind.VECTOR]
    return pa.schema([*scalars, *extra, *vectors])


# ------------------------------------------------------------------------------------- OpenSearch


def _opensearch_value_mapping(kind: ValueKind) -> dict[str, Any]:
    match kind:
        case ValueKind.KEYWORD:
            return {"type": "keyword"}
        case ValueKind.TEXT:
            # The english analyzer stems and drops stop words, as LanceDB's full-text index does.
            return {"type": "text", "analyzer": "english"}
        case ValueKind.STORED:
            # A keyword that is not indexed: kept in _source, costs no index structures.
            return {"type": "keyword", "index": False}
        case ValueKind.INT:
            return {"type": "integer"}
        case ValueKind.LONG:
            return {"type": "long"}
        case ValueKind.FLOAT:
            return {"type": "float"}
        case ValueKind.BOOL:
            return {"type": "boolean"}
        case ValueKind.DATE:
            # The default format (strict_date_optional_time||epoch_millis) reads the ISO 8601 times
            # documents are sent with.
            return {"type": "date"}
    raise SchemaError(f"no OpenSearch mapping for {kind!r}")


def opensearch_properties(
    spec: IndexSpec,
    knn_vector: Callable[[int], dict[str, Any]],
    record: type[BaseModel] = IndexDocument,
) -> dict[str, Any]:
    """The mapping's `properties`: one per field of `record`; `knn_vector(dimension)` maps a vector.

    Lists need nothing of their own: any OpenSearch field holds an array of its type.
    """
    properties: dict[str, Any] = {}
    for field in document_fields(record):
        if field.vector is not None:
            properties[field.name] = knn_vector(spec.dim(field.vector))
        else:
            properties[field.name] = _opensearch_value_mapping(field.kind)
    return properties
