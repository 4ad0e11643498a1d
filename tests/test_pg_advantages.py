"""Notebook 03's estimators (pgcore.returns, pgcore.estimators): the TD error, GAE(lambda) and PPO's clipped surrogate against
brute-force loops; and the critic-free baselines (RLOO, group normalization) on CartPole-shaped batches."""
from __future__ import annotations

import math

import pytest
import torch

import pgcore as pg
from pgcore.estimators import group_normalize, pg_loss, ppo_clip_loss, rloo
from pgcore.returns import gae, reward_to_go, td_error


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _episodes_batch(seed: int = 0, T: int = 9, N: int = 4, truncate: bool = False):
    """A (T, N) batch with several episodes per column, padding at the end, float64.

    Returns rew, val, next_val, done, terminated, mask. Within an episode next_val[t] = val[t + 1];
    at the last step of an episode next_val is the value of the final observation."""
    g = _gen(seed)
    rew = torch.randn(T, N, generator=g, dtype=torch.float64)
    val = torch.randn(T, N, generator=g, dtype=torch.float64)
    final_val = torch.randn(T, N, generator=g, dtype=torch.float64)
    done = torch.zeros(T, N, dtype=torch.bool)
    mask = torch.ones(T, N, dtype=torch.bool)
    ends = {0: [2, 6], 1: [8], 2: [0, 3, 4], 3: [5]}            # last step of each episode; col 3 padded after 5
    for n, es in ends.items():
        for e in es:
            done[e, n] = True
    mask[6:, 3] = False
    terminated = done.clone()
    if truncate:
        terminated[6, 0] = False                                # a time limit cut this episode
        terminated[8, 1] = False
    next_val = torch.cat([val[1:], final_val[-1:]], dim=0)
    next_val = torch.where(done, final_val, next_val)
    rew = torch.where(mask, rew, torch.zeros_like(rew))
    return rew, val, next_val, done, terminated, mask


def _episodes_of(done, mask, n):
    """Lists of step indices, one list per episode of column n (brute force)."""
    episodes, cur = [], []
    for t in range(done.shape[0]):
        if not mask[t, n]:
            continue
        cur.append(t)
        if done[t, n]:
            episodes.append(cur)
            cur = []
    if cur:
        episodes.append(cur)
    return episodes


def _brute_gae(rew, val, next_val, done, terminated, mask, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, summed over the rest of t's episode, by Python loops."""
    T, N = rew.shape
    out = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for ep in _episodes_of(done, mask, n):
            deltas = []
            for t in ep:
                v_next = 0.0 if terminated[t, n] else float(next_val[t, n])
                deltas.append(float(rew[t, n]) + gamma * v_next - float(val[t, n]))
            for i, t in enumerate(ep):
                out[t, n] = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(ep) - i))
    return out


# ------------------------------------------------------------------ GAE and the TD error

