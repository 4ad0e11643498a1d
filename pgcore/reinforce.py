"""REINFORCE for discrete-action Gymnasium envs: rollouts, advantages, the update, the loop.

The five steps of policy gradient, one update of `train`:
  1. sample a batch of trajectories with the current policy       -> `collect_rollout`
  2. compute the return of each step (R(tau) or reward-to-go)     -> `compute_weights`
  3. turn it into an advantage (baseline, normalization)          -> `compute_advantages`
  4. estimate the gradient: loss = -mean(logp * adv), backward    -> `pgcore.pg.pg_loss`
  5. take an optimizer step, and iterate                          -> `train`
Notebook 02 writes these steps visibly; `train` is the same loop with logging and a budget.

Batches are time-major `(T, N)` tensors (see `pgcore.returns`): column n holds the episodes of
env copy n, padded; `mask` marks the real transitions.

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from . import envs as _envs
from .pg import normalize, pg_loss
from .policies import ACTIVATIONS, MLPPolicy, ValueNet
from .returns import discounted_return, reward_to_go
from .utils import get_device

__all__ = [
    "ReinforceConfig",
    "Rollout",
    "TrainResult",
    "collect_rollout",
    "compute_weights",
    "compute_advantages",
    "evaluate",
    "sample_actions",
    "train",
    "WEIGHTINGS",
    "BASELINES",
]

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
        def bad(name, accepted):
            raise ValueError(f"ReinforceConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        def is_num(x):
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        if not is_num(self.lr) or self.lr <= 0:
            bad("lr", "a number > 0")
        if not is_num(self.gamma) or not (0 < self.gamma <= 1):
            bad("gamma", "a number in (0, 1]")
        for name in ("num_envs", "episodes_per_env", "max_env_steps", "value_iters", "stop_window"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an int >= 1")
        hs = self.hidden_sizes
        if not isinstance(hs, (tuple, list)) or not all(is_int(h) and h >= 1 for h in hs):
            bad("hidden_sizes", "a tuple of ints >= 1, e.g. (32,)")
        if isinstance(hs, list):
            object.__setattr__(self, "hidden_sizes", tuple(hs))
        if self.activation not in ACTIVATIONS:
            bad("activation", ", ".join(ACTIVATIONS))
        if self.weighting not in WEIGHTINGS:
            bad("weighting", ", ".join(WEIGHTINGS))
        if self.baseline not in BASELINES:
            bad("baseline", ", ".join(BASELINES))
        if not isinstance(self.anneal_lr, bool):
            bad("anneal_lr", "True or False")
        if not isinstance(self.normalize_adv, bool):
            bad("normalize_adv", "True or False")
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

    def replace(self, **changes) -> "ReinforceConfig":
        """A copy with some fields changed (validated again), e.g. `cfg.replace(lr=3e-3)`."""
        return dataclasses.replace(self, **changes)


@dataclass
class Rollout:
    """A batch of complete episodes, time-major and padded (see `pgcore.returns`).

    obs        (T, N, obs_dim) float32  observation at step t (input of the policy)
    act        (T, N) int64             action taken
    rew        (T, N) float32           reward received (0 where mask is False)
    done       (T, N) bool              an episode ended at step t (terminated or truncated)
    terminated (T, N) bool              it ended in a terminal state (no bootstrapping needed)
    mask       (T, N) bool              step t is a transition of a collected episode; False for
                                        padding after a copy's last episode and for NEXT_STEP
                                        autoreset steps
    logp       (T, N) float32           log pi(a_t|s_t) at collection time (no grad; for PPO ratios)
    next_obs   (T, N, obs_dim) float32  observation after step t (the final one where done)
    ep_returns (E,) float64             undiscounted return of each collected episode, in the
                                        order they finished
    ep_lengths (E,) int64               its number of steps; ep_lengths.sum() == mask.sum()

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    done: torch.Tensor
    terminated: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor
    next_obs: torch.Tensor
    ep_returns: np.ndarray
    ep_lengths: np.ndarray

    @property
    def num_steps(self) -> int:
        """Number of real transitions (env steps) in the batch."""
        return int(self.ep_lengths.sum())

    @property
    def num_episodes(self) -> int:
        """Number of collected (complete) episodes."""
        return int(len(self.ep_returns))


