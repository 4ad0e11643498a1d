"""pgcore.actor_critic: n-step advantages vs brute force, REINFORCE retraced, the critic and the clip do
their jobs, configs are validated; and notebook 03's variance measurement (pgcore.widgets.variance)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pgcore as pg
from pgcore.actor_critic import ActorCriticConfig, fit_value, n_step_advantage, rollout_advantages, train
from pgcore.envs import make_env
from pgcore.returns import gae, td_error
from pgcore.policies import MLPPolicy, ValueNet
from pgcore.reinforce import ReinforceConfig, collect_rollout
from pgcore.widgets import variance as vw

FAST = dict(max_env_steps=1500, early_stop=False, num_envs=4)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def rollout():
    torch.manual_seed(0)
    policy, critic = MLPPolicy(4, 2, (16,)), ValueNet(4, (16,))
    b = collect_rollout(make_env("CartPole-v1", num_envs=3, seed=0), policy, 9, generator=_gen(0))
    with torch.no_grad():
        v, nv = critic(b.obs).double(), critic(b.next_obs).double()
    b.terminated[-1] = False  # pretend the last steps were cut by a time limit where an episode ended there
    return b, v, nv, policy, critic


# ------------------------------------------------------------------ n-step advantage

def _brute_n_step(b, v, nv, gamma, n):
    T, N = b.mask.shape
    out = torch.zeros(T, N, dtype=torch.float64)
    for col in range(N):
        steps = [t for t in range(T) if b.mask[t, col]]
        episodes, cur = [], []
        for t in steps:
            cur.append(t)
            if b.done[t, col]:
                episodes.append(cur)
                cur = []
        for ep in episodes:
            for i, t in enumerate(ep):
                m = min(n, len(ep) - i)
                ret = sum(gamma ** k * float(b.rew[ep[i + k], col]) for k in range(m))
                last = ep[i + m - 1]
                if m == n and i + m < len(ep):      # the window ends inside the episode: bootstrap V(s_{t+n})
                    ret += gamma ** m * float(v[ep[i + m], col])
                elif not b.terminated[last, col]:   # it reached the episode's cut-off end: V(final obs)
                    ret += gamma ** m * float(nv[last, col])
                out[t, col] = ret - float(v[t, col])
    return out


@pytest.mark.parametrize("n", [1, 3, 8, 1000])
def test_n_step_advantage_matches_brute_force(rollout, n):
    b, v, nv, _, _ = rollout
    got = n_step_advantage(b.rew.double(), v, b.done, 0.95, n, next_val=nv, terminated=b.terminated, mask=b.mask)
    assert torch.allclose(got, _brute_n_step(b, v, nv, 0.95, n), atol=1e-9)


def test_n_step_advantage_limits(rollout):
    b, v, nv, _, _ = rollout
    kw = dict(next_val=nv, terminated=b.terminated, mask=b.mask)
    rew = b.rew.double()
    assert torch.allclose(n_step_advantage(rew, v, b.done, 0.9, 1, **kw), td_error(rew, v, b.done, 0.9, **kw))
    T = b.mask.shape[0]
    assert torch.allclose(n_step_advantage(rew, v, b.done, 0.9, T, **kw), gae(rew, v, b.done, 0.9, 1.0, **kw), atol=1e-9)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        n_step_advantage(rew, v, b.done, 0.9, 0)


# ------------------------------------------------------------------ the config

@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("gamma", 1.5), ("advantage", "td"), ("baseline", "median"), ("lam", 1.1), ("n_steps", 0),
    ("update_epochs", 0), ("num_minibatches", 0), ("clip_eps", 1.0), ("clip_eps", -0.2), ("ent_coef", -1.0),
    ("max_grad_norm", 0.0), ("normalize_adv", 1), ("hidden_sizes", (0,)), ("activation", "sigmoid"),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"ActorCriticConfig.{field}="):
        ActorCriticConfig(**{field: value})


def test_config_bootstrapping_needs_the_critic():
    with pytest.raises(ValueError, match="baseline"):
        ActorCriticConfig(advantage="gae", baseline="none")
    assert ActorCriticConfig(advantage="reward_to_go", baseline="none").uses_critic is False
    assert ActorCriticConfig().replace(lam=0.5).lam == 0.5
    with pytest.raises(ValueError, match="config must be an ActorCriticConfig"):
        train("CartPole-v1", config=ReinforceConfig(), progress=False)
    with pytest.raises(ValueError, match="config must be a ReinforceConfig"):
        ActorCriticConfig.from_reinforce(ActorCriticConfig())
    assert ActorCriticConfig.from_reinforce(ReinforceConfig(weighting="total_return"), lr=0.5).advantage == "total_return"


def test_rollout_advantages_targets(rollout):
    """gae/nstep: target = A + V (lambda-return / n-step return); Monte Carlo: target = G_t."""
    b, _, _, _, critic = rollout
    cfg = ActorCriticConfig(gamma=0.9, normalize_adv=False)
    v = critic(b.obs).detach()[b.mask]
    for c in (cfg, cfg.replace(advantage="nstep", n_steps=3)):
        adv, target = rollout_advantages(b, c, critic)
        assert torch.allclose(target - adv, v, atol=1e-6)
    adv, target = rollout_advantages(b, cfg.replace(advantage="reward_to_go"), critic)
    g = pg.returns.reward_to_go(b.rew, 0.9, b.done, b.mask)[b.mask]
    assert torch.allclose(target, g) and torch.allclose(adv, g - v, atol=1e-6)
    adv, _ = rollout_advantages(b, cfg.replace(normalize_adv=True), critic)
    assert abs(float(adv.mean())) < 1e-5 and abs(float(adv.std()) - 1) < 1e-4
    with pytest.raises(ValueError, match="needs a value_net"):
        rollout_advantages(b, cfg, None)


# ------------------------------------------------------------------ train

@pytest.mark.parametrize("baseline", ["none", "value"])
def test_train_with_reinforce_settings_retraces_reinforce(baseline):
    """advantage="reward_to_go", one epoch, no clip: the ratio objective takes REINFORCE's steps exactly."""
    rc = ReinforceConfig(baseline=baseline, **FAST)
    a = pg.reinforce.train("CartPole-v1", seed=4, config=rc, progress=False)
    cfg = ActorCriticConfig.from_reinforce(rc)
    assert (cfg.advantage, cfg.baseline, cfg.lr, cfg.hidden_sizes) == (rc.weighting, baseline, rc.lr, rc.hidden_sizes)
    b = train("CartPole-v1", seed=4, progress=False, config=cfg)
    assert [h["return_mean"] for h in a.history] == [h["return_mean"] for h in b.history]
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.policy.parameters(), b.policy.parameters()))
    assert a.env_steps == b.env_steps and isinstance(b, pg.reinforce.TrainResult)
    assert all(abs(h["ratio_max"] - 1) < 0.5 for h in b.history) and all(h["optimizer_steps"] == 1 for h in b.history)


