"""Notebook 03's measurements and panel: how noisy is each advantage estimator's gradient?

The measurement (`pgcore.variance`), at a fixed policy: many batches of episodes, one gradient estimate
per batch and per estimator, then the noise (trace of the covariance), the signal (an unbiased estimate of the
squared norm of the mean, `gradient_stats`), the bias against an unbiased estimator on the same
batches (`bias_stats`) and the direction (cosine to a high-sample reference gradient). To make that fast enough to redo live, the per-step scores
grad log pi(a_t|s_t) are computed once (`per_step_scores`, one row per step); a batch's estimate
for any advantage is then a weighted sum of rows (`batch_gradients`).

`VarianceLab` holds what is precomputed once (policy, critic, rollout, scores, reference);
`variance_stats` is the plain function (tests call it) that turns a setting of lambda, the
baseline, the PPO epochs and the clip into numbers; `variance_panel` wraps it in ipywidgets.
`pgcore.envs.grouped_cartpole` makes the CartPole batches of notebook 03's RLOO / GRPO section: G
episodes from each start state, as G completions of one prompt.

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_int, check_number, is_int
from ..estimators import normalize, ppo_clip_loss
from ..reinforce.rollout import Rollout, torch_threads
from ..returns import gae, reward_to_go
from ..variance import batch_gradients, bias_stats, gradient_stats, per_step_scores
from ._panel import panel, readout_and_output

__all__ = [
    "VarianceLab",
    "make_lab",
    "BASELINE_CHOICES",
    "lab_advantage",
    "ppo_epochs",
    "variance_stats",
    "format_readout",
    "variance_panel",
]

#: what V is in the panel's GAE(lambda): the learned critic, the batch's mean return, or nothing
BASELINE_CHOICES = {"value": "learned V(s)", "mean": "batch mean of G_t", "none": "none (V = 0)"}


@dataclass
class VarianceLab:
    """Everything the variance measurement precomputes once (see `make_lab`).

    policy       the fixed policy (obs -> Categorical)
    value_net    the critic V(s) fitted on separate rollouts
    batch        a Rollout with one episode per column, num_batches * episodes_per_batch columns
    gamma        the discount of every return and TD error
    episodes_per_batch  B: episodes in one batch (columns b*B ... b*B + B - 1 form batch b)
    num_batches  M
    scores       (S, P) per-step scores of batch's valid steps, column by column (so batch by batch):
                 the order of `x.T[batch.mask.T]` for a (T, N) tensor x
    batch_sizes  (M,) the number of steps in each batch
    reference    (P,) a high-sample estimate of the gradient (from other episodes)
    val, next_val  (T, N) V(s_t) and V(s_{t+1}) from value_net
    rtg          (T, N) the reward-to-go G_t
    """

    policy: torch.nn.Module
    value_net: torch.nn.Module
    batch: Rollout
    gamma: float
    episodes_per_batch: int
    num_batches: int
    scores: torch.Tensor
    batch_sizes: torch.Tensor
    reference: torch.Tensor
    val: torch.Tensor
    next_val: torch.Tensor
    rtg: torch.Tensor

    def steps(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N) -> (S,): the valid steps of x in the order of `scores` (column by column)."""
        if x.shape[:2] != self.batch.mask.shape:
            raise ValueError(f"expected a tensor shaped like the rollout {tuple(self.batch.mask.shape)}, got {tuple(x.shape)}")
        return x.transpose(0, 1)[self.batch.mask.T]

    def gradients(self, adv: torch.Tensor) -> torch.Tensor:
        """(M, P) batch estimates for the advantages `adv` (T, N)."""
        return batch_gradients(self.scores, self.steps(adv), self.batch_sizes, self.episodes_per_batch)

    def stats(self, adv: torch.Tensor) -> dict:
        """`gradient_stats` of the batch estimates for `adv` against the reference."""
        return gradient_stats(self.gradients(adv), self.reference)

    def unbiased_advantage(self) -> torch.Tensor:
        """(T, N) G_t - V(s_t): the reward-to-go minus the critic as a baseline, an unbiased advantage."""
        return torch.where(self.batch.mask, self.rtg - self.val, torch.zeros_like(self.rtg))

    def bias(self, adv: torch.Tensor) -> dict:
        """`bias_stats` of the batch estimates for `adv` against those of `unbiased_advantage`, batch by batch."""
        return bias_stats(self.gradients(adv), self.gradients(self.unbiased_advantage()))

    def batch_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N) -> (T, N): each valid step gets the mean of x over its batch's valid steps (0 elsewhere)."""
        mask = self.batch.mask
        per_batch = torch.stack([v.mean() for v in self.steps(x).split(self.batch_sizes.tolist())])   # (M,)
        column_mean = per_batch.repeat_interleave(self.episodes_per_batch)                            # (N,)
        return torch.where(mask, column_mean.expand_as(x), torch.zeros_like(x))


