"""Fast path: GPT-2's tanh GELU as one fused kernel.

GPT-2 (and the course's tiny models) use transformers' `NewGELUActivation`, the tanh approximation written
out, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: four elementwise passes (and their saved tensors
for the backward) over every (tokens x 4d) activation. On the tiny tiers that was about a fifth of a step
(docs/profile.md). `torch.nn.functional.gelu(x, approximate="tanh")` is the same function in one kernel,
equal up to float rounding. Naive twin: `NewGELUActivation` itself; tests/engine/test_fused.py holds the
logits and every parameter's gradient of a fused model to the unfused one's at fp32 tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedTanhGELU", "fuse_gelu"]


class FusedTanhGELU(nn.Module):
    """`NewGELUActivation` in one kernel (`F.gelu(x, approximate="tanh")`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def fuse_gelu(model: nn.Module) -> int:
    """Replace every `NewGELUActivation` module of `model` by `FusedTanhGELU`, in place. The weights, the
    config and what `save_pretrained` writes do not change. Returns how many were replaced (0: nothing to
    do, e.g. SmolLM2's SiLU)."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "NewGELUActivation":
                setattr(parent, name, FusedTanhGELU())
                replaced += 1
    return replaced
