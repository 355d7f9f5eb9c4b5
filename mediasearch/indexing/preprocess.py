"""The video preprocess job: every video under a prefix -> scenes, frames, thumbnails, sidecar, manifests.

Where each artefact goes is `mediasearch.core.layout.WorkLayout`'s business: frames, thumbnails, the
strip, the sidecar and the frame manifests (`frames-<vid>-<fp>.jsonl`, where `<fp>` hashes the
source's fingerprint, so a changed video gets new manifests, and new outputs, while an unchanged one
keeps its own). Manifests longer than `manifest_lines` continue in `-p<n>` parts.

Resumable and idempotent: the sidecar is written last, as the commit mark of a video. A video whose
sidecar carries the source's current fingerprint (and no error) is skipped; everything else is
(re)done, writing the same keys again. Artefacts of an older version of a video (frames, thumbnails,
manifests) are deleted before its new sidecar is written, and at the end of a run one sweep deletes
every transform output whose manifest is gone, whichever model wrote it, so nothing stale remains.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import ManifestRecord, MediaKind, SceneSpan, VideoRecord, stable_id
from mediasearch.core.storage import ObjectInfo, ObjectStore
from mediasearch.core.wire import dumps_manifest, dumps_results, parse_output_lines
from mediasearch.indexing.manifests import list_media
from mediasearch.indexing.video import (
    ProcessedVideo,
    Timings,
    VideoError,
    VideoOptions,
    VideoPreprocessor,
)

MANIFEST_CONTENT_TYPE = "application/jsonlines"


class PreprocessSummary(BaseModel):
    """What a run did. `manifests` lists the frame manifests of every good video seen, skipped ones too,
    so the transform can be pointed at exactly this run's inputs."""

    processed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds_of_video: float = Field(0.0, description="duration of the videos processed in this run")
    wall_s: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict, description="video key -> error message")
    manifests: list[str] = Field(default_factory=list)
    sidecars: list[str] = Field(default_factory=list)
    stale_outputs: int = Field(0, description="transform outputs of replaced manifests, deleted")

    @property
    def realtime_factor(self) -> float:
        return self.seconds_of_video / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _Outcome:
    key: str
    status: str  # processed | skipped | failed
    record: VideoRecord
    manifests: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)


def list_videos(store: ObjectStore, prefix: str = "", layout: WorkLayout | None = None) -> list[ObjectInfo]:
    """Videos under `prefix` (multi-frame GIFs included), never those inside the work area."""
    return list_media(store, prefix, layout).videos


@contextmanager
def local_copy(store: ObjectStore, key: str) -> Iterator[str]:
    """A local path for `key`: the store's own file, or a temporary download (see `ObjectStore.local_copy`)."""
    with store.local_copy(key) as path:
        yield str(path)


