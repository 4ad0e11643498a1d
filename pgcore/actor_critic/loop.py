"""`train`: the REINFORCE loop of `pgcore.reinforce` with a critic's advantages and PPO's update."""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import envs as _envs
from ..estimators import ppo_clip_loss
from ..reinforce.loop import (
    Confirmation,
    TrainResult,
    episode_stats,
    init_networks,
    start_training,
)
from ..reinforce.rollout import collect_rollout, torch_threads
from .config import ActorCriticConfig
from .update import fit_value, ppo_update, rollout_advantages

__all__ = ["train", "TrainResult"]

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
    of `num_minibatches` Adam steps on `pgcore.ppo_clip_loss` (4-5, `ppo_update`); then `value_iters`
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

    cfg, seed, device, env_id, target, early_stop = start_training(env, config, ActorCriticConfig, seed)

    envs = _envs.make_env(env, num_envs=cfg.num_envs, seed=seed)
    confirmation = Confirmation(env, cfg, seed)
    bar = None
    try:
        policy, value_net = init_networks(envs, policy, cfg, device, env_id, seed, critic=cfg.uses_critic)
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
        with torch_threads(device):
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
                    **episode_stats(batch),
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
                       history=history, solved=solved, seconds=time.perf_counter() - start,
                       confirm_env_steps=confirmation.env_steps)
