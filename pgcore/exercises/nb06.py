"""Checked exercises of notebook 06 (reusing a batch: the importance ratio, PPO's clip, the KL estimators' gradients,
a sampler that is not the policy).

    from pgcore.exercises import nb06 as ex
    ex.clipped_surrogate.check(clipped_surrogate)    # also .hint(), .solution()

Self-contained: each exercise has its own reference implementation (none needs a model); where pgcore has the
function (`pg.surrogate_loss`, `pg.sampler_weights`) the expected outputs come from it.

Introduced in notebooks/06_reusing_a_batch.ipynb.
"""
from __future__ import annotations

import torch

from ..surrogates import sampler_weights, surrogate_loss
from .core import Exercise, WrongAnswer, fmt
from .predict import prediction

__all__ = ["is_variance", "effective_sample_size", "clip_first_update", "clipped_surrogate", "k2_follows",
           "k2_loss_grad", "truncated_is_weights", "EXERCISES"]


# 1. the variance of one importance-sampled estimate (section 1)

def is_variance_solution(pi, pi_old, f):
    # a ~ pi_old, rho = pi(a) / pi_old(a): rho * f(a) is unbiased for E_pi[f] (its mean is sum pi f). Its variance
    # is E_{pi_old}[(rho f)^2] - (E_pi[f])^2: the second moment under the SAMPLER, minus the squared mean
    second_moment = (pi_old * (pi * f / pi_old) ** 2).sum()   # = sum pi^2 f^2 / pi_old: explodes where pi_old << pi
    return second_moment - (pi * f).sum() ** 2


def _is_cases():
    sm = lambda *x: torch.softmax(torch.tensor(x, dtype=torch.float64), dim=0)  # noqa: E731
    f64 = lambda *x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return [(sm(1.0, 0.0, -1.0), sm(0.0, 0.0, 0.0), f64(1.0, 2.0, 4.0)),
            (sm(2.0, 0.0, 0.0, -1.0), sm(-1.0, 0.5, 0.0, 1.0), f64(1.0, -1.0, 0.5, 2.0)),
            (sm(0.0, 3.0), sm(2.0, -1.0), f64(0.0, 1.0)),
            (sm(0.3, -0.2, 0.1), sm(0.3, -0.2, 0.1), f64(3.0, 1.0, -2.0))]  # pi_old = pi: on-policy


is_variance = Exercise(
    name="is_variance",
    kind="beyond",
    task="write is_variance(pi, pi_old, f) -> the exact variance of rho * f(a), a ~ pi_old, rho = pi(a) / pi_old(a)",
    reference=is_variance_solution,
    cases=_is_cases,
    describe=lambda pi, pi_old, f: f"for pi {fmt(pi)}, pi_old {fmt(pi_old)} and f {fmt(f)}",
    checked="on 4 distributions over 2-4 actions (one with pi_old = pi)",
    hint_text=("Var[X] = E[X^2] - E[X]^2 with X = rho * f(a) and a drawn from pi_old: E[X^2] = sum_a pi_old(a) "
               "(pi(a) f(a) / pi_old(a))^2, and E[X] = sum_a pi(a) f(a) (rho makes it unbiased). With pi_old = pi it "
               "is the on-policy variance; an action that pi_old rarely picks but pi likes makes it large."),
    wrong_answers=[
        WrongAnswer("no_mean", lambda pi, pi_old, f: (pi_old * (pi * f / pi_old) ** 2).sum(),
                    "that is the second moment E[(rho f)^2]; the variance subtracts the squared mean (sum pi f)^2"),
        WrongAnswer("outer_pi", lambda pi, pi_old, f: (pi * (pi * f / pi_old) ** 2).sum() - (pi * f).sum() ** 2,
                    "the actions are drawn from pi_old, so the expectation of (rho f)^2 weighs by pi_old, not by pi"),
        WrongAnswer("on_policy", lambda pi, pi_old, f: (pi * f ** 2).sum() - (pi * f).sum() ** 2,
                    "that is the on-policy variance of f under pi: sampling from pi_old and reweighting by rho changes "
                    "it (it is equal only when pi_old = pi)"),
        WrongAnswer("ratio_upside_down", lambda pi, pi_old, f: (pi_old * (pi_old * f / pi) ** 2).sum()
                    - (pi_old * f).sum() ** 2,
                    "your ratio is upside down: rho = pi(a) / pi_old(a), the target over the sampler"),
    ],
)


# 2. Kish's effective sample size of importance weights (section 1, one step beyond)

def effective_sample_size_solution(w):
    # w: (n,) importance weights of n samples. (sum w)^2 / sum w^2 is n for equal weights and 1 when one weight
    # carries everything: how many on-policy samples the reweighted batch is worth (Kish 1965)
    return (w.sum() ** 2 / (w ** 2).sum()).item()


