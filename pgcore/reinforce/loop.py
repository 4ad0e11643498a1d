"""Steps 4-5 and the loop: `train` (REINFORCE with logging, a budget and a solved check), and the
helpers `pgcore.actor_critic` shares with it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from .. import envs as _envs
from .._checks import check_int
from ..estimators import pg_loss
from ..policies import GaussianPolicy, MLPPolicy, ValueNet
from ..returns import reward_to_go
from ..utils import get_device
from .config import ReinforceConfig, TrainConfig
from .rollout import (Rollout, torch_threads, collect_rollout, compute_advantages, compute_weights, policy_device,
                      sample_actions)


# ---------------------------------------------------------------- shared by train() here and in actor_critic
def _target_return(env, target: float | None) -> float | None:
    """The return that counts as solved: `target`, else the env spec's reward_threshold (None if none)."""
    if target is not None:
        return target
    spec = getattr(env, "spec", None)
    if isinstance(env, str):
        try:
            spec = gym.spec(env)
        except gym.error.Error:
            spec = None  # make_env raises the ValueError
    return getattr(spec, "reward_threshold", None)


def start_training(env, config, config_cls, seed):
    """Both train loops begin here: the validated config and seed, the device, the env id, the
    return that counts as solved, and whether to stop early on it."""
    cfg = config_cls() if config is None else config
    if not isinstance(cfg, config_cls):
        name = config_cls.__name__
        raise ValueError(f"config must be {'an' if name[0] in 'AEIOU' else 'a'} {name} or None, got {type(cfg).__name__}")
    seed = check_int(seed, "seed", low=None)
    target = _target_return(env, cfg.target_return)
    return cfg, seed, get_device(cfg.device), _envs.env_id_of(env), target, cfg.early_stop and target is not None


