"""Export CLIP's towers to ONNX (fp32 and dynamic int8) into the identity-keyed cache.

The one torch user of the ONNX backend: the runtime (`mediasearch.encoders.onnx_clip`) only reads what
this writes. Each tower is wrapped so its graph ends in the L2-normalised projected embedding:

- image: `pixel_values` (N, 3, H, W) float32 -> `embeddings` (N, D)
- text: `input_ids`, `attention_mask` (N, L) int64 -> `embeddings` (N, D)

with N (and L) dynamic, exported by the TorchScript exporter (`dynamo=False`) at opset 17. The int8
copies are `onnxruntime.quantization.quantize_dynamic` with QInt8 weights. Before a folder is
published, the fp32 graphs are checked against PyTorch through the runtime's own tokenizer and
preprocessing (min cosine >= `FP32_MIN_COSINE`), and the int8 agreement is recorded in meta.json.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mediasearch.core.model_identity import ModelIdentity
from mediasearch.encoders.onnx_cache import (
    FORMAT_VERSION,
    META_NAME,
    RUNTIME_FILES,
    export_dir,
    export_identity,
    export_lock,
    is_export_dir,
    onnx_file,
    publish,
    staging_dir,
)

log = logging.getLogger(__name__)

OPSET = 17
STALE_STAGING_S = 3600.0  # a staging folder untouched this long belongs to an exporter that died
FP32_MIN_COSINE = 0.9999  # below this the graph is wrong, not merely rounded: never publish it
# Per-channel weight scales: on ViT-B/32 shapes (bench/bench_onnx.py) they ran as fast as per-tensor
# (image ~105 img/s both, text 5.5 vs 5.2 ms) and agreed better with fp32 (min cosine image 0.99982 vs
# 0.99973, text 0.99945 vs 0.99918; top-10 overlap over the eval queries 0.77 vs 0.74).
PER_CHANNEL = True
# MatMul is nearly all of a ViT's FLOPs; Gather is the embedding tables (a quarter of the text tower's
# bytes). Conv (the patch embedding) is left in fp32: as ConvInteger it halved the image tower's speed.
INT8_OP_TYPES: tuple[str, ...] = ("MatMul", "Gather")

# Texts for the export-time agreement check: lengths vary so padding is exercised, and the last one is
# longer than any CLIP context so truncation is too.
AGREEMENT_TEXTS: tuple[str, ...] = (
    "a photo of a dog",
    "two kids running in front of a house",
    "a red circle on a white background",
    "x",
    "A Yellow STAR, drawn   with a thick outline!",
    "an aerial view of a city at night with many lights " * 12,
)


class ExportError(RuntimeError):
    """The export failed, or its graphs do not agree with PyTorch."""


class _ImageTower(torch.nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # transformers 5: the projected embedding is the output object's pooler_output.
        features = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(features, dim=-1)


class _TextTower(torch.nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask
        ).pooler_output
        return torch.nn.functional.normalize(features, dim=-1)


def agreement_images(size: int, n: int = 6, seed: int = 0) -> list[Image.Image]:
    """Deterministic test images: landscape, portrait, square and small, so resize and crop all vary."""
    rng = np.random.default_rng(seed)
    shapes = [(size + 96, size + 32), (size - 20, size + 80), (size, size), (size // 2, size // 3)]
    images: list[Image.Image] = []
    for i in range(n):
        w, h = shapes[i % len(shapes)]
        w, h = max(w, 8), max(h, 8)
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        # Upscaled noise has structure at several scales, unlike per-pixel noise that resizing averages away.
        images.append(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR))
    return images


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float((a * b).sum(-1).min())


def export_clip(
    name: str,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    force: bool = False,
    opset: int = OPSET,
    per_channel: bool = PER_CHANNEL,
    digest_cache: str | Path | None = None,
) -> Path:
    """Export `name` (hub id or checkpoint directory) unless its export is cached; return the folder.

    `cache_dir`: the export cache (default `onnx_cache.default_export_root()`); `digest_cache`: where
    checkpoint digests are remembered (see `core.model_identity.identify`).
    """
    identity = export_identity(name, revision, digest_cache)
    final = export_dir(identity, cache_dir)
    if not force and is_export_dir(final):
        return final
    with export_lock(final):
        if not force and is_export_dir(final):
            return final  # another process exported it while this one waited for the lock
        _remove_stale_staging(final)
        staging = staging_dir(final)
        try:
            _export_into(staging, name, identity, opset, per_channel)
            if force and final.exists():
                retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(final, retired)
                shutil.rmtree(retired, ignore_errors=True)
            staging.chmod(0o755)  # mkdtemp makes it private; the export is shared like any cache entry
            return publish(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _remove_stale_staging(final: Path, older_than_s: float = STALE_STAGING_S) -> None:
    # Leftovers of a killed exporter. Only old ones: without flock (or with a lock bypassed) another
    # process may be exporting the same identity right now, into its own fresh staging folder.
    cutoff = time.time() - older_than_s
    for path in final.parent.glob(f".{final.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def _source(name: str, identity: ModelIdentity) -> tuple[str, dict[str, Any], Path]:
    """(what from_pretrained loads, its kwargs, the local folder holding the runtime files)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder), {}, folder
    from huggingface_hub import snapshot_download

    # export_identity resolved the commit: load exactly that one, whatever `main` points at by now.
    repo_id, _, commit = identity.id.removeprefix("hub:").partition("@")
    files = snapshot_download(repo_id, revision=commit, allow_patterns=list(RUNTIME_FILES))
    return repo_id, {"revision": commit}, Path(files)


