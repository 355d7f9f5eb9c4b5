"""The index-time pipeline, as steps: plan -> sync -> preprocess videos -> write manifests -> transform -> load.

A `Pipeline` is one run over one source (a store, a key prefix inside it, and its work area). Each
step can run alone, as the stage commands do (`mediasearch preprocess | transform | load`,
`mediasearch aws load`), and `ingest` chains them (`mediasearch ingest`, `mediasearch aws transform`,
the jobs in `jobs/`). Every step records what it did in the run's one `PipelineReport`, and
`summarize` turns that into the lines both CLIs print, so a local run and an AWS run report alike.

The transform step runs the `Transformer` it is handed: the in-process `TransformRunner`, or SageMaker
batch transform (`mediasearch.aws.batch.SageMakerTransform`). Both write one output per manifest under
the work area's `outputs/<model tag>/`, which the load step reads with the one `Loader` (built by
`mediasearch.backends.loader`, text embedder and tag options included, wherever the run happens).

Sync: `ingest` makes the index mirror the source. `plan` lists the source and the index's images and
videos under the source's URI prefix (documents of other sources are never looked at) and asks
`mediasearch.indexing.sync.plan_sync` what differs. `sync` then applies what needs no embedding: a
touched object (new fingerprint, same bytes) gets its fingerprint rewritten; a moved or renamed one
(a new URI whose bytes equal those of an indexed object that is gone) has its documents re-keyed,
vectors reused, and a video's frames, thumbnails, strip, sidecar and manifests re-keyed in the work
area; a removed one is deleted with its scenes and every artefact. New and changed objects go on to
be embedded. With `delete=False` (append-only) nothing gone is removed, so nothing can move either.
Content hashes (`ObjectStore.content_hash`) are read only for the objects the planner asks about and
for the objects embedded, whose documents record them.

Work-area hygiene (delete mode): artefacts of videos that are gone are deleted; an image manifest
none of whose lines is current any more is deleted (a manifest is named by its content and may be
shared by many images: one with any current line is kept, and the loader refuses its stale lines);
outputs whose manifest is gone are swept. What an interrupted run leaves is found by the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from mediasearch.core import failpoints
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import (
    DocKind,
    IndexDocument,
    ManifestRecord,
    TransformResult,
    VideoRecord,
    stable_id,
)
from mediasearch.core.storage import ObjectInfo, ObjectStore, StoreError
from mediasearch.index.base import IndexFilter, VectorIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.loader import Loader, LoadReport, VideoVectoriser
from mediasearch.indexing.manifests import image_records, list_media, stale_image_manifests, write_manifests
from mediasearch.indexing.preprocess import PreprocessJob, PreprocessSummary
from mediasearch.indexing.sync import IndexedObject, Move, SourceObject, SyncPlan, plan_sync
from mediasearch.indexing.transform import TransformReport, TransformRunner
from mediasearch.indexing.video import VideoOptions
from mediasearch.indexing.video_documents import TagOptions, scene_id
from mediasearch.query.search import TextVectoriser

# Failures listed under a summary; the count says how many more there were.
SHOWN_FAILURES = 20
# Documents read (with vectors) and written per request when re-keying or touching.
SYNC_BATCH = 500
# Content hashes read at once (local files are read whole; S3 may need a HEAD or a download).
HASH_THREADS = 8


class Step(StrEnum):
    PLAN = "plan"
    SYNC = "sync"
    PREPROCESS = "preprocess"
    MANIFESTS = "manifests"
    TRANSFORM = "transform"
    LOAD = "load"


class Transformer(Protocol):
    """Embeds manifests: writes each one's output where the work layout puts it for the model."""

    def run(self, manifest_keys: Sequence[str] | None = None) -> TransformReport:
        """Run the manifests given (None: every manifest of the work area) that lack an output for this
        model. `outputs` lists the outputs of all of them, the ones that already existed included."""
        ...


