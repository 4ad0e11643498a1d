"""One look for every figure of the course: a seaborn theme, curves with seed bands, gradient histograms.

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["set_theme", "plot_band", "plot_grad_hist", "legend_outside", "PALETTE"]

PALETTE = sns.color_palette("colorblind")


def set_theme() -> None:
    """The course's single plot theme (seaborn whitegrid, colorblind palette, readable sizes).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.figsize": (7, 4), "figure.dpi": 90, "axes.titleweight": "bold"})


def plot_band(
    ys,
    x=None,
    *,
    ax=None,
    label: str | None = None,
    color=None,
    band: str = "std",
):
    """Plot the mean over seeds of `ys` (num_seeds, T) with a shaded band.

    band: "std" (mean +- one standard deviation across seeds), "se" (+- one standard error),
    or "minmax" (the range over seeds). Returns the axes.
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    ys = np.asarray(ys, dtype=float)
    if ys.ndim == 1:
        ys = ys[None, :]
    if ys.ndim != 2 or ys.shape[1] == 0:
        raise ValueError(f"ys must be shaped (num_seeds, T) with T >= 1, got {ys.shape}")
    if band not in ("std", "se", "minmax"):
        raise ValueError(f"band must be 'std', 'se' or 'minmax', got {band!r}")
    x = np.arange(ys.shape[1]) if x is None else np.asarray(x)
    ax = ax if ax is not None else plt.gca()
    mean = ys.mean(axis=0)
    if band == "minmax":
        lo, hi = ys.min(axis=0), ys.max(axis=0)
    else:
        spread = ys.std(axis=0)
        if band == "se":
            spread = spread / np.sqrt(ys.shape[0])
        lo, hi = mean - spread, mean + spread
    (line,) = ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return ax


def plot_grad_hist(
    samples,
    exact: float | None = None,
    *,
    ax=None,
    bins: int = 40,
    label: str | None = None,
    color=None,
):
    """Histogram of single-sample gradient estimates, with the exact gradient and the sample mean marked."""
    samples = np.asarray(samples, dtype=float).ravel()
    ax = ax if ax is not None else plt.gca()
    ax.hist(samples, bins=bins, alpha=0.6, label=label, color=color)
    ax.axvline(samples.mean(), color="k", linestyle="--", linewidth=1.5, label="sample mean")
    if exact is not None:
        ax.axvline(exact, color="C3", linewidth=2, label="exact gradient")
    ax.set_xlabel("single-sample gradient estimate")
    ax.set_ylabel("count")
    return ax


def legend_outside(ax):
    """Put the legend to the right of the axes so it never hides a curve.

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    return ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
