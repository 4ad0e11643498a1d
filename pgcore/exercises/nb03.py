"""Checked exercises of notebook 03 (variance reduction: GAE, RLOO, group-normalized baselines).

    from pgcore.exercises import nb03 as ex
    ex.rloo.check(rloo)    # also .hint(), .solution()

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import torch

import pgcore as pg

from .core import Exercise, WrongAnswer, fmt

__all__ = ["rloo", "gae", "group_normalize", "group_mean_scale", "EXERCISES"]


def _groups_cases():
    return [
        (torch.tensor([[1.0, 0.0, 0.0, 1.0]]),),
        (torch.tensor([[0.2, 0.9], [0.5, 0.1]]),),                                   # G = 2
        (torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0], [9.0, 2.0, 6.0, 5.0, 3.0]]),),
        (torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.0, 1.0]]),),                        # a group of equal rewards
    ]


def _describe_groups(rew):
    return f"for rewards {fmt(rew)} (B = {rew.shape[0]} groups of G = {rew.shape[1]})"


# --------------------------------------------------------------------------------------------
# 1. RLOO: the leave-one-out baseline (section 5)
# --------------------------------------------------------------------------------------------

def rloo_solution(rew):
    # adv_i = r_i - mean of the OTHER G - 1 rewards of its group; rew: (B, G)
    G = rew.shape[1]
    others_mean = (rew.sum(dim=1, keepdim=True) - rew) / (G - 1)   # (B, G), excludes r_i itself
    return rew - others_mean


def _rloo_self(rew):
    return rew - rew.mean(dim=1, keepdim=True)


def _rloo_by_g(rew):
    return rew - (rew.sum(dim=1, keepdim=True) - rew) / rew.shape[1]


def _rloo_batch(rew):
    return rew - (rew.sum() - rew) / (rew.numel() - 1)


def _rloo_sign(rew):
    return -rloo_solution(rew)


def _rloo_oracle(rew):
    return pg.rloo(rew)


def _rloo_diagnose(answer):
    """A baseline b_i = r_i - adv_i that moves with r_i depends on sample i's own action."""
    rew = torch.tensor([[3.0, 1.0, 4.0, 1.0, 5.0]])
    moved = rew.clone()
    moved[0, 0] += 1.0
    b, b_moved = rew - answer(rew.clone()), moved - answer(moved.clone())
    if not torch.isclose(b[0, 0], b_moved[0, 0], atol=1e-5):
        return ("the baseline depends on the action: the baseline of sample i changes with its own reward r_i "
                f"(r_0 {fmt(rew[0, 0].item())} -> {fmt(moved[0, 0].item())} moves it {fmt(b[0, 0].item())} -> "
                f"{fmt(b_moved[0, 0].item())}), so it is correlated with grad log pi(a_i) and biases the estimate")
    return None


rloo = Exercise(
    name="rloo",
    task="write rloo(rew) -> (B, G) advantages: each reward minus the mean of the other G - 1 rewards of its group",
    reference=rloo_solution,
    cases=_groups_cases,
    describe=_describe_groups,
    checked="against pg.rloo on 4 inputs (G = 2, 4, 5, a group of equal rewards)",
    hint_text=("sum the group once, rew.sum(dim=1, keepdim=True); the others' sum is that minus r_i, and there "
               "are G - 1 others. The baseline must not contain r_i: a baseline that depends on the sample's own "
               "action is not 'constant' for the E[grad log pi] = 0 argument."),
    wrong_answers=[
        WrongAnswer("includes_self", _rloo_self,
                    "RLOO includes the sample itself: your baseline is the mean of the whole group, r_i included, "
                    "so it depends on the sample's own action (biased, and shrunk by (G-1)/G)"),
        WrongAnswer("divide_by_g", _rloo_by_g, "you divided the others' sum by G; there are G - 1 others"),
        WrongAnswer("whole_batch", _rloo_batch,
                    "your baseline leaves one out of the whole batch, not of the sample's own group (dim=1): "
                    "the samples of other prompts do not measure how good this prompt's answers are"),
        WrongAnswer("sign", _rloo_sign, "the sign is flipped: the advantage is r_i minus the baseline"),
    ],
    oracle=_rloo_oracle,
    diagnose=_rloo_diagnose,
)


# --------------------------------------------------------------------------------------------
# 2. GAE with episode ends (section 1)
# --------------------------------------------------------------------------------------------

