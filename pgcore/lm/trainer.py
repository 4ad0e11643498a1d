"""Policy-gradient training of a causal LM against a reward model: the loop of notebook 04.

One step:
    1. sample   G completions for each of B prompts from the policy        (sampling.generate)
    2. reward   score each completion                                      (rewards.RewardModel.score)
    3. logps    per-token log-probs under the policy (with grad) and the
                frozen reference (no grad); per-token KL and entropy       (logprobs.per_token_logps)
    4. adv      reward minus the KL penalty, then none / mean / RLOO / group (pgcore.pg)
    5. update   loss = pg_loss(per_token_logps, adv, completion_mask)
                       - entropy_coef * entropy; clip; AdamW; scheduler  (pgcore.pg.pg_loss)

The KL to the reference enters as a *reward penalty* (classic RLHF: Ziegler et al. 2019, Ouyang et
al. 2022): score = reward - kl_coef * sum_t kl_t, with kl_t the per-token estimate for each completion
token, detached. With k1 = log(pi/ref) (the default) the REINFORCE gradient of that penalty is exactly
grad KL(pi || ref) in expectation, because E[grad log pi] = 0. k3 = ref/pi - 1 - log(ref/pi) estimates
the same KL *value* with lower variance and is always >= 0, but as a detached reward its gradient is
biased: per token it is grad KL(pi || ref) - grad KL(ref || pi) (Tang & Munos 2025, "On a few pitfalls
in KL divergence gradient estimation for RL"; k3 belongs in the loss, as in GRPO). Both are offered so
notebook 04 can show the difference; see http://joschu.net/blog/kl-approx.html. The logged `kl` is the
mean over completions of the sequence-level sum, whatever kl_coef is.

Notebook 05 adds two choices (defaults keep the behaviour above). `kl_in="loss"` moves the KL out of the reward
into the loss, as GRPO does: kl_coef * aggregate(k3_t), differentiated through the policy's log-probs; the logged
kl is computed as before. `loss_aggregation` says how per-token terms become one number (`pgcore.pg.aggregate`):
token (the masked mean over all completion tokens, today's `pg_loss`), sequence (mean per completion, then over
completions: the original GRPO), constant (sum / (completions x max_new_tokens): Dr. GRPO) or sum (sum / completions:
RLOO's and TRL's RLOOTrainer's loss, max_new_tokens times constant's). With a verifier
reward (`arithmetic`), each row also logs `VERIFIER_COLUMNS`: the fraction of groups whose rewards are all equal
(their advantages, hence their gradient, are 0), the mean lengths of correct and incorrect completions, and with
`eval_every` the held-out pass@1 of the policy that samples the step (`Trainer.evaluate`; None on other steps).

The step reads top to bottom in `Trainer.step`; the settings are `config.LMConfig`; the plumbing
(the loop, checkpoints, metrics files, resume, Ctrl-C / SIGTERM, the NaN guard) sits apart in
`run.TrainingRun`, which `Trainer` inherits.
Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import checkpoint as ckpt_lib
from .. import pg
from ..metrics import MetricsLogger
from ..utils import get_device, set_seed, weights_sha256
from .config import ADVANTAGES, KL_ESTIMATORS, RESUMABLE_CHANGES, SCHEDULERS, LMConfig  # noqa: F401 (re-exported)
from .logprobs import PromptCache, per_token_logps, per_token_logps_shared_prompt
from .run import CSV_COLUMNS, PANELS, VERIFIER_COLUMNS, LMResult, NonFiniteLossError, TrainingRun, signals_deferred
from .sampling import generate

__all__ = ["LMConfig", "LMResult", "Trainer", "train", "compute_advantages", "NonFiniteLossError", "ADVANTAGES",
           "CSV_COLUMNS", "VERIFIER_COLUMNS"]


def compute_advantages(score: torch.Tensor, kind: str) -> torch.Tensor:
    """Advantages from scores shaped (B, G): G samples for each of B prompts.

    none: the score itself (REINFORCE). mean: minus the mean of the whole batch. rloo: minus the
    mean of the *other* G-1 samples of the same prompt. group: (score - group mean) / group std.
    Returns (B, G). Introduced in notebooks/04_lm_policy_gradient.ipynb.
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


