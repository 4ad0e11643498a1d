"""The policy loss when one batch serves several updates: the importance ratio and what is done with it.

A batch sampled by pi_old is reused for mu updates (TRL's `num_iterations`). After the first update the
policy pi_theta is no longer the sampler, and the ratio pi_theta / pi_old reweights the samples:

    ratio_t   = pi_theta(y_t | .) / pi_old(y_t | .) = exp(logp - old_logp)          per token, (N, T)
    ratio_seq = exp( sum_t m_t (logp - old_logp) / sum_t m_t )                       GSPO, (N, 1)

and the per-token loss (to be aggregated with `pg.aggregate`) is one of

    pg     -A * logp                                   no ratio: REINFORCE on a stale batch once pi moved
    ppo    -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)    PPO; eps_high > eps_low: DAPO's clip-higher
    cispo  -sg[min(ratio, 1 + eps_high)] * A * logp    CISPO (MiniMax-M1): the weight is clipped and detached,
                                                       so no token loses its gradient; only the weight is capped

At ratio = 1 (the first update, or mu = 1) all three have the gradient of -A * logp, token by token; with
the sequence ratio the gradient of each completion is its A times the mean over its tokens of grad logp,
broadcast to its tokens, so after `pg.aggregate` it is again plain REINFORCE's (tests/test_surrogates.py).

TRL 1.x (`GRPOTrainer._compute_loss`): `coef_1` is `ratio`, `epsilon` / `epsilon_high` are eps_low / eps_high,
`importance_sampling_level` is `level`; `loss_type="cispo"` clamps `coef_1` at TRL's `epsilon_high`, an absolute
cap (ScaleRL's 5.0), which is 1 + eps_high here.
"""
from __future__ import annotations

import torch

from ._checks import check_number, check_same_shape

__all__ = ["POLICY_LOSSES", "RATIO_LEVELS", "SAMPLER_CORRECTIONS", "importance_ratio", "surrogate_loss", "ratio_stats",
           "sampler_weights"]

POLICY_LOSSES = ("pg", "ppo", "cispo")
RATIO_LEVELS = ("token", "sequence")
SAMPLER_CORRECTIONS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                     level: str = "token") -> torch.Tensor:
    """pi_theta / pi_old of the sampled tokens, with grad through `logp`: (N, T) per token, or GSPO's
    length-normalized sequence ratio exp(mean over the completion's tokens of log ratio), (N, 1).

    logp: (N, T) log-probs under the current policy; old_logp: (N, T) under the sampler (detached here);
    mask: (N, T) the completion mask. Entries after EOS of the token ratio mean nothing.
    """
    old_logp = check_same_shape(old_logp, "old_logp", logp, "logp").detach()
    log_ratio = logp - old_logp  # (N, T)
    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        m = check_same_shape(mask, "mask", logp, "logp").to(logp.dtype)
        return torch.exp((log_ratio * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1.0))
    raise ValueError(f"ratio level {level!r} unknown; accepted: {', '.join(RATIO_LEVELS)}")


def _bounds(clip_eps: float, clip_eps_high: float | None) -> tuple[float, float]:
    low = check_number(clip_eps, "clip_eps", gt=0, le=1)
    high = low if clip_eps_high is None else check_number(clip_eps_high, "clip_eps_high", gt=0)
    return low, high


