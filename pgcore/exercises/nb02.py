"""Checked exercises of notebook 02 (REINFORCE on CartPole).

    from pgcore.exercises import nb02 as ex
    ex.reward_to_go.check(reward_to_go)    # also .hint(), .solution()

Layout as in `pgcore.returns`: time-major (T, N) tensors, column n holding what env copy n did,
`done[t, n]` True where an episode ends at step t.

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import torch

import pgcore as pg

from .core import Exercise, WrongAnswer, fmt
from .predict import prediction

__all__ = ["reinforce_loss", "rtg_variance", "always_right_arrives", "discounted_weights", "EXERCISES"]


def _col(*xs, dtype=torch.float32):
    return torch.tensor(xs, dtype=dtype)[:, None]  # (T, 1): one column


def _done(*xs):
    return torch.tensor(xs, dtype=torch.bool)[:, None]


def _rtg_cases():
    return [
        (torch.ones(3, 1), _done(0, 0, 1), 0.5),                                   # notebook 02's example
        (_col(1.0, 2.0, 3.0, 4.0, 5.0), _done(0, 1, 0, 0, 1), 0.9),                 # two episodes in a column
        (torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 1.0], [1.0, 1.0]]),          # two columns, the last
         torch.tensor([[0, 0], [1, 0], [0, 1], [0, 0]], dtype=torch.bool), 0.5),   # episodes unfinished at T
        (_col(1.0, -1.0, 2.0, 1.0), _done(0, 0, 1, 1), 1.0),                        # gamma = 1, a 1-step episode
    ]


def _describe_rtg(rew, done, gamma):
    if rew.shape[1] == 1:
        return f"for one column rew {fmt(rew[:, 0])}, done {fmt(done[:, 0])} and gamma {gamma}"
    return f"for rew {fmt(rew)} (T, N), done {fmt(done)} and gamma {gamma}"


# --------------------------------------------------------------------------------------------
# 1. the REINFORCE loss over a padded batch (section 2, as pg.pg_loss)
# --------------------------------------------------------------------------------------------

def reinforce_loss_solution(logp, adv, mask):
    # L = -(1/S) sum over the S real steps of logp * adv: its gradient is the policy-gradient estimate
    # logp, adv, mask: (T, N); mask is False on padding (steps after a column's last episode ended)
    mask = mask.float()
    return -(logp * adv * mask).sum() / mask.sum()


def _loss_cases():
    g = torch.Generator().manual_seed(2)
    out = []
    for lengths in [(4, 2), (3,), (5, 1, 3)]:
        T, N = max(lengths), len(lengths)
        logp = -torch.rand(T, N, generator=g) * 2 - 0.1            # log-probs < 0, padding too (garbage)
        adv = torch.randn(T, N, generator=g)
        mask = torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]
        out.append((logp.requires_grad_(), adv, mask))
    return out


def _loss_sign(logp, adv, mask):
    return -reinforce_loss_solution(logp, adv, mask)


def _loss_episodes(logp, adv, mask):
    return -(logp * adv * mask).sum() / mask.shape[1]


def _loss_padding(logp, adv, mask):
    return -(logp * adv * mask).mean()


def _loss_no_mask(logp, adv, mask):
    return -(logp * adv).mean()


def _loss_sum(logp, adv, mask):
    return -(logp * adv * mask).sum()


def _loss_oracle(logp, adv, mask):
    return pg.pg_loss(logp, adv, mask)


def _loss_validate(out, logp, adv, mask):
    if isinstance(out, torch.Tensor) and out.numel() == 1 and not out.requires_grad:
        return "your loss has no gradient (a .item(), .detach() or torch.no_grad() cuts it off from logp)"
    if not isinstance(out, torch.Tensor) and isinstance(out, (int, float)):
        return "your loss is a plain number, not a tensor: backward() cannot reach the policy (.item()?)"
    return None


reinforce_loss = Exercise(
    name="reinforce_loss",
    task="write reinforce_loss(logp, adv, mask) -> the scalar loss of a padded (T, N) batch, as pg.pg_loss",
    reference=reinforce_loss_solution,
    cases=_loss_cases,
    describe=lambda logp, adv, mask: (f"for logp {fmt(logp.detach(), 2)}, adv {fmt(adv, 2)} and mask {fmt(mask)} "
                                      f"({int(mask.sum())} real steps in {mask.shape[1]} episodes)"),
    checked="against pg.pg_loss(logp, adv, mask) on 3 padded batches; your loss keeps the gradient",
    hint_text=("the loss is minus the mean of logp * adv over the real steps only (section 1, end): zero out "
               "the padding with the mask and divide by the number of real steps, mask.sum(). Minimizing it "
               "ascends J."),
    wrong_answers=[
        WrongAnswer("sign", _loss_sign, "the sign is flipped: minimizing this loss descends J"),
        WrongAnswer("episodes", _loss_episodes,
                    "you averaged over episodes (divided by the N columns), not over steps: pg.pg_loss, the "
                    "course's loss, divides by the S real steps (the same direction, but a step size that would "
                    "grow with the episode length)"),
        WrongAnswer("padding", _loss_padding,
                    "you divided by all T x N entries, padding included: divide by the number of real steps, "
                    "mask.sum()"),
        WrongAnswer("no_mask", _loss_no_mask,
                    "the padding steps count: multiply by the mask, so steps after an episode ended contribute "
                    "nothing"),
        WrongAnswer("sum", _loss_sum, "you summed over the steps instead of averaging (divide by mask.sum())"),
    ],
    oracle=_loss_oracle,
    validate=_loss_validate,
)


# --------------------------------------------------------------------------------------------
# 2. the exact discounted weights gamma^t G_t (Exercise 2)
# --------------------------------------------------------------------------------------------

def discounted_weights_solution(rew, done, gamma):
    # the exact gradient of the discounted objective weights step t by gamma^t G_t, t counted from the
    # start of step t's episode (t = 0 on the first step of a column and after every done)
    G = pg.reward_to_go(rew, gamma, done)                 # (T, N)
    t_in_ep = torch.zeros_like(rew)
    count = torch.zeros_like(rew[0])                      # (N,)
    for t in range(rew.shape[0]):
        t_in_ep[t] = count
        count = (count + 1) * (~done[t])                  # the step after a done starts a new episode
    return gamma**t_in_ep * G


def _dw_cases():
    return [c for c in _rtg_cases() if c[2] < 1.0] + [
        (_col(1.0, 1.0, 1.0, 1.0, 1.0, 1.0), _done(0, 0, 1, 0, 0, 1), 0.8),
    ]


def _dw_no_power(rew, done, gamma):
    return pg.reward_to_go(rew, gamma, done)


def _dw_global_t(rew, done, gamma):
    t = torch.arange(rew.shape[0], dtype=rew.dtype)[:, None].expand_as(rew)
    return gamma**t * pg.reward_to_go(rew, gamma, done)


discounted_weights = Exercise(
    name="discounted_weights",
    kind="beyond",
    task="write discounted_weights(rew, done, gamma) -> gamma^t G_t (T, N), t counted within each episode",
    reference=discounted_weights_solution,
    cases=_dw_cases,
    describe=_describe_rtg,
    checked="on 4 inputs with gamma < 1 (several episodes per column, two columns)",
    hint_text=("G_t is pg.reward_to_go(rew, gamma, done). For the time index, walk forward through "
               "the steps with a counter per column (N,) that restarts at 0 on the step after a done."),
    wrong_answers=[
        WrongAnswer("no_power", _dw_no_power,
                    "the factor gamma^t is missing: that is the usual G_t, not the exact gradient's gamma^t G_t"),
        WrongAnswer("global_t", _dw_global_t,
                    "your t counts from the start of the column, not from the start of each episode: restart "
                    "t = 0 on the step after every done"),
    ],
    imports="import torch\n\nimport pgcore as pg\n",
)



# --------------------------------------------------------------------------------------------
# predict, then run: section 3's variance and section 4's corridor
# --------------------------------------------------------------------------------------------

def rtg_variance_solution():
    # R(tau) weights step t by every reward of the episode, r_0 ... r_{t-1} included. Those past rewards have
    # mean zero against grad log pi(a_t | s_t) (step 4) but not variance zero: each is pure noise for that
    # action. In a CartPole episode most steps have many past rewards, so dropping them removes most of the
    # variance (the next cell asserts more than half; it prints the factor)
    return "more than half"


rtg_variance = prediction(
    "rtg_variance",
    "predict how much of the total variance of the R(tau) estimator the reward-to-go removes",
    rtg_variance_solution,
    {"none": "the two have the same mean, not the same variance: the terms dropped in step (4) have mean zero, "
             "but each one adds noise",
     "less than half": "it removes more: every step's weight R(tau) carries all the rewards before that step, and "
                       "in a CartPole episode most of a step's rewards are in its past",
     "more than half": None},
    checked="(the next cell measures it on 400 episodes and asserts a factor above 2)",
    hint_text="which rewards does R(tau) put on step t that G_t leaves out, and what is their mean and their "
              "variance against grad log pi(a_t | s_t)?",
)


def always_right_arrives_solution():
    # in the second cell the actions are swapped: "right" moves left. Always right goes cell 1 -> 2 -> 1 -> 2 ...
    # and never reaches the goal; always left stays against the wall. A policy that sees the same observation in
    # every cell must be stochastic to arrive
    return "no"


always_right_arrives = prediction(
    "always_right_arrives",
    "predict whether the deterministic policy 'always right' reaches the short corridor's goal",
    always_right_arrives_solution,
    {"yes": "the second cell swaps the actions: there 'right' moves the agent back to the first cell, and from "
            "there 'right' brings it back again",
     "no": None},
    checked="(the next cell runs both deterministic policies for 1000 steps)",
    hint_text="follow 'always right' cell by cell, remembering that the second cell swaps the actions",
)

EXERCISES = [reinforce_loss, rtg_variance, always_right_arrives, discounted_weights]