def test_train_is_deterministic_and_logs_the_update():
    cfg = ActorCriticConfig(update_epochs=3, num_minibatches=2, clip_eps=0.2, **FAST)
    r1 = train("CartPole-v1", seed=1, config=cfg, progress=False)
    r2 = train("CartPole-v1", seed=1, config=cfg, progress=False)
    h1 = r1.history_df().drop(columns="seconds")
    assert h1.equals(r2.history_df().drop(columns="seconds"))
    assert set(pg.reinforce.train("CartPole-v1", seed=1, config=ReinforceConfig(**FAST), progress=False).history[0]) \
        <= set(r1.history[0])
    assert (h1.optimizer_steps == 6).all() and (h1.approx_kl >= 0).all() and h1.value_loss.notna().all()
    assert r1.value_net is not None and r1.env_steps >= cfg.max_env_steps


def test_clip_keeps_a_reused_batch_close_to_the_old_policy():
    """Twenty epochs at a large step on one batch: without the clip the policy runs far (KL), with it it stays near."""
    cfg = ActorCriticConfig(lr=0.05, update_epochs=20, max_env_steps=1, early_stop=False)   # one batch
    free = train("CartPole-v1", seed=0, config=cfg, progress=False).history[0]
    clipped = train("CartPole-v1", seed=0, config=cfg.replace(clip_eps=0.2), progress=False).history[0]
    assert clipped["approx_kl"] < 0.2 * free["approx_kl"]
    assert clipped["ratio_max"] < free["ratio_max"] and clipped["clip_frac"] > 0 and free["clip_frac"] == 0


def _corridor_policy(p: float) -> MLPPolicy:
    """No hidden layer, pi(right) = p in every cell (as in notebook 02)."""
    policy = MLPPolicy(1, 2, hidden_sizes=())
    with torch.no_grad():
        policy.logits_net[0].weight.zero_()
        policy.logits_net[0].bias.copy_(torch.tensor([0.0, math.log(p / (1 - p))]))
    return policy