def _stream_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, process, purpose): independent streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


def step_prompt_indices(seed: int, step: int, num_prompts: int, batch_size: int) -> list[int]:
    """Which prompts (indices into the prompt list) a run with `seed` trains on at `step`: a seeded draw of
    `batch_size`, without replacement when there are enough. (Public so that a benchmark can feed another
    trainer the same prompts in the same order.)"""
    g = torch.Generator().manual_seed(_stream_seed(seed, step, 0, 0))
    if batch_size <= num_prompts:
        return torch.randperm(num_prompts, generator=g)[:batch_size].tolist()
    return torch.randint(num_prompts, (batch_size,), generator=g).tolist()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class Trainer(TrainingRun):
    """The LM policy-gradient loop, one `step()` at a time, or `train()` for the whole run with
    checkpoints, metrics files, Ctrl-C handling and the NaN guard.

    policy / reward / prompts: already loaded objects (else loaded from the config's names).
    The policy is trained in place. resume: a checkpoint-<step>/ folder, or True for the newest one
    in config.checkpoint_dir; it is read and checked against this run before anything is written.

    Distributed runs (Accelerate, see the data-parallel issue) override the four hooks at the end:
    `num_processes`, `process_index`, `gather`, `backward`; every file is written only by the
    main process. With one process they are identities.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """

    num_processes: int = 1
    process_index: int = 0

    def __init__(self, config: LMConfig | None = None, *, policy=None, reward=None,
                 prompts: Sequence[str] | None = None, resume: str | Path | bool | None = None):
        self.config = cfg = config if config is not None else LMConfig()
        self._check_output_places()  # an unusable output path fails here, before any model loads
        if cfg.batch_size % self.num_processes:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.num_processes} processes")
        set_seed(cfg.seed)
        from . import models

        if policy is None:
            with ckpt_lib.quiet_transformers():
                policy = models.load_policy(cfg.model, device=get_device(cfg.device))
        self.policy = policy
        self.model = policy.model
        self.tokenizer = policy.tokenizer
        self.device = next(self.model.parameters()).device
        if cfg.dtype == "bfloat16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"dtype bfloat16: {torch.cuda.get_device_name(self.device)} has no bf16 support; "
                             "accepted: float32 on this GPU")
        if reward is None:
            from . import rewards

            with ckpt_lib.quiet_transformers():
                reward = rewards.load_reward(cfg.reward_model, label=cfg.reward_label, device=self.device)
        self.reward = reward
        if hasattr(reward, "check_policy"):  # e.g. the arithmetic verifier: can this tokenizer write digits?
            reward.check_policy(policy)
        if prompts is None and cfg.prompts is None:
            prompts = reward.default_prompts()  # a task's own training problems, or None
        if prompts is None:
            prompts = models.load_prompts(cfg.prompts)
        self.raw_prompts = list(prompts)
        if not self.raw_prompts:
            raise ValueError("the prompt list is empty; accepted: at least one prompt")
        if hasattr(reward, "check_prompts"):  # e.g. no held-out problem among the training prompts
            reward.check_prompts(self.raw_prompts)
        if cfg.eval_every and reward.evaluate is None:
            raise ValueError(f"eval_every {cfg.eval_every} needs a verifier reward with held-out problems, and "
                             f"{getattr(reward, 'name', cfg.reward_model)!r} has none; accepted: --reward-model "
                             "arithmetic, or eval_every 0")
        self.heldout_pass1_final: float | None = None
        self.prompts = models.format_prompts(policy, self.raw_prompts)  # chat template when the model has one
        # shared prompts by default where they pay: a chat template puts the same long system turn before every prompt
        self.share_prompt = bool(policy.chat_template if cfg.share_prompt is None else cfg.share_prompt)
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
                                       num_training_steps=cfg.steps)
        self.global_step = 0
        self.logger = MetricsLogger(cfg.output_dir if self.is_main_process else None, panels=PANELS, stream=True,
                                    title=f"{policy.name} vs {getattr(self.reward, 'name', cfg.reward_model)}")
        self.resumed_from: Path | None = None
        self.last_checkpoint: Path | None = None
        if resume:
            self._resume(resume)

    # ------------------------------------------------------------------ the step
    def step(self) -> dict:
        """One policy-gradient update. Returns the step's metrics row (also kept in `history`)."""
        cfg, G = self.config, self.config.num_samples
        t0 = time.perf_counter()
        step = self.global_step + 1
        # held-out pass@1 of the policy that samples this step (every eval_every steps, from step 1)
        pass1_before = self.evaluate() if cfg.eval_every and (step - 1) % cfg.eval_every == 0 else None
        t0 = time.perf_counter()

        # 1. sample G completions of this process's share of the step's prompts
        prompts = self.prompts_for_step(step)
        shared = self.share_prompt and G > 1  # each prompt run once, for sampling and for the gradient
        with self.autocast():
            batch = generate(self.unwrapped_model, self.tokenizer, prompts, G, cfg.max_new_tokens, cfg.temperature,
                             seed=_stream_seed(cfg.seed, step, self.process_index, 1),
                             add_special_tokens=not self.policy.chat_template, share_prompt=shared, prompt_graph=shared)
        t1 = time.perf_counter()

        # 2. score the completions (a verifier such as `arithmetic` also reads the prompts)
        if getattr(self.reward, "needs_prompts", False):
            rew = self.reward.score(batch.texts, prompts=batch.prompts)
        else:
            rew = self.reward.score(batch.texts)
        rew = rew.to(self.device, torch.float32)  # (N,)
        t2 = time.perf_counter()

        # 3. per-token log-probs: policy (with grad) and frozen reference (no grad)
        mask = batch.completion_mask  # (N, T)
        with self.autocast():
            logps, entropy = self.policy_logps(self.model, batch, entropy_grad=cfg.entropy_coef > 0)  # (N, T), (N, T)
        logps, entropy = logps.float(), entropy.float()
        t_policy = time.perf_counter()
        if self.needs_reference(step):
            with torch.inference_mode(), self.autocast():
                ref_logps = self.policy_logps(self.ref_model, batch, prompt_cache=self.ref_prompt_cache).float()
            ref_logps = ref_logps.clone()  # a normal tensor again: the KL in the loss differentiates through it
            per_token_kl = pg.kl_estimate(logps.detach(), ref_logps, cfg.kl_estimator)  # (N, T)
            kl = (per_token_kl * mask).sum(dim=1)  # (N,): KL of each whole completion
        else:  # kl_coef 0 and not a KL-logging step: no reference forward at all
            ref_logps = kl = None
        t_reference = time.perf_counter()

        # 4. advantages: reward (minus the KL penalty when it sits in the reward), compared within / across prompts
        score = rew - cfg.kl_coef * kl if cfg.kl_in == "reward" and cfg.kl_coef else rew  # (N,)
        score_all = self.gather(score)  # (N_total,) all processes, prompt-major
        adv_all = compute_advantages(score_all.view(-1, G), cfg.advantage).reshape(-1)
        n = score.shape[0]
        adv = adv_all[self.process_index * n:(self.process_index + 1) * n]  # (N,) this process's rows

        # 5. the policy-gradient loss (its value is not progress: watch the reward), aggregated over
        #    tokens as configured; with kl_in="loss", GRPO's k3 term with its gradient is added
        if cfg.loss_aggregation == "token":
            loss = pg.pg_loss(logps, adv, mask)  # = -pg.aggregate(logps * adv, mask, "token")
        else:
            loss = -pg.aggregate(logps * adv.detach()[:, None], mask, cfg.loss_aggregation, cfg.max_new_tokens)
        if cfg.kl_in == "loss" and cfg.kl_coef:
            k3 = pg.kl_k3(logps, ref_logps)  # (N, T), with grad (GRPO, Shao et al. 2024, eq. 4)
            loss = loss + cfg.kl_coef * pg.aggregate(k3, mask, cfg.loss_aggregation, cfg.max_new_tokens)
        entropy_mean = _masked_mean(entropy, mask)
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy_mean
        if self.num_processes > 1 and cfg.loss_aggregation == "token":
            # token-level mean over *all* processes: DDP averages gradients, so weigh by the local share
            tokens_all = self.gather(mask.sum().reshape(1).float()).sum()
            loss = loss * mask.sum().clamp(min=1) * self.num_processes / tokens_all.clamp(min=1)
        loss_all = self.gather(loss.detach().reshape(1))  # (num_processes,): their mean is the batch's loss
        if not torch.isfinite(loss_all).all():  # checked on every process alike, so all stop together
            raise NonFiniteLossError(f"loss is {loss_all.mean().item()} at step {step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        t_backward = time.perf_counter()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(f"gradient norm is {grad_norm.item()} at step {step}")
        lr = self.scheduler.get_last_lr()[0]

        with signals_deferred():  # the update and its record happen together, or not at all
            self.optimizer.step()
            self.scheduler.step()
            self.global_step = step
            t_optimizer = time.perf_counter()
            rew_all = self.gather(rew)
            kl_all = self.gather(kl) if kl is not None else None
            lengths_all = self.gather(mask.sum(dim=1).float())
            groups = rew_all.view(-1, G)
            zero_spread = (groups.max(dim=1).values == groups.min(dim=1).values).float().mean().item()
            len_correct = len_incorrect = None
            if getattr(self.reward, "verifier", False):  # 1.0 / 0.0 rewards: lengths of right and wrong answers
                right = rew_all > 0.5
                len_correct = lengths_all[right].mean().item() if right.any() else None
                len_incorrect = lengths_all[~right].mean().item() if (~right).any() else None
            if cfg.eval_every and step == cfg.steps:  # the final model
                self.heldout_pass1_final = self.evaluate()
            t3 = time.perf_counter()
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
            }
            if getattr(self.reward, "verifier", False):  # VERIFIER_COLUMNS (notebook 05); None: nothing to report
                row.update({"zero_spread_frac": zero_spread, "len_correct": len_correct,
                            "len_incorrect": len_incorrect, "heldout_pass1": pass1_before})
            row.update({"time": t3 - t0, "time_generate": t1 - t0, "time_reward": t2 - t1, "time_update": t3 - t2,
                        "time_reference": t_reference - t_policy,
                        "time_policy": (t_policy - t2) + (t_backward - t_reference),  # forward + backward
                        "time_optimizer": t_optimizer - t_backward})  # clip, AdamW, scheduler
            self.logger.log(row)
        self.last_batch = batch
        return row

    def policy_logps(self, model, batch, *, entropy_grad: bool | None = None, prompt_cache=None):
        """Per-token log-probs of the batch's completions under `model` (N, T), plus the (N, T) entropies
        when `entropy_grad` is given (True: with their graph). With `share_prompt` (the config's, resolved), each prompt
        runs once and its key/value cache is shared by its G samples (`per_token_logps_shared_prompt`): for the policy,
        the prompt forward generate ran with its graph (`Batch.prompt_state`); for the frozen reference, a prompt's
        cache kept across steps (`prompt_cache`, a `PromptCache`)."""
        cfg = self.config
        kw = dict(return_entropy=entropy_grad is not None, entropy_grad=bool(entropy_grad))
        if self.share_prompt and cfg.num_samples > 1:
            state = None
            if model is self.model and torch.is_grad_enabled():  # the prompts' forward generate ran, with its graph
                state, batch.prompt_state = batch.prompt_state, None  # used once, then the batch holds no graph
            return per_token_logps_shared_prompt(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                                 batch.completion_mask, cfg.num_samples, cfg.temperature,
                                                 prompt_cache=prompt_cache, prompt_state=state, **kw)
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
                                    seed=_stream_seed(cfg.seed, 0, 0, 2) % 2**31,
                                    max_new_tokens=cfg.max_new_tokens)

    def prompts_for_step(self, step: int) -> list[str]:
        """This process's prompts for `step`: a seeded draw of batch_size prompts (without
        replacement when there are enough), the same draw on every process, split by process."""
        cfg = self.config
        idx = step_prompt_indices(cfg.seed, step, len(self.prompts), cfg.batch_size)
        per = cfg.batch_size // self.num_processes
        return [self.prompts[i] for i in idx[self.process_index * per:(self.process_index + 1) * per]]

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
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    trainer = Trainer(config, policy=policy, reward=reward, prompts=prompts, resume=resume)
    return trainer.train(callbacks=callbacks, progress=progress)
