"""Steps 1-3 of REINFORCE: sample episodes (`collect_rollout`), their returns (`compute_weights`),
the advantages (`compute_advantages`); and `evaluate`, the score on fresh episodes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Categorical

from .. import envs as _envs
from .._checks import is_int
from ..estimators import normalize
from ..policies import ValueNet
from ..returns import discounted_return, reward_to_go
from .config import BASELINES, WEIGHTINGS


@dataclass
class Rollout:
    """A batch of complete episodes, time-major and padded (see `pgcore.returns`).

    obs        (T, N, obs_dim) float32  observation at step t (input of the policy)
    act        (T, N) int64             action taken (discrete actions), or
               (T, N, act_dim) float32  the sampled action (Box actions; before clipping to the bounds)
    rew        (T, N) float32           reward received (0 where mask is False)
    done       (T, N) bool              an episode ended at step t (terminated or truncated)
    terminated (T, N) bool              it ended in a terminal state (no bootstrapping needed)
    mask       (T, N) bool              step t is a transition of a collected episode; False for
                                        padding after a copy's last episode and for NEXT_STEP
                                        autoreset steps
    logp       (T, N) float32           log pi(a_t|s_t) at collection time (no grad; for PPO ratios; Box:
                                        of the unclipped action, summed over action dimensions)
    next_obs   (T, N, obs_dim) float32  observation after step t (the final one where done)
    ep_returns (E,) float64             undiscounted return of each collected episode, in the
                                        order they finished
    ep_lengths (E,) int64               its number of steps; ep_lengths.sum() == mask.sum()
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
def torch_threads(device: torch.device, num_threads: int = 1):
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


def policy_device(policy: torch.nn.Module) -> torch.device:
    p = next(policy.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def sample_actions(policy, obs: np.ndarray, generator: torch.Generator | None = None, *, device=None):
    """Sample a ~ pi(.|obs) for a batch of observations, reproducibly with `generator`.

    Args:
        policy: module, policy(obs (B, obs_dim)) -> Categorical, or a Gaussian over continuous actions
            (e.g. `pgcore.policies.GaussianPolicy`: a distribution with `.mean` and `.stddev` of shape
            (B, act_dim) whose log_prob sums over the action dimensions).
        obs: (B, obs_dim) array.
        generator: a CPU torch.Generator (Categorical.sample cannot take one, so we use
            torch.multinomial on its probabilities; a Gaussian sample is mean + stddev * torch.randn);
            None: torch's global RNG.
        device: the policy's device (None: looked up; a rollout passes it once, not every step).

    Returns:
        (act, logp (B,) float tensor), both on the CPU, no grad; act is (B,) int64 for a Categorical,
        (B, act_dim) float32 for a Gaussian (not clipped: the rollout clips only what it sends to the env).
    """
    if device is None:
        device = policy_device(policy)
    with torch.no_grad():
        dist = policy(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device))
        if isinstance(dist, Categorical):
            act = torch.multinomial(dist.probs.float().cpu(), 1, generator=generator)     # (B, 1)
            # = dist.log_prob(act), without its broadcasting: the row's normalized logit of act
            logp = dist.logits.gather(-1, act.to(device)).squeeze(-1).float().cpu()
            return act.squeeze(1), logp
        mean, std = dist.mean.float().cpu(), dist.stddev.float().cpu()      # (B, act_dim)
        act = mean + std * torch.randn(mean.shape, generator=generator)    # the reparametrized sample
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

    Box (continuous) actions: the sampled action is clipped to the action space's bounds only for
    `envs.step`; the rollout keeps the unclipped action and its log-prob (the density it was drawn from).

    Args:
        envs: a vector env from `pgcore.envs.make_env`.
        policy: module, policy(obs (B, obs_dim)) -> Categorical, or a Gaussian (see `sample_actions`).
        num_episodes: a positive multiple of envs.num_envs (default: envs.num_envs, one each).
        generator: CPU torch.Generator for the action samples (reproducible batches).

    Returns:
        A `Rollout` with (T, N) tensors, T = the longest column.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    n = envs.num_envs
    if num_episodes is None:
        num_episodes = n
    if not is_int(num_episodes) or num_episodes < 1 or num_episodes % n:
        raise ValueError(f"num_episodes={num_episodes!r} is invalid; accepted: a positive multiple of num_envs={n}")
    per_env = int(num_episodes) // n
    mode = _envs.autoreset_mode(envs)
    if mode == gym.vector.AutoresetMode.DISABLED:
        raise ValueError("envs has autoreset disabled; accepted: NEXT_STEP or SAME_STEP autoreset")
    next_step = mode == gym.vector.AutoresetMode.NEXT_STEP

    with torch_threads(policy_device(policy)):
        return _collect(envs, policy, per_env, next_step, generator)