class PreprocessJob:
    """Runs `VideoPreprocessor` over every video under a prefix of a store; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str = "",
        layout: WorkLayout | None = None,
        options: VideoOptions | None = None,
        workers: int = 1,
        manifest_lines: int = 1000,
        retry_failed: bool = True,
        force: bool = False,
        progress: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if manifest_lines < 1:
            raise ValueError(f"manifest_lines must be >= 1, got {manifest_lines}")
        self.store = store
        self.prefix = prefix
        self.layout = layout or WorkLayout.for_source(prefix)
        self.options = options or VideoOptions()
        self.workers = workers
        self.manifest_lines = manifest_lines
        self.retry_failed = retry_failed
        # Options are not part of the fingerprint: after changing them, force a rerun.
        self.force = force
        self.progress = progress
        self._preprocessor = VideoPreprocessor(self.options)

    def run(self, videos: Sequence[ObjectInfo] | None = None) -> PreprocessSummary:
        started = time.perf_counter()
        videos = list(list_videos(self.store, self.prefix, self.layout) if videos is None else videos)
        summary = PreprocessSummary()
        timings = Timings()
        lock = threading.Lock()
        bar = tqdm(
            total=len(videos), desc="preprocess", unit="video", disable=not self.progress, file=sys.stderr
        )

        def one(info: ObjectInfo) -> None:
            outcome = self.process_video(info)
            with lock:
                if outcome.status == "processed":
                    summary.processed += 1
                    summary.seconds_of_video += outcome.record.duration or 0.0
                elif outcome.status == "skipped":
                    summary.skipped += 1
                else:
                    summary.failed += 1
                    summary.errors[outcome.key] = outcome.record.error or "unknown error"
                summary.manifests.extend(outcome.manifests)
                summary.sidecars.append(self.layout.sidecar(outcome.record.video_id))
                timings.add(outcome.timings)
                bar.set_postfix_str(f"failed={summary.failed}", refresh=False)
                bar.update(1)

        try:
            if self.workers == 1:
                for info in videos:
                    one(info)
            else:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="preprocess") as pool:
                    list(pool.map(one, videos))
        finally:
            bar.close()
        if summary.processed or summary.failed:
            summary.stale_outputs = self.sweep_outputs()
        summary.manifests.sort()
        summary.sidecars.sort()
        summary.seconds_of_video = round(summary.seconds_of_video, 3)
        summary.timings = timings.as_dict()
        summary.wall_s = round(time.perf_counter() - started, 4)
        return summary

    # --- one video -------------------------------------------------------------------------------

    def video_id(self, key: str) -> str:
        return stable_id(self.store.uri(key))

    def read_sidecar(self, vid: str) -> VideoRecord | None:
        try:
            return VideoRecord.model_validate_json(self.store.get(self.layout.sidecar(vid)))
        except (KeyError, ValidationError, ValueError):
            # Missing, or half-understood: either way the video is done again.
            return None

    def process_video(self, info: ObjectInfo) -> _Outcome:
        """Process one video, or skip it when its sidecar is current. Never raises for a bad video."""
        key = info.key
        vid = self.video_id(key)
        old = self.read_sidecar(vid)
        current_sidecar = old is not None and old.fingerprint == info.fingerprint and not self.force
        if old is not None and current_sidecar and (old.error is None or not self.retry_failed):
            current = self._manifest_keys(vid, info.fingerprint) if old.error is None else []
            if old.error is not None or current:
                return _Outcome(key, "skipped", old, current)
            # The sidecar says done but its manifests are gone (deleted by hand?): do it again.
        uri = self.store.uri(key)
        try:
            with local_copy(self.store, key) as path:
                try:
                    video = self._preprocessor.process(path)
                except VideoError as exc:
                    # Name the video as the user knows it, not by a temporary download's path.
                    return self._fail(info, vid, str(exc).replace(path, uri))
                # Recorded so that a later rename of the video is recognised and keeps its scenes.
                digest = self.store.content_hash(key, info, local=Path(path))
            return self._write(info, vid, video, digest)
        except Exception as exc:  # one bad video (or a store hiccup) must not stop the job
            return self._fail(info, vid, f"{uri}: {type(exc).__name__}: {exc}")

    def frame_manifests(self, vid: str, fingerprint: str | None) -> list[str]:
        """The frame manifests of the video `vid` at `fingerprint` (all parts) that exist."""
        return self._manifest_keys(vid, fingerprint)

    def _manifest_keys(self, vid: str, fingerprint: str | None) -> list[str]:
        listed = (o.key for o in self.store.list(self.layout.frame_manifests_of(vid)))
        return self.layout.frame_manifest_parts(vid, fingerprint, listed)

    def sweep_outputs(self) -> int:
        """Delete transform outputs whose manifest is gone (any model's, local or SageMaker's).

        One listing of the work area per run rather than one per video: a changed video's old outputs
        then never reach its new scene vectors, however many models wrote them.
        """
        stale = self.layout.orphaned_outputs(o.key for o in self.store.list(self.layout.prefix))
        for key in stale:
            self.store.delete(key)
        return len(stale)

    def _write(self, info: ObjectInfo, vid: str, video: ProcessedVideo, content_hash: str) -> _Outcome:
        store, layout = self.store, self.layout
        t0 = time.perf_counter()
        frame_records: list[ManifestRecord] = []
        scenes: list[SceneSpan] = []
        keep: set[str] = set()
        for scene in video.scenes:
            for frame in scene.frames:
                fkey = layout.frame(vid, scene.index, frame.t)
                store.put(fkey, frame.jpeg, "image/jpeg")
                keep.add(fkey)
                uri = store.uri(fkey)
                frame_records.append(
                    ManifestRecord(
                        id=stable_id(uri),
                        uri=uri,
                        kind=MediaKind.FRAME,
                        video_id=vid,
                        scene=scene.index,
                        t=frame.t,
                        fingerprint=info.fingerprint,
                    )
                )
            tkey = layout.thumb(vid, scene.index)
            store.put(tkey, scene.thumbnail, "image/jpeg")
            keep.add(tkey)
            scenes.append(
                SceneSpan(
                    scene=scene.index,
                    t_start=scene.t_start,
                    t_end=scene.t_end,
                    thumbnail=store.uri(tkey),
                    frames=[f.t for f in scene.frames],
                )
            )
        skey = layout.strip(vid)
        store.put(skey, video.strip, "image/jpeg")

        manifests: list[str] = []
        for part, start in enumerate(range(0, len(frame_records), self.manifest_lines)):
            mkey = layout.frame_manifest(vid, info.fingerprint, part)
            store.put(
                mkey,
                dumps_manifest(frame_records[start : start + self.manifest_lines]),
                MANIFEST_CONTENT_TYPE,
            )
            manifests.append(mkey)
        self._delete_stale(vid, keep | set(manifests))

        record = VideoRecord(
            video_id=vid,
            uri=store.uri(info.key),
            fingerprint=info.fingerprint,
            content_hash=content_hash,
            duration=video.duration,
            fps=video.fps,
            width=video.width,
            height=video.height,
            scenes=scenes,
            strip=store.uri(skey),
        )
        store.put(layout.sidecar(vid), record.model_dump_json(indent=1).encode(), "application/json")
        video.timings.write += time.perf_counter() - t0
        return _Outcome(info.key, "processed", record, manifests, video.timings)

    def _fail(self, info: ObjectInfo, vid: str, message: str) -> _Outcome:
        record = VideoRecord(
            video_id=vid, uri=self.store.uri(info.key), fingerprint=info.fingerprint, error=message
        )
        try:
            self._delete_stale(vid, set())
            if self.store.exists(self.layout.strip(vid)):
                self.store.delete(self.layout.strip(vid))
            self.store.put(
                self.layout.sidecar(vid), record.model_dump_json(indent=1).encode(), "application/json"
            )
        except Exception as exc:  # the store itself failing: report it, keep going
            record.error = f"{message}; and the error record could not be written: {exc}"
        return _Outcome(info.key, "failed", record)

    def _delete_stale(self, vid: str, keep: set[str]) -> None:
        """Remove this video's artefacts from earlier versions: frames, thumbnails, manifests (their outputs
        go in the end-of-run sweep)."""
        for prefix in self.layout.video_artefact_prefixes(vid):
            for obj in list(self.store.list(prefix)):
                if obj.key not in keep:
                    self.store.delete(obj.key)

    # --- videos that moved, were touched, or are gone --------------------------------------------

    def delete_video(self, vid: str) -> None:
        """Delete every artefact of one video except its transform outputs (`sweep_outputs` finds those
        once the manifests are gone). The sidecar goes first: a video found half deleted is then
        preprocessed again rather than taken for done."""
        self.store.delete(self.layout.sidecar(vid))
        self.store.delete(self.layout.strip(vid))
        for prefix in self.layout.video_artefact_prefixes(vid):
            for obj in list(self.store.list(prefix)):
                self.store.delete(obj.key)

    def move_video(self, old: VideoRecord, info: ObjectInfo, content_hash: str | None) -> VideoRecord:
        """Re-key a preprocessed video's artefacts to the object `info` now is, without decoding or
        embedding anything: a rename or move (a new video id), or the same object with a new
        fingerprint (a touch). Returns the new sidecar record.

        Frames, thumbnails and the strip are copied to the new id's keys; the frame manifests and
        every model's outputs of them are rewritten with the new ids, URIs and fingerprint, so a
        later rebuild from the work area finds them. The new sidecar is written last (the commit
        mark), then what is left of the old version is deleted: a run killed half way re-keys again.
        Raises ValueError when the old artefacts do not describe `old` (the caller embeds afresh).
        """
        store, layout = self.store, self.layout
        old_vid, new_vid = old.video_id, self.video_id(info.key)
        if old.error is not None or not old.scenes:
            raise ValueError(f"video {old.uri} has no preprocessed scenes to carry over")
        old_parts = set(self._manifest_keys(old_vid, old.fingerprint))
        if not old_parts:
            raise ValueError(f"video {old.uri} has no frame manifests to carry over")
        written: set[str] = set()

        def carry(old_key: str, new_key: str) -> str:
            if old_key != new_key:
                store.put(new_key, store.get(old_key), "image/jpeg")
            written.add(new_key)
            return store.uri(new_key)

        scenes = []
        for span in old.scenes:
            for t in span.frames:
                carry(layout.frame(old_vid, span.scene, t), layout.frame(new_vid, span.scene, t))
            thumbnail = (
                carry(layout.thumb(old_vid, span.scene), layout.thumb(new_vid, span.scene))
                if span.thumbnail
                else None
            )
            scenes.append(span.model_copy(update={"thumbnail": thumbnail}))
        strip = carry(layout.strip(old_vid), layout.strip(new_vid)) if old.strip else None

        def rekey(record: ManifestRecord) -> dict[str, object]:
            if record.scene is None or record.t is None:
                raise ValueError(f"frame record {record.id} of {old.uri} has no scene or time")
            uri = store.uri(layout.frame(new_vid, record.scene, record.t))
            return {"id": stable_id(uri), "uri": uri, "video_id": new_vid, "fingerprint": info.fingerprint}

        outputs = [o.key for o in store.list(layout.outputs_root) if layout.is_output(o.key)]
        stale: set[str] = set(old_parts)
        for part in range(len(old_parts)):
            old_key = layout.frame_manifest(old_vid, old.fingerprint, part)
            if old_key not in old_parts:
                raise ValueError(f"the frame manifests of {old.uri} are incomplete (no part {part})")
            new_key = layout.frame_manifest(new_vid, info.fingerprint, part)
            records = [ManifestRecord.model_validate_json(line) for line in store.get(old_key).splitlines()]
            body = dumps_manifest([r.model_copy(update=rekey(r)) for r in records])
            store.put(new_key, body, MANIFEST_CONTENT_TYPE)
            written.add(new_key)
            for out_key in outputs:
                tag = out_key[len(layout.outputs_root) :].split("/", 1)[0]
                if layout.output(old_key, tag) != out_key:
                    continue
                results = parse_output_lines(store.get(out_key))
                new_out = layout.output(new_key, tag)
                store.put(new_out, dumps_results([r.model_copy(update=rekey(r)) for r in results]))
                written.add(new_out)
                stale.add(out_key)

        record = old.model_copy(
            update={
                "video_id": new_vid,
                "uri": store.uri(info.key),
                "fingerprint": info.fingerprint,
                "content_hash": content_hash or old.content_hash,
                "scenes": scenes,
                "strip": strip,
            }
        )
        store.put(layout.sidecar(new_vid), record.model_dump_json(indent=1).encode(), "application/json")
        written.add(layout.sidecar(new_vid))
        if old_vid != new_vid:
            self.delete_video(old_vid)
        for key in stale - written:
            store.delete(key)
        return record

    def sweep_videos(self, current: set[str]) -> list[str]:
        """Delete the artefacts of every video in the work area whose id is not in `current` (the
        videos the source holds now): deleted videos, and what killed runs left. Returns their ids.

        A video whose object exists again (put back after the listing `current` came from) is left
        for the next run to take up.
        """
        keys = (o.key for o in self.store.list(self.layout.prefix))
        gone = sorted({vid for key in keys if (vid := self.layout.video_of(key)) and vid not in current})
        swept = []
        for vid in gone:
            record = self.read_sidecar(vid)
            key = self.store.key_of(record.uri) if record is not None else None
            if key is not None and self.store.exists(key):
                continue
            self.delete_video(vid)
            swept.append(vid)
        return swept
