"""The engine's loss of one update, and the updates on a reused batch (PPO clip, CISPO, GSPO; mu > 1).

Naive twins: `pgcore.lm.algorithm.policy_loss` (which `update_loss` calls for every policy loss but the plain
one, then adds the entropy bonus and the data-parallel token weight) and `pgcore.lm.algorithm.reuse_batch` (the
updates_per_batch x minibatches updates of one batch, which `reuse_updates` runs on the engine's log-prob fast
paths): tests/engine/test_engine_equals_algorithm.py holds the loss, the gradients and the updated weights equal.
"""
from __future__ import annotations

import torch

from .. import estimators as est
from .. import surrogates
from ..lm.algorithm import minibatch_rows, policy_loss

__all__ = ["REUSE_COLUMNS", "backward_checked", "reuses_batch", "update_loss", "ratio_stats", "ratio_columns", "reuse_updates"]

# Columns of runs with a ratio (policy_loss ppo / cispo, or updates_per_batch / minibatches > 1): shares of
# completion tokens averaged over the step's updates, the ratio's range over them, kl_old at the last update.
REUSE_COLUMNS = ("clip_low_frac", "clip_high_frac", "grad_token_frac", "ratio_mean", "ratio_min", "ratio_max",
                 "kl_old")
_MEANS = ("clip_low_frac", "clip_high_frac", "grad_token_frac", "ratio_mean", "kl_old")


def backward_checked(tr, loss: torch.Tensor, timer, where: str):
    """The NaN guard around one backward: the loss gathered from every process (so all stop together when it is
    not finite), zero_grad, backward, the gradient's norm clipped to max_grad_norm and checked. `where` names
    the step (and update) in the error. Returns (loss_all (num_processes,), grad_norm)."""
    from .run import NonFiniteLossError

    loss_all = tr.gather(loss.detach().reshape(1))  # (num_processes,): their mean is the batch's loss
    if not torch.isfinite(loss_all).all():
        raise NonFiniteLossError(f"loss is {loss_all.mean().item()} at {where}")
    with timer("policy"):
        tr.optimizer.zero_grad(set_to_none=True)
        tr.backward(loss)
    with timer("optimizer"):
        grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), tr.config.max_grad_norm)
    if not torch.isfinite(grad_norm):
        raise NonFiniteLossError(f"gradient norm is {grad_norm.item()} at {where}")
    return loss_all, grad_norm


def reuses_batch(cfg) -> bool:
    """Whether a sampled batch serves more than one update (`algorithm.reuses_batch`)."""
    return cfg.updates_per_batch > 1 or cfg.minibatches > 1


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def update_loss(tr, logps, entropy, old_logps, ref_logps, adv, mask) -> torch.Tensor:
    """The loss of one update on this process's rows: logps / entropy (N, T) with grad, old_logps (N, T) of the
    sampler, ref_logps (N, T) or None, adv (N,)."""
    cfg = tr.config
    if cfg.policy_loss == "pg" and cfg.kl_loss_estimator == "k3" and not cfg.kl_ratio_correction:
        if cfg.loss_aggregation == "token":
            loss = est.pg_loss(logps, adv, mask)  # = -est.aggregate(logps * adv, mask, "token")
        else:
            loss = -est.aggregate(logps * adv.detach()[:, None], mask, cfg.loss_aggregation, cfg.max_new_tokens)
        if cfg.kl_in == "loss" and cfg.kl_coef:
            k3 = est.kl_k3(logps, ref_logps)  # (N, T), with grad
            loss = loss + cfg.kl_coef * est.aggregate(k3, mask, cfg.loss_aggregation, cfg.max_new_tokens)
    else:
        loss = policy_loss(logps, old_logps, ref_logps, adv, mask, cfg)  # LMConfig is an algorithm.Args
    if cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * _masked_mean(entropy, mask)
    if tr.num_processes > 1 and cfg.loss_aggregation == "token":
        # token-level mean over *all* processes: DDP averages gradients, so weigh by the local share
        tokens_all = tr.gather(mask.sum().reshape(1).float()).sum()
        loss = loss * mask.sum().clamp(min=1) * tr.num_processes / tokens_all.clamp(min=1)
    return loss


