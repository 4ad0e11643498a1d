"""Settings of `pgcore.actor_critic.train`: `ActorCriticConfig` and the names it accepts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .._checks import is_int, is_number
from ..reinforce.config import ReinforceConfig, TrainConfig

__all__ = ["ActorCriticConfig", "ADVANTAGE_ESTIMATORS", "ADV_NORM_SCOPES"]

#: the advantage estimators `train` knows; the last two need the critic
ADVANTAGE_ESTIMATORS = ("total_return", "reward_to_go", "nstep", "gae")
#: what normalize_adv standardizes over: the whole batch once, or each minibatch on its own (CleanRL)
ADV_NORM_SCOPES = ("batch", "minibatch")


@dataclass(frozen=True)
class ActorCriticConfig(TrainConfig):
    """Settings of `train`, the fields of `TrainConfig` and those of the critic and PPO's update. The defaults:
    an actor-critic with GAE(0.95) and one update per batch.

    PPO: `.replace(update_epochs=4, num_minibatches=4, clip_eps=0.2)`.
    REINFORCE: `.replace(advantage="reward_to_go", baseline="none")`.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """

    # TrainConfig's fields with other defaults
    lr: float = 1e-2
    baseline: str = "value"
    """subtracted from the Monte Carlo returns: "none", "mean", "time" or "value" (the critic); "nstep"/"gae" need "value\""""
    confirm_episodes: int = 20
    confirm_margin: float = 10.0

    # the critic's advantages and PPO's update
    advantage: str = "gae"
    """the advantage estimator: "total_return", "reward_to_go", "nstep" or "gae" (the last two use the critic)"""
    lam: float = 0.95
    """the lambda of GAE, in [0, 1]: 0 is the one-step TD error, 1 is G_t - V(s_t)"""
    n_steps: int = 8
    """the n of the n-step advantage: n rewards, then the critic's V(s_{t+n})"""
    adv_norm_scope: str = "batch"
    """what normalize_adv standardizes over: "batch" (once) or "minibatch" (each one, as CleanRL's PPO)"""
    update_epochs: int = 1
    """the passes over each batch (1: REINFORCE / A2C; PPO uses several)"""
    num_minibatches: int = 1
    """the shuffled minibatches per pass, one optimizer step each"""
    clip_eps: float | None = None
    """PPO's clip range of the ratio pi/pi_old, in (0, 1); None: the unclipped ratio objective"""
    target_kl: float | None = None
    """stop an update's epochs once the last minibatch's approx KL exceeds this (CleanRL); None: never"""
    value_minibatch: bool = False
    """train the critic inside the policy's minibatch loop, one step per minibatch (CleanRL's PPO)"""

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_steps", "update_epochs", "num_minibatches"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                self._bad(name, "an int >= 1")
        if self.advantage not in ADVANTAGE_ESTIMATORS:
            self._bad("advantage", ", ".join(ADVANTAGE_ESTIMATORS))
        if self.advantage in ("nstep", "gae") and self.baseline != "value":
            self._bad("baseline", f"'value' with advantage={self.advantage!r} (it bootstraps from the critic)")
        if not is_number(self.lam) or not (0 <= self.lam <= 1):
            self._bad("lam", "a number in [0, 1]")
        if self.adv_norm_scope not in ADV_NORM_SCOPES:
            self._bad("adv_norm_scope", ", ".join(ADV_NORM_SCOPES))
        if self.target_kl is not None and (not is_number(self.target_kl) or self.target_kl <= 0):
            self._bad("target_kl", "None or a number > 0")
        if not isinstance(self.value_minibatch, bool):
            self._bad("value_minibatch", "True or False")
        if self.clip_eps is not None and (not is_number(self.clip_eps) or not (0 < self.clip_eps < 1)):
            self._bad("clip_eps", "None or a number in (0, 1)")

    @property
    def uses_critic(self) -> bool:
        """True when a ValueNet is trained (a value baseline, or an n-step / GAE advantage)."""
        return self.baseline == "value"

    @classmethod
    def from_reinforce(cls, config: ReinforceConfig | None = None, **changes) -> "ActorCriticConfig":
        """The settings of a `pgcore.reinforce.ReinforceConfig` (None: its defaults) as an ActorCriticConfig.

        Every shared field is copied, `weighting` becomes `advantage`; one epoch, no clip. With no
        `changes`, `train` then takes exactly the steps of `pgcore.reinforce.train`.
        """
        config = ReinforceConfig() if config is None else config
        if not isinstance(config, ReinforceConfig):
            raise ValueError(f"config must be a ReinforceConfig or None, got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in names}
        return cls(**{**shared, "advantage": config.weighting, "update_epochs": 1, "num_minibatches": 1,
                      "clip_eps": None, **changes})
