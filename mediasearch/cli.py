"""`mediasearch` command line: thin commands over the library, with progress bars and summaries.

Start-up is part of the interface (`mediasearch --help` within 0.5 s, bench/bench_cli.py): this module
imports only typer and the enums its options list; each command imports what it runs (the backends,
the settings, the model stack), and the `aws` group is imported only when it runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from typer.core import TyperGroup

from mediasearch.cli_parts import DEFAULT_MINUS_WEIGHT
from mediasearch.cli_support import (
    MEDIA_SUFFIXES,
    ReportingGroup,
    error,
    folder,
    require_index,
    source_store,
    source_uri,
)
from mediasearch.core.choices import Aggregation, CutoffMode, ResultKind, SearchMode, VideoEncoder

if TYPE_CHECKING:
    from collections.abc import Callable

    # typer carries its own click (typer._click): its groups take and return that one's types.
    from typer._click import Command, Context

    from mediasearch.core.records import SearchResponse
    from mediasearch.core.settings import Settings
    from mediasearch.index.base import VectorIndex
    from mediasearch.index.collection import Collection
    from mediasearch.indexing.pipeline import Summary
    from mediasearch.query.search import SearchService

# Sub-apps imported when they run: name -> (module, attribute, the help line --help lists).
LAZY_GROUPS = {
    "aws": (
        "mediasearch.aws.cli",
        "aws_app",
        "Deploy to AWS and run the batch pipeline on SageMaker (see docs/deploy.md).",
    ),
    "train": (
        "mediasearch.training.cli",
        "train_app",
        "Train the project's own encoders (the self-supervised video encoder; CLIP fine-tuning).",
    ),
}


class _Commands(ReportingGroup):
    """The top-level group; `aws` (boto3, SageMaker, CloudFormation plumbing) loads only when invoked."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_GROUPS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in LAZY_GROUPS:
            # Listing (--help) needs the name and help line only; running goes through resolve_command.
            return TyperGroup(name=cmd_name, help=LAZY_GROUPS[cmd_name][2])
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] in LAZY_GROUPS:
            return args[0], lazy_group(args[0]), args[1:]
        return super().resolve_command(ctx, args)


def lazy_group(name: str) -> Command:
    """The real click command of a lazily imported sub-app."""
    import importlib

    module, attribute, _ = LAZY_GROUPS[name]
    # get_group, not get_command: a sub-app gets no --install-completion options of its own.
    command = typer.main.get_group(getattr(importlib.import_module(module), attribute))
    command.name = name
    return command


T = TypeVar("T")

app = typer.Typer(
    cls=_Commands,
    help="Semantic search over images and videos. Settings come from MEDIASEARCH_* environment variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: flags show as `--json`, not `--json <bool>`.
    rich_markup_mode=None,
)