@dataclass
class Plan:
    """What a source holds, what the index holds of it, and what must be embedded."""

    images: list[ManifestRecord] = field(default_factory=list)
    videos: list[ObjectInfo] = field(default_factory=list)
    pending_images: list[ManifestRecord] = field(default_factory=list)
    pending_videos: list[ObjectInfo] = field(default_factory=list)
    # None when the run has no index to compare with: then everything is pending and nothing synced.
    sync: SyncPlan | None = None
    scope: str = ""  # the URI prefix of this source's documents
    indexed: dict[str, IndexedObject] = field(default_factory=dict)  # this source's documents, by id
    objects: dict[str, ObjectInfo] = field(default_factory=dict)  # every image and video, by key
    ids: dict[str, str] = field(default_factory=dict)  # key -> document id
    listed: dict[str, str] = field(default_factory=dict)  # URI -> fingerprint of every object listed
    content_hashes: dict[str, str] = field(default_factory=dict)  # by key, those that were read
    delete: bool = True

    @property
    def scanned(self) -> int:
        return len(self.images) + len(self.videos)

    @property
    def unchanged(self) -> int:
        if self.sync is None:
            return self.scanned - len(self.pending_images) - len(self.pending_videos)
        return len(self.sync.unchanged)


@dataclass
class SyncReport:
    """What `sync` changed without embedding, and what it left to be embedded after all."""

    touched: list[str] = field(default_factory=list)  # ids
    moved: list[Move] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # ids of the images and videos removed
    # Moves and touches that could not be carried over (their old artefacts or documents were not
    # there to reuse): embedded instead, as an added or an updated object.
    embed_instead: list[SourceObject] = field(default_factory=list)
    swept_videos: int = 0  # videos whose work-area artefacts were deleted
    stale_manifests: int = 0  # image manifests deleted: none of their lines was current
    stale_outputs: int = 0


@dataclass
class PipelineReport:
    """What a run did, step by step; `steps` says which steps ran, `summarize` says it in words."""

    steps: list[Step] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    sync: SyncReport = field(default_factory=SyncReport)
    videos: PreprocessSummary = field(default_factory=PreprocessSummary)
    # The videos that could not be preprocessed, named by URI like every other failure.
    video_failures: list[TransformResult] = field(default_factory=list)
    # Videos to embed that no preprocess has cut yet (a run that does not preprocess: aws transform).
    waiting_videos: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    transform: TransformReport = field(default_factory=TransformReport)
    load: LoadReport = field(default_factory=LoadReport)
    dropped: list[str] = field(default_factory=list)  # ids of changed objects that failed: unindexed
    documents: int | None = None  # the index's document count at the end of an ingest

    @property
    def scanned(self) -> int:
        return self.plan.scanned

    @property
    def unchanged(self) -> int:
        return self.plan.unchanged

    @property
    def failures(self) -> list[TransformResult]:
        # The loader reads every output it is given, older ones included, so after a load its failures
        # are complete; a video that could not be decoded never reached a manifest, so it is added.
        if Step.LOAD in self.steps:
            return self.video_failures + self.load.failures
        if Step.TRANSFORM in self.steps:
            return self.video_failures + self.transform.failures
        return list(self.video_failures)

    def _succeeded(self, ids: Iterable[str]) -> int:
        failed = {f.id for f in self.failures}
        return sum(1 for id_ in ids if id_ not in failed)

    @property
    def added(self) -> int:
        """New objects embedded (failures not counted); without an index, every object embedded."""
        sync = self.plan.sync
        if sync is None:
            videos = [self.plan.ids[v.key] for v in self.plan.pending_videos]
            return self._succeeded([*(r.id for r in self.plan.pending_images), *videos])
        instead = [o.id for o in self.sync.embed_instead if o.id not in self.plan.indexed]
        return self._succeeded([*(o.id for o in sync.added), *instead])

    @property
    def updated(self) -> int:
        """Changed objects embedded again (failures not counted)."""
        sync = self.plan.sync
        if sync is None:
            return 0
        instead = [o.id for o in self.sync.embed_instead if o.id in self.plan.indexed]
        return self._succeeded([*(o.id for o in sync.updated), *instead])


