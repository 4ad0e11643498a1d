"""Notebook 06's panel: one sampled batch, reused for mu updates -> how far the ratio, the clip and the policy move.

`reuse_stats` is the plain function (tests and the notebook call it). On ONE fixed sampled batch (no sampling at
redraw) it runs `pgcore.lm.algorithm.reuse_batch` on a fresh deep copy of the policy with a fresh AdamW: mu passes
over the batch, each loss with the ratio pi / pi_old (PPO's clip, CISPO or plain pg; per token or per sequence).
It returns, per update, what `pg.ratio_stats` saw before that update (clip fractions, the share of tokens with a
gradient, the ratio's range, KL(pi_old || pi) by k3), and after the last update: the KL of the final policy to
pi_old, its ratio on every token (or sequence), and how much the batch's rewarded and unrewarded completions
gained in log-probability. `reuse_panel` wraps it in ipywidgets: mu (the first control), eps_high, the ratio
level and the policy loss; a readout (class "pg-readout"), two plots and a table per update. A redraw trains:
about 0.5 s per update on 64 prompts x 8 samples of tiny-arith on one CPU core (mu = 8: about 5 s).
"""
from __future__ import annotations

import copy
import html

import numpy as np
import torch

import pgcore as pg
from ..lm import algorithm
from ._panel import panel, readout_and_output

__all__ = ["reuse_stats", "format_readout", "format_table", "reuse_panel", "UPDATES", "EPS_HIGH"]

UPDATES = (1, 2, 4, 8)
"""The mu slider's stops (optimizer passes over the one batch)."""
EPS_HIGH = (0.2, 0.5, 0.04)
"""The eps_high slider: (min, max, step)."""
_PER_UPDATE = ("clip_low_frac", "clip_high_frac", "grad_token_frac", "ratio_min", "ratio_max", "kl_old", "loss",
               "grad_norm")


