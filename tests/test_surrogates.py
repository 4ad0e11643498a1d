"""Reusing a batch in the teaching core (`pgcore.surrogates`, `pgcore.lm.algorithm`): at ratio 1 every policy
loss has plain REINFORCE's gradient on real tiny-arith batches; the clip metrics on constructed ratios, checked
against the gradient itself; GSPO's sequence ratio by hand; the KL ratio correction's exact identity on an
enumerable bandit; the first update's ratio is exactly 1 and later ones move it; the settings' bad values; the
sampler-mismatch weights (truncated IS, masks) on known ratios and their exact unbiasedness on a bandit."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import pgcore as pg
from pgcore.lm import algorithm, load_policy, load_reward
from pgcore.lm.models import format_prompts

VARIANTS = {"ppo": dict(policy_loss="ppo"), "ppo clip-higher": dict(policy_loss="ppo", clip_eps_high=0.28),
            "cispo": dict(policy_loss="cispo", clip_eps_high=4.0),
            "gspo": dict(policy_loss="ppo", ratio_level="sequence", clip_eps=3e-4, clip_eps_high=4e-4),
            "cispo sequence": dict(policy_loss="cispo", ratio_level="sequence")}


@pytest.fixture(scope="module")
def arith():
    policy, reward = load_policy("tiny-arith"), load_reward("arithmetic")
    args = algorithm.Args(batch_size=8, num_samples=4, max_new_tokens=8, seed=3, kl_coef=0.0)
    prompts = format_prompts(policy, list(reward.default_prompts()))
    batch = algorithm.sample(policy, prompts, args, step=1)
    return policy, reward, batch, algorithm.score(reward, batch), args


def _grads(policy, batch, rewards, args, old_logp=None):
    model = copy.deepcopy(policy.model)
    ref = copy.deepcopy(policy.model).requires_grad_(False)
    with torch.no_grad():  # moved off the reference, so that a KL term acts
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    loss, stats = algorithm.compute_loss(model, ref, batch, rewards, args, old_logp=old_logp)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), stats


@pytest.mark.parametrize("aggregation", pg.AGGREGATIONS)
@pytest.mark.parametrize("kl", ["none", "k3 in the loss", "k2 in the loss"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_at_ratio_one_every_policy_loss_has_the_plain_gradient(arith, variant, aggregation, kl):
    policy, _, batch, rewards, args = arith
    kw = {"none": {}, "k3 in the loss": dict(kl_coef=0.5, kl_in="loss"),
          "k2 in the loss": dict(kl_coef=0.5, kl_in="loss", kl_loss_estimator="k2")}[kl]
    base = dataclasses.replace(args, loss_aggregation=aggregation, **kw)
    plain, _ = _grads(policy, batch, rewards, base)
    other, stats = _grads(policy, batch, rewards, dataclasses.replace(base, **VARIANTS[variant]))
    assert 0 < stats["grad_token_frac"] < 1, "the batch has tokens with and without an advantage"
    assert stats["ratio_min"] == stats["ratio_max"] == 1.0 and stats["clip_low_frac"] == stats["clip_high_frac"] == 0
    assert plain.norm() > 0
    assert torch.allclose(other, plain, atol=1e-6, rtol=1e-4), (other - plain).abs().max().item()  # fp32 rounding


def test_off_policy_the_variants_differ_from_the_plain_gradient(arith):
    """The test above can fail: with pi_old != pi (here pi_old shifted per token), the clip and the weights act."""
    policy, _, batch, rewards, args = arith
    g = torch.Generator().manual_seed(0)
    old = algorithm.per_token_logps(policy.model, batch).detach() + 0.3 * torch.randn(batch.completion_ids.shape,
                                                                                       generator=g)
    plain, _ = _grads(policy, batch, rewards, args, old_logp=old)
    for variant in ("ppo", "cispo", "gspo"):
        other, stats = _grads(policy, batch, rewards, dataclasses.replace(args, **VARIANTS[variant]), old_logp=old)
        assert variant == "cispo" or stats["clip_low_frac"] + stats["clip_high_frac"] > 0, variant
        assert not torch.allclose(other, plain, atol=1e-6, rtol=1e-4), variant


def test_the_kl_ratio_correction_changes_the_gradient_at_ratio_one(arith):
    policy, _, batch, rewards, args = arith
    base = dataclasses.replace(args, kl_coef=0.5, kl_in="loss")
    plain, _ = _grads(policy, batch, rewards, base)
    corrected, _ = _grads(policy, batch, rewards, dataclasses.replace(base, kl_ratio_correction=True))
    assert not torch.allclose(plain, corrected, atol=1e-6, rtol=1e-4)  # + k3 * grad log pi: the score-function part


# ------------------------------------------------------------------------------ constructed ratios
def _constructed():
    ratio = torch.tensor([[0.7, 0.7, 1.3, 1.3, 1.0], [1.1, 0.5, 2.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])  # row 0 helped, row 1 hurt
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # row 1: 3 tokens
    old = torch.log(torch.full_like(ratio, 0.5))
    return (old + torch.log(ratio)).requires_grad_(True), old, adv, mask, ratio


@pytest.mark.parametrize("kind,high", [("ppo", 0.2), ("ppo", 0.4), ("cispo", 0.2)])
def test_clip_fractions_on_known_ratios_and_the_gradient_agrees(kind, high):
    logp, old, adv, mask, ratio = _constructed()
    stats = pg.ratio_stats(logp, old, adv, mask, kind, clip_eps=0.2, clip_eps_high=high)
    on = mask.bool()
    a = adv[:, None].expand_as(ratio)
    if kind == "ppo":  # by the definition: the side the advantage pushes towards, past the bound
        low_set, high_set = (ratio < 0.8) & (a < 0) & on, (ratio > 1 + high) & (a > 0) & on
    else:
        low_set, high_set = torch.zeros_like(on), (ratio > 1 + high) & on
    assert stats["clip_low_frac"] == pytest.approx(low_set.sum().item() / on.sum().item())
    assert stats["clip_high_frac"] == pytest.approx(high_set.sum().item() / on.sum().item())
    assert stats["ratio_min"] == pytest.approx(0.5) and stats["ratio_max"] == pytest.approx(2.0)
    per_token, _ = pg.surrogate_loss(logp, old, adv, mask, kind, clip_eps=0.2, clip_eps_high=high)
    (per_token * mask).sum().backward()
    moving = (logp.grad != 0) & on  # the tokens the loss really moves
    assert stats["grad_token_frac"] == pytest.approx(moving.sum().item() / on.sum().item())
    if kind == "ppo":
        assert not (moving & (low_set | high_set)).any() and (moving | low_set | high_set)[on].all()
    else:  # cispo drops no token: the capped weight still multiplies grad log pi
        assert moving[on].all()


def test_kl_old_is_k3_of_kl_old_to_new_as_in_ppo_clip_loss():
    logp, old, adv, mask, _ = _constructed()
    stats = pg.ratio_stats(logp, old, adv, mask, "ppo")
    _, ppo = pg.ppo_clip_loss(logp, old, adv, 0.2, mask=mask)
    assert stats["kl_old"] == pytest.approx(ppo["approx_kl"]) and stats["kl_old"] > 0


def test_gspo_sequence_ratio_is_the_exp_of_the_mean_log_ratio():
    logp, old, _, mask, ratio = _constructed()
    seq = pg.importance_ratio(logp, old, mask, "sequence")
    for i in range(2):
        n = int(mask[i].sum())
        expected = torch.exp(torch.log(ratio[i, :n]).mean())
        assert seq.shape == (2, 1) and torch.allclose(seq[i, 0], expected)


def test_the_kl_ratio_correction_is_unbiased_on_an_enumerable_bandit():
    """One token over K actions: E_{a ~ pi_old}[grad(ratio * k3)] = grad KL(pi || ref) exactly at pi = pi_old, while
    plain k3 in the loss gives grad KL(ref || pi) (Tang & Munos 2025; DeepSeek-V3.2)."""
    g = torch.Generator().manual_seed(1)
    theta, ref = torch.randn(6, generator=g).requires_grad_(True), torch.randn(6, generator=g).log_softmax(0)
    logp = theta.log_softmax(0)  # every action at once: (K,)
    w = logp.exp().detach()  # pi_old = pi, the sampling weights
    mask = torch.ones(1, 6)
    kl_term = pg.kl_estimate(logp[None], ref[None], "k3")
    corrected = pg.importance_ratio(logp[None], logp[None].detach(), mask) * kl_term
    expected = lambda term: torch.autograd.grad((w * term[0]).sum(), theta, retain_graph=True)[0]  # noqa: E731
    exact = lambda kl: torch.autograd.grad(kl, theta, retain_graph=True)[0]  # noqa: E731
    forward = (logp.exp() * (logp - ref)).sum()
    reverse = (ref.exp() * (ref - logp)).sum()
    assert torch.allclose(expected(corrected), exact(forward), atol=1e-6)
    assert torch.allclose(expected(kl_term), exact(reverse), atol=1e-6)
    assert not torch.allclose(exact(forward), exact(reverse), atol=1e-3)  # the two differ here


# ------------------------------------------------------------------------------ mu > 1
def test_reusing_a_batch_the_first_update_has_ratio_one_and_later_ones_move_it(arith):
    policy, reward, batch, rewards, args = arith
    args = dataclasses.replace(args, updates_per_batch=3, minibatches=1, policy_loss="ppo", lr=3e-3)
    model = copy.deepcopy(policy.model)
    ref = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    updates, stats = algorithm.reuse_batch(model, ref, optimizer, batch, rewards, args)
    assert [u["epoch"] for u in updates] == [0, 1, 2]
    assert updates[0]["ratio_min"] == updates[0]["ratio_max"] == 1.0 and updates[0]["kl_old"] == 0.0
    for u in updates[1:]:
        assert u["ratio_min"] < 1.0 < u["ratio_max"] and u["kl_old"] > 0
    assert stats["reward_mean"] == pytest.approx(rewards.mean().item())


@pytest.mark.parametrize("kw,expected", [
    (dict(updates_per_batch=0), "updates_per_batch"), (dict(minibatches=3), "minibatches 3"),
    (dict(clip_eps=0.2, clip_eps_high=0.1), "clip_eps_high 0.1 is below clip_eps 0.2"),
    (dict(clip_eps=0.0), "clip_eps"), (dict(ratio_level="nope"), "ratio_level 'nope'"),
    (dict(policy_loss="grpo"), "policy_loss 'grpo'"), (dict(kl_loss_estimator="k4"), "kl_loss_estimator"),
    (dict(kl_ratio_correction=True), "kl_in 'loss'")])
def test_bad_reuse_settings_raise_one_line(kw, expected):
    with pytest.raises(ValueError) as e:
        algorithm.Args(batch_size=8, **kw)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_teaching_loop_makes_mu_times_minibatches_updates_a_step(arith):
    policy, reward, _, _, args = arith
    args = dataclasses.replace(args, steps=2, updates_per_batch=2, minibatches=2, policy_loss="cispo")
    history = algorithm.train(args, copy.deepcopy(policy), reward, reward.default_prompts())
    assert [row["step"] for row in history] == [1, 2]
    for row in history:
        assert [u["epoch"] for u in row["updates"]] == [0, 0, 1, 1]
        assert row["loss"] == pytest.approx(sum(u["loss"] for u in row["updates"]) / 4)
    assert history[0]["updates"][0]["ratio_max"] == 1.0  # the first update is on-policy


# ------------------------------------------------------------------------------ a sampler that is not the policy
@pytest.mark.parametrize("mode", pg.SAMPLER_CORRECTIONS)
def test_sampler_weights_on_known_ratios(mode):
    rho = torch.tensor([[0.5, 1.0, 4.0, 9.0], [1.2, 1.5, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # the 9 and the 7s lie after EOS
    old = torch.log(torch.full_like(rho, 0.25))
    weights, share = pg.sampler_weights(old, old - torch.log(rho), mask, mode, clip_max=3.0, clip_min=0.6)
    if mode.startswith("token"):
        expected = rho.clamp(0.6, 3.0) if mode == "token_truncate" else torch.where((rho < 0.6) | (rho > 3), 0, rho)
        outside = ((rho < 0.6) | (rho > 3.0)) & mask.bool()
    else:  # one ratio per completion: the product of its tokens' ratios
        seq = torch.tensor([[0.5 * 1.0 * 4.0], [1.2 * 1.5]])
        expected = seq.clamp(0.6, 3.0) if mode == "sequence_truncate" else torch.where((seq < 0.6) | (seq > 3), 0, seq)
        outside = ((seq < 0.6) | (seq > 3.0)) & mask.bool()
    if mode.startswith("token"):  # the weights after EOS mean nothing
        assert torch.allclose(weights[mask.bool()], expected[mask.bool()], atol=1e-6)
    else:
        assert weights.shape == (2, 1) and torch.allclose(weights, expected, atol=1e-6)
    assert share == pytest.approx(outside.sum().item() / mask.sum().item())


def test_token_is_weights_turn_a_samplers_draws_into_the_policys_gradient_exactly():
    """One token over K actions drawn by a sampler q != pi: E_q[w * A * grad log pi] = E_pi[A * grad log pi] with no
    cap; a cap leaves a bias only through the actions whose ratio it cuts."""
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(8, generator=g).requires_grad_(True)
    logp = theta.log_softmax(0)
    q_logp = (logp.detach() + 0.8 * torch.randn(8, generator=g)).log_softmax(0)  # e.g. a bf16 or stale sampler
    adv = torch.randn(8, generator=g)
    grad = lambda weights, probs: torch.autograd.grad((probs * weights * adv * logp).sum(), theta,  # noqa: E731
                                                      retain_graph=True)[0]
    on_policy = grad(torch.ones(8), logp.exp().detach())
    mask = torch.ones(1, 8)
    exact, share = pg.sampler_weights(logp[None], q_logp[None], mask, "token_truncate", clip_max=None)
    assert share == 0 and torch.allclose(grad(exact[0], q_logp.exp()), on_policy, atol=1e-6)
    capped, share = pg.sampler_weights(logp[None], q_logp[None], mask, "token_truncate", clip_max=1.0)
    assert 0 < share < 1 and not torch.allclose(grad(capped[0], q_logp.exp()), on_policy, atol=1e-4)
    assert not torch.allclose(grad(torch.ones(8), q_logp.exp()), on_policy, atol=1e-4)  # uncorrected: biased