def _settings() -> Settings:
    from mediasearch.core import failpoints
    from mediasearch.core.settings import get_settings

    settings = get_settings()
    failpoints.arm(settings.failpoint)
    from mediasearch.core.logs import StderrHandler

    logging.basicConfig(
        level=settings.log_level or "WARNING",
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[StderrHandler()],
    )
    if not settings.log_level:
        # The hub client warns about every retry and offline miss, and a failed load is reported once,
        # in words, by the command (mediasearch.cli_support.model_paragraph).
        for name in ("huggingface_hub", "transformers"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return settings


def echo_summary(summary: Summary) -> None:
    """Print a pipeline run's summary; when anything failed, list it and exit 1 so scripts and CI notice.

    The `aws` commands print theirs with this too.
    """
    typer.echo(summary.line)
    lines = summary.failure_lines()
    if not lines:
        return
    typer.secho(lines[0], fg="red", err=True)
    for line in lines[1:]:
        typer.echo(line, err=True)
    raise typer.Exit(1)


def _service(settings: Settings) -> SearchService:
    from mediasearch import backends

    return backends.search_service(settings)


@app.command("demo-data")
def demo_data(
    dest: Annotated[str, typer.Option(help="store location (folder or s3://bucket/prefix)")] = "",
    limit: Annotated[int | None, typer.Option(help="number of images (default: all 360)")] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed writes the same corpus")] = 0,
    videos: Annotated[bool, typer.Option(help="also write the synthetic videos")] = True,
) -> None:
    """Generate the synthetic labelled sample corpus (images, videos with known scenes, labels) into the store."""
    from mediasearch.core.storage import open_store
    from mediasearch.corpus.images import generate_images
    from mediasearch.corpus.videos import ensure_corpus

    settings = _settings()
    store = open_store(dest or settings.store)
    labels = generate_images(store, "demo/images", seed=seed, limit=limit)
    typer.echo(f"{len(labels)} images with labels under {store.uri('demo/images')}")
    if videos:
        truths = ensure_corpus(store, "demo/videos")
        typer.echo(f"{len(truths)} videos with scene labels under {store.uri('demo/videos')}")


@app.command()
def ingest(
    source: Annotated[
        str, typer.Argument(help="folder, single image or video file, or s3://bucket/prefix to index")
    ],
    batch_size: Annotated[int | None, typer.Option(help="images per forward pass")] = None,
    captions: Annotated[
        bool | None,
        typer.Option("--captions/--no-captions", help="caption images and frames (default: settings)"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait for another ingest into the collection instead of stopping")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="try again the items that failed before and have not changed"),
    ] = False,
    no_delete: Annotated[
        bool,
        typer.Option("--no-delete", help="append-only: keep in the index what is gone from SOURCE"),
    ] = False,
) -> None:
    """Make the index mirror SOURCE: embed (and caption) new or changed media, load them into the index.

    What is gone from SOURCE is removed (videos with their scenes), unless --no-delete; a renamed or
    moved file keeps its embedding, and one only touched gets its new fingerprint. The summary counts
    what was added, updated, moved, touched, removed, unchanged and failed.

    Items that failed (an image that does not decode) are remembered in the source's work area and
    skipped by later runs until they change, unless --retry-failed.

    One ingest writes a collection at a time. With a model other than the one the index was built
    with, a new generation is built beside the serving one and replaces it when complete.
    """
    _ingest(source, batch_size, captions, wait, fresh=False, retry_failed=retry_failed, delete=not no_delete)


def _ingest(
    source: str,
    batch_size: int | None,
    captions: bool | None,
    wait: bool,
    fresh: bool,
    retry_failed: bool = False,
    delete: bool = True,
) -> None:
    from mediasearch import backends
    from mediasearch.index.locks import LockHeld
    from mediasearch.indexing.failures import KnownFailures
    from mediasearch.indexing.ingest import ingest_collection
    from mediasearch.indexing.pipeline import PipelineReport, summarize

    settings = _settings()
    root = source_uri(source)  # "no such folder" before anything is built
    handler = backends.clip_handler(settings, captions=captions)
    assert handler.model is not None

    known: dict[str, KnownFailures] = {}

    def run(uri: str, index: VectorIndex) -> PipelineReport:
        source_of_uri, single_file = source_store(uri, settings.work_prefix)
        # Known-bad items that have not changed are left out of the run (reindex tries them all).
        known[uri] = KnownFailures(source_of_uri, backends.work_layout(settings))
        store = known[uri].visible_store(retry=retry_failed or fresh)
        pipeline = backends.pipeline(settings, store, index)
        runner = backends.transform_runner(settings, store, captions=captions, batch_size=batch_size)
        # A single file is added as itself: nothing else of its folder is removed.
        report = pipeline.ingest(runner, delete=delete and not single_file)
        known[uri].record(report.failures)
        return report

    def notify(message: str) -> None:
        typer.echo(message, err=True)

    try:
        done = ingest_collection(
            backends.collection(settings),
            backends.index_identity(settings, handler.model.identity),
            root,
            run,
            wait=wait,
            fresh=fresh,
            notify=notify,
        )
    except LockHeld as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    failed_before = known.get(root)
    try:
        echo_summary(summarize(done.report))
    finally:
        if failed_before is not None:
            if failed_before.retried:
                again = len(failed_before.retried)
                typer.echo(
                    f"{again} of these had failed before: tried again (changed, or --retry-failed)", err=True
                )
            for line in failed_before.lines():
                typer.echo(line, err=True)
    if failed_before is not None and failed_before.skipped:
        raise typer.Exit(1)  # the source still holds items the index cannot have
    if done.report.scanned == 0:
        raise error(f"{source} holds no images or videos to ingest ({MEDIA_SUFFIXES})", 1)


@app.command()
def reindex(
    source: Annotated[str, typer.Argument(help="a source to add; every source the index holds is rebuilt")],
    wait: Annotated[
        bool, typer.Option("--wait", help="wait for a running ingest instead of stopping")
    ] = False,
) -> None:
    """Rebuild the collection from scratch in a new generation (every source it holds), then switch to it."""
    _ingest(source, None, None, wait, fresh=True)


generations_app = typer.Typer(help="List, switch and drop the collection's generations (one per model).")
app.add_typer(generations_app, name="generations")


@generations_app.command("list")
def generations_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The collection's generations, the serving one marked with *."""
    from mediasearch import backends

    settings = _settings()
    require_index(settings)
    coll = backends.collection(settings)
    state = coll.catalog.read()
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2))
        return
    if not state.generations:
        raise error(f"collection {coll.name!r} has no generations yet: run mediasearch ingest", 1)
    for g in state.generations:
        mark = "*" if g.name == state.serving else " "
        count = coll.index_of(g).count()
        typer.echo(f"{mark} {g.name}  {count} documents  model {g.model_id}  ({len(g.sources)} source(s))")


