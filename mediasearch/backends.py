"""The one place where configuration picks implementations: store, index, models, encoder, handlers, pipeline.

With `mediasearch.core.settings`, the only reader of the environment: commands, jobs and the SageMaker
handler scripts get what they run from here, so a MEDIASEARCH_* variable means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mediasearch.core.layout import WorkLayout
from mediasearch.core.model_identity import ModelIdentity, clip_part, with_video_encoder
from mediasearch.core.settings import (
    ClipEngine,
    ClipPrecision,
    EncoderBackend,
    IndexBackend,
    Settings,
    VectorCodes,
)
from mediasearch.core.storage import ObjectStore, open_store
from mediasearch.index.base import HybridWeights, VectorIndex
from mediasearch.index.codes import CodeMethod, CodesConfig
from mediasearch.indexing.video_documents import TagOptions
from mediasearch.query.encoder import (
    LazyTextEmbedder,
    LocalEncoder,
    QueryEncoder,
    SageMakerEncoder,
    TextVectoriser,
)
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from mediasearch.query.text_cache import TextVectorCache
from mediasearch.query.text_tower import TextTowerEncoder

if TYPE_CHECKING:
    from mediasearch.encoders.base import ClipEncoder
    from mediasearch.index.collection import Collection
    from mediasearch.index.generations import Generation

    # Type-only: each builder below imports what it builds, so that picking the SageMaker encoder and
    # OpenSearch (the query Lambda) loads neither torch nor transformers.
    from mediasearch.index.opensearch import OpenSearchIndex
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.loader import Loader
    from mediasearch.indexing.pipeline import Pipeline
    from mediasearch.indexing.transform import TransformRunner
    from mediasearch.indexing.video import VideoOptions
    from mediasearch.models.captioner import CaptionModel
    from mediasearch.models.text_embedder import TextEmbedder
    from mediasearch.models.video_encoder import VideoEncoder


def store(settings: Settings) -> ObjectStore:
    return open_store(settings.store)


def index(settings: Settings) -> VectorIndex:
    if settings.index_backend is IndexBackend.OPENSEARCH:
        return opensearch_index(settings)
    from mediasearch.index.lancedb import LanceDBIndex

    return LanceDBIndex(
        settings.lancedb_uri, settings.collection, refresh_s=settings.index_refresh_s, codes=codes(settings)
    )


def codes(settings: Settings) -> CodesConfig | None:
    """Binary codes for k-NN as configured (MEDIASEARCH_VECTOR_CODES), or None for float vectors only."""
    if settings.vector_codes is VectorCodes.OFF:
        return None
    return CodesConfig(method=CodeMethod(settings.vector_codes.value), oversample=settings.codes_oversample)


def opensearch_index(settings: Settings, name: str | None = None) -> OpenSearchIndex:
    """The collection on the cluster at MEDIASEARCH_OPENSEARCH_URL, signed with SigV4 when a region is set
    (Amazon OpenSearch Service), with basic auth when a username is."""
    from mediasearch.index.opensearch import OpenSearchIndex, build_client

    if not settings.opensearch_url:
        raise ValueError(
            "the OpenSearch backend needs a cluster URL: set MEDIASEARCH_OPENSEARCH_URL "
            "(e.g. http://localhost:9200 or https://<domain>.<region>.es.amazonaws.com)"
        )
    if settings.opensearch_aws_region and settings.opensearch_username:
        raise ValueError(
            "set either MEDIASEARCH_OPENSEARCH_AWS_REGION (SigV4) or MEDIASEARCH_OPENSEARCH_USERNAME "
            "(basic auth), not both"
        )
    password = settings.opensearch_password.get_secret_value() if settings.opensearch_password else ""
    client = build_client(
        settings.opensearch_url,
        aws_region=settings.opensearch_aws_region,
        username=settings.opensearch_username,
        password=password,
    )
    # Searches go through the collection's name (an alias once generations exist); writers name a
    # generation's own index.
    return OpenSearchIndex(client, name or settings.collection, codes=codes(settings))


def clip_engine(settings: Settings) -> ClipEngine:
    """The engine that runs CLIP: the setting, or for `auto` ONNX Runtime unless the model would run on
    CUDA (see `mediasearch.encoders.engine`)."""
    from mediasearch.encoders.engine import choose_engine

    return ClipEngine(
        choose_engine(settings.clip_engine, settings.clip_precision, settings.device, settings.clip_model)
    )


def onnx_cache(settings: Settings) -> Path:
    """Where ONNX exports are cached: MEDIASEARCH_ONNX_CACHE, else onnx/ under MEDIASEARCH_CACHE_DIR."""
    from mediasearch.core.model_identity import default_cache_dir

    if settings.onnx_cache:
        return Path(settings.onnx_cache).expanduser()
    return (Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()) / "onnx"


def clip_model(settings: Settings, spin: bool = False) -> ClipEncoder:
    """CLIP on the configured engine: PyTorch, or ONNX Runtime on the model's export (made on first use).

    `spin`: ONNX Runtime's threads busy-wait between operators, for the query side (one request at a
    time, latency first); batch jobs leave the cores to their decode threads."""
    if clip_engine(settings) is ClipEngine.ONNX:
        from mediasearch.encoders.onnx_clip import OnnxClipModel

        return OnnxClipModel(
            settings.clip_model,
            device=settings.device,
            batch_size=settings.batch_size,
            precision=settings.clip_precision,
            cache_dir=onnx_cache(settings),
            spin=spin,
            digest_cache=settings.cache_dir,
        )
    from mediasearch.models.clip import ClipModel

    return ClipModel(
        settings.clip_model,
        device=settings.device,
        batch_size=settings.batch_size,
        digest_cache=settings.cache_dir,
    )


def for_model(settings: Settings, model_id: str, source: str) -> Settings:
    """The settings whose CLIP makes `model_id`'s vectors from `source`: that checkpoint, at the precision
    the identity names (int8 vectors are another model's; fp32 ones are the same on either engine)."""
    from mediasearch.encoders.onnx_cache import precision_of

    if not model_id:  # no generation yet: whatever is configured
        return settings.model_copy(update={"clip_model": source})
    precision = ClipPrecision(precision_of(clip_part(model_id)))
    update: dict[str, object] = {"clip_model": source, "clip_precision": precision}
    if precision is not ClipPrecision.FP32:
        update["clip_engine"] = ClipEngine.ONNX
    return settings.model_copy(update=update)


def captioner(settings: Settings) -> CaptionModel:
    from mediasearch.models.captioner import CaptionModel

    return CaptionModel(
        settings.caption_model,
        device=settings.device,
        max_length=settings.caption_max_length,
        num_beams=settings.caption_beams,
        digest_cache=settings.cache_dir,
    )


def text_embedder(settings: Settings) -> TextEmbedder:
    from mediasearch.models.text_embedder import TextEmbedder

    return TextEmbedder(settings.text_model, device=settings.device, digest_cache=settings.cache_dir)


def clip_handler(
    settings: Settings, model: ClipEncoder | None = None, captions: bool | None = None
) -> ClipHandler:
    """The transform's handler: CLIP, plus the captioner when captions are on (setting or override)."""
    from mediasearch.indexing.handler import ClipHandler

    return ClipHandler(
        model or clip_model(settings),
        decode_workers=settings.decode_workers,
        max_pixels=settings.max_image_pixels,
        captioner=captioner(settings) if (settings.captions if captions is None else captions) else None,
    )


def tag_options(settings: Settings) -> TagOptions:
    return TagOptions(top_n=settings.tags_top_n, min_frames=settings.tags_min_frames)


def collection(settings: Settings) -> Collection:
    """The configured collection: its generation catalog, its writer lock and its generations' indices."""
    from mediasearch.index.collection import Collection
    from mediasearch.index.generations import StoreCatalog
    from mediasearch.index.locks import FileLock, LeaseLock

    name = settings.collection
    if settings.index_backend is IndexBackend.OPENSEARCH:
        from mediasearch.index.generations import OpenSearchCatalog

        client = opensearch_index(settings).client
        return Collection(
            name,
            OpenSearchCatalog(client, name),
            lambda: LeaseLock(client, name),
            lambda generation: opensearch_index(settings, generation),
            lambda generation: client.indices.delete(index=generation),
        )
    from mediasearch.index.lancedb import LanceDBIndex

    uri = settings.lancedb_uri
    if "://" in uri and not uri.startswith("file://"):
        # A flock needs a local file; an object store needs a lease (not built for LanceDB yet).
        lock_path = None
    else:
        lock_path = Path(uri.removeprefix("file://")) / "_locks" / f"{name}.lock"

    def lock() -> FileLock:
        if lock_path is None:
            raise ValueError(
                f"writing to LanceDB at {uri} needs a writer lock, which only a local folder provides "
                "here: point MEDIASEARCH_LANCEDB_URI at a folder, or use OpenSearch"
            )
        return FileLock(lock_path, name)

    def drop(generation: str) -> None:
        import lancedb

        from mediasearch.index.lancedb_codes import codes_table_name

        db = lancedb.connect(uri)
        db.drop_table(generation)
        if codes_table_name(generation) in db.list_tables().tables:
            db.drop_table(codes_table_name(generation))  # the generation's rotation

    return Collection(
        name,
        StoreCatalog(open_store(uri), name),
        lock,
        lambda generation: LanceDBIndex(
            uri, generation, refresh_s=settings.index_refresh_s, codes=codes(settings)
        ),
        drop,
    )


def search_service(settings: Settings, base_url: str = "") -> SearchService:
    """The search service over the collection's serving generation, with an encoder of its model.

    The encoder follows the serving generation's model unless one is pinned: a SageMaker endpoint, or
    MEDIASEARCH_CLIP_MODEL set explicitly (then a generation of another model is refused, not mixed).
    """
    from mediasearch.query.serving import ServedEncoder, ServedIndex, ServingView

    pinned = settings.encoder_backend is EncoderBackend.SAGEMAKER or "clip_model" in settings.model_fields_set
    pinned_encoder = encoder(settings) if pinned else None
    pinned_identity: list[str] = []

    def pinned_model() -> str | None:
        if isinstance(pinned_encoder, TextTowerEncoder):  # the index is the image model's
            image_side = pinned_encoder.image_encoder
            return image_side.model.identity.id if isinstance(image_side, LocalEncoder) else None
        if not isinstance(pinned_encoder, LocalEncoder):
            return None  # the endpoint's model is not known here; its archive was packaged for the index
        if not pinned_identity:
            # The encoder's own identity: int8 ONNX is another model than its checkpoint.
            pinned_identity.append(pinned_encoder.model.identity.id)
        return pinned_identity[0]

    def follow(generation: Generation) -> QueryEncoder:
        model = generation.model_source or settings.clip_model
        return encoder(for_model(settings, generation.model_id, model))

    view = ServingView(
        collection(settings),
        fallback_index=index(settings),
        pinned=pinned_encoder,
        pinned_model=pinned_model,
        build_encoder=None if pinned else follow,
        refresh_s=settings.index_refresh_s,
    )
    return SearchService(
        ServedIndex(view),
        ServedEncoder(view),
        store(settings),
        MediaLinks(base_url, presign_expiry_s=settings.presign_expiry_s),
        # Built on the first caption query: where torch and transformers are not installed (the
        # query Lambda), that query answers 501 and every other mode works.
        text_embedder=LazyTextEmbedder(lambda: text_embedder(settings)),
        hybrid_weights=HybridWeights(
            keyword=settings.hybrid_keyword_weight, vector=settings.hybrid_clip_weight
        ),
        pin=view.pin,
        generation=lambda: g.name if (g := view.current().generation) is not None else None,
    )


def video_options(settings: Settings) -> VideoOptions:
    # Imported here: PyAV/OpenCV are not in the slim query Lambda or SageMaker images.
    from mediasearch.indexing.video import VideoOptions

    return VideoOptions(
        threshold=settings.scene_threshold,
        frames_per_scene=settings.frames_per_scene,
        max_scene_s=settings.max_scene_s,
    )


def encoder(settings: Settings) -> QueryEncoder:
    if settings.query_text_model:
        return text_tower_encoder(settings, clip_encoder(settings))
    return clip_encoder(settings)


def clip_encoder(settings: Settings) -> QueryEncoder:
    if settings.encoder_backend is EncoderBackend.SAGEMAKER:
        if not settings.sagemaker_endpoint:
            raise ValueError("MEDIASEARCH_ENCODER_BACKEND=sagemaker needs MEDIASEARCH_SAGEMAKER_ENDPOINT")
        return SageMakerEncoder(settings.sagemaker_endpoint, max_pixels=settings.max_image_pixels)
    return LocalEncoder(
        clip_model(settings, spin=settings.query_spin),
        max_pixels=settings.max_image_pixels,
        text_cache=TextVectorCache(settings.query_cache_size),
    )


def text_tower(settings: Settings) -> TextVectoriser:
    """MEDIASEARCH_QUERY_TEXT_MODEL: its ONNX export on ONNX Runtime, or the checkpoint on torch."""
    from mediasearch.encoders.onnx_text_tower import OnnxTextTower, is_tower_export

    assert settings.query_text_model
    if is_tower_export(settings.query_text_model):
        return OnnxTextTower(
            settings.query_text_model, device="cpu" if settings.device == "auto" else settings.device
        )
    from mediasearch.models.text_tower import TextTower

    return TextTower(settings.query_text_model, device=settings.device, digest_cache=settings.cache_dir)


def text_tower_encoder(settings: Settings, image_encoder: QueryEncoder) -> TextTowerEncoder:
    """Text through the query text tower, images through `image_encoder`, checked against each other."""
    local = image_encoder if isinstance(image_encoder, LocalEncoder) else None
    assert settings.query_text_model
    return TextTowerEncoder(
        image_encoder,
        # Built on first use: a checkpoint needs torch, and must not load at import (the Lambda).
        LazyTextEmbedder(lambda: text_tower(settings)),
        tower_name=settings.query_text_model,
        image_model=settings.clip_model,
        image_dim=lambda: local.model.dim if local is not None else None,
        image_identity=lambda: local.model.identity.id if local is not None else None,
        aligned_to=settings.query_text_aligned_to,
    )


# -- the index-time side: handlers for SageMaker, the loader, the pipeline -----------------------------


def caption_handler(settings: Settings) -> ClipHandler:
    """The captions-only handler (`model_handlers/captioning`): the captioner and no CLIP model."""
    from mediasearch.indexing.handler import ClipHandler

    return ClipHandler(
        None,
        decode_workers=settings.decode_workers,
        max_pixels=settings.max_image_pixels,
        captioner=captioner(settings),
    )


def sagemaker_clip_handler(model_dir: str) -> ClipHandler:
    """`model_fn` of `model_handlers/clip`: the weights are the unpacked archive, everything else comes
    from the SageMaker model's environment, read when the container loads the model.

    Captions have their own model and endpoint (`model_handlers/captioning`), whatever
    MEDIASEARCH_CAPTIONS says. Refuses a container that cannot serve (`aws.container`) first.
    """
    from mediasearch.aws.container import check_serving_container

    check_serving_container()
    return clip_handler(Settings(clip_model=model_dir), captions=False)


def sagemaker_caption_handler(model_dir: str) -> ClipHandler:
    """`model_fn` of `model_handlers/captioning`, read like `sagemaker_clip_handler`."""
    from mediasearch.aws.container import check_serving_container

    check_serving_container()
    return caption_handler(Settings(caption_model=model_dir))


def work_layout(settings: Settings) -> WorkLayout:
    """The work area of a source named on the command line (the source is the store's root)."""
    return WorkLayout.for_source("", settings.work_prefix)


def transform_runner(
    settings: Settings, source: ObjectStore, captions: bool | None = None, batch_size: int | None = None
) -> TransformRunner:
    """The in-process batch transform over `source`'s work area (`captions`, `batch_size`: overrides)."""
    from mediasearch.indexing.transform import TransformRunner

    return TransformRunner(
        source,
        clip_handler(settings, captions=captions),
        work_layout(settings),
        batch_size=batch_size or settings.batch_size,
    )


def loader(settings: Settings, source: ObjectStore, target: VectorIndex | None = None) -> Loader:
    """The loader into `target` (default: the configured index), the same wherever it runs: caption
    vectors from the configured text embedder, video tags by the configured tag options."""
    from mediasearch.indexing.loader import Loader

    return Loader(
        source,
        target if target is not None else index(settings),
        work_layout(settings),
        text_embedder=text_embedder(settings),
        tags=tag_options(settings),
        video_encoder=video_encoder(settings),
    )


def video_encoder(settings: Settings) -> VideoEncoder | None:
    """The trained video encoder MEDIASEARCH_VIDEO_ENCODER names, or None (loaded on first use)."""
    if not settings.video_encoder:
        return None
    from mediasearch.models.video_encoder import VideoEncoder

    return VideoEncoder(settings.video_encoder)


def index_identity(settings: Settings, clip: ModelIdentity) -> ModelIdentity:
    """What a generation is built with: the CLIP, and the video encoder where one is configured.

    The encoder's feature is stored on every video, so another encoder (or none, after one) makes a
    new generation, rebuilt beside the serving one as for a new CLIP: a generation never mixes two
    encoders' vectors, and the switch is atomic.
    """
    encoder = video_encoder(settings)
    return clip if encoder is None else with_video_encoder(clip, encoder.identity)


def pipeline(
    settings: Settings,
    source: ObjectStore,
    target: VectorIndex | None = None,
    *,
    indexed: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Pipeline:
    """The pipeline over `source`, with the configured manifest size and video options, planned against
    and loading into `target` (default: the configured index). `indexed=False`: no index at all, for
    the steps that need none (preprocess, transform)."""
    from mediasearch.indexing.pipeline import Pipeline

    load_into = loader(settings, source, target) if indexed else None
    return Pipeline(
        source,
        work_layout(settings),
        load_into.index if load_into is not None else None,
        load_into,
        manifest_lines=settings.manifest_lines,
        video_options=video_options(settings),
        video_workers=settings.video_workers,
        notify=notify,
    )
