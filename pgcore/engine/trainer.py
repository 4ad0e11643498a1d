"""The engine's trainer: `pgcore.lm.algorithm`'s step, fast, with files, resume and several processes.

Naive twin: `pgcore.lm.algorithm.compute_loss` and its loop. `Trainer.compute_loss` gives the same loss and
gradients on the same batch (tests/engine/test_engine_equals_algorithm.py), with the fast paths: a shared
prompt forward (`sampling.generate_shared`, `logprobs.per_token_logps_shared_prompt`, the reference's
`kv_cache.PromptCache`), a GPT-2's forwards and reward model as plain tensor calls (`gpt2.py`, `decode.py`,
`rewards.classifier_score`), `selective_log_softmax`'s backward and the logged entropy from its pass, bf16
autocast, no reference forward when no KL is used, fused AdamW, and data-parallel hooks
(`distributed.AccelerateTrainer`). A reused batch (mu > 1,
minibatches) runs `policy_loss.reuse_updates`, whose naive twin is `algorithm.reuse_batch`. Around the step,
`run.TrainingRun` holds the loop, checkpoints, metrics files, resume, Ctrl-C / SIGTERM and the NaN guard.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .. import estimators as est
from ..lm.algorithm import lm_advantages, step_prompt_indices, stream_seed
from ..lm.sampling import generate
from ..utils import get_device, set_seed
from . import checkpoint as ckpt_lib
from .checkpoint import weights_sha256
from .config import LMConfig
from .fused import fuse_gelu
from .kv_cache import PromptCache
from .logprobs import per_token_logps, per_token_logps_shared_prompt
from .metrics import MetricsLogger, StepTimer
from .policy_loss import backward_checked, ratio_columns, ratio_stats, reuse_updates, reuses_batch, update_loss
from .prompt_data import PromptData, format_prompt_data, load_prompt_data, prompt_data_from_rows
from .reporting import check_reporters
from .rewards import RewardSet, build_reward, masked_advantages, score, score_batch
from .run import PANELS, LMResult, Run, check_output_places, signals_deferred
from .sampling import generate_shared

__all__ = ["Trainer", "train"]


class Trainer:
    """The LM policy-gradient loop, one `step()` at a time, or `train()` for the whole run with
    checkpoints, metrics files, Ctrl-C handling and the NaN guard.

    policy / reward / prompts: already loaded objects (else loaded from the config's names). reward may also be
    a reward function or a list of rewards (`rewards.build_reward`); prompts a list of strings, of dataset rows
    (dicts), or a `PromptData`. The policy is trained in place. resume: a checkpoint-<step>/ folder, or True for the newest one
    in config.checkpoint_dir; it is read and checked against this run before anything is written.

    Distributed runs (`distributed.AccelerateTrainer`) override the hooks at the end: `num_processes`,
    `process_index`, `gather`, `backward`; only the main process writes files. With one process they are
    identities. The run around the steps (loop, files, resume, signals) is `run.Run`, composed, not inherited.
    """

    num_processes: int = 1
    process_index: int = 0

    def __init__(self, config: LMConfig | None = None, *, policy=None, reward=None,
                 prompts: Sequence[str] | None = None, resume: str | Path | bool | None = None):
        self.config = cfg = config if config is not None else LMConfig()
        check_output_places(cfg)  # an unusable output path fails here, before any model loads
        check_reporters(cfg)  # --report-to's package is installed
        if cfg.batch_size % self.num_processes:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.num_processes} processes")
        set_seed(cfg.seed)
        from ..lm import models

        if policy is None:
            with ckpt_lib.quiet_transformers():
                policy = models.load_policy(cfg.model, device=get_device(cfg.device))
        self.policy = policy
        self.model = policy.model
        fuse_gelu(self.model)  # GPT-2's GELU in one kernel (fused.py; the same function up to float rounding)
        self.tokenizer = policy.tokenizer
        self.device = next(self.model.parameters()).device
        if cfg.dtype == "bfloat16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"dtype bfloat16: {torch.cuda.get_device_name(self.device)} has no bf16 support; "
                             "accepted: float32 on this GPU")
        self.reward = reward = build_reward(cfg, self.device, reward)  # one reward as it is, several: a RewardSet
        self.reward_set = reward if isinstance(reward, RewardSet) else None
        reward.check_policy(policy)  # e.g. the arithmetic verifier: can this tokenizer write digits?
        if prompts is None and cfg.prompts is None:
            prompts = reward.default_prompts()  # a task's own training problems, or None
        if prompts is None:
            self.prompt_data = load_prompt_data(cfg.prompts, cfg.prompt_column)  # a text file or a dataset
        elif isinstance(prompts, PromptData):
            self.prompt_data = prompts
        elif prompts and not isinstance(prompts[0], str):  # rows (dicts) of a dataset
            self.prompt_data = prompt_data_from_rows(list(prompts), cfg.prompt_column)
        else:
            self.prompt_data = PromptData(list(prompts))
        self.raw_prompts = self.prompt_data.texts
        if not self.raw_prompts:
            raise ValueError("the prompt list is empty; accepted: at least one prompt")
        reward.check_prompts(self.raw_prompts)  # e.g. no held-out problem among the training prompts
        if cfg.eval_every and reward.evaluate is None:
            raise ValueError(f"eval_every {cfg.eval_every} needs a verifier reward with held-out problems, and "
                             f"{reward.name!r} has none; accepted: --reward-model "
                             "arithmetic, or eval_every 0")
        self.heldout_pass1_final: float | None = None
        self.prompts = format_prompt_data(policy, self.prompt_data)  # chat template when the model has one
        # shared prompts by default whenever a prompt has several samples: its positions run once, not G times
        self.share_prompt = bool(cfg.num_samples > 1 if cfg.share_prompt is None else cfg.share_prompt)
        self._check_prompt_lengths()

        # ALGO: the frozen reference is the starting policy (for the KL penalty and the logged KL)
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.reference_sha256 = weights_sha256(self.ref_model)  # recorded in checkpoints, checked on resume
        self.ref_prompt_cache = PromptCache()  # the reference's cache of each prompt, computed once per run
        self.model.eval()  # no dropout: sampling and log-probs must see the same function
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel reads and writes each parameter's state once per step (on this CPU 4x faster than the
        # foreach kernels, which pass over the 4 tensors of each parameter several times); foreach where a device
        # has no fused kernel
        try:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except RuntimeError:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.warmup_steps,
                                       num_training_steps=cfg.steps * cfg.updates_per_batch * cfg.minibatches)
        self.global_step = 0
        self.logger = MetricsLogger(cfg.output_dir if self.is_main_process else None, panels=PANELS, stream=True,
                                    title=f"{policy.name} vs {reward.name}")
        self.resumed_from: Path | None = None
        self.last_checkpoint: Path | None = None
        if resume:
            Run(self).resume(resume)

    def train(self, callbacks: Sequence[Callable[["Trainer", dict], Any]] = (), progress: bool = False) -> LMResult:
        """Run to `config.steps` with checkpoints, metrics files, Ctrl-C / SIGTERM and the NaN guard (`run.Run`).
        callbacks: `cb(trainer, row)` after every step; one returning True stops the run early."""
        return Run(self).train(callbacks=callbacks, progress=progress)

    def save_checkpoint(self):
        """Write checkpoint-<global_step>/ now (`run.Run.save_checkpoint`)."""
        return Run(self).save_checkpoint()

    # ------------------------------------------------------------------ the step
    def step(self) -> dict:
        """One policy-gradient step (one sampled batch; one update, or updates_per_batch x minibatches). Returns
        the step's metrics row (also kept in `history`)."""
        if reuses_batch(self.config):  # several optimizer steps: Ctrl-C / SIGTERM wait until all are applied
            with signals_deferred():
                return self._step()
        return self._step()

    def _step(self) -> dict:
        cfg, G = self.config, self.config.num_samples
        step = self.global_step + 1
        # held-out pass@1 of the policy that samples this step (every eval_every steps, from step 1)
        pass1_before = self.evaluate() if cfg.eval_every and (step - 1) % cfg.eval_every == 0 else None
        timer = StepTimer()
        with timer("generate"):
            batch, prompt_state = self.sample(step)  # 1. sample this process's share of the step's prompts
        with timer("reward"):
            scored = score_batch(self, batch, step) if self.reward_set is not None else None  # several / functions
            rew = score(self.reward, batch) if scored is None else scored.score  # 2. score, (N,)
        valid = scored.valid if scored is not None else None  # rows some reward applies to (None: all)
        if reuses_batch(cfg):  # mu x minibatches updates, applied and recorded together (in signals_deferred)
            loss_all, grad_norm, lr, parts = reuse_updates(self, batch, rew, step=step, timer=timer, valid=valid)
        else:
            loss, parts = self.compute_loss(batch, rew, prompt_state, step=step, timer=timer, valid=valid)  # 3.-5.
            loss_all, grad_norm = backward_checked(self, loss, timer, f"step {step}")  # the NaN guard
            lr = self.scheduler.get_last_lr()[0]
        mask, kl, entropy = batch.completion_mask, parts["kl"], parts["entropy"]
        with signals_deferred():  # the update and its record happen together, or not at all
            if not reuses_batch(cfg):
                with timer("optimizer"):
                    self.optimizer.step()
                    self.scheduler.step()
            self.global_step = step
            rew_all = self.gather(rew) if scored is None else scored.logged
            kl_all = self.gather(kl) if kl is not None else None
            lengths_all = self.gather(mask.sum(dim=1).float())
            row = {
                "step": step,
                "loss": loss_all.mean().item(),
                "reward_mean": rew_all.mean().item(),
                "reward_std": rew_all.std().item() if rew_all.numel() > 1 else 0.0,
                "kl": kl_all.mean().item() if kl_all is not None else None,  # None: not computed this step
                "entropy": (self.gather((entropy.detach() * mask.to(entropy.dtype)).sum().reshape(1)).sum()
                            / lengths_all.sum().clamp(min=1.0)).item(),  # token mean over all processes
                "completion_len": lengths_all.mean().item(),
                "grad_norm": grad_norm.item(),
                "lr": lr,
                "tokens": int(lengths_all.sum().item()),
                **(scored.columns if scored is not None else {}),  # reward/<name>_mean, _std of several rewards
                **parts.get("ratio", {}),  # REUSE_COLUMNS, with a ratio (policy_loss.py)
            }
            if self.reward.verifier:  # VERIFIER_COLUMNS (notebook 05); None: nothing to report
                row.update(self._verifier_columns(rew_all, lengths_all, G, pass1_before))
            if cfg.eval_every and step == cfg.steps:  # the final model
                self.heldout_pass1_final = self.evaluate()
            t, total = timer.seconds, timer.total()
            row.update({"time": total, "time_generate": t["generate"], "time_reward": t["reward"],
                        "time_update": total - t["generate"] - t["reward"],
                        "time_reference": t["reference"], "time_policy": t["policy"],  # forward + backward
                        "time_optimizer": t["optimizer"]})  # clip, AdamW, scheduler
            self.logger.log(row)
        self.last_batch, self.last_rewards = batch, (rew if scored is None else scored.matrix)
        return row

    def sample(self, step: int):
        """This process's batch of `step` and, with a shared prompt, the prompts' forward kept for the gradient:
        (Batch, prompt_state or None)."""
        cfg, G = self.config, self.config.num_samples
        prompts = self.prompts_for_step(step)
        seed, special = stream_seed(cfg.seed, step, self.process_index, 1), not self.policy.chat_template
        with self.autocast():
            if self.share_prompt and G > 1:  # each prompt run once, for sampling and for the gradient
                return generate_shared(self.unwrapped_model, self.tokenizer, prompts, G, cfg.max_new_tokens,
                                       cfg.temperature, seed=seed, add_special_tokens=special,
                                       prompt_graph=not reuses_batch(cfg))
            return generate(self.unwrapped_model, self.tokenizer, prompts, G, cfg.max_new_tokens, cfg.temperature,
                            seed=seed, add_special_tokens=special), None

    def compute_loss(self, batch, rew: torch.Tensor, prompt_state=None, *, step: int = 1,
                     timer: StepTimer | None = None, valid: torch.Tensor | None = None,
                     old_logps: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """`algorithm.compute_loss` on the fast paths, plus the entropy bonus and the data-parallel token weight.
        valid: (N,) bool, False where no reward applies (left out of the baselines, advantage 0); None: all.
        old_logps: (N, T) of the policy that sampled the batch (None: this forward's, detached).
        Returns (loss, {"kl": (N,) or None, "entropy": (N, T)}, and "ratio": `pg.ratio_stats` with a ratio)."""
        cfg, mask = self.config, batch.completion_mask
        timer = timer or StepTimer()
        with timer("policy"), self.autocast():
            logps, entropy = self.policy_logps(self.model, batch, entropy_grad=cfg.entropy_coef > 0,
                                               prompt_state=prompt_state)  # (N, T), (N, T)
        logps, entropy = logps.float(), entropy.float()
        old_logps = logps.detach() if old_logps is None else old_logps
        ref_logps, kl = self.reference_logps(batch, old_logps, step, timer)
        adv = self.advantages(rew, kl, valid)
        loss = update_loss(self, logps, entropy, old_logps, ref_logps, adv, mask)
        parts = {"kl": kl, "entropy": entropy}
        if cfg.policy_loss != "pg":
            parts["ratio"] = ratio_columns(self, [ratio_stats(self, logps, old_logps, adv, mask)])
        return loss, parts

    def reference_logps(self, batch, old_logps: torch.Tensor, step: int, timer: StepTimer):
        """The frozen reference's (N, T) log-probs and each completion's KL estimate (N,) against the sampler's
        log-probs `old_logps`; (None, None) on steps the reference does not run."""
        cfg, mask = self.config, batch.completion_mask
        ref_logps = kl = None
        with timer("reference"):
            if self.needs_reference(step):  # with kl_coef 0 only on KL-logging steps
                with torch.inference_mode(), self.autocast():
                    ref_logps = self.policy_logps(self.ref_model, batch, prompt_cache=self.ref_prompt_cache).float()
                ref_logps = ref_logps.clone()  # a normal tensor again: the KL in the loss differentiates through it
                per_token_kl = est.kl_estimate(old_logps.detach(), ref_logps, cfg.kl_estimator)  # (N, T)
                kl = (per_token_kl * mask).sum(dim=1)  # (N,): KL of each whole completion
        return ref_logps, kl

    def advantages(self, rew: torch.Tensor, kl: torch.Tensor | None, valid: torch.Tensor | None) -> torch.Tensor:
        """This process's (N,) advantages, from the scores of all processes' rows (the KL penalty subtracted
        with kl_in reward)."""
        cfg, G = self.config, self.config.num_samples
        score = rew - cfg.kl_coef * kl if cfg.kl_in == "reward" and cfg.kl_coef else rew  # (N,)
        score_all = self.gather(score)  # (N_total,) all processes, prompt-major
        if valid is None:
            adv_all = lm_advantages(score_all.view(-1, G), cfg.advantage).reshape(-1)
        else:
            valid_all = self.gather(valid.float()) > 0.5  # (N_total,) gathered as numbers: gloo has no bool
            adv_all = masked_advantages(score_all.view(-1, G), valid_all.view(-1, G), cfg.advantage).reshape(-1)
        n = score.shape[0]
        return adv_all[self.process_index * n:(self.process_index + 1) * n]  # (N,) this process's rows

    def _verifier_columns(self, rew_all, lengths_all, G: int, pass1_before) -> dict:
        """Zero-spread groups (all rewards equal: no gradient) and those among them all right (the rest are all
        wrong), lengths of right and wrong answers, pass@1."""
        groups = rew_all.view(-1, G)
        right = rew_all > 0.5  # 1.0 / 0.0 rewards
        return {"zero_spread_frac": (groups.max(dim=1).values == groups.min(dim=1).values).float().mean().item(),
                "all_right_frac": right.view(-1, G).all(dim=1).float().mean().item(),
                "len_correct": lengths_all[right].mean().item() if right.any() else None,
                "len_incorrect": lengths_all[~right].mean().item() if (~right).any() else None,
                "heldout_pass1": pass1_before}

    def policy_logps(self, model, batch, *, entropy_grad: bool | None = None, prompt_cache=None, prompt_state=None):
        """Per-token log-probs of the batch's completions under `model` (N, T), plus the (N, T) entropies when
        `entropy_grad` is given (True: with their graph). With `share_prompt`, each prompt runs once, its cache
        shared by its G samples: `prompt_state` (the prompts' forward from sampling, with its graph) for the
        policy, `prompt_cache` (kept across steps) for the frozen reference."""
        cfg = self.config
        kw = dict(return_entropy=entropy_grad is not None, entropy_grad=bool(entropy_grad))
        if self.share_prompt and cfg.num_samples > 1:
            return per_token_logps_shared_prompt(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                                 batch.completion_mask, cfg.num_samples, cfg.temperature,
                                                 prompt_cache=prompt_cache, prompt_state=prompt_state, **kw)
        return per_token_logps(model, batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1],
                               cfg.temperature, **kw)

    def autocast(self):
        """The forward passes' precision: bfloat16 autocast with `dtype="bfloat16"` (weights stay float32), else
        nothing."""
        if self.config.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def needs_reference(self, step: int) -> bool:
        """Whether `step` runs the frozen reference: always when the KL acts (kl_coef > 0); with kl_coef 0 only
        to log the KL, every `kl_log_every` steps (0: never)."""
        cfg = self.config
        return cfg.kl_coef > 0 or (cfg.kl_log_every > 0 and (step - 1) % cfg.kl_log_every == 0)

    def evaluate(self) -> float:
        """Held-out pass@1 of the current policy: `eval_samples` sampled completions (the run's
        temperature) of each of `eval_problems` held-out problems, the same problems and sampling
        seed at every evaluation (so differences between evaluations are not sampling noise in the
        problem draw). Every process computes the same number."""
        cfg = self.config
        policy = dataclasses.replace(self.policy, model=self.unwrapped_model)
        return self.reward.evaluate(policy, cfg.eval_problems, cfg.eval_samples, temperature=cfg.temperature,
                                    seed=stream_seed(cfg.seed, 0, 0, 2) % 2**31,
                                    max_new_tokens=cfg.max_new_tokens)

    def prompts_for_step(self, step: int) -> list[str]:
        """This process's prompts for `step` (`prompt_indices_for_step`)."""
        return [self.prompts[i] for i in self.prompt_indices_for_step(step)]

    def prompt_indices_for_step(self, step: int) -> list[int]:
        """This process's prompt indices for `step`: a seeded draw of batch_size prompts (without replacement
        when there are enough), the same draw on every process, split by process."""
        cfg = self.config
        idx = step_prompt_indices(cfg.seed, step, len(self.prompts), cfg.batch_size)
        per = cfg.batch_size // self.num_processes
        return idx[self.process_index * per:(self.process_index + 1) * per]

    @property
    def history(self) -> list[dict]:
        """All metrics rows so far (resumed runs include the checkpoint's)."""
        return self.logger.history

    def _check_prompt_lengths(self) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is None:
            return
        enc = self.tokenizer(self.prompts, add_special_tokens=not self.policy.chat_template)["input_ids"]
        longest = max(range(len(enc)), key=lambda i: len(enc[i]))
        if len(enc[longest]) + self.config.max_new_tokens > limit:
            raise ValueError(f"prompt {self.raw_prompts[longest]!r:.60} has {len(enc[longest])} tokens; with "
                             f"max_new_tokens {self.config.max_new_tokens} that exceeds the model's context of {limit}")
        if min(len(e) for e in enc) == 0:
            raise ValueError("a prompt has no tokens; accepted: non-empty prompts")

    # ------------------------------------------------------------------ distributed hooks
    @property
    def is_main_process(self) -> bool:
        """Only the main process writes files."""
        return self.process_index == 0

    @property
    def unwrapped_model(self):
        """The bare model (under DDP, the module inside the wrapper)."""
        return self.model

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate `tensor` (dim 0) over all processes, in process order. One process: itself."""
        return tensor

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate (under DDP, the gradient all-reduce happens here)."""
        loss.backward()


def train(config: LMConfig | None = None, *, policy=None, reward=None, prompts: Sequence[str] | None = None,
          resume: str | Path | bool | None = None, callbacks: Sequence[Callable[[Trainer, dict], Any]] = (),
          progress: bool = False) -> LMResult:
    """Train a causal LM with the policy gradient against a reward model. See `Trainer`.

    `train(LMConfig(steps=50))` runs the tiny tier; pass `policy=` / `reward=` to reuse loaded ones
    (the policy is trained in place). Returns an `LMResult` (`.history`, `.summary`, `.policy`, ...).
    """
    trainer = Trainer(config, policy=policy, reward=reward, prompts=prompts, resume=resume)
    return trainer.train(callbacks=callbacks, progress=progress)
