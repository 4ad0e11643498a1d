"""Language-model policy gradient: sample completions, score them with a reward model, update.

- `algorithm`: the whole step in one file (`Args`, `compute_loss`, `train`): read this one
- `sampling`: left-padded batched generation with transformers' `generate`, the completion mask
- `models`: `load_policy("tiny" | "tiny-arith" | "smollm2-135m" | path | hub name)`, `format_prompts`
- `rewards`: `load_reward("tiny-sentiment" | "vader" | "arithmetic" | path | hub name)`, the reward protocol
- `arith`: the arithmetic task and its verifier; `passk`: `pass_at_k`, the unbiased pass@k estimator
- `tiny`, `smollm2`: how the offline models are built or converted

The engine that runs the same step fast, with files, checkpoints and resume, is `pgcore.engine`
(`python -m pgcore.lm` is its command line). Submodules load on first use, so transformers is imported
only when a model is needed.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("algorithm", "sampling", "models", "rewards", "arith", "passk", "tiny", "smollm2")
_NAMES = {"load_policy": "models", "load_reward": "rewards", "pass_at_k": "passk", "pass_at_k_curve": "passk"}

__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'pgcore.lm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
