"""The engine: what the CLI and engineers run. `pgcore.lm.algorithm`'s step, fast, with files around it.

- `config`: `LMConfig`, the algorithm's `Args` plus models, files, resume and speed settings
- `trainer`: `Trainer` (the fast step, `compute_loss` held equal to the algorithm's) and `train`
- `sampling`, `logprobs`, `kv_cache`: the fast paths, each naming its naive twin in `pgcore.lm`
- `policy_loss`: the loss of one update and the updates on a reused batch (PPO clip, CISPO, GSPO, mu > 1)
- `run`: the loop, checkpoints, metrics files, Ctrl-C / SIGTERM, the NaN guard; `resume`: exact resume
- `rewards`: several rewards and reward functions, their weights, aggregation and None-aware advantages
- `prompt_data`: prompt datasets (.jsonl, .csv, .parquet, `datasets` folders) and their other columns
- `reporting`: TensorBoard, W&B and completions.jsonl; `faults`: a full disk, exit statuses 3 and 4
- `checkpoint`, `metrics`, `locks`: checkpoint folders, the four metrics files, one run per folder
- `distributed`: `AccelerateTrainer`, data parallel on several processes; `cli`: `python -m pgcore.lm`

The rules (tests/test_imports.py, tests/engine/test_engine_equals_algorithm.py): nothing outside this folder
imports it, and its step equals the algorithm's on the same batch.
"""
from __future__ import annotations

import importlib

_NAMES = {"LMConfig": "config", "LMResult": "run", "NonFiniteLossError": "run", "RunTerminated": "run",
          "CSV_COLUMNS": "run", "VERIFIER_COLUMNS": "run", "REUSE_COLUMNS": "policy_loss",
          "AccelerateTrainer": "distributed",
          "Trainer": "trainer", "train": "trainer"}
__all__ = list(_NAMES)


def __getattr__(name: str):  # lazy: `python -m pgcore.lm --help` must not import torch and transformers
    if name not in _NAMES:
        raise AttributeError(f"module 'pgcore.engine' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    return value
