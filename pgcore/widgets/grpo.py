"""Notebook 05's short GRPO runs and panel: group size, beta and loss aggregation -> live held-out pass@1.

`short_run` is the plain function (tests and the notebook call it): a short `pgcore.engine.trainer.train` on a
*copy* of `tiny-arith` with the `arithmetic` verifier, returning the held-out pass@1 curve (evaluated every
`eval_every` steps on the same held-out problems), the fraction of zero-spread groups, and the lengths of
correct and incorrect completions. `grpo_panel` wraps it in ipywidgets: a group-size slider (the first
control), beta and the loss aggregation; a readout (class "pg-readout") and the curves.

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import copy

import numpy as np
from ._panel import panel, readout_and_output

__all__ = ["short_run", "format_readout", "grpo_panel", "GROUP_SIZES", "BETAS"]

GROUP_SIZES = (2, 4, 8, 16)
"""The group-size slider's stops (completions per prompt)."""
BETAS = (0.0, 0.01, 0.04, 0.1, 0.3)
"""The beta slider's stops (weight of the KL term)."""


def short_run(
    policy,
    *,
    num_samples: int = 8,
    kl_coef: float = 0.0,
    kl_in: str = "loss",
    kl_estimator: str = "k1",
    loss_aggregation: str = "token",
    advantage: str = "group",
    lr: float = 5e-4,
    steps: int = 40,
    batch_size: int | None = None,
    completions_per_step: int = 128,
    eval_every: int = 10,
    eval_problems: int = 128,
    eval_samples: int = 4,
    seed: int = 0,
) -> dict:
    """A short GRPO-style run of `policy` (a tiny-arith `Policy`, deep-copied first) with the arithmetic verifier.

    Args:
        policy: the starting policy (left untouched).
        num_samples: G, completions per prompt (the group).
        kl_coef, kl_in, kl_estimator: beta, where the KL acts (reward or loss), the estimator of the
            logged KL and of the reward penalty.
        loss_aggregation: token, sequence or constant.
        advantage: none, mean, rloo or group.
        lr: AdamW learning rate (constant).
        steps: optimizer steps.
        batch_size: prompts per step; None: completions_per_step // num_samples (the same compute for every G).
        eval_every, eval_problems, eval_samples: held-out pass@1 every this many steps, on this many
            held-out problems x samples (the same problems and sampling seed at every evaluation).
        seed: seeds the run: same arguments, same numbers.

    Returns:
        dict with the settings and
          "step", "reward_mean", "kl", "zero_spread", "len_correct", "len_incorrect", "loss": (steps,) arrays
              (NaN where a step had no correct / no incorrect completion);
          "eval_step", "pass1": held-out pass@1 after eval_step updates (0, eval_every, ..., steps);
          "pass1_first", "pass1_final": the starting and final model's held-out pass@1;
          "pass1_se": the standard error of one pass@1 value (binomial, over eval_problems x eval_samples);
          "zero_spread_mean": mean zero-spread fraction over the run's steps; "policy": the trained copy.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    from ..engine.config import LMConfig
    from ..engine.trainer import train
    from ..lm.arith import MAX_NEW_TOKENS
    from ..lm.rewards import ArithmeticReward

    if batch_size is None:
        batch_size = max(1, completions_per_step // int(num_samples))
    config = LMConfig(
        model=policy.name, reward_model="arithmetic", steps=steps, seed=seed, batch_size=batch_size,
        num_samples=num_samples, max_new_tokens=MAX_NEW_TOKENS, advantage=advantage, kl_coef=float(kl_coef),
        kl_in=kl_in, kl_estimator=kl_estimator, loss_aggregation=loss_aggregation, lr=float(lr),
        lr_scheduler="constant", eval_every=eval_every, eval_problems=eval_problems, eval_samples=eval_samples,
        output_dir=None, checkpoint_dir=None, model_dir=None,
    )  # validates every setting
    trained = copy.deepcopy(policy)
    result = train(config, policy=trained, reward=ArithmeticReward())
    hist = result.history

    def col(key):
        return np.array([np.nan if row.get(key) is None else row[key] for row in hist], dtype=float)

    evaluated = [(row["step"] - 1, row["heldout_pass1"]) for row in hist if row.get("heldout_pass1") is not None]
    eval_step = [s for s, _ in evaluated] + [steps]
    pass1 = [p for _, p in evaluated] + [result.summary["heldout_pass1_final"]]
    n = eval_problems * eval_samples
    return {
        "num_samples": int(num_samples), "kl_coef": float(kl_coef), "kl_in": kl_in, "loss_aggregation": loss_aggregation,
        "advantage": advantage, "lr": float(lr), "steps": int(steps), "batch_size": int(batch_size), "seed": int(seed),
        "step": col("step").astype(int), "reward_mean": col("reward_mean"), "kl": col("kl"), "loss": col("loss"),
        "zero_spread": col("zero_spread_frac"), "len_correct": col("len_correct"),
        "len_incorrect": col("len_incorrect"), "entropy": col("entropy"),
        "eval_step": np.array(eval_step), "pass1": np.array(pass1, dtype=float),
        "pass1_first": float(pass1[0]), "pass1_final": float(pass1[-1]),
        "pass1_se": float(np.sqrt(max(pass1[0] * (1 - pass1[0]), 1e-12) / n)),
        "zero_spread_mean": float(col("zero_spread_frac").mean()),
        "policy": trained,
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `short_run`.
    """
    inc = stats["len_incorrect"]
    inc_last = float(np.nanmean(inc[-10:])) if np.isfinite(inc[-10:]).any() else float("nan")
    return (
        f"<b>group size G</b> = {stats['num_samples']} ({stats['batch_size']} prompts per step) &nbsp;|&nbsp; "
        f"β = {stats['kl_coef']:g} (KL in {stats['kl_in']}), {stats['loss_aggregation']} aggregation, "
        f"{stats['steps']} steps &nbsp;|&nbsp; zero-spread groups (mean over the run) = {stats['zero_spread_mean']:.2f} "
        f"&nbsp;|&nbsp; held-out pass@1: start = {stats['pass1_first']:.3f}, end = {stats['pass1_final']:.3f} "
        f"(± {stats['pass1_se']:.3f}) &nbsp;|&nbsp; incorrect length (last 10 steps) = {inc_last:.2f} tokens"
    )


