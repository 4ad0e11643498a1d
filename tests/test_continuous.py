"""Continuous actions: the Gaussian score function against autograd and against the exact gradient of a
continuous bandit (unbiasedness by z-scores), GaussianPolicy, and pgcore.reinforce.train on Box action spaces
(actions clipped only when stepping the env, log-prob of the unclipped sample), with clear errors for
unsupported spaces."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import pgcore.bandit as bandit
from pgcore.envs import make_env
from pgcore.policies import GaussianPolicy, MLPPolicy, gaussian_score
from pgcore.reinforce import ReinforceConfig, collect_rollout, evaluate, train


class TargetEnv(gym.Env):
    """A tiny continuous task: observe a target t ~ U(-1, 1), act a in [-2, 2], reward -(a - t)^2; 5 steps an episode.

    The untrained Gaussian policy (mean ~ 0, sigma = 1) scores about 5 * -(1/3 + 1) = -6.7; a perfect one 0."""

    metadata = {"render_modes": []}

    def __init__(self, steps: int = 5):
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        self.steps, self.t = steps, 0
        self.received = []   # the actions the env was given (after the rollout's clipping)

    def _new_target(self):
        self.target = self.np_random.uniform(-1.0, 1.0, size=(1,)).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._new_target(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        self.received.append(action.copy())
        reward = -float(((action - self.target) ** 2).sum())
        self.t += 1
        return self._new_target(), reward, False, self.t >= self.steps, {}


class MultiDiscreteEnv(TargetEnv):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.MultiDiscrete([2, 3])


class MatrixBoxEnv(TargetEnv):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2, 2), dtype=np.float32)


# ------------------------------------------------------------------ the score and the continuous bandit
def test_gaussian_score_matches_autograd():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, generator=g, dtype=torch.float64)
    log_std = 0.5 * torch.randn(3, generator=g, dtype=torch.float64)
    act = mean + torch.randn(5, 3, generator=g, dtype=torch.float64) * 2
    m, s = mean.clone().requires_grad_(), log_std.clone().requires_grad_()
    logp = torch.distributions.Normal(m, s.exp()).log_prob(act)               # (5, 3)
    d_mean, d_log_std = gaussian_score(act, mean, log_std)
    # each entry of logp depends on one mean entry and one log_std entry: the sum's gradient is elementwise
    auto_mean, = torch.autograd.grad(logp.sum(), m, retain_graph=True)
    assert torch.allclose(d_mean, auto_mean)
    for i in range(5):   # d/dlog_std of row i alone
        auto_ls, = torch.autograd.grad(logp[i].sum(), s, retain_graph=True)
        assert torch.allclose(d_log_std[i], auto_ls)


def test_gaussian_exact_gradient_matches_autograd_of_the_objective():
    for mu, log_std, a_star in [(0.5, math.log(0.8), 2.0), (-1.0, 0.3, -1.0), (3.0, -1.0, 0.0)]:
        p = torch.tensor([mu, log_std], dtype=torch.float64, requires_grad=True)
        J = bandit.gaussian_objective(p[0], p[1], a_star)
        grad, = torch.autograd.grad(J, p)
        assert torch.allclose(grad, bandit.gaussian_exact_gradient(mu, log_std, a_star))
        assert math.isclose(float(J.detach()), -((mu - a_star) ** 2 + math.exp(2 * log_std)))


@pytest.mark.parametrize("baseline", [0.0, -4.0, 5.0])
def test_gaussian_score_samples_are_unbiased(baseline):
    mu, log_std, a_star, n = 0.5, math.log(0.8), 2.0, 200_000
    rows = bandit.gaussian_score_samples(mu, log_std, a_star, n, baseline=baseline,
                                         generator=torch.Generator().manual_seed(1))
    assert rows.shape == (n, 2)
    z = (rows.mean(0) - bandit.gaussian_exact_gradient(mu, log_std, a_star)) / (rows.std(0) / math.sqrt(n))
    assert (z.abs() < 4).all(), z


def test_gaussian_score_samples_rejects_bad_input():
    with pytest.raises(ValueError, match="num_samples"):
        bandit.gaussian_score_samples(0.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="mean"):
        bandit.gaussian_score_samples(float("nan"), 0.0, 1.0, 10)
    with pytest.raises(ValueError, match="log_std"):
        bandit.gaussian_score_samples(0.0, [0.0, 1.0], 1.0, 10)


# ------------------------------------------------------------------ the policy
def test_gaussian_policy_distribution():
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 2, (8,), log_std_init=-0.5)
    obs = torch.randn(7, 3)
    dist = policy(obs)
    assert dist.batch_shape == (7,) and dist.event_shape == (2,)
    assert torch.allclose(dist.stddev, torch.full((7, 2), math.exp(-0.5)))
    assert dist.mean.abs().max() < 0.1          # the last layer starts scaled by 0.01
    act = dist.sample()
    per_dim = torch.distributions.Normal(dist.mean, dist.stddev).log_prob(act)   # (7, 2)
    assert torch.allclose(dist.log_prob(act), per_dim.sum(-1))                 # summed over action dims
    dist.log_prob(act).sum().backward()
    assert policy.log_std.grad is not None and policy.log_std.grad.shape == (2,)


# ------------------------------------------------------------------ train on Box action spaces
def test_rollout_clips_only_what_the_env_gets():
    env = TargetEnv()
    policy = GaussianPolicy(1, 1, (4,))
    with torch.no_grad():
        policy.mean_net[-2].bias.fill_(5.0)     # mean 5, far outside the bounds [-2, 2]
        policy.log_std.fill_(math.log(0.1))
    envs = make_env(env, num_envs=1, seed=0, allow_box=True)
    batch = collect_rollout(envs, policy, 2, generator=torch.Generator().manual_seed(0))
    act = batch.act[batch.mask]                                                   # (10, 1) float
    assert batch.act.dtype == torch.float32 and act.shape == (10, 1)
    assert (act > 4).all(), "the rollout keeps the sampled, unclipped action"
    inner = envs.envs[0].unwrapped
    assert np.allclose(np.concatenate(inner.received), 2.0), "the env gets the clipped action"
    with torch.no_grad():
        logp = policy(batch.obs[batch.mask]).log_prob(act)
    assert torch.allclose(logp, batch.logp[batch.mask]), "log-prob of the unclipped action"


def test_train_learns_a_continuous_task_and_is_deterministic():
    cfg = ReinforceConfig(num_envs=8, max_env_steps=6_000, lr=3e-2, early_stop=False)
    result = train(TargetEnv(), seed=0, config=cfg, progress=False)
    assert isinstance(result.policy, GaussianPolicy)
    torch.manual_seed(0)
    untrained = GaussianPolicy(1, 1, cfg.hidden_sizes, cfg.activation)
    before = evaluate(untrained, TargetEnv(), episodes=50, seed=1).mean()
    after = evaluate(result.policy, TargetEnv(), episodes=50, seed=1).mean()
    greedy = evaluate(result.policy, TargetEnv(), episodes=50, seed=1, greedy=True).mean()
    assert before < -4.5 and after > -2.5 and greedy > -2.5, (before, after, greedy)
    again = train(TargetEnv(), seed=0, config=cfg, progress=False)
    assert [h["return_mean"] for h in again.history] == [h["return_mean"] for h in result.history]


@pytest.mark.parametrize("env, space", [(MultiDiscreteEnv(), "MultiDiscrete"), (MatrixBoxEnv(), "Box")])
def test_train_rejects_unsupported_action_spaces(env, space):
    with pytest.raises(ValueError, match="accepted: a Discrete action space") as info:
        train(env, config=ReinforceConfig(num_envs=2, max_env_steps=100), progress=False)
    message = str(info.value)
    assert "\n" not in message and space in message and "1-D float Box" in message


def test_make_env_accepts_box_only_when_asked():
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env(TargetEnv())
    envs = make_env(TargetEnv(), num_envs=2, seed=0, allow_box=True)
    assert isinstance(envs.single_action_space, spaces.Box)


def test_policy_kind_must_match_the_action_space():
    with pytest.raises(ValueError, match="accepted: a policy returning a Gaussian"):
        train(TargetEnv(), config=ReinforceConfig(num_envs=2, max_env_steps=100), policy=MLPPolicy(1, 2), progress=False)
    with pytest.raises(ValueError, match="accepted: a policy returning a Categorical"):
        train("CartPole-v1", config=ReinforceConfig(num_envs=2, max_env_steps=100), policy=GaussianPolicy(4, 1),
              progress=False)
    with pytest.raises(ValueError, match="action dimensions"):
        train(TargetEnv(), config=ReinforceConfig(num_envs=2, max_env_steps=100), policy=GaussianPolicy(1, 2),
              progress=False)


@pytest.mark.slow
def test_inverted_pendulum_learns_with_the_defaults():
    pytest.importorskip("mujoco", reason="InvertedPendulum-v5 needs gymnasium[mujoco]")
    cfg = ReinforceConfig(max_env_steps=15_000, early_stop=False)
    result = train("InvertedPendulum-v5", seed=0, config=cfg, progress=False)
    torch.manual_seed(0)
    before = evaluate(GaussianPolicy(4, 1, cfg.hidden_sizes, cfg.activation), "InvertedPendulum-v5", episodes=10, seed=5)
    after = evaluate(result.policy, "InvertedPendulum-v5", episodes=10, seed=5)
    assert after.mean() > 3 * before.mean() and after.mean() > 30, (before.mean(), after.mean())
