"""The policy-gradient estimator, once, and the advantage makers every notebook reuses.

The whole course is one idea: `loss = -mean(logp * adv)`. Its *value* means nothing, but for
data sampled from the current policy its *gradient* is the policy gradient. What changes from
notebook to notebook is where `logp` comes from (bandit arm, CartPole action, LM token) and how
`adv` is made (raw reward, reward-to-go, minus a baseline, leave-one-out, group-normalized).

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import torch

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
]


def _as_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


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
    logp = _as_tensor(logp, "logp")
    adv = _as_tensor(adv, "adv").detach()
    if adv.dim() == 1 and logp.dim() == 2 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None]  # (B,) -> (B, 1): one weight per sequence
    elif adv.shape != logp.shape:
        raise ValueError(
            f"adv shape {tuple(adv.shape)} does not match logp shape {tuple(logp.shape)}; "
            "accepted: the same shape, or (B,) for a (B, T) logp"
        )
    weighted = logp * adv
    if mask is None:
        if weighted.numel() == 0:
            raise ValueError("logp is empty; pg_loss needs at least one sample")
        return -weighted.mean()
    mask = _as_tensor(mask, "mask")
    if mask.shape != logp.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logp shape {tuple(logp.shape)}")
    mask = mask.to(weighted.dtype)
    return -(weighted * mask).sum() / mask.sum().clamp(min=1.0)


def mean_baseline(rew: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Advantage = reward minus the batch mean (over `dim`, or over everything).

    A constant baseline keeps the estimator unbiased because E[grad log pi] = 0 (notebook 01).
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    rew = _as_tensor(rew, "rew")
    if dim is None:
        return rew - rew.mean()
    return rew - rew.mean(dim=dim, keepdim=True)


def normalize(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantage normalization: (adv - mean) / (std + eps) over the whole batch.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    adv = _as_tensor(adv, "adv")
    if adv.numel() < 2:
        raise ValueError(f"normalize needs at least 2 advantages to estimate a std, got {adv.numel()}")
    return (adv - adv.mean()) / (adv.std() + eps)


def _check_groups(rew: torch.Tensor, name: str) -> torch.Tensor:
    rew = _as_tensor(rew, "rew")
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
    """k1 = log(pi/ref): unbiased for KL(pi || ref), high variance, can be negative per sample.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * log(pi/ref)^2: biased, low variance, always >= 0.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = ref/pi - 1 - log(ref/pi): unbiased for KL(pi || ref), low variance, always >= 0.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    log_r = ref_logp - logp
    return torch.exp(log_r) - log_r - 1.0


_KL = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-sample KL(pi || ref) estimate with estimator `kind` in {"k1", "k2", "k3"}.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if kind not in _KL:
        raise ValueError(f"unknown KL estimator {kind!r}; accepted: {', '.join(_KL)}")
    if logp.shape != ref_logp.shape:
        raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} does not match logp shape {tuple(logp.shape)}")
    return _KL[kind](logp, ref_logp)


# --------------------------------------------------------------------------------------------
# Notebook 03: the critic's advantages (TD error, GAE) and PPO's clipped surrogate
# --------------------------------------------------------------------------------------------
__all__ += ["td_error", "gae", "ppo_clip_loss"]


def _time_major(name: str, x, like: torch.Tensor, dtype=None) -> torch.Tensor | None:
    """`x` as a (T, N) tensor shaped like `like` (already 2-D), or None."""
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor shaped like rew {tuple(like.shape)}, got {type(x).__name__}")
    x2 = x[:, None] if x.dim() == 1 else x
    if x2.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(x.shape)} does not match rew shape; accepted: the shape of rew")
    return x2 if dtype is None else x2.to(dtype)


