"""The data records that cross layers, defined once.

Every stage (manifests, transform output, index documents, the HTTP API) speaks these types; JSON
Lines on disk and in S3 are their `model_dump_json()` forms, so a line written by one stage is parsed
by the next with the same model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Defined in core.choices (importable without pydantic, for the CLI) and imported from here as before.
from mediasearch.core.choices import Aggregation, CutoffMode, ResultKind, SearchMode, VideoEncoder
from mediasearch.core.defaults import HYBRID_CLIP_WEIGHT, HYBRID_KEYWORD_WEIGHT


def _as_f32(value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"a vector must be a non-empty 1-D list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("a vector must hold finite numbers only")
    return arr


# Vectors travel as float32 numpy arrays inside the process (cheap to batch and to hand to Arrow)
# and as plain JSON lists on the wire.
Vector = Annotated[
    np.ndarray,
    PlainValidator(_as_f32),
    PlainSerializer(lambda v: v.tolist(), return_type=list[float]),
    WithJsonSchema({"type": "array", "items": {"type": "number"}}),
]


def _as_utc(value: datetime) -> datetime:
    # A time without a zone is taken as UTC (EXIF without an offset: the camera's wall clock), so
    # every stored and compared time is aware and the backends agree on the instant.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-01:00 is past the last instant Python can hold
        raise ValueError("the time is out of range") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

# The times a photo may carry (the EXIF reader records nothing outside them) and a time filter is
# clamped to: DataFusion compares timestamps as 64-bit nanoseconds (years 1677 to 2262), and a
# bound outside the range selects what the range's end would, so it is clamped rather than refused.
PHOTO_TIMES = (datetime(1700, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def _time_bound(value: datetime) -> datetime:
    try:
        utc = _as_utc(value)
    except ValueError:  # beyond what a datetime holds once moved to UTC: one end or the other
        return PHOTO_TIMES[1] if value.year > 5000 else PHOTO_TIMES[0]
    return min(max(utc, PHOTO_TIMES[0]), PHOTO_TIMES[1])


TimeBound = Annotated[datetime, AfterValidator(_time_bound)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


class MediaKind(StrEnum):
    """What a manifest line points at."""

    IMAGE = "image"
    FRAME = "frame"


class DocKind(StrEnum):
    """What an index document describes."""

    IMAGE = "image"
    SCENE = "scene"
    VIDEO = "video"


def stable_id(uri: str) -> str:
    """Deterministic id of an object, from its full URI (`ObjectStore.uri(key)`).

    The URI rather than a store-relative key, so the id does not depend on which folder or prefix a
    job was pointed at; re-running any job upserts the same ids rather than adding duplicates.
    """
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:20]


class ManifestRecord(BaseModel):
    """One line of a transform input manifest (JSON Lines, SplitType=Line)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    uri: str = Field(min_length=1, description="s3://bucket/key, file:///abs/path or a path inside the store")
    kind: MediaKind = MediaKind.IMAGE
    video_id: str | None = None
    scene: int | None = None
    t: float | None = Field(default=None, description="frame time in seconds (frames only)")
    fingerprint: str | None = Field(
        default=None, description="ETag or size+mtime of the source object; an unchanged one is skipped"
    )
    content_hash: str | None = Field(
        default=None, description="digest of the source object's bytes (`ObjectStore.content_hash`)"
    )


class TransformResult(ManifestRecord):
    """One line of a transform output (`<manifest>.out`): the input fields plus the embedding or an error."""

    clip: Vector | None = None
    model: str | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    # What the image's EXIF says (mediasearch.core.exif); None where it says nothing readable.
    taken_at: UtcDatetime | None = None
    camera: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None

    @model_validator(mode="after")
    def _has_outcome(self) -> TransformResult:
        if self.error is None and self.clip is None and self.caption is None:
            raise ValueError("a transform result carries an embedding, a caption or an error")
        return self

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Indexed:
    """How the index backends keep a document field where its type alone does not say.

    Put in a field's `Annotated[...]`; `mediasearch.index.schema` derives the LanceDB schema and the
    OpenSearch mapping from the fields. Unmarked, a string is an exact value (filterable keyword) and
    an int is 32-bit.
    """

    analysed: bool = False  # words to match (English analyser, BM25) rather than one exact value
    searchable: bool = True  # False: stored and returned, never filtered or matched on
    wide: bool = False  # a 64-bit integer