def _ess_cases():
    g = torch.Generator().manual_seed(6)
    return [(torch.tensor([1.0, 1.0, 1.0, 1.0]),), (torch.tensor([0.5, 0.5, 3.0, 0.0, 1.0]),),
            (torch.exp(1.5 * torch.randn(50, generator=g)),), (torch.tensor([2.0, 2.0]),)]


effective_sample_size = Exercise(
    name="effective_sample_size",
    kind="beyond",
    task="write effective_sample_size(w) -> Kish's effective sample size of the importance weights w, (n,)",
    reference=effective_sample_size_solution,
    cases=_ess_cases,
    describe=lambda w: f"for weights {fmt(w[:6])}{' ...' if len(w) > 6 else ''} (n = {len(w)})",
    checked="on 4 sets of weights (equal ones, a zero, 50 log-normal ones)",
    hint_text=("(sum of the weights)^2 / (sum of the squared weights). It does not change when every weight is "
               "multiplied by the same number, it is n for equal weights and 1 when a single weight is non-zero."),
    wrong_answers=[
        WrongAnswer("inverted", lambda w: ((w ** 2).sum() / w.sum() ** 2).item(),
                    "that is 1 / ESS: the ESS is (sum w)^2 / sum w^2, between 1 and n"),
        WrongAnswer("n", lambda w: float(len(w)), "that is n, whatever the weights: unequal weights are worth fewer"),
        WrongAnswer("mean_one", lambda w: (len(w) / (w ** 2).mean()).item(),
                    "n / mean(w^2) assumes the weights average 1; (sum w)^2 / sum w^2 does not need it"),
    ],
)


# 3. PPO's clipped surrogate, per token (section 2)

def clipped_surrogate_solution(ratio, adv, eps_low, eps_high):
    # ratio: (N, T) pi / pi_old per token; adv: (N, 1), one advantage per completion. PPO keeps the smaller
    # (more pessimistic) of the plain and the clipped objective; the loss is minus it. eps_high > eps_low is
    # DAPO's clip-higher: a rare token whose probability the update raises may rise further before the clip
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    return -torch.minimum(ratio * adv, clipped * adv)         # (N, T)


def _surrogate_cases():
    r = torch.tensor([[0.5, 0.85, 1.0, 1.1, 1.25, 1.6], [0.7, 0.79, 0.95, 1.19, 1.3, 2.0]])
    g = torch.Generator().manual_seed(4)
    wide = torch.exp(0.4 * torch.randn(4, 5, generator=g))
    return [(r, torch.tensor([[1.5], [-0.5]]), 0.2, 0.2), (r, torch.tensor([[-1.0], [2.0]]), 0.2, 0.28),
            (wide, torch.tensor([[1.0], [-1.0], [0.5], [-2.0]]), 0.1, 0.4)]


def _surrogate_oracle(ratio, adv, eps_low, eps_high):
    per_token, _ = surrogate_loss(torch.log(ratio), torch.zeros_like(ratio), adv[:, 0], torch.ones_like(ratio),
                                     "ppo", eps_low, eps_high)
    return per_token


def _clip(ratio, lo, hi):
    return torch.clamp(ratio, 1 - lo, 1 + hi)


clipped_surrogate = Exercise(
    name="clipped_surrogate",
    task="write clipped_surrogate(ratio, adv, eps_low, eps_high) -> PPO's per-token loss, (N, T)",
    reference=clipped_surrogate_solution,
    oracle=_surrogate_oracle,
    cases=_surrogate_cases,
    describe=lambda ratio, adv, lo, hi: (f"for ratio {fmt(ratio, 2)}, adv {fmt(adv)}, eps_low {lo} and "
                                         f"eps_high {hi}"),
    checked="against pg.surrogate_loss on 3 inputs (both signs of A, ratios inside and outside the clip, "
            "eps_high = eps_low and clip-higher)",
    hint_text=("two candidates per token: ratio * adv and clamp(ratio, 1 - eps_low, 1 + eps_high) * adv; keep the "
               "smaller one (torch.minimum) and return minus it. adv is (N, 1), so it broadcasts over the tokens. "
               "Expected for ratio 1.6 and A = 1.5 with eps 0.2: -1.8 (the clipped 1.2 * 1.5)."),
    wrong_answers=[
        WrongAnswer("max", lambda r, a, lo, hi: -torch.maximum(r * a, _clip(r, lo, hi) * a),
                    "PPO keeps the minimum (the pessimistic bound) of the two objectives; the maximum lets the "
                    "ratio run wherever it pays"),
        WrongAnswer("clip_both", lambda r, a, lo, hi: -_clip(r, lo, hi) * a,
                    "that clips every token: PPO clips only where it helps the update (the min picks the unclipped "
                    "term when moving back towards ratio 1)"),
        WrongAnswer("symmetric", lambda r, a, lo, hi: -torch.minimum(r * a, _clip(r, lo, lo) * a),
                    "your clip range is symmetric, [1 - eps_low, 1 + eps_low]: the upper bound is 1 + eps_high"),
        WrongAnswer("sign", lambda r, a, lo, hi: torch.minimum(r * a, _clip(r, lo, hi) * a),
                    "the sign: that is the objective to maximize; the loss is minus it"),
        WrongAnswer("no_clip", lambda r, a, lo, hi: -r * a,
                    "no clip: that is the plain importance-weighted loss -ratio * A"),
    ],
)


