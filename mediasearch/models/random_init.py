"""Randomly initialised checkpoints built from configs, saved like hub checkpoints.

Nothing can be downloaded in tests, CI or the benchmarks, so they build these and load them through
the same `from_pretrained` path as real weights. `size="base"` has ViT-B/32's shapes (the compute of
the real model); `size="tiny"` is for fast tests. Their embeddings are noise, their code paths real.
The captioner's `size="base"` has ViT-GPT2's shapes instead (ViT-B/16 at 224 + GPT2-small, full vocab).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

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


def word_tokens(vocab: dict[str, int], words: Sequence[str]) -> list[tuple[str, str]]:
    """Add each lower-case ASCII word of `words` to `vocab` as one token, with the BPE merges that reach
    it; returns the merges, best first.

    Without merges every character is a token, so a query of eight words is ~45 tokens where CLIP's
    real vocabulary (49,408 entries) spells common English words as one token each, and a timing of
    the text tower would be of a sequence four times too long. The merges are learnt as BPE learns
    them (the most frequent adjacent pair first, applied everywhere), so that applying them in rank
    order, as the tokenizer does, rebuilds each word; merges made up word by word would cut across
    each other ("re" of "red" splitting "street").
    """
    spelt: dict[str, list[str]] = {}
    for word in words:
        if not (word.isascii() and word.isalpha() and word.islower()) or len(word) < 2:
            raise ValueError(f"word tokens are lower-case ASCII words of 2+ letters, got {word!r}")
        spelt[word] = [*word[:-1], word[-1] + "</w>"]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for parts in spelt.values() for pair in pairwise(parts))
        if not counts:
            return merges
        # Ties broken by the pair itself: the same words always give the same merges.
        pair = max(counts, key=lambda p: (counts[p], p))
        if pair not in merges:
            merges.append(pair)
        vocab.setdefault(pair[0] + pair[1], len(vocab))
        for word, parts in spelt.items():
            merged: list[str] = []
            for part in parts:
                if merged and (merged[-1], part) == pair:
                    merged[-1] += part
                else:
                    merged.append(part)
            spelt[word] = merged


def build_random_clip(
    path: str | Path,
    size: Literal["tiny", "base"] = "tiny",
    seed: int = 0,
    projection_dim: int = 16,
    words: Sequence[str] = (),
) -> Path:
    """A randomly initialised CLIP saved like a hub checkpoint; `projection_dim` sizes a tiny one's vectors.

    `words` become one token each (`word_tokens`), as in the real vocabulary; other text is spelt byte
    by byte."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    path = Path(path)
    vocab = byte_level_vocab()
    merges = word_tokens(vocab, words)
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
            projection_dim=projection_dim,
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
    # transformers 5 annotates `merges` as list[str], but its tokenizers backend takes only pairs.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def _gpt2_byte_level_vocab(size: int | None = None) -> dict[str, int]:
    """GPT2-style byte-level BPE vocabulary with no merges: every byte is a token, EOS is the last id.

    `size` pads it with filler words up to a real vocabulary's size: the LM head's width is much of a
    decoding step's cost, so a benchmark with 257 tokens would flatter the captioner. Fillers are
    never produced by tokenising (there are no merges to reach them) but decode to words.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    for i in range((size or 0) - len(vocab) - 1):
        vocab[f"\u0120w{i}"] = len(vocab)  # U+0120 is byte-level BPE's space: decodes to " w<i>"
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_random_captioner(path: str | Path, size: Literal["tiny", "base"] = "tiny", seed: int = 0) -> Path:
    """A random ViT encoder + GPT2 decoder saved like `nlpconnect/vit-gpt2-image-captioning`."""
    from transformers import (
        GPT2Config,
        GPT2Tokenizer,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    path = Path(path)
    if size == "tiny":
        vocab = _gpt2_byte_level_vocab()
        encoder = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
        decoder_shape: dict[str, Any] = dict(n_embd=32, n_layer=2, n_head=4, n_positions=128)
        side = 32
    else:
        vocab = _gpt2_byte_level_vocab(50257)
        encoder = ViTConfig()  # ViT-B/16 at 224, the encoder of ViT-GPT2
        decoder_shape = {}  # GPT2Config's defaults are GPT2-small
        side = 224
    eos = vocab["<|endoftext|>"]
    decoder = GPT2Config(
        vocab_size=len(vocab),
        bos_token_id=eos,
        eos_token_id=eos,
        add_cross_attention=True,
        # Tied random embeddings make the LM head echo its input, the start token (EOS): every caption
        # would be empty. Untied, captions vary with the image. The compute is the same either way.
        tie_word_embeddings=False,
        **decoder_shape,
    )
    decoder.is_decoder = True  # a PretrainedConfig attribute GPT2Config's signature does not list
    # GPT2 has no pad token and starts from EOS, as ViT-GPT2 does; generate() needs all three set.
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder,
        decoder,
        decoder_start_token_id=eos,
        pad_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    GPT2Tokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    # ViT-GPT2's preprocessing: a plain resize to a square, then mean/std 0.5.
    ViTImageProcessorPil(
        size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(path)
    return path


# Whole words for the tiny vocabulary, so common test sentences are not spelled letter by letter.
_WORDPIECE_WORDS = (
    "the of on in with and is are at to near next dog dogs puppy cat car red blue green man woman "
    "people child boy girl street road grass lawn park beach water sea sky tree house table food pizza "
    "runs running sitting parked sports across"
)


def build_random_text_embedder(path: str | Path, size: Literal["tiny"] = "tiny", seed: int = 0) -> Path:
    """A tiny random BERT with a WordPiece tokenizer, saved like a sentence-transformers checkpoint."""
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    if size != "tiny":
        raise ValueError(f"unknown size {size!r}: only 'tiny' is built")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # Single characters and ##-continuations make every lowercase ASCII word tokenisable.
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(chars) + list(".,!?'\"-:;()") + [f"##{c}" for c in chars] + _WORDPIECE_WORDS.split()
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
