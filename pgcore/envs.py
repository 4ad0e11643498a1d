"""Gymnasium glue for the course: vectorized environments and our own toy, the short corridor.

We do not re-implement what Gymnasium has. `make_env` turns an env id (or an env object) into a
Gymnasium *vector* env: CartPole-v1 runs through Gymnasium's own numpy `CartPoleVectorEnv`
(all copies stepped by one array operation), other ids through `SyncVectorEnv`. Our toy,
`ShortCorridor` (Sutton & Barto, Example 13.1), is a registered Gymnasium env ("ShortCorridor-v0").

Autoreset, Gymnasium 1.x: a vector env resets a finished copy on the *next* `step` (NEXT_STEP
mode, the default and the only mode `CartPoleVectorEnv` has). That step ignores its action,
returns reward 0 and the first observation of the new episode; it is not a transition of any
episode and must be masked out when collecting (`pgcore.reinforce.collect_rollout` does).

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ._checks import check_int

__all__ = [
    "GroupedStarts",
    "grouped_cartpole",
    "ShortCorridor",
    "SHORT_CORRIDOR_ID",
    "short_corridor_value",
    "short_corridor_optimum",
    "make_env",
    "env_id_of",
    "autoreset_mode",
    "is_box_action_space",
]

SHORT_CORRIDOR_ID = "ShortCorridor-v0"


class ShortCorridor(gym.Env):
    """Sutton & Barto's short corridor with switched actions (Example 13.1), a Gymnasium env.

    States 0, 1, 2 and the terminal state 3, start in 0. Action 1 = right, 0 = left; moving left
    in state 0 bumps into the wall (stay). In state 1 the actions are *swapped* (right moves
    left, left moves right). Reward -1 per step. The observation is the same constant feature,
    `[1.0]` (shape (1,)), in every state, so a policy cannot tell the states apart: the best it
    can do is a fixed P(right) = p, and any deterministic policy (p = 0 or 1) never reaches the
    goal; it is cut off (truncated) after `max_episode_steps` steps.

    Args:
        max_episode_steps: steps after which the episode is truncated (>= 1).

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    metadata = {"render_modes": []}
    #: next state for (state, action); state 1 swaps the actions.
    _NEXT = {0: (0, 1), 1: (2, 0), 2: (1, 3)}

    def __init__(self, max_episode_steps: int = 1000):
        self.max_episode_steps = check_int(max_episode_steps, "max_episode_steps")
        self.observation_space = spaces.Box(low=0.0, high=1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.state = 0
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.ones(1, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start in state 0. Returns (obs, info) with obs = [1.0] and info = {"state": 0}."""
        super().reset(seed=seed)
        self.state = 0
        self.steps = 0
        return self._obs(), {"state": self.state}

    def step(self, action):
        """Move; returns (obs, reward=-1.0, terminated, truncated, info={"state": s})."""
        if action not in (0, 1):
            raise ValueError(f"action must be 0 (left) or 1 (right), got {action!r}")
        if self.state == 3:
            raise ValueError("step() called on a finished episode; call reset() first")
        self.state = self._NEXT[self.state][int(action)]
        self.steps += 1
        terminated = self.state == 3
        truncated = (not terminated) and self.steps >= self.max_episode_steps
        return self._obs(), -1.0, terminated, truncated, {"state": self.state}


def short_corridor_value(p):
    """Closed-form value of the start state, v(0), when the policy goes right with probability p.

    Bellman equations (reward -1 per step, gamma = 1, state 1 swaps the actions):
        v0 = -1 + p v1 + (1-p) v0          ->  v0 = v1 - 1/p
        v1 = -1 + p v0 + (1-p) v2
        v2 = -1 + (1-p) v1                  (right from state 2 reaches the terminal state)
    Substituting v0 and v2 into v1: p(1-p) v1 = -(3 - p), hence
        v0(p) = -(4 - 2p) / (p (1 - p)) = (2p - 4) / (p (1 - p)),
    maximal at p* = 2 - sqrt(2) ~ 0.586 with v0(p*) ~ -11.66 (at p = 1/2 it is -12).

    Args:
        p: P(right) in the open interval (0, 1); a float or a NumPy array.

    Returns:
        v0(p), same shape as `p` (a float for a float). An infinite horizon is assumed; the
        env's truncation after 1000 steps changes it by a negligible amount for p in [0.05, 0.95].

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    arr = np.asarray(p, dtype=float)
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0.0) or np.any(arr >= 1.0):
        raise ValueError(f"p must lie in the open interval (0, 1), got {p!r}")
    v = (2.0 * arr - 4.0) / (arr * (1.0 - arr))
    return float(v) if v.ndim == 0 else v


def short_corridor_optimum() -> tuple[float, float]:
    """(p*, v*) = (2 - sqrt(2), v0(p*)) ~ (0.5858, -11.657): the best stochastic policy.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    p = 2.0 - math.sqrt(2.0)
    return p, short_corridor_value(p)


if SHORT_CORRIDOR_ID not in gym.registry:
    gym.register(id=SHORT_CORRIDOR_ID, entry_point="pgcore.envs:ShortCorridor")


def env_id_of(env) -> str:
    """A readable name of an env id / env object: its registered id, else its class name."""
    if isinstance(env, str):
        return env
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return spec.id
    inner = getattr(env, "unwrapped", env)
    return type(inner).__name__


def autoreset_mode(envs: gym.vector.VectorEnv) -> gym.vector.AutoresetMode:
    """The vector env's autoreset mode (NEXT_STEP when the env does not declare one)."""
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    return gym.vector.AutoresetMode(mode)


def _check_discrete(action_space, name: str) -> None:
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"env {name!r} has action space {action_space}; accepted: a Discrete action space "
            "(policy gradient here uses a categorical policy)"
        )


