"""CLIP's two towers on ONNX Runtime, without torch or transformers.

`OnnxClipModel` has `ClipModel`'s public methods (`name`, `dim`, `load`, `preprocess`, `embed_pixels`,
`embed_images`, `embed_texts`), so the transform runner, the SageMaker handler and the query side can
take either. Like the torch models it loads on first use (Immich-ML style): creating one is free.

What it loads is an export folder (see `mediasearch.encoders.onnx_cache`): `name` itself (what a Lambda
image carries), the `onnx/` folder inside a checkpoint directory (what model.tar.gz carries), or, for
any hub id or checkpoint directory, the export of its identity in the cache, made there on first use
when torch is installed.

Tokenising uses the `tokenizers` library on the checkpoint's tokenizer.json; image preprocessing is
CLIP's (shortest side to the configured size, bicubic; centre crop; rescale; normalise) in PIL and
numpy, matching transformers' CLIPImageProcessor to float precision.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image

from mediasearch.core.model_identity import ModelIdentity, identify
from mediasearch.core.vectors import l2_normalise
from mediasearch.encoders.onnx_cache import (
    PRECISIONS,
    TOWERS,
    OnnxCacheError,
    export_dir,
    export_identity,
    identity_suffix,
    is_export_dir,
    packaged_export,
    read_meta,
)

log = logging.getLogger(__name__)

_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, what CLIPImageProcessor defaults to
_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)


class OnnxModelError(RuntimeError):
    """The ONNX model cannot be loaded or run; the message names it and says what to do."""


# -- image preprocessing --------------------------------------------------------------------------


def _edge(value: Any, *keys: str) -> int | None:
    """A size from an image-processor config, which may be an int or a dict (old and new formats)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