class DocumentFields(BaseModel):
    """A searchable document (an image, a scene of a video, or a whole video) without its vectors.

    What k-NN hits and the index's plain reads carry: everything needed to show a document.
    """

    id: str
    kind: DocKind
    uri: str
    video_id: str | None = None
    scene: int | None = None
    t_start: float | None = None
    t_end: float | None = None
    thumbnail: Annotated[str | None, Indexed(searchable=False)] = None
    # Analysed so hybrid search matches caption words.
    caption: Annotated[str | None, Indexed(analysed=True)] = None
    tags: list[str] = Field(default_factory=list)
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    scene_count: int | None = None
    strip: Annotated[str | None, Indexed(searchable=False)] = Field(
        default=None, description="URI of a video's scene strip image"
    )
    fingerprint: str | None = None
    # What the source object's bytes are (images and videos): a renamed or moved object is matched
    # by it and keeps its embedding (mediasearch.indexing.sync).
    content_hash: str | None = None
    model: str | None = None
    # A photo's EXIF (images only): when, with which camera (make and model), where (decimal degrees).
    taken_at: UtcDatetime | None = None
    camera: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


class IndexDocument(DocumentFields):
    """A document with its vectors: what is upserted, and what reads return when asked for vectors."""

    clip_vector: Vector
    caption_vector: Vector | None = None
    # Videos only, where MEDIASEARCH_VIDEO_ENCODER is set: the trained video encoder's feature
    # (`mediasearch train video-encoder`), what `similar --encoder learned` ranks by.
    learned_vector: Vector | None = None


