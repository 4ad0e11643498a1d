"""REINFORCE with a critic and a clip: Actor-Critic (one-step, n-step, GAE) and PPO-style updates.

The same five steps as `pgcore.reinforce`, the same rollouts (`collect_rollout`), the same
`TrainResult`; only two places of the loop gain options:

  3. the advantage:  "total_return" R(tau), "reward_to_go" G_t (minus a baseline: none, the batch
     mean, or a learned V(s_t)), "nstep" (the n-step return minus V(s_t), n = 1 is the one-step
     actor-critic) or "gae" (GAE(lambda), `pgcore.gae`). The last two bootstrap from a learned
     critic V_phi (`pgcore.policies.ValueNet`), fitted after every update (`fit_value`).
  4. the update:     `update_epochs` passes over the batch in `num_minibatches` minibatches, each a
     step on `pgcore.ppo_clip_loss`: the importance ratio pi_theta / pi_old lets a batch be
     reused, `clip_eps` clips it (PPO); clip_eps=None is the plain ratio objective. With one epoch
     and one minibatch the ratio is 1 and the step is REINFORCE's step on `pg_loss`. `ppo_update` is this
     step on its own; CleanRL's options are fields too: advantages standardized per minibatch
     (`adv_norm_scope`), an approx-KL early stop (`target_kl`), the critic trained in the same minibatch
     loop (`value_minibatch`), an entropy bonus (`ent_coef`) and gradient clipping (`max_grad_norm`).

So `train(config=ActorCriticConfig.from_reinforce(rc))` is REINFORCE (it retraces
`pgcore.reinforce.train(config=rc)` step for step), `advantage="gae"` is
an actor-critic (A2C-style, one update per batch), and `update_epochs=4, clip_eps=0.2` makes it PPO.

A package: `config` (ActorCriticConfig), `update` (advantages, critic fit, PPO update), `loop` (train).

Introduced in notebooks/03_variance_reduction.ipynb.
"""
from __future__ import annotations

from .config import ADV_NORM_SCOPES, ADVANTAGE_ESTIMATORS, ActorCriticConfig
from .loop import TrainResult, train
from .update import (
    critic_values,
    fit_value,
    n_step_advantage,
    ppo_update,
    rollout_advantages,
)

__all__ = [
    "ActorCriticConfig",
    "ADVANTAGE_ESTIMATORS",
    "ADV_NORM_SCOPES",
    "n_step_advantage",
    "critic_values",
    "rollout_advantages",
    "fit_value",
    "ppo_update",
    "train",
    "TrainResult",
]
