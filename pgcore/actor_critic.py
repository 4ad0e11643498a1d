"""REINFORCE with a critic and a clip: Actor-Critic (one-step, n-step, GAE) and PPO-style updates.

The same five steps as `pgcore.reinforce`, the same rollouts (`collect_rollout`), the same
`TrainResult`; only two places of the loop gain options:

  3. the advantage:  "total_return" R(tau), "reward_to_go" G_t (minus a baseline: none, the batch
     mean, or a learned V(s_t)), "nstep" (the n-step return minus V(s_t), n = 1 is the one-step
     actor-critic) or "gae" (GAE(lambda), `pgcore.pg.gae`). The last two bootstrap from a learned
     critic V_phi (`pgcore.policies.ValueNet`), fitted after every update (`fit_value`).
  4. the update:     `update_epochs` passes over the batch in `num_minibatches` minibatches, each a
     step on `pgcore.pg.ppo_clip_loss`: the importance ratio pi_theta / pi_old lets a batch be
     reused, `clip_eps` clips it (PPO); clip_eps=None is the plain ratio objective. With one epoch
     and one minibatch the ratio is 1 and the step is REINFORCE's step on `pg_loss`. `ppo_update` is this
     step on its own; CleanRL's options are fields too: advantages standardized per minibatch
     (`adv_norm_scope`), an approx-KL early stop (`target_kl`), the critic trained in the same minibatch
     loop (`value_minibatch`), an entropy bonus (`ent_coef`) and gradient clipping (`max_grad_norm`).

So `train(config=ActorCriticConfig.from_reinforce(rc))` is REINFORCE (it retraces
`pgcore.reinforce.train(config=rc)` step for step), `advantage="gae"` is
an actor-critic (A2C-style, one update per batch), and `update_epochs=4, clip_eps=0.2` makes it PPO.

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import envs as _envs
from .pg import gae, normalize, ppo_clip_loss, td_error
from .policies import ACTIVATIONS
from .reinforce.config import BASELINES, ReinforceConfig
from .reinforce.loop import TrainResult, _Confirmation, _episode_stats, _init_networks, _start
from .reinforce.rollout import (Rollout, _policy_device, _torch_threads, collect_rollout, compute_advantages,
                                compute_weights)
from .returns import reward_to_go

__all__ = [
    "ActorCriticConfig",
    "ADVANTAGES",
    "n_step_advantage",
    "critic_values",
    "rollout_advantages",
    "fit_value",
    "ppo_update",
    "train",
    "TrainResult",
]

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
        def bad(name, accepted):
            raise ValueError(f"ActorCriticConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        def is_num(x):
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        if not is_num(self.lr) or self.lr <= 0:
            bad("lr", "a number > 0")
        if not is_num(self.gamma) or not (0 < self.gamma <= 1):
            bad("gamma", "a number in (0, 1]")
        for name in ("num_envs", "episodes_per_env", "max_env_steps", "n_steps", "update_epochs",
                     "num_minibatches", "value_iters", "stop_window"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an int >= 1")
        hs = self.hidden_sizes
        if not isinstance(hs, (tuple, list)) or not all(is_int(h) and h >= 1 for h in hs):
            bad("hidden_sizes", "a tuple of ints >= 1, e.g. (32,)")
        if isinstance(hs, list):
            object.__setattr__(self, "hidden_sizes", tuple(hs))
        if self.activation not in ACTIVATIONS:
            bad("activation", ", ".join(ACTIVATIONS))
        if self.advantage not in ADVANTAGES:
            bad("advantage", ", ".join(ADVANTAGES))
        if self.baseline not in BASELINES:
            bad("baseline", ", ".join(BASELINES))
        if self.advantage in ("nstep", "gae") and self.baseline != "value":
            bad("baseline", f"'value' with advantage={self.advantage!r} (it bootstraps from the critic)")
        if not is_num(self.lam) or not (0 <= self.lam <= 1):
            bad("lam", "a number in [0, 1]")
        if not isinstance(self.normalize_adv, bool):
            bad("normalize_adv", "True or False")
        if self.adv_norm_scope not in ADV_NORM_SCOPES:
            bad("adv_norm_scope", ", ".join(ADV_NORM_SCOPES))
        if self.target_kl is not None and (not is_num(self.target_kl) or self.target_kl <= 0):
            bad("target_kl", "None or a number > 0")
        if not isinstance(self.value_minibatch, bool):
            bad("value_minibatch", "True or False")
        if self.clip_eps is not None and (not is_num(self.clip_eps) or not (0 < self.clip_eps < 1)):
            bad("clip_eps", "None or a number in (0, 1)")
        if not is_num(self.ent_coef) or self.ent_coef < 0:
            bad("ent_coef", "a number >= 0")
        if self.max_grad_norm is not None and (not is_num(self.max_grad_norm) or self.max_grad_norm <= 0):
            bad("max_grad_norm", "None or a number > 0")
        if not is_num(self.value_lr) or self.value_lr <= 0:
            bad("value_lr", "a number > 0")
        if not isinstance(self.early_stop, bool):
            bad("early_stop", "True or False")
        if self.target_return is not None and not is_num(self.target_return):
            bad("target_return", "None or a finite number")
        if not is_int(self.confirm_episodes) or self.confirm_episodes < 0:
            bad("confirm_episodes", "an int >= 0")
        if not is_num(self.confirm_margin) or self.confirm_margin < 0:
            bad("confirm_margin", "a number >= 0")

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


def n_step_advantage(
    rew: torch.Tensor,
    val: torch.Tensor,
    done: torch.Tensor | None,
    gamma: float,
    n: int,
    *,
    next_val: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The n-step advantage: n rewards, then the critic's estimate of the rest, minus V(s_t).

        A_t = r_t + gamma r_{t+1} + ... + gamma^(m-1) r_{t+m-1} + gamma^m V(s_{t+m}) - V(s_t)
            = sum_{k < m} gamma^k delta_{t+k}                     (delta: the one-step TD error)

    with m = min(n, steps left in t's episode) and V = 0 after a terminal step (after a truncated
    one: next_val). n = 1 is the TD error of the one-step actor-critic (`pgcore.pg.td_error`);
    n >= the episode length gives G_t - V(s_t). Compare GAE, which averages all n with weights
    (1 - lam) lam^(n-1) instead of picking one.

    Args:
        rew, val, done, next_val, terminated, mask: time-major (T, N) (or (T,)) tensors, as in
            `pgcore.pg.gae`.
        gamma: discount in (0, 1].
        n: number of real rewards before bootstrapping, an int >= 1.

    Returns:
        A_t, shaped like `rew`; 0 at masked steps.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    delta = td_error(rew, val, done, gamma, next_val=next_val, terminated=terminated, mask=mask)
    squeeze = delta.dim() == 1
    delta2 = delta[:, None] if squeeze else delta
    T = delta2.shape[0]
    if done is None:
        done2 = torch.zeros_like(delta2, dtype=torch.bool)
    else:
        done2 = (done[:, None] if squeeze else done).to(torch.bool)
    out = torch.zeros_like(delta2)
    alive = torch.ones_like(delta2, dtype=torch.bool)     # step t + k is still in t's episode
    for k in range(min(int(n), T)):
        # delta_{t+k} for every t (the last k rows have no step t + k: they stay dead)
        out[: T - k] += torch.where(alive[: T - k], float(gamma) ** k * delta2[k:], torch.zeros_like(delta2[k:]))
        alive[: T - k] &= ~done2[k:]                      # an episode that ended at t + k stops the sum
        if k + 1 < T:
            alive[T - k - 1:] = False
    if mask is not None:
        mask2 = (mask[:, None] if squeeze else mask).to(torch.bool)
        out = torch.where(mask2, out, torch.zeros_like(out))
    return out[:, 0] if squeeze else out


def critic_values(value_net: torch.nn.Module, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """V(s_t) and V(s_{t+1}) for every step of a rollout, without grad, on the CPU.

    Returns (val, next_val), each (T, N): the critic on `batch.obs` and on `batch.next_obs` (the
    observation after step t; the final one where an episode ended).

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    device = _policy_device(value_net)
    with torch.no_grad():
        val = value_net(batch.obs.to(device)).float().cpu()
        next_val = value_net(batch.next_obs.to(device)).float().cpu()
    return val, next_val


