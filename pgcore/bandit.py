"""K-armed bandits with a softmax policy: the exact policy gradient and its score-function estimates.

The smallest setting where the policy gradient can be written in closed form and checked against
samples. The policy is pi = softmax(logits) over K arms, the objective is
J(logits) = sum_a pi(a) r(a), and the log-derivative trick turns its gradient into an expectation:

    grad J = E_{a ~ pi}[ (r(a) - b) grad log pi(a) ],   grad log pi(a) = onehot(a) - pi

for any constant baseline b. Everything here is on small tensors; shapes are in the docstrings.

The last section is a *continuous* bandit: one real action a ~ N(mu, sigma^2) (a Gaussian policy with
parameters mu and log sigma) and the reward r(a) = -(a - a_star)^2, whose objective
J(mu, sigma) = -((mu - a_star)^2 + sigma^2) and gradient are known in closed form, so the Gaussian
score function (`pgcore.policies.gaussian_score`) can be checked against them.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

import torch
import torch.nn.functional as F

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
    "GradientBanditConfig",
    "GradientBanditResult",
    "gradient_bandit_run",
    "train_gradient_bandit",
    "quadratic_reward",
    "gaussian_objective",
    "gaussian_exact_gradient",
    "gaussian_score_samples",
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


def _check_count(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n!r}")
    return n


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
        if not (isinstance(self.reward_std, (int, float)) and math.isfinite(self.reward_std) and self.reward_std >= 0):
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
        k = _check_count(k, "k")
        if k < 2:
            raise ValueError(f"k must be >= 2 arms, got {k}")
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
    """Score of a softmax policy: grad_logits log pi(a) = onehot(a) - pi, rows (n, K) for actions (n,).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    pi = torch.softmax(logits.detach(), dim=-1)
    return F.one_hot(actions, logits.numel()).to(pi.dtype) - pi


def sample_actions(
    logits: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw `num_samples` i.i.d. arms a ~ softmax(logits): LongTensor (num_samples,).

    `score_function_samples` draws its actions with exactly this call, so the same generator
    state gives the same actions.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits = _check_logits(logits)
    num_samples = _check_count(num_samples, "num_samples")
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
    num_samples = _check_count(num_samples, "num_samples")
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
    if isinstance(component, bool) or not isinstance(component, int) or not -k <= component < k:
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
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"k must be an int >= 2, got {self.k!r}")
        _check_count(self.steps, "steps")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.reward_std, (int, float)) and self.reward_std >= 0):
            raise ValueError(f"reward_std must be a number >= 0, got {self.reward_std!r}")


@dataclass
class GradientBanditResult:
    """Curves of a gradient-bandit experiment, one row per seed.

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """

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
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
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


# ---------------------------------------------------------------------------------------------
# a continuous bandit: a Gaussian policy over one real action, reward -(a - a_star)^2
# ---------------------------------------------------------------------------------------------

def _check_gaussian(mean, log_std, a_star) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out = []
    for name, x in (("mean", mean), ("log_std", log_std), ("a_star", a_star)):
        try:
            t = torch.as_tensor(x, dtype=x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a finite number, got {x!r}") from None
        if t.dim() != 0 or not torch.isfinite(t):
            raise ValueError(f"{name} must be a single finite number, got {x!r}")
        out.append(t)
    return out[0], out[1], out[2].to(out[0].dtype)


def quadratic_reward(act: torch.Tensor, a_star) -> torch.Tensor:
    """r(a) = -(a - a_star)^2: the continuous bandit's reward, best at a = a_star. Elementwise.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    return -(act - a_star) ** 2


def gaussian_objective(mean, log_std, a_star) -> torch.Tensor:
    """J(mu, sigma) = E_{a ~ N(mu, sigma^2)}[-(a - a_star)^2] = -((mu - a_star)^2 + sigma^2), a 0-dim tensor.

    (Expand (a - a_star)^2 = ((a - mu) + (mu - a_star))^2: the cross term has mean 0, E[(a - mu)^2] = sigma^2.)
    Differentiable in `mean` and `log_std` when they are tensors with requires_grad.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    _check_gaussian(mean, log_std, a_star)
    return -((mean - a_star) ** 2 + torch.exp(2 * torch.as_tensor(log_std)))


def gaussian_exact_gradient(mean, log_std, a_star) -> torch.Tensor:
    """The exact gradient of `gaussian_objective` with respect to (mu, log sigma): a (2,) tensor

        dJ/dmu = -2 (mu - a_star),      dJ/dlog sigma = sigma dJ/dsigma = -2 sigma^2.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    mu, log_std, a_star = _check_gaussian(mean, log_std, a_star)
    return torch.stack([-2 * (mu - a_star), -2 * torch.exp(2 * log_std)]).detach()


def gaussian_score_samples(
    mean,
    log_std,
    a_star,
    num_samples: int,
    baseline: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Single-sample score-function estimates of `gaussian_exact_gradient`, one per row: (num_samples, 2).

    Row j: a_j = mu + sigma eps_j with eps_j ~ N(0, 1), then (r(a_j) - b) * (d/dmu, d/dlog sigma) log N(a_j; mu, sigma^2)
    with the closed-form score of `pgcore.policies.gaussian_score` and r = `quadratic_reward`.
    Each row is unbiased for the exact gradient (for any constant b); their mean is the n-sample estimate.

    Args:
        mean, log_std: the policy's mu and log sigma (numbers or 0-dim tensors).
        a_star: the best action.
        num_samples: n >= 1.
        baseline: a constant b.
        generator: optional torch.Generator for reproducible samples.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    from .policies import gaussian_score

    mu, log_std, a_star = _check_gaussian(mean, log_std, a_star)
    num_samples = _check_count(num_samples, "num_samples")
    b = _check_baseline(baseline, mu)
    if b.dim() != 0:
        raise ValueError(f"baseline must be a single number, got shape {tuple(b.shape)}")
    mu, log_std = mu.detach(), log_std.detach().to(mu.dtype)
    eps = torch.randn(num_samples, generator=generator, dtype=mu.dtype)   # (n,)
    act = mu + torch.exp(log_std) * eps                                     # (n,) a_j ~ N(mu, sigma^2)
    d_mean, d_log_std = gaussian_score(act, mu, log_std)                    # (n,), (n,)
    return (quadratic_reward(act, a_star) - b)[:, None] * torch.stack([d_mean, d_log_std], dim=1)   # (n, 2)
