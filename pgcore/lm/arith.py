"""Verifiable rewards: the `arithmetic` task, its verifier, the held-out split and the `tiny-arith` policy.

The task (format fixed, so anyone can check a trained model): the prompt is `"{a}+{b}="` with a and b
integers in 0..999; the correct completion is the decimal digits of a + b, then EOS. The reward is a
*verifier*, not a model: 1.0 when the completion up to its first EOS (and first newline), stripped of
whitespace, equals `str(a + b)`, else 0.0 (`verify`).

Held-out problems. A pair belongs to the held-out set when the SHA-256 of `"{min(a,b)}+{max(a,b)}"`,
read as an integer, is 0..9 modulo 100 (`is_heldout`): about 10% of the pairs, and both orders of
a pair fall on the same side (a model cannot have seen b+a for a held-out a+b). `tiny-arith`'s
pretraining examples and every RL prompt (`problems("train")`) come only from the other pairs; every
evaluation uses `problems("heldout")`.

`tiny-arith`: a GPT-2-architecture model with a character-level tokenizer ("0123456789+= \\n" and
EOS), trained from scratch on correct examples `"{a}+{b}={a+b}<EOS>"` (loss on the completion only)
and stopped early on purpose (`TinyArithConfig.steps`), so that its sampled pass@1 (temperature 1) on
held-out problems starts between 0.2 and 0.6: RL needs room to climb. Built once (~1 min on one CPU
thread) and cached like `tiny` in `pgcore.utils.cache_dir()/tiny-arith-<fingerprint>/`.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..files import build_once, cache_dir
from .rewards import RewardModel
from .tiny import BUILD_FILE, EOS, lazy_transformers, pad_right, save_build, train_lm

__all__ = [
    "CHARS", "HELDOUT_PERCENT", "MAX_NEW_TOKENS", "MAX_OPERAND", "is_heldout", "problems", "make_prompt",
    "parse_prompt", "verify", "arithmetic_reward", "ArithmeticReward", "TinyArithConfig", "char_tokenizer",
    "build_tiny_arith", "tiny_arith_fingerprint", "tiny_arith_dir", "count_correct", "sample_correct", "digits_writable",
]

CHARS = "0123456789+= \n"
"""the characters of tiny-arith's vocabulary (plus EOS and an unknown-character token)"""
MAX_OPERAND = 999
"""a and b are drawn uniformly from 0..MAX_OPERAND"""
HELDOUT_PERCENT = 10
"""percent of the (unordered) pairs held out from pretraining and RL"""
MAX_NEW_TOKENS = 6
"""completion budget of the task with tiny-arith: up to 4 digits, EOS, and one token of slack"""
_BUILD_VERSION = 1  # bump when the build code changes what it produces
_PROMPT = re.compile(r"(\d+)\+(\d+)=")


# ------------------------------------------------------------------------------------ the task
def is_heldout(a: int, b: int) -> bool:
    """True when the pair (a, b) is a held-out problem (never in pretraining or RL prompts).

    Rule: int(sha256("{min(a,b)}+{max(a,b)}")) % 100 < HELDOUT_PERCENT. Deterministic, about 10% of the
    pairs, and symmetric (a+b and b+a are on the same side).
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    key = f"{min(a, b)}+{max(a, b)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 100 < HELDOUT_PERCENT


def problems(split: str, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """n distinct problems (a, b), a and b uniform in 0..999, from one side of the split.

    split: "train" (pretraining and RL prompts) or "heldout" (every evaluation). Deterministic
    given (split, n, seed); a larger n extends a smaller one's list.
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split {split!r} unknown; accepted: train, heldout")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    rng = np.random.default_rng([int(seed), 1 if split == "heldout" else 0, 13])
    want_heldout = split == "heldout"
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(out) < n:
        for a, b in rng.integers(0, MAX_OPERAND + 1, size=(1024, 2)).tolist():
            if (a, b) not in seen and is_heldout(a, b) == want_heldout:
                seen.add((a, b))
                out.append((a, b))
                if len(out) == n:
                    break
    return out


def make_prompt(a: int, b: int) -> str:
    """The prompt of problem (a, b): `"{a}+{b}="`."""
    return f"{a}+{b}="


def parse_prompt(prompt: str) -> tuple[int, int]:
    """(a, b) of the last `"{a}+{b}="` in `prompt` (a chat template may wrap it). ValueError if none."""
    found = _PROMPT.findall(prompt)
    if not found:
        raise ValueError(f"prompt {prompt!r:.60} holds no '{{a}}+{{b}}=' problem; accepted: prompts like '12+345='")
    a, b = found[-1]
    return int(a), int(b)


def verify(completion: str, a: int, b: int) -> float:
    """The verifier: 1.0 when the completion up to the first EOS and the first newline, stripped of
    whitespace, equals str(a + b); else 0.0.

    A completion without EOS (cut by the token budget) is compared whole. Leading zeros ("0579"),
    a sign, or extra text after the number ("579 apples") are wrong; surrounding spaces are not.
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    answer = completion.split(EOS, 1)[0].split("\n", 1)[0].strip()
    return 1.0 if answer == str(a + b) else 0.0


def arithmetic_reward(prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    """(N,) float32 rewards of N (prompt, completion) pairs: `verify(completion, *parse_prompt(prompt))`.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; accepted: one prompt each")
    return torch.tensor([verify(c, *parse_prompt(p)) for p, c in zip(prompts, completions)], dtype=torch.float32)