def surrogate_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   kind: str = "ppo", clip_eps: float = 0.2, clip_eps_high: float | None = None,
                   level: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token policy loss of a reused batch (module docstring) and the ratio it used.

    Args:
        logp: (N, T) log pi_theta of the sampled completion tokens, with grad.
        old_logp: (N, T) the same under the policy that sampled them (detached).
        adv: (N,) one advantage per completion (detached).
        mask: (N, T) the completion mask (used here only by the sequence ratio).
        kind: pg, ppo or cispo. clip_eps: eps_low (ppo). clip_eps_high: eps_high (None: eps_low).
        level: token or sequence (GSPO).

    Returns:
        (per_token_loss (N, T), to aggregate with `pg.aggregate(per_token_loss, mask, how)`;
         ratio (N, T) or (N, 1), with grad).

    Introduced in notebooks/06_reusing_a_batch.ipynb.
    """
    if kind not in POLICY_LOSSES:
        raise ValueError(f"policy loss {kind!r} unknown; accepted: {', '.join(POLICY_LOSSES)}")
    low, high = _bounds(clip_eps, clip_eps_high)
    a = adv.detach()[:, None]  # (N, 1): a completion's advantage weighs all its tokens
    ratio = importance_ratio(logp, old_logp, mask, level)  # (N, T) or (N, 1)
    if kind == "pg":
        per_token = -a * logp
    elif kind == "ppo":
        per_token = -torch.minimum(ratio * a, torch.clamp(ratio, 1.0 - low, 1.0 + high) * a)
    else:  # cispo: the capped weight carries no gradient; grad log pi carries it all
        per_token = -torch.clamp(ratio, max=1.0 + high).detach() * a * logp
    return per_token.expand_as(logp), ratio


def ratio_stats(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                kind: str = "ppo", clip_eps: float = 0.2, clip_eps_high: float | None = None,
                level: str = "token") -> dict[str, float]:
    """What the ratio did in one update, as shares of the completion tokens (mask == 1):

        clip_low_frac   ppo: ratio < 1 - eps_low and A < 0 (clipped: no gradient); else 0
        clip_high_frac  ppo: ratio > 1 + eps_high and A > 0 (clipped: no gradient);
                        cispo: ratio > 1 + eps_high, either sign (the weight capped; TRL counts only A > 0)
        grad_token_frac tokens whose loss has a non-zero gradient: A != 0 and not clipped
        ratio_mean, ratio_min, ratio_max   the ratio used (token or sequence), over the tokens
        kl_old          KL(pi_old || pi_theta) by k3 per token: mean(ratio_t - 1 - log ratio_t) >= 0

    With the sequence ratio a clipped completion counts all its tokens.
    """
    with torch.no_grad():
        low, high = _bounds(clip_eps, clip_eps_high)
        on = mask.to(torch.bool)
        if not on.any():
            raise ValueError("mask selects no token; ratio_stats needs at least one completion token")
        a = adv.detach()[:, None].expand_as(logp)  # (N, T)
        log_ratio = logp.detach() - old_logp.detach()  # (N, T)
        ratio = importance_ratio(logp.detach(), old_logp, mask, level).expand_as(logp)  # (N, T)
        clipped_low = torch.zeros_like(on)
        clipped_high = torch.zeros_like(on)
        if kind == "ppo":
            clipped_low, clipped_high = (ratio < 1.0 - low) & (a < 0), (ratio > 1.0 + high) & (a > 0)
        elif kind == "cispo":
            clipped_high = ratio > 1.0 + high
        no_grad = clipped_low | clipped_high if kind == "ppo" else torch.zeros_like(on)
        r = ratio[on]
        share = lambda x: x[on].float().mean().item()  # noqa: E731
        return {"clip_low_frac": share(clipped_low), "clip_high_frac": share(clipped_high),
                "grad_token_frac": share((a != 0) & ~no_grad),
                "ratio_mean": r.mean().item(), "ratio_min": r.min().item(), "ratio_max": r.max().item(),
                "kl_old": (torch.exp(log_ratio) - 1.0 - log_ratio)[on].mean().item()}


def sampler_weights(old_logp: torch.Tensor, sampling_logp: torch.Tensor, mask: torch.Tensor,
                    mode: str = "token_truncate", clip_max: float | None = 3.0,
                    clip_min: float | None = None) -> tuple[torch.Tensor, float]:
    """Importance weights for a sampler that is not the policy (bf16 or top-k sampling, stale weights), and
    the share of completion tokens whose weight was truncated or masked.

        rho_t   = pi_old(y_t) / sampler(y_t) = exp(old_logp - sampling_logp)          token_* modes, (N, T)
        rho_seq = exp( sum_t m_t (old_logp - sampling_logp) )                           sequence_* modes, (N, 1)
        *_truncate: clamp(rho, clip_min, clip_max) (truncated IS);  *_mask: 0 outside [clip_min, clip_max], else rho

    Multiply the per-token policy loss by the (detached) weights before aggregating. TRL 1.x: its
    `vllm_importance_sampling_mode`, `vllm_importance_sampling_clip_max` / `_clip_min` (the sequence ratio is
    the sum of the log ratio there too, not GSPO's mean). Returns (weights (N, T) or (N, 1), share).

    Introduced in notebooks/06_reusing_a_batch.ipynb.
    """
    old_logp = check_same_shape(old_logp, "old_logp", sampling_logp, "sampling_logp").detach()
    m = check_same_shape(mask, "mask", sampling_logp, "sampling_logp").to(old_logp.dtype)
    if mode not in SAMPLER_CORRECTIONS:
        raise ValueError(f"sampler correction {mode!r} unknown; accepted: {', '.join(SAMPLER_CORRECTIONS)}")
    low = -float("inf") if clip_min is None else check_number(clip_min, "clip_min", ge=0)
    high = float("inf") if clip_max is None else check_number(clip_max, "clip_max", gt=max(low, 0.0))
    diff = (old_logp - sampling_logp.detach()) * m  # (N, T)
    rho = torch.exp(diff.sum(dim=1, keepdim=True) if mode.startswith("sequence") else diff)  # (N, 1) or (N, T)
    outside = (rho < low) | (rho > high)
    weights = rho.clamp(min=low, max=high) if mode.endswith("truncate") else rho.masked_fill(outside, 0.0)
    on = m.bool()
    share = outside.expand_as(on)[on].float().mean().item() if on.any() else 0.0
    return weights, share