def test_short_corridor_unbiased_advantages_learn_and_the_aliased_td_error_does_not():
    """From p = P(right) = 0.9, Monte Carlo advantages (with or without PPO's epochs and clip) move p to the
    optimum p* = 2 - sqrt(2). The one-step TD error needs V(s) per cell, but every cell looks the same, so the
    critic is one number and its bootstrap is biased: it pushes p the wrong way, to "always right"."""
    p_star, _ = pg.envs.short_corridor_optimum()
    base = ActorCriticConfig(gamma=1.0, num_envs=16, lr=0.05, max_env_steps=6000, early_stop=False, hidden_sizes=())

    def learned_p(cfg):
        r = train(pg.envs.ShortCorridor(), seed=0, config=cfg, progress=False, policy=_corridor_policy(0.9))
        with torch.no_grad():
            return float(r.policy(torch.ones(1, 1)).probs[0, 1])

    for cfg in (base.replace(advantage="reward_to_go", baseline="mean"),
                base.replace(lam=1.0, update_epochs=4, clip_eps=0.2, lr=0.02)):
        assert abs(learned_p(cfg) - p_star) < 0.1, cfg
    assert learned_p(base.replace(advantage="nstep", n_steps=1)) > 0.85


def test_fit_value_regresses():
    g = _gen(0)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 3.0
    torch.manual_seed(0)
    v = ValueNet(3, (16,))
    with torch.no_grad():
        before = float(((v(x) - y) ** 2).mean())
    after = fit_value(v, x, y, iters=50, lr=3e-2, batch_size=64, generator=g)
    assert after < 0.05 * before
    with pytest.raises(ValueError, match="iters"):
        fit_value(v, x, y, iters=0)
    with pytest.raises(ValueError, match="must match"):
        fit_value(v, x, y[:10])


# ------------------------------------------------------------------ notebook 03's measurement

@pytest.fixture(scope="module")
def lab():
    torch.manual_seed(0)
    policy, critic = MLPPolicy(4, 2, (8,)), ValueNet(4, (8,))
    with torch.no_grad():
        policy.logits_net[-2].weight.normal_()                      # a policy with a gradient worth measuring
    b = collect_rollout(make_env("CartPole-v1", num_envs=12, seed=1), policy, 12, generator=_gen(1))
    reference = torch.randn(sum(p.numel() for p in policy.parameters()), generator=_gen(2))
    return vw.make_lab(policy, critic, b, reference, 0.99, episodes_per_batch=3)


def test_batch_gradients_equal_autograd_per_batch(lab):
    """Each row of lab.gradients(adv) is grad of (1/B) sum over the batch's steps of logp * adv."""
    b, B = lab.batch, lab.episodes_per_batch
    adv = vw.lab_advantage(lab, 0.9, "value")
    rows = lab.gradients(adv)
    params = list(lab.policy.parameters())
    for k in range(lab.num_batches):
        cols = slice(k * B, (k + 1) * B)
        m = b.mask[:, cols]
        logp = lab.policy(b.obs[:, cols][m]).log_prob(b.act[:, cols][m])
        grads = torch.autograd.grad((logp * adv[:, cols][m]).sum() / B, params)
        assert torch.allclose(rows[k], torch.cat([g.flatten() for g in grads]), atol=1e-5)


def test_gradient_stats_by_hand():
    g = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 1.0]])
    ref = torch.tensor([1.0, 1.0])
    s = pg.variance.gradient_stats(g, ref)
    assert math.isclose(s["trace_cov"], 1.0 + 1.0, rel_tol=1e-6)                      # var of each column is 1
    assert math.isclose(s["naive_ratio"], 2.0 / 5.0, rel_tol=1e-6)                    # mean (2, 1)
    assert math.isclose(s["signal"], (3 + 2 + 8) / 3, rel_tol=1e-6)                   # mean of g_i . g_j, i != j
    assert math.isclose(s["signal"], 5.0 - 2.0 / 3, rel_tol=1e-6)                     # = ||mean||^2 - tr Cov / M
    assert math.isclose(s["noise_to_signal"], 2.0 / 5.0 * 5 / (5.0 - 2.0 / 3), rel_tol=1e-6)
    cos = [1 / math.sqrt(2), 5 / math.sqrt(13 * 2), 3 / math.sqrt(10)]
    assert math.isclose(s["cos"], sum(cos) / 3, rel_tol=1e-6)
    assert math.isclose(s["cos_of_mean"], 3 / math.sqrt(10), rel_tol=1e-6)


