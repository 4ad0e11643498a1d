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

Plumbing (checkpoints, metrics files, Ctrl-C, NaN guard) sits apart in `Trainer.train`; the step
itself reads top to bottom in `Trainer.step`.
Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .. import checkpoint as ckpt_lib
from .. import pg
from ..metrics import MetricsLogger, environment_info
from ..utils import atomic_dir, get_device, set_seed
from .logprobs import per_token_logps
from .sampling import generate

__all__ = ["LMConfig", "LMResult", "Trainer", "train", "compute_advantages", "NonFiniteLossError", "ADVANTAGES",
           "CSV_COLUMNS"]

ADVANTAGES = ("none", "mean", "rloo", "group")
KL_ESTIMATORS = ("k1", "k3")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
CSV_COLUMNS = (
    "step", "loss", "reward_mean", "reward_std", "kl", "entropy", "completion_len", "grad_norm", "lr",
    "tokens", "time", "time_generate", "time_reward", "time_update",
)
PANELS = [("reward", "reward_mean", "reward_std"), ("KL to reference", "kl"), ("entropy per token", "entropy"),
          ("loss (not progress)", "loss"), ("completion length", "completion_len")]
# Settings a run may change when resumed: where things go and how long to train. Everything else
# must match the checkpoint, or the resumed run would not be the run that was checkpointed.
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "output_dir", "checkpoint_dir", "model_dir",
                               "run_name", "device", "prompts"})