@dataclass(frozen=True)
class ClipImagePreprocessor:
    """CLIPImageProcessor's steps, read from its config, in PIL + numpy."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = _DEFAULT_MEAN
    std: tuple[float, float, float] = _DEFAULT_STD
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClipImagePreprocessor:
        """From an image-processor dict (preprocessor_config.json, or processor_config.json's part)."""
        size = config.get("size", 224)
        shortest = _edge(size, "shortest_edge")
        if shortest is None:
            # {"height", "width"} means a plain square resize, which is not CLIP's recipe.
            raise OnnxModelError(f"unsupported image processor size {size!r}: CLIP resizes the shortest edge")
        crop = config.get("crop_size", shortest)
        crop_h, crop_w = _edge(crop, "height", "shortest_edge"), _edge(crop, "width", "shortest_edge")
        mean, std = config.get("image_mean", _DEFAULT_MEAN), config.get("image_std", _DEFAULT_STD)
        return cls(
            shortest_edge=shortest,
            crop_height=crop_h or shortest,
            crop_width=crop_w or shortest,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            mean=tuple(float(x) for x in mean),  # type: ignore[arg-type]
            std=tuple(float(x) for x in std),  # type: ignore[arg-type]
            do_resize=bool(config.get("do_resize", True)),
            do_center_crop=bool(config.get("do_center_crop", True)),
            do_rescale=bool(config.get("do_rescale", True)),
            do_normalize=bool(config.get("do_normalize", True)),
        )

    @classmethod
    def from_dir(cls, folder: str | Path) -> ClipImagePreprocessor:
        """From preprocessor_config.json, else the image part of processor_config.json (transformers 5)."""
        folder = Path(folder)
        pre, proc = folder / "preprocessor_config.json", folder / "processor_config.json"
        if pre.is_file():
            return cls.from_config(json.loads(pre.read_text()))
        if proc.is_file():
            data = json.loads(proc.read_text())
            return cls.from_config(data.get("image_processor", data))
        raise OnnxModelError(f"{folder} has no preprocessor_config.json or processor_config.json")

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One image to CHW float32, as CLIPImageProcessor computes it (same rounding and order)."""
        image = image.convert("RGB")
        if self.do_resize:
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            if (new_w, new_h) != image.size:
                image = image.resize((new_w, new_h), resample=Image.Resampling(self.resample))
        array = np.asarray(image)  # HWC uint8
        if self.do_center_crop:
            array = self._center_crop(array)
        pixels: np.ndarray = array
        if self.do_rescale:
            # float64 then float32, as transformers' rescale does, so the values match to the last bit.
            pixels = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            pixels = pixels.astype(np.float32, copy=False)
            pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)

    def _center_crop(self, array: np.ndarray) -> np.ndarray:
        height, width = array.shape[:2]
        ch, cw = self.crop_height, self.crop_width
        top, left = (height - ch) // 2, (width - cw) // 2
        if top >= 0 and left >= 0:
            return array[top : top + ch, left : left + cw]
        # Smaller than the crop: zero-pad to at least the crop size, centred, then crop (transformers' way).
        new_h, new_w = max(ch, height), max(cw, width)
        padded = np.zeros((new_h, new_w, array.shape[2]), array.dtype)
        top_pad, left_pad = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
        padded[top_pad : top_pad + height, left_pad : left_pad + width] = array
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
        return padded[top : top + ch, left : left + cw]


# -- tokenizer ------------------------------------------------------------------------------------


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class ClipTokenizer:
    """tokenizer.json through the `tokenizers` library: padded to the longest text, truncated to the model."""

    def __init__(self, folder: str | Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise OnnxModelError(f"{folder} has no tokenizer.json (a fast tokenizer file is required)")
        self._tokenizer = Tokenizer.from_file(str(path))
        config: dict[str, Any] = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                config = {**json.loads((folder / name).read_text()), **config}
        # CLIP pads with its end-of-text token; a checkpoint may name another pad token.
        pad = _token_text(config.get("pad_token")) or _token_text(config.get("eos_token")) or "<|endoftext|>"
        pad_id = self._tokenizer.token_to_id(pad)
        if pad_id is None:
            raise OnnxModelError(f"pad token {pad!r} is not in {path}")
        self.max_length = max_length
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 (N, L) with L the longest text's length."""
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask


# -- sessions ---------------------------------------------------------------------------------------


def cpu_threads() -> int:
    """The cores this process may run on (a container's CPU set, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def providers_for(device: str) -> list[Any]:
    """ONNX Runtime providers for a device setting (`auto`, `cpu`, `cuda`, `cuda:1`), best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    kind, _, index = device.partition(":")
    if kind == "auto":
        kind = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise OnnxModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if "CUDAExecutionProvider" not in available:
        raise OnnxModelError(
            f"device {device!r} was asked for but this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def make_session(path: Path, device: str = "cpu", threads: int | None = None, spin: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One op at a time, each over every core: these graphs are a chain of big MatMuls with no branches
    # worth running side by side, and inter-op threads would only compete with the intra-op pool.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    # Idle pool threads busy-wait by default, for lower latency on a quiet machine. Here they would steal
    # the cores that decode threads and other processes need: with other jobs on this 2-core machine,
    # spinning off measured faster (int8 text 7.6 vs 22.9 ms p50, image 23 vs 17 img/s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise to a user
    providers = providers_for(device)
    session = ort.InferenceSession(str(path), options, providers=providers)
    if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        # ORT silently falls back to CPU when the CUDA libraries fail to load; an explicit ask must not.
        raise OnnxModelError(f"CUDA provider failed to start for {path.name}; check the CUDA/cuDNN install")
    return session


# -- the model --------------------------------------------------------------------------------------


def resolve_export(
    name: str,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    auto_export: bool = True,
    digest_cache: str | Path | None = None,
) -> Path:
    """The export folder for `name`: `name` itself if it is one, the export its checkpoint folder carries
    (`onnx/`, if it was made from these very weights), else the cached export of its identity.

    A missing export is made on first use when `auto_export` and torch is installed; without torch (a
    query Lambda) the error says to run `mediasearch export-onnx` where torch is.
    """
    if is_export_dir(Path(name).expanduser()):
        return Path(name).expanduser()
    try:
        packaged = packaged_export(name)
        if packaged is not None:
            # Weights edited after packaging would make the shipped graphs another model: check.
            if read_meta(packaged).get("model_identity") == identify(name, cache_dir=digest_cache).id:
                return packaged
            log.warning("%s was exported from other weights than %s's; not using it", packaged, name)
        identity = export_identity(name, revision, digest_cache)
    except OnnxCacheError as exc:
        raise OnnxModelError(str(exc)) from exc
    folder = export_dir(identity, cache_dir)
    if is_export_dir(folder):
        return folder
    if not auto_export:
        raise OnnxModelError(f"no ONNX export of {name!r} at {folder}; run `mediasearch export-onnx` first")
    try:
        from mediasearch.models.onnx_export import export_clip
    except ImportError as exc:
        raise OnnxModelError(
            f"no ONNX export of {name!r} at {folder}, and exporting needs torch and transformers "
            f"({exc}); run `mediasearch export-onnx` where they are installed and ship the folder"
        ) from exc
    # Once per model and cache folder, but long (about 15 s for ViT-B/32 on 2 cores): say why we wait.
    log.warning("exporting %s to ONNX on first use, into %s", name, folder)
    return export_clip(name, cache_dir=cache_dir, revision=revision, digest_cache=digest_cache)


class OnnxClipModel:
    """CLIP image and text embeddings from ONNX Runtime, L2-normalised float32; a drop-in for ClipModel."""

    task = "CLIP model (ONNX)"

    def __init__(
        self,
        name: str,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        revision: str | None = None,
        threads: int | None = None,
        auto_export: bool = True,
        spin: bool = False,
        digest_cache: str | Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.name = name
        self.batch_size = batch_size
        self.precision = precision
        self.cache_dir = cache_dir
        self.revision = revision
        self.threads = threads
        self.auto_export = auto_export
        self.spin = spin
        self.digest_cache = digest_cache
        self._device = device
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._preprocessor: ClipImagePreprocessor | None = None
        self._tokenizer: ClipTokenizer | None = None
        self.folder: Path | None = None
        self.meta: dict[str, Any] = {}
        self._identity: ModelIdentity | None = None

    @property
    def loaded(self) -> bool:
        """Both towers are ready (what `ClipModel.loaded` means)."""
        return all(tower in self._sessions for tower in TOWERS)

    def load(self, towers: Sequence[str] = TOWERS) -> Self:
        """Open the export and the sessions of `towers` (both by default).

        A text-only caller (the query side) can pass `("text",)`: the image tower, over twice the text
        tower's size, then loads only if an image query comes.
        """
        with self._lock:
            self._open()
            assert self.folder is not None
            for tower in towers:
                if tower in self._sessions:
                    continue
                path = self.folder / self.meta["files"][self.precision][tower]
                try:
                    self._sessions[tower] = make_session(path, self._device, self.threads, self.spin)
                except Exception as exc:  # onnxruntime raises its own exception types
                    if isinstance(exc, OnnxModelError):
                        raise
                    raise OnnxModelError(f"cannot load {self.task} {self.name!r} from {path}: {exc}") from exc
        return self

    def _open(self) -> None:
        """Find the export and read what every tower needs (meta, tokenizer, preprocessing); no sessions."""
        if self.folder is not None:
            return
        folder = resolve_export(self.name, self.cache_dir, self.revision, self.auto_export, self.digest_cache)
        try:
            meta = read_meta(folder)
            if "model_identity" not in meta:
                raise KeyError("model_identity")
            if self.precision not in meta["files"]:
                raise KeyError(f"no {self.precision} graphs in this export")
            preprocessor = ClipImagePreprocessor.from_dir(folder)
            tokenizer = ClipTokenizer(folder, int(meta["max_text_tokens"]))
        except (OSError, KeyError, ValueError, OnnxCacheError) as exc:
            raise OnnxModelError(f"cannot load {self.task} {self.name!r} from {folder}: {exc}") from exc
        self.meta, self._preprocessor, self._tokenizer = meta, preprocessor, tokenizer
        self._identity = None  # a hub id's commit may have become known with the export
        self.folder = folder  # last: it marks the rest as read

    def _session(self, tower: str) -> Any:
        session = self._sessions.get(tower)
        return session if session is not None else self.load((tower,))._sessions[tower]

    def _opened(self) -> Self:
        if self.folder is None:
            with self._lock:
                self._open()
        return self

    @property
    def identity(self) -> ModelIdentity:
        """The checkpoint's identity as `ClipModel.identity` gives it (recorded at export).

        fp32 graphs agree with PyTorch to cosine >= 0.9999, so they keep the checkpoint's identity and
        their vectors mix with PyTorch's; int8 vectors move scores by ~1e-3, so they are another model.
        Before the export is opened it is computed from the checkpoint as ClipModel does, so asking
        (e.g. `mediasearch load`, which only needs the output folder's name) never exports. Its source
        is the checkpoint (what a generation reloads), or the export folder when that is all there is.
        """
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    def _compute_identity(self) -> ModelIdentity:
        suffix = identity_suffix(self.precision)
        if is_export_dir(Path(self.name).expanduser()):
            meta = self._opened().meta
            return ModelIdentity(id=f"{meta['model_identity']}{suffix}", source=str(self.folder))
        try:
            # The commit the export will be (or was) made from, so the identity does not change when
            # the export is opened; offline with nothing cached there is none to know yet.
            checkpoint = export_identity(self.name, self.revision, self.digest_cache)
        except OnnxCacheError:
            checkpoint = identify(self.name, self.revision, cache_dir=self.digest_cache)
        # Once opened, the export's record wins: it names the commit a hub id resolved to at export.
        model_id = self.meta["model_identity"] if self.folder is not None else checkpoint.id
        return ModelIdentity(id=f"{model_id}{suffix}", source=checkpoint.source)

    @property
    def dim(self) -> int:
        return int(self._opened().meta["dim"])

    @property
    def max_text_tokens(self) -> int:
        return int(self._opened().meta["max_text_tokens"])

    @property
    def providers(self) -> list[str]:
        """The providers the sessions run on, best first (e.g. CUDA, then CPU for unsupported ops)."""
        return list(self._session("text").get_providers())

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize, crop and normalise one image to CHW float32; pure CPU work, safe in worker threads."""
        preprocessor = self._opened()._preprocessor
        assert preprocessor is not None
        return preprocessor(image)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a (N, 3, H, W) batch that `preprocess` produced."""
        session = self._session("image")
        out: list[np.ndarray] = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = np.ascontiguousarray(pixels[start : start + self.batch_size], dtype=np.float32)
            out.append(session.run(None, {"pixel_values": chunk})[0])
        # The graph normalises already; again here so int8 rounding never leaves a row off unit length.
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([self.preprocess(im) for im in images]))

    # -- text -----------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        session, tokenizer = self._session("text"), self._tokenizer
        assert tokenizer is not None
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            ids, mask = tokenizer(texts[start : start + self.batch_size])
            out.append(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)
