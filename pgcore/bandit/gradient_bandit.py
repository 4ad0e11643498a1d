"""The gradient bandit algorithm (Sutton & Barto, Sec. 2.8): softmax preferences learned by
stochastic gradient ascent, one sampled arm per step, with and without a reward baseline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from .._checks import check_int, is_number
from .core import GaussianBandit

__all__ = ["GradientBanditConfig", "GradientBanditResult", "gradient_bandit_run", "train_gradient_bandit"]


# ---------------------------------------------------------------------------------------------
# learning: the gradient bandit algorithm (Sutton & Barto Sec. 2.8)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientBanditConfig:
    """Settings of a gradient-bandit experiment on the k-armed testbed (fast course defaults).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """

    k: int = 10
    """number of arms"""
    steps: int = 1000
    """pulls (and updates) per run"""
    lr: float = 0.1
    """step size alpha of the update logits += alpha * (R - baseline) * (onehot(A) - pi)"""
    baseline: bool = True
    """subtract the running average of the *earlier* rewards (R_bar_1 = R_1), else use baseline 0"""
    q_mean: float = 0.0
    """mean of the true arm values q*(a) ~ N(q_mean, 1); Sutton & Barto's Fig. 2.5 uses 4"""
    reward_std: float = 1.0
    """standard deviation of the reward noise around q*(a)"""

    def __post_init__(self):
        check_int(self.k, "k", low=2)
        check_int(self.steps, "steps")
        if not (is_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (is_number(self.reward_std) and self.reward_std >= 0):
            raise ValueError(f"reward_std must be a finite number >= 0, got {self.reward_std!r}")


@dataclass
class GradientBanditResult:
    """Curves of a gradient-bandit experiment, one row per seed."""

    config: GradientBanditConfig
    """the settings used"""
    seeds: list[int]
    """one run per seed: its own testbed (q*) and its own sampling noise"""
    q_star: torch.Tensor
    """(S, K) true arm values of each run's testbed"""
    logits: torch.Tensor
    """(S, K) logits after the last update"""
    optimal: torch.Tensor = field(repr=False)
    """(S, T) 1.0 where the pulled arm was the best arm"""
    prob_optimal: torch.Tensor = field(repr=False)
    """(S, T) pi_t(best arm) before pull t: the expected '% optimal action', a smoother curve"""
    reward: torch.Tensor = field(repr=False)
    """(S, T) reward received at pull t"""
    expected_reward: torch.Tensor = field(repr=False)
    """(S, T) J_t = sum_a pi_t(a) q*(a) before pull t"""

    @property
    def final_policy(self) -> torch.Tensor:
        """(S, K) softmax of the final logits."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def best_arm(self) -> torch.Tensor:
        """(S,) index of the best arm of each run."""
        return self.q_star.argmax(dim=-1)


def gradient_bandit_run(
    bandit: GaussianBandit, config: GradientBanditConfig, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """One run of the gradient bandit algorithm on `bandit`; returns per-step tensors (T,) and final logits (K,).

    Each step: pi = softmax(H); A ~ pi; R = bandit(A); H += lr (R - R_bar)(onehot(A) - pi), where
    R_bar is the mean of the rewards before this step (R_bar_1 = R_1) or 0 without a baseline.
    Keys: "logits", "action", "reward", "optimal", "prob_optimal", "expected_reward".
    """
    k, steps, lr = bandit.k, config.steps, config.lr
    logits = torch.zeros(k, dtype=bandit.q_star.dtype)  # H_1 = 0: the uniform policy
    eye = torch.eye(k, dtype=logits.dtype)  # row a = onehot(a)
    pis, actions, rewards = [], [], []
    rbar = 0.0
    for t in range(steps):
        pi = torch.softmax(logits, dim=0)
        a = torch.multinomial(pi, 1, generator=generator)  # (1,)
        r = bandit._draw(a, generator)  # (1,), the same draw as bandit(a, generator)
        if config.baseline:
            r_item = r.item()
            b = r_item if t == 0 else rbar
            rbar += (r_item - rbar) / (t + 1)  # incremental mean of R_1..R_t, used from step t+1 on
        else:
            b = 0.0
        logits = logits + lr * (r - b) * (eye[a[0]] - pi)
        pis.append(pi)
        actions.append(a)
        rewards.append(r)
    pis = torch.stack(pis)  # (T, K) policy before each pull
    actions = torch.cat(actions)
    best = bandit.best_arm
    return {
        "logits": logits,
        "action": actions,
        "reward": torch.cat(rewards),
        "optimal": (actions == best).to(logits.dtype),
        "prob_optimal": pis[:, best],
        "expected_reward": pis @ bandit.q_star,
    }


def train_gradient_bandit(
    config: GradientBanditConfig | None = None, seeds: Iterable[int] = range(10)
) -> GradientBanditResult:
    """Gradient bandit on a fresh k-armed testbed per seed (Sutton & Barto Fig. 2.5 in spirit).

    Seed s: `g = torch.Generator().manual_seed(s)`, testbed q* drawn from g, then
    `gradient_bandit_run(testbed, config, g)`. A run depends only on its seed and the config, so
    runs with and without the baseline see the same testbeds.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    config = GradientBanditConfig() if config is None else config
    if not isinstance(config, GradientBanditConfig):
        raise ValueError(f"config must be a GradientBanditConfig or None, got {type(config).__name__}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got an empty sequence")
    runs, q_stars = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        bandit = GaussianBandit.testbed(config.k, q_mean=config.q_mean, reward_std=config.reward_std, generator=g)
        runs.append(gradient_bandit_run(bandit, config, g))
        q_stars.append(bandit.q_star)
    stack = lambda key: torch.stack([r[key] for r in runs])  # noqa: E731
    return GradientBanditResult(
        config=config,
        seeds=seeds,
        q_star=torch.stack(q_stars),
        logits=stack("logits"),
        optimal=stack("optimal"),
        prob_optimal=stack("prob_optimal"),
        reward=stack("reward"),
        expected_reward=stack("expected_reward"),
    )
