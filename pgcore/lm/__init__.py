"""Language-model policy gradient: sample completions, score them with a reward model, update.

Submodules (each loads on first use, so `python -m pgcore.lm --help` stays fast and transformers is
imported only when a model is actually needed):

- `models`: `load_policy("tiny" | "smollm2-135m" | path | hub name) -> Policy`, `format_prompts`, `load_prompts`
- `tiny`: the `tiny` model's build (and the training helpers `tiny-sentiment` shares); `smollm2`: the GGUF conversion
- `rewards`: `load_reward("tiny-sentiment" | "vader" | path | hub name, label=None) -> RewardModel`
- `sampling`: left-padded batched generation and the completion mask
- `logprobs`: per-token log-probs of a completion
- `config`: `LMConfig`; `trainer`: the step; `run`: the loop, files, checkpoints and resume around it; `__main__`: the command line (`python -m pgcore.lm`, `pgcore-lm`)
- `distributed`: `AccelerateTrainer`, the loop data-parallel on several processes (`accelerate launch -m pgcore.lm`)
- `arith`: the `arithmetic` verifier, its held-out split and the `tiny-arith` policy; `passk`: `pass_at_k`, the
  unbiased pass@k estimator (notebook 05)

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("models", "tiny", "smollm2", "rewards", "sampling", "logprobs", "config", "trainer", "run", "distributed",
               "arith", "tiny_arith", "tiny_sentiment", "evaluate", "passk")
_NAMES = {
    "Policy": "models", "TinyConfig": "tiny", "load_policy": "models", "format_prompts": "models",
    "load_prompts": "models", "read_reviews": "tiny", "LMConfig": "config", "train": "trainer", "Trainer": "trainer",
    "RewardModel": "rewards", "VaderReward": "rewards", "HFClassifierReward": "rewards",
    "SentimentConfig": "tiny_sentiment", "load_reward": "rewards", "pick_label": "rewards",
    "permute_labels": "rewards",
    "AccelerateTrainer": "distributed", "pass_at_k": "passk", "pass_at_k_curve": "passk",
    "ArithmeticReward": "rewards", "verify": "arith",
}

__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        module = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'pgcore.lm' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__():
    return sorted(set(globals()) | set(__all__))
