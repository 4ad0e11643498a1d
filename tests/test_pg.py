"""pgcore.estimators: the surrogate loss, the advantage makers and the KL estimators."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

import pgcore as pg
from pgcore.estimators import group_normalize, kl_estimate, kl_k1, kl_k2, kl_k3, mean_baseline, normalize, pg_loss, rloo


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ pg_loss

def test_pg_loss_is_exported_at_top_level():
    assert pg.pg_loss is pg_loss


def test_pg_loss_gradient_is_the_score_function_estimate():
    """-grad of the loss on sampled arms = mean of (adv * (onehot(a) - pi)): the policy-gradient estimate."""
    logits = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([0, 2, 2, 1, 3, 2])
    adv = torch.tensor([1.0, -0.5, 2.0, 0.3, -1.2, 0.7], dtype=torch.float64)
    logp = torch.log_softmax(logits, dim=0)[actions]
    pg_loss(logp, adv).backward()
    pi = torch.softmax(logits.detach(), dim=0)
    analytic = (adv[:, None] * (torch.nn.functional.one_hot(actions, 4) - pi)).mean(0)
    assert torch.allclose(-logits.grad, analytic)
    assert torch.allclose(pg_loss(logp, adv), -(logp * adv).mean())


def test_pg_loss_in_expectation_gives_the_exact_gradient():
    """Weighting every arm by its probability (the exact expectation) recovers grad J."""
    logits = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64, requires_grad=True)
    rewards = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
    pi = torch.softmax(logits, 0).detach()
    logp = torch.log_softmax(logits, 0)
    # the sum over arms of pi_a * logp_a * r_a is K * mean(logp * (K pi r)): use pg_loss with weights K pi r
    loss = pg_loss(logp, 3 * pi * rewards)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.allclose(-grad, pg.bandit.exact_gradient(logits, rewards))


def test_pg_loss_mask_semantics():
    g = _gen(1)
    logp = torch.randn(3, 5, generator=g, dtype=torch.float64).requires_grad_()
    adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float64)
    loss = pg_loss(logp, adv, mask)
    on = mask.bool()
    assert torch.allclose(loss, -(logp * adv)[on].mean())
    loss.backward()
    assert torch.all(logp.grad[~on] == 0)
    assert torch.allclose(logp.grad[on], -adv[on] / on.sum())
    # whatever sits in the masked entries (padding garbage, even inf/nan-free huge values) is ignored
    logp2 = logp.detach().clone()
    adv2 = adv.clone()
    logp2[~on] = 1e6
    adv2[~on] = -7.0
    assert torch.allclose(pg_loss(logp2, adv2, mask), loss.detach())
    # a bool mask works the same as a float one
    assert torch.allclose(pg_loss(logp.detach(), adv, on), loss.detach())


def test_pg_loss_detaches_adv():
    logp = torch.randn(4, dtype=torch.float64, requires_grad=True)
    adv = torch.randn(4, dtype=torch.float64, requires_grad=True)
    pg_loss(logp, adv).backward()
    assert adv.grad is None
    assert logp.grad is not None and torch.allclose(logp.grad, -adv.detach() / 4)


def test_pg_loss_broadcasts_sequence_advantage_over_tokens():
    g = _gen(2)
    logp = torch.randn(3, 4, generator=g, dtype=torch.float64)
    adv = torch.randn(3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float64)
    expanded = adv[:, None].expand(3, 4)
    assert torch.allclose(pg_loss(logp, adv), pg_loss(logp, expanded))
    assert torch.allclose(pg_loss(logp, adv, mask), pg_loss(logp, expanded, mask))


@pytest.mark.parametrize(
    "logp_shape, adv_shape",
    [((3, 4), (4,)), ((3, 4), (3, 5)), ((5,), (4,)), ((2, 3), (2, 3, 1))],
)
def test_pg_loss_rejects_mismatched_adv(logp_shape, adv_shape):
    with pytest.raises(ValueError, match=r"adv shape .* does not match logp shape"):
        pg_loss(torch.zeros(logp_shape), torch.zeros(adv_shape))


def test_pg_loss_rejects_bad_mask_and_types():
    with pytest.raises(ValueError, match=r"mask shape \(3,\) does not match logp shape \(2, 3\)"):
        pg_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="logp must be a torch.Tensor"):
        pg_loss([0.0, 1.0], torch.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        pg_loss(torch.zeros(0), torch.zeros(0))


# ------------------------------------------------------------------ advantage makers

def test_mean_baseline_and_normalize():
    rew = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(mean_baseline(rew), rew - 2.0)
    assert torch.allclose(mean_baseline(rew, dim=1), rew - torch.tensor([[3.0], [1.0]], dtype=torch.float64))
    adv = normalize(rew)
    assert abs(adv.mean().item()) < 1e-12 and abs(adv.std().item() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="at least 2"):
        normalize(torch.tensor([1.0]))


def test_rloo_against_a_loop():
    rew = torch.randn(4, 5, generator=_gen(3), dtype=torch.float64)
    expected = torch.empty_like(rew)
    for i in range(4):
        for j in range(5):
            others = [rew[i, m].item() for m in range(5) if m != j]
            expected[i, j] = rew[i, j] - sum(others) / len(others)
    assert torch.allclose(rloo(rew), expected)


def test_group_normalize_against_a_loop():
    rew = torch.randn(3, 6, generator=_gen(4), dtype=torch.float64)
    expected = torch.empty_like(rew)
    for i in range(3):
        row = rew[i].tolist()
        mu, sd = statistics.mean(row), statistics.stdev(row)  # unbiased std, as GRPO/TRL
        for j in range(6):
            expected[i, j] = (row[j] - mu) / (sd + 1e-4)
    assert torch.allclose(group_normalize(rew), expected)


@pytest.mark.parametrize("fn", [rloo, group_normalize])
def test_group_advantages_reject_bad_shapes(fn):
    with pytest.raises(ValueError, match=r"\(num_prompts, num_samples\)"):
        fn(torch.zeros(6))
    with pytest.raises(ValueError, match="num_samples >= 2"):
        fn(torch.zeros(3, 1))


# ------------------------------------------------------------------ KL estimators

def test_kl_k1_and_k3_are_unbiased_and_k3_nonnegative():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)  # the policy
    q = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2], dtype=torch.float64)  # the reference
    exact = (p * (p / q).log()).sum()
    n = 200_000
    tokens = torch.multinomial(p, n, replacement=True, generator=_gen(5))
    logp, ref_logp = p.log()[tokens], q.log()[tokens]
    for name, est in [("k1", kl_k1(logp, ref_logp)), ("k3", kl_k3(logp, ref_logp))]:
        se = est.std() / math.sqrt(n)
        assert abs(est.mean() - exact) < 4 * se, f"{name}: {est.mean().item()} vs exact {exact.item()} (s.e. {se.item()})"
    # k3 >= 0 for every token, k1 is negative on some (that is its variance problem)
    all_k3 = kl_k3(p.log(), q.log())
    assert (all_k3 >= 0).all() and (kl_k1(p.log(), q.log()) < 0).any()
    assert (kl_k2(p.log(), q.log()) >= 0).all()
    # k3 has the smaller variance here, the point of using it
    assert kl_k3(logp, ref_logp).var() < kl_k1(logp, ref_logp).var()


def test_kl_estimate_dispatch_and_errors():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -0.5])
    for kind, fn in [("k1", kl_k1), ("k2", kl_k2), ("k3", kl_k3)]:
        assert torch.allclose(kl_estimate(logp, ref, kind), fn(logp, ref))
    assert torch.allclose(kl_estimate(logp, ref), kl_k3(logp, ref))
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'.*k1, k2, k3"):
        kl_estimate(logp, ref, "k4")
    with pytest.raises(ValueError, match="ref_logp shape"):
        kl_estimate(logp, torch.zeros(3))
