"""Query planning: encode the query, k-NN with filters, group scenes into videos, explain scores.

Images are ranked by cosine similarity directly. Videos are ranked from their scenes: enough scene
candidates are fetched for the requested number of videos, grouped by video and aggregated with a
named function, and each video carries its matching scenes and an explanation of its score (the
GNES idea: an aggregated score is only useful if you can see what it is made of). "More like this"
for a video compares whole-video vectors.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mediasearch import __version__
from mediasearch.core.choices import VideoEncoder
from mediasearch.core.errors import ModelLoadError
from mediasearch.core.images import ImageDecodeError
from mediasearch.core.records import (
    Aggregation,
    DocKind,
    DocumentFields,
    DuplicatesResponse,
    ItemResponse,
    MediaView,
    ResultKind,
    SceneHit,
    SearchFilters,
    SearchMode,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from mediasearch.core.storage import ObjectStore, StoreError, open_uri
from mediasearch.index.base import Hit, HybridWeights, IndexFilter, VectorField, VectorIndex
from mediasearch.query import compose
from mediasearch.query.cutoff import CutoffMode, cut_results, pool_size
from mediasearch.query.encoder import QueryEncoder, TextVectoriser
from mediasearch.query.links import MediaLinks
from mediasearch.query.timing import phase

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """The caller's query cannot be answered as asked; `field` names the part at fault.

    `detail` is what the caller is shown besides the message: the field, and anything else given
    (e.g. the limit an image broke).
    """

    def __init__(self, field: str, message: str, status: int = 400, **detail: object) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.detail: dict[str, object] = {"field": field, **detail}


class NotFound(LookupError):
    """Nothing indexed answers to an id, or the item has no such media; `detail` is safe to show."""

    def __init__(self, message: str, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.detail = detail


MediaPart = Literal["media", "thumbnail", "strip"]

# Content types by extension for served media; anything else goes out as opaque bytes.
MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
}


@dataclass(frozen=True)
class MediaFile:
    """One media object of an item, as the API sends it: exactly one of `path` and `data` is set.

    `path` where the store has the file on this machine (a web server can then answer Range
    requests, so a player seeks to a scene without fetching the whole video), else the bytes.
    """

    media_type: str
    path: Path | None = None
    data: bytes | None = None


# name -> function of a video's scene scores (best first). Add a line here to add an aggregation.
AGGREGATIONS: dict[Aggregation, Callable[[Sequence[float]], float]] = {
    Aggregation.MAX: lambda s: max(s),
    Aggregation.MEAN: lambda s: float(np.mean(s)),
    Aggregation.SUM: lambda s: float(np.sum(s)),
    Aggregation.TOP3_MEAN: lambda s: float(np.mean(sorted(s, reverse=True)[:3])),
}

# Scene candidates fetched per requested video: videos have several scenes, and a few long videos
# must not crowd out the rest.
SCENES_PER_VIDEO = 8
MAX_SCENES_SHOWN = 5


@dataclass(frozen=True)
class VideoScore:
    video_id: str
    score: float
    scenes: list[Hit]
    explanation: str


def aggregate_scenes(hits: Sequence[Hit], aggregation: Aggregation, k: int) -> list[VideoScore]:
    """Group scene hits by video, score each video, best first."""
    groups: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        if hit.document.video_id is not None:
            groups[hit.document.video_id].append(hit)
    scored = []
    for video_id, scene_hits in groups.items():
        scene_hits.sort(key=lambda h: h.score, reverse=True)
        scores = [h.score for h in scene_hits]
        value = AGGREGATIONS[aggregation](scores)
        shown = ", ".join(
            f"scene {h.document.scene} ({h.document.t_start or 0:.1f}-{h.document.t_end or 0:.1f}s) {h.score:.3f}"
            for h in scene_hits[:MAX_SCENES_SHOWN]
        )
        more = f" and {len(scene_hits) - MAX_SCENES_SHOWN} more" if len(scene_hits) > MAX_SCENES_SHOWN else ""
        explanation = (
            f"{aggregation.value} over {len(scene_hits)} matching scene(s) = {value:.3f}: {shown}{more}"
        )
        scored.append(VideoScore(video_id, value, scene_hits, explanation))
    scored.sort(key=lambda v: v.score, reverse=True)
    return scored[:k]


def learned_field(req: SearchRequest) -> VectorField:
    """The vector field "videos like this one" ranks by."""
    return VectorField.LEARNED if req.encoder is VideoEncoder.LEARNED else VectorField.CLIP


def index_filter(filters: SearchFilters, kinds: tuple[DocKind, ...]) -> IndexFilter:
    return IndexFilter(
        kinds=kinds,
        video_id=filters.video_id,
        tags=tuple(filters.tags),
        uri_prefix=filters.uri_prefix,
        min_width=filters.min_width,
        min_height=filters.min_height,
        taken_after=filters.taken_after,
        taken_before=filters.taken_before,
        camera=filters.camera,
        bbox=filters.bbox,
    )


@dataclass(frozen=True)
class Query:
    """A request turned into what the index is asked: a vector, and the text for keyword relevance."""

    vector: np.ndarray
    field: VectorField = VectorField.CLIP
    text: str | None = None  # set in hybrid mode
    exclude_video_id: str | None = None  # "more like this video" leaves the video itself out
    composed: compose.ComposedParts | None = None  # a composed query's parts (query.compose)


# The service's entry points: each runs against one snapshot of the serving generation.
PINNED_CALLS = ("search", "health", "document", "item", "media", "check_image_size", "duplicates")


def _pinned(
    call: Callable[..., Any], pin: Callable[[], AbstractContextManager[object]]
) -> Callable[..., Any]:
    @functools.wraps(call)
    def pinned(*args: Any, **kwargs: Any) -> Any:
        with pin():
            return call(*args, **kwargs)

    return pinned


class SearchService:
    def __init__(
        self,
        index: VectorIndex,
        encoder: QueryEncoder,
        store: ObjectStore | None,
        links: MediaLinks,
        text_embedder: TextVectoriser | None = None,
        hybrid_weights: HybridWeights = HybridWeights(),
        pin: Callable[[], AbstractContextManager[object]] | None = None,
        generation: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.store = store
        self.links = links
        self.text_embedder = text_embedder
        self.hybrid_weights = hybrid_weights
        self.generation = generation  # names the generation a response came from
        if pin is not None:
            # `index` and `encoder` follow the serving generation (query.serving): each public call
            # pins one (index, encoder) pair for its whole duration, so no answer mixes two models.
            for name in PINNED_CALLS:
                setattr(self, name, _pinned(getattr(self, name), pin))

    def warm_up(self) -> None:
        """Load the query model now rather than inside the first request's latency."""
        self.encoder.warm_up()

    def health(self) -> dict[str, object]:
        """Liveness, with the document count from a real read of the index (`VectorIndex.probe`).

        Raises the index's errors (`IndexNotReady` for a missing collection, `IndexUnreadable` for
        damaged data) so that health answers 503 with the reason instead of ok with 0 documents.
        """
        return {"status": "ok", "version": __version__, "documents": self.index.probe()}

    # -- items and their media --------------------------------------------------------------------

    def document(self, item_id: str) -> DocumentFields:
        doc = self.index.get(item_id)
        if doc is None:
            raise NotFound(f"no item with id {item_id!r}")
        return doc

    def item(self, item_id: str) -> ItemResponse:
        """A document as the caller sees it: without its vectors, with URLs for its media."""
        doc = self.document(item_id)
        return ItemResponse(
            **self.media_fields(doc), kind=doc.kind, scene=doc.scene, t_start=doc.t_start, t_end=doc.t_end
        )

    def media(self, item_id: str, part: MediaPart) -> MediaFile:
        """An item's file, thumbnail or strip; raises `NotFound` naming the item, never the object."""
        # Only objects that indexed documents point at are served: no path comes from the caller.
        doc = self.document(item_id)
        uri = {"media": doc.uri, "thumbnail": doc.thumbnail or doc.uri, "strip": doc.strip}[part]
        if uri is None:
            raise NotFound(f"item {item_id!r} has no {part}")
        # Paths and bucket layout stay in the log; the caller learns only which item and part.
        missing = NotFound("media not found", {"id": item_id, "part": part})
        try:
            store, key = open_uri(uri)
            media_type = MEDIA_TYPES.get(key.rsplit(".", 1)[-1].lower(), "application/octet-stream")
            path = store.local_path(key)
            if path is None:
                return MediaFile(media_type, data=store.get(key))
            if not path.is_file():
                log.warning("media of %s is missing: %s", item_id, uri)
                raise missing
            return MediaFile(media_type, path=path)
        except StoreError as exc:
            log.warning("media of %s cannot be read: %s", item_id, exc)
            raise missing from None

    # -- query vectors ----------------------------------------------------------------------------

    def check_image_size(self, req: SearchRequest, limit_bytes: int) -> None:
        """Refuse (413) a query image over `limit_bytes` before anything reads or decodes it.

        The request-size limit bounds the JSON; this bounds what the image decoder is handed.
        """
        if req.parts is not None:
            compose.check_part_sizes(self, req, limit_bytes)
        if req.image is not None:
            decoded = len(req.image) * 3 // 4 - req.image[-2:].count("=")
            if decoded > limit_bytes:
                raise QueryError("image", "image too large", status=413, limit_bytes=limit_bytes)
        elif req.image_uri is not None and self.store is not None:
            key = self.store.key_of(req.image_uri)
            try:
                info = self.store.stat(key) if key is not None else None
            except StoreError:
                return  # reading it fails the same way, and `read_store_image` explains that
            # A miss is `read_store_image`'s to explain, with the store's own message.
            if info is not None and info.size > limit_bytes:
                raise QueryError("image_uri", "image too large", status=413, limit_bytes=limit_bytes)

    def query_vector(self, req: SearchRequest) -> tuple[np.ndarray, str | None]:
        """The vector to search with, and the id of a video to leave out of its own neighbours."""
        if req.encoder is VideoEncoder.LEARNED and req.video_id is None:
            raise QueryError("encoder", "encoder=learned compares videos: give video_id")
        if req.text is not None:
            if not req.text.strip():
                raise QueryError("text", "text is blank")
            return self.encoder.encode_text(req.text), None
        if req.video_id is not None:
            doc = self.index.get_with_vectors(req.video_id)
            if doc is None or doc.kind is not DocKind.VIDEO:
                raise QueryError("video_id", f"no video with id {req.video_id!r}", status=404)
            if req.encoder is VideoEncoder.LEARNED:
                if doc.learned_vector is None:
                    raise QueryError(
                        "encoder",
                        f"video {req.video_id!r} has no learned vector: the index was built without a "
                        "video encoder (set MEDIASEARCH_VIDEO_ENCODER and ingest again)",
                        status=409,
                    )
                return doc.learned_vector, doc.id
            return doc.clip_vector, doc.id
        if req.image is not None:
            try:
                data = base64.b64decode(req.image, validate=True)
            except (binascii.Error, ValueError):
                raise QueryError("image", "image is not valid base64") from None
            field = "image"
        else:
            assert req.image_uri is not None
            data = self.read_store_image(req.image_uri)
            field = "image_uri"
        try:
            return self.encoder.encode_image(data), None
        except ImageDecodeError as exc:
            raise QueryError(field, f"{field}: {exc}") from None

    def read_store_image(self, uri: str) -> bytes:
        key = self.store.key_of(uri) if self.store is not None else None
        if key is None:
            root = self.store.root_uri if self.store is not None else "(no store configured)"
            raise QueryError("image_uri", f"image_uri must be an object inside the store {root}")
        assert self.store is not None
        try:
            return self.store.get(key)
        except StoreError as exc:
            raise QueryError("image_uri", str(exc), status=404) from None

    # -- search -------------------------------------------------------------------------------------

    def plan(self, req: SearchRequest) -> Query:
        if req.parts is not None:
            return compose.plan_parts(self, req)
        if req.mode is SearchMode.CLIP:
            vector, exclude = self.query_vector(req)
            return Query(vector, exclude_video_id=exclude)
        if req.text is None:
            raise QueryError("mode", f"{req.mode.value} mode searches with text: give `text`")
        if not req.text.strip():
            raise QueryError("text", "text is blank")
        if req.mode is SearchMode.CAPTION:
            return Query(self.caption_vector(req.text), field=VectorField.CAPTION)
        return Query(self.encoder.encode_text(req.text), text=req.text)

    def caption_vector(self, text: str) -> np.ndarray:
        if self.text_embedder is None:
            raise QueryError("mode", "caption search is not configured on this server", status=501)
        try:
            return self.text_embedder.embed([text])[0]
        except ImportError as exc:
            # The embedder runs in-process; slim deployments (the query Lambda) leave its libraries out.
            missing = f"{exc.name!r} is" if exc.name else "they are"
            raise QueryError(
                "mode",
                "caption search is not available on this server: the caption text embedder needs "
                f"torch and transformers, and {missing} not installed",
                status=501,
            ) from None
        except ModelLoadError as exc:
            # The loader's own words (a hub error, a path) are for the operator's log, not the caller.
            log.warning("caption search unavailable: %s", exc)
            raise QueryError(
                "mode",
                "caption search is unavailable: the server cannot load its caption text model "
                "(not downloaded, and the model hub cannot be reached); the clip and hybrid modes work",
                status=503,
            ) from None

    def weights(self, req: SearchRequest) -> HybridWeights:
        if req.weights is None:
            return self.hybrid_weights
        return HybridWeights(keyword=req.weights.keyword, vector=req.weights.clip)

    def hits(self, query: Query, req: SearchRequest, k: int, kinds: tuple[DocKind, ...]) -> list[Hit]:
        flt = index_filter(req.filters, kinds)
        with phase("knn"):
            if query.text is not None:
                return self.index.hybrid(query.text, query.vector, k, flt, self.weights(req))
            return self.index.knn(query.vector, k, flt, field=query.field)

    def search(self, req: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        with phase("encode"):
            query = self.plan(req)
        asked = req
        if req.cutoff is CutoffMode.AUTO:
            # A larger pool than k: its scores past the first k show this query's background.
            req = req.model_copy(update={"k": pool_size(req.k)})
        results: list[SearchResult] = []
        if ResultKind.IMAGE in req.kinds and req.video_id is None:
            hits = self.hits(query, req, req.k, (DocKind.IMAGE,))
            with phase("build"):
                results.extend(self.image_result(h, query, req) for h in hits)
        if ResultKind.VIDEO in req.kinds:
            if query.exclude_video_id is not None:
                results.extend(
                    self.similar_videos(
                        query.vector, req.k, req.filters, query.exclude_video_id, learned_field(req)
                    )
                )
            else:
                results.extend(self.video_results(query, req))
        with phase("build"):
            results.sort(key=lambda r: r.score, reverse=True)
            if query.composed is not None:
                results = compose.explain_parts(self, query.composed, results, req)
            results = results[: req.k]
            results, cutoff = cut_results(results, asked)
            return SearchResponse(
                results=results,
                facets=dict(Counter(t for r in results for t in r.tags).most_common()),
                took_ms=round((time.perf_counter() - started) * 1000, 2),
                generation=self.generation(),
                cutoff=cutoff,
            )

    def video_results(self, query: Query, req: SearchRequest) -> list[SearchResult]:
        candidates = min(req.k * SCENES_PER_VIDEO, 1000)
        hits = self.hits(query, req, candidates, (DocKind.SCENE,))
        with phase("build"):
            videos = aggregate_scenes(hits, req.aggregation, req.k)
        with phase("docs"):
            docs = {d.id: d for d in self.index.get_many(v.video_id for v in videos)}
        with phase("build"):
            return [self.video_result(docs[v.video_id], v) for v in videos if v.video_id in docs]

    def similar_videos(
        self,
        vector: np.ndarray,
        k: int,
        filters: SearchFilters,
        exclude_video_id: str,
        field: VectorField = VectorField.CLIP,
    ) -> list[SearchResult]:
        flt = replace(index_filter(filters, (DocKind.VIDEO,)), exclude_video_id=exclude_video_id)
        with phase("knn"):
            hits = self.index.knn(vector, k, flt, field=field)
        what = "learned video features" if field is VectorField.LEARNED else "whole-video vectors"
        with phase("build"):
            return [
                self.video_result(h.document, None, h.score, f"cosine similarity {h.score:.3f} of {what}")
                for h in hits
            ]

    def duplicates(
        self,
        kind: DocKind,
        threshold: float,
        neighbours: int,
        limit: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> DuplicatesResponse:
        """Near-duplicate clusters of `kind` (mediasearch.query.duplicates), with URLs for their media."""
        from mediasearch.query.duplicates import DuplicatesError, find_duplicates

        try:
            found = find_duplicates(
                self.index, kind, threshold, neighbours, limit, view=self.media_fields, progress=progress
            )
        except DuplicatesError as exc:
            raise QueryError(exc.field, str(exc)) from None
        return found.model_copy(update={"generation": self.generation()})

    # -- result records -----------------------------------------------------------------------------

    def explain(self, hit: Hit, query: Query, req: SearchRequest, what: str) -> str:
        if query.text is not None:
            w = self.weights(req)
            # The weights as the backend used them: HybridWeights keeps the pair scaled to sum to 1.
            if hit.parts:
                return (
                    f"hybrid {hit.score:.3f} = {w.keyword:.3g} x keyword {hit.parts['keyword']:.3f} + "
                    f"{w.vector:.3g} x clip {hit.parts['vector']:.3f}, "
                    "each part min-max normalised over the candidates"
                )
            return (
                f"hybrid {hit.score:.3f}: keyword weight {w.keyword:.3g}, clip weight {w.vector:.3g}, "
                "each part min-max normalised"
            )
        if query.field is VectorField.CAPTION:
            return f"cosine similarity {hit.score:.3f} between the query and the {what}'s caption"
        return f"cosine similarity {hit.score:.3f} between the query and the {what}"

    def media_fields(self, doc: DocumentFields) -> dict[str, Any]:
        """The `MediaView` fields of a document: what it shows of itself, and URLs for its media."""
        shown = set(MediaView.model_fields) - {"url", "thumbnail_url", "strip_url"}
        return {
            **doc.model_dump(include=shown),
            "url": self.links.url(doc.id, doc.uri),
            "thumbnail_url": self.links.url(doc.id, doc.thumbnail, "thumbnail"),
            "strip_url": self.links.url(doc.id, doc.strip, "strip"),
        }

    def image_result(self, hit: Hit, query: Query, req: SearchRequest) -> SearchResult:
        return SearchResult(
            **self.media_fields(hit.document),
            kind=ResultKind.IMAGE,
            score=hit.score,
            explanation=self.explain(hit, query, req, "image"),
        )

    def video_result(
        self, doc: DocumentFields, video: VideoScore | None, score: float | None = None, explanation: str = ""
    ) -> SearchResult:
        scenes = [
            SceneHit(
                id=h.document.id,
                scene=h.document.scene or 0,
                t_start=h.document.t_start or 0.0,
                t_end=h.document.t_end or 0.0,
                score=h.score,
                thumbnail_url=self.links.url(h.document.id, h.document.thumbnail, "thumbnail"),
            )
            for h in (video.scenes[:MAX_SCENES_SHOWN] if video else [])
        ]
        return SearchResult(
            **{**self.media_fields(doc), "video_id": doc.id},
            kind=ResultKind.VIDEO,
            score=video.score if video else float(score or 0.0),
            scenes=scenes,
            explanation=video.explanation if video else explanation,
        )
