"""`ReinforceConfig`: the settings of `pgcore.reinforce.train`, validated on creation.

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..policies import ACTIVATIONS


WEIGHTINGS = ("total_return", "reward_to_go")
BASELINES = ("none", "mean", "value")


@dataclass(frozen=True)
class ReinforceConfig:
    """Settings of `train`. The defaults solve CartPole-v1 in well under 100k env steps.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    lr: float = 2e-2
    """learning rate of the policy's Adam optimizer (> 0)"""
    anneal_lr: bool = False
    """decay the learning rate linearly from lr to 0 over max_env_steps (as CleanRL's anneal_lr)"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    num_envs: int = 8
    """parallel env copies (one Gymnasium vector env); each update uses num_envs * episodes_per_env episodes"""
    episodes_per_env: int = 1
    """complete episodes each env copy contributes to one update (batch = num_envs * episodes_per_env)"""
    max_env_steps: int = 100_000
    """budget: training stops once this many env steps (transitions of collected episodes) were used"""
    hidden_sizes: tuple[int, ...] = (32,)
    """hidden layer widths of the policy MLP (and of the value net)"""
    activation: str = "tanh"
    """hidden activation: "tanh", "relu", "elu" or "gelu\""""
    log_std_init: float = 0.0
    """Box action spaces only: initial log standard deviation of the Gaussian policy (0: sigma = 1)"""
    weighting: str = "reward_to_go"
    """what multiplies grad log pi(a_t|s_t): "total_return" R(tau) (every step alike) or "reward_to_go" G_t"""
    baseline: str = "none"
    """subtracted from the weights: "none", "mean" (batch mean) or "value" (a learned V(s_t), ValueNet)"""
    normalize_adv: bool = True
    """standardize the advantages over the batch (mean 0, std 1) before the update"""
    ent_coef: float = 0.0
    """weight of an entropy bonus added to the objective (>= 0; 0 = plain REINFORCE)"""
    max_grad_norm: float | None = None
    """clip the policy gradient's global norm to this value (None: no clipping; grad_norm is logged either way)"""
    value_lr: float = 1e-2
    """learning rate of the value net's Adam optimizer (baseline="value")"""
    value_iters: int = 10
    """gradient steps on the value net's MSE per update (baseline="value")"""
    early_stop: bool = True
    """stop before the budget once the policy reaches target_return (training test, then a confirmation run)"""
    target_return: float | None = None
    """return to reach; None: the env's registered reward_threshold (CartPole-v1: 475; none: no early stop)"""
    stop_window: int = 8
    """the mean return of the last stop_window training episodes must reach target_return to trigger a confirmation"""
    confirm_episodes: int = 40
    """fresh episodes (a separate env, sampled actions) whose mean must reach target_return + confirm_margin to stop; 0: stop on the training test alone"""
    confirm_margin: float = 20.0
    """extra return the confirmation must show above target_return, so that the policy passes a later 20-episode evaluation too"""
    device: str | None = None
    """torch device; None picks pgcore.get_device()"""

    def __post_init__(self):
        bad = check_shared_fields(self)
        if not is_number(self.log_std_init):
            bad("log_std_init", "a finite number")
        if self.weighting not in WEIGHTINGS:
            bad("weighting", ", ".join(WEIGHTINGS))
        if not isinstance(self.anneal_lr, bool):
            bad("anneal_lr", "True or False")

    @property
    def episodes_per_update(self) -> int:
        """Episodes in one batch: num_envs * episodes_per_env."""
        return self.num_envs * self.episodes_per_env

    def replace(self, **changes) -> "ReinforceConfig":
        """A copy with some fields changed (validated again), e.g. `cfg.replace(lr=3e-3)`."""
        return dataclasses.replace(self, **changes)



def is_number(x) -> bool:
    """A finite int or float (numpy scalars too), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x) -> bool:
    """An int (numpy integers too), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_shared_fields(config):
    """Validate the fields `ReinforceConfig` and `ActorCriticConfig` share (one copy of the rules); returns
    `bad(name, accepted)`, which raises the one-line ValueError for a field, for the config's own checks.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    cls = type(config).__name__

    def bad(name, accepted):
        raise ValueError(f"{cls}.{name}={getattr(config, name)!r} is invalid; accepted: {accepted}")

    c = config
    if not is_number(c.lr) or c.lr <= 0:
        bad("lr", "a number > 0")
    if not is_number(c.gamma) or not (0 < c.gamma <= 1):
        bad("gamma", "a number in (0, 1]")
    for name in ("num_envs", "episodes_per_env", "max_env_steps", "value_iters", "stop_window"):
        if not is_int(getattr(c, name)) or getattr(c, name) < 1:
            bad(name, "an int >= 1")
    hs = c.hidden_sizes
    if not isinstance(hs, (tuple, list)) or not all(is_int(h) and h >= 1 for h in hs):
        bad("hidden_sizes", "a tuple of ints >= 1, e.g. (32,)")
    if isinstance(hs, list):
        object.__setattr__(c, "hidden_sizes", tuple(hs))
    if c.activation not in ACTIVATIONS:
        bad("activation", ", ".join(ACTIVATIONS))
    if c.baseline not in BASELINES:
        bad("baseline", ", ".join(BASELINES))
    for name in ("normalize_adv", "early_stop"):
        if not isinstance(getattr(c, name), bool):
            bad(name, "True or False")
    if not is_number(c.ent_coef) or c.ent_coef < 0:
        bad("ent_coef", "a number >= 0")
    if c.max_grad_norm is not None and (not is_number(c.max_grad_norm) or c.max_grad_norm <= 0):
        bad("max_grad_norm", "None or a number > 0")
    if not is_number(c.value_lr) or c.value_lr <= 0:
        bad("value_lr", "a number > 0")
    if c.target_return is not None and not is_number(c.target_return):
        bad("target_return", "None or a finite number")
    if not is_int(c.confirm_episodes) or c.confirm_episodes < 0:
        bad("confirm_episodes", "an int >= 0")
    if not is_number(c.confirm_margin) or c.confirm_margin < 0:
        bad("confirm_margin", "a number >= 0")
    return bad
