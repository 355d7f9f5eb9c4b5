"""A query text tower aligned to a CLIP image space: a sentence-transformers text model, run with torch.

sentence-transformers' multilingual CLIP text models (e.g. `sentence-transformers/clip-ViT-B-32-multilingual-v1`,
trained by distillation so that its vectors of 50+ languages land where `clip-ViT-B-32`'s English text
vectors do) are a transformer (DistilBERT / XLM-R), a pooling step and a Dense projection to the CLIP
dimension. The checkpoint says so in `modules.json`; this module reads those three modules and runs them
with plain transformers + torch (the sentence-transformers package is not a dependency), then
L2-normalises as CLIP vectors are.

`export_text_tower` writes the same computation as one ONNX graph (plus tokenizer.json and meta.json),
which `mediasearch.encoders.onnx_text_tower` runs without torch: the query side's torch-free path.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mediasearch.core.vectors import l2_normalise
from mediasearch.encoders.onnx_text_tower import TOWER_META, TOWER_ONNX
from mediasearch.models.base import LazyModel
from mediasearch.models.onnx_export import export_text_graph

# An export must agree with the PyTorch tower to this cosine, or it is discarded.
EXPORT_MIN_COSINE = 0.9999

_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": torch.nn.Identity,
    "torch.nn.modules.activation.Tanh": torch.nn.Tanh,
}
_POOLING = ("pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_max_tokens")


def snapshot(source: str) -> Path:
    """The folder of a local checkpoint, or of a hub id's snapshot (downloaded unless HF_HUB_OFFLINE)."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source))


class _Tower(torch.nn.Module):
    """transformer -> pooling -> Dense layers -> L2 normalisation: token ids to unit vectors."""

    def __init__(self, transformer: Any, pooling: str, dense: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.transformer = transformer
        self.pooling = pooling
        self.dense = torch.nn.Sequential(*dense)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "pooling_mode_cls_token":
            pooled = hidden[:, 0]
        elif self.pooling == "pooling_mode_max_tokens":
            pooled = (hidden + (mask - 1) * 1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        out = self.dense(pooled)
        return torch.nn.functional.normalize(out, dim=-1)


def _dense(folder: Path) -> torch.nn.Module:
    config = json.loads((folder / "config.json").read_text())
    linear = torch.nn.Linear(
        int(config["in_features"]), int(config["out_features"]), bias=bool(config["bias"])
    )
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{folder}: unsupported Dense activation {activation!r}")
    return torch.nn.Sequential(linear, _ACTIVATIONS[activation]())


def load_tower(folder: Path) -> tuple[_Tower, Any, int]:
    """The tower, its tokenizer and its max tokens, from a sentence-transformers checkpoint folder."""
    from transformers import AutoModel, AutoTokenizer

    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        raise ValueError(
            f"{folder} has no modules.json: a query text tower is a sentence-transformers model "
            "(transformer, pooling, Dense), e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1"
        )
    modules = json.loads(modules_file.read_text())
    transformer_path, pooling, dense = None, "pooling_mode_mean_tokens", []
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind == "Transformer":
            transformer_path = path
        elif kind == "Pooling":
            config = json.loads((path / "config.json").read_text())
            pooling = next((m for m in _POOLING if config.get(m)), pooling)
        elif kind == "Dense":
            dense.append(_dense(path))
        elif kind != "Normalize":  # the tower normalises anyway
            raise ValueError(f"{folder}: unsupported sentence-transformers module {module.get('type')!r}")
    if transformer_path is None:
        raise ValueError(f"{folder}: modules.json names no Transformer module")
    transformer = AutoModel.from_pretrained(transformer_path)
    tokenizer = AutoTokenizer.from_pretrained(transformer_path)
    positions = int(getattr(transformer.config, "max_position_embeddings", 512))
    st_config = transformer_path / "sentence_bert_config.json"
    max_tokens = positions
    if st_config.is_file():
        max_tokens = min(int(json.loads(st_config.read_text()).get("max_seq_length") or positions), positions)
    return _Tower(transformer, pooling, dense), tokenizer, max_tokens


class TextTower(LazyModel):
    """Unit-length float32 query text vectors in a CLIP image space, loaded on first use."""

    task = "query text tower"
    files = "modules.json, the transformer's config, weights and tokenizer, and the Dense layer"

    def __init__(
        self,
        name: str,
        device: str = "auto",
        batch_size: int = 32,
        digest_cache: str | Path | None = None,
    ) -> None:
        super().__init__(name, device, batch_size, digest_cache)
        self._tokenizer: Any = None
        self.max_tokens = 0
        self._dim = 0

    def _load(self, source: str) -> Any:
        tower, self._tokenizer, self.max_tokens = load_tower(snapshot(source))
        with torch.inference_mode():
            probe = self._tokenizer(["a"], return_tensors="pt")
            self._dim = int(tower(probe["input_ids"], probe["attention_mask"]).shape[-1])
        return tower

    @property
    def dim(self) -> int:
        self.load()
        return self._dim

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self.model
        assert self.placement is not None
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.placement.device)
            out.append(model(tokens["input_ids"], tokens["attention_mask"]).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))


