"""Reward functions of the user's own: plain Python callables as rewards, in TRL's convention.

    def correct(prompts, completions, answer, **kwargs):   # answer: the dataset's column, one per row
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

`RewardFunction(f)` calls `f(prompts=..., completions=..., **columns)`: the prompts and completions of
the N rows, and each of the prompt dataset's other columns as a list of N values (`answer` above).
It returns one number per completion, or None where the reward does not apply (TRL's convention:
such a completion is left out of that reward's mean and of its advantage). Anything else (an
exception, a wrong length, a non-number, NaN or inf) is a `RewardFunctionError` naming the
function and the bad value.

`load_reward_fn("module:function")` or `load_reward_fn("path/to/file.py:function")` finds one
(`--reward-fn`); `examples/qa_rewards.py` holds two.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .rewards import RewardModel

__all__ = ["RewardFunction", "RewardFunctionError", "load_reward_fn", "function_name"]

SPEC = "module:function or path/to/file.py:function"


class RewardFunctionError(ValueError):
    """A reward function raised, or returned something other than one finite number or None per completion."""


def function_name(fn: Callable) -> str:
    """`module:qualname` of a callable (what logs, checkpoints and errors call it)."""
    module = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{module}:{qual}"


def load_reward_fn(spec: str) -> "RewardFunction":
    """The callable named by `spec`: `module:function` (importable) or `path/to/file.py:function`.
    Raises ValueError (one line, naming `spec`) when it cannot be found or is not callable."""
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rpartition(":")[2].strip():
        raise ValueError(f"reward function {spec!r} is not a name; accepted: {SPEC}")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"reward function {spec!r}: no such file {where!r}; accepted: {SPEC}")
        name = f"pgcore_reward_fn_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up here
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # the user's file: any error in it, named in one line
            del sys.modules[name]
            raise ValueError(f"reward function {spec!r}: importing {where!r} raised {type(e).__name__}: "
                             f"{_first_line(e)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or the module's own error
            raise ValueError(f"reward function {spec!r}: cannot import {where!r} ({type(e).__name__}: "
                             f"{_first_line(e)}); accepted: {SPEC}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {where!r} has no callable {attr!r}; accepted: {SPEC}")
    return RewardFunction(fn, name=spec)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:160]


class RewardFunction(RewardModel):
    """A callable as a reward: `score(texts, prompts=..., columns=...)` -> (N,) float32, NaN where it returned None.

    Naive twin of nothing: it only calls `fn` and checks what comes back.
    """

    needs_prompts = True

    def __init__(self, fn: Callable, *, name: str | None = None):
        if not callable(fn):
            raise ValueError(f"reward function {fn!r} is not callable; accepted: a function "
                             "f(prompts, completions, **columns) or " + SPEC)
        self.fn, self.name, self.label = fn, name or function_name(fn), None

    def score(self, texts: Sequence[str], prompts: Sequence[Any] | None = None,
              columns: Mapping[str, Sequence[Any]] | None = None, *, step: int | None = None) -> torch.Tensor:
        completions: list[Any] = list(texts)
        if prompts is not None and any(isinstance(p, list) for p in prompts):  # conversational prompts, as TRL
            completions = [[{"role": "assistant", "content": t}] for t in texts]
        at = f" at step {step}" if step is not None else ""
        try:
            out = self.fn(prompts=list(prompts) if prompts is not None else None, completions=completions,
                          **{k: list(v) for k, v in (columns or {}).items()})
        except Exception as e:  # the user's code: whatever it raises becomes one line
            raise RewardFunctionError(f"reward function {self.name!r}{at} raised {type(e).__name__}: "
                                      f"{_first_line(e)}") from None
        return torch.tensor(check_rewards(out, len(texts), f"reward function {self.name!r}{at}"), dtype=torch.float32)


def check_rewards(out: Any, n: int, what: str) -> list[float]:
    """`out` as n floats (None -> NaN); else RewardFunctionError naming `what` and the bad value."""
    accepted = f"accepted: a list of {n} finite numbers or None, one per completion"
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().reshape(-1).tolist() if out.dim() <= 1 else out
    if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__len__") or not hasattr(out, "__iter__"):
        raise RewardFunctionError(f"{what} returned {_short(out)}; {accepted}")
    values = list(out)
    if len(values) != n:
        raise RewardFunctionError(f"{what} returned {len(values)} values for {n} completions; {accepted}")
    rewards = []
    for i, v in enumerate(values):
        if v is None:
            rewards.append(math.nan)
            continue
        if not isinstance(v, numbers.Real):
            if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a 0-d tensor or array
                v = v.item()
            else:
                raise RewardFunctionError(f"{what} returned {_short(v)} for completion {i} (not a number); {accepted}")
        v = float(v)
        if not math.isfinite(v):
            raise RewardFunctionError(f"{what} returned {v} for completion {i}; {accepted}")
        rewards.append(v)
    return rewards


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."