# 4. which KL k2 in the loss follows (section 4)

def k2_loss_grad_solution(logits, ref):
    # a bandit: pi = softmax(logits), ref a probability vector, k2 = 1/2 (log pi - log ref)^2. With the sampling
    # distribution pi held fixed, grad sum_a pi(a) k2(a) = sum_a pi(a) d(a) grad log pi(a), d = log pi - log ref,
    # which is exactly grad KL(pi || ref) (the other part of that gradient, sum_a pi grad log pi, is 0).
    # For softmax logits, grad_j log pi(a) = [a = j] - pi(j)
    pi = torch.softmax(logits, dim=0)
    d = torch.log(pi) - torch.log(ref)
    return pi * (d - (pi * d).sum())


def _k2_cases():
    return [(torch.tensor([1.5, 0.0, -1.0]), torch.softmax(torch.tensor([0.0, 0.5, 0.0]), dim=0)),
            (torch.tensor([0.0, 2.0]), torch.tensor([0.5, 0.5])),
            (torch.tensor([0.3, -0.2, 0.1, 0.8]), torch.tensor([0.1, 0.2, 0.3, 0.4]))]


def _k2_undetached(logits, ref):
    theta = logits.clone().requires_grad_(True)
    pi = torch.softmax(theta, dim=0)
    return torch.autograd.grad((pi * 0.5 * torch.log(pi / ref) ** 2).sum(), theta)[0]


k2_loss_grad = Exercise(
    name="k2_loss_grad",
    kind="beyond",
    task="write k2_loss_grad(logits, ref) -> the gradient in the logits of E_{a~pi}[k2(a)], pi held fixed",
    reference=k2_loss_grad_solution,
    cases=_k2_cases,
    describe=lambda logits, ref: f"for logits {fmt(logits)} and ref {fmt(ref)}",
    checked="on 3 bandits (3, 2 and 4 arms)",
    hint_text=("either autograd: theta = logits.clone().requires_grad_(True), pi = softmax(theta), k2 = 0.5 * "
               "(log pi - log ref)^2, loss = (pi.detach() * k2).sum(), then torch.autograd.grad; or by hand: grad k2 "
               "= (log pi - log ref) grad log pi, and grad_j log pi(a) = [a = j] - pi(j) for softmax logits."),
    wrong_answers=[
        WrongAnswer("k3_reverse_kl", lambda logits, ref: torch.softmax(logits, dim=0) - ref,
                    "that is pi - ref, the gradient of KL(ref || pi): what k3 in the loss follows, not k2"),
        WrongAnswer("sign", lambda logits, ref: -k2_loss_grad_solution(logits, ref),
                    "the sign is flipped: this is the gradient of -KL(pi || ref)"),
        WrongAnswer("not_detached", _k2_undetached,
                    "you differentiated the sampling weights pi too: in the loss pi is where the samples came from, "
                    "held fixed (pi.detach())"),
        WrongAnswer("zero", lambda logits, ref: torch.zeros_like(logits),
                    "your gradient is 0, k1's in the loss (E[grad log pi] = 0); k2's gradient weighs grad log pi by "
                    "log pi - log ref, which depends on the action"),
    ],
)


# 5. truncated importance sampling for a sampler that is not the policy (section 5)

def truncated_is_weights_solution(old_logp, sampling_logp, mask, clip_max):
    # old_logp: (N, T) log pi_old of the sampled tokens (the policy being trained), sampling_logp: (N, T) the same
    # under the distribution that actually drew them (bf16, top-k, stale weights). Per token, the weight
    # pi_old / sampler, capped at clip_max (truncated IS: a little bias for a bounded variance); 0 off the mask
    rho = torch.exp(old_logp - sampling_logp)                  # (N, T)
    return torch.clamp(rho, max=clip_max) * mask               # (N, T)


def _tis_cases():
    g = torch.Generator().manual_seed(8)
    out = []
    for (N, T), lengths, scale, cap in [((2, 4), (4, 2), 0.6, 2.0), ((3, 5), (5, 3, 1), 1.2, 3.0),
                                         ((2, 3), (3, 3), 0.3, 1.1)]:
        old = -torch.rand(N, T, generator=g) * 3                # log-probs in (-3, 0]
        sampling = old + scale * torch.randn(N, T, generator=g)
        mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()
        out.append((old, sampling, mask, cap))
    return out