def _export_into(staging: Path, name: str, identity: ModelIdentity, opset: int, per_channel: bool) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # `mediasearch export-onnx` prints one JSON summary, nothing else
    started = time.perf_counter()
    source, kwargs, files_dir = _source(name, identity)
    try:
        model = CLIPModel.from_pretrained(source, **kwargs).eval().float()
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load CLIP model {name!r} to export it: {exc}") from exc

    for fname in RUNTIME_FILES:
        if (files_dir / fname).is_file():
            shutil.copy2(files_dir / fname, staging / fname)
    if not (staging / "tokenizer.json").is_file():
        # A checkpoint with only a slow tokenizer's files: transformers converts it; keep the result.
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
    if not any((staging / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        processor.save_pretrained(staging)

    image_size = int(model.config.vision_config.image_size)
    max_tokens = int(model.config.text_config.max_position_embeddings)
    files = {p: {t: onnx_file(t, p) for t in ("image", "text")} for p in ("fp32", "int8")}
    log.info("exporting %s to ONNX (opset %d)", identity.id, opset)
    _export_towers(model, tokenizer, staging, files["fp32"], image_size, opset)
    op_types = list(INT8_OP_TYPES)
    for tower in ("image", "text"):
        quantise(staging / files["fp32"][tower], staging / files["int8"][tower], per_channel, op_types)

    import onnx
    import onnxruntime
    import transformers

    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        # What documents embedded by this model record, and what keys this folder: kept here so a
        # runtime holding only this folder reports the checkpoint's identity, not the folder's.
        "model_identity": identity.id,
        "model_type": model.config.model_type,
        "opset": opset,
        "dim": int(model.config.projection_dim),
        "image_size": image_size,
        "max_text_tokens": max_tokens,
        "files": files,
        "quantisation": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "weight_type": "QInt8",
            "per_channel": per_channel,
            "op_types": op_types,
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_meta(staging, meta)  # the runtime reads it to check agreement below
    meta["agreement"] = _agreement(model, tokenizer, processor, staging, image_size, max_tokens)
    meta["export_seconds"] = round(time.perf_counter() - started, 2)
    _write_meta(staging, meta)
    fp32 = meta["agreement"]["fp32_vs_torch"]
    if min(fp32["image_min_cosine"], fp32["text_min_cosine"]) < FP32_MIN_COSINE:
        raise ExportError(f"the fp32 ONNX graphs disagree with PyTorch ({fp32}); the export was discarded")


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    import json

    (folder / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")


def _export_towers(
    model: Any, tokenizer: Any, folder: Path, files: dict[str, str], image_size: int, opset: int
) -> None:
    pixels = torch.randn(2, 3, image_size, image_size)
    # Texts of different lengths, so the traced graph keeps the padding mask (an unpadded example could
    # let the attention code drop it, and padded batches would then attend to padding).
    tokens = tokenizer(["a photo", "a photo of a red circle"], padding=True, return_tensors="pt")
    if bool(tokens["attention_mask"].all()):
        raise ExportError("the export example texts were not padded; the text graph would lose its mask")
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter warns about itself and about traced Python branches it cannot keep;
        # the agreement check afterwards is what proves the graphs right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ImageTower(model),
            (pixels,),
            str(folder / files["image"]),
            input_names=["pixel_values"],
            output_names=["embeddings"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        export_text_graph(_TextTower(model), tokens, folder / files["text"], opset)


def export_text_graph(tower: torch.nn.Module, tokens: Any, path: Path, opset: int) -> None:
    """One text tower as an ONNX graph: (input_ids, attention_mask) -> embeddings, batch and sequence
    length dynamic. The caller holds inference mode and the exporter's warnings."""
    torch.onnx.export(
        tower,
        (tokens["input_ids"], tokens["attention_mask"]),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["embeddings"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"},
        },
        opset_version=opset,
        dynamo=False,
    )


def quantise(src: Path, dst: Path, per_channel: bool, op_types: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser prints, and logs on the root logger, a line per node it skips plus advice to run its
    # shape pre-processing (which changed neither the quantised nodes nor the cosines here): noise.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=list(op_types),
            )
    finally:
        logging.disable(previous)


@torch.inference_mode()
def _agreement(
    model: Any, tokenizer: Any, processor: Any, folder: Path, image_size: int, max_tokens: int
) -> dict[str, Any]:
    """Min cosines: fp32 ONNX vs PyTorch, int8 vs fp32 and int8 vs PyTorch, through the runtime's pipeline."""
    from mediasearch.encoders.onnx_clip import OnnxClipModel

    images = agreement_images(image_size)
    texts = list(AGREEMENT_TEXTS)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    ref_images = _ImageTower(model)(pixels).numpy()
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    ref_texts = _TextTower(model)(tokens["input_ids"], tokens["attention_mask"]).numpy()
    out: dict[str, dict[str, np.ndarray]] = {}
    for precision in ("fp32", "int8"):
        onnx_model = OnnxClipModel(str(folder), device="cpu", precision=precision, auto_export=False)
        out[precision] = {"image": onnx_model.embed_images(images), "text": onnx_model.embed_texts(texts)}

    def pair(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            "image_min_cosine": round(min_cosine(a["image"], b["image"]), 6),
            "text_min_cosine": round(min_cosine(a["text"], b["text"]), 6),
        }

    torch_out = {"image": ref_images, "text": ref_texts}
    return {
        "fp32_vs_torch": pair(out["fp32"], torch_out),
        "int8_vs_fp32": pair(out["int8"], out["fp32"]),
        "int8_vs_torch": pair(out["int8"], torch_out),
        "n_images": len(images),
        "n_texts": len(texts),
    }
