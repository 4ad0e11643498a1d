"""Discounted returns and reward-to-go over a batch of episodes, with episode boundaries and masks.

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

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import torch

__all__ = ["discount_cumsum", "reward_to_go", "discounted_return"]


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0.0 < float(gamma) <= 1.0):
        raise ValueError(f"gamma must be a number in (0, 1], got {gamma!r}")
    return float(gamma)


def _prepare(rew, done, mask, name):
    if not isinstance(rew, torch.Tensor):
        raise ValueError(f"rew must be a torch.Tensor, got {type(rew).__name__}")
    if rew.dim() not in (1, 2):
        raise ValueError(f"rew must have shape (T,) or (T, N), got {tuple(rew.shape)}")
    squeeze = rew.dim() == 1
    rew2 = rew[:, None] if squeeze else rew
    out = []
    for t, tname in ((done, "done"), (mask, "mask")):
        if t is None:
            out.append(None)
            continue
        if not isinstance(t, torch.Tensor) or t.shape != rew.shape:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: {tname} must be a tensor shaped like rew {tuple(rew.shape)}, got {shape}")
        out.append((t[:, None] if squeeze else t).to(torch.bool))
    return rew2, out[0], out[1], squeeze


def discount_cumsum(x: torch.Tensor, gamma: float, dim: int = 0) -> torch.Tensor:
    """Discounted cumulative sum along `dim`, with no episode boundaries (Spinning Up's core op).

    y_t = x_t + gamma x_{t+1} + gamma^2 x_{t+2} + ...   (to the end of `dim`)

    Args:
        x: any shape, float; summed along `dim` (time).
        gamma: discount in (0, 1].

    Returns:
        Same shape as `x`. Example: discount_cumsum([1, 1, 1], 0.5) = [1.75, 1.5, 1.0].

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    gamma = _check_gamma(gamma)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    xt = x.movedim(dim, 0)
    out = torch.empty_like(xt)
    running = torch.zeros_like(xt[0]) if xt.shape[0] else None
    for t in range(xt.shape[0] - 1, -1, -1):
        running = xt[t] + gamma * running
        out[t] = running
    return out.movedim(0, dim)


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
    gamma = _check_gamma(gamma)
    rew2, done2, mask2, squeeze = _prepare(rew, done, mask, "reward_to_go")
    if mask2 is not None:
        rew2 = torch.where(mask2, rew2, torch.zeros_like(rew2))
    T, N = rew2.shape
    running = torch.zeros(N, dtype=rew2.dtype, device=rew2.device)
    if bootstrap is not None:
        running = running + torch.as_tensor(bootstrap, dtype=rew2.dtype, device=rew2.device).reshape(-1).expand(N)
    out = torch.empty_like(rew2)
    for t in range(T - 1, -1, -1):
        if done2 is not None:
            running = torch.where(done2[t], torch.zeros_like(running), running)
        running = rew2[t] + gamma * running
        out[t] = running
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

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    g = reward_to_go(rew, gamma, done, mask)
    g2, done2, mask2, squeeze = _prepare(g, done, mask, "discounted_return")
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
