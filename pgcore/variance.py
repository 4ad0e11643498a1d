"""Measuring a policy-gradient estimator: how noisy is it, how much signal does it carry, is it biased?

At a fixed policy: many batches, one gradient estimate per batch and per estimator. Per-step scores
grad log pi(a_t|s_t) are computed once (`per_step_scores`, one row per step); a batch's estimate for
any advantage is then a weighted sum of rows (`batch_gradients`). `gradient_stats` reports the noise
(tr Cov of one estimate), an *unbiased* estimate of the signal ||E g||^2 (||mean||^2 - tr Cov / M: the
squared norm of the mean of M noisy estimates is itself mostly noise when noise dominates, so the naive
ratio tr Cov / ||mean||^2 saturates near M) and their ratio; `bias_stats` the squared bias against an
unbiased estimator on the same (paired) batches. Notebooks 03 and 04 measure with these.

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import math

import torch


__all__ = ["per_step_scores", "batch_gradients", "group_gradients", "gradient_stats", "bias_stats"]


def per_step_scores(policy: torch.nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The score of every step, grad_theta log pi_theta(a_i|s_i), one flattened row per step.

    Args:
        policy: module, policy(obs (B, obs_dim)) -> Categorical.
        obs: (S, obs_dim) observations; act: (S,) actions.

    Returns:
        (S, P) float tensor, P = the number of policy parameters, columns in the order of
        `policy.parameters()` (each flattened). Computed with torch.func (vmap of grad), on the CPU.
    Notebook 03 uses them through `group_gradients` and `pg.widgets.variance.make_lab`.
    """
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in policy.named_parameters()}

    def logp_one(p, o, a):
        return functional_call(policy, p, (o[None],)).log_prob(a[None])[0]

    rows = vmap(grad(logp_one), in_dims=(None, 0, 0))(params, obs, act)
    return torch.cat([rows[k].reshape(obs.shape[0], -1) for k in params], dim=1)


def batch_gradients(
    scores: torch.Tensor,
    adv: torch.Tensor,
    batch_sizes,
    episodes_per_batch: int,
) -> torch.Tensor:
    """One policy-gradient estimate per batch: g_b = (1/B) sum over the steps i of batch b of adv_i * score_i.

    The textbook estimator: the mean over a batch's B episodes of sum_t A_t grad log pi(a_t|s_t).
    (`pg_loss` divides by the number of steps instead, a rescaling of each batch.)

    Args:
        scores: (S, P) from `per_step_scores`, rows grouped by batch: first the steps of batch 0,
            then those of batch 1, ...
        adv: (S,) the advantage of each step, in the same order.
        batch_sizes: (M,) ints, the number of steps of each batch (summing to S).
        episodes_per_batch: B, the number of episodes in each batch.

    Returns:
        (M, P) estimates.
    """
    sizes = [int(n) for n in (batch_sizes.tolist() if isinstance(batch_sizes, torch.Tensor) else batch_sizes)]
    if adv.shape != scores.shape[:1] or sum(sizes) != scores.shape[0]:
        raise ValueError(f"adv {tuple(adv.shape)} must be ({scores.shape[0]},) and batch_sizes must sum to {scores.shape[0]}, "
                         f"got {sum(sizes)}")
    adv = adv.to(scores.dtype)
    rows = [a @ s for a, s in zip(adv.split(sizes), scores.split(sizes))]  # (P,) per batch
    return torch.stack(rows) / episodes_per_batch


def group_gradients(policy: torch.nn.Module, rollout, group_size: int):
    """One policy-gradient estimate per group of episodes, for any advantage: returns `estimate(adv)`.

    rollout: one episode per column (`pgcore.reinforce.collect_rollout` with as many episodes as env copies,
    e.g. `pg.envs.grouped_cartpole`), the episodes of a group in consecutive columns. The scores are computed
    once; `estimate(adv)` is then g_k = (1/G) sum over the G episodes of group k of sum_t adv_t grad log pi(a_t|s_t),
    shape (N / G, P). adv: (N,) or (N / G, G), one number per episode (R(tau), RLOO, ...), or (T, N), one per step.

    Introduced in notebooks/03_variance_reduction.ipynb (section 5).
    """
    by_column = rollout.mask.T                                       # (N, T): each episode's steps, in order
    scores = per_step_scores(policy, rollout.obs.transpose(0, 1)[by_column], rollout.act.T[by_column])
    lengths = rollout.mask.sum(dim=0).tolist()
    per_episode = list(scores.split(lengths))                        # N tensors (T_n, P)
    sums = torch.stack([s.sum(dim=0) for s in per_episode])          # (N, P): sum_t grad log pi of each episode

    def estimate(adv: torch.Tensor) -> torch.Tensor:
        adv = torch.as_tensor(adv, dtype=scores.dtype)
        if adv.numel() == len(per_episode):                          # one advantage per episode
            g = adv.reshape(-1, 1) * sums
        elif adv.shape == rollout.mask.shape:                        # one advantage per step
            g = torch.stack([a @ s for a, s in zip(adv.T[by_column].split(lengths), per_episode)])
        else:
            raise ValueError(f"adv of shape {tuple(adv.shape)}; accepted: ({len(per_episode)},) per episode or "
                             f"{tuple(rollout.mask.shape)} per step")
        return g.reshape(-1, group_size, g.shape[1]).mean(dim=1)

    return estimate


