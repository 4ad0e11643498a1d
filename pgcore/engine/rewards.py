"""Several rewards at once, reward functions that may return None, and their advantages.

`RewardSet(rewards, weights, aggregation)` scores a batch with every reward (a reward model, a verifier or
a `RewardFunction`) into a matrix `rewards_per_func` (N, K), then combines it as TRL's GRPOTrainer does
(`multi_objective_aggregation`):

- `sum_then_normalize` (TRL's default): the weighted sum of the K rewards (None ones left out, `nansum`)
  is the score; `--advantage` then normalizes it within each prompt's group.
- `normalize_then_sum` (GDPO, https://huggingface.co/papers/2601.05242): each reward is first normalized within the group,
  (r_k - mean_k) / (std_k + 1e-4), and the weighted sum of those is the score. Two rewards whose weighted
  sum is the same for every sample of a group give zero advantages when summed first; normalized first,
  each still ranks the samples (tests/engine/test_reward_fns.py holds such a group).

A completion for which every reward returned None is unscorable: it is left out of its group's baseline and
its advantage is 0 (`masked_advantages`). A reward model's own NaN is not None: it reaches the NaN guard.
A run with one built-in reward never comes here: the trainer scores with `score`, `algorithm.score` with a
GPT-2 reward model's forward as plain tensor calls.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from ..lm import algorithm
from ..lm.algorithm import lm_advantages
from ..lm.reward_fns import RewardFunction, RewardFunctionError
from ..lm.rewards import RewardModel

__all__ = ["RewardSet", "AGGREGATIONS", "combine_rewards", "masked_advantages", "nanstd", "score",
           "classifier_score"]

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
EPS = 1e-4  # TRL's and GDPO's guard against a zero std


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """The sample std (Bessel's correction) of the non-NaN entries (NaN where fewer than two)."""
    valid = ~torch.isnan(x)
    n = valid.sum(dim=dim, keepdim=True) if dim is not None else valid.sum()
    mean = torch.nanmean(x, dim=dim, keepdim=True) if dim is not None else torch.nanmean(x)
    sq = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x))
    var = (sq.sum(dim=dim, keepdim=True) if dim is not None else sq.sum()) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.full_like(var, math.nan))
    return std if keepdim or dim is None else std.squeeze(dim)


