"""Notebook 05's additions to the LM step: loss aggregation (token / sequence / constant) against hand-computed
values, KL in the loss (k3 with its gradient) against KL in the reward (detached penalty), the rloo / Dr. GRPO
identity, the zero-spread column, and held-out pass@1 in the metrics and summary.json."""
from __future__ import annotations

import copy

import pytest
import torch
from lm_fakes import LetterReward, make_policy

import pgcore as pg
from pgcore.engine.logprobs import per_token_logps
from pgcore.lm.algorithm import lm_advantages as compute_advantages
from pgcore.engine import CSV_COLUMNS, VERIFIER_COLUMNS, LMConfig, Trainer

PROMPTS = ["the movie", "a", "terrible plot", "i loved this", "the food was"]


class LetterVerifier(LetterReward):
    """LetterReward flagged as a verifier: the trainer then logs VERIFIER_COLUMNS (its 1.0 / 0.0 split is
    reward > 0.5)."""

    verifier = True


def cfg_(tmp_path=None, **kw) -> LMConfig:
    base = dict(steps=5, batch_size=2, num_samples=3, max_new_tokens=6, lr=1e-2, kl_coef=0.0, save_every=0,
                output_dir=None, checkpoint_dir=None, model_dir=None, advantage="rloo")
    base.update(kw)
    return LMConfig(**base)


# ------------------------------------------------------------------------------ pg.aggregate by hand
def test_aggregations_match_hand_computed_values():
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])  # 3 tokens, then 1 token; the 9s are after EOS
    assert pg.aggregate(x, mask, "token").item() == pytest.approx((1 + 2 + 3 + 4) / 4)        # 2.5
    assert pg.aggregate(x, mask, "sequence").item() == pytest.approx(((1 + 2 + 3) / 3 + 4 / 1) / 2)  # 3.0
    assert pg.aggregate(x, mask, "constant").item() == pytest.approx(10 / (2 * 4))            # T = 4
    assert pg.aggregate(x, mask, "constant", max_tokens=8).item() == pytest.approx(10 / (2 * 8))
    assert pg.aggregate(x, mask, "sum").item() == pytest.approx(10 / 2)                       # per completion
    logp, adv = torch.randn(2, 4), torch.tensor([0.5, -2.0])
    assert torch.allclose(pg.pg_loss(logp, adv, mask), -pg.aggregate(logp * adv[:, None], mask, "token"))
    with pytest.raises(ValueError, match="aggregation 'mean' unknown"):
        pg.aggregate(x, mask, "mean")


def test_rloo_is_dr_grpo_mean_centering_up_to_g_over_g_minus_1():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    G = r.shape[1]
    dr_grpo = r - r.mean(dim=1, keepdim=True)
    assert torch.allclose(pg.rloo(r), G / (G - 1) * dr_grpo)
    assert torch.allclose(pg.group_normalize(r), dr_grpo / (r.std(dim=1, keepdim=True) + 1e-4))


# ------------------------------------------------------------------------------ the trainer's loss
def _step_and_grads(config, policy, reward, monkeypatch, perturb=0.0, eos_bias=3.0):
    """One trainer step; returns the trainer, its row, the parameters it started the step from, and the
    gradient it computed (captured before clipping)."""
    captured = {}
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        captured["grads"] = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        return original(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    with torch.no_grad():  # completions of different lengths: EOS logit + eos_bias, through one unit of the final norm
        eos = policy.tokenizer.eos_token_id
        policy.model.transformer.ln_f.bias[0] = 2.0
        policy.model.get_output_embeddings().weight[eos, 0] = eos_bias / 2.0  # tied to the input embedding
    tr = Trainer(config, policy=policy, reward=reward, prompts=PROMPTS)
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # move the policy away from the reference, so the KL is not zero
            for p in tr.model.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=g))
    start = copy.deepcopy(tr.model).requires_grad_(True)
    row = tr.step()
    return tr, row, start, captured["grads"]


def _hand_logps(model, batch):
    return per_token_logps(model, batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1])


