"""pass@k: the chance that at least one of k samples is correct, estimated without bias from n >= k samples.

With n samples of one problem, c of them correct, the unbiased estimator of Chen et al. (2021,
"Evaluating Large Language Models Trained on Code", the HumanEval paper) is

    pass@k = 1 - C(n - c, k) / C(n, k)

the probability that k samples drawn *without replacement* from the n contain a correct one. As floats,
the binomial coefficients overflow from n = 1030 (C(1030, 515) > 1.8e308); the ratio is a product of c terms,

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)

(every factor in [0, 1), so it is stable for any n). Average it over problems.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pass_at_k", "pass_at_k_curve"]


def _check(n, c, k) -> None:
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if n < 1 or k < 1 or not 0 <= c <= n or k > n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Args:
        n: samples drawn for the problem (>= 1).
        c: how many of them the verifier accepted (0 <= c <= n).
        k: the budget (1 <= k <= n). pass@1 = c / n.

    Returns:
        A float in [0, 1]. Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), stable for n up to 1024
        and beyond. Naive twin: `1 - math.comb(n - c, k) / math.comb(n, k)`.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    _check(n, c, k)
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k_curve(n: int, correct, ks) -> np.ndarray:
    """Mean pass@k over problems, for every k in `ks`.

    Args:
        n: samples per problem (the same for every problem).
        correct: (P,) number of correct samples of each of P problems.
        ks: the budgets, each in 1..n.

    Returns:
        (len(ks),) array: entry j is the mean over problems of pass_at_k(n, c_p, ks[j]).

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    correct = [int(c) for c in np.asarray(correct).reshape(-1)]
    if not correct:
        raise ValueError("correct is empty; accepted: one count per problem")
    return np.array([np.mean([pass_at_k(n, c, int(k)) for c in correct]) for k in ks])