def combine_rewards(rewards_per_func: torch.Tensor, none_mask: torch.Tensor, weights: torch.Tensor,
                    aggregation: str, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(score (N,), valid (N,) bool) from rewards (N, K), None entries `none_mask` (N, K), weights (K,).
    Rows prompt-major (G = num_samples per prompt); an invalid row's score is 0 (its advantage is 0 too)."""
    N, K = rewards_per_func.shape
    valid = ~none_mask.all(dim=1)  # (N,): at least one reward applies
    r = torch.where(none_mask, torch.full_like(rewards_per_func, math.nan), rewards_per_func)  # (N, K)
    if aggregation == "sum_then_normalize":
        per = r
    elif aggregation == "normalize_then_sum":
        grouped = r.view(-1, num_samples, K)  # (B, G, K)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)  # (B, 1, K)
        std_k = nanstd(grouped, dim=1, keepdim=True) if num_samples > 1 else torch.zeros_like(mean_k)
        std_k = torch.nan_to_num(std_k, nan=0.0)  # one valid sample: nothing to compare
        per = ((grouped - mean_k) / (std_k + EPS)).view(N, K)
    else:
        raise ValueError(f"reward aggregation {aggregation!r} unknown; accepted: {', '.join(AGGREGATIONS)}")
    weighted = per * weights.to(per)[None, :]  # (N, K)
    # nansum for None entries only: a reward model's own NaN stays NaN (the NaN guard stops the run)
    score = torch.where(none_mask, torch.zeros_like(weighted), weighted).sum(dim=1)  # (N,)
    return torch.where(valid, score, torch.zeros_like(score)), valid


def masked_advantages(score: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """`lm_advantages(score, kind)` (B, G) with the invalid samples left out of every baseline and given
    advantage 0. With every sample valid it is `lm_advantages` itself (the same bits)."""
    if bool(valid.all()):
        return lm_advantages(score, kind)
    v = valid.to(score.dtype)  # (B, G)
    s = score * v
    if kind == "none":
        adv = s
    elif kind == "mean":
        adv = s - s.sum() / v.sum().clamp(min=1)
    elif kind in ("rloo", "group"):
        n = v.sum(dim=1, keepdim=True)  # (B, 1) valid samples of each prompt
        if kind == "rloo":  # minus the mean of the prompt's other valid samples
            others = (s.sum(dim=1, keepdim=True) - s) / (n - 1).clamp(min=1)
            adv = torch.where(n > 1, s - others, torch.zeros_like(s))
        else:  # (r - mean) / (std + eps) over the valid samples, as pg.group_normalize
            mean = s.sum(dim=1, keepdim=True) / n.clamp(min=1)
            var = (((s - mean) * v) ** 2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
            adv = torch.where(n > 1, (s - mean) / (var.sqrt() + EPS), torch.zeros_like(s))  # pg.group_normalize's eps
    else:
        raise ValueError(f"advantage {kind!r} unknown")
    return adv * v


class RewardSet(RewardModel):
    """K rewards with weights, scored together (see the module docstring). It answers the trainer's hooks
    for all of them: every reward checks the policy and the prompts; the task's default prompts and the
    held-out evaluation come from the one reward that has them."""

    def __init__(self, rewards: Sequence[RewardModel], weights: Sequence[float] | None = None,
                 aggregation: str = "sum_then_normalize"):
        self.rewards = list(rewards)
        if not self.rewards:
            raise ValueError("no reward given; accepted: at least one --reward-model or --reward-fn")
        if weights is None:
            weights = [1.0] * len(self.rewards)
        if len(weights) != len(self.rewards):
            raise ValueError(f"reward weights {list(weights)} are {len(weights)} for {len(self.rewards)} rewards; "
                             "accepted: one weight per reward (--reward-model ones first, then --reward-fn ones)")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"reward aggregation {aggregation!r} unknown; accepted: {', '.join(AGGREGATIONS)}")
        self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float32)
        self.aggregation = aggregation
        self.names = unique_names([r.name for r in self.rewards])
        self.name = " + ".join(self.names) if len(self.rewards) > 1 else self.names[0]
        self.label = self.rewards[0].label if len(self.rewards) == 1 else None
        self.needs_prompts = True
        self.verifier = len(self.rewards) == 1 and self.rewards[0].verifier
        evaluators = [r for r in self.rewards if r.evaluate is not None]
        self.evaluate = evaluators[0].evaluate if len(evaluators) == 1 else None

    def check_policy(self, policy) -> None:
        for r in self.rewards:
            r.check_policy(policy)

    def default_prompts(self):
        return next((p for p in (r.default_prompts() for r in self.rewards) if p is not None), None)

    def check_prompts(self, prompts) -> None:
        for r in self.rewards:
            r.check_prompts(prompts)

    def score_all(self, texts: list[str], prompts: Sequence[Any], columns: Mapping[str, Sequence[Any]] | None = None,
                  *, step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(rewards_per_func (N, K) float32 on CPU, none_mask (N, K)): every reward on the N completions of
        `prompts` (one prompt a row); RewardFunctionError when a function misbehaves."""
        cols = []
        for r in self.rewards:
            if isinstance(r, RewardFunction):
                cols.append(r.score(texts, prompts=prompts, columns=columns, step=step))
            elif r.needs_prompts:
                cols.append(r.score(texts, prompts=list(prompts)))
            else:
                cols.append(r.score(texts))
        matrix = torch.stack([c.to("cpu", torch.float32).reshape(-1) for c in cols], dim=1)  # (N, K)
        is_fn = torch.tensor([isinstance(r, RewardFunction) for r in self.rewards])
        return matrix, torch.isnan(matrix) & is_fn[None, :]

    def score(self, texts: list[str], prompts: Sequence[Any] | None = None) -> torch.Tensor:
        """The combined score (N,) with the `sum_then_normalize` weighting (what `algorithm.score` would train
        on); unscorable rows are NaN."""
        matrix, none_mask = self.score_all(texts, prompts if prompts is not None else [""] * len(texts))
        score, valid = combine_rewards(matrix, none_mask, self.weights, "sum_then_normalize", 1)
        return torch.where(valid, score, torch.full_like(score, math.nan))

    def columns(self, matrix: torch.Tensor, none_mask: torch.Tensor) -> dict[str, float | None]:
        """`reward/<name>_mean`, `reward/<name>_std` of every reward over the rows it applies to (None: none)."""
        row: dict[str, float | None] = {}
        for k, name in enumerate(self.names):
            vals = matrix[~none_mask[:, k], k]
            row[f"reward/{name}_mean"] = vals.mean().item() if vals.numel() else None
            row[f"reward/{name}_std"] = (vals.std().item() if vals.numel() > 1 else 0.0) if vals.numel() else None
        return row


def unique_names(names: Sequence[str]) -> list[str]:
    """Short column-safe reward names (`reward/<name>_mean`): a function's own name (`file.py:f` and
    `module:f` give `f`), a model folder's last part; made unique with a suffix (`_2`, ...)."""
    out: list[str] = []
    for name in names:
        base = name.replace(",", "_").replace("\n", " ")
        if ":" in base:
            base = base.rpartition(":")[2].rpartition(".")[2] or base
        elif "/" in base.strip("/"):
            base = base.rstrip("/").rpartition("/")[2]
        candidate, i = base, 2
        while candidate in out:
            candidate, i = f"{base}_{i}", i + 1
        out.append(candidate)
    return out


def build_reward(cfg, device, reward=None) -> RewardModel:
    """The run's reward: the one reward model of the config (or `reward`, a loaded one) as it is, or a
    `RewardSet` when there are several rewards, reward functions, weights, or a model that reads the prompt."""
    from ..lm import rewards as lm_rewards
    from ..lm.reward_fns import load_reward_fn
    from .checkpoint import quiet_transformers

    if reward is None:
        kw = {"reward_input": cfg.reward_input} if cfg.reward_input is not None else {}
        with quiet_transformers():
            members = [lm_rewards.load_reward(name, label=cfg.reward_label, device=device, **kw)
                       for name in cfg.reward_models]
    else:
        members = list(reward) if isinstance(reward, (list, tuple)) else [reward]
    members = [m if isinstance(m, RewardModel) else RewardFunction(m) for m in members]
    members += [load_reward_fn(f) if isinstance(f, str) else RewardFunction(f) for f in cfg.reward_fn]
    alone = members[0] if len(members) == 1 else None
    if alone is not None and not isinstance(alone, RewardFunction) and cfg.reward_weights is None \
            and getattr(alone, "reward_input", "completion") == "completion":
        return alone  # scored by `score`: `algorithm.score`, as the teaching step does
    return RewardSet(members, cfg.reward_weights, cfg.reward_aggregation)


class Scored:
    """One step's scores from a `RewardSet` (see `score_batch`)."""

    def __init__(self, score, valid, logged, columns, matrix):
        self.score, self.valid, self.logged, self.columns, self.matrix = score, valid, logged, columns, matrix


def score_batch(trainer, batch, step: int) -> Scored:
    """Score this process's batch with the trainer's `RewardSet`: every reward on every row (with the rows'
    prompts and dataset columns), gathered over processes, combined by the set's aggregation.

    score (N,): what this process trains on; valid (N,) bool: rows some reward applies to; logged
    (N_valid_total,): the weighted sum of the raw rewards over all processes' valid rows (`reward_mean`);
    columns: `reward/<name>_mean` / `_std` when there are several rewards."""
    rs, G = trainer.reward_set, trainer.config.num_samples
    prompts, columns = trainer.prompt_data.rows(trainer.prompt_indices_for_step(step), repeat=G)
    error = None
    try:
        matrix, none_mask = rs.score_all(batch.texts, prompts, columns, step=step)  # (N, K) each
    except RewardFunctionError as e:  # every process must learn of it, or the others wait in a gather
        error = e
    if trainer.num_processes > 1:  # every process raises the first failing process's message
        from accelerate.utils import gather_object

        messages = gather_object([None if error is None else str(error)])
        failed = [(i, m) for i, m in enumerate(messages) if m is not None]
        if failed:
            raise RewardFunctionError(f"process {failed[0][0]} of {trainer.num_processes}: {failed[0][1]}")
    if error is not None:
        raise error
    matrix_all = trainer.gather(matrix.to(trainer.device))  # (N_total, K), prompt-major over processes
    none_all = trainer.gather(none_mask.to(trainer.device, torch.float32)) > 0.5  # as numbers: gloo has no bool
    score_all, valid_all = combine_rewards(matrix_all, none_all, rs.weights, rs.aggregation, G)
    logged, _ = combine_rewards(matrix_all, none_all, rs.weights, "sum_then_normalize", G)
    n = len(batch.texts)
    mine = slice(trainer.process_index * n, (trainer.process_index + 1) * n)
    valid = valid_all[mine]
    return Scored(score=score_all[mine].to(batch.completion_ids.device), valid=None if bool(valid_all.all()) else valid,
                  logged=logged[valid_all], columns=rs.columns(matrix_all.cpu(), none_all.cpu())
                  if len(rs.rewards) > 1 else {}, matrix=matrix)


def score(reward, batch) -> torch.Tensor:
    """`algorithm.score(reward, batch)`, the (N,) float32 rewards of one reward, with a GPT-2 sequence classifier
    (tiny-sentiment) run in plain tensor calls (`classifier_score`). Naive twin: `algorithm.score` (the reward's own
    `score` and transformers' forward), the same values (tests/engine/test_gpt2_forward.py)."""
    rewards = classifier_score(reward, batch.texts)
    if rewards is None:
        return algorithm.score(reward, batch)
    return rewards.to(batch.completion_ids.device, torch.float32)


def classifier_score(reward, texts: Sequence[str]) -> torch.Tensor | None:
    """`HFClassifierReward.score(texts)` with its model's forward replaced by `gpt2.classifier_logits`, for a
    reward that reads the completion only; None where that does not apply (another reward or model, texts
    all empty). Naive twin: `reward.score(texts)`."""
    from ..lm.rewards import HFClassifierReward
    from .gpt2 import classifier_logits

    if type(reward) is not HFClassifierReward or reward.needs_prompts:
        return None
    device = next(reward.model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), reward.batch_size):
            enc = reward._encode(list(texts[start:start + reward.batch_size]), None)
            if enc["input_ids"].shape[1] == 0 or set(enc) != {"input_ids", "attention_mask"}:
                return None  # the reward's own padding of empty texts, or segment ids
            logits = classifier_logits(reward.model, enc["input_ids"].to(device), enc["attention_mask"].to(device))
            if logits is None:
                return None
            logits = logits.float()  # (B, num_labels), as HFClassifierReward.score reads them
            if reward.single_output:
                r = logits[:, 0]
            elif reward.multi_label:
                r = torch.sigmoid(logits[:, reward.index])
            else:
                r = torch.softmax(logits, dim=-1)[:, reward.index]
            out.append(r.cpu())
    return torch.cat(out) if out else torch.zeros(0)
