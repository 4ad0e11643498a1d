"""REINFORCE for Gymnasium envs with discrete actions (categorical policy) or continuous 1-D Box actions
(Gaussian policy): rollouts, advantages, the update, the loop.

The five steps of policy gradient, one update of `train`:
  1. sample a batch of trajectories with the current policy       -> `collect_rollout`
  2. compute the return of each step (R(tau) or reward-to-go)     -> `compute_weights`
  3. turn it into an advantage (baseline, normalization)          -> `compute_advantages`
  4. estimate the gradient: loss = -mean(logp * adv), backward    -> `pgcore.pg_loss`
  5. take an optimizer step, and iterate                          -> `train`
Notebook 02 writes these steps visibly; `train` is the same loop with logging and a budget.

Batches are time-major `(T, N)` tensors (see `pgcore.returns`): column n holds the episodes of
env copy n, padded; `mask` marks the real transitions.

Modules: `config` (ReinforceConfig), `rollout` (steps 1-3 and `evaluate`), `loop` (steps 4-5, `train`).

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

from .config import BASELINES, WEIGHTINGS, ReinforceConfig
from .loop import TrainResult, train
from .rollout import (Rollout, collect_rollout, compute_advantages, compute_weights, evaluate, sample_actions,
                      step_index)

__all__ = [
    "ReinforceConfig",
    "Rollout",
    "TrainResult",
    "collect_rollout",
    "compute_weights",
    "compute_advantages",
    "evaluate",
    "sample_actions",
    "step_index",
    "train",
    "WEIGHTINGS",
    "BASELINES",
]