def ratio_stats(tr, logps, old_logps, adv, mask) -> dict:
    """`pg.ratio_stats` of one update, over all processes' completion tokens."""
    cfg = tr.config
    stats = surrogates.ratio_stats(logps, old_logps, adv, mask, cfg.policy_loss, cfg.clip_eps, cfg.clip_eps_high,
                                   cfg.ratio_level)
    if tr.num_processes > 1:  # token-weighted means; the extremes of all processes
        tokens = mask.sum().float().reshape(1)
        sums = tr.gather(torch.tensor([stats[k] for k in _MEANS], device=tokens.device).reshape(1, -1) * tokens)
        total = tr.gather(tokens).sum().clamp(min=1.0)
        stats.update({k: (sums[:, i].sum() / total).item() for i, k in enumerate(_MEANS)})
        ends = tr.gather(torch.tensor([[stats["ratio_min"], stats["ratio_max"]]], device=tokens.device))
        stats["ratio_min"], stats["ratio_max"] = ends[:, 0].min().item(), ends[:, 1].max().item()
    return stats


def ratio_columns(tr, updates: list[dict]) -> dict:
    """REUSE_COLUMNS of a step from its updates' `ratio_stats`."""
    out = {k: float(sum(u[k] for u in updates) / len(updates)) for k in _MEANS}
    out["ratio_min"] = min(u["ratio_min"] for u in updates)
    out["ratio_max"] = max(u["ratio_max"] for u in updates)
    out["kl_old"] = updates[-1]["kl_old"]  # the furthest pi has moved from the sampler in this step
    return {k: out[k] for k in REUSE_COLUMNS}


def reuse_updates(tr, batch, rew, *, step: int, timer, valid=None):
    """updates_per_batch passes over the batch, one AdamW step per minibatch, each loss against pi_old.

    pi_old's log-probs (and the logged entropy) are computed without grad, before any update, one minibatch at
    a time (the shapes of the updates' forwards, so the first update's ratio is 1 bit for bit); the reference
    and the advantages once, on the whole batch. Each update's per-update `ratio_stats` are kept in
    `tr.last_updates`. Returns (the updates' losses (U * num_processes,), mean gradient norm (tensor), the
    learning rate of the first update, {"kl", "entropy", "ratio": REUSE_COLUMNS})."""
    cfg = tr.config
    slices = minibatch_rows(len(batch), cfg.num_samples, cfg.minibatches)
    parts = [batch.select(rows) for rows in slices]
    with timer("policy"), torch.no_grad(), tr.autocast():  # pi_old: the policy that sampled the batch
        olds = [tr.policy_logps(tr.model, mb, entropy_grad=False) for mb in parts]
    old_logps = torch.cat([o[0] for o in olds]).float()  # (N, T)
    entropy = torch.cat([o[1] for o in olds]).float()  # (N, T), of pi_old: what the step logs
    ref_logps, kl = tr.reference_logps(batch, old_logps, step, timer)
    adv = tr.advantages(rew, kl, valid)  # (N,), once: the minibatches share the batch's baselines
    lr = tr.scheduler.get_last_lr()[0]
    losses, norms, updates = [], [], []
    for epoch in range(cfg.updates_per_batch):
        for rows, mb in zip(slices, parts):
            with timer("policy"), tr.autocast():
                logps, ent = tr.policy_logps(tr.model, mb, entropy_grad=cfg.entropy_coef > 0)
            logps, ent = logps.float(), ent.float()
            ref = None if ref_logps is None else ref_logps[rows]
            loss = update_loss(tr, logps, ent, old_logps[rows], ref, adv[rows], mb.completion_mask)
            stats = ratio_stats(tr, logps, old_logps[rows], adv[rows], mb.completion_mask)
            loss_all, grad_norm = backward_checked(tr, loss, timer, f"step {step}, update {len(norms) + 1}")
            with timer("optimizer"):
                tr.optimizer.step()
                tr.scheduler.step()
            losses.append(loss_all)
            norms.append(grad_norm.detach())
            updates.append({"epoch": epoch, "loss": loss_all.mean().item(), "grad_norm": grad_norm.item(), **stats})
    tr.last_updates = updates
    return (torch.cat(losses), torch.stack(norms).mean(), lr,
            {"kl": kl, "entropy": entropy, "ratio": ratio_columns(tr, updates)})