class SearchFilters(BaseModel):
    """Filters a caller may put on a search; every one narrows the candidates before ranking."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=16, description="all of these tags"
    )
    video_id: str | None = Field(default=None, max_length=64, description="only scenes of this video")
    uri_prefix: str | None = Field(default=None, max_length=1024, description="only media under this URI")
    # Bounded by what the index stores (a 32-bit integer): a larger literal would fail in the backend.
    min_width: int | None = Field(default=None, ge=0, le=2**31 - 1)
    min_height: int | None = Field(default=None, ge=0, le=2**31 - 1)
    taken_after: TimeBound | None = Field(
        default=None, description="only photos taken at or after this time (EXIF; no zone means UTC)"
    )
    taken_before: TimeBound | None = Field(
        default=None, description="only photos taken before this time (at or before taken_after: none)"
    )
    camera: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="only photos from this camera (EXIF make and model, exact)",
    )
    # Each corner in its range (said in the schema as prefixItems); a box whose min_lat is above its
    # max_lat holds nothing, like an empty time range: valid, and answered with no results.
    bbox: tuple[Latitude, Longitude, Latitude, Longitude] | None = Field(
        default=None,
        description="only photos taken inside [min_lat, min_lon, max_lat, max_lon] (decimal degrees; "
        "min_lon > max_lon crosses the antimeridian)",
    )


class HybridWeightsModel(BaseModel):
    """Relative weights of the two parts of a hybrid search: each in [0, 1], not both 0, and they need
    not sum to 1. They are scaled to sum to 1 before use (what OpenSearch requires; the ranking is the
    same), so `{"keyword": 0.5, "clip": 0.7}` searches with 0.417 and 0.583, and explanations show
    the scaled pair."""

    model_config = ConfigDict(
        extra="forbid",
        # `_not_both_zero`, said in the schema too.
        json_schema_extra={
            "not": {
                "required": ["keyword", "clip"],
                "properties": {"keyword": {"const": 0}, "clip": {"const": 0}},
            }
        },
    )

    keyword: float = Field(
        HYBRID_KEYWORD_WEIGHT, ge=0, le=1, description="BM25 over captions and tags, relative to clip"
    )
    clip: float = Field(HYBRID_CLIP_WEIGHT, ge=0, le=1, description="CLIP k-NN, relative to keyword")

    @model_validator(mode="after")
    def _not_both_zero(self) -> HybridWeightsModel:
        if self.keyword + self.clip <= 0:
            raise ValueError("keyword and clip weights cannot both be 0")
        return self


# The four ways to ask; a request gives exactly one (or a list of them as `parts`).
QUERY_FIELDS = ("text", "image", "image_uri", "video_id")

# Composed queries (`SearchRequest.parts`, see mediasearch.query.compose): how many parts, and how
# large each may be. A part's weight is in [-1, 1] and not 0; negative parts push results away.
MAX_QUERY_PARTS = 8
MAX_PART_WEIGHT = 1.0


def refuse_null(value: object) -> object:
    """A query field sent as null: a mistake the caller is told about, not an absent field."""
    if value is None:
        raise ValueError("must be a string: leave the field out instead of sending null")
    return value


# The schema's "not blank": one character that Python's str.strip() keeps, which `refuse_blank` asks
# for. JSON Schema's \S is ECMAScript's, whose whitespace is another set (it lacks U+001C-U+001F and
# U+0085, and has U+FEFF), so a schema-valid "\u001c" was refused with a 422 (found by schemathesis).
NOT_BLANK_PATTERN = (
    r"[^\t\n\v\f\r \u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)


def refuse_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("text is blank")
    return value


# The query fields of `QueryPart` and `SearchRequest`. A query field is either given (this schema) or
# left out; `null` is refused, so the schema does not offer it.
QueryText = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1000, "pattern": NOT_BLANK_PATTERN}),
]
QueryImage = Annotated[str | None, WithJsonSchema({"type": "string"})]
QueryImageUri = Annotated[str | None, WithJsonSchema({"type": "string", "maxLength": 2048})]
QueryVideoId = Annotated[str | None, WithJsonSchema({"type": "string", "maxLength": 64})]


class QueryPart(BaseModel):
    """One part of a composed query: exactly one of text, image, image_uri or video_id, with a weight.

    The query vector is the normalised weighted sum of the parts' unit vectors; a negative weight
    moves it away from what that part looks like ("beach" 1.0, "people" -0.5).
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": [name]} for name in QUERY_FIELDS]}
    )

    text: QueryText = Field(default=None, min_length=1, max_length=1000, description="words")
    image: QueryImage = Field(default=None, description="base64-encoded image bytes")
    image_uri: QueryImageUri = Field(default=None, max_length=2048, description="an image inside the store")
    video_id: QueryVideoId = Field(default=None, max_length=64, description="a video: its whole-video vector")
    weight: float = Field(
        default=1.0,
        ge=-MAX_PART_WEIGHT,
        le=MAX_PART_WEIGHT,
        json_schema_extra={"not": {"const": 0}},
        description="in [-1, 1], not 0: positive pulls results towards the part, negative pushes away",
    )

    _not_null = field_validator(*QUERY_FIELDS, mode="before")(refuse_null)

    _not_blank = field_validator("text")(refuse_blank)

    @field_validator("weight")
    @classmethod
    def _not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("a weight of 0 adds nothing: leave the part out")
        return value

    @model_validator(mode="after")
    def _one_query(self) -> QueryPart:
        given = [n for n in QUERY_FIELDS if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "a part is exactly one of text, image, image_uri, video_id "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        """Which of the four fields this part gives."""
        return next(n for n in QUERY_FIELDS if getattr(self, n) is not None)


class PartContribution(BaseModel):
    """What one part of a composed query adds to a result's score.

    `contribution` = weight x cosine / |sum of weighted part vectors|: the contributions of all parts
    add up to the result's (cosine) score. For a video they are aggregated over its scenes like the score;
    in hybrid mode they add up to the CLIP side's cosine, which is fused with the keyword side.
    """

    part: int = Field(description="index into the request's `parts`")
    kind: str = Field(description="text, image, image_uri or video_id")
    label: str = Field(description="the text, image_uri or video_id; 'image' for an uploaded image")
    weight: float
    cosine: float = Field(description="cosine similarity between the result and the part alone")
    contribution: float


def _one_of_queries(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": [name]} for name in (*QUERY_FIELDS, "parts")]
    # `parts` is given or left out, as the query fields are: `null` is refused, so not offered.
    parts = schema["properties"]["parts"]
    given = [branch for branch in parts.pop("anyOf", []) if branch.get("type") != "null"]
    parts.update(given[0] if given else {})
    parts.pop("default", None)
    # `_one_query`'s "at least one positive weight" (a part without a weight weighs 1).
    parts["contains"] = {
        "anyOf": [{"not": {"required": ["weight"]}}, {"properties": {"weight": {"exclusiveMinimum": 0}}}]
    }


class SearchRequest(BaseModel):
    """`POST /search`: exactly one query (text, image, image_uri or video_id), or a composed query (`parts`)."""

    model_config = ConfigDict(
        extra="forbid",
        # What `_one_query` enforces, said in the schema too, for generated clients and fuzzers.
        json_schema_extra=lambda schema: _one_of_queries(schema),
    )

    text: QueryText = Field(
        default=None, min_length=1, max_length=1000, description="what to look for, in words"
    )
    image: QueryImage = Field(default=None, description="base64-encoded image bytes")
    image_uri: QueryImageUri = Field(default=None, max_length=2048, description="an image inside the store")
    video_id: QueryVideoId = Field(default=None, max_length=64, description="videos similar to this one")
    mode: SearchMode = SearchMode.CLIP
    kinds: list[ResultKind] = Field(
        default_factory=lambda: [ResultKind.IMAGE, ResultKind.VIDEO], min_length=1
    )
    k: int = Field(default=10, ge=1, le=100)
    aggregation: Aggregation = Aggregation.MAX
    weights: HybridWeightsModel | None = Field(
        default=None, description="hybrid mode only; default: MEDIASEARCH_HYBRID_*_WEIGHT"
    )
    filters: SearchFilters = Field(default_factory=SearchFilters)
    parts: list[QueryPart] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUERY_PARTS,
        description="a composed query, instead of text/image/image_uri/video_id: the normalised "
        "weighted sum of the parts' vectors; at least one part must have a positive weight",
    )
    encoder: VideoEncoder = Field(
        default=VideoEncoder.CLIP,
        description="with video_id: compare whole-video CLIP vectors (clip) or the trained video "
        "encoder's features (learned)",
    )
    min_score: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="leave out results scoring below this (cosine in [-1, 1]; the fused score in hybrid "
        "mode). Scales differ per query: see cutoff=auto",
    )
    cutoff: CutoffMode | None = Field(
        default=None,
        description="auto: stop at the largest drop in the top k scores when it stands out from the "
        "spread of the query's own candidate scores; the response's `cutoff` says where and why",
    )

    _not_null = field_validator(*QUERY_FIELDS, mode="before")(refuse_null)

    @field_validator("parts", mode="before")
    @classmethod
    def _parts_not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("must be a list of parts: leave the field out instead of sending null")
        return value

    _not_blank = field_validator("text")(refuse_blank)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [n for n in QUERY_FIELDS if getattr(self, n) is not None]
        if self.parts is not None:
            # Mixing would leave the single field's weight unsaid: it goes in as a part instead.
            if given:
                raise ValueError(
                    f"give either parts or one of text, image, image_uri, video_id, not both (got parts "
                    f"and {', '.join(given)}): add {given[0]} as a part with its weight"
                )
            if not any(p.weight > 0 for p in self.parts):
                raise ValueError(
                    "parts need at least one positive weight: negative parts only say what to avoid, "
                    "and there is nothing to search towards"
                )
            return self
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of text, image, image_uri, video_id (got {', '.join(given) or 'none'})"
            )
        return self


