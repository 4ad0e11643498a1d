"""Checked exercises of notebook 05 (verifiable rewards: pass@k, GRPO and its variants).

    from pgcore.exercises import nb05 as ex
    ex.pass_at_k.check(pass_at_k)    # also .hint(), .solution()

Self-contained: each exercise has its own reference implementation (none needs a model).

Introduced in notebooks/05_verifiable_rewards_grpo.ipynb.
"""
from __future__ import annotations

import math

import torch

from .core import Exercise, WrongAnswer, fmt
from .predict import prediction

__all__ = ["pass64_after", "pass_at_k", "aggregate_loss", "group_weight", "k3_loss_grad", "dynamic_sampling_filter",
           "paired_se", "EXERCISES"]



# 1. the unbiased pass@k estimator (Chen et al. 2021, "Evaluating large language models trained on code")

def pass_at_k_solution(n, c, k):
    # n samples of a prompt, c of them correct: the probability that k samples drawn WITHOUT replacement
    # from these n hold at least one correct one = 1 - C(n - c, k) / C(n, k)
    if n - c < k:
        return 1.0                    # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _pass_cases():
    return [(10, 3, 1), (10, 3, 5), (10, 0, 3), (10, 10, 2), (5, 4, 3), (20, 2, 10)]


_pass_plugin = lambda n, c, k: 1.0 - (1.0 - c / n) ** k  # noqa: E731 (wrong answers, one line each)
_pass_at_1 = lambda n, c, k: c / n  # noqa: E731
_pass_comb_c = lambda n, c, k: 1.0 - math.comb(c, k) / math.comb(n, k)  # noqa: E731
_pass_no_complement = lambda n, c, k: math.comb(n - c, k) / math.comb(n, k)  # noqa: E731


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


# 2. loss aggregation: token, sequence, constant (Dr. GRPO)

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


# 3. DAPO's dynamic sampling: keep the groups that carry a signal (Yu et al. 2025)

def dynamic_sampling_filter_solution(rew):
    # rew: (B, G) verifier rewards of G completions per prompt. DAPO keeps a prompt only when its group is
    # neither all right nor all wrong: its advantages are then not all 0 (section 8)
    return rew.max(dim=1).values > rew.min(dim=1).values     # (B,) bool


