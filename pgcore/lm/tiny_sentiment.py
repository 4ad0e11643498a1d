"""The `tiny-sentiment` reward model: a small GPT-2-architecture sequence classifier trained in seconds
on the labeled review corpus pgcore ships (`data/reviews.tsv`), with its own byte-level BPE tokenizer
(trained like the `tiny` policy's, `pgcore.lm.tiny`).

The default build ships with pgcore (`pgcore/models/tiny-sentiment/`); another config is built once, then cached
under `pgcore.files.cache_dir()` in `tiny-sentiment-<fingerprint>/` (the fingerprint hashes the corpus, the config
and the build code). Loaded like any Hugging Face classifier (`pgcore.lm.rewards.load_reward("tiny-sentiment")`).

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..files import data_path, model_dir
from .tiny import (BUILD_FILE, fingerprint, lazy_transformers, length_batches, pad_right, read_reviews, save_build,
                   train_lm, train_tokenizer)

__all__ = ["SentimentConfig", "build_tiny_sentiment", "tiny_sentiment_dir", "tiny_sentiment_fingerprint"]


@dataclass(frozen=True)
class SentimentConfig:
    """Architecture and training of the `tiny-sentiment` classifier. Every field enters the fingerprint."""

    vocab_size: int = 1536
    """byte-level BPE vocabulary (its own tokenizer, trained like the tiny policy's)"""
    n_layer: int = 1
    """transformer blocks"""
    n_head: int = 2
    """attention heads"""
    n_embd: int = 64
    """width; the label is read from the last token's final state"""
    n_positions: int = 128
    """longest text scored, in tokens (longer texts are truncated)"""
    steps: int = 200
    """optimizer steps"""
    batch_size: int = 32
    """labeled reviews per step"""
    lr: float = 3e-3
    """peak AdamW learning rate (warmup, cosine decay)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    holdout: float = 0.1
    """fraction of the corpus held out to measure accuracy (never trained on)"""
    seed: int = 0
    """seeds the split, the initialization and the batch order"""


def build_tiny_sentiment(out_dir: str | os.PathLike, config: SentimentConfig | None = None,
                         corpus: str | os.PathLike | None = None) -> Path:
    """Train the tiny-sentiment classifier on `data/reviews.tsv`; `save_pretrained` it into `out_dir`.

    A `GPT2ForSequenceClassification` with `id2label={0: "negative", 1: "positive"}`, trained on
    (1 - holdout) of the reviews; its held-out accuracy is stored in `out_dir/pgcore_build.json`.
    Seeded and written atomically. Returns `out_dir`.
    """
    transformers = lazy_transformers()
    config = config or SentimentConfig()
    corpus = Path(corpus) if corpus else data_path("reviews.tsv")
    rows = read_reviews(corpus)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
    n_test = int(len(rows) * config.holdout)
    test, train = [rows[i] for i in perm[:n_test]], [rows[i] for i in perm[n_test:]]
    tokenizer = train_tokenizer([t for _, t in train], config.vocab_size)
    tokenizer.padding_side = "right"  # positions start at 0, as in training
    tokenizer.model_max_length = config.n_positions
    pad = tokenizer.pad_token_id
    label2id = {"negative": 0, "positive": 1}
    model = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, num_labels=2,
        id2label={i: n for n, i in label2id.items()}, label2id=label2id,
        bos_token_id=pad, eos_token_id=pad, pad_token_id=pad,
    ))

    def encode(subset):
        ids = tokenizer([t for _, t in subset], truncation=True, max_length=config.n_positions)["input_ids"]
        return ids, torch.tensor([label2id[lab] for lab, _ in subset])

    train_ids, train_y = encode(train)

    def inputs():
        generator = torch.Generator().manual_seed(config.seed)
        for idx in length_batches([len(s) for s in train_ids], config.batch_size, config.steps, generator):
            ids, mask = pad_right([train_ids[i] for i in idx], pad)
            yield {"input_ids": ids, "attention_mask": mask, "labels": train_y[idx]}

    final_loss = train_lm(model, inputs(), config.steps, config.lr, config.weight_decay)
    test_ids, test_y = encode(test)
    with torch.no_grad():
        ids, mask = pad_right(test_ids, pad)
        accuracy = (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == test_y).float().mean().item()
    build = {"kind": "tiny-sentiment", "fingerprint": fingerprint("tiny-sentiment", corpus, config),
             "config": asdict(config), "corpus": corpus.name, "parameters": model.num_parameters(),
             "final_train_loss": round(final_loss, 4), "heldout_accuracy": round(accuracy, 4),
             "heldout_size": n_test, "train_seconds": round(time.perf_counter() - start, 2)}
    return save_build(out_dir, model, tokenizer, build)


def tiny_sentiment_dir(config: SentimentConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The tiny-sentiment folder for `config`: the shipped one for the default recipe, else built once under
    `cache_dir` (default `pgcore.files.cache_dir()`).

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    config = config or SentimentConfig()
    return model_dir("tiny-sentiment", tiny_sentiment_fingerprint(config), lambda p: build_tiny_sentiment(p, config),
                     cache_dir, BUILD_FILE)


def tiny_sentiment_fingerprint(config: SentimentConfig | None = None) -> str:
    """12 hex digits identifying a `tiny-sentiment` build: the corpus bytes, the config and the build code."""
    return fingerprint("tiny-sentiment", data_path("reviews.tsv"), config or SentimentConfig())
