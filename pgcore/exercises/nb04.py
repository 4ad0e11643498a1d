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
from .predict import prediction

__all__ = ["completion_mask", "kl_penalty_length", "first_epoch_clip_frac", "wrong_label_samples", "k3_mean",
           "EXERCISES"]


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
# 2. one step beyond section 4: the mean of k3 over the policy's tokens
# --------------------------------------------------------------------------------------------

def k3_mean_solution(logits, ref_logits):
    # the exact mean of k3 = rho - 1 - log rho, rho = pi_ref / pi, over a token y ~ pi (a softmax over the
    # vocabulary): sum_y pi(y) k3(y). Since sum_y pi(y) rho(y) = sum_y pi_ref(y) = 1, the "rho - 1" part has mean 0
    # and what is left is E_pi[-log rho] = KL(pi || pi_ref): k3 is unbiased, and >= 0 on every token (k1 is not)
    logp, ref_logp = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    log_rho = ref_logp - logp
    return (logp.exp() * (log_rho.exp() - 1 - log_rho)).sum(dim=-1)


def _k3_cases():
    g = torch.Generator().manual_seed(4)
    lg = torch.randn(6, generator=g, dtype=torch.float64)
    return [
        (lg, lg + 0.3 * torch.randn(6, generator=g, dtype=torch.float64)),    # a policy close to the reference
        (lg, torch.randn(6, generator=g, dtype=torch.float64)),               # far from it
        (torch.randn(2, 5, generator=g, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64)),  # a batch
    ]


def _k3_under_ref(logits, ref_logits):
    logp, ref_logp = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    log_rho = ref_logp - logp
    return (ref_logp.exp() * (log_rho.exp() - 1 - log_rho)).sum(dim=-1)


def _k3_uniform(logits, ref_logits):
    log_rho = torch.log_softmax(ref_logits, dim=-1) - torch.log_softmax(logits, dim=-1)
    return (log_rho.exp() - 1 - log_rho).mean(dim=-1)


def _k3_inverted(logits, ref_logits):
    logp, ref_logp = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    log_r = logp - ref_logp                                   # pi / pi_ref: the ratio upside down
    return (logp.exp() * (log_r.exp() - 1 - log_r)).sum(dim=-1)


def _k3_oracle(logits, ref_logits):
    logp, ref_logp = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(dim=-1)   # KL(pi || pi_ref), exactly


k3_mean = Exercise(
    name="k3_mean",
    kind="beyond",
    task="write k3_mean(logits, ref_logits) -> the exact mean of k3 over tokens y ~ pi = softmax(logits)",
    reference=k3_mean_solution,
    cases=_k3_cases,
    describe=lambda lg, ref: f"for logits {fmt(lg)} and ref_logits {fmt(ref)}",
    checked="against KL(pi || pi_ref) = sum_y pi log(pi / pi_ref) on 3 inputs (close, far, a batch of 2)",
    hint_text=("k3 = rho - 1 - log rho with rho = pi_ref / pi per token; weigh each token's k3 by pi(y) and sum over "
               "the vocabulary (dim=-1). Expected: exactly KL(pi || pi_ref), whatever the two distributions."),
    wrong_answers=[
        WrongAnswer("under_ref", _k3_under_ref,
                    "you weighed the tokens by pi_ref: the tokens are sampled from the policy pi, so weigh by pi"),
        WrongAnswer("uniform", _k3_uniform,
                    "you averaged k3 over the vocabulary uniformly: a mean over y ~ pi weighs each token by pi(y)"),
        WrongAnswer("inverted", _k3_inverted,
                    "your ratio is pi / pi_ref; k3 uses rho = pi_ref / pi (E_pi[rho] = 1 is what makes it unbiased)"),
    ],
    oracle=_k3_oracle,
    rtol=1e-6,
    atol=1e-9,
)


# 3. predict, then check: PPO's clip on its first minibatch (section 5)

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
    kind="predict",
    imports="",
)


# --------------------------------------------------------------------------------------------
# predict, then run: what the KL penalty does to the length (section 4), the wrong label (section 6)
# --------------------------------------------------------------------------------------------

def kl_penalty_length_solution():
    # the penalty is the KL summed over the completion's tokens, and every token adds its own (on average
    # positive) log pi / pi_ref. A shorter completion pays less: ending early (an earlier EOS) is a cheap way to
    # raise the penalized reward. The reward model does not mind short texts, so the completions shrink
    return "shorter"


kl_penalty_length = prediction(
    "kl_penalty_length",
    "predict what a KL penalty in the reward (beta = 0.1, 0.5) does to the completions' length over training",
    kl_penalty_length_solution,
    {"longer": "the penalty is summed over tokens: each extra token adds its own KL, so a longer completion pays more",
     "unchanged": "the penalty is summed over tokens, so the length is one of the things the policy can change to "
                  "pay less: ending earlier",
     "shorter": None},
    checked="(the next cells assert it over 3 seeds: shorter than at the start, and shorter than without the penalty)",
    hint_text="the penalty is beta times the sum over the completion's tokens of log pi / pi_ref: how does that sum "
              "grow with the number of tokens?",
)


def wrong_label_samples_solution():
    # the policy climbs whatever number it is given. Read from index 1 of the flipped classifier, that number is
    # P(negative): the run's own "reward" rises while its samples turn negative, judged by the right label
    return "less positive"


wrong_label_samples = prediction(
    "wrong_label_samples",
    "predict the samples' P(positive), read by name, after training on the flipped classifier's index 1, "
    "against the same run with the right label",
    wrong_label_samples_solution,
    {"more positive": "index 1 of the flipped classifier is its 'negative' label: the policy learns to raise "
                      "P(negative)",
     "the same": "the policy climbs whatever number it is given, and here that number is P(negative)",
     "less positive": None},
    checked="(the next cell asserts a gap of more than 0.5 in P(positive))",
    hint_text="which label sits at index 1 of the flipped classifier, and what does the policy learn to raise?",
)

EXERCISES = [completion_mask, kl_penalty_length, first_epoch_clip_frac, wrong_label_samples, k3_mean]
