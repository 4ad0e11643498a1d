"""Checked exercises of notebook 05 (verifiable rewards: pass@k, a verifier, GRPO and Dr. GRPO).

    from pgcore.exercises import nb05 as ex
    ex.pass_at_k.check(pass_at_k)    # also .hint(), .solution()

Self-contained: each exercise has its own reference implementation (none needs a model).

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import math

import torch

from .core import Exercise, WrongAnswer, fmt

__all__ = ["pass_at_k", "arithmetic_reward", "group_advantages", "aggregate_loss", "EXERCISES"]

EOS = "<|endoftext|>"
"""the EOS text the checks of `arithmetic_reward` use (a completion may run on past it)"""


# --------------------------------------------------------------------------------------------
# 1. the unbiased pass@k estimator (Chen et al. 2021, "Evaluating large language models trained on code")
# --------------------------------------------------------------------------------------------

def pass_at_k_solution(n, c, k):
    # n samples of a prompt, c of them correct: the probability that k samples drawn WITHOUT replacement
    # from these n hold at least one correct one = 1 - C(n - c, k) / C(n, k)
    if n - c < k:
        return 1.0                    # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _pass_cases():
    return [(10, 3, 1), (10, 3, 5), (10, 0, 3), (10, 10, 2), (5, 4, 3), (20, 2, 10)]


def _pass_plugin(n, c, k):
    return 1.0 - (1.0 - c / n) ** k


def _pass_at_1(n, c, k):
    return c / n


def _pass_comb_c(n, c, k):
    return 1.0 - math.comb(c, k) / math.comb(n, k)


def _pass_no_complement(n, c, k):
    return math.comb(n - c, k) / math.comb(n, k)


pass_at_k = Exercise(
    name="pass_at_k",
    task="write pass_at_k(n, c, k) -> the unbiased estimate of pass@k from n samples with c correct",
    reference=pass_at_k_solution,
    cases=_pass_cases,
    describe=lambda n, c, k: f"for n = {n} samples, c = {c} correct and k = {k}",
    checked="on 6 inputs (k = 1, no correct sample, all correct, n - c < k, n = 20)",
    hint_text=("count k-subsets of the n samples: there are C(n, k) of them (math.comb), and C(n - c, k) hold no "
               "correct sample. pass@k is the probability that a random k-subset holds at least one. When "
               "n - c < k every subset does."),
    wrong_answers=[
        WrongAnswer("plugin", _pass_plugin,
                    "that is the plug-in estimate 1 - (1 - c/n)^k: biased, it draws the k samples with "
                    "replacement; use 1 - C(n - c, k) / C(n, k)"),
        WrongAnswer("pass1", _pass_at_1, "that is pass@1, c/n, whatever k is"),
        WrongAnswer("comb_c", _pass_comb_c,
                    "C(c, k) counts the k-subsets of correct samples; pass@k needs the k-subsets with no correct "
                    "sample, C(n - c, k)"),
        WrongAnswer("no_complement", _pass_no_complement,
                    "that is the probability that all k samples fail; pass@k is 1 minus it"),
    ],
    imports="import math\n",
)


# --------------------------------------------------------------------------------------------
# 2. the arithmetic verifier
# --------------------------------------------------------------------------------------------

def arithmetic_reward_solution(completion, a, b, eos="<|endoftext|>"):
    # 1.0 when the completion's answer, up to the first EOS and the first newline, stripped of spaces,
    # is exactly str(a + b): no leading zeros, no "+", no extra text
    answer = completion.split(eos)[0].split("\n")[0].strip()
    return 1.0 if answer == str(a + b) else 0.0


def _arith_cases():
    return [
        ("12", 5, 7), (" 12 \nso the sum is 12", 5, 7), (f"12{EOS}99", 5, 7), ("-3", 2, -5), ("2\n2", 1, 1),
        ("012", 5, 7), ("12 apples", 5, 7), ("121", 5, 7), ("3 or 12", 5, 7), ("1", 5, 7), ("", 1, 1),
        ("12.0", 5, 7), ("+12", 5, 7),
    ]


def _arith_int(completion, a, b, eos=EOS):
    try:
        return 1.0 if int(completion.split(eos)[0].split("\n")[0].strip()) == a + b else 0.0
    except ValueError:
        return 0.0


def _arith_startswith(completion, a, b, eos=EOS):
    return 1.0 if completion.split(eos)[0].split("\n")[0].strip().startswith(str(a + b)) else 0.0


def _arith_contains(completion, a, b, eos=EOS):
    return 1.0 if str(a + b) in completion else 0.0


def _arith_no_newline(completion, a, b, eos=EOS):
    return 1.0 if completion.split(eos)[0].strip() == str(a + b) else 0.0


def _arith_no_eos(completion, a, b, eos=EOS):
    return 1.0 if completion.split("\n")[0].strip() == str(a + b) else 0.0


arithmetic_reward = Exercise(
    name="arithmetic_reward",
    task="write arithmetic_reward(completion, a, b, eos='<|endoftext|>') -> 1.0 if the completion answers "
         "a + b exactly, else 0.0",
    reference=arithmetic_reward_solution,
    cases=_arith_cases,
    describe=lambda completion, a, b: f"for the completion {completion!r} of {a}+{b}=",
    checked="on 13 completions (spaces, a newline, text after EOS, a negative sum, leading zeros, extra text, "
            "'12.0', '+12')",
    hint_text=("cut the completion at the first EOS, then at the first newline, strip the spaces, and compare "
               "the text with str(a + b). Do not parse it with int(): int('012') == 12 would reward an answer "
               "the task does not accept."),
    wrong_answers=[
        WrongAnswer("int_parse", _arith_int,
                    "your verifier accepts leading zeros and signs ('012' or '+12' for 12): compare the text with "
                    "str(a + b) exactly"),
        WrongAnswer("startswith", _arith_startswith,
                    "your verifier accepts extra text after the number ('12 apples', '121'): the whole first line "
                    "must be the answer"),
        WrongAnswer("contains", _arith_contains,
                    "you searched the whole completion for the answer: '3 or 12' passes, a reward a policy can "
                    "hack by listing numbers"),
        WrongAnswer("no_newline", _arith_no_newline,
                    "you did not cut at the first newline: the answer is the first line"),
        WrongAnswer("no_eos", _arith_no_eos,
                    "you did not cut at the first EOS: what follows it was never part of the completion"),
    ],
    imports="",
)


# --------------------------------------------------------------------------------------------
# 3. group advantages: GRPO and Dr. GRPO
# --------------------------------------------------------------------------------------------

def group_advantages_solution(rew, scale=True, eps=1e-4):
    # rew: (B, G), G completions of each prompt. GRPO: (r - group mean) / (group std + eps), sample std;
    # Dr. GRPO (scale=False): r - group mean, no division (the std reweights prompts by their difficulty)
    adv = rew - rew.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (rew.std(dim=1, keepdim=True) + eps)
    return adv


def _ga_cases():
    rew = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # 0/1 verifier rewards
    rew2 = torch.tensor([[0.5, 1.0], [0.0, 1.0]])
    return [(rew, True), (rew, False), (rew2, True), (rew2, False)]


def _ga_always_scale(rew, scale=True, eps=1e-4):
    return group_advantages_solution(rew, True, eps)


def _ga_never_scale(rew, scale=True, eps=1e-4):
    return group_advantages_solution(rew, False, eps)


def _ga_population(rew, scale=True, eps=1e-4):
    adv = rew - rew.mean(dim=1, keepdim=True)
    return adv / (rew.std(dim=1, keepdim=True, unbiased=False) + eps) if scale else adv


def _ga_batch(rew, scale=True, eps=1e-4):
    adv = rew - rew.mean()
    return adv / (rew.std() + eps) if scale else adv


group_advantages = Exercise(
    name="group_advantages",
    task="write group_advantages(rew, scale=True, eps=1e-4) -> (B, G): GRPO's (scaled) or Dr. GRPO's (unscaled) "
         "advantage",
    reference=group_advantages_solution,
    cases=_ga_cases,
    describe=lambda rew, scale: f"for rewards {fmt(rew)} (B = {rew.shape[0]}, G = {rew.shape[1]}) and scale={scale}",
    checked="on 4 inputs (0/1 rewards with an all-wrong group, G = 2, scale True and False)",
    hint_text=("per group (dim=1, keepdim=True): subtract the mean; with scale=True also divide by the sample "
               "std (torch's default) + eps. A group whose rewards are all equal teaches nothing: advantage 0."),
    wrong_answers=[
        WrongAnswer("always_scale", _ga_always_scale,
                    "with scale=False (Dr. GRPO) the advantage is r - group mean, without dividing by the std"),
        WrongAnswer("never_scale", _ga_never_scale,
                    "with scale=True (GRPO) divide by the group's std + eps: that is r - group mean only, Dr. GRPO's"),
        WrongAnswer("population_std", _ga_population,
                    "you used the population std (divides by G); GRPO uses the sample std (divides by G - 1)"),
        WrongAnswer("whole_batch", _ga_batch,
                    "you took the mean (and std) of the whole batch, not of each prompt's group"),
    ],
)


# --------------------------------------------------------------------------------------------
# 4. loss aggregation: token, sequence, constant (Dr. GRPO)
# --------------------------------------------------------------------------------------------

def aggregate_loss_solution(per_token_loss, mask, mode, max_new_tokens):
    # per_token_loss, mask: (B, T), mask 1 on completion tokens. Three ways to turn them into one number:
    mask = mask.float()
    if mode == "token":        # every token of the batch weighs the same: long completions weigh more
        return (per_token_loss * mask).sum() / mask.sum()
    if mode == "sequence":     # each completion's own token mean, then the mean over completions (GRPO)
        return ((per_token_loss * mask).sum(dim=1) / mask.sum(dim=1)).mean()
    if mode == "constant":     # Dr. GRPO: a constant normalizer, completions x max_new_tokens
        return (per_token_loss * mask).sum() / (mask.shape[0] * max_new_tokens)
    raise ValueError(f"unknown mode {mode!r}; accepted: token, sequence, constant")


def _agg_cases():
    g = torch.Generator().manual_seed(5)
    out = []
    for lengths, T, max_new in [((4, 1, 2), 4, 6), ((3, 3, 1, 2), 3, 3)]:
        loss = torch.randn(len(lengths), T, generator=g)
        mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
        out += [(loss, mask, mode, max_new) for mode in ("token", "sequence", "constant")]
    return out


def _agg_with(**override):
    def wrong(per_token_loss, mask, mode, max_new_tokens):
        if mode in override:
            return override[mode](per_token_loss, mask.float(), max_new_tokens)
        return aggregate_loss_solution(per_token_loss, mask, mode, max_new_tokens)
    return wrong


_agg_seq_as_token = _agg_with(sequence=lambda x, m, n: (x * m).sum() / m.sum())
_agg_seq_by_t = _agg_with(sequence=lambda x, m, n: ((x * m).sum(dim=1) / m.shape[1]).mean())
_agg_const_t = _agg_with(constant=lambda x, m, n: (x * m).sum() / m.numel())
_agg_const_tokens = _agg_with(constant=lambda x, m, n: (x * m).sum() / n)
_agg_token_unmasked = _agg_with(token=lambda x, m, n: x.mean())


def _agg_describe(per_token_loss, mask, mode, max_new_tokens):
    return (f"for mode {mode!r}, per_token_loss {fmt(per_token_loss, 2)}, mask {fmt(mask)} and "
            f"max_new_tokens {max_new_tokens}")


aggregate_loss = Exercise(
    name="aggregate_loss",
    task="write aggregate_loss(per_token_loss, mask, mode, max_new_tokens) for mode 'token', 'sequence', 'constant'",
    reference=aggregate_loss_solution,
    cases=_agg_cases,
    describe=_agg_describe,
    checked="on 6 inputs (each mode on two batches, one with max_new_tokens > T)",
    hint_text=("zero the padding with the mask first. token: divide the sum by the number of completion tokens. "
               "sequence: each row's sum by its own length (mask.sum(dim=1)), then the mean over rows. constant "
               "(Dr. GRPO): the sum divided by B * max_new_tokens, the same number for every batch."),
    wrong_answers=[
        WrongAnswer("sequence_as_token", _agg_seq_as_token,
                    "your 'sequence' aggregation is the token mean: average each completion over its own tokens "
                    "first, then over the completions"),
        WrongAnswer("sequence_by_t", _agg_seq_by_t,
                    "in 'sequence' mode each completion is divided by T, not by its own length mask.sum(dim=1)"),
        WrongAnswer("constant_longest", _agg_const_t,
                    "Dr. GRPO's constant is completions x max_new_tokens, not completions x the longest completion "
                    "of this batch (that changes from batch to batch)"),
        WrongAnswer("constant_tokens", _agg_const_tokens,
                    "the constant is completions x max_new_tokens; you divided by max_new_tokens only"),
        WrongAnswer("token_unmasked", _agg_token_unmasked,
                    "your 'token' mean counts the padding: divide the masked sum by mask.sum()"),
    ],
)

EXERCISES = [pass_at_k, arithmetic_reward, group_advantages, aggregate_loss]