def _dsf_cases():
    return [(torch.tensor(r),) for r in ([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                                          [0.0, 0.0, 1.0, 0.0]], [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
                                         [[0.5, 0.5, 0.5], [0.2, 0.7, 0.2]])]


dynamic_sampling_filter = Exercise(
    name="dynamic_sampling_filter",
    kind="beyond",
    task="write dynamic_sampling_filter(rew) -> (B,) bool: which prompts' groups DAPO keeps",
    reference=dynamic_sampling_filter_solution,
    cases=_dsf_cases,
    describe=lambda rew: f"for rewards {fmt(rew)}",
    checked="on 3 batches (all right, all wrong, G = 2, rewards other than 0/1)",
    hint_text=("a group carries a signal when its rewards are not all equal: compare each row's max with its min "
               "(dim=1). Expected for [[1, 0], [1, 1], [0, 0]]: [True, False, False]. A batch filtered this way "
               "needs more prompts sampled to stay full: DAPO samples until it is."),
    wrong_answers=[
        WrongAnswer("drops_all_wrong_only", lambda rew: rew.max(dim=1).values > 0,
                    "you dropped the all-wrong groups only: an all-right group has zero spread too (every "
                    "advantage 0)"),
        WrongAnswer("drops_all_right_only", lambda rew: rew.min(dim=1).values < 1,
                    "you dropped the all-right groups only: an all-wrong group has zero spread too"),
        WrongAnswer("inverted", lambda rew: rew.max(dim=1).values == rew.min(dim=1).values,
                    "that keeps exactly the groups with zero spread, the ones DAPO drops"),
        WrongAnswer("any_correct", lambda rew: (rew == 1).any(dim=1) & (rew == 0).any(dim=1),
                    "your test looks for a 1 and a 0: rewards need not be 0/1; test whether the rewards differ"),
    ],
)


# 4. a paired standard error: two models on the same problems

def paired_se_solution(c_after, c_before, n):
    # c_after, c_before: (P,) correct answers of each problem out of n samples, two models, the SAME problems.
    # The difference of pass@1 is the mean of the per-problem differences; its standard error is theirs, over
    # problems (each problem's difficulty cancels in its difference)
    d = (c_after - c_before) / n                               # (P,)
    return d.mean().item(), (d.std() / len(d) ** 0.5).item()  # sample std (P - 1)


def _pse_cases():
    a = torch.tensor([60.0, 2.0, 33.0, 10.0, 64.0, 0.0])
    b = torch.tensor([52.0, 0.0, 30.0, 12.0, 61.0, 0.0])
    g = torch.Generator().manual_seed(3)
    c = torch.randint(0, 17, (20,), generator=g).float()
    return [(a, b, 64), (c, torch.clamp(c + torch.randint(-3, 4, (20,), generator=g), 0, 16), 16)]


def _pse_unpaired(c_after, c_before, n):
    a, b = c_after / n, c_before / n                          # sqrt(se_a^2 + se_b^2)
    return (a.mean() - b.mean()).item(), ((a.var() / len(a) + b.var() / len(b)) ** 0.5).item()


def _pse_binomial(c_after, c_before, n):
    m = n * len(c_after)                                      # answers per model
    pa, pb = c_after.sum().item() / m, c_before.sum().item() / m
    return pa - pb, math.sqrt(pa * (1 - pa) / m + pb * (1 - pb) / m)


_pse_population = lambda a, b, n: (((a - b) / n).mean().item(),  # noqa: E731
                                   (((a - b) / n).std(unbiased=False) / len(a) ** 0.5).item())
_pse_no_sqrt = lambda a, b, n: (((a - b) / n).mean().item(), (((a - b) / n).std() / len(a)).item())  # noqa: E731


paired_se = Exercise(
    name="paired_se",
    kind="beyond",
    task="write paired_se(c_after, c_before, n) -> (difference of pass@1, its paired standard error)",
    reference=paired_se_solution,
    cases=_pse_cases,
    describe=lambda a, b, n: f"for c_after {fmt(a)}, c_before {fmt(b)} and n = {n}",
    checked="on 2 inputs (6 problems x 64 samples, 20 problems x 16)",
    hint_text=("per problem, d = (c_after - c_before) / n; return d.mean() and d.std() / sqrt(P) (torch's sample "
               "std). On section 4's counts this gives the table's +0.201 ± 0.022; unpaired, the same counts "
               "would give about ± 0.034."),
    wrong_answers=[
        WrongAnswer("unpaired", _pse_unpaired,
                    "that is the unpaired s.e., sqrt(se_a^2 + se_b^2): it counts each problem's difficulty twice; "
                    "the same problems answered by both models cancel it in the per-problem difference"),
        WrongAnswer("binomial", _pse_binomial,
                    "that treats the P x n answers as independent draws (binomial); answers to one problem share "
                    "its difficulty: take the s.e. over problems"),
        WrongAnswer("population_std", _pse_population,
                    "you used the population std (divides by P); use the sample std (divides by P - 1)"),
        WrongAnswer("no_sqrt", _pse_no_sqrt, "the standard error divides the std by sqrt(P), not by P"),
    ],
    imports="import math\n\nimport torch\n",
)


# 5. which KL k3 in the loss follows (section 7)

def k3_loss_grad_solution(logits, ref):
    # a bandit: pi = softmax(logits), ref a probability vector. GRPO's KL term, sum_a pi(a) k3(a) with the
    # sampling distribution pi held fixed, has the gradient sum_a pi (1 - ref/pi) grad log pi
    # = -sum_a ref(a) grad log pi(a) = grad KL(ref || pi), which for softmax logits is pi - ref
    return torch.softmax(logits, dim=0) - ref


def _k3_cases():
    return [(torch.tensor([1.5, 0.0, -1.0]), torch.softmax(torch.tensor([0.0, 0.5, 0.0]), dim=0)),
            (torch.tensor([0.0, 2.0]), torch.tensor([0.5, 0.5])),
            (torch.tensor([0.3, -0.2, 0.1, 0.8]), torch.tensor([0.1, 0.2, 0.3, 0.4]))]


def _k3_forward(logits, ref):
    theta = logits.clone().requires_grad_(True)
    pi = torch.softmax(theta, dim=0)
    return torch.autograd.grad((pi * torch.log(pi / ref)).sum(), theta)[0]


k3_loss_grad = Exercise(
    name="k3_loss_grad",
    kind="beyond",
    task="write k3_loss_grad(logits, ref) -> the gradient in the logits of E_{a~pi}[k3(a)], pi held fixed",
    reference=k3_loss_grad_solution,
    cases=_k3_cases,
    describe=lambda logits, ref: f"for logits {fmt(logits)} and ref {fmt(ref)}",
    checked="on 3 bandits (3, 2 and 4 arms)",
    hint_text=("either autograd: theta = logits.clone().requires_grad_(True), pi = softmax(theta), k3 = ref/pi - 1 "
               "- log(ref/pi), loss = (pi.detach() * k3).sum(), then torch.autograd.grad; or by hand: grad k3 = "
               "(1 - ref/pi) grad log pi, so the mean is -sum ref grad log pi, whose softmax form is short. The "
               "answer is not grad KL(pi || ref): section 7's cell prints both."),
    wrong_answers=[
        WrongAnswer("forward_kl", _k3_forward,
                    "that is the gradient of KL(pi || ref), the KL k3 estimates; k3 differentiated in the loss "
                    "follows KL(ref || pi)"),
        WrongAnswer("sign", lambda logits, ref: ref - torch.softmax(logits, dim=0),
                    "the sign is flipped: this is the gradient of -KL(ref || pi)"),
        WrongAnswer("zero", lambda logits, ref: torch.zeros_like(logits),
                    "your gradient is 0: E[grad log pi] is 0, but k3's gradient (1 - ref/pi) grad log pi is weighted "
                    "by a factor that depends on the action"),
    ],
)



# predict, then run: pass@64 after training (section 4), the weight of a rare right answer (section 6)

def pass64_after_solution():
    # GRPO makes the answers the model already finds more likely: pass@1 rises, the entropy falls. At k = 64 a
    # problem counts as solved if any of 64 samples is right, and a sharper model explores less: it loses more
    # problems it used to solve now and then than it gains (Yue et al. 2025). The next cell asserts the fall
    return "lower"


pass64_after = prediction(
    "pass64_after", "predict whether held-out pass@64 is higher, lower or unchanged after 150 GRPO steps",
    pass64_after_solution,
    {"higher": "pass@1 rises, but a sharper model explores less: at 64 samples it solves fewer problems",
     "unchanged": "at 64 samples the coverage changes too: the trained model solves fewer problems at least once",
     "lower": None},
    checked="(the next cell prints pass@k for k = 1 ... 64 and asserts that pass@64 fell)",
    hint_text="pass@64 counts a problem as solved if any of 64 samples is right: what does sharpening the "
              "distribution (lower entropy) do to the rare right answers?")


def group_weight_solution():
    # both makers give a group with 1 right of 8 less weight than one with 4 right (less spread), but `group`
    # divides by the std, about sqrt(p(1 - p)), small for p = 1/8: relative to rloo, it weighs 1 of 8 up most
    # (2.47 against 1.64 for 4 of 8, the next cell's exact table)
    return "1 of 8"


group_weight = prediction(
    "group_weight", "predict which group `group` weighs up most relative to `rloo`: 1 right of 8, 4 of 8, or "
    "neither (equal)", group_weight_solution,
    {"4 of 8": "in absolute terms 4 of 8 weighs most under both makers; relative to rloo, dividing by the std "
               "sqrt(p(1 - p)) weighs up the group where it is smallest",
     "equal": "rloo is Dr. GRPO's r - mean times G / (G - 1), so the ratio is 1 / std times a constant, and the "
              "std depends on how many are right",
     "1 of 8": None},
    checked="(the next cell's exact table: group / rloo is 2.47 at 1 of 8, 1.64 at 4 of 8)",
    hint_text="rloo is a constant times r - mean; group is (r - mean) / std. Where is the std of 0/1 rewards smallest?")

EXERCISES = [pass64_after, pass_at_k, aggregate_loss, group_weight, k3_loss_grad, dynamic_sampling_filter, paired_se]
