"""The `arithmetic` task: problems, prompts, the verifier and the held-out split.

The format is fixed, so anyone can check a trained model: the prompt is `"{a}+{b}="` with a and b
integers in 0..999; the correct completion is the decimal digits of a + b, then EOS. The reward is a
*verifier*, not a model: 1.0 when the completion up to its first EOS (and first newline), stripped of
whitespace, equals `str(a + b)`, else 0.0 (`verify`).

Held-out problems. A pair belongs to the held-out set when the SHA-256 of `"{min(a,b)}+{max(a,b)}"`,
read as an integer, is 0..9 modulo 100 (`is_heldout`): about 10% of the pairs, and both orders of
a pair fall on the same side (a model cannot have seen b+a for a held-out a+b). `tiny-arith`'s
pretraining examples (`pgcore.lm.tiny_arith`) and every RL prompt (`problems("train")`) come only from
the other pairs; every evaluation (`pgcore.lm.evaluate`) uses `problems("heldout")`.

The reward model built on this verifier is `pgcore.lm.rewards.ArithmeticReward`.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import torch

from .tiny import EOS

__all__ = [
    "CHARS", "HELDOUT_PERCENT", "MAX_NEW_TOKENS", "MAX_OPERAND", "is_heldout", "problems", "make_prompt",
    "parse_prompt", "verify", "arithmetic_reward", "digits_writable",
]

CHARS = "0123456789+= \n"
"""the characters of tiny-arith's vocabulary (plus EOS and an unknown-character token)"""
MAX_OPERAND = 999
"""a and b are drawn uniformly from 0..MAX_OPERAND"""
HELDOUT_PERCENT = 10
"""percent of the (unordered) pairs held out from pretraining and RL"""
MAX_NEW_TOKENS = 6
"""completion budget of the task with tiny-arith: up to 4 digits, EOS, and one token of slack"""
_PROMPT = re.compile(r"(\d+)\+(\d+)=")


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
    """
    answer = completion.split(EOS, 1)[0].split("\n", 1)[0].strip()
    return 1.0 if answer == str(a + b) else 0.0


def arithmetic_reward(prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
    """(N,) float32 rewards of N (prompt, completion) pairs: `verify(completion, *parse_prompt(prompt))`."""
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
