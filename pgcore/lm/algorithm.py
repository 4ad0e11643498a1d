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
What it does not do:
    1. no ratio pi / pi_old and no clip: one update per batch, on-policy, so the ratio is 1
    2. no value network: the baseline is the other samples of the same prompt (RLOO) or their mean
    3. one process, float32, no caches, no files, no checkpoints. `pgcore.engine` runs this same step
       faster and around it the files, checkpoints and resume; tests/engine/test_engine_equals_algorithm.py
       holds its loss and gradients equal to `compute_loss` here.
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

__all__ = ["Args", "ADVANTAGES", "KL_PLACEMENTS", "lm_advantages", "per_token_logps", "compute_loss", "sample",
           "stream_seed", "step_prompt_indices", "train"]

ADVANTAGES = ("none", "mean", "rloo", "group")
KL_PLACEMENTS = ("reward", "loss")


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
    """per-token KL in the reward: k1 = log(pi/ref), or k3"""
    kl_in: str = "reward"
    """where the KL acts: reward (a detached penalty) or loss (GRPO's k3 term)"""
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
                               ("kl_estimator", ("k1", "k3")), ("kl_in", KL_PLACEMENTS)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name} {getattr(self, name)!r} unknown; accepted: {', '.join(accepted)}")
        if self.advantage in ("rloo", "group") and self.num_samples < 2:
            raise ValueError(f"advantage {self.advantage!r} needs num_samples >= 2 (it compares samples of one "
                             f"prompt), got {self.num_samples}; use advantage 'mean' or 'none' for one sample")


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


def compute_loss(model, ref_model, batch: Batch, rewards: torch.Tensor, args: Args) -> tuple[torch.Tensor, dict]:
    """The policy-gradient loss of one batch (its gradient is minus the policy-gradient estimate; its value
    is not progress: watch the reward) and the step's statistics. rewards: (N,), prompt-major rows."""
    G, mask = args.num_samples, batch.completion_mask  # mask: (N, T), 1 up to and including the first EOS
    logp = per_token_logps(model, batch, args.temperature)  # (N, T), with grad
    with torch.no_grad():
        ref_logp = per_token_logps(ref_model, batch, args.temperature)  # (N, T)
    per_token_kl = pg.kl_estimate(logp.detach(), ref_logp, args.kl_estimator)  # (N, T)
    kl = (per_token_kl * mask).sum(dim=1)  # (N,): the KL estimate of each whole completion

    # the KL as a reward penalty (classic RLHF), or not at all here
    score = rewards - args.kl_coef * kl if args.kl_in == "reward" else rewards  # (N,)
    adv = lm_advantages(score.view(-1, G), args.advantage).reshape(-1)  # (N,): compared within each prompt's group

    # REINFORCE: -A * log pi per token, aggregated; with "token" this is pg.pg_loss(logp, adv, mask)
    loss = -pg.aggregate(logp * adv.detach()[:, None], mask, args.loss_aggregation, args.max_new_tokens)
    if args.kl_in == "loss" and args.kl_coef:
        # GRPO's KL term, with its gradient (Shao et al. 2024, eq. 4)
        k3 = pg.kl_k3(logp, ref_logp)  # (N, T)
        loss = loss + args.kl_coef * pg.aggregate(k3, mask, args.loss_aggregation, args.max_new_tokens)
    stats = {"reward_mean": rewards.mean().item(), "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
             "kl": kl.mean().item(), "completion_len": mask.sum(dim=1).float().mean().item()}
    return loss, stats


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
        loss, stats = compute_loss(model, ref_model, batch, rewards, args)  # 3.-5. log-probs, KL, advantages, loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        row = {"step": step, "loss": loss.item(), **stats, "grad_norm": grad_norm.item()}
        history.append(row)
        if callback is not None:
            callback(step, row)
    return history
