"""Notebook 05's panel: the group size G and the advantage maker -> where a GRPO update's signal goes, instantly.

`group_stats` is the plain function (tests and the notebook call it). From a (P, n) 0/1 matrix of sampled answers'
correctness (notebook 05's section 2: n answers to each of P held-out problems), it splits each problem's answers
into n // G groups of G, computes each group's advantages with `pgcore.lm.algorithm.lm_advantages`, and returns,
per difficulty class (the problem's success rate c/n): the fraction of groups with zero spread (no signal), and the
mean |advantage| (the weight a completion of such a problem gets in the update). `grpo_panel` wraps it in
ipywidgets: a group-size slider (the first control) and the advantage maker; a readout (class "pg-readout") and two
plots. No training: a change redraws in well under a second.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import numpy as np
import torch

from ..lm.algorithm import ADVANTAGES, lm_advantages
from ._panel import panel, readout_and_output

__all__ = ["group_stats", "format_readout", "grpo_panel", "GROUP_SIZES", "DIFFICULTY"]

GROUP_SIZES = (2, 4, 8, 16, 32)
"""The group-size slider's stops (completions per prompt)."""
DIFFICULTY = (("hard", 0.0, 0.2), ("medium-hard", 0.2, 0.4), ("medium", 0.4, 0.6), ("medium-easy", 0.6, 0.8),
              ("easy", 0.8, 1.0))
"""Difficulty classes by success rate c/n: (name, low, high), low <= c/n < high (the last one includes 1)."""


def group_stats(correct, num_samples: int = 8, advantage: str = "group") -> dict:
    """Zero-spread fraction and mean |advantage| per difficulty class, for groups of `num_samples` answers.

    Args:
        correct: (P, n) 0/1 array, n answers to each of P problems; n must be a multiple of `num_samples`.
        num_samples: G, answers per group.
        advantage: none, mean, rloo or group (`pgcore.lm.algorithm.lm_advantages`).

    Returns: dict with "num_samples", "advantage", "problems" (P), "groups" (P * n // G), "zero_spread" (the
    fraction of all groups with zero spread), and per class of `DIFFICULTY` (lists, in that order): "classes",
    "count" (problems), "class_zero_spread", "weight" (mean |A| over the class's groups, zero-spread ones
    included; NaN for an empty class).
    """
    correct = np.asarray(correct, dtype=np.float32)
    if correct.ndim != 2:
        raise ValueError(f"correct must be (problems, samples), got shape {correct.shape}")
    G = int(num_samples)
    if G < 2 or correct.shape[1] % G:
        raise ValueError(f"num_samples {num_samples} must be >= 2 and divide the {correct.shape[1]} samples per problem")
    P, n = correct.shape
    groups = torch.from_numpy(correct).reshape(P * (n // G), G)                  # (P * n/G, G)
    zero = (groups.max(dim=1).values == groups.min(dim=1).values).numpy().reshape(P, n // G)   # (P, n/G)
    weight = lm_advantages(groups, advantage).abs().mean(dim=1).numpy().reshape(P, n // G)      # (P, n/G)
    rate = correct.mean(axis=1)                                                  # (P,)
    count, zs, w = [], [], []
    for k, (_, low, high) in enumerate(DIFFICULTY):
        sel = (rate >= low) & ((rate < high) if k < len(DIFFICULTY) - 1 else (rate <= high))
        count.append(int(sel.sum()))
        zs.append(float(zero[sel].mean()) if sel.any() else float("nan"))
        w.append(float(weight[sel].mean()) if sel.any() else float("nan"))
    return {"num_samples": G, "advantage": advantage, "problems": P, "groups": int(zero.size),
            "zero_spread": float(zero.mean()), "classes": [c for c, _, _ in DIFFICULTY], "count": count,
            "class_zero_spread": zs, "weight": w}


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `group_stats`."""
    w = dict(zip(stats["classes"], stats["weight"]))
    return (
        f"<b>group size G</b> = {stats['num_samples']} ({stats['groups']:,} groups from {stats['problems']} "
        f"problems) &nbsp;|&nbsp; advantage = {stats['advantage']} &nbsp;|&nbsp; zero-spread groups = "
        f"{stats['zero_spread']:.2f} &nbsp;|&nbsp; mean |A| of hard / medium / easy problems = {w['hard']:.2f} / "
        f"{w['medium']:.2f} / {w['easy']:.2f}"
    )


def grpo_panel(correct, *, num_samples: int = 2, advantage: str = "group"):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel"), on the samples `correct`.

    First control: the group size G (a selection slider over the `GROUP_SIZES` that divide the samples per
    problem). Then the advantage maker. Every change recomputes `group_stats` and redraws, per difficulty class,
    the zero-spread fraction (with the exact chance p^G + (1-p)^G of a group with success rate p having none) and
    the mean |advantage| (with `rloo`'s for reference); the readout has class "pg-readout".

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    n = np.asarray(correct).shape[1]
    sizes = [g for g in sorted({*GROUP_SIZES, int(num_samples)}) if n % g == 0 and g >= 2]
    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    g_slider = widgets.SelectionSlider(options=sizes, value=int(num_samples), description="group size G",
                                       continuous_update=False, style=style, layout=layout)
    adv = widgets.Dropdown(options=list(ADVANTAGES), value=advantage, description="advantage", style=style,
                           layout=layout)
    readout, out = readout_and_output()
    p = np.linspace(0, 1, 101)

    def update(*_):
        stats = group_stats(correct, g_slider.value, adv.value)
        ref = group_stats(correct, g_slider.value, "rloo")
        readout.value = format_readout(stats)
        x = np.arange(len(stats["classes"]))
        mid = [(low + high) / 2 for _, low, high in DIFFICULTY]
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(12, 3.3))
            axes[0].plot(p, p ** stats["num_samples"] + (1 - p) ** stats["num_samples"], color="0.6",
                         label="exact: $p^G + (1-p)^G$")
            axes[0].plot(mid, stats["class_zero_spread"], "o", color="C2", label="measured, per class")
            axes[0].set(xlabel="problem's success rate p", ylabel="fraction of groups", ylim=(-0.02, 1.02),
                        title=f"groups with zero spread (no signal), G = {stats['num_samples']}")
            axes[0].legend()
            axes[1].bar(x, stats["weight"], color="C0", label=stats["advantage"])
            if stats["advantage"] != "rloo":
                axes[1].plot(x, ref["weight"], "k_", markersize=30, mew=2, label="rloo")
            axes[1].set_xticks(x, [f"{c}\n({k})" for c, k in zip(stats["classes"], stats["count"])])
            axes[1].set(ylabel="mean |advantage|", title="weight per completion, by difficulty (problems)")
            axes[1].legend()
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    return panel([g_slider, adv], update, readout, out)