def _sq_norm_of_mean(grads: torch.Tensor) -> tuple[float, float]:
    """Unbiased estimate of ||E g||^2 from M i.i.d. rows, and its jackknife standard error (nan if M < 3).

    The estimate is the mean over pairs i != j of g_i . g_j, which equals ||mean||^2 - tr Cov / M
    (sample covariance, ddof = 1): the squared norm of the mean minus what the noise adds to it.
    """
    x = grads.double()
    m = x.shape[0]
    gram = x @ x.T                                                     # (M, M) dot products
    diag = gram.diagonal()
    off = float(gram.sum() - diag.sum())                               # sum over i != j
    est = off / (m * (m - 1))
    if m < 3:
        return est, float("nan")
    left_out = (off - 2 * (gram.sum(dim=1) - diag)) / ((m - 1) * (m - 2))   # (M,) the estimate without row k
    se = math.sqrt((m - 1) / m * float(((left_out - left_out.mean()) ** 2).sum()))
    return est, se


def gradient_stats(grads: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
    """Noise, signal and direction of M independent gradient estimates (M, P), optionally against a reference (P,).

    One estimate g_b = g + noise_b. Over the M rows:
      "trace_cov": tr Cov, the sum over parameters of the sample variance (ddof = 1): the noise of one estimate;
      "signal": an unbiased estimate of ||E g||^2, ||mean||^2 - tr Cov / M (= mean over pairs i != j of
          g_i . g_j). ||mean||^2 alone is not: it also holds the mean's own noise, tr Cov / M;
      "signal_se": its standard error (jackknife; nan when M < 3); conservative: when the noise dominates
          it overstates the error, by up to about sqrt(2);
      "signal_significant": signal > 2 signal_se, i.e. the mean direction is measured at all;
      "noise_to_signal": tr Cov / signal, the scale-free noise of one estimate (inf when signal <= 0;
          read it as a rough lower bound when not signal_significant);
      "noise_to_signal_low": tr Cov / (signal + 2 signal_se), a lower bound of about 97.5 % confidence;
      "naive_ratio": tr Cov / ||mean||^2, the biased ratio: when the noise dominates it saturates near M;
      "cos_between": mean cosine between two different rows; in high dimension about
          ||E g||^2 / E||g||^2 = 1 / (1 + noise_to_signal), since E g_i . g_j = ||E g||^2;
      "mean_norm": ||mean||.
    With a reference: "cos", the mean over the rows of cos(g_b, reference) (how well one batch points the
    way), and "cos_of_mean", cos(mean, reference) (below 1 from bias, but also from the mean's and the
    reference's leftover noise: measure bias with `bias_stats`).

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    if grads.dim() != 2 or grads.shape[0] < 2 or (reference is not None and reference.shape != grads.shape[1:]):
        raise ValueError(f"grads must be (M >= 2, P) and reference None or (P,), got {tuple(grads.shape)} and "
                         f"{None if reference is None else tuple(reference.shape)}")
    m = grads.shape[0]
    x = grads.double()
    mean = x.mean(dim=0)
    trace = float(x.var(dim=0).sum())
    signal, se = _sq_norm_of_mean(x)
    mean_sq = float(mean.norm() ** 2)
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos_gram = unit @ unit.T
    out = {
        "trace_cov": trace,
        "signal": signal,
        "signal_se": se,
        "signal_significant": bool(signal > 2 * se),
        "noise_to_signal": trace / signal if signal > 0 else math.inf,
        "noise_to_signal_low": trace / (signal + 2 * se) if signal + 2 * se > 0 else math.inf,
        "naive_ratio": trace / mean_sq if mean_sq > 0 else math.inf,
        "cos_between": float((cos_gram.sum() - cos_gram.diagonal().sum()) / (m * (m - 1))),
        "mean_norm": math.sqrt(mean_sq),
    }
    if reference is not None:
        ref = reference.double()
        out["cos"] = float(torch.nn.functional.cosine_similarity(x, ref[None], dim=1).mean())
        out["cos_of_mean"] = float(torch.nn.functional.cosine_similarity(mean, ref, dim=0))
    return out


def bias_stats(grads: torch.Tensor, unbiased: torch.Tensor) -> dict:
    """How far the mean of an estimator is from that of an unbiased one, measured on the same batches.

    `grads` and `unbiased` are (M, P): row b of each is computed from the same batch b. The paired
    differences d_b = grads_b - unbiased_b have mean E d = the bias of `grads` (E unbiased = g), and
    `gradient_stats` of d estimates ||bias||^2 without the noise that inflates ||mean d||^2. Pairing
    cancels the noise the two estimators share, so small biases show.

    Returns a dict of floats:
      "bias_sq": unbiased estimate of ||E grads - g||^2 (can be < 0 by chance when the bias is ~0);
      "bias_sq_se": its standard error;
      "rel_bias_sq": bias_sq / ||g||^2 (||g||^2 estimated from `unbiased` the same way);
      "rel_bias_sq_se": bias_sq_se / ||g||^2.
    """
    if grads.shape != unbiased.shape:
        raise ValueError(f"grads and unbiased must have the same shape (M, P), got {tuple(grads.shape)} and {tuple(unbiased.shape)}")
    d = gradient_stats(grads.double() - unbiased.double())
    g = gradient_stats(unbiased)
    return {"bias_sq": d["signal"], "bias_sq_se": d["signal_se"],
            "rel_bias_sq": d["signal"] / g["signal"], "rel_bias_sq_se": d["signal_se"] / g["signal"]}
