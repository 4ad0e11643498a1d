"""pgcore.reinforce: the batch lines up with the estimator, train learns (short corridor),
uses pg_loss, is deterministic, and rejects bad configs with one-line ValueErrors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pgcore.reinforce as rf
from pgcore.envs import ShortCorridor, make_env, short_corridor_optimum, short_corridor_value
from pgcore.estimators import pg_loss
from pgcore.policies import MLPPolicy, ValueNet, mlp
from pgcore.reinforce import ReinforceConfig, collect_rollout, compute_advantages, compute_weights, evaluate, train

FAST = dict(num_envs=4, max_env_steps=1500)


def _p_right(policy) -> float:
    with torch.no_grad():
        return float(policy(torch.ones(1, 1)).probs[0, 1])


def test_pg_loss_gradient_on_a_rollout_equals_the_per_episode_reinforce_sum():
    """grad of pg_loss(logp[mask], G[mask]) == -(1/num_steps) sum_episodes sum_t G_t grad log pi(a_t|s_t)."""
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, (16,))
    with torch.no_grad():  # a less uniform policy than the init, so the gradient is not tiny
        policy.logits_net[-2].weight.normal_()
    envs = make_env("CartPole-v1", num_envs=3, seed=0)
    batch = collect_rollout(envs, policy, 6, generator=torch.Generator().manual_seed(0))
    dist = policy(batch.obs)
    assert torch.allclose(dist.log_prob(batch.act)[batch.mask], batch.logp[batch.mask], atol=1e-5)

    weights = compute_weights(batch, 0.9, "reward_to_go")
    adv = compute_advantages(batch, weights, baseline="none", normalize_adv=False)
    logp = policy(batch.obs[batch.mask]).log_prob(batch.act[batch.mask])
    grads = torch.autograd.grad(pg_loss(logp, adv), list(policy.parameters()))

    total = [torch.zeros_like(p) for p in policy.parameters()]
    for n in range(3):  # brute force: walk each column's episodes, reward-to-go by a Python sum
        steps = torch.nonzero(batch.mask[:, n]).flatten().tolist()
        episodes, cur = [], []
        for t in steps:
            cur.append(t)
            if batch.done[t, n]:
                episodes.append(cur)
                cur = []
        assert not cur and len(episodes) == 2
        for ep in episodes:
            for i, t in enumerate(ep):
                g = sum(0.9 ** (j - i) * float(batch.rew[ep[j], n]) for j in range(i, len(ep)))
                lp = policy(batch.obs[t, n][None]).log_prob(batch.act[t, n][None])[0]
                for acc, gr in zip(total, torch.autograd.grad(lp, list(policy.parameters()))):
                    acc -= g * gr / batch.num_steps
    for a, b in zip(grads, total):
        assert torch.allclose(a, b, atol=1e-5)


def test_advantage_modes():
    envs = make_env("CartPole-v1", num_envs=4, seed=1)
    batch = collect_rollout(envs, MLPPolicy(4, 2), generator=torch.Generator().manual_seed(1))
    w_total = compute_weights(batch, 1.0, "total_return")
    # with gamma = 1 the total return of a CartPole episode is its length, on every step
    first = batch.mask.int().argmax(0)
    assert torch.allclose(w_total[first, torch.arange(4)].double().sort().values,
                          torch.tensor(np.sort(batch.ep_lengths), dtype=torch.float64))
    w = compute_weights(batch, 0.99, "reward_to_go")
    adv = compute_advantages(batch, w, baseline="mean", normalize_adv=False)
    assert adv.shape == (batch.num_steps,) and abs(float(adv.mean())) < 1e-4
    adv = compute_advantages(batch, w, baseline="none", normalize_adv=True)
    assert abs(float(adv.mean())) < 1e-4 and abs(float(adv.std()) - 1) < 1e-4
    value = ValueNet(4, (8,))
    adv = compute_advantages(batch, w, baseline="value", normalize_adv=False, value_net=value)
    assert torch.allclose(adv, w[batch.mask] - value(batch.obs[batch.mask]).detach())
    with pytest.raises(ValueError, match="value_net"):
        compute_advantages(batch, w, baseline="value")


def _episodes(batch):
    """Brute force: the (row, column) of each episode's steps, walking each column in order."""
    episodes = []
    for n in range(batch.mask.shape[1]):
        cur = []
        for t in torch.nonzero(batch.mask[:, n]).flatten().tolist():
            cur.append((t, n))
            if batch.done[t, n]:
                episodes.append(cur)
                cur = []
    return episodes


