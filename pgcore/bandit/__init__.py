"""K-armed bandits with a softmax policy: the exact policy gradient and its score-function estimates,
the gradient bandit algorithm, and a continuous (Gaussian-policy) bandit.

Submodules: `core` (the bandit, softmax policy, exact gradient, score-function estimates, baselines),
`gradient_bandit` (learning), `continuous` (a Gaussian policy over one real action). Their public
names are all here: `pg.bandit.exact_gradient`, `pg.bandit.train_gradient_bandit`, ...

Introduced in notebooks/01_log_derivative_trick_bandit.ipynb.
"""
from __future__ import annotations

from .continuous import *  # noqa: F401,F403
from .continuous import __all__ as _continuous
from .core import *  # noqa: F401,F403
from .core import __all__ as _core
from .gradient_bandit import *  # noqa: F401,F403
from .gradient_bandit import __all__ as _gradient_bandit

__all__ = [*_core, *_gradient_bandit, *_continuous]
