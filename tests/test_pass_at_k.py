"""pgcore.lm.pass_at_k: the unbiased estimator 1 - C(n-c, k)/C(n, k), against brute force and at n = 1024."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pgcore.lm import pass_at_k, pass_at_k_curve


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_correct_sample(n):
    """Brute force: over all C(n, k) subsets of k of the n samples, the share containing a correct one."""
    for c in range(n + 1):
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_fraction_correct_and_edge_cases():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k: every 5-subset holds a correct sample


def test_stable_for_n_1024():
    """The binomials overflow float64 (C(1024, 512) ~ 1e306, C(1024, 600) overflows); the product does not."""
    n = 1024
    for c, k in [(1, 1), (1, 512), (3, 600), (100, 64), (512, 512), (1000, 1)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k) if k <= n - c else 1.0  # Python ints: exact ratio
        got = pass_at_k(n, c, k)
        assert np.isfinite(got) and 0.0 <= got <= 1.0
        assert got == pytest.approx(exact, rel=1e-9, abs=1e-12), (c, k)
    assert pass_at_k(n, 1, 1) == pytest.approx(1 / 1024)
    ks = np.arange(1, n + 1)
    curve = [pass_at_k(n, 5, int(k)) for k in ks]
    assert np.all(np.diff(curve) >= -1e-15), "pass@k never falls as k grows"


def test_curve_averages_over_problems_and_rejects_bad_input():
    got = pass_at_k_curve(4, [0, 2, 4], [1, 2, 4])
    want = [np.mean([pass_at_k(4, c, k) for c in (0, 2, 4)]) for k in (1, 2, 4)]
    assert np.allclose(got, want)
    assert got[0] == pytest.approx(0.5)
    for bad in [(0, 0, 1), (4, 5, 1), (4, 2, 0), (4, 2, 5), (4, -1, 1), (4.0, 2, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    with pytest.raises(ValueError):
        pass_at_k_curve(4, [], [1])


def test_pgcore_lm_pass_at_k_is_the_function():
    import pgcore.lm
    import pgcore.lm.passk

    assert pgcore.lm.pass_at_k is pgcore.lm.passk.pass_at_k and pgcore.lm.pass_at_k(4, 2, 1) == 0.5