class SceneHit(BaseModel):
    id: str
    scene: int
    t_start: float
    t_end: float
    score: float
    thumbnail_url: str | None = None


class MediaView(BaseModel):
    """What the API shows of a document: its fields and URLs, never its vectors."""

    id: str
    uri: str
    url: str | None = None
    thumbnail_url: str | None = None
    strip_url: str | None = None
    video_id: str | None = None
    caption: str | None = None
    tags: list[str] = Field(default_factory=list)
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    scene_count: int | None = None
    taken_at: datetime | None = Field(default=None, description="when the photo was taken (EXIF), UTC")
    camera: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None


class SearchResult(MediaView):
    kind: ResultKind
    score: float = Field(
        description="cosine similarity in [-1, 1] (aggregated for videos; fused in hybrid mode)"
    )
    scenes: list[SceneHit] = Field(default_factory=list)
    explanation: str = ""
    contributions: list[PartContribution] | None = Field(
        default=None, description="composed queries only: each part's share of the score"
    )


class CutoffReport(BaseModel):
    """Where a relevance cutoff (min_score, cutoff=auto) ended the results, and why."""

    rule: str = Field(description="min_score, auto, or both joined by +")
    threshold: float | None = Field(description="the lowest score kept; None when nothing was cut")
    kept: int
    dropped: int = Field(description="results of the top k without a cutoff that it left out")
    reason: str