@generations_app.command("switch")
def generations_switch(name: Annotated[str, typer.Argument(help="the generation to serve")]) -> None:
    """Serve another generation (e.g. back to the previous model); readers follow within seconds."""
    _generation_op(lambda coll: coll.switch(name), f"generation {name} now serves")


@generations_app.command("drop")
def generations_drop(name: Annotated[str, typer.Argument(help="a generation that is not serving")]) -> None:
    """Delete a generation that is not serving, with its table or index."""
    _generation_op(lambda coll: coll.drop(name), f"generation {name} dropped")


def _locked(write: Callable[[], T]) -> T:
    """Run a write that takes the collection's lock; a busy collection is one line and exit 2."""
    from mediasearch.index.locks import LockHeld

    try:
        return write()
    except LockHeld as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def _generation_op(op: Callable[[Collection], object], done: str) -> None:
    from mediasearch import backends
    from mediasearch.index.base import IndexError_
    from mediasearch.index.locks import LockHeld

    try:
        op(backends.collection(_settings()))
    except (IndexError_, LockHeld) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(done)


@app.command()
def preprocess(
    source: Annotated[str, typer.Argument(help="folder or s3://bucket/prefix holding images and videos")],
    force: Annotated[bool, typer.Option(help="redo videos that are already done")] = False,
) -> None:
    """Write the image manifests, and cut videos into scenes: frames, thumbnails, strips and frame
    manifests (resumable). Everything goes into the source's work area.

    With `transform` and `load` after it, the same index as `ingest` (which also skips what the
    index already holds, and removes what is gone from the source).
    """
    from mediasearch import backends
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.manifests import image_records, list_media
    from mediasearch.indexing.pipeline import summarize

    settings = _settings()
    store = open_store(folder(source))
    pipeline = backends.pipeline(settings, store, indexed=False)
    images = image_records(store, list_media(store, "", pipeline.layout).images)
    manifests = pipeline.write_manifests(images) if images else []
    typer.echo(f"{len(images)} images in {len(manifests)} manifest(s)")
    pipeline.preprocess(force=force)
    echo_summary(summarize(pipeline.report))