def init_networks(envs, policy, cfg, device: torch.device, env_id: str, seed: int, critic: bool):
    """The policy (a fresh MLPPolicy, or GaussianPolicy for a Box action space, or a deep copy of the given
    one, checked against the env) and the critic (a ValueNet when `critic`, else None), initialized from
    `seed` without touching the global RNG."""
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    box = _envs.is_box_action_space(envs.single_action_space)
    num_actions = int(envs.single_action_space.shape[0] if box else envs.single_action_space.n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if policy is None and box:
            policy = GaussianPolicy(obs_dim, num_actions, cfg.hidden_sizes, cfg.activation,
                                    getattr(cfg, "log_std_init", 0.0)).to(device)
        elif policy is None:
            policy = MLPPolicy(obs_dim, num_actions, cfg.hidden_sizes, cfg.activation).to(device)
        else:
            policy = copy.deepcopy(policy).to(device)
            with torch.no_grad():
                dist = policy(torch.zeros(1, obs_dim, device=device))
            if isinstance(dist, torch.distributions.Categorical) == box:
                kind = "a Gaussian (continuous actions)" if box else "a Categorical (discrete actions)"
                raise ValueError(f"policy returns {type(dist).__name__} but env {env_id!r} has action space "
                                 f"{envs.single_action_space}; accepted: a policy returning {kind}")
            n_out = dist.mean.shape[-1] if box else dist.probs.shape[-1]
            if n_out != num_actions:
                what = "action dimensions" if box else "actions"
                raise ValueError(f"policy has {n_out} {what} but env {env_id!r} has {num_actions}; accepted: a matching policy")
        value_net = ValueNet(obs_dim, cfg.hidden_sizes, cfg.activation).to(device) if critic else None
    return policy, value_net


# the largest reward of one step of the registered envs whose rewards are known (a check may then stop early)
MAX_STEP_REWARD = {"CartPole": 1.0, "Acrobot": 0.0}


class Confirmation:
    """The solved check: `confirm_episodes` fresh episodes (own envs, seeded per check) must score at
    least target + confirm_margin on average. The envs are made on first use and closed by `close`;
    `env_steps` counts the steps of all checks (they are not training data).

    A check of a registered env in MAX_STEP_REWARD stops as soon as it cannot pass: when the finished
    episodes' returns plus the best that the others can still score (the return so far plus the steps
    left to the time limit times the largest reward) average below the bar. Its decision is that of
    playing every episode to the end (`decide_early=False`, the naive twin; tests/test_reinforce.py);
    it then logs that best reachable mean.
    """

    def __init__(self, env, cfg, seed: int, decide_early: bool = True):
        self.env, self.cfg, self.seed = env, cfg, seed
        self.envs = None
        self.env_steps = 0
        self.checks = 0
        self.decide_early = decide_early

    def _step_bound(self):
        """(largest reward of a step, steps of the time limit), or None if a check must play to the end."""
        spec = getattr(self.envs, "spec", None)
        if not (self.decide_early and isinstance(self.env, str)) or spec is None:
            return None
        r_max = MAX_STEP_REWARD.get(spec.name)
        if r_max is None or (r_max > 0 and spec.max_episode_steps is None):
            return None
        return r_max, spec.max_episode_steps

    def check(self, policy, target: float) -> tuple[float, bool]:
        """(mean return of the fresh episodes, or the best it could still reach if stopped early; solved?)."""
        cfg = self.cfg
        if self.envs is None:
            source = self.env if isinstance(self.env, str) else copy.deepcopy(self.env)
            self.envs = _envs.make_env(source, num_envs=cfg.confirm_episodes, seed=self.seed + 10_007, allow_box=True)
        # each check its own seeds, so an early stop leaves the next checks unchanged
        env_seed, sample_seed = (int(x) for x in np.random.SeedSequence([self.seed, 10_007, self.checks]).generate_state(2))
        self.checks += 1
        n = self.envs.num_envs
        per_env = -(-cfg.confirm_episodes // n)
        bar = target + cfg.confirm_margin
        policy.eval()
        with torch_threads(policy_device(policy)):
            mean, steps = play_returns(self.envs, policy, per_env, bar, self._step_bound(),
                                       torch.Generator().manual_seed(sample_seed), env_seed)
        self.env_steps += steps
        return float(mean), bool(mean >= bar)

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


def play_returns(envs, policy, per_env: int, bar: float, bound, generator, env_seed: int) -> tuple[float, int]:
    """Play `per_env` episodes on each copy of `envs` (as `collect_rollout` does, keeping only the
    returns): (their mean return, env steps). With `bound` = (largest step reward, time limit), stop
    once even the best outcome of the unfinished episodes leaves the mean below `bar`; the mean
    returned is then that best outcome."""
    n = envs.num_envs
    next_step = _envs.autoreset_mode(envs) == gym.vector.AutoresetMode.NEXT_STEP
    device = policy_device(policy)
    box = _envs.is_box_action_space(envs.single_action_space)
    obs, _ = envs.reset(seed=env_seed)
    finished = np.zeros(n, dtype=np.int64)      # episodes completed per copy
    resetting = np.zeros(n, dtype=bool)         # NEXT_STEP: this step only resets the copy
    ret = np.zeros(n, dtype=np.float64)
    length = np.zeros(n, dtype=np.int64)
    done_sum, steps, total = 0.0, 0, n * per_env
    while (finished < per_env).any():
        act, _ = sample_actions(policy, obs, generator, device=device)
        act = act.numpy()
        if box:
            act = np.clip(act, envs.single_action_space.low, envs.single_action_space.high)
        obs, rew, term, trunc, _ = envs.step(act)
        valid = (finished < per_env) & ~resetting
        ended = np.asarray(term, dtype=bool) | np.asarray(trunc, dtype=bool)
        ret += np.where(valid, np.asarray(rew, dtype=np.float64), 0.0)
        length += valid
        steps += int(valid.sum())
        for i in np.flatnonzero(ended & valid):
            done_sum += ret[i]
            ret[i], length[i] = 0.0, 0
            finished[i] += 1
        resetting = ended if next_step else np.zeros(n, dtype=bool)
        if bound is not None:
            r_max, limit = bound
            running = finished < per_env
            # the best each unfinished episode can still score; episodes not yet begun: the best of a whole one
            left = (limit - length[running]) * r_max if r_max > 0 else 0.0
            unstarted = int((per_env - finished[running] - 1).sum())
            best = done_sum + float(np.sum(ret[running] + left)) + unstarted * (limit * r_max if r_max > 0 else 0.0)
            if best / total < bar:
                return best / total, steps
    return done_sum / total, steps


def episode_stats(batch: Rollout) -> dict:
    """The history fields that describe a batch's finished episodes."""
    rets = batch.ep_returns
    return {
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "return_min": float(rets.min()),
        "return_max": float(rets.max()),
        "length_mean": float(batch.ep_lengths.mean()),
    }


@dataclass
class TrainResult:
    """What `train` returns.

    policy:     the trained MLPPolicy (policy(obs_batch) -> Categorical), or GaussianPolicy for a Box
                action space (-> Independent(Normal)), in eval mode
    value_net:  the ValueNet when baseline="value", else None
    config:     the config used (a ReinforceConfig, or an ActorCriticConfig)
    env_id:     name of the env trained on
    env_steps:  env steps (transitions of collected episodes) used
    history:    one dict per update, keys: update, env_steps, episodes, return_mean, return_std,
                return_min, return_max, length_mean, loss, grad_norm, entropy, value_loss,
                eval_return (NaN unless a confirmation ran), seconds
    solved:     training stopped early because target_return was reached and confirmed
    seconds:    wall-clock time of training
    confirm_env_steps: env steps of the confirmation runs (fresh episodes, not counted in env_steps)
    """

    policy: torch.nn.Module
    value_net: ValueNet | None
    config: TrainConfig
    env_id: str
    env_steps: int
    history: list[dict] = field(default_factory=list)
    solved: bool = False
    seconds: float = 0.0
    confirm_env_steps: int = 0

    def history_df(self):
        """The history as a pandas DataFrame, one row per update."""
        import pandas as pd

        return pd.DataFrame(self.history)


def train(
    env="CartPole-v1",
    *,
    seed: int = 0,
    config: ReinforceConfig | None = None,
    progress: bool = True,
    policy: torch.nn.Module | None = None,
) -> TrainResult:
    """Train a policy with REINFORCE on a Gymnasium env: a categorical policy for a Discrete action
    space, a Gaussian policy (`pgcore.policies.GaussianPolicy`, state-independent learned log-std) for a
    1-D Box action space. Box actions are sampled from the Gaussian, clipped to the bounds only when
    stepping the env, and the log-prob of the unclipped sample (summed over action dimensions) is what
    the loss differentiates.

    Each update: collect num_envs * episodes_per_env complete episodes (step 1), weight each
    grad log pi by R(tau) or the reward-to-go (2), subtract a baseline and normalize (3),
    loss = pgcore.pg_loss(logp, adv) (4), one Adam step (5). Stops at the env-step budget,
    or early: once the last `stop_window` training episodes average >= target_return, the
    policy plays `confirm_episodes` fresh episodes on a separate env, and training stops if their
    mean is >= target_return + confirm_margin (logged as "eval_return"; those steps are not
    counted in env_steps, which counts training transitions only).

    Args:
        env: a Gymnasium env id ("CartPole-v1", "Acrobot-v1", "ShortCorridor-v0", ...), a gym.Env
            object (e.g. pgcore.envs.ShortCorridor()) or a gym.vector.VectorEnv (its own num_envs
            then replaces config.num_envs).
        seed: seeds the network init, the env resets and the action samples; same seed, same
            history (up to the "seconds" column). The global RNGs (torch, numpy, random) are left untouched.
        config: a ReinforceConfig (None: the defaults, which solve CartPole-v1).
        progress: show a tqdm progress bar over env steps.
        policy: optional starting policy (obs -> Categorical, or a Gaussian for Box actions), e.g. a
            chosen init or one to keep training; a deep copy is trained, the argument is left unchanged.
            None: a fresh MLPPolicy(obs_dim, num_actions, config.hidden_sizes, config.activation), or
            GaussianPolicy(obs_dim, act_dim, config.hidden_sizes, config.activation, config.log_std_init).

    Returns:
        TrainResult with .policy, .env_steps, .history (list of dicts), .history_df(), .config.

    Raises:
        ValueError: bad config/seed, unknown env id, an action space that is neither Discrete nor a 1-D
            float Box (the message names the space and what is accepted), mismatched policy.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    from tqdm.auto import tqdm

    cfg, seed, device, env_id, target, early_stop = start_training(env, config, ReinforceConfig, seed)

    envs = _envs.make_env(env, num_envs=cfg.num_envs, seed=seed, allow_box=True)
    confirmation = Confirmation(env, cfg, seed)
    bar = None
    try:
        policy, value_net = init_networks(envs, policy, cfg, device, env_id, seed, critic=cfg.baseline == "value")
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        value_opt = torch.optim.Adam(value_net.parameters(), lr=cfg.value_lr) if value_net is not None else None
        generator = torch.Generator().manual_seed(seed)

        history: list[dict] = []
        recent: list[float] = []
        env_steps = episodes = 0
        solved = False
        start = time.perf_counter()
        bar = tqdm(total=cfg.max_env_steps, disable=not progress, desc=f"REINFORCE {env_id}", unit="step")
        with torch_threads(device):
            while env_steps < cfg.max_env_steps:
                # 1. sample a batch of complete episodes with the current policy
                policy.eval()
                batch = collect_rollout(envs, policy, envs.num_envs * cfg.episodes_per_env, generator=generator)
                # 2. the return that weights each step, 3. the advantage (valid steps, flat)
                weights = compute_weights(batch, cfg.gamma, cfg.weighting)
                adv = compute_advantages(batch, weights, cfg.baseline, cfg.normalize_adv, value_net).to(device)
                # 4. a loss whose gradient is the policy gradient (its value means nothing)
                policy.train()
                dist = policy(batch.obs[batch.mask].to(device))
                logp = dist.log_prob(batch.act[batch.mask].to(device))
                entropy = dist.entropy().mean()
                loss = pg_loss(logp, adv) - cfg.ent_coef * entropy
                # 5. a gradient step
                if cfg.anneal_lr:
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * max(0.0, 1.0 - env_steps / cfg.max_env_steps)
                optimizer.zero_grad()
                loss.backward()
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
                optimizer.step()

                value_loss = float("nan")
                if value_net is not None:  # regress V(s_t) on the reward-to-go, for the next batch
                    target_v = reward_to_go(batch.rew, cfg.gamma, batch.done, batch.mask)[batch.mask].to(device)
                    obs_v = batch.obs[batch.mask].to(device)
                    for _ in range(cfg.value_iters):
                        v_loss = ((value_net(obs_v) - target_v) ** 2).mean()
                        value_opt.zero_grad()
                        v_loss.backward()
                        value_opt.step()
                    value_loss = float(v_loss.detach())

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
                    "loss": float(loss.detach()),
                    "grad_norm": float(grad_norm),
                    "entropy": float(entropy.detach()),
                    "value_loss": value_loss,
                    "eval_return": eval_return,
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
