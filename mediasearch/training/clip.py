"""Contrastive training of CLIP on (image, text) pairs: fine-tuning a checkpoint, or a small one from scratch.

The loss is CLIP's symmetric InfoNCE with the model's own learnable temperature (`logit_scale`), with
one change: pairs in a batch that share a text are positives for each other (a corpus of captions
from labels repeats them, and treating a copy as a negative would push apart what should match).
Without repeats it is exactly CLIP's loss.

Recall@k of text -> image retrieval on the held-out pairs is measured with the eval harness
(`mediasearch.eval.metrics`) before and after training. The output directory is a saved transformers
checkpoint (weights, tokenizer, image processor), so it works as `MEDIASEARCH_CLIP_MODEL` through the
PyTorch and ONNX engines and packages as a SageMaker model like any hub checkpoint.

From scratch the tokenizer is CLIP's byte-level BPE with merges that make each word of the training
texts one token (any other text still tokenises, byte by byte): a small text tower then learns words
rather than spelling.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, Field, ValidationError
from tqdm import tqdm

from mediasearch.corpus.images import ImageLabel
from mediasearch.eval.metrics import EvalQuery, EvalReport, evaluate, queries_from_labels
from mediasearch.training.config import ClipTrainConfig
from mediasearch.training.pairs import ImageTextPair, PairsError, read_pairs, read_uri_checked

log = logging.getLogger(__name__)

REPORT_NAME = "training_report.json"
KS = (1, 5, 10)
# CLIP clamps its temperature so that logits cannot grow without bound (the paper's 100).
MAX_LOGIT_SCALE = math.log(100.0)


class EpochStats(BaseModel):
    epoch: int
    loss: float = Field(description="mean training loss over the epoch")
    seconds: float
    logit_scale: float = Field(description="exp(logit_scale) at the end of the epoch")


class RecallSummary(BaseModel):
    """The eval harness's means (the per-query rows are left out of the report)."""

    n_queries: int
    recall: dict[int, float]
    mrr: float

    @classmethod
    def of(cls, report: EvalReport) -> RecallSummary:
        return cls(n_queries=report.n_queries, recall=report.recall, mrr=report.mrr)


class ClipTrainReport(BaseModel):
    """What a training run did and how retrieval on the held-out pairs changed; `<out>/training_report.json`."""

    config: ClipTrainConfig
    base_model: str = Field(description="the checkpoint fine-tuned, or 'scratch'")
    out_dir: str
    n_train: int
    n_eval: int
    eval_source: str = Field(description="the eval file, or the holdout fraction of the pairs")
    threads: int
    seconds_data: float = Field(description="reading and preprocessing the images")
    seconds_train: float
    epochs: list[EpochStats]
    before: RecallSummary | None = Field(description="text -> image recall@k on the held-out captions")
    after: RecallSummary | None
    labels_before: RecallSummary | None = Field(
        default=None,
        description="where the eval pairs carry the synthetic labels: the eval harness's colour+shape "
        "queries ('a photo of a red circle') over the held-out images",
    )
    labels_after: RecallSummary | None = None

    def lines(self) -> list[str]:
        """A few human lines for the CLI."""
        out = [
            f"trained on {self.n_train} pairs ({self.base_model}), {len(self.epochs)} epochs in "
            f"{self.seconds_train:.1f} s ({self.seconds_train / max(1, len(self.epochs)):.1f} s/epoch, "
            f"{self.threads} threads); final loss {self.epochs[-1].loss:.3f}"
        ]
        for name, before, after in [
            ("held-out captions", self.before, self.after),
            ("held-out colour+shape queries", self.labels_before, self.labels_after),
        ]:
            if before is None or after is None:
                continue
            cells = "  ".join(f"R@{k} {before.recall[k]:.3f} -> {after.recall[k]:.3f}" for k in before.recall)
            out.append(f"{name} ({after.n_queries} queries over {self.n_eval} images): {cells}")
        out.append(f"model: {self.out_dir}")
        return out


# -- the loss ---------------------------------------------------------------------------------------


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of L2-normalised embeddings; `logit_scale` is the log temperature.

    `groups[i]` (optional) names the text of pair i: pairs with the same group are all positives, the
    target spread evenly over them. With distinct groups this is CLIP's loss.
    """
    logits = logit_scale.exp() * image_emb @ text_emb.t()
    n = logits.shape[0]
    if groups is None:
        targets = torch.arange(n, device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)
    soft = same / same.sum(dim=1, keepdim=True)
    # `same` is symmetric, so the same soft targets serve both directions.
    return (F.cross_entropy(logits, soft) + F.cross_entropy(logits.t(), soft)) / 2


# -- a small CLIP and its tokenizer, for training from scratch --------------------------------------------


def _words(texts: Sequence[str]) -> list[str]:
    return sorted({w for t in texts for w in re.findall(r"[a-z]+|[0-9]", t.lower())})


def _apply_bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def word_merges(words: Sequence[str], max_rounds: int = 50) -> list[tuple[str, str]]:
    """BPE merges under which each of `words` is a single token.

    A merge added for one word can fire inside another first (BPE applies the lowest-ranked merge
    present), so words are re-tokenised and merges added until every word is whole.
    """
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(max_rounds):
        changed = False
        for word in words:
            while len(parts := _apply_bpe(word, ranks)) > 1:
                ranks[(parts[0], parts[1])] = len(ranks)
                changed = True
        if not changed:
            break
    return sorted(ranks, key=ranks.__getitem__)


def caption_tokenizer(texts: Sequence[str]) -> Any:
    """CLIP's tokenizer over a byte-level vocabulary plus one token per word of `texts`."""
    from transformers import CLIPTokenizer

    from mediasearch.models.random_init import byte_level_vocab

    vocab = byte_level_vocab()
    merges = word_merges(_words(texts))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    # The stubs say list[str] ("a b" lines), but the tokenizers backend takes only (a, b) tuples.
    return CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]