@contextlib.contextmanager
def _torch_threads(device: torch.device, num_threads: int = 1):
    """Run tiny-batch CPU work on one thread: with several, each (B, 2) op waits at a thread
    barrier, which is slower, and much slower on a busy machine. The old setting is restored."""
    if device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _policy_device(policy: torch.nn.Module) -> torch.device:
    p = next(policy.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sample_actions(policy, obs: np.ndarray, generator: torch.Generator | None = None):
    """Sample a ~ pi(.|obs) for a batch of observations, reproducibly with `generator`.

    Args:
        policy: module, policy(obs (B, obs_dim)) -> Categorical.
        obs: (B, obs_dim) array.
        generator: a CPU torch.Generator (Categorical.sample cannot take one, so we use
            torch.multinomial on its probabilities); None: torch's global RNG.

    Returns:
        (act (B,) int64 tensor, logp (B,) float tensor), both on the CPU, no grad.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    device = _policy_device(policy)
    with torch.no_grad():
        dist = policy(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device))
        act = torch.multinomial(dist.probs.float().cpu(), 1, generator=generator).squeeze(1)
        logp = dist.log_prob(act.to(device)).float().cpu()
    return act, logp


def collect_rollout(
    envs: gym.vector.VectorEnv,
    policy,
    num_episodes: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Step 1: sample complete episodes with the current policy from a Gymnasium vector env.

    The env is reset, then every copy plays `num_episodes / envs.num_envs` complete episodes in a
    row (a fixed number per copy: taking "the first K episodes to finish" would favour short
    episodes and bias the gradient). Copies that are done keep stepping but are masked out.

    Autoreset is handled for both Gymnasium 1.x modes: NEXT_STEP (the step after an episode
    ends only resets the copy: its action is ignored, it is not a transition, mask False) and
    SAME_STEP (the final observation comes in info["final_obs"]).

    Args:
        envs: a vector env from `pgcore.envs.make_env`.
        policy: module, policy(obs (B, obs_dim)) -> Categorical.
        num_episodes: a positive multiple of envs.num_envs (default: envs.num_envs, one each).
        generator: CPU torch.Generator for the action samples (reproducible batches).

    Returns:
        A `Rollout` with (T, N) tensors, T = the longest column.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    n = envs.num_envs
    if num_episodes is None:
        num_episodes = n
    if not isinstance(num_episodes, (int, np.integer)) or num_episodes < 1 or num_episodes % n:
        raise ValueError(f"num_episodes={num_episodes!r} is invalid; accepted: a positive multiple of num_envs={n}")
    per_env = int(num_episodes) // n
    mode = _envs.autoreset_mode(envs)
    if mode == gym.vector.AutoresetMode.DISABLED:
        raise ValueError("envs has autoreset disabled; accepted: NEXT_STEP or SAME_STEP autoreset")
    next_step = mode == gym.vector.AutoresetMode.NEXT_STEP

    with _torch_threads(_policy_device(policy)):
        return _collect(envs, policy, per_env, next_step, generator)


def _collect(envs, policy, per_env: int, next_step: bool, generator) -> Rollout:
    n = envs.num_envs
    obs, _ = envs.reset()
    finished = np.zeros(n, dtype=np.int64)      # episodes completed per copy
    resetting = np.zeros(n, dtype=bool)         # NEXT_STEP: this step only resets the copy
    ret = np.zeros(n, dtype=np.float64)
    length = np.zeros(n, dtype=np.int64)
    ep_returns, ep_lengths = [], []
    cols = {k: [] for k in ("obs", "act", "rew", "done", "terminated", "mask", "logp", "next_obs")}

    while (finished < per_env).any():
        act, logp = sample_actions(policy, obs, generator)
        valid = (finished < per_env) & ~resetting
        next_obs, rew, term, trunc, info = envs.step(act.numpy())
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        done = (term | trunc) & valid
        final_obs = np.array(next_obs, dtype=np.float32, copy=True)
        if not next_step and done.any():  # SAME_STEP: next_obs is already the reset observation
            for i in np.flatnonzero(done):
                final_obs[i] = info["final_obs"][i]
        rew = np.where(valid, np.asarray(rew, dtype=np.float64), 0.0)
        cols["obs"].append(np.asarray(obs, dtype=np.float32))
        cols["act"].append(act.numpy())
        cols["rew"].append(rew)
        cols["done"].append(done)
        cols["terminated"].append(term & valid)
        cols["mask"].append(valid)
        cols["logp"].append(logp.numpy())
        cols["next_obs"].append(final_obs)
        ret += rew
        length += valid
        for i in np.flatnonzero(done):
            ep_returns.append(ret[i])
            ep_lengths.append(length[i])
            ret[i], length[i] = 0.0, 0
            finished[i] += 1
        resetting = (term | trunc) if next_step else np.zeros(n, dtype=bool)
        obs = next_obs

    def stack(key, dtype):
        return torch.as_tensor(np.stack(cols[key]), dtype=dtype)

    return Rollout(
        obs=stack("obs", torch.float32),
        act=stack("act", torch.int64),
        rew=stack("rew", torch.float32),
        done=stack("done", torch.bool),
        terminated=stack("terminated", torch.bool),
        mask=stack("mask", torch.bool),
        logp=stack("logp", torch.float32),
        next_obs=stack("next_obs", torch.float32),
        ep_returns=np.asarray(ep_returns, dtype=np.float64),
        ep_lengths=np.asarray(ep_lengths, dtype=np.int64),
    )


def compute_weights(batch: Rollout, gamma: float, weighting: str = "reward_to_go") -> torch.Tensor:
    """Step 2: the weight of each grad log pi(a_t|s_t) before any baseline, (T, N).

    "total_return": R(tau) = sum_k gamma^k r_k of the whole episode on each of its steps (the
    textbook estimator; past rewards add noise, not signal). "reward_to_go": G_t = sum_{k>=t}
    gamma^(k-t) r_k (causality: an action cannot change rewards that came before it). 0 at masked steps.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    if weighting == "total_return":
        return discounted_return(batch.rew, gamma, batch.done, batch.mask)
    if weighting == "reward_to_go":
        return reward_to_go(batch.rew, gamma, batch.done, batch.mask)
    raise ValueError(f"unknown weighting {weighting!r}; accepted: {', '.join(WEIGHTINGS)}")


def compute_advantages(
    batch: Rollout,
    weights: torch.Tensor,
    baseline: str = "none",
    normalize_adv: bool = True,
    value_net: ValueNet | None = None,
) -> torch.Tensor:
    """Step 3: advantages for the valid steps, a 1-D tensor (num_steps,) in `batch.mask` order.

    adv = weights - b, with b = 0 ("none"), the batch mean of the weights ("mean"), or V(s_t)
    from `value_net` ("value", evaluated without grad); then, if `normalize_adv`, standardized
    over the batch (`pgcore.pg.normalize`). `weights[batch.mask]` lines up with `batch.logp[batch.mask]`.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    w = weights[batch.mask]
    if baseline == "none":
        adv = w
    elif baseline == "mean":
        adv = w - w.mean()
    elif baseline == "value":
        if value_net is None:
            raise ValueError("baseline='value' needs a value_net; accepted: a pgcore.policies.ValueNet")
        with torch.no_grad():
            v = value_net(batch.obs[batch.mask].to(_policy_device(value_net))).cpu()
        adv = w - v
    else:
        raise ValueError(f"unknown baseline {baseline!r}; accepted: {', '.join(BASELINES)}")
    if normalize_adv and adv.numel() >= 2:
        adv = normalize(adv)
    return adv


def evaluate(
    policy,
    env="CartPole-v1",
    episodes: int = 20,
    *,
    seed: int = 0,
    greedy: bool = False,
    max_steps: int | None = None,
) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes of `policy` on a fresh, single Gymnasium env.

    Args:
        policy: module, policy(obs (B, obs_dim)) -> Categorical.
        env: an env id (a fresh `gym.make(env)` is created and closed) or a `gym.Env` object.
        episodes: number of episodes, >= 1.
        seed: seeds the first reset and the action sampling.
        greedy: take argmax actions instead of sampling (the course's score uses sampling).
        max_steps: optional cap on steps per episode (for envs without a time limit).

    Returns:
        (episodes,) float64 array of returns.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is invalid; accepted: an int >= 1")
    if isinstance(env, str):
        try:
            single = gym.make(env)
        except gym.error.Error as e:
            raise ValueError(f"unknown Gymnasium env id {env!r} ({e}); accepted: a registered id such as 'CartPole-v1'") from None
        owned = True
    elif isinstance(env, gym.Env):
        single, owned = env, False
    else:
        raise ValueError(f"env must be a Gymnasium env id or gym.Env, got {type(env).__name__}")
    _envs._check_discrete(single.action_space, _envs.env_id_of(env))
    space = single.observation_space
    flat_box = isinstance(space, gym.spaces.Box) and len(space.shape) == 1
    generator = torch.Generator().manual_seed(int(seed))
    device = _policy_device(policy)
    returns = np.zeros(episodes)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_torch_threads(device))
        if owned:
            stack.callback(single.close)
        for k in range(episodes):
            obs, _ = single.reset(seed=int(seed) if k == 0 else None)
            done, steps = False, 0
            while not done:
                flat = (np.asarray(obs, dtype=np.float32) if flat_box else gym.spaces.flatten(space, obs).astype(np.float32))[None]
                if greedy:
                    with torch.no_grad():
                        a = int(policy(torch.as_tensor(flat, device=device)).probs.argmax(-1)[0])
                else:
                    a = int(sample_actions(policy, flat, generator)[0][0])
                obs, r, term, trunc, _ = single.step(a)
                returns[k] += float(r)
                steps += 1
                done = term or trunc or (max_steps is not None and steps >= max_steps)
    return returns


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


def _init_networks(envs, policy, cfg, device: torch.device, env_id: str, seed: int, critic: bool):
    """The policy (a fresh MLPPolicy, or a deep copy of the given one, checked against the env) and the
    critic (a ValueNet when `critic`, else None), initialized from `seed` without touching the global RNG."""
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    num_actions = int(envs.single_action_space.n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if policy is None:
            policy = MLPPolicy(obs_dim, num_actions, cfg.hidden_sizes, cfg.activation).to(device)
        else:
            policy = copy.deepcopy(policy).to(device)
            with torch.no_grad():
                n_out = policy(torch.zeros(1, obs_dim, device=device)).probs.shape[-1]
            if n_out != num_actions:
                raise ValueError(f"policy has {n_out} actions but env {env_id!r} has {num_actions}; accepted: a matching policy")
        value_net = ValueNet(obs_dim, cfg.hidden_sizes, cfg.activation).to(device) if critic else None
    return policy, value_net


class _Confirmation:
    """The solved check: `confirm_episodes` fresh episodes (own envs, own seeded generator) must score at
    least target + confirm_margin. The envs are made on first use and closed by `close`."""

    def __init__(self, env, cfg, seed: int):
        self.env, self.cfg, self.seed = env, cfg, seed
        self.envs = None
        self.generator = torch.Generator().manual_seed(seed + 1)

    def check(self, policy, target: float) -> tuple[float, bool]:
        """(mean return of the fresh episodes, solved?)."""
        cfg = self.cfg
        if self.envs is None:
            source = self.env if isinstance(self.env, str) else copy.deepcopy(self.env)
            self.envs = _envs.make_env(source, num_envs=cfg.confirm_episodes, seed=self.seed + 10_007)
        k = -(-cfg.confirm_episodes // self.envs.num_envs) * self.envs.num_envs
        policy.eval()
        check = collect_rollout(self.envs, policy, k, generator=self.generator)
        eval_return = float(check.ep_returns.mean())
        return eval_return, eval_return >= target + cfg.confirm_margin

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


def _episode_stats(batch: Rollout) -> dict:
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

    policy:     the trained MLPPolicy (policy(obs_batch) -> Categorical), in eval mode
    value_net:  the ValueNet when baseline="value", else None
    config:     the ReinforceConfig used
    env_id:     name of the env trained on
    env_steps:  env steps (transitions of collected episodes) used
    history:    one dict per update, keys: update, env_steps, episodes, return_mean, return_std,
                return_min, return_max, length_mean, loss, grad_norm, entropy, value_loss,
                eval_return (NaN unless a confirmation ran), seconds
    solved:     training stopped early because target_return was reached and confirmed
    seconds:    wall-clock time of training

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    policy: torch.nn.Module
    value_net: ValueNet | None
    config: ReinforceConfig
    env_id: str
    env_steps: int
    history: list[dict] = field(default_factory=list)
    solved: bool = False
    seconds: float = 0.0

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
    """Train a categorical policy with REINFORCE on a discrete-action Gymnasium env.

    Each update: collect num_envs * episodes_per_env complete episodes (step 1), weight each
    grad log pi by R(tau) or the reward-to-go (2), subtract a baseline and normalize (3),
    loss = pgcore.pg.pg_loss(logp, adv) (4), one Adam step (5). Stops at the env-step budget,
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
        policy: optional starting policy (obs -> Categorical), e.g. a chosen init or one to keep
            training; a deep copy is trained, the argument is left unchanged. None: a fresh
            MLPPolicy(obs_dim, num_actions, config.hidden_sizes, config.activation).

    Returns:
        TrainResult with .policy, .env_steps, .history (list of dicts), .history_df(), .config.

    Raises:
        ValueError: bad config/seed, unknown env id, non-discrete action space, mismatched policy.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    from tqdm.auto import tqdm

    cfg = ReinforceConfig() if config is None else config
    if not isinstance(cfg, ReinforceConfig):
        raise ValueError(f"config must be a ReinforceConfig or None, got {type(cfg).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    device = get_device(cfg.device)
    env_id = _envs.env_id_of(env)
    target = _target_return(env, cfg.target_return)
    early_stop = cfg.early_stop and target is not None

    envs = _envs.make_env(env, num_envs=cfg.num_envs, seed=seed)
    confirmation = _Confirmation(env, cfg, seed)
    bar = None
    try:
        policy, value_net = _init_networks(envs, policy, cfg, device, env_id, seed, critic=cfg.baseline == "value")
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        value_opt = torch.optim.Adam(value_net.parameters(), lr=cfg.value_lr) if value_net is not None else None
        generator = torch.Generator().manual_seed(seed)

        history: list[dict] = []
        recent: list[float] = []
        env_steps = episodes = 0
        solved = False
        start = time.perf_counter()
        bar = tqdm(total=cfg.max_env_steps, disable=not progress, desc=f"REINFORCE {env_id}", unit="step")
        with _torch_threads(device):
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
                    **_episode_stats(batch),
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
                       history=history, solved=solved, seconds=time.perf_counter() - start)