def reuse_stats(policy, batch, rewards, *, updates: int = 1, clip_eps_high: float = 0.2, ratio_level: str = "token",
                policy_loss: str = "ppo", lr: float = 5e-4, clip_eps: float = 0.2, advantage: str = "group",
                num_samples: int | None = None, minibatches: int = 1, temperature: float = 1.0,
                optimizer_state: dict | None = None) -> dict:
    """mu = `updates` passes of `algorithm.reuse_batch` over `batch`, from a copy of `policy` (left untouched).

    Args:
        policy: a `pgcore.lm.Policy` (its model is pi_old, the sampler of `batch`, and the KL reference).
        batch: a `pgcore.lm.sampling.Batch` sampled from `policy` (e.g. `algorithm.sample(policy, prompts, args, 1)`).
        rewards: (N,) scores of the batch's completions (a verifier's 0/1).
        updates, clip_eps_high, ratio_level, policy_loss, lr, clip_eps, advantage, minibatches: as `algorithm.Args`
            (updates_per_batch, ...); no KL term. num_samples: G (None: the batch's). temperature: the sampling one.
        optimizer_state: an AdamW `state_dict()` of the run that made `policy` (a copy is loaded at every call), so
            the first update is a step in the middle of a run; None: a fresh AdamW, whose first step moves every
            weight by about lr.

    Returns: dict with the settings and
        "per_update": one dict per update (`reuse_batch`'s rows: pg.ratio_stats before the update, loss,
            grad_norm, epoch); "clip_low", "clip_high", "grad_token_frac", "ratio_min", "ratio_max", "kl_before",
            "loss", "grad_norm": (mu * minibatches,) arrays of the same;
        "kl_after": KL(pi_old || pi_final), k3 per completion token; "clipped_last": clip_low + clip_high of the
            last update (what its gradient lost; 0 for pg); "after": pg.ratio_stats of the final policy (what a
            next update would see);
        "ratio_after": the final ratio on every completion token (token level) or completion (sequence), numpy;
        "dlogp_rewarded", "dlogp_unrewarded": mean over those completions of sum_t (log pi_final - log pi_old),
            the log of how much likelier the whole completion became (NaN when there is none);
        "completions", "rewarded" (rewards > 0), "tokens".
    """
    G = batch.num_samples if num_samples is None else int(num_samples)
    N = len(batch)
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.shape != (N,):
        raise ValueError(f"rewards must have shape ({N},), one per completion of the batch, got {tuple(rewards.shape)}")
    if G < 1 or N % G:
        raise ValueError(f"num_samples {G} must divide the batch's {N} completions")
    args = algorithm.Args(steps=1, batch_size=N // G, num_samples=G, max_new_tokens=batch.completion_ids.shape[1],
                          temperature=temperature, advantage=advantage, kl_coef=0.0, updates_per_batch=updates,
                          minibatches=minibatches, policy_loss=policy_loss, clip_eps=clip_eps,
                          clip_eps_high=clip_eps_high, ratio_level=ratio_level, lr=lr)
    old_model = policy.model  # pi_old, the sampler: also the reference (no KL term here, so it only fills ref_logp)
    model = copy.deepcopy(old_model).eval()  # the same starting weights at every call
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if optimizer_state is not None:
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))  # a copy: AdamW updates its moments in place
        for group in optimizer.param_groups:
            group["lr"] = args.lr
    rows, _ = algorithm.reuse_batch(model, old_model, optimizer, batch, rewards, args)
    mask = batch.completion_mask  # (N, T)
    with torch.no_grad():
        old_logp = algorithm.per_token_logps(old_model, batch, args.temperature)  # (N, T)
        new_logp = algorithm.per_token_logps(model, batch, args.temperature)  # (N, T), after the last update
        adv, _ = algorithm.batch_advantages(old_logp, old_logp, rewards, mask, args)  # (N,), as reuse_batch's
        after = pg.ratio_stats(new_logp, old_logp, adv, mask, policy_loss, clip_eps, clip_eps_high, ratio_level)
        ratio = pg.importance_ratio(new_logp, old_logp, mask, ratio_level)  # (N, T) or (N, 1)
        ratio_after = ratio[mask.bool()] if ratio_level == "token" else ratio[:, 0]
        dlogp = ((new_logp - old_logp) * mask).sum(dim=1)  # (N,): log pi_final(y) - log pi_old(y), whole completions
    won = rewards > 0

    def mean(x):
        return x.mean().item() if x.numel() else float("nan")

    col = {k: np.array([r[k] for r in rows], dtype=float) for k in _PER_UPDATE}
    return {
        "updates": int(updates), "clip_eps": float(clip_eps), "clip_eps_high": float(clip_eps_high),
        "ratio_level": ratio_level, "policy_loss": policy_loss, "lr": float(lr), "advantage": advantage,
        "num_samples": G, "minibatches": int(minibatches),
        "per_update": rows, "clip_low": col["clip_low_frac"], "clip_high": col["clip_high_frac"],
        "grad_token_frac": col["grad_token_frac"], "ratio_min": col["ratio_min"], "ratio_max": col["ratio_max"],
        "kl_before": col["kl_old"], "loss": col["loss"], "grad_norm": col["grad_norm"],
        "kl_after": after["kl_old"], "clipped_last": float(col["clip_low_frac"][-1] + col["clip_high_frac"][-1]),
        "after": after, "ratio_after": ratio_after.numpy(),
        "dlogp_rewarded": mean(dlogp[won]), "dlogp_unrewarded": mean(dlogp[~won]),
        "completions": N, "rewarded": int(won.sum()), "tokens": int(mask.sum()),
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `reuse_stats` (stable labels: the browser test reads them)."""
    s = stats
    last = s["per_update"][-1]
    return (
        f"<b>updates μ</b> = {s['updates']} on {s['completions']} completions &nbsp;|&nbsp; policy loss = "
        f"{s['policy_loss']}, ratio per {s['ratio_level']}, ε_low = {s['clip_eps']:.2f}, ε_high = "
        f"{s['clip_eps_high']:.2f} &nbsp;|&nbsp; clipped (last update) = {s['clipped_last']:.3f} (low "
        f"{last['clip_low_frac']:.3f}, high {last['clip_high_frac']:.3f}) &nbsp;|&nbsp; tokens with gradient "
        f"(last update) = {last['grad_token_frac']:.3f} &nbsp;|&nbsp; <b>KL(π_old‖π) after</b> = "
        f"{s['kl_after']:.4f} &nbsp;|&nbsp; ratio after: min = {s['after']['ratio_min']:.3f}, max = "
        f"{s['after']['ratio_max']:.3f} &nbsp;|&nbsp; Δ log π per completion: rewarded = "
        f"{s['dlogp_rewarded']:+.3f}, unrewarded = {s['dlogp_unrewarded']:+.3f}"
    )


def format_table(stats: dict) -> str:
    """An HTML table, one row per update: what pg.ratio_stats saw before it."""
    head = ("update", "clipped low", "clipped high", "tokens with gradient", "ratio min", "ratio max",
            "KL(π_old‖π) before")
    rows = [f"<tr><td>{k + 1}</td>" + "".join(f"<td>{r[c]:.{d}f}</td>" for c, d in (
        ("clip_low_frac", 3), ("clip_high_frac", 3), ("grad_token_frac", 3), ("ratio_min", 3), ("ratio_max", 3),
        ("kl_old", 4))) + "</tr>" for k, r in enumerate(stats["per_update"])]
    cells = "".join(f"<th style='padding:0 0.6em'>{html.escape(h)}</th>" for h in head)
    return (f"<table style='font-family:monospace;font-size:12px;text-align:right'><tr>{cells}</tr>"
            f"{''.join(rows)}</table>")


def reuse_panel(policy, batch, rewards, *, updates: int = 1, clip_eps_high: float = 0.2, ratio_level: str = "token",
                policy_loss: str = "ppo", lr: float = 5e-4, clip_eps: float = 0.2, advantage: str = "group",
                num_samples: int | None = None, optimizer_state: dict | None = None):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel"), on one sampled batch.

    First control: mu, the updates per batch (a selection slider over `UPDATES`). Then eps_high, the ratio level
    (token / sequence) and the policy loss (ppo / cispo / pg). Every change reruns `reuse_stats` from the same
    starting weights and redraws the ratio's histogram after the last update (with the clip range) and, per
    update, the clipped shares and KL(pi_old || pi) before it; the readout has class "pg-readout".

    Introduced in notebooks/06_reusing_a_batch.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    mu = widgets.SelectionSlider(options=sorted({*UPDATES, int(updates)}), value=int(updates),
                                 description="updates per batch μ", continuous_update=False, style=style,
                                 layout=layout)
    lo, hi, step = EPS_HIGH
    eps_high = widgets.FloatSlider(value=clip_eps_high, min=min(lo, clip_eps_high), max=max(hi, clip_eps_high),
                                   step=step, description="ε_high (clip-higher)", readout_format=".2f",
                                   continuous_update=False, style=style, layout=layout)
    level = widgets.Dropdown(options=list(pg.RATIO_LEVELS), value=ratio_level, description="ratio level",
                             style=style, layout=layout)
    loss = widgets.Dropdown(options=["ppo", "cispo", "pg"], value=policy_loss, description="policy loss",
                            style=style, layout=layout)
    readout, out = readout_and_output()
    table = widgets.HTML()

    def update(*_):
        s = reuse_stats(policy, batch, rewards, updates=mu.value, clip_eps_high=eps_high.value,
                        ratio_level=level.value, policy_loss=loss.value, lr=lr, clip_eps=clip_eps,
                        advantage=advantage, num_samples=num_samples, optimizer_state=optimizer_state)
        readout.value = format_readout(s)
        table.value = "<b>per update (before it)</b>" + format_table(s)
        k = np.arange(1, len(s["per_update"]) + 1)
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(12, 3.3))
            r = s["ratio_after"]
            bins = np.geomspace(max(r.min(), 1e-3) * 0.95, r.max() * 1.05, 40)
            axes[0].hist(r, bins=bins, color="C0")
            for x in (1 - s["clip_eps"], 1 + s["clip_eps_high"]):
                axes[0].axvline(x, color="C3", ls="--", lw=1)
            axes[0].set(xscale="log", xlabel=f"π_final / π_old per {s['ratio_level']} (log scale)",
                        ylabel="count", title=f"ratio after μ = {s['updates']} updates (dashed: the clip range)")
            axes[1].bar(k, s["clip_low"], color="C0", label="clipped low (A < 0)")
            axes[1].bar(k, s["clip_high"], bottom=s["clip_low"], color="C1", label="clipped high (A > 0)")
            axes[1].set(xlabel="update", ylabel="share of completion tokens", xticks=k,
                        title="clipped before each update; KL(π_old‖π) before it")
            twin = axes[1].twinx()
            twin.plot(k, s["kl_before"], "o-", color="C3", label="KL(π_old‖π) before")
            twin.set(ylabel="KL (k3, per token)")
            twin.grid(False)
            lines = axes[1].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            axes[1].legend(lines, [h.get_label() for h in lines], loc="upper left", fontsize=8)
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    return panel([mu, eps_high, level, loss], update, readout, out, table)
