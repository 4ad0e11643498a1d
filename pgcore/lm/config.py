"""Settings of an LM policy-gradient run (`LMConfig`) and the names they accept.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["LMConfig", "DTYPES", "ADVANTAGES", "KL_ESTIMATORS", "SCHEDULERS", "RESUMABLE_CHANGES", "LOSS_AGGREGATIONS",
           "KL_PLACEMENTS"]

ADVANTAGES = ("none", "mean", "rloo", "group")
DTYPES = ("float32", "bfloat16")
KL_ESTIMATORS = ("k1", "k3")
LOSS_AGGREGATIONS = ("token", "sequence", "constant", "sum")
KL_PLACEMENTS = ("reward", "loss")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# Settings a run may change when resumed: where things go and how long to train. Everything else
# must match the checkpoint, or the resumed run would not be the run that was checkpointed.
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "output_dir", "checkpoint_dir", "model_dir",
                               "run_name", "device", "prompts"})
# (eval_every, eval_problems and eval_samples must match too: the held-out pass@1 column must mean one thing)


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
    (minus the mean of the prompt's other samples), group (GRPO: normalized within the prompt's group,
    (r - mean) / std). rloo equals Dr. GRPO's r - mean up to the factor G/(G-1)"""
    loss_aggregation: str = "token"
    """how per-token terms become the loss: token (mean over all completion tokens of the batch; DAPO,
    TRL's default), sequence (mean within each completion, then over completions; the original GRPO),
    constant (sum over tokens / (completions x max_new_tokens); Dr. GRPO)"""
    kl_coef: float = 0.1
    """weight of the KL(policy || reference) penalty subtracted from each completion's reward (0: none;
    the KL to the starting policy is logged anyway)"""
    kl_estimator: str = "k1"
    """per-token KL estimate in the penalty: k1 = log(pi/ref) (unbiased gradient) or k3 = ref/pi - 1 -
    log(ref/pi) (lower-variance value, biased gradient as a reward; see the module docstring)"""
    kl_in: str = "reward"
    """where the KL to the reference acts: reward (the detached penalty kl_coef * sum_t kl_t subtracted from
    each completion's reward, with kl_estimator) or loss (GRPO: kl_coef * the aggregated per-token k3,
    with its gradient, added to the loss). The logged kl is the same in both"""
    kl_log_every: int = 1
    """with kl_coef 0 (the KL acts nowhere), run the frozen reference only every this many steps, to log the
    KL (0: never; the kl column is then empty on the other steps). kl_coef > 0 runs it every step"""
    share_prompt: bool | None = None
    """run each prompt once (and the prefix all prompts share, such as a chat template's system turn, once
    for all) and share its key/value cache among its num_samples completions, when sampling and in the
    log-prob forwards: the same log-probs and gradients up to float rounding, far less compute when prompts
    are long. The sampler then draws other random numbers than Hugging Face `generate` (same distribution).
    False: `generate` and one forward over every prompt + completion row. None (default): on for models
    whose prompts go through a chat template (their system turn makes the prompt long), off otherwise"""
    eval_every: int = 0
    """measure held-out pass@1 (sampled, temperature 1) every this many steps, before the step's update,
    and of the final model (0: never; needs a verifier reward with held-out problems, e.g. arithmetic)"""
    eval_problems: int = 256
    """held-out problems per evaluation (the same ones every time)"""
    eval_samples: int = 4
    """completions sampled per held-out problem per evaluation"""
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
    dtype: str = "float32"
    """compute precision of the forward passes (sampling, log-probs, reference): float32, or bfloat16 via
    torch.autocast (weights and the optimizer stay float32; for GPUs with bf16, e.g. Ampere and newer)"""

    def __post_init__(self):
        def positive_int(name, allow_zero=False):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
                raise ValueError(f"{name} must be an int >= {0 if allow_zero else 1}, got {v!r}")

        for name in ("steps", "batch_size", "num_samples", "max_new_tokens", "eval_problems", "eval_samples"):
            positive_int(name)
        for name in ("save_every", "keep_last", "warmup_steps", "eval_every", "kl_log_every"):
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
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_aggregation {self.loss_aggregation!r} unknown; accepted: "
                             f"{', '.join(LOSS_AGGREGATIONS)}")
        if self.share_prompt not in (None, True, False):
            raise ValueError(f"share_prompt must be True, False or None (automatic), got {self.share_prompt!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} unknown; accepted: {', '.join(DTYPES)}")
        if self.kl_in not in KL_PLACEMENTS:
            raise ValueError(f"kl_in {self.kl_in!r} unknown; accepted: {', '.join(KL_PLACEMENTS)}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r} unknown; accepted: {', '.join(SCHEDULERS)}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ValueError(f"run_name {self.run_name!r} must be a plain folder name")

    def replace(self, **changes) -> "LMConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