def small_clip(config: ClipTrainConfig, tokenizer: Any) -> tuple[Any, Any]:
    """A randomly initialised CLIP of `config`'s shape and the image processor for it."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    vocab = tokenizer.get_vocab()
    tower = dict(
        hidden_size=config.width,
        intermediate_size=4 * config.width,
        num_attention_heads=config.heads,
        num_hidden_layers=config.layers,
    )
    clip_config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            max_position_embeddings=config.max_text_tokens,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            **tower,
        ),
        vision_config=dict(image_size=config.image_size, patch_size=config.patch_size, **tower),
        projection_dim=config.projection_dim,
    )
    torch.manual_seed(config.seed)
    side = config.image_size
    processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return CLIPModel(clip_config), processor


# -- data -------------------------------------------------------------------------------------------


def _pixels(pairs: Sequence[ImageTextPair], image_processor: Any, progress: bool, desc: str) -> torch.Tensor:
    """Every image decoded and preprocessed once (float16 halves the memory; the model sees float32)."""
    out = []
    for pair in tqdm(pairs, desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False):
        try:
            image = Image.open(io.BytesIO(read_uri_checked(pair.uri))).convert("RGB")
        except PairsError:
            raise
        except Exception as exc:  # Pillow raises several types for bytes that are not an image
            raise PairsError(f"{pair.uri}: not a readable image ({type(exc).__name__})") from None
        pixels = image_processor(images=[image], return_tensors="np")["pixel_values"][0]
        out.append(torch.from_numpy(np.asarray(pixels, dtype=np.float16)))
    return torch.stack(out)


def split_pairs(
    pairs: list[ImageTextPair], holdout_fraction: float, seed: int
) -> tuple[list[ImageTextPair], list[ImageTextPair]]:
    """(train, eval) by text, so no caption of the held-out images is trained on."""
    texts = sorted({p.text for p in pairs})
    random.Random(seed).shuffle(texts)
    held = set(texts[: round(len(texts) * holdout_fraction)])
    return [p for p in pairs if p.text not in held], [p for p in pairs if p.text in held]


# -- evaluation -------------------------------------------------------------------------------------


@torch.inference_mode()
def _embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
    out = []
    max_len = int(model.config.text_config.max_position_embeddings)
    for start in range(0, len(texts), batch):
        tokens = tokenizer(
            list(texts[start : start + batch]),
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        out.append(F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1))
    return torch.cat(out)


@torch.inference_mode()
def _embed_pixels(model: Any, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(pixels), batch):
        feats = model.get_image_features(pixel_values=pixels[start : start + batch].float()).pooler_output
        out.append(F.normalize(feats, dim=-1))
    return torch.cat(out)


def caption_queries(pairs: Sequence[ImageTextPair]) -> list[EvalQuery]:
    """One query per distinct text; its relevant images are every pair with that text."""
    groups: dict[str, list[str]] = {}
    for pair in pairs:
        groups.setdefault(pair.text, []).append(pair.id)
    return [EvalQuery(text=text, relevant_ids=ids) for text, ids in sorted(groups.items())]


def label_queries(pairs: Sequence[ImageTextPair]) -> list[EvalQuery] | None:
    """The eval harness's colour+shape queries, where every pair carries the synthetic corpus's labels."""
    try:
        labels = [ImageLabel.model_validate(pair.model_dump()) for pair in pairs]
    except ValidationError:
        return None
    return queries_from_labels(labels)


def recall_report(
    model: Any, tokenizer: Any, pixels: torch.Tensor, pairs: Sequence[ImageTextPair], queries: list[EvalQuery]
) -> EvalReport:
    """Text -> image retrieval over the eval images, scored by the eval harness."""
    model.eval()
    ids = [p.id for p in pairs]
    images = _embed_pixels(model, pixels)
    texts = [q.text for q in queries]
    scores = _embed_texts(model, tokenizer, texts) @ images.t()
    by_text = dict(zip(texts, scores, strict=True))

    def search_fn(text: str, k: int) -> list[str]:
        return [ids[i] for i in torch.argsort(by_text[text], descending=True)[:k].tolist()]

    return evaluate(queries, search_fn, ks=KS)


# -- training ---------------------------------------------------------------------------------------


def _schedule(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _load_base(name: str, progress: bool) -> tuple[Any, Any, Any]:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
    from transformers.utils import logging as hf_logging

    from mediasearch.core.errors import ModelLoadError

    if not progress:  # transformers draws its own bar while loading weights
        hf_logging.disable_progress_bar()

    try:
        model = CLIPModel.from_pretrained(name)
        return model, AutoImageProcessor.from_pretrained(name), AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the CLIP model '{name}' to fine-tune: {exc}") from exc


def train_clip(
    config: ClipTrainConfig,
    pairs: Path,
    out_dir: Path,
    eval_pairs: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> ClipTrainReport:
    """Train on the pairs file, evaluate held-out recall@k before and after, save the model to `out_dir`.

    The held-out pairs are `eval_pairs` when given, else `config.holdout_fraction` of the texts (0: no
    evaluation). Fine-tunes `config.base_model` (default: the configured CLIP) unless
    `config.from_scratch`. Writes the checkpoint and `training_report.json` into `out_dir`.
    """
    from transformers import CLIPProcessor

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    all_pairs = read_pairs(pairs)
    if eval_pairs is not None:
        train_set, eval_set = all_pairs, read_pairs(eval_pairs)
        eval_source = str(eval_pairs)
    else:
        train_set, eval_set = split_pairs(all_pairs, config.holdout_fraction, config.seed)
        eval_source = f"{config.holdout_fraction:g} of the texts in {pairs}"
    if len(train_set) < 2:
        raise PairsError(f"{pairs}: {len(train_set)} training pair(s); contrastive training needs at least 2")

    if config.from_scratch:
        tokenizer = caption_tokenizer([p.text for p in train_set])
        model, image_processor = small_clip(config, tokenizer)
        base = "scratch"
    else:
        from mediasearch.core.settings import get_settings

        base = config.base_model or get_settings().clip_model
        model, image_processor, tokenizer = _load_base(base, progress)

    train_pixels = _pixels(train_set, image_processor, progress, "images")
    eval_pixels = _pixels(eval_set, image_processor, progress, "held-out images") if eval_set else None
    seconds_data = time.perf_counter() - started
    queries = caption_queries(eval_set) if eval_set else []
    labelled = label_queries(eval_set) if eval_set else None

    def measure() -> tuple[RecallSummary | None, RecallSummary | None]:
        if eval_pixels is None:
            return None, None
        caps = RecallSummary.of(recall_report(model, tokenizer, eval_pixels, eval_set, queries))
        labs = labelled and RecallSummary.of(recall_report(model, tokenizer, eval_pixels, eval_set, labelled))
        return caps, labs or None

    before, labels_before = measure()

    # Texts are tokenised once; a batch takes its rows and trims the padding all of them share.
    max_len = int(model.config.text_config.max_position_embeddings)
    texts = [p.text for p in train_set]
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    text_ids = {t: i for i, t in enumerate(sorted(set(texts)))}
    groups = torch.tensor([text_ids[t] for t in texts])

    n = len(train_set)
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch  # the last partial batch is dropped: a batch of 1 has no negatives
    total = steps_per_epoch * config.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(total, config.warmup_fraction))
    generator = torch.Generator().manual_seed(config.seed)

    epochs: list[EpochStats] = []
    train_started = time.perf_counter()
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, file=sys.stderr)
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        losses = []
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch]
            mask = tokens["attention_mask"][idx]
            width = int(mask.sum(dim=1).max())
            image_emb = model.get_image_features(pixel_values=train_pixels[idx].float()).pooler_output
            text_emb = model.get_text_features(
                input_ids=tokens["input_ids"][idx, :width], attention_mask=mask[:, :width]
            ).pooler_output
            loss = contrastive_loss(
                F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1), model.logit_scale, groups[idx]
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}")
        stats = EpochStats(
            epoch=epoch,
            loss=float(np.mean(losses)) if losses else float("nan"),
            seconds=time.perf_counter() - t0,
            logit_scale=float(model.logit_scale.detach().exp()),
        )
        epochs.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    bar.close()
    seconds_train = time.perf_counter() - train_started

    model.eval()
    after, labels_after = measure()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    report = ClipTrainReport(
        config=config,
        base_model=base,
        out_dir=str(out_dir),
        n_train=len(train_set),
        n_eval=len(eval_set),
        eval_source=eval_source if eval_set else "none",
        threads=torch.get_num_threads(),
        seconds_data=seconds_data,
        seconds_train=seconds_train,
        epochs=epochs,
        before=before,
        after=after,
        labels_before=labels_before,
        labels_after=labels_after,
    )
    (out_dir / REPORT_NAME).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    log.info("trained CLIP in %.1f s -> %s (pid %d)", seconds_train, out_dir, os.getpid())
    return report