def rollout_advantages(
    batch: Rollout,
    config: ActorCriticConfig,
    value_net: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Steps 2-3 of `train`: advantages and the critic's regression targets for the valid steps.

    Monte Carlo ("total_return", "reward_to_go"): `pgcore.reinforce.compute_weights` and
    `compute_advantages` (baseline none / mean / value), target G_t. Bootstrapped ("nstep",
    "gae"): the n-step advantage or GAE(lambda) from the critic, target A_t + V(s_t) (the n-step
    return, the lambda-return). Then standardized if `config.normalize_adv` with `adv_norm_scope="batch"`
    (with "minibatch", `ppo_update` standardizes each minibatch instead).

    Returns:
        (adv (S,), target (S,) or None when there is no critic), in `batch.mask` order.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    cfg = config
    if cfg.advantage in ("total_return", "reward_to_go"):
        weights = compute_weights(batch, cfg.gamma, cfg.advantage)
        adv = compute_advantages(batch, weights, cfg.baseline, cfg.normalize_adv and cfg.adv_norm_scope == "batch", value_net)
        target = None
        if value_net is not None:
            target = reward_to_go(batch.rew, cfg.gamma, batch.done, batch.mask)[batch.mask]
        return adv, target
    if value_net is None:
        raise ValueError(f"advantage={cfg.advantage!r} needs a value_net; accepted: a pgcore.policies.ValueNet")
    val, next_val = critic_values(value_net, batch)
    common = dict(next_val=next_val, terminated=batch.terminated, mask=batch.mask)
    if cfg.advantage == "gae":
        full = gae(batch.rew, val, batch.done, cfg.gamma, float(cfg.lam), **common)
    else:
        full = n_step_advantage(batch.rew, val, batch.done, cfg.gamma, cfg.n_steps, **common)
    adv = full[batch.mask]
    target = adv + val[batch.mask]
    if cfg.normalize_adv and cfg.adv_norm_scope == "batch" and adv.numel() >= 2:
        adv = normalize(adv)
    return adv, target


def fit_value(
    value_net: torch.nn.Module,
    obs: torch.Tensor,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    iters: int = 10,
    lr: float = 1e-2,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Regress V_phi(obs) on `target` with Adam: `iters` steps on the mean squared error.

    Args:
        value_net: module, (S, obs_dim) -> (S,).
        obs: (S, obs_dim) observations; target: (S,) regression targets (e.g. G_t or lambda-returns).
        optimizer: an optimizer over value_net's parameters to keep using (its state persists
            between calls, as in `train`); None: a fresh Adam with `lr`.
        iters: gradient steps, >= 1.
        batch_size: None: every step uses all S samples; else steps on shuffled minibatches of
            this size, `iters` counting passes over the data (epochs).
        generator: CPU generator for the shuffling.

    Returns:
        The mean squared error on all samples after the last step.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if obs.shape[0] != target.shape[0] or target.dim() != 1:
        raise ValueError(f"obs (S, obs_dim) and target (S,) must match, got {tuple(obs.shape)} and {tuple(target.shape)}")
    device = _policy_device(value_net)
    obs, target = obs.to(device), target.to(device).detach()
    opt = optimizer if optimizer is not None else torch.optim.Adam(value_net.parameters(), lr=lr)
    n = obs.shape[0]
    for _ in range(int(iters)):
        if batch_size is None:
            chunks = [slice(None)]
        else:
            perm = torch.randperm(n, generator=generator).to(device)
            chunks = [perm[i:i + batch_size] for i in range(0, n, int(batch_size))]
        for idx in chunks:
            loss = ((value_net(obs[idx]) - target[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((value_net(obs) - target) ** 2).mean())


def ppo_update(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    obs: torch.Tensor,
    act: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    config: ActorCriticConfig,
    *,
    generator: torch.Generator | None = None,
    value_net: torch.nn.Module | None = None,
    value_optimizer: torch.optim.Optimizer | None = None,
    v_target: torch.Tensor | None = None,
) -> dict:
    """Steps 4-5 of `train`: `update_epochs` passes of `num_minibatches` steps on one batch (PPO's update).

    Per epoch, a fresh permutation of the S steps (from `generator`; none when num_minibatches = 1)
    is cut into minibatches; on each: the advantages (standardized here if normalize_adv and
    adv_norm_scope="minibatch"), `pgcore.pg.ppo_clip_loss` minus ent_coef times the mean entropy,
    backward, the gradient norm clipped to max_grad_norm, an optimizer step; with value_minibatch,
    then one step of `value_optimizer` on 0.5 * mean((V(s) - v_target)^2) over the minibatch. After
    each epoch, with target_kl set, the epochs stop once the last minibatch's approx KL (k3, measured
    before its step) exceeds target_kl. The same loop as CleanRL's ppo.py, with the critic a separate
    network with its own optimizer.

    Args:
        policy, optimizer: the policy (obs -> Categorical) and its optimizer; updated in place.
        obs (S, obs_dim), act (S,), old_logp (S,) log pi_old(a|s) from the rollout, adv (S,): on the
            policy's device.
        config: an ActorCriticConfig (update_epochs, num_minibatches, clip_eps, ent_coef,
            max_grad_norm, normalize_adv, adv_norm_scope, target_kl, value_minibatch).
        generator: CPU generator of the minibatch permutations.
        value_net, value_optimizer, v_target (S,): the critic, for value_minibatch.

    Returns:
        dict: "first" (loss, grad_norm, entropy) of the first step (the on-policy one), "clip_fracs"
        (one per step), "epochs" (passes run), "approx_kl" (of the last minibatch, before its step).

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    cfg = config
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
    per_minibatch = cfg.normalize_adv and cfg.adv_norm_scope == "minibatch"
    train_critic = cfg.value_minibatch and value_net is not None
    if train_critic and (value_optimizer is None or v_target is None):
        raise ValueError("value_minibatch needs value_optimizer and v_target")
    num_steps = obs.shape[0]
    first = None
    clip_fracs: list[float] = []
    epochs = 0
    approx_kl = float("nan")
    for _ in range(cfg.update_epochs):
        if cfg.num_minibatches == 1:
            chunks = [slice(None)]
        else:
            perm = torch.randperm(num_steps, generator=generator).to(obs.device)
            size = -(-num_steps // cfg.num_minibatches)
            chunks = [perm[i:i + size] for i in range(0, num_steps, size)]
        for idx in chunks:
            dist = policy(obs[idx])
            logp = dist.log_prob(act[idx])
            entropy = dist.entropy().mean()
            mb_adv = normalize(adv[idx]) if per_minibatch else adv[idx]
            loss, stats = ppo_clip_loss(logp, old_logp[idx], mb_adv, cfg.clip_eps)
            loss = loss - cfg.ent_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
            optimizer.step()
            if train_critic:
                v_loss = 0.5 * ((value_net(obs[idx]) - v_target[idx]) ** 2).mean()
                value_optimizer.zero_grad()
                v_loss.backward()
                value_optimizer.step()
            clip_fracs.append(stats["clip_frac"])
            approx_kl = stats["approx_kl"]
            if first is None:  # the on-policy step: what REINFORCE would log
                first = (float(loss.detach()), float(grad_norm), float(entropy.detach()))
        epochs += 1
        if cfg.target_kl is not None and approx_kl > cfg.target_kl:  # approx_kl, see http://joschu.net/blog/kl-approx.html
            break
    return {"first": first, "clip_fracs": clip_fracs, "epochs": epochs, "approx_kl": approx_kl}


def train(
    env="CartPole-v1",
    *,
    seed: int = 0,
    config: ActorCriticConfig | None = None,
    progress: bool = True,
    policy: torch.nn.Module | None = None,
) -> TrainResult:
    """Train a categorical policy with REINFORCE / Actor-Critic / PPO-style updates (see the module docstring).

    Each update: collect num_envs * episodes_per_env complete episodes (step 1); the advantage of
    every step from the returns or the critic (2-3, `rollout_advantages`); `update_epochs` passes
    of `num_minibatches` Adam steps on `pgcore.pg.ppo_clip_loss` (4-5, `ppo_update`); then `value_iters`
    steps on the critic (or, with value_minibatch, one critic step per minibatch inside `ppo_update`). Early stopping, budget and seeding work exactly as in `pgcore.reinforce.train`.

    Args:
        env: a Gymnasium env id, a gym.Env object or a gym.vector.VectorEnv (discrete actions).
        seed: seeds the networks' init, the env resets, the action samples and the minibatch
            shuffling; same seed, same history (up to the "seconds" column).
        config: an ActorCriticConfig (None: the defaults).
        progress: show a tqdm progress bar over env steps.
        policy: optional starting policy (a deep copy is trained); None: a fresh MLPPolicy.

    Returns:
        `pgcore.reinforce.TrainResult` (.policy, .value_net, .env_steps, .history, .history_df()).
        Its history has the keys of `pgcore.reinforce.train` plus, per update, what the update did
        to the policy on its own batch: "approx_kl" (k3 estimate of KL(pi_old || pi_new); "approx_kl_k1"
        the k1 estimate),
        "ratio_min", "ratio_max" (of pi_new / pi_old over the batch's steps), "clip_frac" (mean
        over the optimizer steps of the fraction of clipped ratios) and "optimizer_steps".

    Raises:
        ValueError: bad config/seed, unknown env id, non-discrete action space, mismatched policy.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    from tqdm.auto import tqdm

    cfg, seed, device, env_id, target, early_stop = _start(env, config, ActorCriticConfig, seed)

    envs = _envs.make_env(env, num_envs=cfg.num_envs, seed=seed)
    confirmation = _Confirmation(env, cfg, seed)
    bar = None
    try:
        policy, value_net = _init_networks(envs, policy, cfg, device, env_id, seed, critic=cfg.uses_critic)
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        value_opt = torch.optim.Adam(value_net.parameters(), lr=cfg.value_lr) if value_net is not None else None
        generator = torch.Generator().manual_seed(seed)
        shuffle_generator = torch.Generator().manual_seed(seed + 2)

        history: list[dict] = []
        recent: list[float] = []
        env_steps = episodes = 0
        solved = False
        start = time.perf_counter()
        name = "PPO" if cfg.clip_eps is not None else ("REINFORCE" if cfg.advantage in ("total_return", "reward_to_go") else "A2C")
        bar = tqdm(total=cfg.max_env_steps, disable=not progress, desc=f"{name} {env_id}", unit="step")
        with _torch_threads(device):
            while env_steps < cfg.max_env_steps:
                # 1. sample a batch of complete episodes with the current policy (pi_old)
                policy.eval()
                batch = collect_rollout(envs, policy, cfg.episodes_per_update, generator=generator)
                # 2.-3. the advantage of every valid step: returns, or the critic's bootstrap
                adv, v_target = rollout_advantages(batch, cfg, value_net)
                adv = adv.to(device)
                obs, act = batch.obs[batch.mask].to(device), batch.act[batch.mask].to(device)
                old_logp = batch.logp[batch.mask].to(device)     # log pi_old(a_t|s_t), from the rollout
                # 4.-5. epochs of minibatch steps on the ratio objective (clipped if clip_eps)
                policy.train()
                v_target_dev = v_target.to(device) if (cfg.value_minibatch and v_target is not None) else None
                upd = ppo_update(policy, optimizer, obs, act, old_logp, adv, cfg, generator=shuffle_generator,
                                 value_net=value_net, value_optimizer=value_opt, v_target=v_target_dev)
                first, clip_fracs = upd["first"], upd["clip_fracs"]
                # what the whole update did to the policy on its batch
                policy.eval()
                with torch.no_grad():
                    _, after = ppo_clip_loss(policy(obs).log_prob(act), old_logp, adv, None)

                value_loss = float("nan")
                if value_net is not None and not cfg.value_minibatch:  # regress V on the targets, for the next batch
                    value_loss = fit_value(value_net, obs, v_target, value_opt, iters=cfg.value_iters)
                elif value_net is not None:  # trained in the minibatch loop: its error after the update
                    with torch.no_grad():
                        value_loss = float(((value_net(obs) - v_target_dev) ** 2).mean())

                env_steps += batch.num_steps
                episodes += batch.num_episodes
                rets = batch.ep_returns
                recent = (recent + rets.tolist())[-cfg.stop_window:]
                eval_return = float("nan")
                if early_stop and len(recent) >= cfg.stop_window and np.mean(recent) >= target:
                    if cfg.confirm_episodes == 0:
                        solved = True
                    else:
                        eval_return, solved = confirmation.check(policy, target)
                history.append({
                    "update": len(history) + 1,
                    "env_steps": env_steps,
                    "episodes": episodes,
                    **_episode_stats(batch),
                    "loss": first[0],
                    "grad_norm": first[1],
                    "entropy": first[2],
                    "value_loss": value_loss,
                    "eval_return": eval_return,
                    "approx_kl": after["approx_kl"],
                    "approx_kl_k1": after["approx_kl_k1"],
                    "ratio_min": after["ratio_min"],
                    "ratio_max": after["ratio_max"],
                    "clip_frac": float(np.mean(clip_fracs)),
                    "optimizer_steps": len(clip_fracs),
                    "seconds": time.perf_counter() - start,
                })
                bar.update(min(batch.num_steps, cfg.max_env_steps - bar.n))
                bar.set_postfix(ret=f"{rets.mean():.1f}")
                if solved:
                    break
    finally:
        if bar is not None:
            bar.close()
        if envs is not env:
            envs.close()
        confirmation.close()
    policy.eval()
    return TrainResult(policy=policy, value_net=value_net, config=cfg, env_id=env_id, env_steps=env_steps,
                       history=history, solved=solved, seconds=time.perf_counter() - start)
