"""Evaluation of a policy on the `arithmetic` task by sampling: how many of n sampled completions of each
problem the verifier accepts. pass@1 = counts.sum() / (P * n); pass@k: `pgcore.lm.pass_at_k`.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .arith import MAX_NEW_TOKENS, arithmetic_reward, make_prompt
from .models import format_prompts
from .sampling import generate

__all__ = ["count_correct", "sample_correct"]


def count_correct(policy, pairs: Sequence[tuple[int, int]], num_samples: int, *, temperature: float = 1.0,
                  seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS, rows_per_batch: int = 4096) -> np.ndarray:
    """(P,) how many of `num_samples` sampled completions of each problem the verifier accepts.

    Sampling is the policy's own (`pgcore.lm.sampling.generate`, top_k=0), seeded: the same
    arguments give the same counts. pass@1 = counts.sum() / (P * num_samples); pass@k: `pass_at_k`.
    """
    return sample_correct(policy, pairs, num_samples, temperature=temperature, seed=seed,
                          max_new_tokens=max_new_tokens, rows_per_batch=rows_per_batch).sum(axis=1)


def sample_correct(policy, pairs: Sequence[tuple[int, int]], num_samples: int, *, temperature: float = 1.0,
                   seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS, rows_per_batch: int = 4096) -> np.ndarray:
    """(P, num_samples) 0/1 verifier rewards of `num_samples` sampled completions of each problem (see `count_correct`).

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
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