class SearchResponse(BaseModel):
    results: list[SearchResult]
    facets: dict[str, int] = Field(default_factory=dict, description="tag -> number of results carrying it")
    took_ms: float
    generation: str | None = Field(
        default=None, description="the index generation that answered (one per embedding model)"
    )
    cutoff: CutoffReport | None = Field(
        default=None, description="set when min_score or cutoff asked for a cut: where and why it cut"
    )


class ItemResponse(MediaView):
    """`GET /items/{id}`: a document without its vectors."""

    kind: DocKind
    scene: int | None = None
    t_start: float | None = None
    t_end: float | None = None


class DuplicateMember(MediaView):
    """One document of a near-duplicate cluster, with its similarity to the cluster's representative."""

    kind: DocKind
    score: float = Field(description="cosine similarity to the representative (1 for the representative)")
    scene: int | None = None
    t_start: float | None = Field(default=None, description="a scene's start in its video, seconds")
    t_end: float | None = None


class DuplicatePair(BaseModel):
    """Two members the self-join found within the threshold of each other."""

    a: str
    b: str
    score: float = Field(description="cosine similarity of the two")


class DuplicateCluster(BaseModel):
    """Documents linked, directly or through each other, by pairs at or above the threshold."""

    representative: str = Field(description="the member most similar to the others (the first member)")
    kind: DocKind
    size: int
    max_score: float = Field(description="the highest similarity of a pair in the cluster")
    min_score: float = Field(description="the lowest similarity of a pair the self-join linked")
    members: list[DuplicateMember]
    pairs: list[DuplicatePair]


class DuplicatesResponse(BaseModel):
    """`GET /duplicates`: near-duplicate clusters, biggest and closest first."""

    kind: DocKind
    threshold: float
    neighbours: int = Field(description="nearest neighbours asked of the index per document")
    documents: int = Field(description="documents of this kind that were compared")
    knn_calls: int = Field(description="k-NN queries the self-join made (one per document)")
    clusters: list[DuplicateCluster]
    truncated: bool = Field(default=False, description="more clusters were found than `limit`")
    took_ms: float
    generation: str | None = None


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None


class SceneSpan(BaseModel):
    """One detected scene of a video, as the preprocess job wrote it."""

    scene: int = Field(ge=0)
    t_start: float = Field(ge=0)
    t_end: float = Field(ge=0)
    thumbnail: str | None = Field(default=None, description="URI of the keyframe thumbnail (JPEG)")
    frames: list[float] = Field(default_factory=list, description="times of the sampled frames, seconds")


class VideoRecord(BaseModel):
    """A preprocessed video: written by the preprocess job beside its frames, read by the loader.

    `error` is set (and `scenes` empty) for a video that could not be decoded.
    """

    video_id: str
    uri: str
    fingerprint: str | None = None
    content_hash: str | None = None
    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    scenes: list[SceneSpan] = Field(default_factory=list)
    strip: str | None = Field(default=None, description="URI of the scene strip image")
    error: str | None = None
