"""The parts of an actor-critic update: n-step advantages, the critic's values and its fit, the
advantages of a rollout (`rollout_advantages`) and PPO's minibatch/epoch update (`ppo_update`).
"""
from __future__ import annotations

import torch

from .._checks import check_int
from ..estimators import normalize, ppo_clip_loss
from ..reinforce.rollout import (
    Rollout,
    compute_advantages,
    compute_weights,
    policy_device,
)
from ..returns import gae, reward_to_go, td_error
from .config import ActorCriticConfig

__all__ = ["n_step_advantage", "critic_values", "rollout_advantages", "fit_value", "ppo_update"]

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
    one: next_val). n = 1 is the TD error of the one-step actor-critic (`pgcore.td_error`);
    n >= the episode length gives G_t - V(s_t). Compare GAE, which averages all n with weights
    (1 - lam) lam^(n-1) instead of picking one.

    Args:
        rew, val, done, next_val, terminated, mask: time-major (T, N) (or (T,)) tensors, as in
            `pgcore.gae`.
        gamma: discount in (0, 1].
        n: number of real rewards before bootstrapping, an int >= 1.

    Returns:
        A_t, shaped like `rew`; 0 at masked steps.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    n = check_int(n, "n")
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
    for k in range(min(n, T)):
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
    device = policy_device(value_net)
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
    `compute_advantages` (baseline none / mean / time / value), target G_t. Bootstrapped ("nstep",
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
    iters = check_int(iters, "iters")
    if obs.shape[0] != target.shape[0] or target.dim() != 1:
        raise ValueError(f"obs (S, obs_dim) and target (S,) must match, got {tuple(obs.shape)} and {tuple(target.shape)}")
    device = policy_device(value_net)
    obs, target = obs.to(device), target.to(device).detach()
    opt = optimizer if optimizer is not None else torch.optim.Adam(value_net.parameters(), lr=lr)
    n = obs.shape[0]
    for _ in range(iters):
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
    adv_norm_scope="minibatch"), `pgcore.ppo_clip_loss` minus ent_coef times the mean entropy,
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
