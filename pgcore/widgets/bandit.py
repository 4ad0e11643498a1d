"""Notebook 01's panel: single-sample policy-gradient estimates on a small bandit, live.

`gradient_histogram_stats` is the plain function (tests call it); `bandit_panel` wraps it in
ipywidgets: sliders for the baseline, the arm rewards, one logit, the reward noise and the
sample count; a histogram of the single-sample estimates of one gradient component against the
exact gradient and the sample mean; a readout with the numbers.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import bandit as _bandit
from .._checks import is_int, is_number
from ._panel import panel, readout_and_output

__all__ = ["gradient_histogram_stats", "format_readout", "bandit_panel"]


def gradient_histogram_stats(
    rewards: Sequence[float] = (1.0, 2.0, 4.0),
    logits: Sequence[float] = (1.0, 0.0, -1.0),
    baseline: float = 0.0,
    num_samples: int = 1000,
    seed: int = 0,
    component: int = 0,
    reward_std: float = 0.0,
) -> dict:
    """Draw `num_samples` single-sample score-function estimates and summarize entry `component`.

    Rewards are mean arm rewards (K,); with `reward_std > 0` each pull adds N(0, reward_std^2)
    noise. Float64 throughout so the numbers are stable. Returns a dict:
      "samples" (num_samples,) the single-sample estimates of d J / d logits[component],
      "exact" the exact value of that entry, "exact_gradient" (K,) the whole exact gradient,
      "sample_mean", "sample_var" (unbiased), "std_error" = sqrt(sample_var / n),
      "analytic_var" the exact variance of one sample, "optimal_baseline" the baseline that
      minimizes the variance of this entry, "component".
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    rewards_t = torch.as_tensor(rewards, dtype=torch.float64)
    k = logits_t.numel()
    if not is_int(component) or not 0 <= component < k:
        raise ValueError(f"component must be an arm index in [0, {k - 1}], got {component!r}")
    if not (is_number(reward_std) and reward_std >= 0):
        raise ValueError(f"reward_std must be a number >= 0, got {reward_std!r}")
    if not is_int(num_samples) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2 (a variance needs two samples), got {num_samples!r}")
    exact = _bandit.exact_gradient(logits_t, rewards_t)  # (K,), and the input checks
    reward_source = _bandit.GaussianBandit(rewards_t, float(reward_std)) if reward_std > 0 else rewards_t
    gen = torch.Generator().manual_seed(int(seed))
    rows = _bandit.score_function_samples(logits_t, reward_source, num_samples, baseline=float(baseline), generator=gen)
    samples = rows[:, component]  # (n,)
    sample_var = samples.var().item()
    return {
        "samples": samples,
        "exact": exact[component].item(),
        "exact_gradient": exact,
        "sample_mean": samples.mean().item(),
        "sample_var": sample_var,
        "std_error": (sample_var / num_samples) ** 0.5,
        "analytic_var": _bandit.estimator_variance(logits_t, rewards_t, float(baseline), float(reward_std))[component].item(),
        "optimal_baseline": _bandit.optimal_baseline(logits_t, rewards_t, component=component).item(),
        "component": component,
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `gradient_histogram_stats`."""
    i = stats["component"]
    return (
        f"<b>∂J/∂θ<sub>{i + 1}</sub></b>: exact = {stats['exact']:+.4f} &nbsp;|&nbsp; "
        f"sample mean = {stats['sample_mean']:+.4f} ± {stats['std_error']:.4f} (s.e.) &nbsp;|&nbsp; "
        f"sample variance = {stats['sample_var']:.4f} (exact {stats['analytic_var']:.4f}) &nbsp;|&nbsp; "
        f"variance-minimizing baseline for this entry = {stats['optimal_baseline']:.3f}"
    )


def bandit_panel(
    rewards: Sequence[float] = (1.0, 2.0, 4.0),
    logits: Sequence[float] = (1.0, 0.0, -1.0),
    num_samples: int = 1000,
    seed: int = 0,
):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel").

    First control: the baseline slider. Then the three arm rewards, the logit of arm 1 (the
    others stay as given), the reward noise, the sample count and the gradient entry shown.
    Every change redraws the histogram and the readout (class "pg-readout") in well under a second.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .. import plotting

    rewards, logits = [float(r) for r in rewards], [float(x) for x in logits]
    if len(rewards) != 3 or len(logits) != 3:
        raise ValueError(f"the panel shows a 3-armed bandit: got {len(rewards)} rewards and {len(logits)} logits")
    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")

    def slider(desc, value, lo, hi, step=0.1):
        return widgets.FloatSlider(
            value=value, min=lo, max=hi, step=step, description=desc, continuous_update=False,
            readout_format=".2f", style=style, layout=layout,
        )

    baseline = slider("baseline b", 0.0, -3.0, 6.0)
    reward_sliders = [slider(f"reward r{a + 1}", r, -3.0, 6.0) for a, r in enumerate(rewards)]
    logit = slider("logit θ1", logits[0], -3.0, 3.0)
    noise = slider("reward noise σ", 0.0, 0.0, 3.0)
    n = widgets.SelectionSlider(
        options=[10, 30, 100, 300, 1000, 3000, 10000], value=num_samples if num_samples in
        (10, 30, 100, 300, 1000, 3000, 10000) else 1000, description="samples n",
        continuous_update=False, style=style, layout=layout,
    )
    component = widgets.Dropdown(
        options=[(f"∂J/∂θ{i + 1}", i) for i in range(3)], value=0, description="entry shown", style=style, layout=layout,
    )
    readout, out = readout_and_output()

    def update(*_):
        stats = gradient_histogram_stats(
            rewards=[s.value for s in reward_sliders],
            logits=[logit.value, *logits[1:]],
            baseline=baseline.value,
            num_samples=n.value,
            seed=seed,
            component=component.value,
            reward_std=noise.value,
        )
        readout.value = format_readout(stats)
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            plotting.plot_grad_hist(stats["samples"].numpy(), stats["exact"], ax=ax, bins=60)
            ax.set_title(f"{n.value} single-sample estimates of ∂J/∂θ{component.value + 1}")
            ax.legend(loc="upper right", fontsize=9)
            plt.show()
            plt.close(fig)

    controls = [baseline, *reward_sliders, logit, noise, n, component]
    return panel(controls, update, readout, out)
