"""Language-model policy gradient: sample completions, score them with a reward model, update.

- `algorithm`: the whole step in one file (`Args`, `compute_loss`, `train`): read this one
- `sampling`: left-padded batched generation with transformers' `generate`, the completion mask
- `models`: `load_policy("tiny" | "tiny-arith" | "smollm2-135m" | path | hub name)`, `format_prompts`
- `rewards`: `load_reward("tiny-sentiment" | "vader" | "arithmetic" | path | hub name)`; `RewardModel`,
  the protocol every reward follows
- `reward_fns`: a Python function as a reward, TRL's `f(prompts, completions, **columns)` (`load_reward_fn`)
- `arith`: the arithmetic task and its verifier; `evaluate`: held-out pass@1 by sampling;
  `passk`: `pass_at_k`, the unbiased pass@k estimator
- `tiny`, `tiny_sentiment`, `tiny_arith`, `smollm2`: how the offline models are built or converted

The engine that runs the same step fast, with files, checkpoints and resume, is `pgcore.engine`
(`python -m pgcore.lm` is its command line). Submodules load on first use, so transformers is imported
only when a model is needed.
"""
from __future__ import annotations

from .._lazy import lazy_submodules

_SUBMODULES = ("algorithm", "sampling", "models", "rewards", "reward_fns", "arith", "evaluate", "passk", "tiny",
               "tiny_sentiment", "tiny_arith", "smollm2")
_NAMES = {"load_policy": "models", "load_reward": "rewards", "pass_at_k": "passk", "pass_at_k_curve": "passk",
          "load_reward_fn": "reward_fns", "RewardFunction": "reward_fns"}

__getattr__, __dir__ = lazy_submodules(__name__, _SUBMODULES, _NAMES)
__all__ = [*_SUBMODULES, *_NAMES]