def make_lab(
    policy: torch.nn.Module,
    value_net: torch.nn.Module,
    batch: Rollout,
    reference: torch.Tensor,
    gamma: float,
    episodes_per_batch: int,
) -> VarianceLab:
    """Precompute the per-step scores, the critic's values and the batch of every step.

    Args:
        policy, value_net: the fixed policy and the fitted critic.
        batch: a Rollout with exactly one episode per column (e.g. `collect_rollout(make_env(..,
            num_envs=M*B), policy, M*B)`); columns are grouped into M batches of B episodes.
        reference: (P,) reference gradient, flattened in the order of `policy.parameters()`.
        gamma: discount in (0, 1].
        episodes_per_batch: B >= 1, dividing the number of columns.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    T, N = batch.mask.shape
    if batch.num_episodes != N:
        raise ValueError(f"batch must hold one episode per column, got {batch.num_episodes} episodes in {N} columns")
    if not is_int(episodes_per_batch) or episodes_per_batch < 1 or N % episodes_per_batch or N // episodes_per_batch < 2:
        raise ValueError(f"episodes_per_batch={episodes_per_batch!r} must be an int >= 1 dividing {N} columns into >= 2 batches")
    by_column = batch.mask.T                                                  # (N, T): steps column by column
    scores = per_step_scores(policy, batch.obs.transpose(0, 1)[by_column], batch.act.T[by_column])
    steps_per_column = batch.mask.sum(dim=0)                                  # (N,)
    with torch.no_grad():
        val = value_net(batch.obs).float()
        next_val = value_net(batch.next_obs).float()
    return VarianceLab(
        policy=policy, value_net=value_net, batch=batch, gamma=float(gamma), episodes_per_batch=episodes_per_batch,
        num_batches=N // episodes_per_batch, scores=scores,
        batch_sizes=steps_per_column.reshape(-1, episodes_per_batch).sum(dim=1),
        reference=reference.detach().reshape(-1).float(), val=val, next_val=next_val,
        rtg=reward_to_go(batch.rew, float(gamma), batch.done, batch.mask),
    )


def lab_advantage(lab: VarianceLab, lam: float, baseline: str = "value") -> torch.Tensor:
    """GAE(lambda) on the lab's rollout with V = the critic ("value"), each batch's mean G_t ("mean") or 0 ("none").

    lam = 1 gives G_t - V: the reward-to-go minus that baseline. Returns (T, N), 0 at masked steps.
    """
    b = lab.batch
    if baseline == "value":
        val, next_val = lab.val, lab.next_val
    elif baseline == "mean":
        val = lab.batch_mean(lab.rtg)
        next_val = val  # the same constant for the next state of the same episode
    elif baseline == "none":
        val = next_val = torch.zeros_like(lab.rtg)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; accepted: {', '.join(BASELINE_CHOICES)}")
    return gae(b.rew, val, b.done, lab.gamma, float(lam), next_val=next_val, terminated=b.terminated, mask=b.mask)


def ppo_epochs(
    policy: torch.nn.Module,
    obs: torch.Tensor,
    act: torch.Tensor,
    adv: torch.Tensor,
    *,
    epochs: int = 4,
    clip_eps: float | None = 0.2,
    lr: float = 1e-2,
    num_minibatches: int = 4,
    seed: int = 0,
) -> dict:
    """Reuse one batch for `epochs` passes of minibatch Adam steps on `pgcore.ppo_clip_loss`.

    A copy of `policy` is updated; the argument is left unchanged. After every epoch the whole
    batch is re-scored against the policy that sampled it.

    Args:
        policy: the policy that sampled the batch (pi_old).
        obs: (S, obs_dim), act: (S,), adv: (S,) the batch's steps and advantages.
        epochs: passes over the batch (>= 1); clip_eps: PPO's eps or None (no clip); lr: Adam's step size.
        num_minibatches: shuffled minibatches per pass; seed: seeds the shuffling.

    Returns:
        dict of (epochs,) float arrays "approx_kl" (k3 estimate of KL(pi_old || pi)), "ratio_min",
        "ratio_max", "clip_frac" (fraction of steps with |ratio - 1| > eps; 0 without a clip),
        each after that epoch, and "policy", the updated copy.
    """
    epochs = check_int(epochs, "epochs")
    new = copy.deepcopy(policy)
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        old_logp = policy(obs).log_prob(act)
    n = obs.shape[0]
    size = -(-n // num_minibatches)
    out = {k: [] for k in ("approx_kl", "ratio_min", "ratio_max", "clip_frac")}
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, size):
            idx = perm[i:i + size]
            loss, _ = ppo_clip_loss(new(obs[idx]).log_prob(act[idx]), old_logp[idx], adv[idx], clip_eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            _, s = ppo_clip_loss(new(obs).log_prob(act), old_logp, adv, clip_eps)
        for k in out:
            out[k].append(s[k])
    result = {k: np.asarray(v) for k, v in out.items()}
    result["policy"] = new
    return result


def variance_stats(
    lab: VarianceLab,
    lam: float = 0.95,
    baseline: str = "value",
    epochs: int = 4,
    clip_eps: float | None = 0.2,
    *,
    lr: float = 1e-2,
    lam_grid=(0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 1.0),
    ppo_batches: int = 1,
) -> dict:
    """The panel's numbers for one setting (deterministic: everything is precomputed in `lab`).

    Gradient noise of GAE(lam) with the chosen baseline (`lab_advantage`), over the lab's M
    batches, plus the same along `lam_grid` (a curve); and what `epochs` PPO-style passes with
    `clip_eps` over the first `ppo_batches` batches (advantages normalized) do to the policy.

    Returns:
        dict with the arguments, the keys of `gradient_stats` ("trace_cov", "noise_to_signal", "cos",
        "cos_of_mean", ...) and of `bias_stats` against G_t - V(s_t) ("rel_bias_sq", ...), "lam_grid" and "trace_grid" (arrays), "approx_kl", "ratio_min",
        "ratio_max", "clip_frac" (per-epoch arrays from `ppo_epochs`), "kl" (after the last epoch).

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    lam = round(check_number(lam, "lam", ge=0, le=1), 6)
    adv = lab_advantage(lab, lam, baseline)
    stats = {**lab.stats(adv), **lab.bias(adv)}
    grid = np.asarray(lam_grid, dtype=float)
    trace_grid = np.array([lab.stats(lab_advantage(lab, float(x), baseline))["trace_cov"] for x in grid])
    # the PPO part: the first batches' steps, their advantages for this setting, normalized
    b = lab.batch
    cols = slice(0, ppo_batches * lab.episodes_per_batch)
    mask = b.mask[:, cols]
    obs, act = b.obs[:, cols][mask], b.act[:, cols][mask]
    a = normalize(adv[:, cols][mask])
    with torch_threads(torch.device("cpu")):
        ppo = ppo_epochs(lab.policy, obs, act, a, epochs=epochs, clip_eps=clip_eps, lr=lr)
    return {
        "lam": lam, "baseline": baseline, "epochs": int(epochs), "clip_eps": clip_eps, "lr": lr,
        **stats,
        "lam_grid": grid, "trace_grid": trace_grid,
        "approx_kl": ppo["approx_kl"], "ratio_min": ppo["ratio_min"], "ratio_max": ppo["ratio_max"],
        "clip_frac": ppo["clip_frac"], "kl": float(ppo["approx_kl"][-1]),
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `variance_stats`."""
    clip = "no clip" if stats["clip_eps"] is None else f"clip ε = {stats['clip_eps']:.2f}"
    return (
        f"<b>GAE λ</b> = {stats['lam']:.2f}, baseline: {BASELINE_CHOICES[stats['baseline']]} &nbsp;|&nbsp; "
        f"gradient variance tr Cov = {stats['trace_cov']:.1f} (noise-to-signal {stats['noise_to_signal']:.3f}) &nbsp;|&nbsp; "
        f"mean cosine to the reference = {stats['cos']:.3f}, squared bias / ||g||² = {stats['rel_bias_sq']:.4f} "
        f"± {stats['rel_bias_sq_se']:.4f}"
        f" &nbsp;|&nbsp; PPO, {stats['epochs']} epochs, {clip}: approx KL = {stats['kl']:.4f}, "
        f"ratio in [{stats['ratio_min'][-1]:.2f}, {stats['ratio_max'][-1]:.2f}]"
    )


def variance_panel(lab: VarianceLab, lam: float = 0.95, baseline: str = "value", epochs: int = 4,
                   clip_eps: float | None = 0.2):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel").

    First control: GAE's lambda (0 to 1, steps of 0.01). Then the baseline (what V is), the PPO
    epochs and the clip eps ("off" = no clip). Every change recomputes `variance_stats` from the
    precomputed lab (well under 2 s) and redraws: tr Cov against lambda with the current point, and
    the approx KL after each PPO epoch; the readout (class "pg-readout") shows the numbers.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    lam_slider = widgets.FloatSlider(value=lam, min=0.0, max=1.0, step=0.01, description="GAE λ",
                                     readout_format=".2f", continuous_update=False, style=style, layout=layout)
    base = widgets.Dropdown(options=[(v, k) for k, v in BASELINE_CHOICES.items()], value=baseline,
                            description="baseline V", style=style, layout=layout)
    epoch_slider = widgets.IntSlider(value=epochs, min=1, max=20, description="PPO epochs",
                                     continuous_update=False, style=style, layout=layout)
    clip_options = [("off", None), ("0.05", 0.05), ("0.1", 0.1), ("0.2", 0.2), ("0.3", 0.3), ("0.5", 0.5)]
    clip = widgets.SelectionSlider(options=clip_options, value=clip_eps if clip_eps in dict(clip_options).values() else 0.2,
                                   description="clip ε", continuous_update=False, style=style, layout=layout)
    readout, out = readout_and_output()

    def update(*_):
        stats = variance_stats(lab, lam=lam_slider.value, baseline=base.value, epochs=epoch_slider.value,
                               clip_eps=clip.value)
        readout.value = format_readout(stats)
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
            axes[0].plot(stats["lam_grid"], stats["trace_grid"], "o-", markersize=4)
            axes[0].plot([stats["lam"]], [stats["trace_cov"]], "*", color="C3", markersize=14)
            axes[0].set(xlabel="GAE λ", ylabel="tr Cov of an 8-episode estimate",
                        title=f"gradient variance, baseline: {BASELINE_CHOICES[stats['baseline']]}")
            epochs_x = np.arange(1, stats["epochs"] + 1)
            axes[1].semilogy(epochs_x, np.maximum(stats["approx_kl"], 1e-8), "o-", color="C3", markersize=4)
            axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[1].set(xlabel="epoch over the same batch", ylabel="approx KL(π_old ‖ π)",
                        title="PPO: " + ("no clip" if stats["clip_eps"] is None else f"clip ε = {stats['clip_eps']}"))
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    controls = [lam_slider, base, epoch_slider, clip]
    return panel(controls, update, readout, out)
