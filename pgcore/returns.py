"""Discounted returns, reward-to-go and the critic's advantages (TD error, GAE) over a batch of episodes.

Layout (time-major, as CleanRL): a batch is a padded `(T, N)` tensor, column n being what
environment copy n did over T steps. A column may hold several episodes back to back:

    rew   (T, N) float   reward of step t in column n
    done  (T, N) bool    1 where an episode *ends* at step t (terminated or truncated)
    mask  (T, N) bool    1 where step t is a real transition; 0 for padding and for the
                         reset steps of Gymnasium's NEXT_STEP autoreset. A masked step may only
                         follow a `done` (or another masked step): it never sits inside an episode.

A 1-D `(T,)` tensor is a single column. With `done` and `mask` omitted the whole column is one
episode (that may be unfinished at T: pass `bootstrap` to add a value estimate for what follows).

    reward_to_go:       G_t = r_t + gamma r_{t+1} + ... up to the end of t's episode
    discounted_return:  R(tau) = G_0 of t's episode, repeated on every step of that episode
    td_error:           delta_t = r_t + gamma V(s_{t+1}) - V(s_t), from a learned critic V
    gae:                A_t = delta_t + gamma lam delta_{t+1} + ... up to the end of t's episode

`discount_cumsum`, `reward_to_go` and `gae` are one backward scan, `_discounted_scan`.
"""
from __future__ import annotations

import torch

from ._checks import as_tensor, check_number

__all__ = ["discount_cumsum", "reward_to_go", "discounted_return", "td_error", "gae"]


def _discounted_scan(x: torch.Tensor, decay: float, done: torch.Tensor | None = None,
                     last: torch.Tensor | None = None) -> torch.Tensor:
    """y_t = x_t + decay * y_{t+1} along dim 0, backwards; y_T = `last` (default 0); restarted after each done_t."""
    out = torch.empty_like(x)
    running = x.new_zeros(x.shape[1:]) if last is None else last
    for t in reversed(range(x.shape[0])):
        if done is not None:  # an episode that ends at t sees nothing after it
            running = torch.where(done[t], torch.zeros_like(running), running)
        running = x[t] + decay * running
        out[t] = running
    return out


def _columns(rew) -> tuple[torch.Tensor, bool]:
    """`rew` as a (T, N) tensor, and whether it was one (T,) column."""
    rew = as_tensor(rew, "rew")
    if rew.dim() not in (1, 2):
        raise ValueError(f"rew must have shape (T,) or (T, N), got {tuple(rew.shape)}")
    return (rew[:, None], True) if rew.dim() == 1 else (rew, False)