@pytest.mark.parametrize("lam", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("truncate", [False, True])
def test_gae_matches_brute_force(lam, truncate):
    rew, val, next_val, done, terminated, mask = _episodes_batch(1, truncate=truncate)
    got = gae(rew, val, done, 0.9, lam, next_val=next_val, terminated=terminated, mask=mask)
    want = _brute_gae(rew, val, next_val, done, terminated, mask, 0.9, lam)
    assert got.shape == rew.shape and got.dtype == rew.dtype
    assert torch.allclose(got, want)
    assert torch.all(got[~mask] == 0)


def test_gae_lambda_one_is_reward_to_go_minus_value():
    rew, val, next_val, done, terminated, mask = _episodes_batch(2)
    a1 = gae(rew, val, done, 0.97, 1.0, mask=mask)
    g = reward_to_go(rew, 0.97, done, mask)
    assert torch.allclose(a1, torch.where(mask, g - val, torch.zeros_like(g)))
    # the same with the values of the next states given explicitly: they only matter after the last step
    # (columns 0 and 2 end with an unfinished episode; reward_to_go above assumed nothing follows it)
    next_val = next_val.clone()
    next_val[-1] = 0.0
    a1b = gae(rew, val, done, 0.97, 1.0, next_val=next_val, terminated=terminated, mask=mask)
    assert torch.allclose(a1, a1b)


def test_gae_lambda_zero_is_the_one_step_td_error():
    rew, val, next_val, done, terminated, mask = _episodes_batch(3, truncate=True)
    kw = dict(next_val=next_val, terminated=terminated, mask=mask)
    delta = td_error(rew, val, done, 0.8, **kw)
    assert torch.allclose(gae(rew, val, done, 0.8, 0.0, **kw), delta)
    T, N = rew.shape
    for t in range(T):
        for n in range(N):
            if not mask[t, n]:
                assert delta[t, n] == 0
                continue
            boot = 0.0 if terminated[t, n] else 0.8 * float(next_val[t, n])
            assert math.isclose(float(delta[t, n]), float(rew[t, n]) + boot - float(val[t, n]), abs_tol=1e-12)


def test_gae_one_column_with_bootstrap():
    """(T,) input, no done: one unfinished episode; bootstrap is V after the last step."""
    rew = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    val = torch.tensor([0.5, -1.0, 1.0], dtype=torch.float64)
    gamma, lam, boot = 0.9, 0.5, 3.0
    got = gae(rew, val, None, gamma, lam, bootstrap=boot)
    nxt = [-1.0, 1.0, boot]
    d = [float(rew[t]) + gamma * nxt[t] - float(val[t]) for t in range(3)]
    want = [d[0] + gamma * lam * d[1] + (gamma * lam) ** 2 * d[2], d[1] + gamma * lam * d[2], d[2]]
    assert got.shape == (3,)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64))
    # lam = 1 and a bootstrap: the n-step return to the end plus gamma^k V(s_T), minus V
    assert torch.allclose(gae(rew, val, None, gamma, 1.0, bootstrap=boot), reward_to_go(rew, gamma, bootstrap=boot) - val)


def test_gae_ignores_garbage_at_masked_steps():
    rew, val, next_val, done, terminated, mask = _episodes_batch(4)
    ref = gae(rew, val, done, 0.99, 0.9, next_val=next_val, terminated=terminated, mask=mask)
    val2, next2, rew2 = val.clone(), next_val.clone(), rew.clone()
    val2[~mask], next2[~mask], rew2[~mask] = float("nan"), float("inf"), 1e6
    got = gae(rew2, val2, done, 0.99, 0.9, next_val=next2, terminated=terminated, mask=mask)
    assert torch.equal(got, ref)


def test_gae_does_not_backpropagate_into_the_critic():
    rew, val, next_val, done, terminated, mask = _episodes_batch(5)
    val = val.clone().requires_grad_()
    adv = gae(rew, val, done, 0.9, 0.9, mask=mask)
    assert not adv.requires_grad


@pytest.mark.parametrize("bad, match", [
    (dict(lam=1.5), "lam"), (dict(lam=-0.1), "lam"), (dict(gamma=0.0), "gamma"), (dict(gamma=1.2), "gamma"),
    (dict(val=torch.zeros(3, 2)), "val"), (dict(terminated=torch.zeros(9, 4, dtype=torch.bool)), "terminated needs next_val"),
    (dict(done=torch.zeros(9, 3, dtype=torch.bool)), "done"),
])
def test_gae_rejects_bad_input(bad, match):
    rew, val, next_val, done, terminated, mask = _episodes_batch(6)
    kw = dict(rew=rew, val=val, done=done, gamma=0.9, lam=0.9)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        gae(kw.pop("rew"), kw.pop("val"), kw.pop("done"), kw.pop("gamma"), kw.pop("lam"), **kw)