def is_box_action_space(action_space) -> bool:
    """True for the continuous action spaces the course's Gaussian policy handles: a 1-D float Box."""
    return (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1
            and np.issubdtype(action_space.dtype, np.floating))


def _check_action_space(action_space, name: str, allow_box: bool) -> None:
    """Discrete always; a 1-D float Box too when `allow_box`. Else a one-line ValueError."""
    if not allow_box:
        _check_discrete(action_space, name)
    elif not (isinstance(action_space, spaces.Discrete) or is_box_action_space(action_space)):
        raise ValueError(
            f"env {name!r} has action space {action_space}; accepted: a Discrete action space (categorical "
            "policy) or a 1-D float Box (continuous actions, Gaussian policy)"
        )


def _flatten_if_needed(env: gym.Env) -> gym.Env:
    space = env.observation_space
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return env
    return gym.wrappers.FlattenObservation(env)  # e.g. Discrete obs -> one-hot vector


def make_env(env="CartPole-v1", *, num_envs: int = 1, seed: int | None = None,
             allow_box: bool = False) -> gym.vector.VectorEnv:
    """A Gymnasium vector env with `num_envs` copies of `env`, ready to `step`.

    Args:
        env: a registered env id (str, e.g. "CartPole-v1", "Acrobot-v1", "ShortCorridor-v0"),
            a `gym.Env` object, or a `gym.vector.VectorEnv` (returned as is; its `num_envs` wins).
            Ids with a vector entry point (CartPole-v1: Gymnasium's numpy `CartPoleVectorEnv`)
            use it; other ids get a `SyncVectorEnv`. An env object is used as the first copy and
            `copy.deepcopy`-ed for the others.
        num_envs: number of parallel copies, >= 1.
        seed: if given, the env is reset once with this seed (copy i of a SyncVectorEnv gets
            seed + i) and its action space seeded, so later unseeded resets are reproducible.
        allow_box: accept a continuous action space too (a 1-D float Box, e.g. "InvertedPendulum-v5"
            or "Pendulum-v1"), as `pgcore.reinforce.train` does with its Gaussian policy. False: Discrete only.

    Returns:
        A `gym.vector.VectorEnv` with a Discrete (or, with allow_box, 1-D Box) `single_action_space` and a flat Box
        `single_observation_space` (non-flat observations, e.g. Discrete states, are flattened
        to one-hot vectors). Autoreset mode: see `autoreset_mode(envs)`.

    Raises:
        ValueError: unknown env id, an action space that is not accepted, bad `num_envs`.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    num_envs = check_int(num_envs, "num_envs")
    if isinstance(env, str):
        try:
            spec = gym.spec(env)
        except gym.error.Error as e:
            raise ValueError(f"unknown Gymnasium env id {env!r} ({e}); accepted: a registered id such as 'CartPole-v1'") from None
        if spec.vector_entry_point is not None:
            envs = gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point")
        else:
            envs = gym.make_vec(env, num_envs=num_envs, vectorization_mode="sync", wrappers=[_flatten_if_needed])
    elif isinstance(env, gym.vector.VectorEnv):
        envs = env
    elif isinstance(env, gym.Env):
        _check_action_space(env.action_space, env_id_of(env), allow_box)
        template = env
        fns = [lambda: _flatten_if_needed(template)]
        fns += [lambda: _flatten_if_needed(copy.deepcopy(template))] * (num_envs - 1)
        envs = gym.vector.SyncVectorEnv(fns)
    else:
        raise ValueError(f"env must be a Gymnasium env id, gym.Env or gym.vector.VectorEnv, got {type(env).__name__}")
    try:
        _check_action_space(envs.single_action_space, env_id_of(env), allow_box)
        obs_space = envs.single_observation_space
        if not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
            raise ValueError(f"env {env_id_of(env)!r} has observation space {obs_space}; accepted: a flat Box")
        if autoreset_mode(envs) == gym.vector.AutoresetMode.DISABLED:
            raise ValueError(f"env {env_id_of(env)!r} has autoreset disabled; accepted: NEXT_STEP or SAME_STEP")
    except ValueError:
        if envs is not env:
            envs.close()
        raise
    if seed is not None:
        envs.reset(seed=int(seed))
        envs.action_space.seed(int(seed))
    return envs


class GroupedStarts(gym.vector.VectorWrapper):
    """After every reset, copies g*G ... g*G + G - 1 of a CartPoleVectorEnv share copy g*G's start state."""

    def __init__(self, env: gym.vector.VectorEnv, group_size: int):
        super().__init__(env)
        self.group_size = group_size

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        cart = self.env.unwrapped
        cart.state = np.repeat(cart.state[:, :: self.group_size], self.group_size, axis=1)  # (4, N)
        return cart.state.T.astype(np.float32), info


def grouped_cartpole(num_groups: int, group_size: int, seed: int = 0) -> gym.vector.VectorEnv:
    """A CartPole-v1 vector env of num_groups * group_size copies where each group of G copies starts alike.

    Copies g*G ... g*G + G - 1 (G = group_size) start every `reset()` from the same random state,
    so a `collect_rollout(envs, policy, num_groups * G)` (one episode per copy) gives, per group,
    G episodes of one start state: the control analogue of G sampled completions of one prompt
    (RLOO, GRPO). Reshape the per-column returns to (num_groups, G) for `pgcore.rloo` /
    `group_normalize`. Only episodes that begin at a `reset()` share starts (Gymnasium's autoreset
    draws a fresh state), so collect one episode per copy.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    num_groups, group_size = check_int(num_groups, "num_groups"), check_int(group_size, "group_size")
    envs = gym.make_vec("CartPole-v1", num_envs=num_groups * group_size, vectorization_mode="vector_entry_point")
    envs = GroupedStarts(envs, group_size)
    envs.reset(seed=int(seed))
    envs.action_space.seed(int(seed))
    return envs