class Pipeline:
    """The steps of one run over `store`'s work area `layout`; see the module docstring.

    `index` is what `plan` compares the source with and `sync` changes (None: everything is pending
    and nothing is synced); `loader` is what `load` writes with (None: this run cannot load).
    `prefix`: the folder of the store this run covers ("" for all of it).
    """

    def __init__(
        self,
        store: ObjectStore,
        layout: WorkLayout,
        index: VectorIndex | None = None,
        loader: Loader | None = None,
        *,
        prefix: str = "",
        manifest_lines: int = 1000,
        video_options: VideoOptions | None = None,
        video_workers: int = 1,
        progress: bool = True,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.index = index if index is not None else (loader.index if loader is not None else None)
        self.loader = loader
        self.prefix = prefix
        self.manifest_lines = manifest_lines
        self.video_options = video_options
        self.video_workers = video_workers
        self.progress = progress
        # Where a step says what it is about to do (a SageMaker job can run for hours).
        self.notify = notify or (lambda message: None)
        self.report = PipelineReport()

    def _ran(self, step: Step) -> None:
        if step not in self.report.steps:
            self.report.steps.append(step)

    @property
    def scope(self) -> str:
        """The URI prefix of every object this run covers, and so of every document it may change."""
        folder = self.prefix.strip("/")
        return (self.store.uri(folder) if folder else self.store.root_uri.rstrip("/")) + "/"

    def _job(self, force: bool = False) -> PreprocessJob:
        return PreprocessJob(
            self.store,
            self.prefix,
            self.layout,
            self.video_options,
            workers=self.video_workers,
            manifest_lines=self.manifest_lines,
            force=force,
            progress=self.progress,
        )

    # -- the steps ----------------------------------------------------------------------------------

    def plan(self, incremental: bool = True, delete: bool = True, model: str | None = None) -> Plan:
        """List the source and plan what makes the index mirror it (see the module docstring).

        Not `incremental`: every object is embedded again (gone ones are still removed). `model`: the
        identity of the model this run embeds with; a document another model embedded is embedded
        again. `delete=False`: append-only, nothing gone is removed.
        """
        folder = self.prefix.strip("/")
        listing = list_media(self.store, f"{folder}/" if folder else "", self.layout)
        objects = [self._source_object(o, DocKind.IMAGE) for o in listing.images]
        objects += [self._source_object(o, DocKind.VIDEO) for o in listing.videos]
        plan = Plan(videos=listing.videos, scope=self.scope, delete=delete)
        plan.objects = infos = {o.key: o for o in [*listing.images, *listing.videos]}
        plan.listed = {o.uri: o.fingerprint for o in objects}
        plan.ids = {o.key: o.id for o in objects}

        def content_hash(obj: SourceObject) -> str | None:
            if obj.key not in plan.content_hashes:
                try:
                    plan.content_hashes[obj.key] = self.store.content_hash(obj.key, infos[obj.key])
                except StoreError:
                    return None  # gone or unreadable since the listing: it is simply embedded
            return plan.content_hashes[obj.key]

        if self.index is None:
            to_embed = objects
        else:
            scope = IndexFilter(kinds=(DocKind.IMAGE, DocKind.VIDEO), uri_prefix=plan.scope)
            for doc in self.index.scan(scope):
                blank = not incremental or (model is not None and doc.model != model)
                plan.indexed[doc.id] = IndexedObject(
                    id=doc.id,
                    uri=doc.uri,
                    kind=doc.kind,
                    # Nothing to keep from a document embedded by another model (or when everything
                    # is redone): it then matches nothing, so it is embedded again or removed.
                    fingerprint=None if blank else doc.fingerprint,
                    content_hash=None if blank else doc.content_hash,
                )
            plan.sync = plan_sync(objects, list(plan.indexed.values()), content_hash, delete=delete)
            to_embed = plan.sync.to_embed
        # Every image embedded records its content hash, so that a later move of it is recognised;
        # a video's is recorded by the preprocess job, which reads the video anyway.
        images = [o for o in to_embed if o.kind is DocKind.IMAGE]
        self._hash(images, content_hash)
        plan.images = image_records(self.store, listing.images, plan.content_hashes)
        plan.pending_images = image_records(self.store, [infos[o.key] for o in images], plan.content_hashes)
        plan.pending_videos = [infos[o.key] for o in to_embed if o.kind is DocKind.VIDEO]
        self.report.plan = plan
        self._ran(Step.PLAN)
        what = f"{len(listing.images)} images, {len(plan.pending_images)} to embed"
        what += f"; {len(listing.videos)} videos, {len(plan.pending_videos)} to preprocess"
        if plan.sync is not None:
            s = plan.sync
            what += f"; {len(s.moved)} moved, {len(s.touched)} touched, {len(s.removed)} to remove"
        self.notify(what)
        return plan

    def _source_object(self, info: ObjectInfo, kind: DocKind) -> SourceObject:
        uri = self.store.uri(info.key)
        return SourceObject(key=info.key, uri=uri, id=stable_id(uri), kind=kind, fingerprint=info.fingerprint)

    @staticmethod
    def _hash(objects: Sequence[SourceObject], content_hash: Callable[[SourceObject], str | None]) -> None:
        if len(objects) < 2:
            for obj in objects:
                content_hash(obj)
            return
        with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="content-hash") as pool:
            list(pool.map(content_hash, objects))

    def sync(self, plan: Plan) -> SyncReport:
        """Apply what `plan` says about objects the index holds: touch, move and remove documents (and
        their work-area artefacts) without embedding anything; then clean the work area.

        A move or touch that cannot reuse what it needs becomes work to embed: it is added to the
        plan's pending images or videos and listed in `embed_instead`.
        """
        if self.index is None or plan.sync is None:
            raise ValueError("this pipeline has no index to sync")
        report = self.report.sync
        job = self._job()
        infos = plan.objects
        instead: list[SourceObject] = []

        touched = [(o, h) for o, h in plan.sync.touched if o.kind is DocKind.IMAGE]
        report.touched += self._touch_images(touched)
        for obj, digest in plan.sync.touched:
            if obj.kind is DocKind.VIDEO:
                if self._touch_video(job, plan.indexed[obj.id], infos[obj.key], digest):
                    report.touched.append(obj.id)
                else:
                    instead.append(obj)

        moved_images = [m for m in plan.sync.moved if m.new.kind is DocKind.IMAGE]
        done = self._move_images(moved_images)
        instead += [m.new for m in moved_images if m not in done]
        for move in plan.sync.moved:
            if move.new.kind is DocKind.VIDEO:
                if self._move_video(job, move, infos[move.new.key]):
                    done.append(move)
                else:
                    instead.append(move.new)
        report.moved += done
        # A move not carried over leaves its old document behind: it is removed like any gone object.
        unmoved = [m.old for m in plan.sync.moved if m not in done]
        report.removed += self._remove([*plan.sync.removed, *unmoved])

        if instead:
            report.embed_instead += instead
            images = self._infos(plan, instead, DocKind.IMAGE)
            plan.pending_images += image_records(self.store, images, plan.content_hashes)
            plan.pending_videos += self._infos(plan, instead, DocKind.VIDEO)
        if plan.delete:
            current = {stable_id(self.store.uri(v.key)) for v in plan.videos}
            report.swept_videos += len(job.sweep_videos(current))
            stale = stale_image_manifests(self.store, self.layout, plan.scope, plan.listed)
            for key in stale:
                self.store.delete(key)
            report.stale_manifests += len(stale)
        report.stale_outputs += job.sweep_outputs()
        self._ran(Step.SYNC)
        if report.touched or report.moved or report.removed or instead:
            self.notify(
                f"touched {len(report.touched)}, moved {len(report.moved)}, removed {len(report.removed)}"
                + (f"; {len(instead)} to embed instead of moving" if instead else "")
            )
        return report

    @staticmethod
    def _infos(plan: Plan, objects: Sequence[SourceObject], kind: DocKind) -> list[ObjectInfo]:
        return [plan.objects[o.key] for o in objects if o.kind is kind]

    def _touch_images(self, touched: Sequence[tuple[SourceObject, str]]) -> list[str]:
        assert self.index is not None
        done: list[str] = []
        for start in range(0, len(touched), SYNC_BATCH):
            chunk = {o.id: (o, digest) for o, digest in touched[start : start + SYNC_BATCH]}
            docs = self.index.get_many_with_vectors(chunk)
            updates = [
                d.model_copy(
                    update={"fingerprint": chunk[d.id][0].fingerprint, "content_hash": chunk[d.id][1]}
                )
                for d in docs
            ]
            self.index.upsert(updates)
            done += [d.id for d in updates]
        return done

    def _move_images(self, moves: Sequence[Move]) -> list[Move]:
        assert self.index is not None
        done: list[Move] = []
        for start in range(0, len(moves), SYNC_BATCH):
            chunk = {m.old.id: m for m in moves[start : start + SYNC_BATCH]}
            docs = self.index.get_many_with_vectors(chunk)
            renamed = []
            for doc in docs:
                new = chunk[doc.id].new
                update = {"id": new.id, "uri": new.uri, "thumbnail": new.uri, "fingerprint": new.fingerprint}
                renamed.append(doc.model_copy(update={**update, "content_hash": chunk[doc.id].content_hash}))
            # The new document first: a run killed in between leaves the old one, which the next run
            # finds gone from the source and removes.
            self.index.upsert(renamed)
            self.index.delete([d.id for d in docs])
            done += [chunk[d.id] for d in docs]
        return done

    def _scenes(self, video_id: str) -> list[IndexDocument]:
        assert self.index is not None
        ids = [d.id for d in self.index.scan(IndexFilter(kinds=(DocKind.SCENE,), video_id=video_id), ("id",))]
        return self.index.get_many_with_vectors(ids)

    def _sidecar(self, job: PreprocessJob, old: IndexedObject) -> VideoRecord | None:
        """The old video's sidecar, when it describes what the index holds (else nothing is reused)."""
        record = job.read_sidecar(old.id)
        if record is None or record.error is not None or record.fingerprint != old.fingerprint:
            return None
        return record

    def _touch_video(self, job: PreprocessJob, old: IndexedObject, info: ObjectInfo, digest: str) -> bool:
        assert self.index is not None
        record = self._sidecar(job, old)
        video = self.index.get_with_vectors(old.id)
        if record is None or video is None:
            return False
        try:
            job.move_video(record, info, digest)
        except (StoreError, ValueError):
            return False
        update = {"fingerprint": info.fingerprint}
        docs = [s.model_copy(update=update) for s in self._scenes(old.id)]
        self.index.upsert([*docs, video.model_copy(update={**update, "content_hash": digest})])
        return True

    def _move_video(self, job: PreprocessJob, move: Move, info: ObjectInfo) -> bool:
        assert self.index is not None
        old_record = self._sidecar(job, move.old)
        video = self.index.get_with_vectors(move.old.id)
        if old_record is None or video is None:
            return False
        try:
            record = job.move_video(old_record, info, move.content_hash)
        except (StoreError, ValueError):
            return False
        new_id, uri = record.video_id, record.uri
        thumbs = {o.thumbnail: n.thumbnail for o, n in zip(old_record.scenes, record.scenes, strict=True)}
        common = {"uri": uri, "video_id": new_id, "fingerprint": info.fingerprint}
        old_scenes = self._scenes(move.old.id)
        scenes = [
            s.model_copy(
                update={**common, "id": scene_id(uri, s.scene or 0), "thumbnail": thumbs.get(s.thumbnail)}
            )
            for s in old_scenes
        ]
        renamed = video.model_copy(
            update={
                **common,
                "id": new_id,
                "thumbnail": thumbs.get(video.thumbnail),
                "strip": record.strip,
                "content_hash": move.content_hash,
            }
        )
        # New documents first, then the old ones, then the old artefacts: an indexed document's
        # thumbnails exist at every moment, and a run killed half way is finished by the next one.
        self.index.upsert([*scenes, renamed])
        failpoints.reach("mid-move")
        self.index.delete([move.old.id, *(s.id for s in old_scenes)])
        job.delete_video(move.old.id)
        return True

    def _remove(self, gone: Sequence[IndexedObject]) -> list[str]:
        """Delete the documents of objects gone from the source (a video with its scenes); their
        artefacts go in the work-area sweep that follows, after the documents that show them."""
        assert self.index is not None
        if not gone:
            return []
        self.index.delete([d.id for d in gone])
        for d in gone:
            if d.kind is DocKind.VIDEO:
                self.index.delete_where(IndexFilter(kinds=(DocKind.SCENE,), video_id=d.id))
        return [d.id for d in gone]

    def write_manifests(self, records: Sequence[ManifestRecord]) -> list[str]:
        """Image manifests for `records` in the work area (named by content: rewriting one is a no-op)."""
        keys = write_manifests(self.store, self.layout, records, "images", self.manifest_lines)
        self.report.manifests += keys
        self._ran(Step.MANIFESTS)
        return keys

    def preprocess(
        self, videos: Sequence[ObjectInfo] | None = None, force: bool = False
    ) -> PreprocessSummary:
        """Cut `videos` (default: every video of the source) into scenes and write their frame manifests."""
        summary = self._job(force).run(videos)
        self.report.videos = summary
        self.report.video_failures = [
            TransformResult(id=stable_id(self.store.uri(key)), uri=self.store.uri(key), error=message)
            for key, message in sorted(summary.errors.items())
        ]
        self.report.manifests += summary.manifests
        self._ran(Step.PREPROCESS)
        failpoints.reach("after-preprocess")
        return summary

    def preprocessed(self, videos: Sequence[ObjectInfo]) -> list[str]:
        """The frame manifests of `videos` that a preprocess job already cut at their current
        fingerprint, added to this run's manifests (for a run that does not preprocess itself).
        The others are listed in `waiting_videos`."""
        job = self._job()
        found: list[str] = []
        for info in videos:
            record = job.read_sidecar(job.video_id(info.key))
            manifests = job.frame_manifests(record.video_id, info.fingerprint) if record is not None else []
            if (
                record is None
                or record.error is not None
                or record.fingerprint != info.fingerprint
                or not manifests
            ):
                self.report.waiting_videos.append(self.store.uri(info.key))
            found += manifests
        self.report.manifests += found
        return found

    def transform(self, transformer: Transformer, manifests: Sequence[str] | None = None) -> TransformReport:
        """Embed `manifests` (default: every manifest of the work area) with `transformer`."""
        report = transformer.run(manifests)
        self.report.transform = report
        self._ran(Step.TRANSFORM)
        failpoints.reach("after-transform")
        return report

    def load(
        self,
        outputs: Sequence[str] | None = None,
        tag: str | None = None,
        listed: dict[str, str] | None = None,
    ) -> LoadReport:
        """Load `outputs` into the index; default: every output the model `tag` wrote in the work area.

        `listed`: the source as this run listed it (URI -> fingerprint), which saves the loader a
        listing of its own when it checks that each result is of an object the source still holds.
        """
        if self.loader is None:
            raise ValueError("this pipeline was built without a loader")
        if outputs is None:
            if tag is None:
                raise ValueError("give the outputs to load, or the tag of the model whose outputs to load")
            outputs = self.loader.output_keys(tag)
        report = self.loader.load(outputs, listed)
        self.report.load = report
        self._ran(Step.LOAD)
        failpoints.reach("after-load")
        return report

    def _drop_failed(self, plan: Plan) -> None:
        """Unindex changed objects whose new version failed: their documents describe bytes the source
        no longer holds (and a video's old thumbnails are gone with its old artefacts)."""
        if self.index is None or plan.sync is None:
            return
        failed = {f.id for f in self.report.failures}
        changed = [*plan.sync.updated, *(o for o in self.report.sync.embed_instead if o.id in plan.indexed)]
        stale = [plan.indexed[o.id] for o in changed if o.id in failed and o.id in plan.indexed]
        self.report.dropped += self._remove(stale)

    # -- the steps chained ---------------------------------------------------------------------------

    def ingest(
        self,
        transformer: Transformer,
        *,
        videos: bool = True,
        incremental: bool = True,
        delete: bool = True,
        load: bool = True,
        model: str | None = None,
    ) -> PipelineReport:
        """plan -> sync -> manifests for new or changed images -> preprocess new or changed videos ->
        transform this run's manifests -> load what was transformed.

        `videos=False`: videos are not preprocessed here; those a preprocess job already cut join the
        transform, the others wait (`aws transform`). `load=False`: the index is only read (nothing
        is synced or loaded). `model`: the identity of the model the transformer embeds with
        (default: its `model_id`, where it has one); see `plan`.
        """
        model = model or getattr(transformer, "model_id", None)
        plan = self.plan(incremental=incremental, delete=delete, model=model)
        if load and plan.sync is not None:
            self.sync(plan)
        if plan.pending_images:
            self.write_manifests(plan.pending_images)
        if plan.pending_videos:
            if videos:
                self.preprocess(plan.pending_videos)
            else:
                self.preprocessed(plan.pending_videos)
        if self.report.manifests:
            transformed = self.transform(transformer, self.report.manifests)
            if load:
                self.load(transformed.outputs, listed=plan.listed)
        if load:
            self._drop_failed(plan)
        if self.index is not None and (load or Step.LOAD in self.report.steps):
            self.report.documents = self.index.count()
        return self.report


