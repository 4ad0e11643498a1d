"""Checked exercises of notebook 04 (policy gradient on a language model).

    from pgcore.exercises import nb04 as ex
    ex.completion_mask.check(completion_mask)    # also .hint(), .solution()

No model is loaded: the checks use small hand-made token ids and seeded logits, and compare with
`pgcore.lm` (its sampling and log-prob helpers; transformers is not imported).

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import torch

from .core import Exercise, WrongAnswer, fmt

__all__ = ["completion_mask", "per_token_logps", "kl_k3", "first_epoch_clip_frac", "EXERCISES"]


# --------------------------------------------------------------------------------------------
# 1. the completion mask: up to and including the first EOS (section 2)
# --------------------------------------------------------------------------------------------

def completion_mask_solution(completion_ids, eos_token_id):
    # (N, T) -> (N, T) long: 1 on every token up to and including the first EOS of its row, 0 after it;
    # a row without EOS (cut by max_new_tokens) is all ones
    is_eos = completion_ids == eos_token_id                               # (N, T)
    eos_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0        # an EOS strictly earlier in the row
    return (~eos_before).long()


def _mask_cases():
    return [
        (torch.tensor([[5, 7, 2, 0, 0], [3, 2, 4, 2, 9], [6, 6, 6, 6, 6]]), 2),  # pad 0; two EOS; no EOS
        (torch.tensor([[4, 1, 1, 1], [4, 5, 6, 1]]), 1),                          # the pad token is EOS
        (torch.tensor([[2, 5, 2], [8, 8, 2]]), 2),                                # EOS first; EOS last
    ]


def _mask_until_second(ids, eos):
    return ((ids == eos).long().cumsum(dim=1) <= 1).long()


def _mask_drops_eos(ids, eos):
    is_eos = ids == eos
    return (is_eos.long().cumsum(dim=1) == 0).long()


def _mask_by_value(ids, eos):
    return (ids != eos).long()


def _mask_argmax(ids, eos):
    first = (ids == eos).int().argmax(dim=1)  # 0 for a row without EOS
    return (torch.arange(ids.shape[1])[None, :] <= first[:, None]).long()


def _mask_oracle(ids, eos):
    from pgcore.lm.sampling import completion_mask as pg_completion_mask

    return pg_completion_mask(ids, eos)


completion_mask = Exercise(
    name="completion_mask",
    task="write completion_mask(completion_ids, eos_token_id) -> (N, T): 1 up to and including the first EOS",
    reference=completion_mask_solution,
    cases=_mask_cases,
    describe=lambda ids, eos: f"for completion_ids {fmt(ids)} and eos_token_id {eos}",
    checked="against pg.lm.sampling.completion_mask on 3 inputs (two EOS in a row, a row without EOS, "
            "pad = EOS, EOS first and last)",
    hint_text=("mark the EOS tokens, is_eos = ids == eos_token_id. A token is kept unless an EOS came strictly "
               "before it: count the EOS tokens before each position with a cumulative sum (minus the token's "
               "own). Build the mask from EOS, never from the pad token (the pad token may be EOS)."),
    wrong_answers=[
        WrongAnswer("after_eos", _mask_until_second,
                    "the completion mask keeps tokens after EOS (your mask runs on to the second EOS): everything "
                    "after the first EOS is padding, not part of the completion"),
        WrongAnswer("drops_eos", _mask_drops_eos,
                    "the completion mask drops the EOS token itself: keep it, sampling EOS is the policy's "
                    "decision to stop and has its own log-prob"),
        WrongAnswer("by_value", _mask_by_value,
                    "you masked by token value: every EOS is dropped and the tokens after it are kept"),
        WrongAnswer("argmax_no_eos", _mask_argmax,
                    "a row without EOS (cut by max_new_tokens) must be all ones: argmax of an all-False row "
                    "is 0, so check whether the row has an EOS at all"),
    ],
    oracle=_mask_oracle,
)


# --------------------------------------------------------------------------------------------
# 2. per-token log-probs from one forward pass: the shift by one (section 2)
# --------------------------------------------------------------------------------------------

def per_token_logps_solution(logits, input_ids, logits_to_keep):
    # logits: (B, L, V) of one forward pass over prompt + completion; input_ids: (B, L); the completion is
    # the last T = logits_to_keep tokens. The logit at position i predicts token i + 1.
    T = logits_to_keep
    logits = logits[:, -T - 1:-1]                            # (B, T, V): last position predicts nothing
    completion_ids = input_ids[:, -T:]                       # (B, T): the tokens those logits predict
    return logits.log_softmax(dim=-1).gather(-1, completion_ids[..., None]).squeeze(-1)   # (B, T)


def _logps_cases():
    g = torch.Generator().manual_seed(4)
    out = []
    for B, L, V, T in [(2, 5, 6, 3), (1, 4, 5, 1), (3, 6, 4, 4)]:
        out.append((torch.randn(B, L, V, generator=g) * 2, torch.randint(0, V, (B, L), generator=g), T))
    return out


def _logps_not_shifted(logits, ids, T):
    return logits[:, -T:].log_softmax(dim=-1).gather(-1, ids[:, -T:, None]).squeeze(-1)


def _logps_raw(logits, ids, T):
    return logits[:, -T - 1:-1].gather(-1, ids[:, -T:, None]).squeeze(-1)


def _logps_probs(logits, ids, T):
    return logits[:, -T - 1:-1].softmax(dim=-1).gather(-1, ids[:, -T:, None]).squeeze(-1)


def _logps_wrong_dim(logits, ids, T):
    return logits[:, -T - 1:-1].log_softmax(dim=1).gather(-1, ids[:, -T:, None]).squeeze(-1)


def _logps_oracle(logits, ids, T):
    from types import SimpleNamespace

    from pgcore.lm.algorithm import per_token_logps as pg_per_token_logps

    class FixedLogits(torch.nn.Module):  # a "causal LM" whose forward pass returns the given logits
        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
            return SimpleNamespace(logits=logits)

    batch = SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), completion_ids=ids[:, -T:])
    return pg_per_token_logps(FixedLogits(), batch)


def _logps_describe(logits, ids, T):
    return f"for seeded logits of shape {tuple(logits.shape)}, input_ids {fmt(ids)} and logits_to_keep {T}"


per_token_logps = Exercise(
    name="per_token_logps",
    task="write per_token_logps(logits, input_ids, logits_to_keep) -> (B, T) log pi(y_t | x, y_<t) of the completion",
    reference=per_token_logps_solution,
    cases=_logps_cases,
    describe=_logps_describe,
    checked="against pg.lm.algorithm.per_token_logps (a model returning these logits) on 3 inputs (T = 3, 1, 4)",
    hint_text=("the logit at position i is the distribution of token i + 1. The T completion tokens are "
               "input_ids[:, -T:]; the logits that predict them sit one position earlier, logits[:, -T-1:-1]. "
               "Then log_softmax over the vocabulary (dim=-1) and gather the chosen ids."),
    wrong_answers=[
        WrongAnswer("not_shifted", _logps_not_shifted,
                    "the log-probs are shifted by one: the logit at position i predicts token i + 1, so the "
                    "completion's log-probs come from logits[:, -T-1:-1], not logits[:, -T:]"),
        WrongAnswer("raw_logits", _logps_raw,
                    "you gathered raw logits, not log-probabilities: apply log_softmax over the vocabulary first"),
        WrongAnswer("probs", _logps_probs, "those are probabilities, not log-probabilities (log_softmax, not softmax)"),
        WrongAnswer("wrong_dim", _logps_wrong_dim,
                    "log_softmax over the wrong dimension: normalize over the vocabulary, dim=-1"),
    ],
    oracle=_logps_oracle,
    rtol=1e-4,
    atol=1e-5,
)


# --------------------------------------------------------------------------------------------
# 3. the k3 estimator of KL(pi || pi_ref) (Exercise 1)
# --------------------------------------------------------------------------------------------

def kl_k3_solution(logp, ref_logp):
    # per token, at tokens sampled from pi: rho = pi_ref / pi, k3 = rho - 1 - log(rho) >= 0, unbiased for
    # KL(pi || pi_ref) because E_pi[rho] = 1 (http://joschu.net/blog/kl-approx.html)
    log_rho = ref_logp - logp
    return torch.exp(log_rho) - 1 - log_rho


def _kl_cases():
    return [
        (torch.tensor([-1.2, -0.3, -2.5, -0.7]), torch.tensor([-1.0, -0.9, -2.0, -0.7])),
        (torch.tensor([[-0.1, -3.0, -1.5], [-2.2, -0.4, -0.9]]),
         torch.tensor([[-0.5, -2.0, -1.6], [-1.0, -1.1, -0.2]])),
    ]


def _kl_inverted(logp, ref_logp):
    log_r = logp - ref_logp
    return torch.exp(log_r) - 1 - log_r


def _kl_k1(logp, ref_logp):
    return logp - ref_logp


def _kl_k2(logp, ref_logp):
    return 0.5 * (logp - ref_logp) ** 2


def _kl_log_sign(logp, ref_logp):
    log_rho = ref_logp - logp
    return torch.exp(log_rho) - 1 + log_rho


def _kl_oracle(logp, ref_logp):
    import pgcore

    return pgcore.kl_k3(logp, ref_logp)


kl_k3 = Exercise(
    name="kl_k3",
    task="write kl_k3(logp, ref_logp) -> the per-token k3 estimate of KL(pi || pi_ref)",
    reference=kl_k3_solution,
    cases=_kl_cases,
    describe=lambda logp, ref: f"for logp {fmt(logp)} and ref_logp {fmt(ref)}",
    checked="against pg.kl_k3 on 2 inputs (one where pi = pi_ref on a token: k3 = 0 there)",
    hint_text=("with rho = pi_ref / pi, i.e. log rho = ref_logp - logp, k3 = rho - 1 - log rho. It is >= 0 "
               "for every token, and its mean under pi is KL(pi || pi_ref) because E_pi[rho] = 1."),
    wrong_answers=[
        WrongAnswer("inverted", _kl_inverted,
                    "your ratio is pi / pi_ref; k3 uses rho = pi_ref / pi (E_pi[rho] = 1 is what makes it unbiased "
                    "for KL(pi || pi_ref))"),
        WrongAnswer("k1", _kl_k1, "that is k1 = log(pi / pi_ref): unbiased but noisy, and negative on some tokens"),
        WrongAnswer("k2", _kl_k2, "that is k2 = (log rho)^2 / 2: low variance but biased"),
        WrongAnswer("log_sign", _kl_log_sign, "the sign of the log term is flipped: k3 = rho - 1 - log rho"),
    ],
    oracle=_kl_oracle,
)


# 4. predict, then check: PPO's clip on its first minibatch (section 5)

def first_epoch_clip_frac_solution():
    # before the first optimizer step on a batch, pi_theta IS pi_old: every ratio is exactly 1, inside
    # [1 - eps, 1 + eps], whatever the rewards (7 right, 1 wrong or any other group). The clip starts to act only
    # after updates have moved the policy, on the second minibatch or epoch
    return 0.0


first_epoch_clip_frac = Exercise(
    name="first_epoch_clip_frac",
    task="compute first_epoch_clip_frac: PPO's clip_frac (eps 0.2) on the first minibatch of its first epoch, "
         "for a group of 8 completions, 7 right and 1 wrong",
    reference=first_epoch_clip_frac_solution,
    cases=lambda: [()],
    describe=lambda: "for the first minibatch of the first epoch",
    checked="(every ratio is 1 before the first update)",
    hint_text="what is pi_theta / pi_old before the policy has taken a single step on this batch?",
    wrong_answers=[
        WrongAnswer("one_wrong", 0.125, "the rewards do not enter the ratio pi_theta / pi_old"),
        WrongAnswer("seven_right", 0.875, "the rewards do not enter the ratio pi_theta / pi_old"),
        WrongAnswer("all", 1.0, "a clipped token is one whose ratio left [0.8, 1.2]; where is the ratio before any step?"),
    ],
    value=True,
    imports="",
)

EXERCISES = [completion_mask, per_token_logps, kl_k3, first_epoch_clip_frac]
