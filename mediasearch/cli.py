"""`mediasearch` command line: thin commands over the library, with progress bars and summaries."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mediasearch import backends
from mediasearch.core.records import (
    Aggregation,
    ResultKind,
    SearchMode,
    SearchRequest,
    SearchResponse,
)
from mediasearch.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from mediasearch.index.base import VectorIndex
    from mediasearch.index.collection import Collection
    from mediasearch.indexing.pipeline import Summary

app = typer.Typer(
    help="Semantic search over images and videos. Settings come from MEDIASEARCH_* environment variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    from mediasearch.core import failpoints

    settings = get_settings()
    failpoints.arm(settings.failpoint)
    logging.basicConfig(level=settings.log_level or "WARNING", format="%(levelname)s %(name)s: %(message)s")
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


def _service(settings: Settings):  # type: ignore[no-untyped-def]
    return backends.search_service(settings)


@app.command("demo-data")
def demo_data(
    dest: Annotated[str, typer.Option(help="store location (folder or s3://bucket/prefix)")] = "",
    limit: Annotated[int | None, typer.Option(help="number of images (default: all 360)")] = None,
    seed: int = 0,
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
    source: Annotated[str, typer.Argument(help="folder or s3://bucket/prefix to index")],
    batch_size: Annotated[int | None, typer.Option(help="images per forward pass")] = None,
    captions: Annotated[
        bool | None,
        typer.Option("--captions/--no-captions", help="caption images and frames (default: settings)"),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait for another ingest into the collection instead of stopping")
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

    One ingest writes a collection at a time. With a model other than the one the index was built
    with, a new generation is built beside the serving one and replaces it when complete.
    """
    _ingest(source, batch_size, captions, wait, fresh=False, delete=not no_delete)


def _ingest(
    source: str, batch_size: int | None, captions: bool | None, wait: bool, fresh: bool, delete: bool = True
) -> None:
    from mediasearch.core.storage import open_store
    from mediasearch.index.locks import LockHeld
    from mediasearch.indexing.ingest import ingest_collection
    from mediasearch.indexing.pipeline import PipelineReport, summarize

    settings = _settings()
    root = open_store(source).root_uri
    handler = backends.clip_handler(settings, captions=captions)
    assert handler.model is not None

    def run(uri: str, index: VectorIndex) -> PipelineReport:
        store = open_store(uri)
        pipeline = backends.pipeline(settings, store, index)
        runner = backends.transform_runner(settings, store, captions=captions, batch_size=batch_size)
        return pipeline.ingest(runner, delete=delete)

    def notify(message: str) -> None:
        typer.echo(message, err=True)

    try:
        done = ingest_collection(
            backends.collection(settings),
            handler.model.identity,
            root,
            run,
            wait=wait,
            fresh=fresh,
            notify=notify,
        )
    except LockHeld as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    echo_summary(summarize(done.report))


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
    coll = backends.collection(_settings())
    state = coll.catalog.read()
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json"), indent=2))
        return
    if not state.generations:
        typer.echo(f"collection {coll.name!r} has no generations yet: run mediasearch ingest")
        return
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


def _generation_op(op: Callable[[Collection], object], done: str) -> None:
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
    source: Annotated[str, typer.Argument(help="folder or s3://bucket/prefix holding videos")],
    force: Annotated[bool, typer.Option(help="redo videos that are already done")] = False,
) -> None:
    """Cut videos into scenes, sample frames, write thumbnails, strips and frame manifests (resumable)."""
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.pipeline import summarize

    settings = _settings()
    pipeline = backends.pipeline(settings, open_store(source), indexed=False)
    pipeline.preprocess(force=force)
    echo_summary(summarize(pipeline.report))


@app.command()
def transform(
    location: Annotated[str, typer.Argument(help="the source whose work-area manifests to run")],
    captions: Annotated[bool | None, typer.Option("--captions/--no-captions")] = None,
) -> None:
    """Run the batch transform locally over the work area's manifests, one output per manifest and model (resumable)."""
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.pipeline import summarize

    settings = _settings()
    store = open_store(location)
    pipeline = backends.pipeline(settings, store, indexed=False)
    pipeline.transform(backends.transform_runner(settings, store, captions=captions))
    echo_summary(summarize(pipeline.report))


