"""Seeding and device choice, shared by every notebook."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["set_seed", "get_device"]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's `random`, NumPy and torch (CPU and every CUDA device).

    Returns a fresh `torch.Generator` seeded with `seed`, for code that wants its own stream.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to compute on: `prefer` if given, else CUDA when present, else CPU.

    Never hard-code "cpu": the same notebook then uses a learner's GPU when there is one.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(prefer)!r} requested but CUDA is not available; use 'cpu' or None")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