@app.command()
def transform(
    location: Annotated[str, typer.Argument(help="the source whose work-area manifests to run")],
    captions: Annotated[
        bool | None,
        typer.Option("--captions/--no-captions", help="caption images and frames too (default: settings)"),
    ] = None,
) -> None:
    """Run the batch transform locally over the work area's manifests, one output per manifest and model (resumable)."""
    from mediasearch import backends
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.pipeline import summarize

    settings = _settings()
    store = open_store(folder(location))
    pipeline = backends.pipeline(settings, store, indexed=False)
    pipeline.transform(backends.transform_runner(settings, store, captions=captions))
    echo_summary(summarize(pipeline.report))


@app.command()
def load(
    location: Annotated[str, typer.Argument(help="the source whose work-area outputs to load")],
    captions: Annotated[
        bool | None,
        typer.Option(
            "--captions/--no-captions", help="load the outputs made with captions (default: settings)"
        ),
    ] = None,
) -> None:
    """Load the configured model's transform outputs into the index (idempotent; frames become scenes and videos)."""
    from mediasearch import backends
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.ingest import ingest_collection
    from mediasearch.indexing.pipeline import PipelineReport, summarize

    settings = _settings()
    handler = backends.clip_handler(settings, captions=captions)
    assert handler.model is not None

    def run(uri: str, index: VectorIndex) -> PipelineReport:
        # Under the collection's writer lock, into the generation of the model that made the outputs.
        pipeline = backends.pipeline(settings, open_store(uri), index)
        pipeline.load(tag=handler.output_tag)
        return pipeline.report

    root = open_store(folder(location)).root_uri
    assert handler.model is not None  # the CLIP handler always has its model
    identity = backends.index_identity(settings, handler.model.identity)
    done = _locked(lambda: ingest_collection(backends.collection(settings), identity, root, run))
    echo_summary(summarize(done.report))


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="what to look for, in words")] = None,
    image: Annotated[Path | None, typer.Option(help="an image file to search with", metavar="FILE")] = None,
    video: Annotated[str | None, typer.Option(help="a video id: find videos like it", metavar="ID")] = None,
    k: Annotated[int, typer.Option(help="how many results (1 to 100)")] = 10,
    kind: Annotated[
        list[ResultKind] | None, typer.Option(help="image or video; repeat for both (default: both)")
    ] = None,
    mode: Annotated[
        SearchMode, typer.Option(help="clip: CLIP vectors; caption: the captions' text; hybrid: both")
    ] = SearchMode.CLIP,
    aggregation: Annotated[
        Aggregation, typer.Option(help="how a video's score is made from its matching scenes' scores")
    ] = Aggregation.MAX,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole response as JSON")] = False,
    taken_after: Annotated[
        str | None,
        typer.Option(
            help="only photos taken at or after this time (EXIF), e.g. 2024-05-01 or 2024-05-01T12:00:00+02:00"
        ),
    ] = None,
    taken_before: Annotated[
        str | None, typer.Option(help="only photos taken before this time (EXIF)")
    ] = None,
    camera: Annotated[
        str | None, typer.Option(help="only photos from this camera (EXIF make and model, exactly as shown)")
    ] = None,
    bbox: Annotated[
        str | None,
        typer.Option(
            help="only photos taken inside MIN_LAT,MIN_LON,MAX_LAT,MAX_LON (decimal degrees, EXIF GPS)"
        ),
    ] = None,
    plus: Annotated[
        list[str] | None, typer.Option(help="also towards this text (weight 1); repeatable", metavar="TEXT")
    ] = None,
    minus: Annotated[
        list[str] | None,
        typer.Option(help="away from this text (weight --minus-weight); repeatable", metavar="TEXT"),
    ] = None,
    minus_weight: Annotated[
        float, typer.Option(help="the weight of each --minus, in [-1, 0)", metavar="W")
    ] = DEFAULT_MINUS_WEIGHT,
    part: Annotated[
        list[str] | None,
        typer.Option(
            help="a part with its weight: KIND:VALUE[:WEIGHT], KIND text, image (a file), image_uri or "
            "video (an id), WEIGHT in [-1, 1] (default 1); repeatable",
            metavar="KIND:VALUE[:W]",
        ),
    ] = None,
    encoder: Annotated[
        VideoEncoder,
        typer.Option(help="with --video: whole-video CLIP vectors, or the trained video encoder's features"),
    ] = VideoEncoder.CLIP,
    min_score: Annotated[
        float | None, typer.Option(help="leave out results scoring below this (-1 to 1)", metavar="SCORE")
    ] = None,
    cutoff: Annotated[
        CutoffMode | None,
        typer.Option(
            help="auto: stop at a clear drop in this query's scores (the output says where and why)"
        ),
    ] = None,
) -> None:
    """Search the index from the command line (no server needed): a text query, --image or --video.

    Compose a query from several parts with --plus, --minus and --part: `search "beach" --minus people`
    searches towards "beach" (weight 1) and away from "people" (weight -0.5); each result's explanation
    shows each part's contribution.

    Each result line shows its rank, score, kind, id (what `similar` and GET /items/{id} take) and URI.
    """
    import base64

    from pydantic import ValidationError

    from mediasearch.core.records import SearchRequest
    from mediasearch.query.search import QueryError

    given = [
        name for name, value in (("TEXT", text), ("--image", image), ("--video", video)) if value is not None
    ]
    composing = bool(plus or minus or part)
    if not given and composing:
        raise error(
            "--minus/--plus/--part need something to search towards: give a text query, --image or --video"
        )
    if not given:
        raise error("give a text query, --image FILE or --video ID (see mediasearch search --help)")
    if len(given) > 1:
        raise error(f"give one query, not {' and '.join(given)}: the text would be ignored otherwise")
    if encoder is not VideoEncoder.CLIP and video is None:
        raise error(f"--encoder {encoder.value} compares videos: give --video ID (or use `similar`)")
    if image is not None and not image.is_file():
        raise error(f"no such file: {image}" if not image.exists() else f"{image} is a folder, not an image")
    settings = _settings()
    payload: dict[str, object] = {"k": k, "mode": mode, "aggregation": aggregation}
    photo_filters = {"taken_after": taken_after, "taken_before": taken_before, "camera": camera}
    filters: dict[str, object] = {name: value for name, value in photo_filters.items() if value is not None}
    if bbox is not None:
        try:
            corners = [float(part) for part in bbox.split(",")]
        except ValueError:
            corners = []
        if len(corners) != 4:
            raise error(f"--bbox: give four numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, not {bbox!r}")
        filters["bbox"] = corners
    if filters:
        payload["filters"] = filters
    if encoder is not VideoEncoder.CLIP:
        payload["encoder"] = encoder
    if min_score is not None:
        payload["min_score"] = min_score
    if cutoff is not None:
        payload["cutoff"] = cutoff
    if kind:
        payload["kinds"] = kind
    if image is not None:
        payload["image"] = base64.b64encode(image.read_bytes()).decode()
    elif video is not None:
        payload["video_id"] = video
        payload.setdefault("kinds", [ResultKind.VIDEO])
    else:
        payload["text"] = text
    if composing:
        from mediasearch.cli_parts import composed_parts

        main_part: dict[str, object] = {
            name: payload.pop(name) for name in ("text", "image", "video_id") if name in payload
        }
        if video is not None and not kind:
            payload.pop("kinds")  # composed with a video, the query finds images and videos
        try:
            payload["parts"] = composed_parts(main_part, plus or [], minus or [], minus_weight, part or [])
        except ValueError as exc:
            raise error(str(exc)) from None
    try:
        request = SearchRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["loc"] and first["loc"][0] == "filters":
            option = str(first["loc"][1]).replace("_", "-") if len(first["loc"]) > 1 else "filters"
            raise error(f"--{option}: {first['msg'].removeprefix('Value error, ')}") from None
        if first["loc"] and first["loc"][0] == "parts" and len(first["loc"]) > 1:
            raise error(f"part {first['loc'][1]}: {first['msg'].removeprefix('Value error, ')}") from None
        name = {
            "text": "TEXT",
            "image": "--image",
            "video_id": "--video",
            "kinds": "--kind",
            "min_score": "--min-score",
        }.get(
            str(first["loc"][0]) if first["loc"] else "", f"--{first['loc'][0]}" if first["loc"] else "query"
        )
        raise error(f"{name}: {first['msg'].removeprefix('Value error, ')}") from None
    require_index(settings)
    service = _service(settings)
    service.health()  # a folder without the collection: one line (IndexNotReady), before any model loads
    if video is None or composing:
        # The model load stays out of took_ms, and is announced (it can take a while); a video query
        # (`similar`) reads stored vectors and loads no model at all.
        _loading_model(settings)
        service.warm_up()
    try:
        response = service.search(request)
    except QueryError as exc:
        message = str(exc) if str(exc).startswith(f"{exc.field}:") else f"{exc.field}: {exc}"
        raise error(message, 2 if exc.status < 500 else 1) from None
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
    else:
        print_results(response)