@app.command()
def load(
    location: Annotated[str, typer.Argument(help="the source whose work-area outputs to load")],
    captions: Annotated[bool | None, typer.Option("--captions/--no-captions")] = None,
) -> None:
    """Load the configured model's transform outputs into the index (idempotent; frames become scenes and videos)."""
    from mediasearch.core.storage import open_store
    from mediasearch.indexing.pipeline import summarize

    settings = _settings()
    pipeline = backends.pipeline(settings, open_store(location))
    pipeline.load(tag=backends.clip_handler(settings, captions=captions).output_tag)
    echo_summary(summarize(pipeline.report))


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="text query")] = None,
    image: Annotated[Path | None, typer.Option(help="image file to search with")] = None,
    video: Annotated[str | None, typer.Option(help="video id: find videos like it")] = None,
    k: int = 10,
    kind: Annotated[list[ResultKind] | None, typer.Option(help="image and/or video")] = None,
    mode: SearchMode = SearchMode.CLIP,
    aggregation: Aggregation = Aggregation.MAX,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw response")] = False,
) -> None:
    """Search the index from the command line (no server needed)."""
    import base64

    from mediasearch.query.search import QueryError

    settings = _settings()
    payload: dict[str, object] = {"k": k, "mode": mode, "aggregation": aggregation}
    if kind:
        payload["kinds"] = kind
    if image is not None:
        payload["image"] = base64.b64encode(image.read_bytes()).decode()
    elif video is not None:
        payload["video_id"] = video
        payload.setdefault("kinds", [ResultKind.VIDEO])
    else:
        payload["text"] = text
    service = _service(settings)
    service.warm_up()
    try:
        response = service.search(SearchRequest.model_validate(payload))
    except QueryError as exc:
        typer.secho(f"{exc.field}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
    else:
        print_results(response)


@app.command()
def similar(video_id: str, k: int = 5) -> None:
    """The k videos most like VIDEO_ID (video-to-video recommendation)."""
    search(
        text=None,
        image=None,
        video=video_id,
        k=k,
        kind=[ResultKind.VIDEO],
        mode=SearchMode.CLIP,
        aggregation=Aggregation.MAX,
        as_json=False,
    )


def print_results(response: SearchResponse) -> None:
    if not response.results:
        typer.echo("no results")
    for n, r in enumerate(response.results, 1):
        typer.echo(f"{n:>3}. {r.score:+.3f} {r.kind.value:<5} {r.uri}")
        for s in r.scenes:
            typer.echo(f"       scene {s.scene} {s.t_start:.1f}-{s.t_end:.1f}s {s.score:+.3f}")
    typer.echo(f"({response.took_ms:.1f} ms)")


@app.command("eval")
def evaluate(
    labels: Annotated[str, typer.Option(help="labels.jsonl location")] = "",
    k: Annotated[list[int] | None, typer.Option(help="cut-offs for recall@k")] = None,
    per_query: bool = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="also draw recall@k and precision@k for k = 1..max as a PNG")
    ] = None,
) -> None:
    """Recall@k and MRR of text queries over the labelled sample corpus."""
    from mediasearch.core.storage import open_store, read_uri
    from mediasearch.corpus.images import ImageLabel
    from mediasearch.eval.metrics import evaluate as run_eval
    from mediasearch.eval.metrics import queries_from_labels
    from mediasearch.eval.plot import draw_recall_plot

    settings = _settings()
    uri = labels or open_store(settings.store).uri("demo/images/labels.jsonl")
    rows = [ImageLabel.model_validate_json(ln) for ln in read_uri(uri).decode().splitlines() if ln.strip()]
    service = _service(settings)
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
        typer.echo(f"plot: {draw_recall_plot(curve, plot, corpus_size=len(rows))}", err=True)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the HTTP API and the search page (OpenAPI docs at /docs)."""
    import uvicorn

    from mediasearch.core.logs import configure_logging

    # JSON lines, one per request from the API's own middleware; uvicorn's text access log would
    # only repeat it without the request id, and log_config=None keeps uvicorn from replacing ours.
    configure_logging(get_settings().log_level or "INFO")
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
    dest: Path,
    size: Annotated[str, typer.Option(help="tiny (tests) or base (ViT-B/32 shapes)")] = "tiny",
) -> None:
    """Write a randomly initialised CLIP checkpoint (for offline runs; its rankings are noise)."""
    from mediasearch.models.random_init import build_random_clip

    if size not in ("tiny", "base"):
        typer.secho(f"error: --size must be tiny or base, not {size!r}", fg="red", err=True)
        raise typer.Exit(2)
    path = build_random_clip(dest, size=size)  # type: ignore[arg-type]
    typer.echo(json.dumps({"model": str(path), "size": size}))


from mediasearch.aws.cli import aws_app  # noqa: E402

app.add_typer(aws_app, name="aws")

if __name__ == "__main__":
    app()
