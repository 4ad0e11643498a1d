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


def as_tensor(x, name: str) -> torch.Tensor:
    """`x` itself when it is a tensor, else a one-line ValueError naming the argument."""
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
    logp = as_tensor(logp, "logp")
    adv = as_tensor(adv, "adv").detach()
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
    mask = as_tensor(mask, "mask")
    if mask.shape != logp.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logp shape {tuple(logp.shape)}")
    mask = mask.to(weighted.dtype)
    return -(weighted * mask).sum() / mask.sum().clamp(min=1.0)


def mean_baseline(rew: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Advantage = reward minus the batch mean (over `dim`, or over everything).

    A constant baseline keeps the estimator unbiased because E[grad log pi] = 0 (notebook 01).
    Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
    """
    rew = as_tensor(rew, "rew")
    if dim is None:
        return rew - rew.mean()
    return rew - rew.mean(dim=dim, keepdim=True)


def normalize(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantage normalization: (adv - mean) / (std + eps) over the whole batch.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    adv = as_tensor(adv, "adv")
    if adv.numel() < 2:
        raise ValueError(f"normalize needs at least 2 advantages to estimate a std, got {adv.numel()}")
    return (adv - adv.mean()) / (adv.std() + eps)


def _check_groups(rew: torch.Tensor, name: str) -> torch.Tensor:
    rew = as_tensor(rew, "rew")
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
# Notebook 05: how per-token terms of a batch of completions become one number
# --------------------------------------------------------------------------------------------
__all__ += ["AGGREGATIONS", "aggregate"]

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
    x = as_tensor(x, "x")
    mask = as_tensor(mask, "mask")
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
    if how == "sum":
        return (x * m).sum() / x.shape[0]
    raise ValueError(f"aggregation {how!r} unknown; accepted: {', '.join(AGGREGATIONS)}")


# Notebook 03's critic advantages and PPO's loss live in `pgcore.advantages`; these names stay here too,
# so `pgcore.pg.gae` keeps working.
from .advantages import gae, ppo_clip_loss, td_error  # noqa: E402,F401
