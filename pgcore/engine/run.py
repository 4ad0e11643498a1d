"""The run around the step: the loop to `config.steps`, checkpoints, the metrics files, the final
model, resume (`resume.py`), the reporters (`reporting.py`), Ctrl-C / SIGTERM, the NaN guard, a reward
function that fails, and a full disk (`faults.py`).

Nothing here knows how a step computes its update (minGPT's trainer rule): `Run(trainer)` calls
`trainer.step()`, which returns one metrics row, and reads the trainer's `config`, `policy`, `reward`,
`raw_prompts`, `model` / `unwrapped_model`, `tokenizer`, `optimizer`, `scheduler`, `logger` (its `history`),
`global_step`, `reference_sha256`, and its process hooks (`is_main_process`, `num_processes`, `gather`,
`device`); it sets `global_step`, `last_checkpoint` and `resumed_from` on the trainer.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import checkpoint as ckpt_lib
from . import resume as resume_lib
from .faults import DiskFullError, disk_full, folder_bytes, is_disk_full
from .metrics import environment_info, plot_curves, write_csv, write_json
from ..files import atomic_dir
from ..lm.reward_fns import RewardFunctionError
from .locks import FolderInUseError, FolderLock, check_writable_dir
from .reporting import Reporters

__all__ = ["Run", "check_output_places", "LMResult", "NonFiniteLossError", "RunTerminated", "CSV_COLUMNS", "VERIFIER_COLUMNS",
           "PANELS", "signals_deferred", "DiskFullError", "RewardFunctionError"]

CSV_COLUMNS = (
    "step", "loss", "reward_mean", "reward_std", "kl", "entropy", "completion_len", "grad_norm", "lr",
    "tokens", "time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer",
)
# Extra columns of runs with a verifier reward (notebook 05), between "tokens" and "time"; None where a step has no
# value (no correct / no incorrect completion; held-out pass@1 only every eval_every steps).
VERIFIER_COLUMNS = ("zero_spread_frac", "all_right_frac", "len_correct", "len_incorrect", "heldout_pass1")
PANELS = [("reward", "reward_mean", "reward_std"), ("KL to reference", "kl"), ("entropy per token", "entropy"),
          ("loss (not progress)", "loss"), ("completion length", "completion_len"),
          ("clipped share (ratio above the cap)", "clip_high_frac"), ("KL(pi_old || pi), last update", "kl_old")]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN/inf; the run stopped before applying that update."""


@dataclass
class LMResult:
    """What `train` returns.

    """

    policy: Any
    """the trained Policy (model + tokenizer), trained in place"""
    history: list[dict]
    """one metrics dict per step (the rows of training_metrics.csv)"""
    summary: dict
    """what summary.json holds"""
    output_dir: Path | None
    """folder of the four metrics files (None when not written)"""
    model_path: Path | None
    """the final save_pretrained folder (None when model_dir is None or the run did not finish)"""
    last_checkpoint: Path | None
    """newest checkpoint-<step>/ folder written (None if none)"""
    status: str = "completed"
    """completed or stopped (a callback asked to stop); summary.json may also read running, interrupted
    (Ctrl-C), terminated (SIGTERM) or nonfinite"""

    @property
    def rewards(self) -> list[float]:
        """reward_mean of every step."""
        return [row["reward_mean"] for row in self.history]

    @property
    def reward_rise(self) -> float:
        """Mean reward of the last 20 steps minus that of the first 10 (the course's yardstick)."""
        return _reward_rise(self.history)


def _reward_rise(history: Sequence[dict]) -> float:
    r = [row["reward_mean"] for row in history]
    if not r:
        return float("nan")
    return float(np.mean(r[-20:]) - np.mean(r[:10]))


class RunTerminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and most schedulers send before a kill) stopped the run; like
    Ctrl-C, a checkpoint and the outputs were saved first. The CLI exits with status 143 (128 + 15)."""


DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so an update is applied and recorded whole or not
    at all; then deliver them to the handlers that were in place (Ctrl-C: KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for s in dict.fromkeys(received):
        signal.raise_signal(s)


def _fmt(x, spec: str) -> str:
    """`format(x, spec)`, or "-" for a value not computed (None)."""
    return "-" if x is None else format(x, spec)


def check_output_places(cfg) -> None:
    """Every place a run writes must be a folder it can write (ValueError, one line, before any work)."""
    for folder, what in ((cfg.output_dir, "output dir"), (cfg.checkpoint_dir, "checkpoint dir"),
                         (cfg.model_dir, "model dir")):
        if folder:
            check_writable_dir(folder, what)
    if cfg.model_dir:
        check_writable_dir(Path(cfg.model_dir) / cfg.run_name, "model folder")


class Run:
    """The run around a trainer's steps (see the module docstring): `Run(trainer).train()`."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._sigterm = False

    # ------------------------------------------------------------------ the run
    def train(self, callbacks: Sequence[Callable[[Any, dict], Any]] = (), progress: bool = False) -> LMResult:
        """Run to `config.steps`: checkpoints every save_every steps and at the end, the four metrics
        files, the final model in <model_dir>/<run_name>/.

        callbacks: called as `cb(trainer, row)` after every step; a callback returning True stops
        the run early (status "stopped"). Ctrl-C saves a checkpoint and the metrics files, then
        re-raises KeyboardInterrupt; SIGTERM does the same and raises `RunTerminated` (on several
        processes, every process finishes the step it is in and all stop after the same step). A
        NaN/inf loss writes the metrics files (no new checkpoint: the last good one stays) and
        raises NonFiniteLossError. Either way, if no step finished in this call, no metrics file or
        checkpoint is touched. The output and checkpoint folders are locked for the run
        (`locks.FolderLock`): a second run into them raises `FolderInUseError`.
        """
        start = time.perf_counter()
        try:
            return self._train(callbacks, progress)
        except Exception as e:
            if not is_disk_full(e):
                raise
            error = e if isinstance(e, DiskFullError) else DiskFullError(self.trainer.config.output_dir or ".", None,
                                                                          None)
            self._write_what_fits(wall_seconds=time.perf_counter() - start, error=error)
            raise error from None

    def _train(self, callbacks, progress) -> LMResult:
        from tqdm.auto import tqdm

        tr = self.trainer

        cfg = tr.config
        start, first_step = time.perf_counter(), tr.global_step
        status = "completed"
        locks = self._lock_folders()
        reporters = Reporters(tr) if tr.is_main_process else None  # TensorBoard, W&B, completions.jsonl
        self._sigterm = False
        previous = self._install_sigterm()
        bar = tqdm(total=cfg.steps, initial=min(tr.global_step, cfg.steps), disable=not progress,
                   desc="policy gradient", unit="step")
        try:
            while tr.global_step < cfg.steps:
                row = tr.step()
                if reporters is not None:
                    reporters.log(tr, row)
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=_fmt(row["kl"], ".3f"))
                if cfg.save_every and tr.global_step % cfg.save_every == 0 and tr.global_step < cfg.steps:
                    self.save_checkpoint()
                    self.write_outputs(status="running", wall_seconds=time.perf_counter() - start, plot=False)
                if self._terminate_requested():
                    raise RunTerminated
                if any([cb(tr, row) is True for cb in callbacks]):
                    status = "stopped"
                    break
        except KeyboardInterrupt as stop:
            bar.close()
            if tr.global_step > first_step:  # nothing new: leave existing files alone
                self.save_checkpoint()
                status = "terminated" if isinstance(stop, RunTerminated) else "interrupted"
                self.write_outputs(status=status, wall_seconds=time.perf_counter() - start)
            raise
        except NonFiniteLossError:
            bar.close()
            if tr.global_step > first_step:
                self.write_outputs(status="nonfinite", wall_seconds=time.perf_counter() - start)
            raise
        except RewardFunctionError:  # at the first step: bad input, nothing written; later: keep the run so far
            bar.close()
            if tr.global_step > first_step:
                self.save_checkpoint()
                self.write_outputs(status="reward_error", wall_seconds=time.perf_counter() - start)
            raise
        finally:
            if reporters is not None:
                reporters.close()
            self._restore_sigterm(previous)
            for lock in locks:
                lock.release()
        bar.close()
        self.save_checkpoint()
        model_path = self.save_model()
        summary = self.write_outputs(status=status, wall_seconds=time.perf_counter() - start, model_path=model_path)
        return LMResult(policy=tr.policy, history=tr.history, summary=summary,
                        output_dir=Path(cfg.output_dir) if cfg.output_dir and tr.is_main_process else None,
                        model_path=model_path, last_checkpoint=tr.last_checkpoint, status=status)

    # ------------------------------------------------------------------ SIGTERM, locks, output places
    def _install_sigterm(self):
        """SIGTERM -> RunTerminated at once (one process; deferred while an update is applied), or a
        flag every process checks after the step (several processes: they must stop together)."""
        tr = self.trainer
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum, frame):
            self._sigterm = True
            if tr.num_processes == 1:
                raise RunTerminated

        return signal.signal(signal.SIGTERM, on_sigterm)

    @staticmethod
    def _restore_sigterm(previous) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    def _terminate_requested(self) -> bool:
        """Did any process receive SIGTERM? (A gather: every process answers the same after each step.)"""
        tr = self.trainer
        if tr.num_processes == 1:
            return self._sigterm
        import torch

        flags = tr.gather(torch.tensor([float(self._sigterm)], device=tr.device))
        return bool(flags.sum().item() > 0)

    def _lock_folders(self) -> list[FolderLock]:
        """The main process claims the output and checkpoint folders for this run; FolderInUseError (on
        every process of a distributed run, so none waits for the others) when another run holds one."""
        tr = self.trainer
        cfg = tr.config
        locks: list[FolderLock] = []
        error: FolderInUseError | None = None
        if tr.is_main_process:
            seen = set()
            try:
                for folder, what in ((cfg.output_dir, "output dir"), (cfg.checkpoint_dir, "checkpoint dir")):
                    if folder and Path(folder).resolve() not in seen:
                        seen.add(Path(folder).resolve())
                        locks.append(FolderLock(folder, what).acquire())
            except FolderInUseError as e:
                error = e
        if tr.num_processes > 1:
            import torch

            if tr.gather(torch.tensor([float(error is not None)], device=tr.device)).sum().item() > 0 \
                    and error is None:
                error = FolderInUseError("the main process found its output or checkpoint folder in use by "
                                         "another run; accepted: other folders")
        if error is not None:
            for lock in locks:
                lock.release()
            raise error
        return locks

    # ------------------------------------------------------------------ files (main process only)
    def save_checkpoint(self) -> Path | None:
        """Write checkpoint-<global_step>/ (unless there is no checkpoint_dir, no step yet, or it exists)."""
        tr = self.trainer
        cfg = tr.config
        if not cfg.checkpoint_dir or not tr.is_main_process or tr.global_step == 0:
            return None
        path = Path(cfg.checkpoint_dir) / f"checkpoint-{tr.global_step}"
        if tr.last_checkpoint == path and path.exists():
            return path
        with disk_full(path, self._bytes_needed(tr.last_checkpoint, 3)):  # the partial folder is gone by then
            tr.last_checkpoint = ckpt_lib.save_checkpoint(
            cfg.checkpoint_dir, tr.global_step, model=tr.unwrapped_model, tokenizer=tr.tokenizer,
            optimizer=tr.optimizer, scheduler=tr.scheduler, history=tr.history,
            config=cfg.to_dict(), extra=self._identity(), keep_last=cfg.keep_last,
            )
        return tr.last_checkpoint

    def _bytes_needed(self, like: Path | None, copies: int) -> int:
        """Bytes a checkpoint (copies=3: weights and AdamW's two moments) or a model (1) takes: the size of the
        last one written (`like`), else the model's tensors times `copies`."""
        if like is not None and Path(like).is_dir():
            return folder_bytes(like)
        model = self.trainer.unwrapped_model
        unique = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}  # tied once
        moments = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        return sum(unique.values()) + (copies - 1) * moments

    def save_model(self) -> Path | None:
        """save_pretrained the policy and its tokenizer to <model_dir>/<run_name>/, atomically."""
        tr = self.trainer
        cfg = tr.config
        if not cfg.model_dir or not tr.is_main_process:
            return None
        path = Path(cfg.model_dir) / cfg.run_name
        like = tr.last_checkpoint / "model" if tr.last_checkpoint else None
        with disk_full(path, self._bytes_needed(like, 1)), atomic_dir(path) as tmp, ckpt_lib.quiet_transformers():
            tr.unwrapped_model.save_pretrained(tmp)
            tr.tokenizer.save_pretrained(tmp)
        return path

    def summary(self, status: str = "completed", wall_seconds: float | None = None, model_path=None) -> dict:
        """What summary.json holds: config, models, reward label, first/last reward, steps, times, versions."""
        tr = self.trainer
        h = tr.history
        rewards = [row["reward_mean"] for row in h]
        verifier = {}
        if tr.config.eval_every:  # held-out pass@1 (verifier rewards, notebook 05)
            verifier = {"heldout_pass1_first": h[0].get("heldout_pass1") if h else None,
                        "heldout_pass1_final": tr.heldout_pass1_final}
        return {
            "status": status,
            "config": tr.config.to_dict(),
            "share_prompt": tr.share_prompt,  # the config's, resolved (None there: automatic)
            "model": tr.policy.name,
            "reward_model": tr.reward.name,
            "reward_label": tr.reward.label,
            "steps": tr.global_step,
            "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None,
            "reward_first10_mean": float(np.mean(rewards[:10])) if rewards else None,
            "reward_last20_mean": float(np.mean(rewards[-20:])) if rewards else None,
            "reward_rise": _reward_rise(h) if rewards else None,
            "kl_last": next((row["kl"] for row in reversed(h) if row["kl"] is not None), None),
            **verifier,
            "train_seconds": float(sum(row["time"] for row in h)),
            "wall_seconds": wall_seconds,
            "resumed_from": str(tr.resumed_from) if tr.resumed_from else None,
            "last_checkpoint": str(tr.last_checkpoint) if tr.last_checkpoint else None,
            "final_model": str(model_path) if model_path else None,
            "device": str(tr.device),
            "world_size": tr.num_processes,
            "num_parameters": sum(p.numel() for p in tr.model.parameters()),
            "versions": environment_info(),
        }

    def write_outputs(self, status: str = "completed", wall_seconds: float | None = None, model_path=None,
                      plot: bool = True) -> dict:
        """Write the metrics files (main process only; the plot only when `plot`). Returns the summary."""
        tr = self.trainer
        summary = self.summary(status, wall_seconds, model_path)
        if tr.is_main_process and tr.logger.output_dir is not None:
            with disk_full(tr.logger.output_dir):
                tr.logger.write(summary=summary, plot=plot and bool(tr.history))
        return summary

    def _write_what_fits(self, wall_seconds: float | None, error: BaseException) -> None:
        """After a full disk: each metrics file that still fits (summary.json first: it says what happened)."""
        tr = self.trainer
        paths = tr.logger.paths if tr.is_main_process else {}
        if not paths:
            return
        summary = {**self.summary("disk_full", wall_seconds), "error": str(error)}
        writes = [("summary", lambda p: write_json(p, summary)), ("csv", lambda p: write_csv(tr.history, p)),
                  ("history", lambda p: write_json(p, tr.history))]
        if tr.history:
            writes.append(("curves", lambda p: plot_curves(tr.history, p, tr.logger.panels, title=tr.logger.title)))
        for name, write in writes:
            try:
                write(paths[name])
            except Exception as e:  # another full write: leave that file as it was (atomic writes)
                if not is_disk_full(e):
                    raise

    # ------------------------------------------------------------------ resume (resume.py)
    def _identity(self) -> dict:
        """What a checkpoint must agree on besides the config (`resume.identity`)."""
        return resume_lib.identity(self.trainer)

    def resume(self, resume: str | Path | bool) -> None:
        """Load checkpoint `resume` into the trainer after checking it belongs to this run (`resume.resume`)."""
        resume_lib.resume(self.trainer, resume)
