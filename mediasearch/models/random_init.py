"""Randomly initialised checkpoints built from configs, saved like hub checkpoints.

Nothing can be downloaded in tests, CI or the benchmarks, so they build these and load them through
the same `from_pretrained` path as real weights. `size="base"` has ViT-B/32's shapes (the compute of
the real model); `size="tiny"` is for fast tests. Their embeddings are noise, their code paths real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch


def byte_level_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: every byte is a token, so any text tokenises."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_random_clip(path: str | Path, size: Literal["tiny", "base"] = "tiny", seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = Path(path)
    vocab = byte_level_vocab()
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    if size == "tiny":
        config = CLIPConfig(
            text_config=dict(
                vocab_size=len(vocab),
                hidden_size=32,
                intermediate_size=64,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=77,
                **special,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_attention_heads=4,
                num_hidden_layers=2,
                image_size=32,
                patch_size=8,
            ),
            projection_dim=16,
        )
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    else:
        config = CLIPConfig(text_config=dict(vocab_size=len(vocab), **special))  # ViT-B/32 shapes
        image_processor = CLIPImageProcessorPil()
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    CLIPProcessor(
        image_processor=image_processor, tokenizer=CLIPTokenizer(vocab=vocab, merges=[])
    ).save_pretrained(path)
    return path
