"""pgcore.bandit: the exact gradient, the score-function estimator, baselines, the panel's numbers, learning."""
from __future__ import annotations

import math

import pytest
import torch

import pgcore as pg
from pgcore.bandit import (
    GaussianBandit,
    GradientBanditConfig,
    estimator_variance,
    exact_gradient,
    optimal_baseline,
    score_function_samples,
)

LOGITS = torch.tensor([1.0, 0.0, -1.0, 0.5], dtype=torch.float64)
REWARDS = torch.tensor([1.0, 2.0, 4.0, -0.5], dtype=torch.float64)
N = 200_000  # single-sample estimates per statistical test


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_within_se(samples: torch.Tensor, target: torch.Tensor, num_se: float = 4.0):
    """Every column mean of `samples` (n, K) lies within `num_se` standard errors of `target` (K,)."""
    se = samples.std(dim=0) / math.sqrt(samples.shape[0])
    err = (samples.mean(dim=0) - target).abs()
    assert (err <= num_se * se + 1e-12).all(), f"mean off by {err.tolist()} > {num_se} s.e. {se.tolist()}"


def test_exact_gradient_matches_autograd():
    for seed in range(5):
        g = _gen(seed)
        logits = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
        rewards = torch.randn(6, generator=g, dtype=torch.float64)
        objective = (torch.softmax(logits, dim=0) * rewards).sum()
        (autograd,) = torch.autograd.grad(objective, logits)
        assert torch.allclose(exact_gradient(logits, rewards), autograd, atol=1e-12)
        assert torch.allclose(pg.bandit.objective(logits, rewards), objective)