def _tis_oracle(old_logp, sampling_logp, mask, clip_max):
    weights, _ = sampler_weights(old_logp, sampling_logp, mask, "token_truncate", clip_max=clip_max)
    return weights * mask  # (N, T); sampler_weights leaves min(1, clip_max) off the mask, which the loss zeroes


def _tis_sequence(old_logp, sampling_logp, mask, clip_max):
    rho = torch.exp(((old_logp - sampling_logp) * mask).sum(dim=1, keepdim=True))
    return torch.clamp(rho, max=clip_max).expand_as(mask) * mask


truncated_is_weights = Exercise(
    name="truncated_is_weights",
    task="write truncated_is_weights(old_logp, sampling_logp, mask, clip_max) -> per-token truncated IS weights",
    reference=truncated_is_weights_solution,
    oracle=_tis_oracle,
    cases=_tis_cases,
    describe=lambda old, s, mask, cap: (f"for old_logp {fmt(old, 2)}, sampling_logp {fmt(s, 2)}, mask {fmt(mask)} "
                                        f"and clip_max {cap}"),
    checked="against pg.sampler_weights (token_truncate) on 3 batches, 0 off the mask",
    hint_text=("the ratio of the policy to the sampler, per token: exp(old_logp - sampling_logp); cap it with "
               "torch.clamp(..., max=clip_max) and multiply by the mask. TRL's vllm_importance_sampling_mode "
               "token_truncate is this weight."),
    wrong_answers=[
        WrongAnswer("upside_down", lambda o, s, m, c: torch.clamp(torch.exp(s - o), max=c) * m,
                    "your ratio is upside down: the weight is pi_old / sampler, exp(old_logp - sampling_logp)"),
        WrongAnswer("no_truncation", lambda o, s, m, c: torch.exp(o - s) * m,
                    "no truncation: cap the weights at clip_max (torch.clamp(rho, max=clip_max))"),
        WrongAnswer("sequence_product", _tis_sequence,
                    "that is one weight per completion, the product of its tokens' ratios (sequence_truncate); the "
                    "exercise asks for one weight per token"),
        WrongAnswer("no_mask", lambda o, s, m, c: torch.clamp(torch.exp(o - s), max=c),
                    "the entries after EOS are not completion tokens: multiply by the mask"),
    ],
)


# predict, then run: the clip on the first update (section 2), which KL k2 in the loss follows (section 4)

def clip_first_update_solution():
    # the first update on a fresh batch runs before the policy has moved: pi = pi_old exactly, so every ratio is 1,
    # inside [1 - eps_low, 1 + eps_high], and PPO's loss has plain REINFORCE's gradient. The clip can only act from
    # the second update on (the next cell prints each update's clipped share)
    return "none"


clip_first_update = prediction(
    "clip_first_update", "predict the share of tokens PPO clips on the first of mu updates on a fresh batch: "
    "none, some or half", clip_first_update_solution,
    {"some": "before the first update the policy has not moved: every ratio is exactly 1, inside the clip range",
     "half": "the ratio is exactly 1 on every token before the first update, so none lies outside the clip range",
     "none": None},
    checked="(the next cell prints the clipped share of each update: 0 for the first)",
    hint_text="what is pi / pi_old before the policy has taken any step on this batch?")


def k2_follows_solution():
    # k2 = 1/2 (log pi - log ref)^2 differentiated in the loss, the samples' pi held fixed, has the gradient
    # E_pi[(log pi - log ref) grad log pi] = grad KL(pi || ref) exactly (section 4's table: relative bias 0). k3 in
    # the loss follows KL(ref || pi) instead, and k1 in the loss has gradient 0 in expectation
    return "kl(pi||ref)"


k2_follows = prediction(
    "k2_follows", "predict which KL's gradient k2 in the loss follows in expectation: 'kl(pi||ref)', 'kl(ref||pi)' "
    "or 'neither'", k2_follows_solution,
    {"kl(ref||pi)": "that is k3 in the loss; k2's gradient is E_pi[(log pi - log ref) grad log pi] = "
                    "grad KL(pi || ref)",
     "neither": "k2 is a biased estimate of the KL's value, but its gradient in the loss is exactly grad KL(pi || ref)",
     "kl(pi||ref)": None},
    checked="(the next cell's table: k2 in the loss has relative bias 0 to grad KL(pi || ref))",
    hint_text="differentiate 1/2 (log pi - log ref)^2 and take the expectation under pi: compare with the gradient "
              "of sum_a pi(a) (log pi(a) - log ref(a)).")

EXERCISES = [is_variance, effective_sample_size, clip_first_update, clipped_surrogate, k2_follows, k2_loss_grad,
             truncated_is_weights]