@dataclass(frozen=True)
class LMConfig:
    """Settings of an LM policy-gradient run. The defaults are the fast course tier: the `tiny`
    model learns to write positive reviews for `tiny-sentiment` in about a minute on a laptop CPU.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """

    model: str = "tiny"
    """the policy: `tiny`, `smollm2-135m`, a Hugging Face hub name or a local path"""
    reward_model: str = "tiny-sentiment"
    """the reward: `tiny-sentiment`, `vader`, or an HF sequence-classification model name/path"""
    reward_label: str | None = None
    """the classifier label whose probability is the reward (None: found by name, e.g. `positive`)"""
    prompts: str | None = None
    """a text file with one prompt per line (None: data/prompts.txt)"""
    steps: int = 200
    """optimizer steps (each: sample, score, one update)"""
    seed: int = 0
    """seeds prompt order, sampling and everything else; the same seed reproduces the run"""
    batch_size: int = 8
    """prompts per step (over all processes)"""
    num_samples: int = 4
    """completions sampled per prompt (>= 2 for rloo and group)"""
    max_new_tokens: int = 12
    """longest completion, in tokens"""
    temperature: float = 1.0
    """sampling temperature; log-probs use the same one, so the loss matches the sampler"""
    advantage: str = "rloo"
    """how rewards become advantages: none (raw reward), mean (minus the batch mean), rloo
    (minus the mean of the prompt's other samples), group (GRPO: normalized within the prompt's group)"""
    kl_coef: float = 0.1
    """weight of the KL(policy || reference) penalty subtracted from each completion's reward (0: none;
    the KL to the starting policy is logged anyway)"""
    kl_estimator: str = "k1"
    """per-token KL estimate in the penalty: k1 = log(pi/ref) (unbiased gradient) or k3 = ref/pi - 1 -
    log(ref/pi) (lower-variance value, biased gradient as a reward; see the module docstring)"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus (mean per-token entropy) subtracted from the loss"""
    lr: float = 1e-4
    """AdamW learning rate (peak, after warmup)"""
    lr_scheduler: str = "constant_with_warmup"
    """transformers' get_scheduler name: constant, constant_with_warmup, linear or cosine"""
    warmup_steps: int = 0
    """steps of linear learning-rate warmup (transformers' schedules start warmup at lr 0: step 1 is then wasted)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """clip the gradient's global L2 norm to this"""
    save_every: int = 50
    """save a checkpoint every this many steps (and at the end); 0: only at the end"""
    keep_last: int = 2
    """keep only the newest this many checkpoints (0: keep all)"""
    output_dir: str | None = "output/policy_gradient_metrics"
    """where the metrics CSV, log_history.json, summary.json and training_curves.png go (None: nowhere)"""
    checkpoint_dir: str | None = "checkpoints"
    """where checkpoint-<step>/ folders go (None: no checkpoints)"""
    model_dir: str | None = "models"
    """the final model and tokenizer go to <model_dir>/<run_name>/ (None: not saved)"""
    run_name: str = "policy_gradient"
    """name of the final model folder inside model_dir"""
    device: str | None = None
    """cpu, cuda, cuda:1, ... (None: CUDA when present, else CPU)"""

    def __post_init__(self):
        def positive_int(name, allow_zero=False):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
                raise ValueError(f"{name} must be an int >= {0 if allow_zero else 1}, got {v!r}")

        for name in ("steps", "batch_size", "num_samples", "max_new_tokens"):
            positive_int(name)
        for name in ("save_every", "keep_last", "warmup_steps"):
            positive_int(name, allow_zero=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        for name in ("lr", "temperature", "max_grad_norm"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("kl_coef", "entropy_coef", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage {self.advantage!r} unknown; accepted: {', '.join(ADVANTAGES)}")
        if self.advantage in ("rloo", "group") and self.num_samples < 2:
            raise ValueError(
                f"advantage {self.advantage!r} needs num_samples >= 2 (it compares samples of one prompt), "
                f"got {self.num_samples}; use advantage 'mean' or 'none' for one sample"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator {self.kl_estimator!r} unknown; accepted: {', '.join(KL_ESTIMATORS)}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r} unknown; accepted: {', '.join(SCHEDULERS)}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ValueError(f"run_name {self.run_name!r} must be a plain folder name")

    def replace(self, **changes) -> "LMConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN/inf; the run stopped before applying that update."""


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


@dataclass
class LMResult:
    """What `train` returns.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
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
    """completed, interrupted, nonfinite or stopped (a callback asked to stop)"""

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


def _stream_seed(*keys: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, process, purpose): independent streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so an update is applied and recorded whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class Trainer:
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
        if reward is None:
            from . import rewards

            with ckpt_lib.quiet_transformers():
                reward = rewards.load_reward(cfg.reward_model, label=cfg.reward_label, device=self.device)
        self.reward = reward
        if prompts is None:
            prompts = models.load_prompts(cfg.prompts)
        self.raw_prompts = list(prompts)
        if not self.raw_prompts:
            raise ValueError("the prompt list is empty; accepted: at least one prompt")
        self.prompts = models.format_prompts(policy, self.raw_prompts)  # chat template when the model has one
        self._check_prompt_lengths()

        # ALGO: the frozen reference is the starting policy (for the KL penalty and the logged KL)
        self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.model.eval()  # no dropout: sampling and log-probs must see the same function
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.warmup_steps,
                                       num_training_steps=cfg.steps)
        self.global_step = 0
        self.logger = MetricsLogger(cfg.output_dir if self.is_main_process else None, panels=PANELS,
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

        # 1. sample G completions of this process's share of the step's prompts
        prompts = self.prompts_for_step(step)
        batch = generate(self.unwrapped_model, self.tokenizer, prompts, G, cfg.max_new_tokens, cfg.temperature,
                         seed=_stream_seed(cfg.seed, step, self.process_index, 1),
                         add_special_tokens=not self.policy.chat_template)
        t1 = time.perf_counter()

        # 2. score the completions
        rew = self.reward.score(batch.texts).to(self.device, torch.float32)  # (N,)
        t2 = time.perf_counter()

        # 3. per-token log-probs: policy (with grad) and frozen reference (no grad)
        mask = batch.completion_mask  # (N, T)
        T = batch.completion_ids.shape[1]
        logps, entropy = per_token_logps(self.model, batch.input_ids, batch.attention_mask, T, cfg.temperature,
                                         return_entropy=True, entropy_grad=cfg.entropy_coef > 0)  # (N, T), (N, T)
        with torch.no_grad():
            ref_logps = per_token_logps(self.ref_model, batch.input_ids, batch.attention_mask, T, cfg.temperature)
        per_token_kl = pg.kl_estimate(logps.detach(), ref_logps, cfg.kl_estimator)  # (N, T)
        kl = (per_token_kl * mask).sum(dim=1)  # (N,): KL of each whole completion

        # 4. advantages: reward minus the KL penalty, compared within / across prompts
        score = rew - cfg.kl_coef * kl  # (N,)
        score_all = self.gather(score)  # (N_total,) all processes, prompt-major
        adv_all = compute_advantages(score_all.view(-1, G), cfg.advantage).reshape(-1)
        n = score.shape[0]
        adv = adv_all[self.process_index * n:(self.process_index + 1) * n]  # (N,) this process's rows

        # 5. the policy-gradient loss (its value is not progress: watch the reward)
        loss = pg.pg_loss(logps, adv, mask)
        entropy_mean = _masked_mean(entropy, mask)
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * entropy_mean
        if self.num_processes > 1:
            # token-level mean over *all* processes: DDP averages gradients, so weigh by the local share
            tokens_all = self.gather(mask.sum().reshape(1).float()).sum()
            loss = loss * mask.sum().clamp(min=1) * self.num_processes / tokens_all.clamp(min=1)
        loss_all = self.gather(loss.detach().reshape(1))  # (num_processes,): their mean is the batch's loss
        if not torch.isfinite(loss_all).all():  # checked on every process alike, so all stop together
            raise NonFiniteLossError(f"loss is {loss_all.mean().item()} at step {step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(f"gradient norm is {grad_norm.item()} at step {step}")
        lr = self.scheduler.get_last_lr()[0]

        with _sigint_deferred():  # the update and its record happen together, or not at all
            self.optimizer.step()
            self.scheduler.step()
            self.global_step = step
            rew_all, kl_all = self.gather(rew), self.gather(kl)
            lengths_all = self.gather(mask.sum(dim=1).float())
            t3 = time.perf_counter()
            row = {
                "step": step,
                "loss": loss_all.mean().item(),
                "reward_mean": rew_all.mean().item(),
                "reward_std": rew_all.std().item() if rew_all.numel() > 1 else 0.0,
                "kl": kl_all.mean().item(),
                "entropy": (self.gather((entropy.detach() * mask.to(entropy.dtype)).sum().reshape(1)).sum()
                            / lengths_all.sum().clamp(min=1.0)).item(),  # token mean over all processes
                "completion_len": lengths_all.mean().item(),
                "grad_norm": grad_norm.item(),
                "lr": lr,
                "tokens": int(lengths_all.sum().item()),
                "time": t3 - t0,
                "time_generate": t1 - t0,
                "time_reward": t2 - t1,
                "time_update": t3 - t2,
            }
            self.logger.log(row)
        self.last_batch = batch
        return row

    def prompts_for_step(self, step: int) -> list[str]:
        """This process's prompts for `step`: a seeded draw of batch_size prompts (without
        replacement when there are enough), the same draw on every process, split by process."""
        cfg = self.config
        g = torch.Generator().manual_seed(_stream_seed(cfg.seed, step, 0, 0))
        n = len(self.prompts)
        if cfg.batch_size <= n:
            idx = torch.randperm(n, generator=g)[:cfg.batch_size]
        else:
            idx = torch.randint(n, (cfg.batch_size,), generator=g)
        per = cfg.batch_size // self.num_processes
        idx = idx[self.process_index * per:(self.process_index + 1) * per]
        return [self.prompts[i] for i in idx.tolist()]

    @property
    def history(self) -> list[dict]:
        """All metrics rows so far (resumed runs include the checkpoint's)."""
        return self.logger.history

    # ------------------------------------------------------------------ the run
    def train(self, callbacks: Sequence[Callable[["Trainer", dict], Any]] = (), progress: bool = False) -> LMResult:
        """Run to `config.steps`: checkpoints every save_every steps and at the end, the four metrics
        files, the final model in <model_dir>/<run_name>/.

        callbacks: called as `cb(trainer, row)` after every step; a callback returning True stops
        the run early (status "stopped"). Ctrl-C saves a checkpoint and the metrics files, then
        re-raises KeyboardInterrupt. A NaN/inf loss writes the metrics files (no new checkpoint: the
        last good one stays) and raises NonFiniteLossError. Either way, if no step finished in this
        call, no file is touched.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        start, first_step = time.perf_counter(), self.global_step
        status = "completed"
        bar = tqdm(total=cfg.steps, initial=min(self.global_step, cfg.steps), disable=not progress,
                   desc="policy gradient", unit="step")
        try:
            while self.global_step < cfg.steps:
                row = self.step()
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.3f}")
                if cfg.save_every and self.global_step % cfg.save_every == 0 and self.global_step < cfg.steps:
                    self.save_checkpoint()
                    self.write_outputs(status="running", wall_seconds=time.perf_counter() - start, plot=False)
                if any([cb(self, row) is True for cb in callbacks]):
                    status = "stopped"
                    break
        except KeyboardInterrupt:
            bar.close()
            if self.global_step > first_step:  # nothing new: leave existing files alone
                self.save_checkpoint()
                self.write_outputs(status="interrupted", wall_seconds=time.perf_counter() - start)
            raise
        except NonFiniteLossError:
            bar.close()
            if self.global_step > first_step:
                self.write_outputs(status="nonfinite", wall_seconds=time.perf_counter() - start)
            raise
        bar.close()
        self.save_checkpoint()
        model_path = self.save_model()
        summary = self.write_outputs(status=status, wall_seconds=time.perf_counter() - start, model_path=model_path)
        return LMResult(policy=self.policy, history=self.history, summary=summary,
                        output_dir=Path(cfg.output_dir) if cfg.output_dir and self.is_main_process else None,
                        model_path=model_path, last_checkpoint=self.last_checkpoint, status=status)

    # ------------------------------------------------------------------ files (main process only)
    def save_checkpoint(self) -> Path | None:
        """Write checkpoint-<global_step>/ (unless there is no checkpoint_dir, no step yet, or it exists)."""
        cfg = self.config
        if not cfg.checkpoint_dir or not self.is_main_process or self.global_step == 0:
            return None
        path = Path(cfg.checkpoint_dir) / f"checkpoint-{self.global_step}"
        if self.last_checkpoint == path and path.exists():
            return path
        self.last_checkpoint = ckpt_lib.save_checkpoint(
            cfg.checkpoint_dir, self.global_step, model=self.unwrapped_model, tokenizer=self.tokenizer,
            optimizer=self.optimizer, scheduler=self.scheduler, history=self.history,
            config=dataclasses.asdict(cfg), extra=self._identity(), keep_last=cfg.keep_last,
        )
        return self.last_checkpoint

    def save_model(self) -> Path | None:
        """save_pretrained the policy and its tokenizer to <model_dir>/<run_name>/, atomically."""
        cfg = self.config
        if not cfg.model_dir or not self.is_main_process:
            return None
        path = Path(cfg.model_dir) / cfg.run_name
        with atomic_dir(path) as tmp, ckpt_lib.quiet_transformers():
            self.unwrapped_model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return path

    def summary(self, status: str = "completed", wall_seconds: float | None = None, model_path=None) -> dict:
        """What summary.json holds: config, models, reward label, first/last reward, steps, times, versions."""
        h = self.history
        rewards = [row["reward_mean"] for row in h]
        return {
            "status": status,
            "config": dataclasses.asdict(self.config),
            "model": self.policy.name,
            "reward_model": getattr(self.reward, "name", self.config.reward_model),
            "reward_label": getattr(self.reward, "label", None),
            "steps": self.global_step,
            "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None,
            "reward_first10_mean": float(np.mean(rewards[:10])) if rewards else None,
            "reward_last20_mean": float(np.mean(rewards[-20:])) if rewards else None,
            "reward_rise": _reward_rise(h) if rewards else None,
            "kl_last": h[-1]["kl"] if h else None,
            "train_seconds": float(sum(row["time"] for row in h)),
            "wall_seconds": wall_seconds,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "final_model": str(model_path) if model_path else None,
            "device": str(self.device),
            "world_size": self.num_processes,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "versions": environment_info(),
        }

    def write_outputs(self, status: str = "completed", wall_seconds: float | None = None, model_path=None,
                      plot: bool = True) -> dict:
        """Write the metrics files (main process only; the plot only when `plot`). Returns the summary."""
        summary = self.summary(status, wall_seconds, model_path)
        if self.is_main_process:
            self.logger.write(summary=summary, plot=plot and bool(self.history))
        return summary

    # ------------------------------------------------------------------ resume
    def _identity(self) -> dict:
        """What a checkpoint must agree on besides the config: model, reward, label, prompt set."""
        return {
            "model": self.policy.name,
            "reward_model": getattr(self.reward, "name", self.config.reward_model),
            "reward_label": getattr(self.reward, "label", None),
            "prompts_sha256": hashlib.sha256("\n".join(self.raw_prompts).encode()).hexdigest(),
            "world_size": self.num_processes,
        }

    def _resume(self, resume: str | Path | bool) -> None:
        cfg = self.config
        if resume is True:
            if not cfg.checkpoint_dir:
                raise ValueError("resume=True needs a checkpoint_dir to look in")
            path = ckpt_lib.latest_checkpoint(cfg.checkpoint_dir)
            if path is None:
                raise ValueError(f"no checkpoint-<step>/ folder in {cfg.checkpoint_dir} to resume from")
        else:
            path = Path(resume)
        ck = ckpt_lib.read_checkpoint(path, self.unwrapped_model)  # ValueError if corrupt or a different model
        saved, now = ck.config, dataclasses.asdict(cfg)
        diffs = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k, now[k]) != now[k]]
        if diffs:
            k = diffs[0]
            raise ValueError(f"checkpoint {path} was made with {k}={saved[k]!r}, this run has {k}={now[k]!r}; "
                             f"accepted: the same settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")
        for k, v in self._identity().items():
            if ck.extra.get(k, v) != v:
                raise ValueError(f"checkpoint {path} was made with {k}={ck.extra[k]!r}, this run has {k}={v!r}")
        if ck.step != len(ck.history):
            raise ValueError(f"checkpoint {path} is corrupt (step {ck.step} but {len(ck.history)} metrics rows)")
        ck.apply(self.unwrapped_model, self.optimizer, self.scheduler)
        self.global_step = ck.step
        self.logger.history = [dict(r) for r in ck.history]
        self.resumed_from = self.last_checkpoint = path

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
