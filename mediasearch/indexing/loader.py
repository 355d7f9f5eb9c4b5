"""Loads transform outputs (`.out` JSON Lines) into the index.

Images become image documents directly. Frames are grouped by video and, with the video's sidecar
(written by the preprocess job), become scene documents and one video document; a video's old
scenes are dropped first, so a changed video leaves no stale scene behind. A frame whose fingerprint
is not the sidecar's belongs to an older version of the video and is never averaged into a scene.

Only what the source holds now is loaded: an image result whose object is gone, or is there at
another fingerprint than the one it was embedded at, is left out, and so is a video whose object is
not at its sidecar's fingerprint. Loading old outputs (a `load` over the whole work area, whose
image manifests may be shared with images deleted since) therefore never brings back a deleted,
moved or replaced object.

Idempotent: documents are keyed by deterministic ids, so loading the same outputs twice leaves the
same documents and the same count. Error records are reported, never indexed.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from mediasearch.core import failpoints
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import DocKind, IndexDocument, MediaKind, TransformResult, VideoRecord
from mediasearch.core.storage import ObjectNotFound, ObjectStore, StoreError, open_uri
from mediasearch.core.wire import parse_output_lines
from mediasearch.index.base import IndexFilter, IndexSpec, VectorIndex
from mediasearch.indexing.tags import extract_tags
from mediasearch.indexing.video_documents import TagOptions, build_video_documents
from mediasearch.query.search import TextVectoriser


@dataclass
class LoadReport:
    outputs: int = 0
    indexed: int = 0
    videos: int = 0
    stale_frames: int = 0  # frames of an older version of their video, or of a video gone, left out
    stale_images: int = 0  # results of images gone from the source or changed since, left out
    learned: int = 0  # videos given the trained video encoder's feature (MEDIASEARCH_VIDEO_ENCODER)
    learned_skipped: list[str] = field(default_factory=list)  # videos that could not be, and why
    failures: list[TransformResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


def image_document(result: TransformResult) -> IndexDocument:
    assert result.clip is not None
    return IndexDocument(
        id=result.id,
        kind=DocKind.IMAGE,
        uri=result.uri,
        thumbnail=result.uri,
        caption=result.caption or None,
        tags=extract_tags(result.caption) if result.caption else [],
        width=result.width,
        height=result.height,
        fingerprint=result.fingerprint,
        content_hash=result.content_hash,
        model=result.model,
        clip_vector=result.clip,
        taken_at=result.taken_at,
        camera=result.camera,
        gps_lat=result.gps_lat,
        gps_lon=result.gps_lon,
    )


class SourceState:
    """The fingerprints of the source's objects now, by URI (None: the object does not exist).

    `listed`: what a run listed already. Other URIs inside the store are answered from one listing of
    the store, made when first needed; URIs outside it (a hand-written manifest may name any) by a stat.
    """

    def __init__(
        self, store: ObjectStore, layout: WorkLayout, listed: Mapping[str, str] | None = None
    ) -> None:
        self.store = store
        self.layout = layout
        self._known: dict[str, str | None] = dict(listed or {})
        self._store_listed = False

    def fingerprint(self, uri: str) -> str | None:
        if uri in self._known:
            return self._known[uri]
        if self.store.key_of(uri) is not None:
            if not self._store_listed:
                self._store_listed = True
                for obj in self.store.list():
                    if not self.layout.contains(obj.key):
                        self._known.setdefault(self.store.uri(obj.key), obj.fingerprint)
            return self._known.get(uri)
        try:
            store, key = open_uri(uri)
            info = store.stat(key)
        except StoreError:
            info = None
        self._known[uri] = info.fingerprint if info is not None else None
        return self._known[uri]

    def current(self, uri: str, fingerprint: str | None) -> bool:
        """Whether the object at `uri` exists and, when `fingerprint` is given, still has it."""
        now = self.fingerprint(uri)
        return now is not None and (fingerprint is None or now == fingerprint)


class VideoVectoriser(Protocol):
    """The trained video encoder (`mediasearch.models.video_encoder.VideoEncoder`), as the loader uses it."""

    @property
    def dim(self) -> int: ...

    @property
    def clip_identity(self) -> str: ...

    def encode_video(self, frame_vectors: np.ndarray, times: np.ndarray) -> np.ndarray: ...


class Loader:
    def __init__(
        self,
        store: ObjectStore,
        index: VectorIndex,
        layout: WorkLayout,
        batch_size: int = 500,
        progress: bool = True,
        text_embedder: TextVectoriser | None = None,
        tags: TagOptions = TagOptions(),
        video_encoder: VideoVectoriser | None = None,
    ) -> None:
        self.store = store
        self.video_encoder = video_encoder
        self.index = index
        self.text_embedder = text_embedder
        self.tags = tags
        self.layout = layout
        self.batch_size = batch_size
        self.progress = progress

    def output_keys(self, tag: str) -> list[str]:
        """Every output the model `tag` wrote in the work area (what the `load` stage loads)."""
        listed = self.store.list(self.layout.outputs_dir(tag))
        return sorted(o.key for o in listed if self.layout.is_output(o.key))

    def load(self, output_keys: Sequence[str], listed: Mapping[str, str] | None = None) -> LoadReport:
        """Load `output_keys`; `listed`: the source's objects as the caller just listed them (URI ->
        fingerprint), which spares the loader a listing of its own (see `SourceState`)."""
        report = LoadReport()
        source = SourceState(self.store, self.layout, listed)
        pending: list[IndexDocument] = []
        frames: dict[str, list[TransformResult]] = defaultdict(list)
        for key in tqdm(output_keys, desc="load", unit="file", disable=not self.progress, file=sys.stderr):
            results = parse_output_lines(self.store.get(key))
            report.outputs += 1
            for result in results:
                if not result.ok:
                    report.failures.append(result)
                elif result.kind is MediaKind.FRAME and result.video_id is not None:
                    frames[result.video_id].append(result)
                elif result.kind is MediaKind.IMAGE:
                    if source.current(result.uri, result.fingerprint):
                        pending.append(image_document(result))
                    else:
                        report.stale_images += 1
            if len(pending) >= self.batch_size:
                report.indexed += self._write(pending)
                pending = []
        report.indexed += self._write(pending)
        for video_id, video_frames in frames.items():
            report.indexed += self._load_video(video_id, video_frames, report, source)
        if report.indexed:
            self.index.optimize()
        return report

    def _load_video(
        self, video_id: str, frames: list[TransformResult], report: LoadReport, source: SourceState
    ) -> int:
        sidecar = self.layout.sidecar(video_id)
        try:
            record = VideoRecord.model_validate_json(self.store.get(sidecar))
        except ObjectNotFound:
            # The video's artefacts were deleted with it (or it moved): these frames are of nothing.
            report.stale_frames += len(frames)
            return 0
        except (StoreError, ValueError) as exc:
            report.failures.append(
                TransformResult(
                    id=video_id, uri=self.store.uri(sidecar), error=f"video sidecar unreadable: {exc}"
                )
            )
            return 0
        if not source.current(record.uri, record.fingerprint):
            # Gone, or changed since it was preprocessed: the next ingest preprocesses it again.
            report.stale_frames += len(frames)
            return 0
        current = [f for f in frames if f.fingerprint == record.fingerprint]
        report.stale_frames += len(frames) - len(current)
        if not current:
            return 0  # only outputs of an older version were given: the index keeps what it has
        docs = build_video_documents(record, current, self.tags)
        if docs.video is None:
            report.failures.append(
                TransformResult(id=video_id, uri=record.uri, error="; ".join(docs.problems) or "no scenes")
            )
            return 0
        # Scene numbering and count change when a video changes: drop every old scene first.
        if self.index.exists():
            self.index.delete_where(IndexFilter(kinds=(DocKind.SCENE,), video_id=video_id))
        report.videos += 1
        video = docs.video
        if self.video_encoder is not None:
            video = self._with_learned_vector(video, current, report)
        return self._write([*docs.scenes, video])

    def _with_learned_vector(
        self, video: IndexDocument, frames: list[TransformResult], report: LoadReport
    ) -> IndexDocument:
        """`video` with the trained encoder's feature of its frames' CLIP vectors, in time order.

        The encoder was trained on one CLIP's frame features; frames another CLIP embedded would give
        a meaningless vector, so such a video is indexed without one and reported.
        """
        assert self.video_encoder is not None
        usable = [f for f in frames if f.clip is not None]
        models = {f.model for f in usable}
        if not usable or models != {self.video_encoder.clip_identity}:
            report.learned_skipped.append(
                f"{video.uri}: its frames were embedded by {sorted(str(m) for m in models)}, the video "
                f"encoder was trained on {self.video_encoder.clip_identity}"
            )
            return video
        vectors = np.stack([f.clip for f in usable if f.clip is not None])
        times = np.array([f.t if f.t is not None else 0.0 for f in usable])
        report.learned += 1
        return video.model_copy(update={"learned_vector": self.video_encoder.encode_video(vectors, times)})

    def _write(self, docs: list[IndexDocument]) -> int:
        if not docs:
            return 0
        captioned = [i for i, d in enumerate(docs) if d.caption and d.caption_vector is None]
        if captioned and self.text_embedder is not None:
            vectors = self.text_embedder.embed([docs[i].caption or "" for i in captioned])
            for i, vector in zip(captioned, vectors, strict=True):
                docs[i] = docs[i].model_copy(update={"caption_vector": vector})
        if not self.index.exists():
            # The caption width comes from the first caption vectors; without any yet (the embedder is not
            # even loaded), all-MiniLM-L6-v2's 384, the default embedder's.
            caption_dim = next((d.caption_vector.shape[0] for d in docs if d.caption_vector is not None), 384)
            learned_dim = self.video_encoder.dim if self.video_encoder is not None else IndexSpec.learned_dim
            self.index.create(
                IndexSpec(
                    clip_dim=int(docs[0].clip_vector.shape[0]),
                    caption_dim=caption_dim,
                    learned_dim=learned_dim,
                )
            )
        written = self.index.upsert(docs)
        failpoints.reach("mid-load")
        return written
