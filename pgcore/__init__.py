"""pgcore: the small shared package of the Policy Gradient course.

Every notebook starts with `import pgcore as pg`. The estimators are top-level names, as the
notebooks introduce them: `pg.pg_loss`, `pg.mean_baseline`, `pg.normalize`, `pg.reward_to_go`,
`pg.gae`, `pg.rloo`, `pg.group_normalize`, `pg.ppo_clip_loss`, `pg.kl_k3`, `pg.aggregate`,
`pg.surrogate_loss` (PPO / CISPO / GSPO on a reused batch), ...
The rest are subpackages: `pg.bandit`, `pg.policies`, `pg.envs`, `pg.reinforce`, `pg.actor_critic`,
`pg.variance`, `pg.plotting`, `pg.widgets`, `pg.exercises`, `pg.lm`. Those that need gymnasium,
matplotlib, ipywidgets or transformers load on first use, so `import pgcore` stays fast and never
imports transformers; only `pgcore.lm` does.
"""
from __future__ import annotations

from . import bandit, estimators, policies, returns, surrogates, variance
from ._lazy import lazy_submodules
from .estimators import (
    AGGREGATIONS,
    aggregate,
    group_normalize,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    mean_baseline,
    normalize,
    pg_loss,
    ppo_clip_loss,
    rloo,
)
from .surrogates import (POLICY_LOSSES, RATIO_LEVELS, SAMPLER_CORRECTIONS, importance_ratio, ratio_stats,
                         sampler_weights, surrogate_loss)
from .returns import discount_cumsum, discounted_return, gae, reward_to_go, td_error
from .utils import get_device, set_seed

__version__ = "0.1.0"

_LAZY = ("envs", "reinforce", "actor_critic", "plotting", "widgets", "exercises", "lm", "utils", "files", "engine")

__getattr__, __dir__ = lazy_submodules(__name__, _LAZY)

__all__ = [
    *estimators.__all__, *surrogates.__all__, *returns.__all__, "set_seed", "get_device", "__version__",
    "bandit", "estimators", "policies", "returns", "surrogates", "variance",
    *_LAZY,
]