def test_lab_advantage_baselines(lab):
    b = lab.batch
    g = lab.rtg
    assert torch.allclose(vw.lab_advantage(lab, 1.0, "none"), g)
    assert torch.allclose(vw.lab_advantage(lab, 1.0, "value"), torch.where(b.mask, g - lab.val, torch.zeros_like(g)), atol=1e-4)
    mean = vw.lab_advantage(lab, 1.0, "mean")
    for k in range(lab.num_batches):
        cols = slice(k * 3, k * 3 + 3)
        m = b.mask[:, cols]
        assert torch.allclose(mean[:, cols][m], g[:, cols][m] - g[:, cols][m].mean(), atol=1e-4)
    with pytest.raises(ValueError, match="unknown baseline"):
        vw.lab_advantage(lab, 0.5, "critic")


def test_variance_stats_is_deterministic_and_lambda_moves_it(lab):
    s1 = vw.variance_stats(lab, lam=0.5, epochs=3, clip_eps=0.2)
    s2 = vw.variance_stats(lab, lam=0.5, epochs=3, clip_eps=0.2)
    s3 = vw.variance_stats(lab, lam=0.8, epochs=3, clip_eps=None, lam_grid=(0.5, 0.8))
    assert s1["trace_cov"] == s2["trace_cov"] and np.array_equal(s1["approx_kl"], s2["approx_kl"])
    assert s1["trace_cov"] != s3["trace_cov"]
    assert math.isclose(s3["trace_grid"][0], s1["trace_cov"]) and math.isclose(s3["trace_grid"][1], s3["trace_cov"])
    assert len(s1["approx_kl"]) == 3 and (s1["approx_kl"] >= 0).all()
    text = vw.format_readout(s1)
    assert "tr Cov = " in text and "0.50" in text
    with pytest.raises(ValueError, match="lam"):
        vw.variance_stats(lab, lam=1.5)


def test_ppo_epochs_leaves_the_policy_alone(lab):
    b = lab.batch
    obs, act = b.obs[b.mask], b.act[b.mask]
    adv = torch.randn(obs.shape[0], generator=_gen(5))
    before = [p.detach().clone() for p in lab.policy.parameters()]
    out = vw.ppo_epochs(lab.policy, obs, act, adv, epochs=4, clip_eps=None, lr=0.05)
    assert all(torch.equal(p, q) for p, q in zip(before, lab.policy.parameters()))
    assert out["approx_kl"][-1] > 0 and len(out["ratio_max"]) == 4


def test_make_lab_rejects_bad_batches(lab):
    with pytest.raises(ValueError, match="episodes_per_batch"):
        vw.make_lab(lab.policy, lab.value_net, lab.batch, lab.reference, 0.99, episodes_per_batch=5)
    two_each = collect_rollout(make_env("CartPole-v1", num_envs=2, seed=0), lab.policy, 4, generator=_gen(0))
    with pytest.raises(ValueError, match="one episode per column"):
        vw.make_lab(lab.policy, lab.value_net, two_each, lab.reference, 0.99, episodes_per_batch=1)


def _ppo_inputs(seed=0, n_episodes=6):
    torch.manual_seed(seed)
    policy, critic = MLPPolicy(4, 2, (16,)), ValueNet(4, (16,))
    b = collect_rollout(make_env("CartPole-v1", num_envs=n_episodes, seed=seed), policy, n_episodes, generator=_gen(seed))
    obs, act, old_logp = b.obs[b.mask], b.act[b.mask], b.logp[b.mask]
    adv = torch.randn(obs.shape[0], generator=_gen(seed + 1)) * 3 + 1
    v_target = torch.randn(obs.shape[0], generator=_gen(seed + 2)) * 10 + 20
    return policy, critic, obs, act, old_logp, adv, v_target


def _run_update(cfg, policy, critic, obs, act, old_logp, adv, v_target, seed=0):
    import copy
    p, c = copy.deepcopy(policy), copy.deepcopy(critic)
    opt, vopt = torch.optim.Adam(p.parameters(), lr=cfg.lr), torch.optim.Adam(c.parameters(), lr=cfg.value_lr)
    out = pg.actor_critic.ppo_update(p, opt, obs, act, old_logp, adv, cfg, generator=_gen(seed),
                                     value_net=c, value_optimizer=vopt, v_target=v_target)
    return p, c, out


