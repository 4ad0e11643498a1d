"""Settings of an engine run (`LMConfig`): the algorithm's `Args` plus models, files, resume and speed.

The rationale of each setting is in docs/lm.md; the CLI's flags and `--help` are made from these fields.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass

from .._checks import check_int, check_number
from ..lm.algorithm import ADVANTAGES, KL_PLACEMENTS, Args
from ..estimators import AGGREGATIONS as LOSS_AGGREGATIONS

__all__ = ["LMConfig", "field_docs", "DTYPES", "ADVANTAGES", "KL_ESTIMATORS", "SCHEDULERS", "RESUMABLE_CHANGES", "LOSS_AGGREGATIONS",
           "KL_PLACEMENTS"]

DTYPES = ("float32", "bfloat16")
KL_ESTIMATORS = ("k1", "k3")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# Settings a run may change when resumed: where things go and how long to train. Everything else
# (eval_every, eval_problems and eval_samples too) must match the checkpoint.
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "output_dir", "checkpoint_dir", "model_dir",
                               "run_name", "device", "prompts"})


@dataclass(frozen=True)
class LMConfig(Args):
    """Settings of an LM policy-gradient run: `Args` (the step) and what the engine adds. The defaults are the
    course's tiny tier: `tiny` learns to write positive reviews for `tiny-sentiment` in about a minute."""

    model: str = "tiny"
    """the policy: tiny, tiny-arith, smollm2-135m, a hub name or a local path"""
    reward_model: str = "tiny-sentiment"
    """the reward: tiny-sentiment, vader, arithmetic, or a sequence classifier's name or path"""
    reward_label: str | None = None
    """the classifier label whose probability is the reward (None: found by name)"""
    prompts: str | None = None
    """a text file with one prompt per line (None: the reward's or data/prompts.txt)"""
    kl_log_every: int = 1
    """with kl_coef 0, run the reference to log the KL every this many steps (0: never)"""
    share_prompt: bool | None = None
    """run each prompt once and share its cache among its samples (None: for chat models)"""
    eval_every: int = 0
    """held-out pass@1 every this many steps and at the end (0: never; needs a verifier)"""
    eval_problems: int = 256
    """held-out problems per evaluation (the same ones every time)"""
    eval_samples: int = 4
    """completions sampled per held-out problem per evaluation"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus subtracted from the loss"""
    lr_scheduler: str = "constant_with_warmup"
    """transformers' schedule: constant, constant_with_warmup, linear or cosine"""
    warmup_steps: int = 0
    """steps of linear learning-rate warmup from 0"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    save_every: int = 50
    """save a checkpoint every this many steps and at the end (0: only at the end)"""
    keep_last: int = 2
    """keep the newest this many checkpoints (0: all)"""
    output_dir: str | None = "output/policy_gradient_metrics"
    """where the four metrics files go (None: nowhere)"""
    checkpoint_dir: str | None = "checkpoints"
    """where checkpoint-<step>/ folders go (None: no checkpoints)"""
    model_dir: str | None = "models"
    """the final model goes to <model_dir>/<run_name>/ (None: not saved)"""
    run_name: str = "policy_gradient"
    """folder name of the final model inside model_dir"""
    device: str | None = None
    """cpu, cuda, cuda:1, ... (None: CUDA when present, else CPU)"""
    dtype: str = "float32"
    """precision of the forward passes: float32, or bfloat16 autocast (weights stay float32)"""

    def __post_init__(self):
        super().__post_init__()
        for name in ("eval_problems", "eval_samples"):
            check_int(getattr(self, name), name)
        for name in ("save_every", "keep_last", "warmup_steps", "eval_every", "kl_log_every"):
            check_int(getattr(self, name), name, low=0)
        for name in ("entropy_coef", "weight_decay"):
            check_number(getattr(self, name), name, ge=0)
        if self.share_prompt not in (None, True, False):
            raise ValueError(f"share_prompt must be True, False or None (automatic), got {self.share_prompt!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} unknown; accepted: {', '.join(DTYPES)}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r} unknown; accepted: {', '.join(SCHEDULERS)}")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ValueError(f"run_name {self.run_name!r} must be a plain folder name")

    @property
    def args(self) -> Args:
        """The algorithm's settings of this run (`pgcore.lm.algorithm.Args`)."""
        return Args(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Args)})

    def replace(self, **changes) -> "LMConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def field_docs(cls) -> dict[str, str]:
    """{field: its docstring} of a dataclass and its bases: the string literal written under each field (the
    CLI's `--help` is made from these)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
