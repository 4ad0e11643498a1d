"""Data-parallel `pgcore.lm` training on several processes (GPUs or machines) with Hugging Face Accelerate.

    accelerate launch --multi_gpu --num_processes 2 -m pgcore.lm --reward-model tiny-sentiment
    torchrun --nproc_per_node 2 -m pgcore.lm --reward-model tiny-sentiment

The command line picks `AccelerateTrainer` by itself when a launcher started several processes
(WORLD_SIZE > 1); a plain `python -m pgcore.lm` has no Accelerator, no process group, no DDP.
Each step, with P processes:

    1. every process draws the same batch_size prompts and keeps its own batch_size / P of them
    2. it samples num_samples completions of each with its own seed stream (run seed, step, process)
    3. the scores (reward - KL penalty) of all processes are gathered, so RLOO / group baselines and
       the batch mean see the whole batch, exactly as one process would
    4. each process's loss is rescaled so that DDP's average of the P gradients is the gradient of the
       token-level mean loss over the whole batch (the single-process loss on the concatenated batch)
    5. rewards, KL, entropy, lengths and the loss are gathered for the metrics; only the main process
       writes metrics, plots, checkpoints and the final model

A checkpoint records the world size; it resumes only on the same number of processes (the prompts
each process sees, and so the run, depend on it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from . import checkpoint as ckpt_lib
from ..utils import get_device, set_seed
from .config import LMConfig
from .prompt_data import load_prompt_data
from .trainer import Trainer

__all__ = ["AccelerateTrainer"]

PRECISIONS = ("no", "bf16")


class AccelerateTrainer(Trainer):
    """`Trainer` on every process of an `accelerate launch` / `torchrun` job: the model wrapped in
    DistributedDataParallel by `accelerator.prepare_model`, gradients averaged in
    `accelerator.backward`, per-process tensors concatenated with `accelerator.gather`.

    Same arguments as `Trainer`, plus `accelerator` (default: a new `Accelerator`, which reads the
    launcher's environment; on CPU it uses the gloo backend). The policy, when not given, is loaded on
    the process's own device. A failure while loading on any process (a ValueError or OSError) is
    raised on every process, so none waits forever for the others.
    """

    def __init__(self, config: LMConfig | None = None, *, policy=None, reward=None,
                 prompts: Sequence[str] | None = None, resume: str | Path | bool | None = None, accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import gather_object

        cfg = config if config is not None else LMConfig()
        wanted = torch.device(cfg.device) if cfg.device is not None else None
        # Accelerate runs several CPU processes (gloo) only when told cpu=True; else it takes each for a single run
        self.accelerator = acc = accelerator if accelerator is not None else Accelerator(
            cpu=(wanted or get_device()).type == "cpu")
        self.num_processes, self.process_index = acc.num_processes, acc.process_index
        launched = os.environ.get("WORLD_SIZE", "1")
        if launched.isdigit() and int(launched) != self.num_processes:
            raise ValueError(f"the launcher started WORLD_SIZE={launched} processes but Accelerate sees "
                             f"{self.num_processes}; accepted: a launch Accelerate recognizes "
                             "(accelerate launch, torchrun)")
        error: BaseException | None = None
        try:
            if acc.mixed_precision not in PRECISIONS:
                raise ValueError(f"mixed precision {acc.mixed_precision!r} is not supported (the loss is not "
                                 f"scaled); accepted: {', '.join(PRECISIONS)}")
            if wanted is not None and (wanted.type != acc.device.type or
                                       (wanted.index is not None and self.num_processes > 1)):
                raise ValueError(f"device {cfg.device!r} does not fit this {self.num_processes}-process launch on "
                                 f"{acc.device.type}; accepted: {acc.device.type} or none (each process "
                                 "uses the device Accelerate gives it)")
            if cfg.batch_size % self.num_processes:
                raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.num_processes} processes")
            from ..lm import models

            if prompts is None and cfg.prompts is not None:  # the cheap check first: a missing file fails
                prompts = load_prompt_data(cfg.prompts, cfg.prompt_column)  # before any model loads
            if policy is None:  # on this process's device (cuda:<local rank>, or cpu)
                set_seed(cfg.seed)
                with ckpt_lib.quiet_transformers():
                    policy = models.load_policy(cfg.model, device=acc.device)
            super().__init__(cfg, policy=policy, reward=reward, prompts=prompts, resume=resume)
        except (ValueError, OSError) as e:
            error = e
        # every process learns whether any process failed to start, and why (lowest rank first)
        messages = gather_object([None if error is None else (str(error).splitlines() or [type(error).__name__])[0]])
        failed = [(i, m) for i, m in enumerate(messages) if m is not None]
        if failed:
            if error is not None and len(failed) == self.num_processes:
                raise error
            i, message = failed[0]
            raise ValueError(f"process {i} of {self.num_processes}: {message}") from error
        self.model = acc.prepare_model(self.model)  # DDP: same start on every process, gradients averaged
        # no DDP for the frozen reference, but the same mixed precision as the policy (KL is 0 at step 1)
        self.ref_model = acc.prepare_model(self.ref_model, evaluation_mode=True)

    # ------------------------------------------------------------------ the hooks Trainer calls
    @property
    def is_main_process(self) -> bool:
        """Only the global main process (rank 0) writes files."""
        return self.process_index == 0

    @property
    def unwrapped_model(self):
        """The model inside the DDP wrapper: generation, checkpoints and save_pretrained use it."""
        return self.accelerator.unwrap_model(self.model)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate `tensor` (same shape on every process) along dim 0, in process order."""
        return self.accelerator.gather(tensor)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate; DDP all-reduces (averages) the gradients over the processes here."""
        self.accelerator.backward(loss)

    def end(self) -> None:
        """Wait for every process, then close the process group (call once, at the end of the run)."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
