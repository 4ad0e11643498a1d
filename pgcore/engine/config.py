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
from ..lm.algorithm import ADVANTAGES, KL_ESTIMATORS, KL_PLACEMENTS, Args
from ..estimators import AGGREGATIONS as LOSS_AGGREGATIONS
from ..surrogates import POLICY_LOSSES, RATIO_LEVELS
from ..lm.rewards import REWARD_INPUTS
from .rewards import AGGREGATIONS as REWARD_AGGREGATIONS

__all__ = ["LMConfig", "field_docs", "DTYPES", "ADVANTAGES", "KL_ESTIMATORS", "SCHEDULERS", "RESUMABLE_CHANGES", "LOSS_AGGREGATIONS",
           "KL_PLACEMENTS", "POLICY_LOSSES", "RATIO_LEVELS", "REWARD_AGGREGATIONS", "REWARD_INPUTS", "REPORTERS"]

DTYPES = ("float32", "bfloat16")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
# Settings a run may change when resumed: where things go and how long to train. Everything else
# (eval_every, eval_problems and eval_samples too) must match the checkpoint.
RESUMABLE_CHANGES = frozenset({"steps", "save_every", "keep_last", "output_dir", "checkpoint_dir", "model_dir",
                               "run_name", "device", "prompts", "report_to", "log_completions"})
REPORTERS = ("tensorboard", "wandb")


@dataclass(frozen=True)
class LMConfig(Args):
    """Settings of an LM policy-gradient run: `Args` (the step) and what the engine adds. The defaults are the
    course's tiny tier: `tiny` learns to write positive reviews for `tiny-sentiment` in about a minute."""

    model: str = "tiny"
    """the policy: tiny, tiny-arith, smollm2-135m, a hub name or a local path"""
    reward_model: str | tuple | None = "tiny-sentiment"
    """the reward: tiny-sentiment, vader, arithmetic, or a sequence classifier's name or path (repeatable)"""
    reward_label: str | None = None
    """the classifier label whose probability is the reward (None: found by name)"""
    reward_input: str | None = None
    """what a classifier reads: completion, pair or chat (None: from its config)"""
    reward_fn: tuple = ()
    """a reward function of your own, module:function or file.py:function (repeatable)"""
    reward_weights: tuple | None = None
    """one weight per reward, models first, then functions (None: all 1)"""
    reward_aggregation: str = "sum_then_normalize"
    """several rewards: sum_then_normalize, or normalize_then_sum (GDPO)"""
    prompts: str | None = None
    """prompts: a text file (one a line), .jsonl/.json/.csv/.parquet, a saved dataset folder"""
    prompt_column: str = "prompt"
    """the prompt column of a prompt dataset (messages: a chat)"""
    kl_log_every: int = 10
    """with kl_coef 0, run the reference to log the KL every this many steps, from step 1 (0: never)"""
    share_prompt: bool | None = None
    """run each prompt once and share its cache among its samples (None: when num_samples > 1)"""
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
    report_to: str = "none"
    """where metrics also go: none, tensorboard, wandb, or both comma-separated"""
    log_completions: int = 0
    """sampled prompt/completion/reward rows written per step to completions.jsonl"""

    def __post_init__(self):
        super().__post_init__()
        self._check_rewards()
        check_int(self.log_completions, "log_completions", low=0)
        if not isinstance(self.prompt_column, str) or not self.prompt_column:
            raise ValueError(f"prompt_column {self.prompt_column!r} must be a column name")
        report = self.report_to if isinstance(self.report_to, str) else ",".join(self.report_to)
        names = [n.strip() for n in report.split(",") if n.strip()] or ["none"]
        if any(n not in REPORTERS + ("none",) for n in names) or ("none" in names and len(names) > 1):
            raise ValueError(f"report_to {self.report_to!r} unknown; accepted: none, or {', '.join(REPORTERS)} "
                             "(comma-separated)")
        object.__setattr__(self, "report_to", ",".join(dict.fromkeys(names)))
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

    def _check_rewards(self) -> None:
        """Normalize the reward fields (lists to tuples, one name to a string) and check them."""
        models = self.reward_model
        if isinstance(models, (list, tuple)):
            models = tuple(models) if len(models) != 1 else models[0]
            models = models if models != () else None
        fns = (self.reward_fn,) if isinstance(self.reward_fn, str) or callable(self.reward_fn) else \
            tuple(self.reward_fn or ())
        for name in (models if isinstance(models, tuple) else (models,)):
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ValueError(f"reward_model {name!r} is not a name; accepted: tiny-sentiment, vader, arithmetic, "
                                 "a path or a hub name")
        for fn in fns:
            if not (isinstance(fn, str) or callable(fn)):
                raise ValueError(f"reward_fn {fn!r} is neither a callable nor module:function / file.py:function")
        object.__setattr__(self, "reward_model", models)
        object.__setattr__(self, "reward_fn", fns)
        count = len(self.reward_models) + len(fns)
        if not count:
            raise ValueError("no reward given; accepted: a reward_model (--reward-model) or a reward_fn (--reward-fn)")
        if self.reward_weights is not None:  # their number is checked against the rewards loaded (RewardSet)
            weights = tuple(self.reward_weights)
            for w in weights:
                check_number(w, "reward_weights")
            object.__setattr__(self, "reward_weights", weights)
        if self.reward_aggregation not in REWARD_AGGREGATIONS:
            raise ValueError(f"reward_aggregation {self.reward_aggregation!r} unknown; accepted: "
                             f"{', '.join(REWARD_AGGREGATIONS)}")
        if self.reward_input not in (None, *REWARD_INPUTS):
            raise ValueError(f"reward_input {self.reward_input!r} unknown; accepted: {', '.join(REWARD_INPUTS)}")

    @property
    def reward_models(self) -> tuple:
        """The reward model names, as a tuple (empty when only reward functions are used)."""
        m = self.reward_model
        return () if m is None else (m,) if isinstance(m, str) else tuple(m)

    def to_dict(self) -> dict:
        """`dataclasses.asdict`, with reward functions given as callables named `module:qualname` (what
        summary.json and checkpoints record, and resume compares)."""
        from ..lm.reward_fns import function_name

        d = dataclasses.asdict(self)
        d["reward_fn"] = [f if isinstance(f, str) else function_name(f) for f in self.reward_fn]
        if isinstance(d["reward_model"], tuple):
            d["reward_model"] = list(d["reward_model"])
        if d["reward_weights"] is not None:
            d["reward_weights"] = list(d["reward_weights"])
        return d

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
