"""Checked exercises of notebook 03 (variance reduction: GAE, RLOO, group-normalized baselines).

    from pgcore.exercises import nb03 as ex
    ex.rloo.check(rloo)    # also .hint(), .solution()

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

import torch

import pgcore as pg

from .core import Exercise, WrongAnswer, fmt
from .predict import prediction

__all__ = ["least_noise_lambda", "clipped_token", "rloo", "wrong_answer_advantages", "gae", "group_mean_scale",
           "EXERCISES"]


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
# 3. one step beyond section 5: the advantage of a rare wrong answer
# --------------------------------------------------------------------------------------------

def wrong_answer_advantages_solution():
    # a group of 8: 7 right (reward 1), 1 wrong (reward 0). The wrong answer's advantage
    #   RLOO:  0 - (mean of the 7 others) = 0 - 1 = -1
    #   GRPO:  (0 - 7/8) / (sample std + 1e-4); sample std = sqrt((7 (1/8)^2 + (7/8)^2) / 7) = sqrt(1/8) = 0.3536
    #          -> -0.875 / 0.3537 = -2.474: dividing by a small std makes the rare wrong answer weigh 2.5x
    rloo = 0.0 - 7 / 7
    std = ((7 * (1 - 7 / 8) ** 2 + (0 - 7 / 8) ** 2) / 7) ** 0.5
    return (rloo, (0.0 - 7 / 8) / (std + 1e-4))


def _wrong_oracle():
    rew = torch.tensor([[1.0] * 7 + [0.0]], dtype=torch.float64)
    return (pg.rloo(rew)[0, -1].item(), pg.group_normalize(rew)[0, -1].item())


wrong_answer_advantages = Exercise(
    name="wrong_answer_advantages",
    task="compute (RLOO's, GRPO's) advantage of the one wrong answer in a group of 8 with 7 right (rewards 1/0)",
    reference=wrong_answer_advantages_solution,
    cases=lambda: [()],
    describe=lambda: "",
    checked="against pg.rloo and pg.group_normalize (eps 1e-4) on that group",
    hint_text=("RLOO subtracts the mean of the other 7 rewards; GRPO subtracts the group mean and divides by the "
               "sample std (divides by G - 1 = 7) plus 1e-4. Expected: both negative, GRPO's more than twice RLOO's."),
    wrong_answers=[
        WrongAnswer("population_std", (-1.0, -0.875 / (7 / 64) ** 0.5),
                    "your GRPO std is the population one (divides by G); pg.group_normalize and GRPO use the sample "
                    "std (divides by G - 1)"),
        WrongAnswer("group_mean", (-0.875, -0.875 / (1 / 8) ** 0.5),
                    "RLOO's baseline leaves the sample out: the mean of the 7 others is 1, not the group mean 7/8"),
        WrongAnswer("no_std", (-1.0, -0.875),
                    "that is Dr. GRPO's r - mean: GRPO also divides by the group's std + 1e-4"),
        WrongAnswer("sign", (1.0, 0.875 / (1 / 8) ** 0.5), "the wrong answer is below its group: its advantage is negative"),
    ],
    oracle=_wrong_oracle,
    value=True,
    kind="beyond",
    imports="",
    rtol=1e-3,  # with or without the 1e-4 in the std's place
)


# 4. one step beyond section 5: what the group-mean baseline's estimator estimates

def group_mean_scale_solution(G):
    # r_i - (group mean) = r_i - r_i / G - (1/G) sum_{j != i} r_j = (G - 1)/G * (r_i - mean of the others):
    # the group-mean advantage is RLOO's times (G - 1)/G, so its estimator's mean is (G - 1)/G times the gradient
    return (G - 1) / G


group_mean_scale = Exercise(
    name="group_mean_scale",
    kind="beyond",
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



# --------------------------------------------------------------------------------------------
# predict, then run: GAE's noise (section 2) and PPO's clip (section 4)
# --------------------------------------------------------------------------------------------

def least_noise_lambda_solution():
    # lambda = 1 is the Monte Carlo G_t - V(s_t): unbiased, but with all the noise of the sampled return, which
    # grows fast as lambda -> 1. lambda = 0 is the one-step TD error delta_t; summing a few of them cancels part
    # of their noise (V(s_{t+1}) enters delta_t with a plus and delta_{t+1} with a minus). In this lab the noise
    # is lowest in between (about lambda = 0.8), while the bias keeps falling to 0 at lambda = 1
    return "in between"


least_noise_lambda = prediction(
    "least_noise_lambda",
    "predict where the noise-to-signal of GAE(lambda) is lowest: at lambda = 0, in between, or at lambda = 1",
    least_noise_lambda_solution,
    {"0": "summing a few TD errors cancels part of their noise (V(s_t+1) enters delta_t with a plus and "
          "delta_t+1 with a minus): here the noise is lower in between than at lambda = 0",
     "1": "lambda = 1 is the Monte Carlo advantage: unbiased, but with all the noise of the sampled return",
     "in between": None},
    checked="(the next cell prints the noise for 9 values of lambda and asserts it is lowest strictly inside)",
    hint_text="which lambda is the Monte Carlo estimator (d), and what does a wrong critic add at lambda = 0?",
)


def clipped_token_solution():
    # PPO maximizes min(rho A, clip(rho, 1 - eps, 1 + eps) A). With eps = 0.2 and rho = 1.3:
    #   (a) A > 0: min(1.3 A, 1.2 A) = 1.2 A, the clipped term, constant in theta: no gradient, the token is done
    #   (b) A < 0: min(1.3 A, 1.2 A) = 1.3 A, the unclipped term (the smaller one): its gradient still pushes the
    #       probability down. The clip only stops a change that *improves* the objective past the trust region
    return "b"


clipped_token = prediction(
    "clipped_token",
    "predict which token still gets a gradient from PPO's clipped objective (eps 0.2), both with ratio 1.3: "
    "(a) advantage > 0, (b) advantage < 0",
    clipped_token_solution,
    {"a": "for A > 0 the min picks the clipped 1.2 A: a constant, so the token that already rose gets no gradient",
     "b": None,
     "both": "for A > 0 the min picks the clipped 1.2 A, a constant: no gradient there",
     "neither": "for A < 0 the min picks the unclipped 1.3 A (the smaller one): it still has a gradient"},
    checked="(min(rho A, clip(rho) A): only a move that would raise the objective past 1 +- eps is cut)",
    hint_text="write min(1.3 A, 1.2 A) for A = +1 and for A = -1: which term does the min pick, and does it "
              "depend on theta?",
)

EXERCISES = [least_noise_lambda, clipped_token, rloo, wrong_answer_advantages, gae, group_mean_scale]