def _collect(envs, policy, per_env: int, next_step: bool, generator) -> Rollout:
    n = envs.num_envs
    device = policy_device(policy)
    box = _envs.is_box_action_space(envs.single_action_space)
    if box:
        low, high = envs.single_action_space.low, envs.single_action_space.high
    obs, _ = envs.reset()
    finished = np.zeros(n, dtype=np.int64)      # episodes completed per copy
    resetting = np.zeros(n, dtype=bool)         # NEXT_STEP: this step only resets the copy
    ret = np.zeros(n, dtype=np.float64)
    length = np.zeros(n, dtype=np.int64)
    ep_returns, ep_lengths = [], []
    cols = {k: [] for k in ("obs", "act", "rew", "done", "terminated", "mask", "logp", "next_obs")}

    while (finished < per_env).any():
        act, logp = sample_actions(policy, obs, generator, device=device)
        valid = (finished < per_env) & ~resetting
        if box:   # clip what the env gets, keep the sampled action (its log-prob is the one we differentiate)
            next_obs, rew, term, trunc, info = envs.step(np.clip(act.numpy(), low, high))
        else:
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
        act=stack("act", torch.float32 if box else torch.int64),
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


def step_index(batch: Rollout) -> torch.Tensor:
    """(T, N) int64: each step's index within its episode, 0 on an episode's first step (any value at
    masked steps). With one episode per env copy it is the row t."""
    count = batch.mask.long().cumsum(0)                       # (T, N) real steps of the column up to t
    ended = (count * batch.done).cummax(0).values             # the count at the last episode end up to t
    before = torch.cat([torch.zeros_like(ended[:1]), ended[:-1]])   # ... strictly before t
    return count - 1 - before


def compute_advantages(
    batch: Rollout,
    weights: torch.Tensor,
    baseline: str = "none",
    normalize_adv: bool = True,
    value_net: ValueNet | None = None,
) -> torch.Tensor:
    """Step 3: advantages for the valid steps, a 1-D tensor (num_steps,) in `batch.mask` order.

    adv = weights - b, with b = 0 ("none"), the batch mean of the weights ("mean"), their mean over
    the batch's episodes at the same step t of an episode, an episode that has ended counting 0
    ("time"), or V(s_t) from `value_net` ("value", evaluated without grad); then, if `normalize_adv`,
    standardized over the batch (`pgcore.normalize`). `weights[batch.mask]` lines up with
    `batch.logp[batch.mask]`.

    "time" is for tasks with a time limit: episodes cut off at the limit all have the same G_t at
    step t, which says nothing about their actions; with b(t) their advantages are 0 (exactly: the
    mean is taken in float64, or the standardization would blow rounding up into a random update),
    and what is left is how each episode did against the others at the same step.

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
            v = value_net(batch.obs[batch.mask].to(policy_device(value_net))).cpu()
        adv = w - v
    elif baseline == "time":
        t = step_index(batch)[batch.mask]                                     # (S,) step within its episode
        total = torch.zeros(int(t.max()) + 1, dtype=torch.float64).index_add_(0, t, w.double())
        adv = w - (total / batch.num_episodes).float()[t]                    # b(t): mean over the episodes
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
        policy: module, policy(obs (B, obs_dim)) -> Categorical, or a Gaussian for a Box action space
            (its actions clipped to the bounds, as in training).
        env: an env id (a fresh `gym.make(env)` is created and closed) or a `gym.Env` object.
        episodes: number of episodes, >= 1.
        seed: seeds the first reset and the action sampling.
        greedy: take the most probable action instead of sampling (argmax; a Gaussian's mean; the
            course's score uses sampling).
        max_steps: optional cap on steps per episode (for envs without a time limit).

    Returns:
        (episodes,) float64 array of returns.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    if not is_int(episodes) or episodes < 1:
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
    try:
        _envs._check_action_space(single.action_space, _envs.env_id_of(env), allow_box=True)
    except ValueError:
        if owned:
            single.close()
        raise
    box = _envs.is_box_action_space(single.action_space)
    space = single.observation_space
    flat_box = isinstance(space, gym.spaces.Box) and len(space.shape) == 1
    generator = torch.Generator().manual_seed(int(seed))
    device = policy_device(policy)
    returns = np.zeros(episodes)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads(device))
        if owned:
            stack.callback(single.close)
        for k in range(episodes):
            obs, _ = single.reset(seed=int(seed) if k == 0 else None)
            done, steps = False, 0
            while not done:
                flat = (np.asarray(obs, dtype=np.float32) if flat_box else gym.spaces.flatten(space, obs).astype(np.float32))[None]
                if box:
                    if greedy:
                        with torch.no_grad():
                            act = policy(torch.as_tensor(flat, device=device)).mean[0].float().cpu()
                    else:
                        act = sample_actions(policy, flat, generator)[0][0]
                    a = np.clip(act.numpy(), single.action_space.low, single.action_space.high)
                elif greedy:
                    with torch.no_grad():
                        a = int(policy(torch.as_tensor(flat, device=device)).probs.argmax(-1)[0])
                else:
                    a = int(sample_actions(policy, flat, generator)[0][0])
                obs, r, term, trunc, _ = single.step(a)
                returns[k] += float(r)
                steps += 1
                done = term or trunc or (max_steps is not None and steps >= max_steps)
    return returns

