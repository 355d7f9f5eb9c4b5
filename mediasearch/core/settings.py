"""Settings, read from the environment (prefix MEDIASEARCH_) or a `.env` file.

This module and `mediasearch.backends` are the only readers of the environment: every command, job
and handler takes its options from a `Settings`, and `backends` turns one into implementations (the
store, the index, the models, the query encoder, the pipeline). A default that a library type also
has (video sampling, hybrid weights, the pixel limit, the work folder) is imported from where it is
defined, never written again here.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mediasearch.core import defaults
from mediasearch.core.images import MAX_IMAGE_PIXELS
from mediasearch.core.layout import WORK_DIR


class IndexBackend(StrEnum):
    LANCEDB = "lancedb"
    OPENSEARCH = "opensearch"


class EncoderBackend(StrEnum):
    LOCAL = "local"
    SAGEMAKER = "sagemaker"


class ClipEngine(StrEnum):
    """What runs the CLIP towers: PyTorch, or ONNX Runtime on an export of the same checkpoint."""

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"


class ClipPrecision(StrEnum):
    FP32 = "fp32"
    INT8 = "int8"


class VectorCodes(StrEnum):
    """Binary codes for k-NN (mediasearch.index.codes): off, or the rotation before the sign."""

    OFF = "off"
    RANDOM = "random"
    ITQ = "itq"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIASEARCH_", env_file=".env", extra="ignore")

    store: str = Field(
        "mediasearch-data",
        description="the media store: a local folder or s3://bucket/prefix; image_uri queries must lie inside it",
    )
    work_prefix: str = Field(
        WORK_DIR, description="the work folder inside a source (manifests, outputs, frames)"
    )

    clip_model: str = Field(
        "openai/clip-vit-base-patch32", description="hub id, local directory, or ONNX export folder"
    )
    clip_engine: ClipEngine = Field(
        ClipEngine.AUTO,
        description="torch, or onnx (ONNX Runtime on the model's export, made once on first use or by "
        "`mediasearch export-onnx`); auto: onnx where the model runs on CPU (fp32 agrees with PyTorch to "
        "cosine 1.0 and ran 2.7x faster on images), torch on CUDA (fp16; ONNX Runtime's CUDA provider "
        "not measured against it yet)",
    )
    clip_precision: ClipPrecision = Field(
        ClipPrecision.FP32,
        description="onnx only. int8 (dynamic quantisation) ran 2.2x faster than fp32 on CPU, but its "
        "rankings differ (top-10 overlap 0.77 on random weights), so it is another model: its vectors "
        "get their own index generation",
    )
    cache_dir: str | None = Field(
        None,
        description="remembered model digests and, by default, ONNX exports "
        "(default: $XDG_CACHE_HOME/mediasearch, else ~/.cache/mediasearch)",
    )
    onnx_cache: str | None = Field(
        None, description="ONNX exports, one folder per model identity (default: <cache_dir>/onnx)"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    batch_size: int = Field(32, ge=1)
    decode_workers: int = Field(2, ge=1)
    manifest_lines: int = Field(1000, ge=1, description="records per manifest file")

    scene_threshold: float = Field(
        defaults.SCENE_THRESHOLD, gt=0, description="content-detector threshold: lower finds more cuts"
    )
    frames_per_scene: int = Field(
        defaults.FRAMES_PER_SCENE, ge=1, le=64, description="frames sampled and embedded per scene"
    )
    max_scene_s: float = Field(
        defaults.MAX_SCENE_S, gt=0, description="longer shots are split into windows of this length"
    )
    video_workers: int = Field(
        2, ge=1, description="videos preprocessed in parallel (2 measured 1.6x faster on 2 cores)"
    )

    captions: bool = Field(False, description="caption images and frames in the transform (captioner + tags)")
    caption_model: str = Field(
        "nlpconnect/vit-gpt2-image-captioning", description="hub id or local directory"
    )
    caption_max_length: int = Field(24, ge=4, le=128)
    caption_beams: int = Field(1, ge=1, le=8)
    text_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="caption text embedder (captions' vectors and caption-mode queries); a multilingual one "
        "such as sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 lets queries in other "
        "languages find English captions (re-ingest: caption vectors are made at load time)",
    )
    query_text_model: str | None = Field(
        None,
        description="a text tower aligned to the CLIP image space for text queries (images still go "
        "through CLIP), e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1 for "
        "openai/clip-vit-base-patch32: a hub id or folder (needs torch), or its ONNX export folder "
        "(`mediasearch export-text-tower`, torch-free); unset: CLIP's own text tower",
    )
    query_text_aligned_to: str | None = Field(
        None,
        description="the image model the query text tower was trained for (a hub id, e.g. "
        "openai/clip-vit-base-patch32); set, text queries against an index of another model are refused",
    )
    video_encoder: str | None = Field(
        None,
        description="a trained video encoder (`mediasearch train video-encoder`'s OUT/encoder): ingest "
        "stores its feature with every video, for `similar --encoder learned`",
    )
    tags_top_n: int = Field(10, ge=1, description="tags kept per video")
    tags_min_frames: int = Field(2, ge=1, description="frames that must carry a tag for the video to get it")
    hybrid_keyword_weight: float = Field(defaults.HYBRID_KEYWORD_WEIGHT, ge=0, le=1)
    hybrid_clip_weight: float = Field(defaults.HYBRID_CLIP_WEIGHT, ge=0, le=1)

    index_backend: IndexBackend = IndexBackend.LANCEDB
    collection: str = Field("media", pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    lancedb_uri: str = Field("mediasearch-data/lancedb")
    index_refresh_s: float = Field(
        defaults.INDEX_REFRESH_S,
        ge=0,
        le=3600,
        description="a running server sees other processes' committed writes within this many seconds "
        "(LanceDB; 0: on every read); OpenSearch's own refresh interval (1 s) bounds it there",
    )
    vector_codes: VectorCodes = Field(
        VectorCodes.OFF,
        description="binary codes for k-NN: 1 bit per dimension (32x smaller than float32), searched by "
        "Hamming distance then re-ranked exactly on the floats. LanceDB: random or itq (learned) rotation; "
        "OpenSearch: either turns on the on_disk mode with 32x compression and rescoring (the plugin's "
        "own 1-bit quantiser). Set before a collection is created on OpenSearch",
    )
    codes_oversample: int = Field(
        defaults.CODES_OVERSAMPLE,
        ge=1,
        le=100,
        description="candidates per result taken from the codes before the exact re-rank",
    )
    opensearch_url: str | None = None
    opensearch_aws_region: str | None = Field(None, description="set on AWS to sign requests with SigV4")
    opensearch_username: str | None = None
    opensearch_password: SecretStr | None = None

    encoder_backend: EncoderBackend = EncoderBackend.LOCAL
    sagemaker_endpoint: str | None = None

    # Batch transform runs on a SageMaker instance (a GPU one by default) reading from S3, not on this
    # machine: it takes larger batches than `batch_size`, and more fetch threads than `decode_workers`
    # because each S3 read mostly waits on the network.
    sagemaker_batch_size: int = Field(64, ge=1, description="images per forward pass on a transform instance")
    sagemaker_decode_workers: int = Field(
        8, ge=1, description="fetch + decode threads on a transform instance"
    )
    stack: str | None = Field(None, description="CloudFormation stack whose outputs the `aws` commands read")

    failpoint: str | None = Field(
        None, description="testing only: SIGKILL the process at this point (see core/failpoints.py)"
    )
    log_level: str | None = Field(
        None, description="root log level; unset: WARNING for commands, INFO for the API (its request lines)"
    )
    api_key: SecretStr | None = Field(None, description="when set, requests need the header x-api-key")
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    cors_origins: list[str] = Field(default_factory=list)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1024)
    max_image_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="largest query image (base64 `image` decoded, or `image_uri`)"
    )
    query_cache_size: int = Field(
        1024,
        ge=0,
        description="query-text vectors remembered per query model (LRU, keyed by model identity and "
        "text; about 2 KiB each at 512-d); 0 turns the cache off",
    )
    query_spin: bool = Field(
        True,
        description="the query side's ONNX Runtime threads busy-wait between operators: lower latency "
        "where the server has its cores (ViT-B/32 text query 7.0 vs 8.5 ms p50 on 2 idle cores); turn "
        "off where it shares them with ingests or other jobs (there, spinning measured 3x slower)",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
