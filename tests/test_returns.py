"""pgcore.returns against a brute-force loop over episodes, with boundaries, masks and padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pgcore.returns import discount_cumsum, discounted_return, reward_to_go


def _random_batch(T=23, N=5, seed=0):
    """(T, N) rewards with several episodes per column, NEXT_STEP reset steps and tail padding."""
    rng = np.random.default_rng(seed)
    rew = rng.normal(size=(T, N))
    done = np.zeros((T, N), dtype=bool)
    mask = np.ones((T, N), dtype=bool)
    for n in range(N):
        t = 0
        while t < T:
            length = int(rng.integers(1, 8))
            end = t + length - 1
            if end >= T:  # last episode unfinished only in column 0; elsewhere pad
                if n == 0:
                    break
                mask[t:, n] = False
                break
            done[end, n] = True
            t = end + 1
            if t < T and rng.random() < 0.5:  # an autoreset step between episodes
                mask[t, n] = False
                t += 1
    rew[~mask] = rng.normal(size=(~mask).sum())  # garbage that must be ignored
    return rew, done, mask


def _episodes(done_col, mask_col):
    """Brute force: list of index lists, one per episode, in one column."""
    episodes, current = [], []
    for t in range(len(done_col)):
        if not mask_col[t]:
            continue
        current.append(t)
        if done_col[t]:
            episodes.append(current)
            current = []
    if current:
        episodes.append(current)
    return episodes


def _brute(rew, done, mask, gamma):
    T, N = rew.shape
    rtg = np.zeros((T, N))
    ret = np.zeros((T, N))
    for n in range(N):
        for ep in _episodes(done[:, n], mask[:, n]):
            for i, t in enumerate(ep):
                rtg[t, n] = sum(gamma ** (j - i) * rew[ep[j], n] for j in range(i, len(ep)))
            for t in ep:
                ret[t, n] = rtg[ep[0], n]
    return rtg, ret


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_reward_to_go_and_return_match_brute_force(gamma, seed):
    rew, done, mask = _random_batch(seed=seed)
    rtg_ref, ret_ref = _brute(rew, done, mask, gamma)
    args = (torch.tensor(rew), gamma, torch.tensor(done), torch.tensor(mask))
    rtg = reward_to_go(*args)
    ret = discounted_return(*args)
    assert torch.allclose(rtg, torch.tensor(rtg_ref)), (rtg - torch.tensor(rtg_ref)).abs().max()
    assert torch.allclose(ret, torch.tensor(ret_ref))
    assert (rtg[~torch.tensor(mask)] == 0).all()
    assert done.sum() >= 10 and (~mask).sum() >= 5  # the batch really exercises boundaries


def test_one_dimensional_single_episode_and_discount_cumsum():
    rew = torch.tensor([1.0, 1.0, 1.0])
    assert torch.allclose(reward_to_go(rew, 0.5), torch.tensor([1.75, 1.5, 1.0]))
    assert torch.allclose(discounted_return(rew, 0.5), torch.tensor([1.75, 1.75, 1.75]))
    x = torch.randn(7, 3, dtype=torch.float64)
    ref = torch.stack([sum(0.9 ** (k - t) * x[k] for k in range(t, 7)) for t in range(7)])
    assert torch.allclose(discount_cumsum(x, 0.9), ref)
    assert torch.allclose(discount_cumsum(x.T, 0.9, dim=1), ref.T)
    # with no done flags the whole column is one episode: reward_to_go == discount_cumsum
    assert torch.allclose(reward_to_go(x, 0.9), ref)


def test_bootstrap_only_for_unfinished_columns():
    rew = torch.ones(3, 2)
    done = torch.tensor([[False, False], [False, False], [False, True]])
    g = reward_to_go(rew, 0.5, done, bootstrap=torch.tensor([8.0, 8.0]))
    assert torch.allclose(g[:, 0], torch.tensor([1.75 + 0.125 * 8, 1.5 + 0.25 * 8, 1.0 + 0.5 * 8]))
    assert torch.allclose(g[:, 1], torch.tensor([1.75, 1.5, 1.0]))


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_gamma_raises(gamma):
    with pytest.raises(ValueError, match="gamma"):
        reward_to_go(torch.ones(3), gamma)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="done"):
        reward_to_go(torch.ones(3, 2), 0.9, done=torch.zeros(3, dtype=torch.bool))