def test_ppo_update_new_options_default_off():
    cfg = ActorCriticConfig()
    assert cfg.adv_norm_scope == "batch" and cfg.target_kl is None and cfg.value_minibatch is False
    for bad in (dict(adv_norm_scope="epoch"), dict(target_kl=0.0), dict(target_kl=-1.0), dict(value_minibatch=1)):
        with pytest.raises(ValueError):
            ActorCriticConfig(**bad)


def test_ppo_update_minibatch_normalization_by_hand():
    inputs = _ppo_inputs()
    cfg = ActorCriticConfig(update_epochs=2, num_minibatches=3, clip_eps=0.2, adv_norm_scope="minibatch", lr=0.01)
    p, _, out = _run_update(cfg, *inputs)
    policy, _, obs, act, old_logp, adv, _ = inputs
    # by hand: the same permutations, each minibatch's advantages standardized on their own
    import copy
    q = copy.deepcopy(policy)
    opt = torch.optim.Adam(q.parameters(), lr=0.01)
    gen, n = _gen(0), obs.shape[0]
    size = -(-n // 3)
    for _ in range(2):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, size):
            idx = perm[i:i + size]
            a = adv[idx]
            a = (a - a.mean()) / (a.std() + 1e-8)
            ratio = torch.exp(q(obs[idx]).log_prob(act[idx]) - old_logp[idx])
            loss = -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(p.parameters(), q.parameters()))
    assert out["epochs"] == 2 and len(out["clip_fracs"]) == 6
    # and it differs from standardizing the whole batch once
    p2, _, _ = _run_update(cfg.replace(adv_norm_scope="batch"), policy, inputs[1], obs, act, old_logp, pg.normalize(adv), inputs[6])
    assert not all(torch.allclose(x, y, atol=1e-6) for x, y in zip(p.parameters(), p2.parameters()))


def test_ppo_update_target_kl_stops_the_epochs():
    inputs = _ppo_inputs()
    cfg = ActorCriticConfig(update_epochs=6, num_minibatches=2, clip_eps=0.2, lr=0.05)
    _, _, full = _run_update(cfg, *inputs)
    _, _, stopped = _run_update(cfg.replace(target_kl=1e-9), *inputs)
    assert full["epochs"] == 6 and len(full["clip_fracs"]) == 12
    assert stopped["epochs"] == 1 and len(stopped["clip_fracs"]) == 2 and stopped["approx_kl"] > 1e-9


def test_ppo_update_value_minibatch_steps_the_critic():
    inputs = _ppo_inputs()
    policy, critic, obs, act, old_logp, adv, v_target = inputs
    cfg = ActorCriticConfig(update_epochs=3, num_minibatches=2, value_minibatch=True, value_lr=0.01)
    p_off, c_off, _ = _run_update(cfg.replace(value_minibatch=False), *inputs)
    p_on, c_on, _ = _run_update(cfg, *inputs)
    assert all(torch.equal(x, y) for x, y in zip(c_off.parameters(), critic.parameters())), "off: critic untouched here"
    with torch.no_grad():
        before = float(((critic(obs) - v_target) ** 2).mean())
        after = float(((c_on(obs) - v_target) ** 2).mean())
    assert after < before
    assert all(torch.equal(x, y) for x, y in zip(p_on.parameters(), p_off.parameters())), "the policy's steps do not change"
    with pytest.raises(ValueError, match="value_minibatch"):
        pg.actor_critic.ppo_update(policy, torch.optim.Adam(policy.parameters()), obs, act, old_logp, adv, cfg,
                                   value_net=critic)


def test_train_with_cleanrl_options_runs_and_is_deterministic():
    cfg = ActorCriticConfig(update_epochs=4, num_minibatches=4, clip_eps=0.2, adv_norm_scope="minibatch", target_kl=0.01,
                            value_minibatch=True, ent_coef=0.01, max_grad_norm=0.5, **FAST)
    a = train("CartPole-v1", seed=1, config=cfg, progress=False)
    b = train("CartPole-v1", seed=1, config=cfg, progress=False)
    assert [h["return_mean"] for h in a.history] == [h["return_mean"] for h in b.history]
    assert all(math.isfinite(h["value_loss"]) for h in a.history)
    assert any(h["optimizer_steps"] < 16 for h in a.history), "the KL early stop cut some update short"
