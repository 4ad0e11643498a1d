"""Argument checks shared by the modules: each raises a one-line ValueError naming the value and what is accepted."""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["is_int", "is_number", "check_int", "check_number", "as_tensor", "check_same_shape"]


def is_int(x) -> bool:
    """An int (numpy integers too), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    """A finite int or float (numpy scalars too), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def check_int(x, name: str, low: int | None = 1) -> int:
    """`int(x)` for an int >= `low` (any int when low is None), else "name must be an int >= low"."""
    if not is_int(x) or (low is not None and x < low):
        raise ValueError(f"{name} must be an int{'' if low is None else f' >= {low}'}, got {x!r}")
    return int(x)


def _bounds(gt, ge, lt, le) -> str:
    """" in (0, 1]", " > 0", " >= 0", ... for the bounds given; "" for none."""
    low = f"({gt:g}" if gt is not None else f"[{ge:g}" if ge is not None else None
    high = f"{lt:g})" if lt is not None else f"{le:g}]" if le is not None else None
    if low and high:
        return f" in {low}, {high}"
    return "".join(f" {op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None)


def check_number(x, name: str, *, gt=None, ge=None, lt=None, le=None, optional: bool = False) -> float | None:
    """`float(x)` for a finite number within the bounds given (x > gt, x >= ge, x < lt, x <= le), else
    e.g. "gamma must be a number in (0, 1]"; with `optional`, None is accepted (and returned)."""
    if optional and x is None:
        return None
    if not (is_number(x) and (gt is None or x > gt) and (ge is None or x >= ge)
            and (lt is None or x < lt) and (le is None or x <= le)):
        raise ValueError(f"{name} must be {'None or ' if optional else ''}a number{_bounds(gt, ge, lt, le)}, got {x!r}")
    return float(x)


def as_tensor(x, name: str) -> torch.Tensor:
    """`x` itself when it is a tensor, else "name must be a torch.Tensor"."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_same_shape(x: torch.Tensor, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """`x` when it has the shape of `like`, else "name shape (..) does not match like_name shape (..)"."""
    if x.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(x.shape)} does not match {like_name} shape {tuple(like.shape)}")
    return x
