"""Small networks for control tasks: an MLP categorical policy, a Gaussian policy for continuous
actions, and a value net (Spinning Up style).

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Independent, Normal

__all__ = ["mlp", "MLPPolicy", "GaussianPolicy", "gaussian_score", "ValueNet", "ACTIVATIONS"]

#: activation names accepted wherever a config names one
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def _activation(activation) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; accepted: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[activation]
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    raise ValueError(f"activation must be a name ({', '.join(ACTIVATIONS)}) or an nn.Module class, got {activation!r}")


def mlp(sizes: Sequence[int], activation="tanh", output_activation=nn.Identity) -> nn.Sequential:
    """A multi-layer perceptron: Linear(sizes[0], sizes[1]), activation, ..., Linear(.., sizes[-1]).

    Args:
        sizes: layer widths including input and output, e.g. (4, 64, 2); at least 2 entries, all >= 1.
        activation: name ("tanh", "relu", "elu", "gelu") or nn.Module class, between hidden layers.
        output_activation: nn.Module class applied after the last layer (identity by default).

    Returns:
        nn.Sequential mapping (B, sizes[0]) -> (B, sizes[-1]).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list >= 2 positive layer widths, got {sizes}")
    act = _activation(activation)
    layers: list[nn.Module] = []
    for j in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[j], sizes[j + 1]))
        layers.append(act() if j < len(sizes) - 2 else output_activation())
    return nn.Sequential(*layers)


class MLPPolicy(nn.Module):
    """Categorical policy pi_theta(a|s): an MLP from observations to action logits.

    `policy(obs)` with obs (B, obs_dim) (or (T, N, obs_dim), any leading dims) returns a
    `torch.distributions.Categorical` with batch shape (B,) (resp. (T, N)) over `num_actions`.
    The last layer starts with weights scaled by 0.01, so the initial policy is nearly uniform
    (a common trick, e.g. in the PPO implementation details of Huang et al. 2022).

    Args:
        obs_dim: observation size.
        num_actions: number of discrete actions.
        hidden_sizes: hidden layer widths, e.g. (64,).
        activation: hidden activation, a name or nn.Module class.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    def __init__(self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (64,), activation="tanh"):
        super().__init__()
        self.obs_dim, self.num_actions = int(obs_dim), int(num_actions)
        self.logits_net = mlp([self.obs_dim, *hidden_sizes, self.num_actions], activation)
        last = self.logits_net[-2]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()

    def forward(self, obs: torch.Tensor) -> Categorical:
        """obs (..., obs_dim) float -> Categorical with batch shape (...)."""
        return Categorical(logits=self.logits_net(obs), validate_args=False)


class GaussianPolicy(nn.Module):
    """Gaussian policy for continuous actions: a ~ N(mu_theta(s), diag(sigma^2)), sigma learned but state-independent.

    `policy(obs)` with obs (..., obs_dim) returns `Independent(Normal(mean, std), 1)`: batch shape (...),
    event shape (act_dim,), so `log_prob(act)` sums the log-densities of the action dimensions
    (one number per state) and `entropy()` sums theirs. The mean is an MLP whose last layer starts
    scaled by 0.01 (mean ~ 0 at the start, as MLPPolicy's near-uniform start); the log standard
    deviation is one learned parameter per action dimension, starting at `log_std_init`
    (CleanRL's continuous PPO does the same). Actions are *not* squashed or clipped here: the
    rollout clips them to the env's bounds only when stepping the env, and the log-prob is that
    of the unclipped sample (so it is the log-density the sample was actually drawn from).

    Args:
        obs_dim: observation size.
        act_dim: number of action dimensions.
        hidden_sizes: hidden layer widths of the mean MLP, e.g. (64,).
        activation: hidden activation, a name or nn.Module class.
        log_std_init: initial log sigma of every action dimension (0: sigma = 1).

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (64,), activation="tanh",
                 log_std_init: float = 0.0):
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.mean_net = mlp([self.obs_dim, *hidden_sizes, self.act_dim], activation)
        last = self.mean_net[-2]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> Independent:
        """obs (..., obs_dim) float -> Independent(Normal) with batch shape (...), event shape (act_dim,)."""
        mean = self.mean_net(obs)                                   # (..., act_dim)
        std = self.log_std.exp().expand_as(mean)                    # (..., act_dim)
        return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


def gaussian_score(act: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The score of a Gaussian, in closed form: the gradient of log N(act; mean, sigma^2), sigma = exp(log_std).

        log N(a; mu, sigma^2) = -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2
        d/d mu          = (a - mu) / sigma^2
        d/d log sigma   = (a - mu)^2 / sigma^2 - 1          (chain rule: d/d log sigma = sigma d/d sigma)

    Per action dimension (elementwise, broadcasting); for a diagonal Gaussian the log-density is the
    sum over dimensions, so these are also its partial derivatives. Both have mean zero under
    a ~ N(mu, sigma^2), as every score does.

    Args:
        act: sampled actions a, any shape broadcastable with mean and log_std.
        mean: mu.
        log_std: log sigma.

    Returns:
        (d log N / d mu, d log N / d log sigma), each of the broadcast shape.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    z = (act - mean) * torch.exp(-log_std)                          # (a - mu) / sigma
    return z * torch.exp(-log_std), z ** 2 - 1


class ValueNet(nn.Module):
    """State-value estimate V_phi(s): an MLP from observations to one number.

    `value(obs)` maps (..., obs_dim) -> (...) (the trailing 1 squeezed). Used as a learned
    baseline (notebooks 02/03) and as the critic of Actor-Critic (notebook 03).

    Introduced in notebooks/03_variance_reduction.ipynb.
    """

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (64,), activation="tanh"):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.v_net = mlp([self.obs_dim, *hidden_sizes, 1], activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (..., obs_dim) float -> values (...)."""
        return self.v_net(obs).squeeze(-1)
