"""A continuous bandit: one real action a ~ N(mu, sigma^2) (a Gaussian policy with parameters mu and
log sigma) and the reward r(a) = -(a - a_star)^2, whose objective J(mu, sigma) = -((mu - a_star)^2 +
sigma^2) and gradient are known in closed form, so the Gaussian score function
(`pgcore.policies.gaussian_score`) can be checked against them.
"""
from __future__ import annotations


import torch

from .._checks import check_int
from .core import _check_baseline

__all__ = ["quadratic_reward", "gaussian_objective", "gaussian_exact_gradient", "gaussian_score_samples"]


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
    """r(a) = -(a - a_star)^2: the continuous bandit's reward, best at a = a_star. Elementwise."""
    return -(act - a_star) ** 2


def gaussian_objective(mean, log_std, a_star) -> torch.Tensor:
    """J(mu, sigma) = E_{a ~ N(mu, sigma^2)}[-(a - a_star)^2] = -((mu - a_star)^2 + sigma^2), a 0-dim tensor.

    (Expand (a - a_star)^2 = ((a - mu) + (mu - a_star))^2: the cross term has mean 0, E[(a - mu)^2] = sigma^2.)
    Differentiable in `mean` and `log_std` when they are tensors with requires_grad.
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
    from ..policies import gaussian_score

    mu, log_std, a_star = _check_gaussian(mean, log_std, a_star)
    num_samples = check_int(num_samples, "num_samples")
    b = _check_baseline(baseline, mu)
    if b.dim() != 0:
        raise ValueError(f"baseline must be a single number, got shape {tuple(b.shape)}")
    mu, log_std = mu.detach(), log_std.detach().to(mu.dtype)
    eps = torch.randn(num_samples, generator=generator, dtype=mu.dtype)   # (n,)
    act = mu + torch.exp(log_std) * eps                                     # (n,) a_j ~ N(mu, sigma^2)
    d_mean, d_log_std = gaussian_score(act, mu, log_std)                    # (n,), (n,)
    return (quadratic_reward(act, a_star) - b)[:, None] * torch.stack([d_mean, d_log_std], dim=1)   # (n, 2)
