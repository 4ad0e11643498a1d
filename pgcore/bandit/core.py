"""K-armed bandits with a softmax policy: the exact policy gradient and its score-function estimates.

The smallest setting where the policy gradient can be written in closed form and checked against
samples. The policy is pi = softmax(logits) over K arms, the objective is
J(logits) = sum_a pi(a) r(a), and the log-derivative trick turns its gradient into an expectation:

    grad J = E_{a ~ pi}[ (r(a) - b) grad log pi(a) ],   grad log pi(a) = onehot(a) - pi

for any constant baseline b. Everything here is on small tensors; shapes are in the docstrings.

`pgcore.bandit` is a package: this module (`core`) holds the bandit, the softmax policy, the exact
gradient and the score-function estimates; `gradient_bandit` the learning algorithm; `continuous` the
Gaussian-policy bandit. Everything is importable from `pgcore.bandit` directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F

from .._checks import check_int, is_int, is_number

__all__ = [
    "GaussianBandit",
    "policy",
    "objective",
    "grad_log_prob",
    "sample_actions",
    "exact_gradient",
    "score_function_samples",
    "optimal_baseline",
    "estimator_variance",
]

RewardFn = Callable[[torch.Tensor, Union[torch.Generator, None]], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# input checks: one-line ValueErrors naming the bad value and what is accepted
# ---------------------------------------------------------------------------------------------

def _check_logits(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a 1-D float torch.Tensor of shape (K,), got {type(logits).__name__}")
    if logits.dim() != 1 or logits.numel() < 2:
        raise ValueError(f"logits must be 1-D with K >= 2 arms, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"logits must be finite, got {logits.detach().tolist()}")
    return logits


def _check_rewards(rewards, logits: torch.Tensor) -> torch.Tensor:
    k = logits.numel()
    if callable(rewards) and not isinstance(rewards, torch.Tensor):
        raise ValueError(f"rewards must be a tensor of mean rewards here (shape ({k},)), not a callable")
    try:
        rewards = torch.as_tensor(rewards, dtype=logits.dtype, device=logits.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"rewards must be a tensor or sequence of K={k} numbers, got {rewards!r}") from None
    if rewards.shape != logits.shape:
        raise ValueError(f"rewards has shape {tuple(rewards.shape)} but logits has K={k} arms; accepted: shape ({k},)")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"rewards must be finite, got {rewards.tolist()}")
    return rewards


def _check_baseline(baseline, logits: torch.Tensor) -> torch.Tensor:
    try:
        b = torch.as_tensor(baseline, dtype=logits.dtype, device=logits.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"baseline must be a finite number (or a tensor of numbers), got {baseline!r}") from None
    if not torch.isfinite(b).all():
        raise ValueError(f"baseline must be finite, got {baseline!r}")
    return b


def _check_std(reward_std, logits: torch.Tensor) -> torch.Tensor:
    s = _check_baseline(reward_std, logits)
    if s.dim() > 1 or (s.dim() == 1 and s.shape != logits.shape) or (s < 0).any():
        raise ValueError(
            f"reward_std must be a number >= 0 or a tensor of K={logits.numel()} numbers >= 0, got {reward_std!r}"
        )
    return s


# ---------------------------------------------------------------------------------------------
# the bandit
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GaussianBandit:
    """A K-armed bandit whose arm a pays R ~ N(q_star[a], reward_std^2).

    Calling it draws noisy rewards for a batch of actions, so it can be passed as the
    `rewards` callable of `score_function_samples`:  `bandit(actions (n,), generator) -> (n,)`.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """

    q_star: torch.Tensor
    """(K,) true mean reward of each arm"""
    reward_std: float = 1.0
    """standard deviation of the Gaussian reward noise (0 makes rewards deterministic)"""

    def __post_init__(self):
        q = self.q_star
        if not isinstance(q, torch.Tensor) or q.dim() != 1 or q.numel() < 2 or not q.is_floating_point():
            raise ValueError(f"q_star must be a 1-D float tensor with K >= 2 arms, got {q!r}")
        if not torch.isfinite(q).all():
            raise ValueError(f"q_star must be finite, got {q.tolist()}")
        if not (is_number(self.reward_std) and self.reward_std >= 0):
            raise ValueError(f"reward_std must be a finite number >= 0, got {self.reward_std!r}")

    @classmethod
    def testbed(
        cls,
        k: int = 10,
        *,
        q_mean: float = 0.0,
        reward_std: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "GaussianBandit":
        """Sutton & Barto's k-armed testbed (Sec. 2.3): q*(a) ~ N(q_mean, 1), rewards ~ N(q*(a), reward_std^2).

        Fig. 2.5 of the book uses q_mean = 4 to show what the reward baseline does.
        Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
        """
        k = check_int(k, "k", low=2)
        q_star = q_mean + torch.randn(k, generator=generator, dtype=dtype)
        return cls(q_star, float(reward_std))

    @property
    def k(self) -> int:
        """Number of arms."""
        return self.q_star.numel()

    @property
    def best_arm(self) -> int:
        """Index of the arm with the highest mean reward."""
        return int(self.q_star.argmax())

    def __call__(self, actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Rewards (n,) for actions (n,) (a LongTensor of arm indices)."""
        actions = torch.as_tensor(actions)
        if actions.dtype not in (torch.int64, torch.int32) or actions.dim() != 1:
            raise ValueError(f"actions must be a 1-D integer tensor of arm indices, got {actions!r}")
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.k):
            raise ValueError(f"actions must lie in [0, {self.k - 1}], got min {int(actions.min())} max {int(actions.max())}")
        return self._draw(actions, generator)

    def _draw(self, actions: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # no checks: the inner loop of gradient_bandit_run calls this once per step
        mean = self.q_star[actions]
        if self.reward_std == 0:
            return mean.clone()
        noise = torch.randn(actions.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + self.reward_std * noise


# ---------------------------------------------------------------------------------------------
# softmax policy, objective, exact gradient
# ---------------------------------------------------------------------------------------------

def policy(logits: torch.Tensor) -> torch.Tensor:
    """pi = softmax(logits): (K,) -> (K,) probabilities.

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    return torch.softmax(_check_logits(logits), dim=-1)


def objective(logits: torch.Tensor, rewards) -> torch.Tensor:
    """J(logits) = sum_a pi(a) r(a), the expected reward (a scalar, differentiable in logits).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    rewards = _check_rewards(rewards, _check_logits(logits))
    return (torch.softmax(logits, dim=-1) * rewards).sum()


def grad_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Score of a softmax policy: grad_logits log pi(a) = onehot(a) - pi, rows (n, K) for actions (n,)."""
    logits = _check_logits(logits)
    pi = torch.softmax(logits.detach(), dim=-1)
    return F.one_hot(actions, logits.numel()).to(pi.dtype) - pi


def sample_actions(
    logits: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw `num_samples` i.i.d. arms a ~ softmax(logits): LongTensor (num_samples,).

    `score_function_samples` draws its actions with exactly this call, so the same generator
    state gives the same actions.
    """
    logits = _check_logits(logits)
    num_samples = check_int(num_samples, "num_samples")
    pi = torch.softmax(logits.detach(), dim=-1)
    return torch.multinomial(pi, num_samples, replacement=True, generator=generator)


def exact_gradient(logits: torch.Tensor, rewards) -> torch.Tensor:
    """The exact policy gradient grad J, shape (K,): pi_a (r_a - sum_b pi_b r_b).

    logits: (K,) float. rewards: (K,) mean reward of each arm.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    rewards = _check_rewards(rewards, logits)
    pi = torch.softmax(logits.detach(), dim=-1)
    return pi * (rewards - (pi * rewards).sum())


# ---------------------------------------------------------------------------------------------
# the score-function (REINFORCE / likelihood-ratio) estimator
# ---------------------------------------------------------------------------------------------

def score_function_samples(
    logits: torch.Tensor,
    rewards: torch.Tensor | RewardFn,
    num_samples: int,
    baseline: float | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Single-sample score-function estimates of grad J, one per row: (num_samples, K).

    Row j: sample a_j ~ pi, then (r_j - baseline) * grad log pi(a_j) = (r_j - b) (onehot(a_j) - pi).
    Each row is unbiased for `exact_gradient`; their mean is the n-sample estimate.

    Args:
        logits: (K,) float, finite.
        rewards: (K,) mean rewards (r_j = rewards[a_j], deterministic), or a callable
            `rewards(actions (n,), generator) -> (n,)` drawing noisy rewards (e.g. a `GaussianBandit`).
        num_samples: n >= 1.
        baseline: a constant b (a number or 0-dim tensor); any constant keeps the estimate unbiased.
        generator: optional torch.Generator for reproducible sampling (actions first, then rewards).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    num_samples = check_int(num_samples, "num_samples")
    b = _check_baseline(baseline, logits)
    if b.dim() != 0:
        raise ValueError(f"baseline must be a single number, got shape {tuple(b.shape)}")
    if not callable(rewards) or isinstance(rewards, torch.Tensor):
        rewards = _check_rewards(rewards, logits)
    actions = sample_actions(logits, num_samples, generator)  # (n,)
    if isinstance(rewards, torch.Tensor):
        rew = rewards[actions]  # (n,)
    else:
        rew = rewards(actions, generator)
        if not isinstance(rew, torch.Tensor) or rew.shape != (num_samples,):
            got = tuple(rew.shape) if isinstance(rew, torch.Tensor) else type(rew).__name__
            raise ValueError(f"the rewards callable must return a tensor of shape ({num_samples},), got {got}")
        if not torch.isfinite(rew).all():
            raise ValueError("the rewards callable returned non-finite rewards; accepted: finite numbers")
        rew = rew.to(logits.dtype)
    return (rew - b)[:, None] * grad_log_prob(logits, actions)  # (n, K)


def _score_squared(pi: torch.Tensor) -> torch.Tensor:
    """(K arms a, K entries i): (grad log pi(a))_i^2 = (onehot(a) - pi)_i^2."""
    return (torch.eye(pi.numel(), dtype=pi.dtype, device=pi.device) - pi) ** 2


def _check_component(component, k: int):
    if component is None:
        return None
    if not is_int(component) or not -k <= component < k:
        raise ValueError(f"component must be None or an arm index in [0, {k - 1}], got {component!r}")
    return component % k


def optimal_baseline(logits: torch.Tensor, rewards, component: int | None = None) -> torch.Tensor:
    """The constant baseline that minimizes the variance of the single-sample estimator (a scalar).

    b* = E[r(a) ||grad log pi(a)||^2] / E[||grad log pi(a)||^2] minimizes the total variance
    (the trace of the covariance). With `component=i` it minimizes the variance of entry i only:
    weights (grad log pi(a))_i^2. Zero-mean reward noise does not move b*.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    rewards = _check_rewards(rewards, logits)
    component = _check_component(component, logits.numel())
    pi = torch.softmax(logits.detach(), dim=-1)
    g2 = _score_squared(pi)
    w = pi * (g2.sum(dim=1) if component is None else g2[:, component])  # pi(a) ||grad log pi(a)||^2
    return (w * rewards).sum() / w.sum()


def estimator_variance(
    logits: torch.Tensor, rewards, baseline: float | torch.Tensor = 0.0, reward_std: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Analytic per-component variance of one score-function sample, shape (*baseline.shape, K).

    Var_i(b) = sum_a pi_a ((r_a - b)^2 + sigma_a^2) (onehot(a) - pi)_i^2 - (grad J)_i^2,
    where sigma = reward_std (a number, or (K,) per arm) is the reward noise. Sum over the last
    axis for the total variance; divide by n for the mean of n samples. `baseline` may be a
    tensor of several baselines (M,), giving (M, K): a variance curve in one call.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    rewards = _check_rewards(rewards, logits)
    b = _check_baseline(baseline, logits)
    sigma = _check_std(reward_std, logits)
    pi = torch.softmax(logits.detach(), dim=-1)
    second = ((rewards - b[..., None]) ** 2 + sigma**2) * pi  # (..., K arms): pi_a E[(R - b)^2 | a]
    grad = pi * (rewards - (pi * rewards).sum())
    return second @ _score_squared(pi) - grad**2