def _like(x, name: str, rew2: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """`x`, shaped like rew, as a (T, N) tensor of `dtype` (None stays None)."""
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor shaped like rew, got {type(x).__name__}")
    x2 = x[:, None] if x.dim() == 1 else x
    if x2.shape != rew2.shape:
        raise ValueError(f"{name} shape {tuple(x.shape)} does not match rew shape; accepted: the shape of rew")
    return x2.to(dtype)


def _bootstrap(bootstrap, rew2: torch.Tensor) -> torch.Tensor:
    """(N,): the value after step T-1 of each column, 0 where none is given."""
    N = rew2.shape[1]
    last = torch.zeros(N, dtype=rew2.dtype, device=rew2.device)
    if bootstrap is not None:
        last = last + torch.as_tensor(bootstrap, dtype=rew2.dtype, device=rew2.device).reshape(-1).expand(N)
    return last


def discount_cumsum(x: torch.Tensor, gamma: float, dim: int = 0) -> torch.Tensor:
    """Discounted cumulative sum along `dim`, with no episode boundaries (Spinning Up's core op).

    y_t = x_t + gamma x_{t+1} + gamma^2 x_{t+2} + ...   (to the end of `dim`)

    Args:
        x: any shape, float; summed along `dim` (time).
        gamma: discount in (0, 1].

    Returns:
        Same shape as `x`. Example: discount_cumsum([1, 1, 1], 0.5) = [1.75, 1.5, 1.0].
    """
    gamma = check_number(gamma, "gamma", gt=0, le=1)
    return _discounted_scan(x.movedim(dim, 0), gamma).movedim(0, dim)


def reward_to_go(
    rew: torch.Tensor,
    gamma: float = 1.0,
    done: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reward-to-go G_t = sum_{k>=0} gamma^k r_{t+k}, summed up to the end of step t's episode.

    Recursion, backwards in time: G_t = r_t + gamma * (1 - done_t) * G_{t+1}, with
    G_T = `bootstrap` (0 by default) after the last step. Masked steps get G_t = 0.

    Args:
        rew: (T, N) or (T,) rewards (time-major, see the module docstring).
        gamma: discount in (0, 1].
        done: same shape, bool; True where an episode ends at step t. None: no boundary.
        mask: same shape, bool; False for padding / autoreset steps (output 0 there). None: all valid.
        bootstrap: (N,) (or a scalar for 1-D `rew`): value of the state after step T-1 for
            columns whose last episode is unfinished (e.g. V(s_T)); ignored where done[T-1].

    Returns:
        Same shape and dtype as `rew`.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    gamma = check_number(gamma, "gamma", gt=0, le=1)
    rew2, squeeze = _columns(rew)
    done2, mask2 = _like(done, "done", rew2, torch.bool), _like(mask, "mask", rew2, torch.bool)
    if mask2 is not None:
        rew2 = torch.where(mask2, rew2, torch.zeros_like(rew2))
    out = _discounted_scan(rew2, gamma, done2, _bootstrap(bootstrap, rew2))
    if mask2 is not None:
        out = torch.where(mask2, out, torch.zeros_like(out))
    return out[:, 0] if squeeze else out


def discounted_return(
    rew: torch.Tensor,
    gamma: float = 1.0,
    done: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """R(tau) = G_0 of each step's episode, broadcast over that episode's steps.

    The weight of the first REINFORCE estimator, grad J = E[R(tau) sum_t grad log pi(a_t|s_t)]:
    every step of an episode gets the same (discounted) total return.

    Args:
        rew, gamma, done, mask: as in `reward_to_go` ((T, N) or (T,), time-major).

    Returns:
        Same shape as `rew`; 0 at masked steps. One value per episode, e.g. for a single
        episode rew = [1, 1, 1], gamma = 0.5: [1.75, 1.75, 1.75].

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    g2, squeeze = _columns(reward_to_go(rew, gamma, done, mask))
    done2, mask2 = _like(done, "done", g2, torch.bool), _like(mask, "mask", g2, torch.bool)
    T, N = g2.shape
    out = torch.empty_like(g2)
    current = torch.zeros(N, dtype=g2.dtype, device=g2.device)
    new_episode = torch.ones(N, dtype=torch.bool, device=g2.device)  # next valid step starts one
    for t in range(T):
        valid = mask2[t] if mask2 is not None else torch.ones_like(new_episode)
        starts = valid & new_episode
        current = torch.where(starts, g2[t], current)
        out[t] = torch.where(valid, current, torch.zeros_like(current))
        new_episode = torch.where(valid, torch.zeros_like(new_episode), new_episode)
        if done2 is not None:
            new_episode = new_episode | (done2[t] & valid)
    return out[:, 0] if squeeze else out


def _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap):
    """The TD errors delta (T, N) (0 at masked steps), done and mask as (T, N) bools, and the squeeze flag."""
    gamma = check_number(gamma, "gamma", gt=0, le=1)
    rew2, squeeze = _columns(rew)
    if val is None:
        raise ValueError("val is required (V(s_t) for every step), got None")
    val2 = _like(val, "val", rew2, rew2.dtype).detach()
    done2 = _like(done, "done", rew2, torch.bool)
    term2 = _like(terminated, "terminated", rew2, torch.bool)
    mask2 = _like(mask, "mask", rew2, torch.bool)
    next2 = _like(next_val, "next_val", rew2, rew2.dtype)
    if term2 is not None and next2 is None:
        raise ValueError("terminated needs next_val (V of the state after a truncated step); "
                         "accepted: both, or neither (then every done is terminal)")
    if next2 is None:  # V(s_{t+1}) = val[t+1] in the same column; after the last step: bootstrap (or 0)
        next2 = torch.cat([val2[1:], _bootstrap(bootstrap, rew2)[None]], dim=0)
    next2 = next2.detach()
    terminal = term2 if term2 is not None else done2  # after a terminal step the value is 0
    if terminal is not None:
        next2 = torch.where(terminal, torch.zeros_like(next2), next2)
    if mask2 is not None:
        rew2 = torch.where(mask2, rew2, torch.zeros_like(rew2))
    delta = rew2 + gamma * next2 - val2
    if mask2 is not None:
        delta = torch.where(mask2, delta, torch.zeros_like(delta))
    return delta, done2, mask2, squeeze


def td_error(
    rew: torch.Tensor,
    val: torch.Tensor,
    done: torch.Tensor | None,
    gamma: float,
    *,
    next_val: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """One-step TD error delta_t = r_t + gamma * V(s_{t+1}) - V(s_t), with V = 0 after a terminal step.

    The advantage of the one-step actor-critic (`gae` with lam = 0). Arguments and shapes as in
    `gae`; returns a tensor shaped like `rew`, 0 at masked steps.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    delta, _, _, squeeze = _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap)
    return delta[:, 0] if squeeze else delta


def gae(
    rew: torch.Tensor,
    val: torch.Tensor,
    done: torch.Tensor | None,
    gamma: float,
    lam: float,
    *,
    next_val: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Generalized advantage estimation, GAE(gamma, lambda) (Schulman et al. 2016, eq. 16).

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)            (V = 0 after a terminal step)
        A_t     = delta_t + gamma * lam * A_{t+1}              (backwards; restarted where done_t)
                = sum_{k >= 0} (gamma lam)^k delta_{t+k}       (to the end of step t's episode)

    lam = 0 gives the one-step TD error (`td_error`: the one-step actor-critic, low variance but
    biased by the critic's errors); lam = 1 gives G_t - V(s_t), the reward-to-go minus the value
    baseline (unbiased, high variance), when the episode ends in a terminal state. A_t + V(s_t)
    is the lambda-return, the usual target of the critic.

    Layout as in the module docstring: time-major (T, N), column n the episodes of env copy n, or
    (T,) for one column. Every tensor argument has the shape of `rew`.

    Args:
        rew: rewards r_t.
        val: V(s_t), the critic's value of the state at step t (treated as a constant: detached).
        done: bool, True where an episode ends at step t (terminated or truncated); None: no
            boundary in the column.
        gamma: discount in (0, 1].
        lam: lambda in [0, 1].
        next_val: V(s_{t+1}) of the state after step t (e.g. a ValueNet on `Rollout.next_obs`).
            None: val[t+1] of the same column, and `bootstrap` after the last step.
        terminated: bool, True where step t ended in a terminal state (nothing follows: V = 0).
            None: every `done` is terminal. Where done and not terminated (a time limit cut the
            episode), delta bootstraps with next_val, which must then be given.
        mask: bool, False for padding and autoreset steps (the output is 0 there; a masked step
            may only follow a done or another masked step). None: all steps are real.
        bootstrap: (N,) or a scalar: V after step T-1 for a column whose last episode is
            unfinished; used only when next_val is None (default 0).

    Returns:
        A_t, shaped and typed like `rew`.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    lam = check_number(lam, "lam", ge=0, le=1)
    delta, done2, mask2, squeeze = _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap)
    out = _discounted_scan(delta, float(gamma) * lam, done2)
    if mask2 is not None:
        out = torch.where(mask2, out, torch.zeros_like(out))
    return out[:, 0] if squeeze else out
