"""Checked exercises of notebook 01 (the log-derivative trick on a bandit).

    from pgcore.exercises import nb01 as ex
    ex.exact_gradient.check(my_function)   # also .hint(), .solution()

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

import math

import torch

import pgcore as pg

from .core import Exercise, WrongAnswer, fmt
from .predict import prediction

__all__ = ["exact_gradient", "largest_variance_baseline", "estimator_mean", "per_entry_baseline", "samples_needed",
           "EXERCISES"]

F64 = torch.float64


def _t(*xs):
    return torch.tensor(xs, dtype=F64)


# --------------------------------------------------------------------------------------------
# 1. the exact gradient of a softmax bandit (Exercise 1: two arms)
# --------------------------------------------------------------------------------------------

def exact_gradient_solution(logits, rewards):
    # dJ/dtheta_i = pi_i (r_i - E_pi[r]); for two arms: pi_1 pi_2 (r_1 - r_2) and its negative
    pi = torch.softmax(logits, dim=0)      # (K,)
    return pi * (rewards - (pi * rewards).sum())


def _grad_cases():
    return [
        (_t(0.5, -1.0, 2.0), _t(1.0, 0.0, 0.5)),
        (_t(0.3, -0.2), _t(1.0, 3.0)),                    # two arms
        (_t(1.0, 0.0, -1.0), _t(1.0, 2.0, 4.0)),          # the notebook's running example
        (_t(0.0, 0.0, 0.0, 0.0), _t(1.0, -1.0, 2.0, 0.0)),  # uniform policy
    ]


def _grad_no_mean(logits, rewards):
    return torch.softmax(logits, dim=0) * rewards


def _grad_sign(logits, rewards):
    pi = torch.softmax(logits, dim=0)
    return pi * ((pi * rewards).sum() - rewards)


def _grad_no_pi(logits, rewards):
    pi = torch.softmax(logits, dim=0)
    return rewards - (pi * rewards).sum()


def _grad_unweighted(logits, rewards):
    pi = torch.softmax(logits, dim=0)
    score = torch.eye(len(logits), dtype=logits.dtype) - pi  # row a: e_a - pi
    return (score * rewards[:, None]).sum(dim=0)             # sum over arms, not E over a ~ pi


def _grad_oracle(logits, rewards):
    import pgcore.bandit

    return pgcore.bandit.exact_gradient(logits, rewards)


exact_gradient = Exercise(
    name="exact_gradient",
    task="write exact_gradient(logits, rewards) -> (K,), the gradient of J = sum_a softmax(logits)_a r_a",
    reference=exact_gradient_solution,
    cases=_grad_cases,
    describe=lambda logits, rewards: f"for logits {fmt(logits)} and rewards {fmt(rewards)}",
    checked="against pg.bandit.exact_gradient on 4 inputs (3 arms, 2 arms, the running example, a uniform policy)",
    hint_text=("step (5): dJ/dtheta_i = sum_a r_a d pi_a/d theta_i = pi_i (r_i - E_pi[r]). "
               "Compute pi = torch.softmax(logits, 0) first. With two arms pi_1 = sigmoid(theta_1 - theta_2) "
               "and the first entry is pi_1 pi_2 (r_1 - r_2)."),
    wrong_answers=[
        WrongAnswer("no_mean", _grad_no_mean,
                    "you left out the -E_pi[r] term: dJ/dtheta_i = pi_i (r_i - sum_b pi_b r_b), because raising "
                    "theta_i also lowers every other pi_b"),
        WrongAnswer("sign", _grad_sign, "the sign is flipped: this is -grad J, and a step along it descends"),
        WrongAnswer("no_pi", _grad_no_pi,
                    "the factor pi_i is missing: d pi_a/d theta_i = pi_a (1[a=i] - pi_i) carries a pi"),
        WrongAnswer("unweighted", _grad_unweighted,
                    "you summed the score (e_a - pi) r_a over the arms without weighting each arm by pi(a): "
                    "the gradient is an expectation over a ~ pi"),
    ],
    oracle=_grad_oracle,
)


# --------------------------------------------------------------------------------------------
# 2. the mean of the estimator with a baseline that may depend on the action (Exercise 2)
# --------------------------------------------------------------------------------------------

def estimator_mean_solution(logits, rewards, baseline):
    # E_{a ~ pi}[(r(a) - b(a)) grad log pi(a)], summed exactly over the arms; baseline: (K,), b(a) of each arm.
    # For a constant b it is grad J (E[grad log pi] = 0); for a b that depends on a it is not.
    pi = torch.softmax(logits, dim=0)                            # (K,)
    score = torch.eye(len(logits), dtype=logits.dtype) - pi      # (K arms, K logits): row a = e_a - pi
    return (pi[:, None] * (rewards - baseline)[:, None] * score).sum(dim=0)


def _mean_cases():
    lg, rw = _t(1.0, 0.0, -1.0), _t(1.0, 2.0, 4.0)
    return [
        (lg, rw, _t(1.5, 1.5, 1.5)),                       # a constant baseline: grad J
        (lg, rw, rw.clone()),                              # b = r(a): every estimate is 0
        (lg, rw, _t(0.0, 1.0, 3.0)),                       # some other action-dependent baseline
        (_t(0.5, -1.0, 2.0), _t(1.0, 0.0, 0.5), _t(2.0, -1.0, 0.0)),
    ]


def _mean_constant(logits, rewards, baseline):
    pi = torch.softmax(logits, dim=0)
    return pi * (rewards - (pi * rewards).sum())           # grad J, as if b were a constant


def _mean_no_pi(logits, rewards, baseline):
    pi = torch.softmax(logits, dim=0)
    score = torch.eye(len(logits), dtype=logits.dtype) - pi
    return ((rewards - baseline)[:, None] * score).sum(dim=0)


def _mean_sign(logits, rewards, baseline):
    return -estimator_mean_solution(logits, rewards, baseline)


estimator_mean = Exercise(
    name="estimator_mean",
    kind="beyond",
    task="write estimator_mean(logits, rewards, baseline) -> (K,) the exact mean of (r(a) - b(a)) grad log pi(a)",
    reference=estimator_mean_solution,
    cases=_mean_cases,
    describe=lambda logits, rewards, baseline: (f"for logits {fmt(logits)}, rewards {fmt(rewards)} and baseline "
                                                f"b(a) {fmt(baseline)}"),
    checked="on 4 inputs (a constant baseline gives grad J, b(a) = r(a) gives 0, two other per-arm baselines)",
    hint_text=("an expectation over the arms: sum_a pi(a) (r(a) - b(a)) (e_a - pi). Keep b(a) inside the sum, "
               "next to r(a): the argument 'b E[grad log pi] = 0' only holds when b does not depend on a."),
    wrong_answers=[
        WrongAnswer("constant_b", _mean_constant,
                    "you treated the baseline as a constant, but it depends on the action: "
                    "E[b(a) grad log pi(a)] = sum_a pi(a) b(a) (e_a - pi) is not 0, so such a baseline biases the "
                    "estimate"),
        WrongAnswer("no_pi", _mean_no_pi,
                    "the expectation is missing the weights pi(a): E[f(a)] = sum_a pi(a) f(a)"),
        WrongAnswer("sign", _mean_sign, "the sign is flipped: this is the mean of a descent direction"),
    ],
)


# --------------------------------------------------------------------------------------------
# 3. the per-entry optimal baseline (Exercise 3)
# --------------------------------------------------------------------------------------------

def per_entry_baseline_solution(logits, rewards, i):
    # Var_i(b) = E[(r(a) - b)^2 s_i(a)^2] - (dJ/dtheta_i)^2 with s(a) = e_a - pi: a parabola in b,
    # minimized at b_i* = E[r(a) s_i(a)^2] / E[s_i(a)^2], the expectations over a ~ pi
    pi = torch.softmax(logits, dim=0)                              # (K,)
    s_i = torch.eye(len(logits), dtype=logits.dtype)[:, i] - pi[i]  # (K,): entry i of e_a - pi, for every arm a
    w = pi * s_i**2                                                # pi(a) s_i(a)^2
    return (w * rewards).sum() / w.sum()


def _baseline_cases():
    ex = (_t(1.0, 0.0, -1.0), _t(1.0, 2.0, 4.0))
    return [
        (*ex, 0), (*ex, 1), (*ex, 2),
        (_t(0.5, -1.0, 2.0), _t(1.0, 0.0, 0.5), 1),
        (_t(4.0, 0.0, 0.0), _t(1.0, 2.0, 4.0), 2),        # Exercise 4's rare arms
    ]


def _baseline_total(logits, rewards, i):
    pi = torch.softmax(logits, dim=0)
    s = torch.eye(len(logits), dtype=logits.dtype) - pi
    w = pi * (s**2).sum(dim=1)
    return (w * rewards).sum() / w.sum()


def _baseline_mean(logits, rewards, i):
    return (torch.softmax(logits, dim=0) * rewards).sum()


def _baseline_no_pi(logits, rewards, i):
    pi = torch.softmax(logits, dim=0)
    w = (torch.eye(len(logits), dtype=logits.dtype)[:, i] - pi[i]) ** 2
    return (w * rewards).sum() / w.sum()


def _baseline_oracle(logits, rewards, i):
    import pgcore.bandit

    return pgcore.bandit.optimal_baseline(logits, rewards, component=i)


per_entry_baseline = Exercise(
    name="per_entry_baseline",
    kind="beyond",
    task="write per_entry_baseline(logits, rewards, i) -> b_i*, the baseline minimizing the variance of entry i",
    reference=per_entry_baseline_solution,
    cases=_baseline_cases,
    describe=lambda logits, rewards, i: f"for logits {fmt(logits)}, rewards {fmt(rewards)} and entry i = {i}",
    checked="against pg.bandit.optimal_baseline(logits, rewards, component=i) on 5 inputs (every entry of the "
            "running example, the rare-arm logits [4, 0, 0])",
    hint_text=("entry i of one estimate is (r(a) - b) s_i(a) with s(a) = e_a - pi. Its variance is "
               "E[(r - b)^2 s_i^2] - (dJ/dtheta_i)^2, a parabola in b: set its derivative to 0. "
               "Entry i of e_a - pi is 1[a = i] - pi_i."),
    wrong_answers=[
        WrongAnswer("total", _baseline_total,
                    "that is section 4's b* for the total variance: for entry i alone, weight arm a by "
                    "pi(a) (1[a=i] - pi_i)^2, not by pi(a) ||e_a - pi||^2"),
        WrongAnswer("mean_reward", _baseline_mean,
                    "that is the mean reward E_pi[r]: a good baseline, but not the variance-minimizing one"),
        WrongAnswer("no_pi", _baseline_no_pi,
                    "the expectations are missing the weights pi(a): E[f(a)] = sum_a pi(a) f(a)"),
    ],
    oracle=_baseline_oracle,
)


# --------------------------------------------------------------------------------------------
# 4. samples needed for a 10 % relative error on every entry (Exercise 5)
# --------------------------------------------------------------------------------------------

def samples_needed_solution(logits, rewards, baseline, rel_err=0.1):
    # the mean of n single-sample estimates has std sqrt(Var_i / n); it must be <= rel_err |dJ/dtheta_i|
    # for every entry i: n >= Var_i / (rel_err dJ/dtheta_i)^2, and the worst entry decides
    var = pg.bandit.estimator_variance(logits, rewards, baseline)    # (K,) variance of one sample
    grad = pg.bandit.exact_gradient(logits, rewards)                 # (K,)
    return math.ceil((var / (rel_err * grad) ** 2).max().item())


def _samples_cases():
    import pgcore.bandit

    lg, rw = _t(1.0, 0.0, -1.0), _t(1.0, 2.0, 4.0)
    return [
        (lg, rw, 0.0),
        (lg, rw, float(pgcore.bandit.optimal_baseline(lg, rw))),
        (_t(0.5, -1.0, 2.0), _t(1.0, 0.0, 0.5), 0.5),
        (_t(4.0, 0.0, 0.0), _t(1.0, 2.0, 4.0), 0.0, 0.05),
    ]


def _samples_parts(logits, rewards, baseline):
    import pgcore.bandit

    return (pgcore.bandit.estimator_variance(logits, rewards, baseline), pgcore.bandit.exact_gradient(logits, rewards))


def _samples_std(logits, rewards, baseline, rel_err=0.1):
    var, grad = _samples_parts(logits, rewards, baseline)
    return math.ceil((var.sqrt() / (rel_err * grad.abs())).max().item())


def _samples_total(logits, rewards, baseline, rel_err=0.1):
    var, grad = _samples_parts(logits, rewards, baseline)
    return math.ceil((var.sum() / (rel_err**2 * (grad**2).sum())).item())


def _samples_min(logits, rewards, baseline, rel_err=0.1):
    var, grad = _samples_parts(logits, rewards, baseline)
    return math.ceil((var / (rel_err * grad) ** 2).min().item())


def _samples_floor(logits, rewards, baseline, rel_err=0.1):
    var, grad = _samples_parts(logits, rewards, baseline)
    return int((var / (rel_err * grad) ** 2).max().item())


def _samples_describe(logits, rewards, baseline, rel_err=0.1):
    return f"for logits {fmt(logits)}, rewards {fmt(rewards)}, baseline {fmt(baseline)} and rel_err {rel_err}"


samples_needed = Exercise(
    name="samples_needed",
    kind="beyond",
    task="write samples_needed(logits, rewards, baseline, rel_err=0.1) -> the smallest n giving every entry "
         "a relative error <= rel_err",
    reference=samples_needed_solution,
    cases=_samples_cases,
    describe=_samples_describe,
    checked="on 4 inputs (the running example with b = 0 and b = b*, another bandit, the rare arms at 5 %)",
    hint_text=("pg.bandit.estimator_variance(logits, rewards, baseline) is Var_i of ONE sample, per entry. "
               "The mean of n samples has standard error sqrt(Var_i / n). Solve sqrt(Var_i / n) <= rel_err * "
               "|dJ/dtheta_i| for n, take the worst entry, and round up to a whole number of samples."),
    wrong_answers=[
        WrongAnswer("std", _samples_std,
                    "you divided the standard deviation, not the variance: the standard error is sqrt(Var_i / n), "
                    "so n = Var_i / (rel_err dJ/dtheta_i)^2"),
        WrongAnswer("total", _samples_total,
                    "you asked for a relative error on the whole vector (total variance over ||grad J||^2); "
                    "the exercise asks it of every entry, and the rare arm's entry needs far more"),
        WrongAnswer("min", _samples_min,
                    "you took the entry that needs the fewest samples; every entry must reach the target, "
                    "so the largest n decides"),
        WrongAnswer("floor", _samples_floor, "you rounded down: with fewer samples than the bound the error is "
                                             "too large, round up (math.ceil)"),
    ],
    imports="import math\n\nimport pgcore as pg\n",
)



# --------------------------------------------------------------------------------------------
# predict, then run: which baseline is worst (section 4)
# --------------------------------------------------------------------------------------------

def largest_variance_baseline_solution():
    # V(b) is a parabola in b with its minimum at b* = 2.245: the farther a constant b is from b*, the larger
    # the variance. |5 - 2.245| = 2.755 > |0 - 2.245| = 2.245 > |1.515 - 2.245|, so b = 5 is the worst, worse
    # than no baseline at all: a baseline far on the wrong side of b* adds variance (4.10 against 2.85)
    return "5"


largest_variance_baseline = prediction(
    "largest_variance_baseline",
    "predict which of the constant baselines 0, E[r] = 1.515, b* = 2.245 and 5 gives the largest variance",
    largest_variance_baseline_solution,
    {"0": "no baseline is not the worst here: V(b) is a parabola with its minimum at b* = 2.245, and 5 is farther "
          "from b* than 0 is",
     "mean": "E[r] = 1.515 is the second best, 0.73 from b*: V(b) grows with the distance from b*",
     "b*": "b* is where the parabola V(b) has its minimum: the smallest variance of all",
     "5": None},
    checked="(V(b) = V(b*) + E[||s||^2] (b - b*)^2: the next cell prints it for all four)",
    hint_text="V(b) is a parabola in b with its minimum at b*; which candidate is farthest from b*?",
)

EXERCISES = [exact_gradient, largest_variance_baseline, estimator_mean, per_entry_baseline, samples_needed]