def digits_writable(tokenizer) -> str | None:
    """None when `tokenizer` can write every digit 0-9 (encode then decode gives it back, no unknown
    token), else a short description of the first digit it cannot write."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for d in "0123456789":
        ids = tokenizer.encode(d, add_special_tokens=False)
        back = tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        if not ids or (unk is not None and unk in ids) or back.strip() != d:
            return f"{d!r} becomes {back!r}"
    return None


class ArithmeticReward(RewardModel):
    """The `arithmetic` verifier as a reward: `score(texts, prompts=...)` (the answer depends on the prompt).

    `needs_prompts` tells the trainer to pass the prompts; `check_policy` refuses a policy whose
    tokenizer cannot write digits; `default_prompts` are training problems (never held out);
    `check_prompts` refuses held-out problems among training prompts.
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """

    needs_prompts = True
    verifier = True

    def __init__(self, num_prompts: int = 10_000, seed: int = 0):
        self.name, self.label = "arithmetic", None
        self.num_prompts, self.seed = num_prompts, seed

    def score(self, texts: list[str], prompts: Sequence[str] | None = None) -> torch.Tensor:
        if prompts is None:
            raise ValueError("the arithmetic reward needs the prompts: score(texts, prompts=...)")
        return arithmetic_reward(list(prompts), list(texts))

    def check_policy(self, policy) -> None:
        bad = digits_writable(policy.tokenizer)
        if bad is not None:
            raise ValueError(f"reward model 'arithmetic' needs a policy that can write digits, but the tokenizer of "
                             f"{policy.name!r} cannot ({bad}); accepted: tiny-arith, tiny, or a model whose "
                             "tokenizer encodes 0-9")

    def default_prompts(self) -> list[str]:
        return [make_prompt(a, b) for a, b in problems("train", self.num_prompts, self.seed)]

    def evaluate(self, policy, num_problems: int = 256, num_samples: int = 4, *, temperature: float = 1.0,
                 seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS) -> float:
        """Held-out pass@1 of `policy`: the first `num_problems` of `problems("heldout", ...)`, `num_samples`
        sampled completions each (`count_correct`)."""
        counts = count_correct(policy, problems("heldout", num_problems), num_samples, temperature=temperature,
                               seed=seed, max_new_tokens=max_new_tokens)
        return float(counts.sum() / (num_problems * num_samples))

    def check_prompts(self, prompts: Sequence[str]) -> None:
        for p in prompts:
            a, b = parse_prompt(p)
            if is_heldout(a, b):
                raise ValueError(f"prompt {p!r} is a held-out problem (pgcore.lm.arith.is_heldout); accepted: "
                                 "training problems only, e.g. the default prompts")


# ------------------------------------------------------------------------------------ tiny-arith
@dataclass(frozen=True)
class TinyArithConfig:
    """Architecture and training of the `tiny-arith` policy. Every field enters the cache fingerprint.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """

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
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
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
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
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
    """The cached tiny-arith build for `config` (built first if missing) under `cache` (default `cache_dir()`).

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    return build_once(cache / f"tiny-arith-{tiny_arith_fingerprint(config)}", lambda p: build_tiny_arith(p, config),
                      BUILD_FILE)


# ------------------------------------------------------------------------------------ evaluation
def count_correct(policy, pairs: Sequence[tuple[int, int]], num_samples: int, *, temperature: float = 1.0,
                  seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS, rows_per_batch: int = 4096) -> np.ndarray:
    """(P,) how many of `num_samples` sampled completions of each problem the verifier accepts.

    Sampling is the policy's own (`pgcore.lm.sampling.generate`, top_k=0), seeded: the same
    arguments give the same counts. pass@1 = counts.sum() / (P * num_samples); pass@k: `pass_at_k`.
    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    return sample_correct(policy, pairs, num_samples, temperature=temperature, seed=seed,
                          max_new_tokens=max_new_tokens, rows_per_batch=rows_per_batch).sum(axis=1)


def sample_correct(policy, pairs: Sequence[tuple[int, int]], num_samples: int, *, temperature: float = 1.0,
                   seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS, rows_per_batch: int = 4096) -> np.ndarray:
    """(P, num_samples) 0/1 verifier rewards of `num_samples` sampled completions of each problem (see `count_correct`).

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    from .models import format_prompts  # noqa: PLC0415
    from .sampling import generate  # noqa: PLC0415

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    pairs = list(pairs)
    per = max(1, rows_per_batch // num_samples)
    counts = []
    was_training = policy.model.training
    policy.model.eval()
    for k, start in enumerate(range(0, len(pairs), per)):
        chunk = pairs[start:start + per]
        prompts = format_prompts(policy, [make_prompt(a, b) for a, b in chunk])
        batch = generate(policy.model, policy.tokenizer, prompts, num_samples, max_new_tokens, temperature,
                         seed=seed * 1_000_003 + k, add_special_tokens=not policy.chat_template)
        ok = arithmetic_reward(batch.prompts, batch.texts).view(len(chunk), num_samples)
        counts.append(ok.round().long().numpy())
    policy.model.train(was_training)
    return np.concatenate(counts, axis=0)
