"""Policy gradient for a language model, the whole algorithm in one file (CleanRL's rule).

What one step does:
    1. sample G completions of each of B prompts with transformers' `generate` (no top-k / top-p:
       the tokens are draws from the policy itself)
    2. score each completion with a reward model or a verifier (`RewardModel.score`)
    3. per-token log-probs of the completion under the policy (with grad) and the frozen reference
       (the starting policy, no grad), by the naive `log_softmax -> gather`, masked after the first EOS
    4. advantages from the rewards: minus beta * KL(pi || ref) when the KL sits in the reward, then
       none / mean / rloo / group (`pgcore.estimators`)
    5. loss = -aggregate(A * log pi) (+ beta * aggregated k3 when the KL sits in the loss, as in GRPO);
       clip the gradient norm, one AdamW step
    6. reusing the batch (`reuse_batch`, updates_per_batch > 1 or minibatches > 1; TRL's `num_iterations`
       and `steps_per_generation`): pi_old's log-probs once, without grad, then mu passes over the same
       minibatches, each loss with the ratio pi / pi_old: PPO's clip (clip-higher), CISPO, GSPO's sequence
       ratio (`pgcore.surrogates`). With one update per batch (the default) the ratio is 1 and every policy
       loss has plain REINFORCE's gradient.
What it does not do:
    1. no value network: the baseline is the other samples of the same prompt (RLOO) or their mean
    2. no sampler other than the policy: pi_old is recomputed here, so it is exactly the sampler
    3. one process, float32, no caches, no files, no checkpoints. `pgcore.engine` runs this same step
       faster and around it the files, checkpoints and resume; tests/engine/test_engine_equals_algorithm.py
       holds its loss and gradients equal to `compute_loss` and its updates to `reuse_batch` here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

import pgcore as pg  # the estimators, as the notebooks name them: pg.rloo, pg.aggregate, ...
from .._checks import check_int, check_number
from .models import format_prompts
from .sampling import Batch, generate

__all__ = ["Args", "ADVANTAGES", "KL_PLACEMENTS", "KL_ESTIMATORS", "lm_advantages", "per_token_logps", "compute_loss",
           "batch_advantages", "policy_loss", "reuses_batch", "minibatch_rows", "reuse_batch", "update", "sample",
           "stream_seed", "step_prompt_indices", "train"]

ADVANTAGES = ("none", "mean", "rloo", "group")
KL_PLACEMENTS = ("reward", "loss")
KL_ESTIMATORS = ("k1", "k2", "k3")


@dataclass(frozen=True)
class Args:
    """Settings of the policy-gradient step. Defaults: the tiny tier of notebook 04."""

    steps: int = 200
    """optimizer steps (each: sample, score, one update)"""
    seed: int = 0
    """seeds the prompt draw and the sampling"""
    batch_size: int = 8
    """prompts per step (B)"""
    num_samples: int = 4
    """completions sampled per prompt (G; >= 2 for rloo and group)"""
    max_new_tokens: int = 12
    """longest completion, in tokens"""
    temperature: float = 1.0
    """sampling temperature; the log-probs use the same one"""
    advantage: str = "rloo"
    """none, mean, rloo (Dr. GRPO's r - mean up to the factor G/(G-1)), group (GRPO's (r - mean) / std)"""
    loss_aggregation: str = "token"
    """how per-token terms become the loss: token, sequence, constant or sum"""
    kl_coef: float = 0.1
    """beta, the weight of the KL to the reference (0: none)"""
    kl_estimator: str = "k1"
    """per-token KL in the reward and the logged kl: k1 = log(pi/ref), k2 or k3"""
    kl_in: str = "reward"
    """where the KL acts: reward (a detached penalty) or loss (GRPO's k3 term)"""
    kl_loss_estimator: str = "k3"
    """the KL term in the loss (kl_in loss): k1, k2 or k3 (GRPO's)"""
    kl_ratio_correction: bool = False
    """multiply the KL term in the loss by the ratio (TRL's use_bias_correction_kl)"""
    updates_per_batch: int = 1
    """mu, optimizer passes over each sampled batch (TRL's num_iterations)"""
    minibatches: int = 1
    """each pass: one update per slice of the prompts (TRL's steps_per_generation)"""
    policy_loss: str = "pg"
    """pg (A log pi, no ratio), ppo (PPO's clipped ratio), cispo (TRL's loss_type cispo)"""
    clip_eps: float = 0.2
    """ppo: the ratio's floor is 1 - this (TRL's epsilon)"""
    clip_eps_high: float | None = None
    """the ratio's cap is 1 + this (None: clip_eps; TRL's epsilon_high, minus 1 for cispo)"""
    ratio_level: str = "token"
    """the ratio per token, or per sequence (GSPO; TRL's importance_sampling_level)"""
    lr: float = 1e-4
    """AdamW learning rate"""
    max_grad_norm: float = 1.0
    """clip the gradient's global L2 norm to this"""

    def __post_init__(self):
        for name in ("steps", "batch_size", "num_samples", "max_new_tokens"):
            check_int(getattr(self, name), name)
        check_int(self.seed, "seed", low=0)
        for name in ("lr", "temperature", "max_grad_norm"):
            check_number(getattr(self, name), name, gt=0)
        check_number(self.kl_coef, "kl_coef", ge=0)
        for name, accepted in (("advantage", ADVANTAGES), ("loss_aggregation", pg.AGGREGATIONS),
                               ("kl_estimator", KL_ESTIMATORS), ("kl_in", KL_PLACEMENTS),
                               ("kl_loss_estimator", KL_ESTIMATORS), ("policy_loss", pg.POLICY_LOSSES),
                               ("ratio_level", pg.RATIO_LEVELS)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name} {getattr(self, name)!r} unknown; accepted: {', '.join(accepted)}")
        self._check_reuse()
        if self.advantage in ("rloo", "group") and self.num_samples < 2:
            raise ValueError(f"advantage {self.advantage!r} needs num_samples >= 2 (it compares samples of one "
                             f"prompt), got {self.num_samples}; use advantage 'mean' or 'none' for one sample")

    def _check_reuse(self) -> None:
        check_int(self.updates_per_batch, "updates_per_batch")
        check_int(self.minibatches, "minibatches")
        if self.batch_size % self.minibatches:
            raise ValueError(f"minibatches {self.minibatches} does not divide batch_size {self.batch_size}; "
                             "accepted: a divisor of batch_size (each minibatch holds whole prompts)")
        check_number(self.clip_eps, "clip_eps", gt=0, le=1)
        check_number(self.clip_eps_high, "clip_eps_high", gt=0, optional=True)
        if self.clip_eps_high is not None and self.clip_eps_high < self.clip_eps:
            raise ValueError(f"clip_eps_high {self.clip_eps_high!r} is below clip_eps {self.clip_eps!r}; accepted: "
                             "a number >= clip_eps (clip-higher), or None (the same as clip_eps)")
        if not isinstance(self.kl_ratio_correction, bool):
            raise ValueError(f"kl_ratio_correction must be True or False, got {self.kl_ratio_correction!r}")
        if self.kl_ratio_correction and self.kl_in != "loss":
            raise ValueError("kl_ratio_correction corrects the KL term in the loss; accepted: kl_in 'loss' with it")


# ALGO LOGIC: the pieces of one step


def lm_advantages(score: torch.Tensor, kind: str) -> torch.Tensor:
    """Advantages from scores (B, G): G samples of each of B prompts. Returns (B, G).

    none: the score itself (REINFORCE). mean: minus the batch mean. rloo: minus the mean of the prompt's
    *other* G - 1 samples. group: GRPO's (score - group mean) / group std.
    """
    if score.dim() != 2:
        raise ValueError(f"score must be shaped (num_prompts, num_samples), got {tuple(score.shape)}")
    if kind == "none":
        return score
    if kind == "mean":
        return pg.mean_baseline(score)
    if kind == "rloo":
        return pg.rloo(score)
    if kind == "group":
        return pg.group_normalize(score)
    raise ValueError(f"advantage {kind!r} unknown; accepted: {', '.join(ADVANTAGES)}")


def per_token_logps(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token, (N, T): one forward over prompt + completion.

    Entries after a row's first EOS mean nothing: multiply by `batch.completion_mask`.
    """
    input_ids, attention_mask = batch.input_ids, batch.attention_mask  # (N, P + T) prompt then completion
    T = batch.completion_ids.shape[1]
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding must not shift positions
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits  # (N, P + T, V)
    logits = logits[:, -T - 1:-1] / temperature  # (N, T, V): the logit at position t predicts token t + 1
    return logits.log_softmax(dim=-1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)  # (N, T)


def batch_advantages(old_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                     args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's advantages (N,) and each completion's KL estimate (N,), under the policy that sampled it:
    fixed for all the updates on the batch. old_logp, ref_logp, mask: (N, T); rewards: (N,), prompt-major."""
    per_token_kl = pg.kl_estimate(old_logp.detach(), ref_logp, args.kl_estimator)  # (N, T)
    kl = (per_token_kl * mask).sum(dim=1)  # (N,): the KL estimate of each whole completion
    # the KL as a reward penalty (classic RLHF), or not at all here
    score = rewards - args.kl_coef * kl if args.kl_in == "reward" else rewards  # (N,)
    adv = lm_advantages(score.view(-1, args.num_samples), args.advantage).reshape(-1)  # (N,): within each group
    return adv, kl


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
                mask: torch.Tensor, args: Args) -> torch.Tensor:
    """The loss of one update: logp (N, T) with grad, old_logp (N, T) of the sampler, ref_logp (N, T) (None
    without a KL in the loss), adv (N,). Its gradient is minus the policy-gradient estimate; its value is
    not progress: watch the reward."""
    if args.policy_loss == "pg":
        # REINFORCE: -A * log pi per token, aggregated; with "token" this is pg.pg_loss(logp, adv, mask)
        loss = -pg.aggregate(logp * adv.detach()[:, None], mask, args.loss_aggregation, args.max_new_tokens)
    else:  # PPO's clipped ratio or CISPO's capped weight, per token or per sequence (GSPO)
        per_token, _ = pg.surrogate_loss(logp, old_logp, adv, mask, args.policy_loss, args.clip_eps,
                                         args.clip_eps_high, args.ratio_level)  # (N, T)
        loss = pg.aggregate(per_token, mask, args.loss_aggregation, args.max_new_tokens)
    if args.kl_in == "loss" and args.kl_coef:
        # GRPO's KL term, with its gradient (Shao et al. 2024, eq. 4; k3 by default)
        kl_term = pg.kl_estimate(logp, ref_logp, args.kl_loss_estimator)  # (N, T)
        if args.kl_ratio_correction:  # DeepSeek-V3.2: ratio * k3, unbiased for KL(pi || ref) on pi_old's samples
            kl_term = pg.importance_ratio(logp, old_logp, mask, args.ratio_level) * kl_term
        loss = loss + args.kl_coef * pg.aggregate(kl_term, mask, args.loss_aggregation, args.max_new_tokens)
    return loss


def _batch_stats(rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor) -> dict:
    return {"reward_mean": rewards.mean().item(), "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "kl": kl.mean().item(), "completion_len": mask.sum(dim=1).float().mean().item()}


def compute_loss(model, ref_model, batch: Batch, rewards: torch.Tensor, args: Args,
                 old_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The loss of one update on the whole batch and the step's statistics. rewards: (N,), prompt-major rows.
    old_logp: (N, T) log-probs of the policy that sampled the batch (None: this forward's, detached: on-policy,
    the ratio is 1)."""
    mask = batch.completion_mask  # (N, T), 1 up to and including the first EOS
    logp = per_token_logps(model, batch, args.temperature)  # (N, T), with grad
    with torch.no_grad():
        ref_logp = per_token_logps(ref_model, batch, args.temperature)  # (N, T)
    old_logp = logp.detach() if old_logp is None else old_logp
    adv, kl = batch_advantages(old_logp, ref_logp, rewards, mask, args)  # (N,), (N,)
    loss = policy_loss(logp, old_logp, ref_logp, adv, mask, args)
    stats = _batch_stats(rewards, kl, mask)
    if reuses_batch(args) or args.policy_loss != "pg":
        stats.update(pg.ratio_stats(logp, old_logp, adv, mask, args.policy_loss, args.clip_eps, args.clip_eps_high,
                                    args.ratio_level))
    return loss, stats


# ALGO LOGIC: reusing a batch


def reuses_batch(args: Args) -> bool:
    """Whether a sampled batch serves more than one update."""
    return args.updates_per_batch > 1 or args.minibatches > 1


def minibatch_rows(num_rows: int, num_samples: int, minibatches: int) -> list[slice]:
    """The rows of each minibatch: consecutive whole prompt groups (rows are prompt-major)."""
    per = num_rows // num_samples // minibatches * num_samples
    return [slice(i * per, (i + 1) * per) for i in range(minibatches)]


def update(model, optimizer, loss: torch.Tensor, max_grad_norm: float) -> float:
    """Backward, clip the gradient's global norm, one optimizer step. Returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return grad_norm.item()


def reuse_batch(model, ref_model, optimizer, batch: Batch, rewards: torch.Tensor, args: Args) -> tuple[list, dict]:
    """updates_per_batch passes over one sampled batch, one update per minibatch, each against pi_old.

    As TRL's GRPO with num_iterations = mu and steps_per_generation = minibatches: pi_old's log-probs once,
    without grad, before any update; the advantages once, on the whole batch; then the same minibatches in the
    same order in every pass. Returns (one row of `pg.ratio_stats` + loss and grad_norm per update, the batch's
    statistics)."""
    mask = batch.completion_mask  # (N, T)
    with torch.no_grad():  # pi_old: the policy that sampled the batch, fixed for all its updates
        old_logp = per_token_logps(model, batch, args.temperature)  # (N, T)
        ref_logp = per_token_logps(ref_model, batch, args.temperature)  # (N, T)
    adv, kl = batch_advantages(old_logp, ref_logp, rewards, mask, args)  # (N,), (N,)
    updates = []
    for epoch in range(args.updates_per_batch):
        for rows in minibatch_rows(len(batch), args.num_samples, args.minibatches):
            mb = batch.select(rows)
            logp = per_token_logps(model, mb, args.temperature)  # (n, T), with grad, under the current policy
            loss = policy_loss(logp, old_logp[rows], ref_logp[rows], adv[rows], mb.completion_mask, args)
            stats = pg.ratio_stats(logp, old_logp[rows], adv[rows], mb.completion_mask, args.policy_loss,
                                   args.clip_eps, args.clip_eps_high, args.ratio_level)  # before the update
            grad_norm = update(model, optimizer, loss, args.max_grad_norm)
            updates.append({"epoch": epoch, "loss": loss.item(), "grad_norm": grad_norm, **stats})
    return updates, _batch_stats(rewards, kl, mask)


# TRY NOT TO MODIFY: seeds, prompt draw, sampling and the loop


def stream_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, process, purpose): independent streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


def step_prompt_indices(seed: int, step: int, num_prompts: int, batch_size: int) -> list[int]:
    """The prompts (indices) a run with `seed` trains on at `step`: a seeded draw of `batch_size`, without
    replacement when there are enough."""
    g = torch.Generator().manual_seed(stream_seed(seed, step, 0, 0))
    if batch_size <= num_prompts:
        return torch.randperm(num_prompts, generator=g)[:batch_size].tolist()
    return torch.randint(num_prompts, (batch_size,), generator=g).tolist()


def sample(policy, prompts: list[str], args: Args, step: int) -> Batch:
    """Step `step`'s batch: B prompts drawn from the (formatted) `prompts`, G completions of each."""
    chosen = [prompts[i] for i in step_prompt_indices(args.seed, step, len(prompts), args.batch_size)]
    return generate(policy.model, policy.tokenizer, chosen, args.num_samples, args.max_new_tokens, args.temperature,
                    seed=stream_seed(args.seed, step, 0, 1), add_special_tokens=not policy.chat_template)


def score(reward, batch: Batch) -> torch.Tensor:
    """(N,) float32 rewards of the batch's completions (a verifier also reads the prompts)."""
    rewards = reward.score(batch.texts, prompts=batch.prompts) if reward.needs_prompts else reward.score(batch.texts)
    return rewards.to(batch.completion_ids.device, torch.float32)


def train(args: Args, policy, reward, prompts: list[str], callback=None) -> list[dict]:
    """Train `policy` (a `pgcore.lm.models.Policy`, trained in place) against `reward` for `args.steps` steps.

    prompts: raw prompt strings (the chat template, if the model has one, is applied here). callback: called as
    `callback(step, row)` after every step. Returns one row of statistics per step.
    """
    model = policy.model
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # the frozen reference: the starting policy
    model.eval()  # no dropout: sampling and log-probs must see the same function
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    prompts = format_prompts(policy, list(prompts))
    history = []
    for step in range(1, args.steps + 1):
        batch = sample(policy, prompts, args, step)  # 1. sample
        rewards = score(reward, batch)  # 2. score, (N,)
        if reuses_batch(args):  # 6. several updates on the batch, each against pi_old
            updates, stats = reuse_batch(model, ref_model, optimizer, batch, rewards, args)
            row = {"step": step, "loss": float(np.mean([u["loss"] for u in updates])), **stats,
                   "grad_norm": float(np.mean([u["grad_norm"] for u in updates])), "updates": updates}
        else:
            loss, stats = compute_loss(model, ref_model, batch, rewards, args)  # 3.-5. log-probs, KL, advantages
            grad_norm = update(model, optimizer, loss, args.max_grad_norm)
            row = {"step": step, "loss": loss.item(), **stats, "grad_norm": grad_norm}
        history.append(row)
        if callback is not None:
            callback(step, row)
    return history