def test_step_index_and_the_time_baseline_against_a_walk_of_the_episodes():
    """step_index counts the steps of each episode; baseline="time" subtracts from G_t the mean, over the
    batch's episodes, of their G at the same step (0 for an episode that has ended)."""
    for per_env in (1, 3):
        envs = make_env("CartPole-v1", num_envs=4, seed=2)
        batch = collect_rollout(envs, MLPPolicy(4, 2), 4 * per_env, generator=torch.Generator().manual_seed(2))
        index = rf.step_index(batch)
        episodes = _episodes(batch)
        assert len(episodes) == batch.num_episodes == 4 * per_env
        for ep in episodes:
            assert [int(index[t, n]) for t, n in ep] == list(range(len(ep)))
        if per_env == 1:   # one episode per copy: the step is the row
            rows = torch.arange(batch.mask.shape[0])[:, None].expand_as(index)
            assert torch.equal(index[batch.mask], rows[batch.mask])
        w = compute_weights(batch, 0.99, "reward_to_go")
        b = np.zeros(max(len(ep) for ep in episodes))
        for ep in episodes:
            for i, (t, n) in enumerate(ep):
                b[i] += float(w[t, n]) / len(episodes)
        expected = torch.zeros_like(w)
        for ep in episodes:
            for i, (t, n) in enumerate(ep):
                expected[t, n] = w[t, n] - b[i]
        adv = compute_advantages(batch, w, baseline="time", normalize_adv=False)
        assert torch.allclose(adv, expected[batch.mask], atol=1e-5)


def _cut_off_batch(num_envs: int, limit: int, falls: dict) -> rf.Rollout:
    """A CartPole-like batch by hand: one episode per column, reward 1 a step, cut off at `limit` steps
    unless `falls` gives the column's last step (terminated there)."""
    T = limit
    lengths = [falls.get(n, limit) for n in range(num_envs)]
    mask = torch.tensor([[t < lengths[n] for n in range(num_envs)] for t in range(T)])
    done = torch.tensor([[t == lengths[n] - 1 for n in range(num_envs)] for t in range(T)])
    terminated = done & torch.tensor([n in falls for n in range(num_envs)])
    zeros = torch.zeros(T, num_envs)
    return rf.Rollout(obs=torch.zeros(T, num_envs, 4), act=zeros.long(), rew=mask.float(), done=done,
                      terminated=terminated, mask=mask, logp=zeros, next_obs=torch.zeros(T, num_envs, 4),
                      ep_returns=np.array(lengths, dtype=np.float64), ep_lengths=np.array(lengths))


def test_time_baseline_gives_cut_off_episodes_no_advantage_and_blames_a_fall():
    """What baseline="time" is for: when every episode reaches the time limit, G_t depends on t alone and
    the standardized advantages are exactly 0 (with the batch mean they would be unit-size noise in t);
    with one fall, the steps before it are the ones blamed."""
    batch = _cut_off_batch(8, 500, {})
    w = compute_weights(batch, 0.99, "reward_to_go")
    assert torch.equal(compute_advantages(batch, w, baseline="time"), torch.zeros(batch.num_steps))
    noise = compute_advantages(batch, w, baseline="none")
    assert abs(float(noise.std()) - 1) < 1e-4, "the batch mean baseline: a unit-size advantage that only says t"

    batch = _cut_off_batch(8, 500, {3: 300})
    w = compute_weights(batch, 0.99, "reward_to_go")
    adv = torch.zeros(batch.mask.shape)
    adv[batch.mask] = compute_advantages(batch, w, baseline="time", normalize_adv=False)
    assert (adv[:300, 3] < 0).all() and (adv[:300, [0, 1, 2, 4, 5, 6, 7]] > 0).all()
    assert adv[299, 3] < adv[200, 3] < adv[0, 3], "blamed most just before the fall"


def test_reinforce_learns_the_short_corridor_optimum_from_a_bad_start():
    p_star, v_star = short_corridor_optimum()
    start = MLPPolicy(1, 2, hidden_sizes=())  # a linear softmax policy on the constant feature
    with torch.no_grad():
        start.logits_net[0].weight.zero_()
        start.logits_net[0].bias.copy_(torch.tensor([1.1, -1.1]))  # P(right) = 0.1, v = -42
    assert _p_right(start) == pytest.approx(0.1, abs=0.01)
    cfg = ReinforceConfig(lr=0.03, gamma=1.0, num_envs=16, hidden_sizes=(), max_env_steps=20_000)
    result = train(ShortCorridor(), seed=0, config=cfg, progress=False, policy=start)
    p = _p_right(result.policy)
    assert _p_right(start) == pytest.approx(0.1, abs=0.01)  # the starting policy was not modified
    # v(p) is flat near p* (v(0.5) = -12), so "near" is judged on both p and the value
    assert abs(p - p_star) < 0.08, p
    assert short_corridor_value(p) > v_star - 0.3, (p, short_corridor_value(p))
    df = result.history_df()
    assert df.return_mean.iloc[:3].mean() < -25 and df.return_mean.iloc[-20:].mean() > -13.5
    assert result.env_steps >= cfg.max_env_steps and not result.solved  # no threshold: the budget ends it