def test_gae_on_a_cartpole_rollout_telescopes():
    """On a real rollout with a real critic, lam = 1 is G_t - V and lam = 0 the TD error (truncation aware)."""
    torch.manual_seed(0)
    policy = pg.policies.MLPPolicy(4, 2)
    critic = pg.policies.ValueNet(4)
    envs = pg.envs.make_env("CartPole-v1", num_envs=3, seed=0)
    b = pg.reinforce.collect_rollout(envs, policy, 6, generator=_gen(0))
    with torch.no_grad():
        v, nv = critic(b.obs), critic(b.next_obs)
    kw = dict(next_val=nv, terminated=b.terminated, mask=b.mask)
    g = reward_to_go(b.rew, 0.99, b.done, b.mask)
    assert torch.allclose(gae(b.rew, v, b.done, 0.99, 1.0, **kw)[b.mask], (g - v)[b.mask], atol=1e-4)
    assert torch.allclose(gae(b.rew, v, b.done, 0.99, 0.0, **kw), td_error(b.rew, v, b.done, 0.99, **kw))


# ------------------------------------------------------------------ PPO's clipped surrogate

def _brute_ppo(logp, old_logp, adv, eps):
    terms = []
    for lp, olp, a in zip(logp.tolist(), old_logp.tolist(), adv.tolist()):
        r = math.exp(lp - olp)
        if eps is None:
            terms.append(r * a)
        else:
            terms.append(min(r * a, min(max(r, 1 - eps), 1 + eps) * a))
    return -sum(terms) / len(terms)


@pytest.mark.parametrize("eps", [None, 0.1, 0.2])
def test_ppo_clip_loss_matches_brute_force(eps):
    g = _gen(7)
    old = torch.randn(50, generator=g, dtype=torch.float64)
    logp = old + 0.4 * torch.randn(50, generator=g, dtype=torch.float64)
    adv = torch.randn(50, generator=g, dtype=torch.float64)
    loss, stats = ppo_clip_loss(logp, old, adv, eps)
    assert math.isclose(float(loss), _brute_ppo(logp, old, adv, eps), rel_tol=1e-12)
    ratio = torch.exp(logp - old)
    assert math.isclose(stats["ratio_mean"], float(ratio.mean()), rel_tol=1e-12)
    assert stats["ratio_min"] == float(ratio.min()) and stats["ratio_max"] == float(ratio.max())
    want_clip = 0.0 if eps is None else sum(abs(r - 1) > eps for r in ratio.tolist()) / 50
    assert math.isclose(stats["clip_frac"], want_clip)
    k3 = sum((r - 1) - math.log(r) for r in ratio.tolist()) / 50
    assert math.isclose(stats["approx_kl"], k3, rel_tol=1e-10) and stats["approx_kl"] >= 0
    assert math.isclose(stats["approx_kl_k1"], float((old - logp).mean()), rel_tol=1e-10)


def test_ppo_gradient_at_ratio_one_is_the_policy_gradient():
    """theta = theta_old: the clipped and the unclipped surrogate both have pg_loss's gradient."""
    logits = torch.randn(6, 3, generator=_gen(8), dtype=torch.float64, requires_grad=True)
    act = torch.tensor([0, 2, 1, 1, 0, 2])
    adv = torch.randn(6, generator=_gen(9), dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)[torch.arange(6), act]
    (want,) = torch.autograd.grad(pg_loss(logp, adv), logits, retain_graph=True)
    for eps in (None, 0.2):
        (got,) = torch.autograd.grad(ppo_clip_loss(logp, logp.detach(), adv, eps)[0], logits, retain_graph=True)
        assert torch.allclose(got, want)