def _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap, fn: str):
    rew = _as_tensor(rew, "rew")
    if rew.dim() not in (1, 2):
        raise ValueError(f"{fn}: rew must have shape (T,) or (T, N), got {tuple(rew.shape)}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"{fn}: gamma must be a number in (0, 1], got {gamma!r}")
    squeeze = rew.dim() == 1
    rew2 = rew[:, None] if squeeze else rew
    val2 = _time_major("val", val, rew2, rew2.dtype).detach()
    if val2 is None:
        raise ValueError(f"{fn}: val is required (V(s_t) for every step), got None")
    done2 = _time_major("done", done, rew2, torch.bool)
    term2 = _time_major("terminated", terminated, rew2, torch.bool)
    mask2 = _time_major("mask", mask, rew2, torch.bool)
    next2 = _time_major("next_val", next_val, rew2, rew2.dtype)
    if term2 is not None and next2 is None:
        raise ValueError(f"{fn}: terminated needs next_val (V of the state after a truncated step); "
                         "accepted: both, or neither (then every done is terminal)")
    T, N = rew2.shape
    if next2 is None:  # V(s_{t+1}) = val[t+1] in the same column; after the last step: bootstrap (or 0)
        last = torch.zeros(N, dtype=rew2.dtype, device=rew2.device)
        if bootstrap is not None:
            last = last + torch.as_tensor(bootstrap, dtype=rew2.dtype, device=rew2.device).reshape(-1).expand(N)
        next2 = torch.cat([val2[1:], last[None]], dim=0)
    next2 = next2.detach()
    terminal = term2 if term2 is not None else done2  # after a terminal step the value is 0
    if terminal is not None:
        next2 = torch.where(terminal, torch.zeros_like(next2), next2)
    if mask2 is not None:
        rew2 = torch.where(mask2, rew2, torch.zeros_like(rew2))
    delta = rew2 + float(gamma) * next2 - val2
    if mask2 is not None:
        delta = torch.where(mask2, delta, torch.zeros_like(delta))
    return delta, done2, mask2, squeeze


def td_error(
    rew: torch.Tensor,
    val: torch.Tensor,
    done: torch.Tensor | None,
    gamma: float,
    *,
    next_val: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """One-step TD error delta_t = r_t + gamma * V(s_{t+1}) - V(s_t), with V = 0 after a terminal step.

    The advantage of the one-step actor-critic (`gae` with lam = 0). Arguments and shapes as in
    `gae`; returns a tensor shaped like `rew`, 0 at masked steps.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    delta, _, _, squeeze = _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap, "td_error")
    return delta[:, 0] if squeeze else delta


def gae(
    rew: torch.Tensor,
    val: torch.Tensor,
    done: torch.Tensor | None,
    gamma: float,
    lam: float,
    *,
    next_val: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Generalized advantage estimation, GAE(gamma, lambda) (Schulman et al. 2016, eq. 16).

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)            (V = 0 after a terminal step)
        A_t     = delta_t + gamma * lam * A_{t+1}              (backwards; restarted where done_t)
                = sum_{k >= 0} (gamma lam)^k delta_{t+k}       (to the end of step t's episode)

    lam = 0 gives the one-step TD error (`td_error`: the one-step actor-critic, low variance but
    biased by the critic's errors); lam = 1 gives G_t - V(s_t), the reward-to-go minus the value
    baseline (unbiased, high variance), when the episode ends in a terminal state. A_t + V(s_t)
    is the lambda-return, the usual target of the critic.

    Layout as in `pgcore.returns`: time-major (T, N), column n the episodes of env copy n, or (T,)
    for one column. Every tensor argument has the shape of `rew`.

    Args:
        rew: rewards r_t.
        val: V(s_t), the critic's value of the state at step t (treated as a constant: detached).
        done: bool, True where an episode ends at step t (terminated or truncated); None: no
            boundary in the column.
        gamma: discount in (0, 1].
        lam: lambda in [0, 1].
        next_val: V(s_{t+1}) of the state after step t (e.g. a ValueNet on `Rollout.next_obs`).
            None: val[t+1] of the same column, and `bootstrap` after the last step.
        terminated: bool, True where step t ended in a terminal state (nothing follows: V = 0).
            None: every `done` is terminal. Where done and not terminated (a time limit cut the
            episode), delta bootstraps with next_val, which must then be given.
        mask: bool, False for padding and autoreset steps (the output is 0 there; a masked step
            may only follow a done or another masked step). None: all steps are real.
        bootstrap: (N,) or a scalar: V after step T-1 for a column whose last episode is
            unfinished; used only when next_val is None (default 0).

    Returns:
        A_t, shaped and typed like `rew`.

    Introduced in notebooks/03_variance_reduction.ipynb.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"gae: lam must be a number in [0, 1], got {lam!r}")
    delta, done2, mask2, squeeze = _td_setup(rew, val, done, gamma, next_val, terminated, mask, bootstrap, "gae")
    decay = float(gamma) * float(lam)
    out = torch.empty_like(delta)
    running = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        if done2 is not None:  # an episode that ends at t sees no advantage after it
            running = torch.where(done2[t], torch.zeros_like(running), running)
        running = delta[t] + decay * running
        out[t] = running
    if mask2 is not None:
        out = torch.where(mask2, out, torch.zeros_like(out))
    return out[:, 0] if squeeze else out


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
    logp = _as_tensor(logp, "logp")
    old_logp = _as_tensor(old_logp, "old_logp").detach()
    adv = _as_tensor(adv, "adv").detach()
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp shape {tuple(old_logp.shape)} does not match logp shape {tuple(logp.shape)}")
    if adv.dim() == 1 and logp.dim() == 2 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None]  # (B,) -> (B, 1): one advantage per sequence
    elif adv.shape != logp.shape:
        raise ValueError(
            f"adv shape {tuple(adv.shape)} does not match logp shape {tuple(logp.shape)}; "
            "accepted: the same shape, or (B,) for a (B, T) logp"
        )
    if clip_eps is not None and (isinstance(clip_eps, bool) or not isinstance(clip_eps, (int, float))
                                 or not 0.0 < float(clip_eps) < 1.0):
        raise ValueError(f"clip_eps must be None or a number in (0, 1), got {clip_eps!r}")
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
        mask = _as_tensor(mask, "mask")
        if mask.shape != logp.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match logp shape {tuple(logp.shape)}")
        on = mask.to(torch.bool)
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


# --------------------------------------------------------------------------------------------
# Notebook 05: how per-token terms of a batch of completions become one number
# --------------------------------------------------------------------------------------------
__all__ += ["AGGREGATIONS", "aggregate"]

AGGREGATIONS = ("token", "sequence", "constant")


def aggregate(x: torch.Tensor, mask: torch.Tensor, how: str = "token", max_tokens: int | None = None) -> torch.Tensor:
    """Reduce per-token values x (N, T) of N completions to a scalar, counting only mask == 1 entries.

        token     sum_{i,t} m x / sum_{i,t} m                 mean over all completion tokens of the batch
                                                              (DAPO, TRL's default; `pg_loss` with a mask)
        sequence  (1/N) sum_i [sum_t m x / sum_t m]           mean within each completion, then over
                                                              completions (the original GRPO)
        constant  sum_{i,t} m x / (N * max_tokens)            a constant divisor (Dr. GRPO): every token
                                                              weighs the same, whatever the lengths

    With `sequence`, a token of a short completion weighs more than one of a long completion; with
    `token` every token of the batch weighs the same, but the weight depends on the batch's total
    length; `constant` makes it independent of both (Liu et al. 2025, "Understanding R1-Zero-like
    training"). `pg_loss(logp, adv, mask) == -aggregate(logp * adv, mask, "token")`.

    Args:
        x: (N, T) per-token values (e.g. logp * adv, or a per-token KL).
        mask: (N, T) 0/1, the completion mask.
        how: token, sequence or constant.
        max_tokens: the divisor's length for `constant` (the generation budget, max_new_tokens);
            default T.

    Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
    """
    x = _as_tensor(x, "x")
    mask = _as_tensor(mask, "mask")
    if x.dim() != 2 or mask.shape != x.shape:
        raise ValueError(f"x and mask must both be (N, T), got {tuple(x.shape)} and {tuple(mask.shape)}")
    m = mask.to(x.dtype)
    if how == "token":
        return (x * m).sum() / m.sum().clamp(min=1.0)
    if how == "sequence":
        return ((x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).mean()
    if how == "constant":
        length = x.shape[1] if max_tokens is None else max_tokens
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        return (x * m).sum() / (x.shape[0] * length)
    raise ValueError(f"aggregation {how!r} unknown; accepted: {', '.join(AGGREGATIONS)}")
