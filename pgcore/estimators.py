"""The policy-gradient estimator, once, the advantage makers every notebook reuses, and PPO's clipped loss.

The whole course is one idea: `loss = -mean(logp * adv)`. Its *value* means nothing, but for
data sampled from the current policy its *gradient* is the policy gradient. What changes from
notebook to notebook is where `logp` comes from (bandit arm, CartPole action, LM token) and how
`adv` is made (raw reward, reward-to-go, minus a baseline, leave-one-out, group-normalized), and,
with PPO, whether one batch serves several steps (`ppo_clip_loss`).
"""
from __future__ import annotations

import torch

from ._checks import as_tensor, check_int, check_number, check_same_shape

__all__ = [
    "pg_loss",
    "mean_baseline",
    "normalize",
    "rloo",
    "group_normalize",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_estimate",
    "AGGREGATIONS",
    "aggregate",
    "ppo_clip_loss",
]


def _per_sequence(adv: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """`adv` shaped like `logp`, or (B,) -> (B, 1) for a (B, T) `logp`: one weight per sequence."""
    if adv.dim() == 1 and logp.dim() == 2 and adv.shape[0] == logp.shape[0]:
        return adv[:, None]
    if adv.shape != logp.shape:
        raise ValueError(
            f"adv shape {tuple(adv.shape)} does not match logp shape {tuple(logp.shape)}; "
            "accepted: the same shape, or (B,) for a (B, T) logp"
        )
    return adv


def pg_loss(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Surrogate loss whose gradient, for on-policy samples, is minus the policy gradient.

    loss = -mean(logp * adv)                        (no mask)
    loss = -sum(logp * adv * mask) / sum(mask)      (mask: a token-level masked mean)

    Args:
        logp: log pi(a|s) of the sampled actions, any shape, e.g. (N,) or (B, T) per token.
        adv: advantages (weights), same shape as `logp`, or (B,) for a (B, T) `logp` (one
            weight per sequence, broadcast over its tokens). Treated as constants: detached.
        mask: optional 0/1 tensor shaped like `logp`; masked-out entries (padding, tokens after
            EOS, steps after an episode ended) contribute nothing.

    Returns:
        A scalar. Its value is not the objective J and says nothing about progress; log the
        reward or return instead (Spinning Up's warning).

    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    logp = as_tensor(logp, "logp")
    adv = _per_sequence(as_tensor(adv, "adv").detach(), logp)
    weighted = logp * adv
    if mask is None:
        if weighted.numel() == 0:
            raise ValueError("logp is empty; pg_loss needs at least one sample")
        return -weighted.mean()
    mask = check_same_shape(as_tensor(mask, "mask"), "mask", logp, "logp").to(weighted.dtype)
    return -(weighted * mask).sum() / mask.sum().clamp(min=1.0)


def mean_baseline(rew: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Advantage = reward minus the batch mean (over `dim`, or over everything).

    A constant baseline keeps the estimator unbiased because E[grad log pi] = 0 (notebook 01).
    """
    if dim is None:
        return rew - rew.mean()
    return rew - rew.mean(dim=dim, keepdim=True)


def normalize(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantage normalization: (adv - mean) / (std + eps) over the whole batch.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    if adv.numel() < 2:
        raise ValueError(f"normalize needs at least 2 advantages to estimate a std, got {adv.numel()}")
    return (adv - adv.mean()) / (adv.std() + eps)


def _check_groups(rew: torch.Tensor, name: str) -> torch.Tensor:
    if rew.dim() != 2:
        raise ValueError(f"{name} expects rewards shaped (num_prompts, num_samples), got shape {tuple(rew.shape)}")
    if rew.shape[1] < 2:
        raise ValueError(f"{name} needs num_samples >= 2 per group, got {rew.shape[1]}")
    return rew


def rloo(rew: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantage: r_i minus the mean of the *other* samples of its group.

    rew: (B, G) rewards, G >= 2 completions/episodes per prompt. adv_i = r_i - (sum_j r_j - r_i)/(G-1).
    The baseline excludes r_i, so it is independent of a_i and the estimate stays unbiased
    (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics").
    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    rew = _check_groups(rew, "rloo")
    g = rew.shape[1]
    loo_mean = (rew.sum(dim=1, keepdim=True) - rew) / (g - 1)
    return rew - loo_mean


def group_normalize(rew: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO-style advantage: (r - group mean) / (group std + eps), per prompt.

    rew: (B, G), G >= 2. std is the unbiased one, as in DeepSeekMath's GRPO and TRL.
    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    rew = _check_groups(rew, "group_normalize")
    mean = rew.mean(dim=1, keepdim=True)
    std = rew.std(dim=1, keepdim=True)
    return (rew - mean) / (std + eps)


# KL estimators from samples of the current policy, see http://joschu.net/blog/kl-approx.html
# log_ratio = logp - ref_logp, evaluated at tokens sampled from the policy.

def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log(pi/ref): unbiased for KL(pi || ref), high variance, can be negative per sample."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * log(pi/ref)^2: biased, low variance, always >= 0."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = ref/pi - 1 - log(ref/pi): unbiased for KL(pi || ref), low variance, always >= 0.

    Used through `kl_estimate` (kl_estimator "k3"); notebook 04's exercise `k3_mean` takes its mean exactly.
    """
    log_r = ref_logp - logp
    return torch.exp(log_r) - log_r - 1.0


_KL = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-sample KL(pi || ref) estimate with estimator `kind` in {"k1", "k2", "k3"}."""
    if kind not in _KL:
        raise ValueError(f"unknown KL estimator {kind!r}; accepted: {', '.join(_KL)}")
    check_same_shape(ref_logp, "ref_logp", logp, "logp")
    return _KL[kind](logp, ref_logp)


# how per-token terms of a batch of completions become one number (notebook 05)

AGGREGATIONS = ("token", "sequence", "constant", "sum")


def aggregate(x: torch.Tensor, mask: torch.Tensor, how: str = "token", max_tokens: int | None = None) -> torch.Tensor:
    """Reduce per-token values x (N, T) of N completions to a scalar, counting only mask == 1 entries.

        token     sum_{i,t} m x / sum_{i,t} m                 mean over all completion tokens of the batch
                                                              (DAPO, TRL's default; `pg_loss` with a mask)
        sequence  (1/N) sum_i [sum_t m x / sum_t m]           mean within each completion, then over
                                                              completions (the original GRPO)
        constant  sum_{i,t} m x / (N * max_tokens)            a constant divisor (Dr. GRPO): every token
                                                              weighs the same, whatever the lengths
        sum       (1/N) sum_i sum_t m x                        each completion's sum, mean over completions:
                                                              with x = A log pi, REINFORCE on log pi(y|x) =
                                                              sum_t log pi(y_t|.) (RLOO, TRL's RLOOTrainer)

    With `sequence`, a token of a short completion weighs more than one of a long completion; with
    `token` every token of the batch weighs the same, but the weight depends on the batch's total
    length; `constant` makes it independent of both (Liu et al. 2025, "Understanding R1-Zero-like
    training"). `sum` is `constant` times max_tokens: the same direction, a loss (and gradient) that
    many times larger, which matters under gradient-norm clipping (a fixed threshold clips the larger
    gradient more often). `pg_loss(logp, adv, mask) == -aggregate(logp * adv, mask, "token")`.

    Args:
        x: (N, T) per-token values (e.g. logp * adv, or a per-token KL).
        mask: (N, T) 0/1, the completion mask.
        how: token, sequence, constant or sum.
        max_tokens: the divisor's length for `constant` (the generation budget, max_new_tokens);
            default T.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    if x.dim() != 2 or mask.shape != x.shape:
        raise ValueError(f"x and mask must both be (N, T), got {tuple(x.shape)} and {tuple(mask.shape)}")
    m = mask.to(x.dtype)
    if how == "token":
        return (x * m).sum() / m.sum().clamp(min=1.0)
    if how == "sequence":
        return ((x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).mean()
    if how == "constant":
        length = check_int(x.shape[1] if max_tokens is None else max_tokens, "max_tokens")
        return (x * m).sum() / (x.shape[0] * length)
    if how == "sum":
        return (x * m).sum() / x.shape[0]
    raise ValueError(f"aggregation {how!r} unknown; accepted: {', '.join(AGGREGATIONS)}")


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    clip_eps: float | None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate as a loss to minimize, and what the ratio did (Schulman et al. 2017, eq. 7).

        ratio_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t) = exp(logp - old_logp)
        loss    = -mean( min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) )

    The data were sampled by pi_old; the ratio reweights them for the current policy (importance
    sampling), so one batch can serve several gradient steps. The min removes the incentive to move
    ratio_t beyond 1 +- eps in the direction A_t favours: once there, that sample's gradient is 0.
    clip_eps=None gives the unclipped surrogate -mean(ratio_t * A_t) (vanilla policy gradient reused
    over several epochs). At theta = theta_old (ratio = 1) both have the gradient of
    `pg_loss(logp, adv)`.

    Args:
        logp: log pi_theta(a_t|s_t) of the sampled actions under the current policy, with grad;
            any shape, e.g. (S,) steps or (B, T) tokens.
        old_logp: the same under the policy that sampled them (a constant: detached), shape of logp.
        adv: advantages, shape of logp, or (B,) for a (B, T) logp (one per sequence); detached.
        clip_eps: eps > 0 (PPO: 0.1 to 0.3), or None for no clipping.
        mask: optional 0/1 tensor shaped like logp; the loss and the stats use the masked entries only.

    Returns:
        (loss, stats): a scalar loss, and a dict of floats over the (masked) samples:
        "ratio_mean", "ratio_min", "ratio_max"; "clip_frac", the fraction with |ratio - 1| > eps
        (0 without a clip); "approx_kl" = mean((ratio - 1) - log ratio), the k3 estimate of
        KL(pi_old || pi_theta), always >= 0, see http://joschu.net/blog/kl-approx.html;
        "approx_kl_k1" = mean(-log ratio), the unbiased but noisier k1 estimate.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    old_logp = check_same_shape(old_logp.detach(), "old_logp", logp, "logp")
    adv = _per_sequence(adv.detach(), logp)
    check_number(clip_eps, "clip_eps", gt=0, lt=1, optional=True)
    if logp.numel() == 0:
        raise ValueError("logp is empty; ppo_clip_loss needs at least one sample")
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    surr = ratio * adv
    if clip_eps is not None:
        surr = torch.minimum(surr, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    if mask is None:
        on = torch.ones_like(logp, dtype=torch.bool)
        loss = -surr.mean()
    else:
        on = check_same_shape(mask, "mask", logp, "logp").to(torch.bool)
        m = mask.to(surr.dtype)
        loss = -(surr * m).sum() / m.sum().clamp(min=1.0)
    with torch.no_grad():
        r, lr_ = ratio[on], log_ratio[on]
        if r.numel() == 0:
            raise ValueError("mask selects no entry; ppo_clip_loss needs at least one sample")
        stats = {
            "ratio_mean": float(r.mean()),
            "ratio_min": float(r.min()),
            "ratio_max": float(r.max()),
            "clip_frac": 0.0 if clip_eps is None else float(((r - 1.0).abs() > clip_eps).to(r.dtype).mean()),
            "approx_kl": float(((r - 1.0) - lr_).mean()),  # k3, see http://joschu.net/blog/kl-approx.html
            "approx_kl_k1": float((-lr_).mean()),
        }
    return loss, stats
