"""Exact resume: what a checkpoint must agree on with the run that continues it, and loading it.

Reads the trainer's `config`, `policy`, `reward`, `raw_prompts`, `prompt_data`, `num_processes`,
`reference_sha256`, `unwrapped_model`, `optimizer`, `scheduler`, `logger`; sets `global_step`,
`resumed_from` and `last_checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import checkpoint as ckpt_lib
from .config import RESUMABLE_CHANGES
from .metrics import jsonable

__all__ = ["identity", "resume"]


def identity(tr) -> dict:
    """What a checkpoint must agree on besides the config: model, reward, label, prompt set (and the
    dataset's other columns, when it has some), world size and the reference (the starting weights the KL
    is measured against)."""
    out = {
        "model": tr.policy.name,
        "reward_model": tr.reward.name,
        "reward_label": tr.reward.label,
        "prompts_sha256": hashlib.sha256("\n".join(tr.raw_prompts).encode()).hexdigest(),
        "world_size": tr.num_processes,
        "reference_sha256": tr.reference_sha256,  # the KL anchor: the weights the run started from
    }
    columns = getattr(getattr(tr, "prompt_data", None), "columns", None)
    if columns:  # what reward functions read beside the prompts
        text = json.dumps(jsonable(columns), sort_keys=True, ensure_ascii=False, default=str)
        out["columns_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def resume(tr, resume: str | Path | bool) -> None:
    """Load checkpoint `resume` (a path, or True: the newest in checkpoint_dir) into the trainer, after
    checking it belongs to this run (the same settings, model, reward, prompts, world size, reference)."""
    cfg = tr.config
    if resume is True:
        if not cfg.checkpoint_dir:
            raise ValueError("resume=True needs a checkpoint_dir to look in")
        path = ckpt_lib.latest_checkpoint(cfg.checkpoint_dir)
        if path is None:
            raise ValueError(f"no checkpoint-<step>/ folder in {cfg.checkpoint_dir} to resume from")
    else:
        path = Path(resume)
    ck = ckpt_lib.read_checkpoint(path, tr.unwrapped_model)  # ValueError if corrupt or a different model
    saved, now = ck.config, jsonable(cfg.to_dict())  # as JSON holds them: tuples are lists there
    diffs = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k, now[k]) != now[k]]
    if diffs:
        k = diffs[0]
        raise ValueError(f"checkpoint {path} was made with {k}={saved[k]!r}, this run has {k}={now[k]!r}; "
                         f"accepted: the same settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")
    for k, v in identity(tr).items():
        if ck.extra.get(k, v) != v:
            raise ValueError(f"checkpoint {path} was made with {k}={ck.extra[k]!r}, this run has {k}={v!r}")
    if ck.step != len(ck.history):
        raise ValueError(f"checkpoint {path} is corrupt (step {ck.step} but {len(ck.history)} metrics rows)")
    ck.apply(tr.unwrapped_model, tr.optimizer, tr.scheduler)
    tr.global_step = ck.step
    tr.logger.history = [dict(r) for r in ck.history]
    tr.resumed_from = tr.last_checkpoint = path
