"""pgcore.variance.gradient_stats / bias_stats: the noise-to-signal ratio and the bias are measured
without the saturation of the naive ratio tr Cov / ||mean||^2."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgcore.variance import bias_stats, gradient_stats


def _draws(num_draws, M, P, mean_norm2, trace, seed=0, shift=None):
    """num_draws sets of M estimates g_b = mu + noise, ||mu||^2 = mean_norm2, tr Cov = trace (isotropic)."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(P, generator=gen, dtype=torch.float64)
    mu *= math.sqrt(mean_norm2) / mu.norm()
    sigma = math.sqrt(trace / P)
    for _ in range(num_draws):
        yield mu, mu + sigma * torch.randn(M, P, generator=gen, dtype=torch.float64)


def test_noise_to_signal_recovers_the_true_ratio_where_the_naive_one_saturates_near_M():
    M, P, true_ratio = 24, 2000, 400.0                       # noise 400 times the squared mean: noise dominates
    stats = [gradient_stats(g) for _, g in _draws(200, M, P, 1.0, true_ratio)]
    signal = np.array([s["signal"] for s in stats])
    trace = np.array([s["trace_cov"] for s in stats])
    naive = np.array([s["naive_ratio"] for s in stats])
    # the signal estimate is unbiased for ||E g||^2 = 1, and tr Cov for 400
    assert abs(signal.mean() - 1.0) < 0.1
    assert abs(trace.mean() / true_ratio - 1) < 0.01
    assert abs(trace.mean() / signal.mean() / true_ratio - 1) < 0.1
    # the naive ratio does not see 400: E||mean||^2 = 1 + 400 / 24, so it sits near M = 24 (400 / 17.7 = 22.6)
    assert abs(naive.mean() - true_ratio / (1 + true_ratio / M)) < 1.0 and naive.max() < M + 2
    # the jackknife standard error is of the size of the estimate's spread over draws, on the safe side
    # (when noise dominates it overstates it, by up to about sqrt(2))
    se = np.array([s["signal_se"] for s in stats])
    assert 0.9 < se.mean() / signal.std() < 1.6
    # the cosine between two batches is about 1 / (1 + ratio)
    cos = np.array([s["cos_between"] for s in stats])
    assert abs(cos.mean() - 1 / (1 + true_ratio)) < 0.001


def test_noise_to_signal_when_the_signal_is_clear():
    M, P, true_ratio = 24, 500, 2.0
    s = [gradient_stats(g) for _, g in _draws(100, M, P, 4.0, 4.0 * true_ratio, seed=1)]
    ratio = np.array([x["noise_to_signal"] for x in s])
    assert abs(np.median(ratio) / true_ratio - 1) < 0.1
    assert all(x["signal_significant"] for x in s)
    se = np.array([x["signal_se"] for x in s])
    assert 0.8 < se.mean() / np.std([x["signal"] for x in s]) < 1.25          # here the jackknife is about right
    assert all(x["noise_to_signal_low"] <= x["noise_to_signal"] for x in s)


def test_no_signal_is_flagged():
    gen = torch.Generator().manual_seed(2)
    flags = [gradient_stats(torch.randn(24, 300, generator=gen))["signal_significant"] for _ in range(100)]
    assert sum(flags) <= 10                                # pure noise: the mean is "measured" only by chance


def test_bias_stats_finds_a_small_bias_under_large_shared_noise():
    M, P = 50, 1000
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(P, generator=gen, dtype=torch.float64)
    bias = 0.2 * torch.randn(P, generator=gen, dtype=torch.float64)
    bias *= 0.3 * g.norm() / bias.norm()                     # ||bias||^2 = 0.09 ||g||^2
    out = []
    for _ in range(100):
        noise = 3.0 * torch.randn(M, P, generator=gen, dtype=torch.float64)    # shared by both estimators
        unbiased = g + noise
        biased = g + bias + noise + 0.3 * torch.randn(M, P, generator=gen, dtype=torch.float64)
        out.append(bias_stats(biased, unbiased))
    rel = np.array([o["rel_bias_sq"] for o in out])
    assert abs(rel.mean() - 0.09) < 0.01
    same = bias_stats(unbiased, unbiased)
    assert same["bias_sq"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        bias_stats(biased, unbiased[:, :10])


def test_gradient_stats_rejects_bad_shapes():
    with pytest.raises(ValueError, match="M >= 2"):
        gradient_stats(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="reference"):
        gradient_stats(torch.zeros(4, 3), torch.zeros(2))
