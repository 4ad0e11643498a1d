"""Settings of `pgcore.actor_critic.train`: `ActorCriticConfig` (a docstring per field) and the names it accepts.

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..reinforce.config import ReinforceConfig, check_shared_fields, is_int, is_number

__all__ = ["ActorCriticConfig", "ADVANTAGES", "ADV_NORM_SCOPES"]

#: the advantage estimators `train` knows; the last two need the critic
ADVANTAGES = ("total_return", "reward_to_go", "nstep", "gae")
#: what normalize_adv standardizes over: the whole batch once, or each minibatch on its own (CleanRL)
ADV_NORM_SCOPES = ("batch", "minibatch")


@dataclass(frozen=True)
class ActorCriticConfig:
    """Settings of `train`. The defaults: an actor-critic with GAE(0.95) and one update per batch.

    PPO: `.replace(update_epochs=4, num_minibatches=4, clip_eps=0.2)`.
    REINFORCE: `.replace(advantage="reward_to_go", baseline="none")`.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """

    lr: float = 1e-2
    """learning rate of the policy's Adam optimizer (> 0)"""
    gamma: float = 0.99
    """discount factor, in (0, 1]"""
    num_envs: int = 8
    """parallel env copies (one Gymnasium vector env); each update uses num_envs * episodes_per_env episodes"""
    episodes_per_env: int = 1
    """complete episodes each env copy contributes to one update"""
    max_env_steps: int = 100_000
    """budget: training stops once this many env steps (transitions of collected episodes) were used"""
    hidden_sizes: tuple[int, ...] = (32,)
    """hidden layer widths of the policy MLP (and of the critic)"""
    activation: str = "tanh"
    """hidden activation: "tanh", "relu", "elu" or "gelu\""""
    advantage: str = "gae"
    """the advantage estimator: "total_return", "reward_to_go" (Monte Carlo, minus `baseline`), "nstep" or "gae" (bootstrap from the critic)"""
    baseline: str = "value"
    """for the Monte Carlo advantages: "none", "mean" (batch mean) or "value" (the critic V(s_t)); "nstep"/"gae" need "value\""""
    lam: float = 0.95
    """lambda of GAE, in [0, 1] (advantage="gae"): 0 is the one-step TD error, 1 is G_t - V(s_t)"""
    n_steps: int = 8
    """n of the n-step advantage, >= 1 (advantage="nstep"): sum of n rewards + gamma^n V(s_{t+n}) - V(s_t)"""
    normalize_adv: bool = True
    """standardize the advantages (mean 0, std 1) for the update"""
    adv_norm_scope: str = "batch"
    """what normalize_adv standardizes over: "batch" (all steps, once, before the update) or "minibatch" (each minibatch on its own, as CleanRL's PPO)"""
    update_epochs: int = 1
    """passes over each batch (1: on-policy REINFORCE / A2C; PPO uses several)"""
    num_minibatches: int = 1
    """minibatches per pass (shuffled steps); update_epochs * num_minibatches optimizer steps per batch"""
    clip_eps: float | None = None
    """PPO's clip range eps in (0, 1) of the ratio pi/pi_old; None: the unclipped ratio objective"""
    ent_coef: float = 0.0
    """weight of an entropy bonus added to the objective (>= 0)"""
    max_grad_norm: float | None = None
    """clip the policy gradient's global norm to this value (None: no clipping; grad_norm is logged either way)"""
    target_kl: float | None = None
    """stop an update's epochs early once the k3 approx KL(pi_old || pi) of the epoch's last minibatch (measured before its step) exceeds this, as CleanRL; None: always run update_epochs"""
    value_lr: float = 1e-2
    """learning rate of the critic's Adam optimizer"""
    value_iters: int = 10
    """full-batch gradient steps on the critic's squared error per update (after the policy's; unused with value_minibatch)"""
    value_minibatch: bool = False
    """train the critic inside the policy's loop instead: on every minibatch one step on 0.5 * mean((V - target)^2), as CleanRL's PPO"""
    early_stop: bool = True
    """stop before the budget once the policy reaches target_return (training test, then a confirmation run)"""
    target_return: float | None = None
    """return to reach; None: the env's registered reward_threshold (CartPole-v1: 475; none: no early stop)"""
    stop_window: int = 8
    """the mean return of the last stop_window training episodes must reach target_return to trigger a confirmation"""
    confirm_episodes: int = 20
    """fresh episodes (a separate env, sampled actions) whose mean must reach target_return + confirm_margin to stop; 0: stop on the training test alone"""
    confirm_margin: float = 10.0
    """extra return the confirmation must show above target_return"""
    device: str | None = None
    """torch device; None picks pgcore.get_device()"""

    def __post_init__(self):
        bad = check_shared_fields(self)  # the fields ReinforceConfig has too, one copy of the rules
        for name in ("n_steps", "update_epochs", "num_minibatches"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an int >= 1")
        if self.advantage not in ADVANTAGES:
            bad("advantage", ", ".join(ADVANTAGES))
        if self.advantage in ("nstep", "gae") and self.baseline != "value":
            bad("baseline", f"'value' with advantage={self.advantage!r} (it bootstraps from the critic)")
        if not is_number(self.lam) or not (0 <= self.lam <= 1):
            bad("lam", "a number in [0, 1]")
        if self.adv_norm_scope not in ADV_NORM_SCOPES:
            bad("adv_norm_scope", ", ".join(ADV_NORM_SCOPES))
        if self.target_kl is not None and (not is_number(self.target_kl) or self.target_kl <= 0):
            bad("target_kl", "None or a number > 0")
        if not isinstance(self.value_minibatch, bool):
            bad("value_minibatch", "True or False")
        if self.clip_eps is not None and (not is_number(self.clip_eps) or not (0 < self.clip_eps < 1)):
            bad("clip_eps", "None or a number in (0, 1)")

    @property
    def episodes_per_update(self) -> int:
        """Episodes in one batch: num_envs * episodes_per_env."""
        return self.num_envs * self.episodes_per_env

    @property
    def uses_critic(self) -> bool:
        """True when a ValueNet is trained (a value baseline, or an n-step / GAE advantage)."""
        return self.baseline == "value"

    def replace(self, **changes) -> "ActorCriticConfig":
        """A copy with some fields changed (validated again), e.g. `cfg.replace(lam=0.9)`."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_reinforce(cls, config: ReinforceConfig | None = None, **changes) -> "ActorCriticConfig":
        """The settings of a `pgcore.reinforce.ReinforceConfig` (None: its defaults) as an ActorCriticConfig.

        Every shared field is copied, `weighting` becomes `advantage`; one epoch, no clip. With no
        `changes`, `train` then takes exactly the steps of `pgcore.reinforce.train`.

        Introduced in notebooks/03_variance_reduction.ipynb.
        """
        config = ReinforceConfig() if config is None else config
        if not isinstance(config, ReinforceConfig):
            raise ValueError(f"config must be a ReinforceConfig or None, got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in names}
        return cls(**{**shared, "advantage": config.weighting, "update_epochs": 1, "num_minibatches": 1,
                      "clip_eps": None, **changes})