def _loading_model(settings: Settings) -> None:
    """Say on stderr which model is being loaded: the first query waits for it."""
    from mediasearch.cli_support import query_model

    typer.echo(f"loading the query model {query_model(settings)} ...", err=True)


@app.command()
def similar(
    video_id: Annotated[str, typer.Argument(help="a video's id, as `search` prints it")],
    k: Annotated[int, typer.Option(help="how many videos (1 to 100)")] = 5,
    encoder: Annotated[
        VideoEncoder,
        typer.Option(
            help="clip: whole-video CLIP vectors; learned: the trained video encoder's features "
            "(an index built with MEDIASEARCH_VIDEO_ENCODER)"
        ),
    ] = VideoEncoder.CLIP,
) -> None:
    """The k videos most like VIDEO_ID (video-to-video recommendation; loads no model)."""
    search(
        text=None,
        image=None,
        video=video_id,
        k=k,
        kind=[ResultKind.VIDEO],
        mode=SearchMode.CLIP,
        aggregation=Aggregation.MAX,
        as_json=False,
        encoder=encoder,
    )


@app.command()
def duplicates(
    threshold: Annotated[
        float, typer.Option(help="the lowest cosine similarity of a duplicate pair (0 to 1)")
    ] = 0.95,
    kind: Annotated[
        str,
        typer.Option(
            help="image; video (whole-video vectors); scene (overlapping scenes of different videos)"
        ),
    ] = "image",
    limit: Annotated[int, typer.Option(help="the most clusters shown (1 to 1000)")] = 100,
    neighbours: Annotated[int, typer.Option(help="nearest neighbours asked per document (1 to 100)")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print the clusters as JSON")] = False,
) -> None:
    """Near-duplicate clusters: each document's nearest neighbours at or above --threshold are linked,
    and linked documents form a cluster (one k-NN query per document; loads no model)."""
    import sys

    from tqdm import tqdm

    from mediasearch.core.records import DocKind
    from mediasearch.query.duplicates import DuplicatesError, check_parameters

    try:
        doc_kind = DocKind(kind)
    except ValueError:
        raise error(f"--kind: must be image, video or scene, not {kind!r}") from None
    try:
        check_parameters(threshold, neighbours, limit)
    except DuplicatesError as exc:
        raise error(f"--{exc}") from None
    settings = _settings()
    require_index(settings)
    service = _service(settings)
    service.health()
    with tqdm(desc=f"duplicates ({doc_kind.value})", unit="doc", file=sys.stderr, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        response = service.duplicates(doc_kind, threshold, neighbours, limit, progress=progress)
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    from mediasearch.query.duplicates import cluster_table

    typer.echo(cluster_table(response))


def print_results(response: SearchResponse) -> None:
    if not response.results:
        typer.echo("no results")
    for n, r in enumerate(response.results, 1):
        typer.echo(f"{n:>3}. {r.score:+.3f} {r.kind.value:<5} {r.id}  {r.uri}")
        for s in r.scenes:
            typer.echo(f"       scene {s.scene} {s.t_start:.1f}-{s.t_end:.1f}s {s.score:+.3f}")
    if response.cutoff is not None:
        typer.echo(
            f"cutoff ({response.cutoff.rule}): kept {response.cutoff.kept}, dropped {response.cutoff.dropped}: {response.cutoff.reason}"
        )
    typer.echo(f"({response.took_ms:.1f} ms)")


@app.command("eval")
def evaluate(
    labels: Annotated[
        str, typer.Option(help="labels.jsonl location (default: the demo corpus in MEDIASEARCH_STORE)")
    ] = "",
    k: Annotated[
        list[int] | None,
        typer.Option(help="a cut-off for recall@k and precision@k; repeat (default: 1 5 10)"),
    ] = None,
    per_query: Annotated[bool, typer.Option("--per-query", help="also a line per query")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="also draw recall@k and precision@k for k = 1..max as a PNG")
    ] = None,
) -> None:
    """Recall@k, precision@k and MRR of text queries over the labelled sample corpus.

    MRR is cut off at the largest k: a first relevant result below it counts as not found.
    """
    from mediasearch.cli_support import query_model
    from mediasearch.core.records import SearchRequest
    from mediasearch.core.storage import StoreError, open_store, read_uri
    from mediasearch.corpus.images import ImageLabel
    from mediasearch.eval.metrics import evaluate as run_eval
    from mediasearch.eval.metrics import queries_from_labels
    from mediasearch.eval.plot import draw_recall_plot

    settings = _settings()
    uri = labels or open_store(settings.store).uri("demo/images/labels.jsonl")
    try:
        lines = read_uri(uri).decode().splitlines()
    except StoreError:
        raise error(f"no labels at {uri}: run `mediasearch demo-data` first, or give --labels", 1) from None
    rows = [ImageLabel.model_validate_json(ln) for ln in lines if ln.strip()]
    require_index(settings)
    service = _service(settings)
    service.health()  # a folder without the collection: one line (IndexNotReady), before any model loads
    _loading_model(settings)
    service.warm_up()

    def search_fn(text: str, depth: int) -> list[str]:
        req = SearchRequest(text=text, k=depth, kinds=[ResultKind.IMAGE])
        return [r.id for r in service.search(req).results]

    ks = tuple(k or (1, 5, 10))
    queries = queries_from_labels(rows)
    report = run_eval(queries, search_fn, ks=ks)
    typer.echo(report.model_dump_json(indent=2) if as_json else report.to_table(per_query=per_query))
    if plot is not None:
        curve = run_eval(queries, search_fn, ks=range(1, max(ks) + 1)) if max(ks) > 1 else report
        drawn = draw_recall_plot(curve, plot, corpus_size=len(rows), model=query_model(settings))
        typer.echo(f"plot: {drawn}", err=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (1 to 65535)")] = 8000,
    workers: Annotated[int, typer.Option(help="server processes (each loads the model)")] = 1,
) -> None:
    """Serve the HTTP API and the search page (OpenAPI docs at /docs).

    Logs are readable lines on a terminal and JSON lines otherwise (for a log shipper).
    """
    import uvicorn

    from mediasearch.core.logs import configure_logging
    from mediasearch.core.settings import get_settings
    from mediasearch.query.api.security import check_key_setting

    # Everything that can be wrong is checked before the model loads: a port out of range would
    # otherwise fail only after it, with an OverflowError.
    if not 1 <= port <= 65535:
        raise error(f"--port must be between 1 and 65535, not {port}")
    if workers < 1:
        raise error(f"--workers must be at least 1, not {workers}")
    # Not _settings(): its basicConfig handler would print every line twice beside configure_logging's.
    settings = get_settings()
    check_key_setting(settings)
    require_index(settings)
    # One line per request from the API's own middleware; uvicorn's access log would only repeat it
    # without the request id, and log_config=None keeps uvicorn from replacing ours.
    configure_logging(settings.log_level or "INFO")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}"
    typer.echo(
        f"mediasearch: open {url}/ (the search page) or {url}/docs (the API); loading the model first ...",
        err=True,
    )
    uvicorn.run(
        "mediasearch.query.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


@app.command("random-model")
def random_model(
    dest: Annotated[Path, typer.Argument(help="folder to write the checkpoint to")],
    size: Annotated[str, typer.Option(help="tiny (tests) or base (ViT-B/32 shapes)")] = "tiny",
) -> None:
    """Write a randomly initialised CLIP checkpoint (for offline runs; its rankings are noise)."""
    from mediasearch.models.random_init import build_random_clip

    if size not in ("tiny", "base"):
        typer.secho(f"error: --size must be tiny or base, not {size!r}", fg="red", err=True)
        raise typer.Exit(2)
    path = build_random_clip(dest, size=size)  # type: ignore[arg-type]
    typer.echo(json.dumps({"model": str(path), "size": size}))


@app.command("export-onnx")
def export_onnx(
    model: Annotated[
        str | None, typer.Argument(help="hub id or checkpoint directory (default: MEDIASEARCH_CLIP_MODEL)")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="hub branch, tag or commit (default: main)")] = None,
    force: Annotated[bool, typer.Option("--force", help="export again even when cached")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="export cache folder (default: MEDIASEARCH_ONNX_CACHE)")
    ] = None,
) -> None:
    """Export CLIP's towers to ONNX (fp32 and int8) into the cache; print the folder and its agreement with PyTorch.

    The ONNX engine also exports on first use; run this ahead (or where torch is installed, to ship the
    folder to a machine without it: point MEDIASEARCH_CLIP_MODEL at the folder there).
    """
    from mediasearch import backends
    from mediasearch.encoders.onnx_cache import (
        OnnxCacheError,
        export_dir,
        export_identity,
        is_export_dir,
        read_meta,
    )
    from mediasearch.models.onnx_export import ExportError, export_clip

    settings = _settings()
    name = model or settings.clip_model
    cache = cache_dir or backends.onnx_cache(settings)
    try:
        cached = not force and is_export_dir(
            export_dir(export_identity(name, revision, settings.cache_dir), cache)
        )
        folder = export_clip(
            name, cache_dir=cache, revision=revision, force=force, digest_cache=settings.cache_dir
        )
    except OnnxCacheError as exc:  # neither a checkpoint folder nor a hub id it can resolve
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except ExportError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    meta = read_meta(folder)
    summary = {
        "folder": str(folder),
        "model_identity": meta["model_identity"],
        "cached": cached,
        "agreement": meta["agreement"],
        "export_seconds": meta.get("export_seconds"),
    }
    typer.echo(json.dumps(summary, indent=2))


@app.command("export-text-tower")
def export_text_tower_command(
    model: Annotated[
        str | None,
        typer.Argument(help="the query text model: hub id or folder (default: MEDIASEARCH_QUERY_TEXT_MODEL)"),
    ] = None,
    dest: Annotated[Path, typer.Option(help="folder to write the export to")] = Path("text-tower-onnx"),
) -> None:
    """Export a query text tower (sentence-transformers, e.g. clip-ViT-B-32-multilingual-v1) to ONNX.

    Point MEDIASEARCH_QUERY_TEXT_MODEL at the folder to run it without torch (the query Lambda).
    Prints the folder, its dimension and its agreement with PyTorch.
    """
    from mediasearch.models.text_tower import export_text_tower

    name = model or _settings().query_text_model
    if not name:
        raise error("give the model, or set MEDIASEARCH_QUERY_TEXT_MODEL")
    try:
        folder = export_text_tower(name, dest)
    except (OSError, ValueError) as exc:
        raise error(f"cannot export {name!r}: {str(exc).splitlines()[0]}", 1) from None
    meta = json.loads((folder / "text_tower.json").read_text())
    typer.echo(json.dumps({"folder": str(folder), **meta}, indent=2))


if __name__ == "__main__":
    app()