def export_text_tower(source: str, dest: str | Path, opset: int = 17) -> Path:
    """Write the tower as one ONNX graph into `dest`, with its tokenizer.json and meta; check agreement."""
    from mediasearch.core.model_identity import identify

    folder = snapshot(source)
    tower, tokenizer, max_tokens = load_tower(folder)
    tower.eval()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    examples = ["a photo", "两个孩子在一栋房子前面奔跑 in front of a house"]
    tokens = tokenizer(examples, padding=True, return_tensors="pt")
    started = time.perf_counter()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings; the agreement check below is the proof
        export_text_graph(tower, tokens, dest / TOWER_ONNX, opset)
        expected = tower(tokens["input_ids"], tokens["attention_mask"]).numpy()
    tokenizer.save_pretrained(dest)  # tokenizer.json: what the torch-free runner tokenises with
    meta = {
        "source": source,
        "identity": identify(str(folder) if Path(source).expanduser().is_dir() else source).id,
        "dim": int(expected.shape[-1]),
        "max_tokens": max_tokens,
        "pad_token": tokenizer.pad_token,
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    (dest / TOWER_META).write_text(json.dumps(meta, indent=2) + "\n")
    from mediasearch.encoders.onnx_text_tower import OnnxTextTower

    got = OnnxTextTower(str(dest)).embed(examples)
    cosine = float((got * l2_normalise(expected)).sum(axis=1).min())
    if cosine < EXPORT_MIN_COSINE:
        raise RuntimeError(f"the ONNX text tower disagrees with PyTorch (min cosine {cosine:.5f})")
    meta["agreement_min_cosine"] = round(cosine, 6)
    (dest / TOWER_META).write_text(json.dumps(meta, indent=2) + "\n")
    return dest


def build_random_text_tower(
    path: str | Path, out_dim: int, seed: int = 0, size: Literal["tiny", "base"] = "tiny"
) -> Path:
    """A random multilingual-CLIP-style text tower (DistilBERT + mean pooling + Dense to `out_dim`), saved
    as a sentence-transformers checkpoint; its vocabulary holds lowercase ASCII and the CJK characters of
    the README's example query, so Chinese and English both tokenise. `base`: the shapes of
    clip-ViT-B-32-multilingual-v1 (distilbert-base-multilingual-cased: 119547 tokens, 768 wide, 6 layers),
    for benchmarks."""
    from safetensors.torch import save_file
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel  # type: ignore[attr-defined]

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    cjk = "两个孩子在一栋房子前面奔跑狗海滩的人"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *cjk, *(f"##{c}" for c in chars)]
    base = size == "base"
    if base:  # filler entries up to the real vocabulary's size: the embedding matrix costs what it does
        tokens += [f"[unused{i}]" for i in range(119547 - len(tokens))]
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=False)  # DistilBERT's WordPiece
    width = 768 if base else 32
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=width,
        n_layers=6 if base else 2,
        n_heads=12 if base else 4,
        hidden_dim=3072 if base else 64,
        max_position_embeddings=512 if base else 64,
    )
    torch.manual_seed(seed)
    DistilBertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128 if base else 48, "do_lower_case": False})
    )
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": width, "pooling_mode_mean_tokens": True})
    )
    (path / "2_Dense").mkdir(exist_ok=True)
    (path / "2_Dense" / "config.json").write_text(
        json.dumps(
            {
                "in_features": width,
                "out_features": out_dim,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            }
        )
    )
    dense = torch.randn(out_dim, width) / width**0.5
    save_file({"linear.weight": dense}, str(path / "2_Dense" / "model.safetensors"))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    return path
