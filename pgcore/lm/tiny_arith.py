"""The `tiny-arith` policy: a GPT-2-architecture model with a character-level tokenizer, trained on the
`arithmetic` task (`pgcore.lm.arith`).

The tokenizer has one token per character of `CHARS` ("0123456789+= \\n"), plus EOS and an
unknown-character token. The model is trained from scratch on correct examples `"{a}+{b}={a+b}<EOS>"`
(loss on the completion only) drawn from the training problems, and stopped early on purpose
(`TinyArithConfig.steps`), so that its sampled pass@1 (temperature 1) on held-out problems starts
between 0.2 and 0.6: RL needs room to climb. The default build ships with pgcore (`pgcore/models/tiny-arith/`);
another config is built once (~1 min on one CPU thread) and cached like `tiny`'s.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..files import model_dir
from .arith import CHARS, HELDOUT_PERCENT, MAX_OPERAND, make_prompt, problems
from .tiny import BUILD_FILE, EOS, lazy_transformers, pad_right, save_build, train_lm

__all__ = ["TinyArithConfig", "char_tokenizer", "build_tiny_arith", "tiny_arith_fingerprint", "tiny_arith_dir"]

_BUILD_VERSION = 1  # bump when the build code changes what it produces


@dataclass(frozen=True)
class TinyArithConfig:
    """Architecture and training of the `tiny-arith` policy. Every field enters the cache fingerprint."""

    n_layer: int = 2
    """transformer blocks"""
    n_head: int = 4
    """attention heads per block"""
    n_embd: int = 96
    """width of the residual stream"""
    n_positions: int = 32
    """longest prompt + completion, in tokens ("999+999=1998<EOS>" is 13)"""
    schedule_steps: int = 3000
    """length of the learning-rate schedule (linear warmup over 5%, cosine decay to 0 at this step)"""
    steps: int = 950
    """where training stops: early on purpose, part-way through the schedule, so that sampled pass@1
    (temperature 1) on held-out problems starts between 0.2 and 0.6"""
    batch_size: int = 128
    """training problems per step (each training problem is used once)"""
    lr: float = 3e-3
    """peak AdamW learning rate (linear warmup, cosine decay)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    seed: int = 0
    """seeds the initialization and the training problems"""


def char_tokenizer():
    """tiny-arith's tokenizer: one token per character of `CHARS`, an `<unk>` token, and EOS (= pad).

    A `tokenizers` WordLevel model over single characters (every character is split off), wrapped in
    transformers' `PreTrainedTokenizerFast`, padding on the left like every policy here.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415

    transformers = lazy_transformers()
    vocab = {EOS: 0, "<unk>": 1, **{ch: i + 2 for i, ch in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token="<unk>",
                                                padding_side="left", clean_up_tokenization_spaces=False)


def tiny_arith_fingerprint(config: TinyArithConfig | None = None) -> str:
    """12 hex digits naming a tiny-arith build: the config, the task's constants, the build version."""
    spec = {"kind": "tiny-arith", "version": _BUILD_VERSION, "config": asdict(config or TinyArithConfig()),
            "chars": CHARS, "heldout_percent": HELDOUT_PERCENT, "max_operand": MAX_OPERAND}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def build_tiny_arith(out_dir: str | os.PathLike, config: TinyArithConfig | None = None) -> Path:
    """Train tiny-arith on correct training examples; `save_pretrained` model and tokenizer into `out_dir`.

    Each step draws `batch_size` fresh training problems (never held-out ones) and minimizes the
    next-token loss of `"{a+b}<EOS>"` after `"{a}+{b}="` (prompt tokens carry no loss). One CPU
    thread, seeded: the same config gives the same weights. Written atomically. Returns `out_dir`.
    """
    transformers = lazy_transformers()
    config = config or TinyArithConfig()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    tokenizer = char_tokenizer()
    tokenizer.model_max_length = config.n_positions
    eos = tokenizer.eos_token_id
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    ))
    pairs = problems("train", config.steps * config.batch_size, seed=config.seed + 1)  # each problem seen once

    def inputs():
        for start in range(0, len(pairs), config.batch_size):
            seqs, labels = [], []
            for a, b in pairs[start:start + config.batch_size]:
                p = tokenizer.encode(make_prompt(a, b), add_special_tokens=False)
                c = tokenizer.encode(str(a + b), add_special_tokens=False) + [eos]
                seqs.append(p + c)
                labels.append([-100] * len(p) + c)
            ids, mask = pad_right(seqs, eos)
            lab, _ = pad_right(labels, -100)
            yield {"input_ids": ids, "attention_mask": mask, "labels": lab}

    if not 1 <= config.steps <= config.schedule_steps:
        raise ValueError(f"steps {config.steps} must be in 1..schedule_steps ({config.schedule_steps})")
    # the schedule runs to schedule_steps, the data stop at steps: an early stop of a longer training
    final_loss = train_lm(model, inputs(), config.schedule_steps, config.lr, config.weight_decay)
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    build = {"kind": "tiny-arith", "fingerprint": tiny_arith_fingerprint(config), "config": asdict(config),
             "parameters": model.num_parameters(), "final_train_loss": round(final_loss, 4),
             "train_problems": len(pairs), "train_seconds": round(time.perf_counter() - start, 2)}
    return save_build(out_dir, model, tokenizer, build)


def tiny_arith_dir(config: TinyArithConfig | None = None, cache: str | os.PathLike | None = None) -> Path:
    """The tiny-arith build for `config`: the shipped one for the default recipe, else built once under `cache`
    (default `pgcore.files.cache_dir()`).

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    return model_dir("tiny-arith", tiny_arith_fingerprint(config), lambda p: build_tiny_arith(p, config), cache,
                     BUILD_FILE)
