"""The one place where configuration picks implementations: store, index, model, encoder."""

from __future__ import annotations

from mediasearch.config import EncoderBackend, IndexBackend, Settings
from mediasearch.encoder import LocalEncoder, QueryEncoder, SageMakerEncoder
from mediasearch.index.base import VectorIndex
from mediasearch.inference import ClipHandler
from mediasearch.models.clip import ClipModel
from mediasearch.storage import ObjectStore, open_store
from mediasearch.video import VideoOptions


def store(settings: Settings) -> ObjectStore:
    return open_store(settings.store)


def index(settings: Settings) -> VectorIndex:
    if settings.index_backend is IndexBackend.OPENSEARCH:
        from mediasearch.index.opensearch import OpenSearchIndex

        return OpenSearchIndex.from_settings(settings)
    from mediasearch.index.lancedb import LanceDBIndex

    return LanceDBIndex(settings.lancedb_uri, settings.collection)


def clip_model(settings: Settings) -> ClipModel:
    return ClipModel(settings.clip_model, device=settings.device, batch_size=settings.batch_size)


def clip_handler(settings: Settings, model: ClipModel | None = None) -> ClipHandler:
    return ClipHandler(
        model or clip_model(settings),
        decode_workers=settings.decode_workers,
        max_pixels=settings.max_image_pixels,
    )


def video_options(settings: Settings) -> VideoOptions:
    return VideoOptions(
        threshold=settings.scene_threshold,
        frames_per_scene=settings.frames_per_scene,
        max_scene_s=settings.max_scene_s,
    )


def encoder(settings: Settings) -> QueryEncoder:
    if settings.encoder_backend is EncoderBackend.SAGEMAKER:
        if not settings.sagemaker_endpoint:
            raise ValueError("MEDIASEARCH_ENCODER_BACKEND=sagemaker needs MEDIASEARCH_SAGEMAKER_ENDPOINT")
        return SageMakerEncoder(settings.sagemaker_endpoint, max_pixels=settings.max_image_pixels)
    return LocalEncoder(clip_model(settings), max_pixels=settings.max_image_pixels)