@pytest.mark.parametrize("how", ["token", "sequence", "constant", "sum"])
def test_trainer_loss_and_gradient_follow_the_aggregation(how, monkeypatch):
    config = cfg_(loss_aggregation=how)
    reward = LetterReward("e")
    tr, row, start, grads = _step_and_grads(config, make_policy(seed=0), reward, monkeypatch)
    b, G = tr.last_batch, config.num_samples
    logp = _hand_logps(start, b)                                         # (N, T), with grad
    m = b.completion_mask.float()
    adv = compute_advantages(reward.score(b.texts).view(-1, G), "rloo").reshape(-1)
    per_seq = (logp * m).sum(1)                                          # sum_t logp of each completion
    if how == "token":
        loss = -(adv * per_seq).sum() / m.sum()
    elif how == "sequence":
        loss = -(adv * per_seq / m.sum(1)).mean()
    elif how == "constant":
        loss = -(adv * per_seq).sum() / (len(b) * config.max_new_tokens)
    else:
        loss = -(adv * per_seq).mean()
    assert row["loss"] == pytest.approx(loss.item(), abs=1e-6)
    loss.backward()
    for p, g in zip(start.parameters(), grads):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_aggregations_differ_when_lengths_differ(monkeypatch):
    losses = {}
    for how in ("token", "sequence", "constant", "sum"):
        _, row, _, _ = _step_and_grads(cfg_(loss_aggregation=how), make_policy(seed=0), LetterReward("e"), monkeypatch)
        losses[how] = row["loss"]
    assert len({round(v, 6) for v in losses.values()}) == 4, losses


def test_the_fake_batch_has_completions_of_different_lengths(monkeypatch):
    tr, row, _, _ = _step_and_grads(cfg_(), make_policy(seed=0), LetterReward("e"), monkeypatch)
    lengths = tr.last_batch.completion_mask.sum(1).tolist()
    assert len(set(lengths)) > 1 and min(lengths) < 6, lengths


@pytest.mark.parametrize("how", ["token", "sequence"])
def test_kl_in_loss_vs_in_reward_gradients(how, monkeypatch):
    """reward: the detached k1 penalty changes only the advantages. loss: the advantages see the bare reward
    and beta * aggregated k3, with its gradient, is added. The logged KL is the same in both."""
    beta = 0.5
    reward = LetterReward("e")
    rows, grads_of = {}, {}
    for place in ("reward", "loss"):
        config = cfg_(kl_coef=beta, kl_in=place, loss_aggregation=how)
        tr, row, start, grads = _step_and_grads(config, make_policy(seed=0), reward, monkeypatch, perturb=0.05)
        b, G, m = tr.last_batch, config.num_samples, tr.last_batch.completion_mask
        logp = _hand_logps(start, b)
        with torch.no_grad():
            ref = _hand_logps(tr.ref_model, b)
        r = reward.score(b.texts)
        k1_seq = ((logp.detach() - ref) * m).sum(1)                      # (N,) sequence KL, k1
        if place == "reward":
            adv = compute_advantages((r - beta * k1_seq).view(-1, G), "rloo").reshape(-1)
            loss = -pg.aggregate(logp * adv[:, None], m, how)
        else:
            adv = compute_advantages(r.view(-1, G), "rloo").reshape(-1)
            k3 = torch.exp(ref - logp) - (ref - logp) - 1                 # GRPO's k3, with grad through logp
            loss = -pg.aggregate(logp * adv[:, None], m, how) + beta * pg.aggregate(k3, m, how)
        assert row["loss"] == pytest.approx(loss.item(), abs=1e-6)
        assert row["kl"] == pytest.approx(k1_seq.mean().item(), abs=1e-6), "logged the same way in both"
        loss.backward()
        for p, g in zip(start.parameters(), grads):
            assert torch.allclose(p.grad, g, atol=1e-6)
        rows[place], grads_of[place] = row, grads
    assert rows["reward"]["kl"] == pytest.approx(rows["loss"]["kl"], abs=1e-6), "same policy, same samples"
    diff = sum((a - b).abs().sum().item() for a, b in zip(grads_of["reward"], grads_of["loss"]))
    assert diff > 1e-4, "the two placements give different gradients"


def test_kl_in_loss_pulls_toward_the_reference_when_rewards_carry_no_signal(monkeypatch):
    """All rewards equal (zero spread): the policy-gradient term is 0 and only beta * k3 acts; its
    gradient step lowers the KL to the reference. In the reward, the same KL moves the policy only via
    the spread of the penalties."""
    config = cfg_(kl_coef=1.0, kl_in="loss", lr=1e-3, max_grad_norm=1e9, num_samples=4, batch_size=4)
    tr, row, start, _ = _step_and_grads(config, make_policy(seed=0), LetterVerifier("§"), monkeypatch, perturb=0.05)
    assert row["zero_spread_frac"] == 1.0 and row["reward_mean"] == 0.0
    b, m = tr.last_batch, tr.last_batch.completion_mask
    with torch.no_grad():
        ref = _hand_logps(tr.ref_model, b)
        k3_before = pg.aggregate(pg.kl_k3(_hand_logps(start, b), ref), m)
        k3_after = pg.aggregate(pg.kl_k3(_hand_logps(tr.model, b), ref), m)
    assert row["loss"] == pytest.approx(k3_before.item(), rel=1e-5), "the loss is beta * k3 alone"
    assert k3_after < k3_before


