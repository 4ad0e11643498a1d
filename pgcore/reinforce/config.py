"""`ReinforceConfig`: the settings of `pgcore.reinforce.train`, validated on creation; and `TrainConfig`,
the fields it shares with `pgcore.actor_critic.ActorCriticConfig`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._checks import is_int, is_number
from ..policies import ACTIVATIONS

__all__ = ["TrainConfig", "ReinforceConfig", "WEIGHTINGS", "BASELINES"]

WEIGHTINGS = ("total_return", "reward_to_go")
BASELINES = ("none", "mean", "time", "value")


@dataclass(frozen=True)
class TrainConfig:
    """The settings both training loops share (`ReinforceConfig`, `ActorCriticConfig`), validated on creation."""

    lr: float = 2e-2
    """the learning rate of the policy's Adam optimizer"""
    gamma: float = 0.99
    """the discount factor, in (0, 1]"""
    num_envs: int = 8
    """the number of parallel env copies (one Gymnasium vector env)"""
    episodes_per_env: int = 1
    """the complete episodes each env copy plays per update"""
    max_env_steps: int = 100_000
    """the budget: env steps of collected episodes before training stops"""
    hidden_sizes: tuple[int, ...] = (32,)
    """the hidden layer widths of the policy MLP (and of the value net)"""
    activation: str = "tanh"
    """the hidden activation: "tanh", "relu", "elu" or "gelu\""""
    baseline: str = "none"
    """subtracted from the returns: "none", "mean" (batch mean), "time" (its mean at step t), "value" (V(s_t))"""
    normalize_adv: bool = True
    """standardize the advantages (mean 0, std 1) before the update"""
    ent_coef: float = 0.0
    """the weight of an entropy bonus added to the objective"""
    max_grad_norm: float | None = None
    """clip the policy gradient's global norm to this value (None: no clipping)"""
    value_lr: float = 1e-2
    """the learning rate of the value net's Adam optimizer"""
    value_iters: int = 10
    """the gradient steps on the value net's squared error per update"""
    early_stop: bool = True
    """stop before the budget once the policy reaches target_return (then a confirmation run)"""
    target_return: float | None = None
    """the return that counts as solved; None: the env's reward_threshold (CartPole-v1: 475)"""
    stop_window: int = 8
    """the number of recent training episodes whose mean must reach target_return"""
    confirm_episodes: int = 40
    """the fresh episodes whose mean must reach target_return + confirm_margin; 0: no confirmation"""
    confirm_margin: float = 20.0
    """the extra return the confirmation must show above target_return"""
    device: str | None = None
    """the torch device; None picks pgcore.get_device()"""

    def __post_init__(self):
        if not is_number(self.lr) or self.lr <= 0:
            self._bad("lr", "a number > 0")
        if not is_number(self.gamma) or not (0 < self.gamma <= 1):
            self._bad("gamma", "a number in (0, 1]")
        for name in ("num_envs", "episodes_per_env", "max_env_steps", "value_iters", "stop_window"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                self._bad(name, "an int >= 1")
        hs = self.hidden_sizes
        if not isinstance(hs, (tuple, list)) or not all(is_int(h) and h >= 1 for h in hs):
            self._bad("hidden_sizes", "a tuple of ints >= 1, e.g. (32,)")
        if isinstance(hs, list):
            object.__setattr__(self, "hidden_sizes", tuple(hs))
        if self.activation not in ACTIVATIONS:
            self._bad("activation", ", ".join(ACTIVATIONS))
        if self.baseline not in BASELINES:
            self._bad("baseline", ", ".join(BASELINES))
        for name in ("normalize_adv", "early_stop"):
            if not isinstance(getattr(self, name), bool):
                self._bad(name, "True or False")
        if not is_number(self.ent_coef) or self.ent_coef < 0:
            self._bad("ent_coef", "a number >= 0")
        if self.max_grad_norm is not None and (not is_number(self.max_grad_norm) or self.max_grad_norm <= 0):
            self._bad("max_grad_norm", "None or a number > 0")
        if not is_number(self.value_lr) or self.value_lr <= 0:
            self._bad("value_lr", "a number > 0")
        if self.target_return is not None and not is_number(self.target_return):
            self._bad("target_return", "None or a finite number")
        if not is_int(self.confirm_episodes) or self.confirm_episodes < 0:
            self._bad("confirm_episodes", "an int >= 0")
        if not is_number(self.confirm_margin) or self.confirm_margin < 0:
            self._bad("confirm_margin", "a number >= 0")

    def _bad(self, name: str, accepted: str):
        """Raise the one-line ValueError of a field: its value and what is accepted."""
        raise ValueError(f"{type(self).__name__}.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

    @property
    def episodes_per_update(self) -> int:
        """Episodes in one batch: num_envs * episodes_per_env."""
        return self.num_envs * self.episodes_per_env

    def replace(self, **changes):
        """A copy with some fields changed (validated again), e.g. `cfg.replace(lr=3e-3)`."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ReinforceConfig(TrainConfig):
    """Settings of `train`, the fields of `TrainConfig` and three more. The defaults solve CartPole-v1
    (a median of under 40k env steps; benchmarks/reinforce_cartpole.py measures them on fresh seeds).

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    # TrainConfig's fields with other defaults (tuned on CartPole-v1: docs/benchmarks.md)
    lr: float = 3.5e-2
    baseline: str = "time"
    """subtracted from G_t: "time" is the batch's mean G at the same step of an episode (0 once ended)"""
    confirm_episodes: int = 200
    confirm_margin: float = 22.5

    anneal_lr: bool = False
    """decay the learning rate linearly from lr to 0 over max_env_steps (CleanRL's anneal_lr)"""
    log_std_init: float = 0.0
    """Box action spaces: the initial log standard deviation of the Gaussian policy"""
    weighting: str = "reward_to_go"
    """what multiplies grad log pi(a_t|s_t): "total_return" R(tau) or "reward_to_go" G_t"""

    def __post_init__(self):
        super().__post_init__()
        if not is_number(self.log_std_init):
            self._bad("log_std_init", "a finite number")
        if self.weighting not in WEIGHTINGS:
            self._bad("weighting", ", ".join(WEIGHTINGS))
        if not isinstance(self.anneal_lr, bool):
            self._bad("anneal_lr", "True or False")
