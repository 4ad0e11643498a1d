"""pgcore.envs: the short corridor (dynamics, closed form vs Monte Carlo), make_env, and that
episodes collected from Gymnasium vector envs (both autoreset modes) are the real episodes."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from pgcore.envs import (
    SHORT_CORRIDOR_ID,
    ShortCorridor,
    autoreset_mode,
    make_env,
    short_corridor_optimum,
    short_corridor_value,
)
from pgcore.reinforce import collect_rollout

NEXT, SAME = gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP


class FixedPolicy(nn.Module):
    """pi(right) = p in every state, whatever the observation."""

    def __init__(self, p_right: float, num_actions: int = 2):
        super().__init__()
        probs = torch.full((num_actions,), (1 - p_right) / (num_actions - 1))
        probs[1] = p_right
        self.register_buffer("logits", probs.log())

    def forward(self, obs):
        return Categorical(logits=self.logits.expand(*obs.shape[:-1], -1))


def test_short_corridor_dynamics_and_registration():
    env = ShortCorridor()
    obs, info = env.reset(seed=0)
    assert obs.shape == (1,) and info["state"] == 0
    path = []
    # left into the wall, right, right (swapped: goes left), right, left (swapped: goes right), right
    for a in (0, 1, 1, 1, 0, 1):
        obs, r, term, trunc, info = env.step(a)
        path.append(info["state"])
        assert r == -1.0 and obs.tolist() == [1.0]
    assert path == [0, 1, 0, 1, 2, 3] and term and not trunc
    made = gym.make(SHORT_CORRIDOR_ID)
    assert isinstance(made.unwrapped, ShortCorridor)


@pytest.mark.parametrize("action", [0, 1])
def test_deterministic_policies_never_finish(action):
    env = ShortCorridor(max_episode_steps=50)
    env.reset()
    for t in range(50):
        _, _, term, trunc, info = env.step(action)
        assert not term
    assert trunc and info["state"] in (0, 1)


def test_closed_form_value_and_optimum():
    assert short_corridor_value(0.5) == pytest.approx(-12.0)
    p_star, v_star = short_corridor_optimum()
    assert p_star == pytest.approx(0.5858, abs=1e-4) and v_star == pytest.approx(-11.657, abs=1e-3)
    grid = np.linspace(0.01, 0.99, 9801)
    values = short_corridor_value(grid)
    assert grid[values.argmax()] == pytest.approx(p_star, abs=1e-3)
    # it solves the Bellman equations
    for p in (0.2, 0.7):
        v0 = short_corridor_value(p)
        v1 = v0 + 1 / p
        v2 = -1 + (1 - p) * v1
        assert v1 == pytest.approx(-1 + p * v0 + (1 - p) * v2)
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="p must"):
            short_corridor_value(bad)


@pytest.mark.parametrize("p", [0.3, 2 - np.sqrt(2), 0.8])
def test_closed_form_matches_monte_carlo(p):
    envs = make_env(SHORT_CORRIDOR_ID, num_envs=40, seed=1)
    batch = collect_rollout(envs, FixedPolicy(p), num_episodes=800, generator=torch.Generator().manual_seed(2))
    rets = batch.ep_returns
    se = rets.std(ddof=1) / np.sqrt(len(rets))
    assert len(rets) == 800
    assert abs(rets.mean() - short_corridor_value(p)) < 4 * se, (rets.mean(), short_corridor_value(p), se)


def _corridor_envs(mode, n):
    return gym.vector.SyncVectorEnv([ShortCorridor for _ in range(n)], autoreset_mode=mode)


@pytest.mark.parametrize("mode", [NEXT, SAME])
def test_short_corridor_episodes_replay_in_a_single_env(mode):
    envs = make_env(_corridor_envs(mode, 3), seed=0)
    assert autoreset_mode(envs) == mode
    batch = collect_rollout(envs, FixedPolicy(0.6), num_episodes=9, generator=torch.Generator().manual_seed(0))
    assert batch.num_episodes == 9 and batch.mask.sum() == batch.ep_lengths.sum()
    if mode == NEXT:  # each copy played 3 episodes, so 2 autoreset steps per column are masked
        assert (~batch.mask).sum() >= 6
    replayed = []
    for n in range(3):
        single = ShortCorridor()
        single.reset()
        ret = 0.0
        for t in torch.nonzero(batch.mask[:, n]).flatten().tolist():
            _, r, term, trunc, _ = single.step(int(batch.act[t, n]))
            ret += r
            assert bool(batch.done[t, n]) == (term or trunc)
            if term or trunc:
                replayed.append(ret)
                ret = 0.0
                single.reset()
    assert sorted(replayed) == sorted(batch.ep_returns.tolist())


@pytest.mark.parametrize("mode", [NEXT, SAME])
def test_cartpole_vector_episodes_replay_in_a_single_env(mode):
    if mode == NEXT:
        envs = make_env("CartPole-v1", num_envs=4, seed=3)
        assert type(envs.unwrapped).__name__ == "CartPoleVectorEnv"
    else:
        envs = make_env(gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync",
                                     vector_kwargs={"autoreset_mode": SAME}), seed=3)
    batch = collect_rollout(envs, FixedPolicy(0.5), num_episodes=12, generator=torch.Generator().manual_seed(0))
    # CartPole pays +1 per step: each return is its episode's length
    assert np.array_equal(batch.ep_returns, batch.ep_lengths.astype(float))
    assert batch.rew[batch.mask].eq(1).all() and batch.rew[~batch.mask].eq(0).all()
    single = gym.make("CartPole-v1").unwrapped
    episodes = 0
    for n in range(4):
        start = True
        for t in torch.nonzero(batch.mask[:, n]).flatten().tolist():
            if start:  # the single env starts where the vector copy started this episode
                single.reset()
                single.state = batch.obs[t, n].double().numpy().copy()
                start = False
            obs, r, term, _, _ = single.step(int(batch.act[t, n]))
            assert np.allclose(obs, batch.next_obs[t, n].numpy(), atol=1e-4)
            assert bool(batch.terminated[t, n]) == term
            if batch.done[t, n]:
                assert term  # a uniform policy fails long before the 500-step limit
                episodes += 1
                start = True
    assert episodes == 12


def test_make_env_choices_and_errors():
    envs = make_env("CartPole-v1", num_envs=8, seed=0)
    assert envs.num_envs == 8 and type(envs.unwrapped).__name__ == "CartPoleVectorEnv"
    acro = make_env("Acrobot-v1", num_envs=2, seed=0)
    assert isinstance(acro, gym.vector.SyncVectorEnv) and acro.single_action_space.n == 3
    frozen = make_env("FrozenLake-v1", num_envs=2, seed=0)  # Discrete observations -> one-hot
    assert frozen.single_observation_space.shape == (16,)
    with pytest.raises(ValueError, match="unknown Gymnasium env id"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env("Pendulum-v1")
    with pytest.raises(ValueError, match="num_envs"):
        make_env("CartPole-v1", num_envs=0)


class BalancingController(nn.Module):
    """A hand-tuned linear controller that keeps the pole up: push the way x + 3v + 10 theta + 5 omega points."""

    def forward(self, obs):
        x, v, theta, omega = obs.unbind(-1)
        u = 0.1 * x + 0.3 * v + theta + 0.5 * omega
        return Categorical(logits=torch.stack([-20 * u, 20 * u], dim=-1))


@pytest.mark.parametrize("mode", [NEXT, SAME])
def test_truncated_episodes_have_exactly_500_steps(mode):
    """Two 500-step episodes per copy: the autoreset step between them is neither counted nor learned from."""
    if mode == NEXT:
        envs = make_env("CartPole-v1", num_envs=4, seed=0)
    else:
        envs = make_env(gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync",
                                     vector_kwargs={"autoreset_mode": SAME}), seed=0)
    batch = collect_rollout(envs, BalancingController(), num_episodes=8, generator=torch.Generator().manual_seed(0))
    assert batch.ep_lengths.tolist() == [500] * 8 and batch.ep_returns.tolist() == [500.0] * 8
    assert int((batch.done & ~batch.terminated).sum()) == 8  # all ended by the time limit
    T = batch.mask.shape[0]
    if mode == NEXT:  # step 500 of every copy only resets it
        assert T == 1001 and not batch.mask[500].any() and batch.mask[:500].all() and batch.mask[501:].all()
    else:
        assert T == 1000 and batch.mask.all()
    assert batch.done[499].all() and batch.done[-1].all() and int(batch.done.sum()) == 8