def test_exact_gradient_is_zero_when_all_rewards_equal():
    assert torch.allclose(exact_gradient(LOGITS, torch.full((4,), 3.0, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64))


def test_score_function_samples_shape_and_rows():
    rows = score_function_samples(LOGITS, REWARDS, 7, baseline=0.5, generator=_gen())
    assert rows.shape == (7, 4) and rows.dtype == torch.float64
    actions = pg.bandit.sample_actions(LOGITS, 7, _gen())  # the same draw
    pi = torch.softmax(LOGITS, 0)
    expected = (REWARDS[actions] - 0.5)[:, None] * (torch.nn.functional.one_hot(actions, 4) - pi)
    assert torch.allclose(rows, expected)


def test_score_function_samples_are_unbiased():
    rows = score_function_samples(LOGITS, REWARDS, N, generator=_gen(1))
    _assert_within_se(rows, exact_gradient(LOGITS, REWARDS))


@pytest.mark.parametrize("baseline", [-3.0, 1.7, 10.0])
def test_constant_baseline_keeps_the_mean(baseline):
    rows = score_function_samples(LOGITS, REWARDS, N, baseline=baseline, generator=_gen(2))
    _assert_within_se(rows, exact_gradient(LOGITS, REWARDS))


def test_score_has_zero_mean():
    # E[grad log pi] = 0 is why a baseline adds no bias: rewards all 1, baseline 0 -> rows are the score itself.
    rows = score_function_samples(LOGITS, torch.ones(4, dtype=torch.float64), N, generator=_gen(3))
    _assert_within_se(rows, torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("baseline", [0.0, 1.0, None])
def test_monte_carlo_variance_matches_analytic(baseline):
    b = optimal_baseline(LOGITS, REWARDS).item() if baseline is None else baseline
    rows = score_function_samples(LOGITS, REWARDS, N, baseline=b, generator=_gen(4))
    analytic = estimator_variance(LOGITS, REWARDS, b)
    # the sample variance of n draws has relative s.e. about sqrt((kurtosis - 1) / n): a few % here
    assert torch.allclose(rows.var(dim=0), analytic, rtol=0.05)


def test_optimal_baseline_minimizes_total_variance():
    b_star = optimal_baseline(LOGITS, REWARDS)
    grid = torch.linspace(-5, 8, 1301, dtype=torch.float64)
    total = estimator_variance(LOGITS, REWARDS, grid).sum(-1)  # (M,)
    assert abs(grid[total.argmin()].item() - b_star.item()) <= 0.01 + 1e-9
    mean_reward = (torch.softmax(LOGITS, 0) * REWARDS).sum()
    v = lambda b: estimator_variance(LOGITS, REWARDS, b).sum().item()  # noqa: E731
    assert v(b_star) < v(mean_reward) < v(0.0)
    # and the Monte Carlo variance shows the same reduction on the same samples
    rows_0 = score_function_samples(LOGITS, REWARDS, 50_000, baseline=0.0, generator=_gen(5))
    rows_star = score_function_samples(LOGITS, REWARDS, 50_000, baseline=b_star, generator=_gen(5))
    mc_ratio = rows_star.var(0).sum() / rows_0.var(0).sum()
    assert mc_ratio < 1.0 and math.isclose(mc_ratio.item(), v(b_star) / v(0.0), rel_tol=0.1)


def test_component_optimal_baseline_minimizes_that_component():
    grid = torch.linspace(-5, 8, 1301, dtype=torch.float64)
    var = estimator_variance(LOGITS, REWARDS, grid)  # (M, K)
    for i in range(4):
        b_i = optimal_baseline(LOGITS, REWARDS, component=i).item()
        assert abs(grid[var[:, i].argmin()].item() - b_i) <= 0.01 + 1e-9


def test_noisy_rewards_callable():
    bandit = GaussianBandit(REWARDS, reward_std=1.5)
    rows = score_function_samples(LOGITS, bandit, N, baseline=1.0, generator=_gen(6))
    assert rows.shape == (N, 4)
    _assert_within_se(rows, exact_gradient(LOGITS, REWARDS))
    # noise adds sigma^2 E||grad log pi||^2 to the variance, and the analytic formula knows it
    assert torch.allclose(rows.var(0), estimator_variance(LOGITS, REWARDS, 1.0, reward_std=1.5), rtol=0.05)
    assert (estimator_variance(LOGITS, REWARDS, 1.0, 1.5) > estimator_variance(LOGITS, REWARDS, 1.0, 0.0)).all()
    # the callable gets the sampled actions and the generator: same seed, same rows
    again = score_function_samples(LOGITS, bandit, N, baseline=1.0, generator=_gen(6))
    assert torch.equal(rows, again)


def test_a_plain_lambda_works_as_reward_callable():
    calls = []

    def rewards(actions, generator):
        calls.append(actions.shape)
        return REWARDS[actions] + 0.0 * torch.randn(actions.shape, generator=generator, dtype=torch.float64)

    rows = score_function_samples(LOGITS, rewards, 10, generator=_gen())
    assert calls == [(10,)]
    assert torch.allclose(rows, score_function_samples(LOGITS, REWARDS, 10, generator=_gen()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(logits=torch.zeros(2, 3)), "1-D"),
        (dict(logits=torch.zeros(1)), "K >= 2"),
        (dict(logits=[0.0, 1.0]), "torch.Tensor"),
        (dict(logits=torch.tensor([0, 1])), "floating"),
        (dict(logits=torch.tensor([0.0, float("nan"), 1.0, 2.0])), "finite"),
        (dict(rewards=torch.ones(3)), r"shape \(3,\).*accepted: shape \(4,\)"),
        (dict(rewards=torch.tensor([1.0, float("inf"), 0.0, 0.0])), "finite"),
        (dict(num_samples=0), "num_samples must be an int >= 1"),
        (dict(num_samples=2.5), "num_samples must be an int >= 1"),
        (dict(baseline=float("nan")), "baseline must be finite"),
        (dict(baseline=torch.ones(2)), "baseline must be a single number"),
        (dict(rewards=lambda a, g: torch.ones(3)), r"must return a tensor of shape \(5,\)"),
        (dict(rewards=lambda a, g: torch.full(a.shape, float("nan"))), "non-finite"),
    ],
)
def test_score_function_samples_rejects_bad_input(kwargs, match):
    args = dict(logits=torch.zeros(4), rewards=torch.ones(4), num_samples=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        score_function_samples(**args)


def test_exact_gradient_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        exact_gradient(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"accepted: shape \(3,\)"):
        exact_gradient(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="not a callable"):
        exact_gradient(torch.zeros(3), GaussianBandit(torch.zeros(3)))


def test_testbed_and_bandit():
    bandit = GaussianBandit.testbed(10, q_mean=4.0, generator=_gen(0))
    assert bandit.k == 10 and bandit.q_star.shape == (10,)
    assert 2.0 < bandit.q_star.mean().item() < 6.0
    assert bandit.best_arm == int(bandit.q_star.argmax())
    actions = torch.full((N,), 3, dtype=torch.long)
    r = bandit(actions, _gen(1))
    assert abs(r.mean().item() - bandit.q_star[3].item()) < 4 / math.sqrt(N)
    assert abs(r.std().item() - 1.0) < 0.01
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 9\]"):
        bandit(torch.tensor([10]))
    with pytest.raises(ValueError, match="reward_std"):
        GaussianBandit(torch.zeros(3), reward_std=-1.0)


def test_gradient_bandit_learns_and_the_baseline_helps():
    # Sutton & Barto Fig. 2.5 setting: q* ~ N(4, 1). Short runs, 10 seeds, clear margins.
    seeds = range(10)
    with_b = pg.bandit.train_gradient_bandit(GradientBanditConfig(steps=300, q_mean=4.0, baseline=True), seeds)
    without = pg.bandit.train_gradient_bandit(GradientBanditConfig(steps=300, q_mean=4.0, baseline=False), seeds)
    assert with_b.prob_optimal.shape == (10, 300) and with_b.logits.shape == (10, 10)
    assert torch.equal(with_b.q_star, without.q_star)  # same testbeds per seed
    p_best = with_b.final_policy.gather(1, with_b.best_arm[:, None]).squeeze(1)
    assert p_best.median() > 0.5
    assert with_b.prob_optimal[:, -50:].mean() > without.prob_optimal[:, -50:].mean() + 0.15
    assert with_b.expected_reward[:, -1].mean() > with_b.expected_reward[:, 0].mean() + 0.5
    # with the running-average baseline, shifting every q* by 4 changes nothing but rounding
    shifted = pg.bandit.train_gradient_bandit(GradientBanditConfig(steps=300, q_mean=0.0, baseline=True), seeds)
    assert torch.allclose(shifted.logits, with_b.logits, atol=1e-4)


def test_gradient_bandit_run_is_reproducible_per_seed():
    cfg = GradientBanditConfig(steps=50)
    a = pg.bandit.train_gradient_bandit(cfg, [3, 4])
    b = pg.bandit.train_gradient_bandit(cfg, [4])
    assert torch.equal(a.logits[1], b.logits[0]) and torch.equal(a.reward[1], b.reward[0])
    with pytest.raises(ValueError, match="lr"):
        GradientBanditConfig(lr=0.0)


# ------------------------------------------------------------------ the panel's plain function

def test_gradient_histogram_stats_numbers():
    from pgcore.widgets.bandit import format_readout, gradient_histogram_stats

    s = gradient_histogram_stats(rewards=(1.0, 2.0, 4.0), logits=(1.0, 0.0, -1.0), baseline=0.5,
                                 num_samples=20_000, seed=0, component=2, reward_std=0.5)
    exact = exact_gradient(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    assert s["samples"].shape == (20_000,)
    assert math.isclose(s["exact"], exact[2].item())
    assert abs(s["sample_mean"] - s["exact"]) < 4 * s["std_error"]
    assert math.isclose(s["sample_var"], s["analytic_var"], rel_tol=0.1)
    # the readout changes when the baseline (the panel's first control) moves
    s2 = gradient_histogram_stats(rewards=(1.0, 2.0, 4.0), logits=(1.0, 0.0, -1.0), baseline=2.0,
                                  num_samples=20_000, seed=0, component=2, reward_std=0.5)
    assert format_readout(s) != format_readout(s2) and s2["exact"] == s["exact"]
    with pytest.raises(ValueError, match="component"):
        gradient_histogram_stats(component=3)


def test_bandit_panel_builds_with_the_convention():
    widgets = pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    from pgcore.widgets.bandit import bandit_panel

    panel = bandit_panel(num_samples=100)
    assert "pg-main-panel" in panel._dom_classes
    first = panel.children[0]
    assert isinstance(first, widgets.FloatSlider) and not first.continuous_update
    readout = next(c for c in panel.children if "pg-readout" in getattr(c, "_dom_classes", ()))
    before = readout.value
    first.value = 2.5
    assert readout.value != before