def test_train_calls_pg_loss_and_its_gradient_moves_the_policy(monkeypatch):
    calls = []

    def spy(logp, adv, mask=None):
        calls.append((logp.requires_grad, adv.requires_grad, logp.shape == adv.shape))
        return pg_loss(logp, adv, mask)

    monkeypatch.setattr(rf.loop, "pg_loss", spy)
    result = train("CartPole-v1", seed=0, config=ReinforceConfig(**FAST), progress=False)
    assert len(calls) == len(result.history) >= 2
    assert all(c == (True, False, True) for c in calls)

    def zero_loss(logp, adv, mask=None):
        return 0.0 * logp.sum()

    monkeypatch.setattr(rf.loop, "pg_loss", zero_loss)
    torch.manual_seed(0)
    start = MLPPolicy(4, 2, (32,))
    frozen = train("CartPole-v1", seed=0, config=ReinforceConfig(**FAST), progress=False, policy=start)
    for a, b in zip(start.parameters(), frozen.policy.parameters()):
        assert torch.equal(a, b)


def test_same_seed_same_history_and_global_rng_untouched():
    cfg = ReinforceConfig(**FAST)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train("CartPole-v1", seed=3, config=cfg, progress=False)
    assert torch.equal(torch.rand(1), before)  # train did not consume the global torch RNG
    b = train("CartPole-v1", seed=3, config=cfg, progress=False)
    c = train("CartPole-v1", seed=4, config=cfg, progress=False)

    def table(result):
        return result.history_df().drop(columns="seconds")

    assert table(a).equals(table(b))  # NaN (no value net, no confirmation) compare equal here
    assert not table(a).equals(table(c))
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(p, q)


def test_history_and_value_baseline_on_acrobot():
    cfg = ReinforceConfig(num_envs=2, max_env_steps=900, baseline="value", value_iters=3)
    result = train("Acrobot-v1", seed=0, config=cfg, progress=False)
    df = result.history_df()
    expected = {"update", "env_steps", "episodes", "return_mean", "return_std", "return_min", "return_max",
                "length_mean", "loss", "grad_norm", "entropy", "value_loss", "eval_return", "seconds"}
    assert expected <= set(df.columns)
    assert result.policy(torch.zeros(5, 6)).probs.shape == (5, 3)
    assert isinstance(result.value_net, ValueNet) and np.isfinite(df.value_loss).all()
    assert df.env_steps.iloc[-1] == result.env_steps >= 900
    assert (df.episodes.diff().dropna() == 2).all()


def test_evaluate_fresh_env_and_fixed_policy():
    start = MLPPolicy(1, 2, hidden_sizes=())  # P(right) = 0.5 -> v = -12
    rets = evaluate(start, "ShortCorridor-v0", episodes=200, seed=0)
    assert rets.shape == (200,) and abs(rets.mean() + 12) < 4 * rets.std() / np.sqrt(200)
    policy = MLPPolicy(4, 2)
    cart = evaluate(policy, "CartPole-v1", episodes=5, seed=0)
    assert np.array_equal(cart, evaluate(policy, "CartPole-v1", episodes=5, seed=0))
    assert (cart >= 8).all() and (cart < 200).all()  # a near-uniform policy drops the pole fast


@pytest.mark.parametrize("changes, word", [
    (dict(lr=0.0), "lr"), (dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(gamma=0.0), "gamma"), (dict(gamma=1.01), "gamma"),
    (dict(num_envs=0), "num_envs"), (dict(max_env_steps=-5), "max_env_steps"),
    (dict(hidden_sizes=(0,)), "hidden_sizes"), (dict(activation="sigmoid"), "activation"),
    (dict(weighting="G0"), "weighting"), (dict(baseline="critic"), "baseline"),
    (dict(ent_coef=-0.1), "ent_coef"), (dict(max_grad_norm=0), "max_grad_norm"),
    (dict(confirm_episodes=-1), "confirm_episodes"),
    (dict(log_std_init=float("nan")), "log_std_init"),
])
def test_bad_config_raises_one_line_value_error(changes, word):
    with pytest.raises(ValueError, match=word) as info:
        ReinforceConfig(**changes)
    assert "\n" not in str(info.value) and "accepted" in str(info.value)