def gae_solution(rew, val, done, gamma, lam):
    # all (T, N), time-major; done[t] True where an episode ends at step t in a terminal state (V = 0 after
    # it); after the last step of a column V = 0 too
    next_val = torch.cat([val[1:], torch.zeros_like(val[:1])])   # V(s_{t+1}) in the same column
    delta = rew + gamma * next_val * (~done) - val               # the TD error
    adv = torch.zeros_like(rew)
    running = torch.zeros_like(rew[0])                           # (N,) A_{t+1}
    for t in reversed(range(rew.shape[0])):
        running = delta[t] + gamma * lam * running * (~done[t])  # nothing flows back across an episode's end
        adv[t] = running
    return adv


def _gae_cases():
    b = lambda *xs: torch.tensor(xs, dtype=torch.bool)[:, None]  # noqa: E731
    c = lambda *xs: torch.tensor(xs)[:, None]  # noqa: E731
    return [
        (c(1.0, 1.0, 1.0, 1.0, 1.0), c(2.0, 1.5, 1.0, 2.5, 1.0), b(0, 0, 1, 0, 0), 0.9, 0.8),
        (torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]]),
         torch.tensor([[0.5, 1.0], [1.0, -0.5], [0.2, 0.3], [0.0, 0.7]]),
         torch.tensor([[0, 0], [1, 0], [0, 1], [0, 0]], dtype=torch.bool), 0.99, 0.95),
        (c(1.0, -1.0, 2.0, 0.5), c(0.3, 0.1, 0.4, 0.2), b(0, 1, 0, 1), 0.9, 0.0),   # lam = 0: the TD error
        (c(1.0, 2.0, 0.0, 1.0), c(1.0, 0.5, 2.0, 1.5), b(1, 0, 0, 1), 0.9, 1.0),    # lam = 1: G_t - V(s_t)
    ]


def _gae_describe(rew, val, done, gamma, lam):
    if rew.shape[1] == 1:
        return (f"for one column rew {fmt(rew[:, 0])}, val {fmt(val[:, 0])}, done {fmt(done[:, 0])}, "
                f"gamma {gamma} and lam {lam}")
    return f"for rew {fmt(rew)}, val {fmt(val)}, done {fmt(done)} (T, N), gamma {gamma} and lam {lam}"


def _gae_variant(rew, val, done, gamma, lam, *, cut_delta=True, cut_sum=True, decay=None):
    next_val = torch.cat([val[1:], torch.zeros_like(val[:1])])
    delta = rew + gamma * next_val * ((~done) if cut_delta else 1) - val
    decay = gamma * lam if decay is None else decay
    adv, running = torch.zeros_like(rew), torch.zeros_like(rew[0])
    for t in reversed(range(rew.shape[0])):
        running = delta[t] + decay * running * ((~done[t]) if cut_sum else 1)
        adv[t] = running
    return adv


def _gae_no_done(rew, val, done, gamma, lam):
    return _gae_variant(rew, val, done, gamma, lam, cut_delta=False, cut_sum=False)


def _gae_no_terminal(rew, val, done, gamma, lam):
    return _gae_variant(rew, val, done, gamma, lam, cut_delta=False)


def _gae_no_cut(rew, val, done, gamma, lam):
    return _gae_variant(rew, val, done, gamma, lam, cut_sum=False)


def _gae_gamma(rew, val, done, gamma, lam):
    return _gae_variant(rew, val, done, gamma, lam, decay=gamma)


def _gae_lam(rew, val, done, gamma, lam):
    return _gae_variant(rew, val, done, gamma, lam, decay=lam)


def _gae_oracle(rew, val, done, gamma, lam):
    return pg.gae(rew, val, done, gamma, lam)


gae = Exercise(
    name="gae",
    task="write gae(rew, val, done, gamma, lam) -> (T, N) GAE advantages, restarted where an episode ends",
    reference=gae_solution,
    cases=_gae_cases,
    describe=_gae_describe,
    checked="against pg.gae on 4 inputs (episode ends inside a column, two columns, lam = 0, lam = 1)",
    hint_text=("two steps. (f) delta_t = r_t + gamma V(s_{t+1}) - V(s_t), with V(s_{t+1}) = val[t+1] of the same "
               "column, but 0 after a terminal step (done[t]) and after the last step. (h) backwards: "
               "A_t = delta_t + gamma lam A_{t+1}, where A_{t+1} counts only if step t did not end its episode."),
    wrong_answers=[
        WrongAnswer("no_done", _gae_no_done,
                    "no done mask: the next episode's values and advantages leak back across the episode boundary"),
        WrongAnswer("no_terminal_value", _gae_no_terminal,
                    "after a terminal step V(s_{t+1}) must be 0: your TD error bootstraps from the first state of "
                    "the next episode"),
        WrongAnswer("no_cut", _gae_no_cut,
                    "the recursion A_t = delta_t + gamma lam A_{t+1} is not cut where an episode ends: the next "
                    "episode's advantages flow into this one"),
        WrongAnswer("decay_gamma", _gae_gamma, "the recursion decays by gamma, not by gamma * lam"),
        WrongAnswer("decay_lam", _gae_lam, "the recursion decays by lam, not by gamma * lam"),
    ],
    oracle=_gae_oracle,
    func="my_gae",  # section 2's gae(lam) stays as it is
)