def ingest(
    store: ObjectStore,
    index: VectorIndex,
    handler: ClipHandler,
    prefix: str = "",
    layout: WorkLayout | None = None,
    batch_size: int = 32,
    manifest_lines: int = 1000,
    video_options: VideoOptions | None = None,
    video_workers: int = 1,
    progress: bool = True,
    text_embedder: TextVectoriser | None = None,
    tags: TagOptions = TagOptions(),
    delete: bool = True,
    video_encoder: VideoVectoriser | None = None,
) -> PipelineReport:
    """`Pipeline.ingest` in-process, from the parts (what tests and benchmarks call; the CLI builds
    the same parts from settings with `mediasearch.backends.pipeline`)."""
    layout = layout or WorkLayout.for_source(prefix)
    loader = Loader(
        store,
        index,
        layout,
        progress=progress,
        text_embedder=text_embedder,
        tags=tags,
        video_encoder=video_encoder,
    )
    pipeline = Pipeline(
        store,
        layout,
        index,
        loader,
        prefix=prefix,
        manifest_lines=manifest_lines,
        video_options=video_options,
        video_workers=video_workers,
        progress=progress,
    )
    runner = TransformRunner(store, handler, layout, batch_size=batch_size, progress=progress)
    return pipeline.ingest(runner, delete=delete)