def test_ppo_clip_stops_the_push_beyond_the_clip():
    """A sample whose ratio already left [1 - eps, 1 + eps] in the direction its advantage favours gets no gradient;
    one that moved the wrong way keeps it (the min takes the pessimistic term)."""
    old = torch.zeros(4, dtype=torch.float64)
    # ratios 1.5 (A>0), 0.5 (A<0): clipped, no gradient; 0.5 (A>0), 1.5 (A<0): unclipped, gradient
    logp = torch.log(torch.tensor([1.5, 0.5, 0.5, 1.5], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    loss, stats = ppo_clip_loss(logp, old, adv, 0.2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([0.0, 0.0, -0.5 / 4, 1.5 / 4], dtype=torch.float64))
    assert stats["clip_frac"] == 1.0  # all four ratios are outside [0.8, 1.2]


def test_ppo_clip_loss_mask_and_sequence_advantages():
    g = _gen(10)
    old = torch.randn(3, 5, generator=g, dtype=torch.float64)
    logp = old + 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(3, generator=g, dtype=torch.float64)                   # one per sequence
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    loss, stats = ppo_clip_loss(logp, old, adv, 0.2, mask)
    on = mask.bool()
    flat_adv = adv[:, None].expand(3, 5)[on]
    assert math.isclose(float(loss), _brute_ppo(logp[on], old[on], flat_adv, 0.2), rel_tol=1e-12)
    assert stats["ratio_max"] == float(torch.exp(logp - old)[on].max())
    logp2 = logp.clone()
    logp2[~on] = 50.0                                                      # padding garbage is ignored
    assert math.isclose(float(ppo_clip_loss(logp2, old, adv, 0.2, mask)[0]), float(loss))


def test_ppo_approx_kl_estimates_the_exact_kl():
    """k3 from actions sampled by pi_old estimates KL(pi_old || pi_new) of the categorical (within 4 s.e.)."""
    old_logits = torch.tensor([0.5, -0.3, 1.0, 0.0], dtype=torch.float64)
    new_logits = torch.tensor([0.1, 0.4, 0.8, -0.5], dtype=torch.float64)
    p_old, lp_old, lp_new = torch.softmax(old_logits, 0), torch.log_softmax(old_logits, 0), torch.log_softmax(new_logits, 0)
    exact = float((p_old * (lp_old - lp_new)).sum())
    a = torch.multinomial(p_old, 20_000, replacement=True, generator=_gen(11))
    _, stats = ppo_clip_loss(lp_new[a], lp_old[a], torch.zeros(20_000, dtype=torch.float64), None)
    r = torch.exp(lp_new[a] - lp_old[a])
    se = float(((r - 1) - torch.log(r)).std()) / math.sqrt(20_000)
    assert abs(stats["approx_kl"] - exact) < 4 * se
    assert abs(stats["approx_kl_k1"] - exact) < 4 * float(torch.log(r).std()) / math.sqrt(20_000)


@pytest.mark.parametrize("kw, match", [
    (dict(clip_eps=0.0), "clip_eps"), (dict(clip_eps=1.5), "clip_eps"), (dict(clip_eps=True), "clip_eps"),
    (dict(old_logp=torch.zeros(3)), "old_logp"), (dict(adv=torch.zeros(4)), "adv"),
    (dict(mask=torch.zeros(5)), "mask selects no entry"), (dict(mask=torch.ones(4)), "mask"),
])
def test_ppo_clip_loss_rejects_bad_input(kw, match):
    args = dict(logp=torch.zeros(5), old_logp=torch.zeros(5), adv=torch.zeros(5), clip_eps=0.2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        ppo_clip_loss(**args)


# ------------------------------------------------------------------ RLOO and group normalization on CartPole

@pytest.fixture(scope="module")
def grouped_returns():
    """Episode returns of CartPole groups: 4 start states x 6 episodes each, shaped (num_groups, G)."""
    torch.manual_seed(0)
    policy = pg.policies.MLPPolicy(4, 2)
    envs = pg.envs.grouped_cartpole(4, 6, seed=3)
    b = pg.reinforce.collect_rollout(envs, policy, 24, generator=_gen(3))
    starts = b.obs[0].reshape(4, 6, 4)
    ret = pg.returns.discounted_return(b.rew, 1.0, b.done, b.mask)[0].reshape(4, 6)   # R(tau) of each column
    return ret, starts, b


def test_grouped_cartpole_groups_share_their_start_state(grouped_returns):
    ret, starts, b = grouped_returns
    assert torch.equal(starts, starts[:, :1].expand_as(starts))
    assert not torch.equal(starts[0, 0], starts[1, 0])
    assert torch.allclose(ret.flatten().sort().values, torch.as_tensor(b.ep_returns, dtype=torch.float32).sort().values)


def test_rloo_on_cartpole_groups_matches_leave_one_out_by_hand(grouped_returns):
    ret, _, _ = grouped_returns
    adv = rloo(ret)
    assert adv.shape == ret.shape
    for i in range(ret.shape[0]):
        for j in range(ret.shape[1]):
            others = [float(ret[i, k]) for k in range(ret.shape[1]) if k != j]
            assert math.isclose(float(adv[i, j]), float(ret[i, j]) - sum(others) / len(others), rel_tol=1e-5, abs_tol=1e-4)
    assert torch.allclose(adv.sum(dim=1), torch.zeros(ret.shape[0]), atol=1e-3)   # zero-sum within a group
    # RLOO = (G / (G - 1)) * (R - group mean)
    g = ret.shape[1]
    assert torch.allclose(adv, g / (g - 1) * (ret - ret.mean(dim=1, keepdim=True)), atol=1e-4)


def test_group_normalize_on_cartpole_groups(grouped_returns):
    ret, _, _ = grouped_returns
    adv = group_normalize(ret)
    assert torch.allclose(adv.mean(dim=1), torch.zeros(ret.shape[0]), atol=1e-5)
    assert torch.allclose(adv.std(dim=1), torch.ones(ret.shape[0]), atol=1e-3)
    # a solved group (every episode hit the 500-step limit) carries no signal: advantage 0, not NaN
    solved = torch.full((1, 6), 500.0)
    assert torch.equal(group_normalize(solved), torch.zeros(1, 6))
    assert torch.equal(rloo(solved), torch.zeros(1, 6))
    # it is invariant to shifting and scaling a group's returns, unlike RLOO
    assert torch.allclose(group_normalize(3 * ret + 7), adv, atol=1e-4)


def test_rloo_gradient_is_unbiased_on_a_bandit():
    """Sequence-level RLOO is an unbiased policy-gradient estimate: its mean matches the exact gradient."""
    logits = torch.tensor([0.3, -0.2, 0.8], dtype=torch.float64)
    rewards = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    exact = pg.bandit.exact_gradient(logits, rewards)
    groups, g = 20_000, 4
    pi = torch.softmax(logits, 0)
    a = torch.multinomial(pi, groups * g, replacement=True, generator=_gen(12)).reshape(groups, g)
    adv = rloo(rewards[a])                                                      # (groups, G)
    score = torch.nn.functional.one_hot(a, 3).double() - pi                    # (groups, G, K)
    est = (adv[..., None] * score).mean(dim=1)                                  # one estimate per group
    z = (est.mean(0) - exact) / (est.std(0) / math.sqrt(groups))
    assert (z.abs() < 4).all(), z
    # and its variance is below that of no baseline (all rewards positive here)
    plain = (rewards[a][..., None] * score).mean(dim=1)
    assert est.var(0).sum() < plain.var(0).sum()


def test_group_gradients_equal_autograd_of_each_groups_surrogate():
    """pg.variance.group_gradients (scores once, then weighted sums) against autograd of each group's own
    surrogate (1/G) sum_episodes sum_t adv_t log pi(a_t|s_t), for a per-episode and a per-step advantage."""
    torch.manual_seed(1)
    policy = pg.policies.MLPPolicy(4, 2, hidden_sizes=(8,))
    b = pg.reinforce.collect_rollout(pg.envs.grouped_cartpole(3, 4, seed=5), policy, 12, generator=_gen(5))
    ret = pg.returns.discounted_return(b.rew, 1.0, b.done, b.mask)[0].reshape(3, 4)
    per_step = pg.returns.reward_to_go(b.rew, 1.0, b.done) * b.mask
    estimate = pg.variance.group_gradients(policy, b, 4)
    params = list(policy.parameters())
    for adv, weights in [(pg.rloo(ret), pg.rloo(ret).reshape(1, -1).expand_as(b.rew)), (per_step, per_step)]:
        got = estimate(adv)
        assert got.shape == (3, sum(p.numel() for p in params))
        logp = policy(b.obs).log_prob(b.act) * b.mask                          # (T, N)
        for k in range(3):
            cols = slice(4 * k, 4 * k + 4)
            g = torch.autograd.grad((weights[:, cols] * logp[:, cols]).sum() / 4, params, retain_graph=True)
            assert torch.allclose(got[k], torch.cat([x.flatten() for x in g]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="accepted"):
        estimate(torch.zeros(5))