def grpo_panel(policy, *, num_samples: int = 2, kl_coef: float = 0.0, loss_aggregation: str = "token",
               steps: int = 30, lr: float = 5e-4, seed: int = 0, eval_every: int = 10):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel").

    First control: the group size G (a selection slider over `GROUP_SIZES`; prompts per step = 128 // G, so
    every setting samples the same number of completions). Then beta (KL in the loss, GRPO's k3) and the loss
    aggregation. Every change reruns `short_run` (a few seconds) and redraws held-out pass@1, the zero-spread
    fraction and the lengths of correct / incorrect completions against the step; the readout has class
    "pg-readout".

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from ..estimators import AGGREGATIONS as LOSS_AGGREGATIONS

    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    sizes = GROUP_SIZES if num_samples in GROUP_SIZES else tuple(sorted({*GROUP_SIZES, int(num_samples)}))
    g_slider = widgets.SelectionSlider(options=list(sizes), value=num_samples, description="group size G",
                                       continuous_update=False, style=style, layout=layout)
    betas = BETAS if kl_coef in BETAS else tuple(sorted({*BETAS, float(kl_coef)}))
    b_slider = widgets.SelectionSlider(options=list(betas), value=kl_coef, description="β (KL in loss)",
                                       continuous_update=False, style=style, layout=layout)
    agg = widgets.Dropdown(options=list(LOSS_AGGREGATIONS), value=loss_aggregation, description="loss aggregation",
                           style=style, layout=layout)
    readout, out = readout_and_output()

    def update(*_):
        stats = short_run(policy, num_samples=g_slider.value, kl_coef=b_slider.value, kl_in="loss",
                          loss_aggregation=agg.value, steps=steps, lr=lr, seed=seed, eval_every=eval_every)
        readout.value = format_readout(stats)
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
            se = stats["pass1_se"]
            axes[0].errorbar(stats["eval_step"], stats["pass1"], yerr=se, fmt="o-", capsize=3)
            axes[0].set(xlabel="updates", ylabel="held-out pass@1 (T = 1)", ylim=(0, 1), title="held-out pass@1")
            axes[1].plot(stats["step"], stats["zero_spread"], ".-", color="C2")
            axes[1].set(xlabel="step", ylabel="fraction of groups", ylim=(-0.02, 1.02),
                        title="groups with zero spread (no signal)")
            axes[2].plot(stats["step"], stats["len_correct"], ".-", label="correct", color="C0")
            axes[2].plot(stats["step"], stats["len_incorrect"], ".-", label="incorrect", color="C3")
            axes[2].set(xlabel="step", ylabel="tokens (EOS included)", title="completion length")
            axes[2].legend()
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    controls = [g_slider, b_slider, agg]
    return panel(controls, update, readout, out)