# -- what the CLIs print ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A run in words: one line of what was done, then what failed (the command then exits 1)."""

    line: str
    failures: list[TransformResult]
    total: int  # what the failures are counted out of
    what: str  # ... and what those are: items, records, videos

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def failure_lines(self, shown: int = SHOWN_FAILURES) -> list[str]:
        if not self.failures:
            return []
        lines = [f"{len(self.failures)} of {self.total} {self.what} failed:"]
        lines += [f"  {f.uri}: {f.error}" for f in self.failures[:shown]]
        if len(self.failures) > shown:
            lines.append(f"  ... and {len(self.failures) - shown} more")
        return lines


def summarize(report: PipelineReport) -> Summary:
    """The summary of a run: an ingest's (it planned), or that of the one stage that ran."""
    failures = report.failures
    if Step.PLAN in report.steps:
        sync, plan = report.sync, report.plan
        kept = f", kept {len(plan.sync.kept)} gone (append-only)" if plan.sync and plan.sync.kept else ""
        # The first part reads as it always has (scripts and docs quote it); what the sync did follows.
        line = (
            f"scanned {report.scanned}, unchanged {report.unchanged}, embedded {report.transform.records}, "
            f"indexed {report.load.indexed} ({report.load.videos} videos), failed {len(failures)}; "
            f"added {report.added}, updated {report.updated}, moved {len(sync.moved)}, "
            f"touched {len(sync.touched)}, removed {len(sync.removed)}{kept}"
        )
        if report.waiting_videos:
            line += f"; {len(report.waiting_videos)} videos wait for preprocessing (jobs/preprocess.py)"
        if report.documents is not None:
            line += f"; index holds {report.documents} documents"
        return Summary(line, failures, report.scanned, "items")
    if Step.LOAD in report.steps:
        loaded = report.load
        line = f"{loaded.outputs} output file(s), {loaded.indexed} documents indexed, {loaded.failed} error records"
        stale = loaded.stale_images + loaded.stale_frames
        if stale:
            line += f", {stale} records of objects gone or changed since left out"
        return Summary(line, failures, loaded.indexed + loaded.failed, "records")
    if Step.TRANSFORM in report.steps:
        t = report.transform
        line = f"{t.manifests} manifest(s) run, {t.skipped_manifests} already done, {t.records} records, {t.failed} failed"
        return Summary(line, failures, t.records, "records")
    if Step.PREPROCESS in report.steps:
        v = report.videos
        line = (
            f"{v.processed} processed, {v.skipped} unchanged, {v.failed} failed; "
            f"{v.seconds_of_video:.1f} s of video at {v.realtime_factor:.1f}x realtime; "
            f"{len(v.manifests)} frame manifest(s)"
        )
        return Summary(line, failures, v.processed + v.failed, "videos")
    return Summary("nothing was done", failures, 0, "items")