# --------------------------------------------------------------------------------------------
# 3. the group-normalized (GRPO) advantage (section 5)
# --------------------------------------------------------------------------------------------

def group_normalize_solution(rew, eps=1e-4):
    # (r - group mean) / (group std + eps), per group (row) of G samples; the sample std (G - 1), as GRPO
    mean = rew.mean(dim=1, keepdim=True)     # (B, 1)
    std = rew.std(dim=1, keepdim=True)       # (B, 1), unbiased
    return (rew - mean) / (std + eps)


def _gn_population(rew, eps=1e-4):
    return (rew - rew.mean(dim=1, keepdim=True)) / (rew.std(dim=1, keepdim=True, unbiased=False) + eps)


def _gn_batch(rew, eps=1e-4):
    return (rew - rew.mean()) / (rew.std() + eps)


def _gn_no_std(rew, eps=1e-4):
    return rew - rew.mean(dim=1, keepdim=True)


def _gn_batch_std(rew, eps=1e-4):
    return (rew - rew.mean(dim=1, keepdim=True)) / (rew.std() + eps)


def _gn_oracle(rew, eps=1e-4):
    return pg.group_normalize(rew, eps)


group_normalize = Exercise(
    name="group_normalize",
    task="write group_normalize(rew, eps=1e-4) -> (B, G): (r - group mean) / (group std + eps), per group",
    reference=group_normalize_solution,
    cases=_groups_cases,
    describe=_describe_groups,
    checked="against pg.group_normalize on 4 inputs (G = 2, 4, 5, a group of equal rewards)",
    hint_text=("the statistics are per group: reduce over dim=1 with keepdim=True. torch's .std() is the sample "
               "std (divides by G - 1), the one GRPO uses. A group of equal rewards gets advantage 0 everywhere."),
    wrong_answers=[
        WrongAnswer("population_std", _gn_population,
                    "you used the population std (divides by G); GRPO and pg.group_normalize use the sample std "
                    "(divides by G - 1), e.g. rew.std(dim=1)"),
        WrongAnswer("whole_batch", _gn_batch,
                    "you normalized over the whole batch, not per group: each prompt's samples are compared only "
                    "with each other (dim=1)"),
        WrongAnswer("no_std", _gn_no_std,
                    "that is r - group mean (Dr. GRPO's advantage): GRPO also divides by the group std + eps"),
        WrongAnswer("batch_std", _gn_batch_std,
                    "the mean is per group but the std is the whole batch's: take both over dim=1"),
    ],
    oracle=_gn_oracle,
)


# 4. one step beyond section 5: what the group-mean baseline's estimator estimates

def group_mean_scale_solution(G):
    # r_i - (group mean) = r_i - r_i / G - (1/G) sum_{j != i} r_j = (G - 1)/G * (r_i - mean of the others):
    # the group-mean advantage is RLOO's times (G - 1)/G, so its estimator's mean is (G - 1)/G times the gradient
    return (G - 1) / G


group_mean_scale = Exercise(
    name="group_mean_scale",
    task="write group_mean_scale(G) -> c such that E[the group-mean estimator] = c * the policy gradient",
    reference=group_mean_scale_solution,
    cases=lambda: [(2,), (4,), (8,), (16,)],
    describe=lambda G: f"for groups of G = {G}",
    checked="for G = 2, 4, 8 and 16 (G = 8: section 5's 7/8)",
    hint_text=("write r_i - (1/G) sum_j r_j with the j = i term apart, and compare with RLOO's r_i - mean of the "
               "other G - 1 rewards, which is unbiased. Expected for G = 2: 0.5."),
    wrong_answers=[
        WrongAnswer("inverse", lambda G: G / (G - 1), "that is the factor from the group mean to RLOO, the inverse"),
        WrongAnswer("unbiased", lambda G: 1.0,
                    "the group mean contains the sample's own reward, so its baseline is not independent of it: "
                    "the estimator is scaled, not unbiased"),
        WrongAnswer("trace_factor", lambda G: ((G - 1) / G) ** 2,
                    "that is the factor of its tr Cov (the square): the mean scales by the factor itself"),
        WrongAnswer("one_over_g", lambda G: 1 / G, "that is the weight of the sample's own reward in the mean"),
    ],
    imports="",
)

EXERCISES = [rloo, gae, group_normalize, group_mean_scale]
