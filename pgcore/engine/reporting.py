"""Where a run's numbers go besides its CSV/JSON/PNG files (which are always written): `--report-to tensorboard`
(event files in `<output_dir>/tensorboard/`), `--report-to wandb` (a W&B run; `WANDB_MODE=offline` keeps it on
disk, under `WANDB_DIR`), and `--log-completions N` (N sampled rows per step appended to
`<output_dir>/completions.jsonl`: step, prompt, completion, reward, and each reward of several).

Nothing here is read back by the run, and nothing draws random numbers: a run logs the same numbers whatever it
reports to, and resumes bitwise. Every writer is opened at the first logged step (a run refused at its first
step writes nothing). On resume, TensorBoard purges the events after the checkpoint's step and
completions.jsonl drops its rows after it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

from ..files import atomic_write_text
from .metrics import jsonable

__all__ = ["Reporters", "check_reporters", "COMPLETIONS_NAME", "TENSORBOARD_DIR"]

COMPLETIONS_NAME = "completions.jsonl"
TENSORBOARD_DIR = "tensorboard"
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_reporters(cfg) -> None:
    """ValueError (one line) when a reporter's package is missing or there is no output_dir to write to."""
    for name in _names(cfg):
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ValueError(f"report_to {name!r} needs the {_PACKAGES[name]} package; accepted: pip install "
                             f"{_PACKAGES[name]} (or pgcore[track]), or --report-to none")
    if (_names(cfg) or cfg.log_completions) and not cfg.output_dir:
        raise ValueError("report_to / log_completions write beside the metrics, but output_dir is None; "
                         "accepted: an output_dir")


def _names(cfg) -> list[str]:
    return [n for n in cfg.report_to.split(",") if n and n != "none"]


def _scalars(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class Reporters:
    """The run's reporters (main process only): `log(trainer, row)` after each step, `close()` at the end."""

    def __init__(self, trainer):
        cfg = trainer.config
        self.names = _names(cfg)
        self.num_completions = cfg.log_completions
        self.folder = Path(cfg.output_dir) if cfg.output_dir else None
        self.start_step = trainer.global_step  # the run (re)starts after this step
        self._tb = self._wandb = self._completions = None
        self._opened = False

    def _open(self, tr) -> None:
        self._opened = True
        cfg = tr.config
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.folder / TENSORBOARD_DIR), purge_step=self.start_step + 1
                                     if self.start_step else None)
        if "wandb" in self.names:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "pgcore-lm"), name=cfg.run_name,
                                     dir=os.environ.get("WANDB_DIR") or str(self.folder), config=cfg.to_dict(),
                                     reinit="finish_previous")
        if self.num_completions:
            path = self.folder / COMPLETIONS_NAME
            if self.start_step and path.is_file():  # a resumed run: drop the rows a killed run wrote after
                kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if line.strip() and json.loads(line)["step"] <= self.start_step]
                atomic_write_text(path, "".join(line + "\n" for line in kept))
            elif path.is_file():
                path.unlink()  # a new run into this folder starts a new file, as the CSV does
            self.folder.mkdir(parents=True, exist_ok=True)
            self._completions = open(path, "a", encoding="utf-8")

    def log(self, tr, row: dict) -> None:
        if not self.names and not self.num_completions:
            return
        if not self._opened:
            self._open(tr)
        step, scalars = row["step"], _scalars(row)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._completions is not None:
            for r in completion_rows(tr, step, self.num_completions):
                self._completions.write(json.dumps(jsonable(r), ensure_ascii=False) + "\n")
            self._completions.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._completions is not None:
            self._completions.close()
        self._tb = self._wandb = self._completions = None


def completion_rows(tr, step: int, n: int) -> list[dict]:
    """n rows of the step's batch, evenly spread (no random draw): prompt, completion, reward, and with several
    rewards each one (None where it did not apply)."""
    batch, rewards = tr.last_batch, tr.last_rewards
    total = len(batch.texts)
    picks = sorted({i * total // min(n, total) for i in range(min(n, total))})
    reward_set = getattr(tr, "reward_set", None)
    rows = []
    for i in picks:
        row = {"step": step, "prompt": tr.raw_prompts[tr.prompt_indices_for_step(step)[i // batch.num_samples]],
               "completion": batch.texts[i]}
        if reward_set is None:
            row["reward"] = float(rewards[i])
        else:
            values = [None if math.isnan(v) else v for v in rewards[i].tolist()]
            w = reward_set.weights.tolist()
            given = [(v, wk) for v, wk in zip(values, w) if v is not None]
            row["reward"] = sum(v * wk for v, wk in given) if given else None
            if len(values) > 1:
                row["rewards"] = dict(zip(reward_set.names, values))
        rows.append(row)
    return rows