def test_zero_spread_groups_give_a_zero_loss_and_no_gradient(monkeypatch):
    config = cfg_(advantage="group")
    tr, row, start, grads = _step_and_grads(config, make_policy(seed=0), LetterVerifier("§"), monkeypatch)
    assert row["zero_spread_frac"] == 1.0 and row["loss"] == 0.0 and row["grad_norm"] == 0.0
    assert row["all_right_frac"] == 0.0, "every group is all wrong"
    assert row["len_correct"] is None, "no correct completion in the batch"
    assert row["len_incorrect"] == pytest.approx(tr.last_batch.completion_mask.sum(1).float().mean().item())
    assert row["heldout_pass1"] is None, "no evaluation without eval_every"
    tr2, row2, _, _ = _step_and_grads(cfg_(advantage="group"), make_policy(seed=0), LetterVerifier("e"), monkeypatch)
    assert 0.0 <= row2["zero_spread_frac"] < 1.0
    from pgcore.lm import algorithm

    rew = algorithm.score(tr2.reward, tr2.last_batch).view(-1, tr2.config.num_samples)   # (groups, G) of 1.0 / 0.0
    assert row2["all_right_frac"] == pytest.approx((rew > 0.5).all(dim=1).float().mean().item())
    assert row2["all_right_frac"] <= row2["zero_spread_frac"]
    assert list(row2)[list(row2).index("tokens") + 1:][:len(VERIFIER_COLUMNS)] == list(VERIFIER_COLUMNS)


def test_other_rewards_keep_todays_columns(monkeypatch):
    """A reward model that is not a verifier gets exactly the metrics rows it got before notebook 05."""
    _, row, _, _ = _step_and_grads(cfg_(), make_policy(seed=0), LetterReward("e"), monkeypatch)
    assert list(row) == list(CSV_COLUMNS)


def test_defaults_keep_todays_behaviour():
    d = LMConfig()
    assert (d.loss_aggregation, d.kl_in, d.eval_every) == ("token", "reward", 0)
    for field, value in [("loss_aggregation", "foo"), ("kl_in", "both"), ("eval_every", -1), ("eval_problems", 0),
                         ("eval_samples", 0)]:
        with pytest.raises(ValueError, match=field):
            LMConfig(**{field: value})


def test_eval_every_needs_a_verifier():
    with pytest.raises(ValueError, match="eval_every 5 needs a verifier"):
        Trainer(cfg_(eval_every=5), policy=make_policy(seed=0), reward=LetterReward("e"), prompts=PROMPTS)


# ------------------------------------------------------------------------------ arithmetic, end to end
def test_arithmetic_run_logs_lengths_heldout_pass1_and_summary(tmp_path):
    from pgcore.lm.models import load_policy
    from pgcore.lm.rewards import load_reward
    from pgcore.engine import train

    policy, reward = load_policy("tiny-arith"), load_reward("arithmetic")
    start = copy.deepcopy(policy)
    config = LMConfig(model="tiny-arith", reward_model="arithmetic", steps=5, batch_size=8, num_samples=4,
                      max_new_tokens=6, advantage="group", kl_coef=0.0, lr=1e-3, eval_every=2, eval_problems=32,
                      eval_samples=2, save_every=0, output_dir=str(tmp_path / "out"), checkpoint_dir=None,
                      model_dir=None)
    result = train(config, policy=policy, reward=reward)
    h = result.history
    assert [r["heldout_pass1"] is not None for r in h] == [True, False, True, False, True]  # steps 1, 3, 5
    from pgcore.lm.algorithm import stream_seed as _stream_seed

    first = reward.evaluate(start, 32, 2, seed=_stream_seed(config.seed, 0, 0, 2) % 2**31, max_new_tokens=6)
    assert result.summary["heldout_pass1_first"] == h[0]["heldout_pass1"] == first, "the starting model's pass@1"
    final = result.summary["heldout_pass1_final"]
    assert final is not None and 0.0 <= final <= 1.0 and (final * 64) == int(final * 64)
    for r in h:
        assert r["len_correct"] is None or 1 <= r["len_correct"] <= 6
        assert r["len_incorrect"] is None or 1 <= r["len_incorrect"] <= 6
        assert 0.0 <= r["zero_spread_frac"] <= 1.0
    # every training prompt of the run was a training problem
    from pgcore.lm.arith import is_heldout, parse_prompt

    tr = Trainer(config.replace(output_dir=None), policy=start, reward=reward)
    assert not any(is_heldout(*parse_prompt(p)) for s in range(1, 50) for p in tr.prompts_for_step(s))