@pytest.mark.parametrize("env, word", [
    ("NoSuchEnv-v0", "unknown Gymnasium env id"),
])  # Box action spaces train (a Gaussian policy); unsupported spaces: tests/test_continuous.py
def test_bad_env_raises_value_error(env, word):
    with pytest.raises(ValueError, match=word) as info:
        train(env, config=ReinforceConfig(**FAST), progress=False)
    assert "\n" not in str(info.value)


def test_bad_train_arguments():
    with pytest.raises(ValueError, match="config"):
        train("CartPole-v1", config={"lr": 1e-2}, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train("CartPole-v1", seed=1.5, progress=False)
    with pytest.raises(ValueError, match="actions"):
        train("CartPole-v1", config=ReinforceConfig(**FAST), policy=MLPPolicy(4, 3), progress=False)
    with pytest.raises(ValueError, match="sizes"):
        mlp([4])


def test_defaults_solve_cartpole():
    """The course's claim: default REINFORCE solves CartPole-v1 (>= 475 over 20 fresh episodes, sampled
    actions) within its 100k-step budget, stopped by its own solved check."""
    result = train("CartPole-v1", seed=0, progress=False)
    cfg = result.config
    assert result.solved and result.env_steps <= cfg.max_env_steps, (result.solved, result.env_steps)
    score = evaluate(result.policy, "CartPole-v1", episodes=20, seed=12345).mean()
    assert score >= 475, score
    df = result.history_df()
    assert df.return_mean.iloc[:3].mean() < 60  # it started as a near-random policy
    # the check that stopped it played confirm_episodes fresh episodes, not counted in env_steps
    assert df.eval_return.iloc[-1] >= 475 + cfg.confirm_margin
    assert result.confirm_env_steps >= cfg.confirm_episodes * (475 + cfg.confirm_margin)


def test_a_solved_check_that_stops_early_decides_as_one_played_to_the_end():
    """The fast path (Confirmation stops once the bar is out of reach) against its naive twin (every
    episode played): the same decision on policies near and far from the bar, and fewer steps when it fails."""
    from pgcore.reinforce.loop import Confirmation

    policies = [train("CartPole-v1", seed=s, progress=False, config=ReinforceConfig(max_env_steps=b, early_stop=False)).policy
                for s, b in [(200, 15_000), (201, 30_000)]]
    cfg = ReinforceConfig()
    outcomes = set()
    for policy in policies:
        for target in (250.0, 400.0, 475.0):
            fast, naive = Confirmation("CartPole-v1", cfg, seed=7), Confirmation("CartPole-v1", cfg, seed=7, decide_early=False)
            for _ in range(2):   # the second check has seeds of its own
                (fast_mean, fast_ok), (mean, ok) = fast.check(policy, target), naive.check(policy, target)
                assert fast_ok == ok, (target, fast_mean, mean)
                if ok:
                    assert fast_mean == mean
                else:   # the early stop logs the best mean it could still reach: at least the real one
                    assert mean <= fast_mean < target + cfg.confirm_margin
                outcomes.add(bool(ok))
            assert fast.env_steps <= naive.env_steps
            fast.close(), naive.close()
    assert outcomes == {True, False}, "the policies must span both outcomes for the test to mean anything"


def test_train_on_a_wrapped_env_object_counts_decisions_and_the_inner_rewards():
    """Notebook 02's Acrobot run: a Gymnasium wrapper object (RepeatAction) goes through train unchanged."""
    import gymnasium as gym

    env = gym.wrappers.RepeatAction(gym.make("Acrobot-v1"), 4)
    cfg = ReinforceConfig(num_envs=4, max_env_steps=600, early_stop=False)
    result = train(env, seed=0, config=cfg, progress=False)
    df = result.history_df()
    # 500 Acrobot steps at most = 125 decisions; a return still counts every inner step's -1.
    assert (df.length_mean <= 125).all() and (df.return_mean >= -500).all()
    # every decision but an episode's last one runs 4 inner steps of reward -1 (the goal step pays 0)
    assert (df.return_mean <= -4 * (df.length_mean - 1)).all()
    assert (df.return_mean < -df.length_mean).all(), "returns count inner steps, not decisions"
    assert df.env_steps.iloc[-1] == result.env_steps >= 600
    assert result.policy.obs_dim == 6 and result.policy.num_actions == 3
