"""pgcore.engine.trainer on a tiny random GPT-2 and a letter-counting reward: advantages plumbing, KL
estimators against the exact KL, learning in the expected direction, exact resume, Ctrl-C, NaN guard."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import pgcore.engine.trainer as trainer_mod
from lm_fakes import LetterReward, make_policy
import pgcore as pg
from pgcore.engine.checkpoint import latest_checkpoint, list_checkpoints
from pgcore.lm.algorithm import lm_advantages as compute_advantages
from pgcore.engine import CSV_COLUMNS, LMConfig, NonFiniteLossError, Trainer, train
from pgcore.engine.metrics import read_csv

PROMPTS = ["the movie", "a", "terrible plot", "i loved this", "the food was"]
TIME_COLUMNS = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]


def small_config(tmp_path, **kw) -> LMConfig:
    base = dict(steps=20, batch_size=2, num_samples=2, max_new_tokens=6, lr=1e-2, warmup_steps=2, save_every=0, kl_coef=0.0,
                output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ckpt"),
                model_dir=str(tmp_path / "models"))
    base.update(kw)
    return LMConfig(**base)


def run(cfg, reward=None, **kw):
    return train(cfg, policy=make_policy(seed=0), reward=reward or LetterReward("e"), prompts=PROMPTS, **kw)


# ------------------------------------------------------------------------------ config / plumbing
@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("lr", 0.0), ("lr", -1e-3), ("batch_size", 0), ("num_samples", 0), ("max_new_tokens", 0),
    ("temperature", 0.0), ("kl_coef", -0.1), ("advantage", "ppo"), ("kl_estimator", "k9"), ("lr", float("nan")),
    ("lr_scheduler", "bogus"), ("seed", -1), ("save_every", -1), ("run_name", "../x"),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        LMConfig(**{field: value})


@pytest.mark.parametrize("advantage", ["rloo", "group"])
def test_config_rejects_group_advantages_with_one_sample(advantage):
    with pytest.raises(ValueError, match="num_samples >= 2"):
        LMConfig(advantage=advantage, num_samples=1)
    LMConfig(advantage="mean", num_samples=1)  # fine


def test_compute_advantages_is_pgcore_pg():
    score = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    assert torch.equal(compute_advantages(score, "none"), score)
    assert torch.allclose(compute_advantages(score, "mean"), score - score.mean())
    assert torch.allclose(compute_advantages(score, "rloo"), pg.rloo(score))
    assert torch.allclose(compute_advantages(score, "group"), pg.group_normalize(score))
    with pytest.raises(ValueError):
        compute_advantages(score.flatten(), "rloo")


def test_step_groups_samples_by_prompt_and_penalizes_kl(tmp_path, monkeypatch):
    """Rows i*G..i*G+G-1 are prompt i's samples, the advantage maker sees them as one group, and the
    score it gets is reward - kl_coef * sequence KL."""
    seen = {}

    def spy(score, kind):
        seen["score"], seen["kind"] = score.clone(), kind
        seen["adv"] = out = compute_advantages(score, kind)
        return out

    monkeypatch.setattr(trainer_mod, "lm_advantages", spy)
    cfg = small_config(tmp_path, batch_size=3, num_samples=4, kl_coef=0.5, kl_estimator="k1")
    reward = LetterReward("e")
    tr = Trainer(cfg, policy=make_policy(seed=0), reward=reward, prompts=PROMPTS)
    tr.step()
    with torch.no_grad():  # perturb the policy so KL to the reference is not zero
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    row = tr.step()
    batch = tr.last_batch
    assert seen["kind"] == "rloo" and seen["score"].shape == (3, 4)
    assert [batch.prompts[i * 4:(i + 1) * 4] for i in range(3)] == [[p] * 4 for p in batch.prompts[::4]]
    assert torch.allclose(seen["adv"].sum(dim=1), torch.zeros(3), atol=1e-6)  # RLOO: zero-sum per prompt
    rew = reward.score(batch.texts)
    kl_seq = (rew - seen["score"].flatten()) / 0.5
    assert row["kl"] == pytest.approx(kl_seq.mean().item(), rel=1e-5, abs=1e-7) and row["kl"] != 0.0
    assert row["reward_mean"] == pytest.approx(rew.mean().item(), rel=1e-6)


def test_prompts_for_step_is_seeded_and_covers_the_batch(tmp_path):
    tr = Trainer(small_config(tmp_path, batch_size=4), policy=make_policy(), reward=LetterReward(), prompts=PROMPTS)
    a, b = tr.prompts_for_step(1), tr.prompts_for_step(2)
    assert len(a) == 4 and len(set(a)) == 4 and a == tr.prompts_for_step(1) and a != b


# ------------------------------------------------------------------------------------- KL
@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_kl_estimators_are_unbiased_for_the_exact_kl(kind):
    g = torch.Generator().manual_seed(0)
    logits, ref_logits = torch.randn(6, generator=g), torch.randn(6, generator=g)
    logp_all, ref_all = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    exact = (logp_all.exp() * (logp_all - ref_all)).sum()  # KL(pi || ref) on a 6-token vocabulary
    tokens = torch.multinomial(logp_all.exp(), 200_000, replacement=True, generator=g)  # samples from pi
    est = pg.kl_estimate(logp_all[tokens], ref_all[tokens], kind)
    se = est.std() / len(est) ** 0.5
    assert abs(est.mean() - exact) < 4 * se, f"{kind}: {est.mean():.4f} vs exact {exact:.4f} (se {se:.4f})"
    if kind == "k3":
        assert (est >= 0).all() and est.std() < pg.kl_estimate(logp_all[tokens], ref_all[tokens], "k1").std()


def test_kl_as_reward_penalty_gradient_k1_exact_k3_biased():
    """Why the default is k1: with the penalty as a (detached) reward, the REINFORCE gradient
    E_pi[grad log pi(y) * kl(y)] equals grad KL(pi || ref) for k1; for k3 it is
    grad KL(pi || ref) - grad KL(ref || pi). Exact expectations on a 6-token vocabulary."""
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(6, generator=g, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(6, generator=g), -1)
    logp = torch.log_softmax(theta, -1)
    p = logp.exp()
    kl_fwd = (p * (logp - ref_logp)).sum()  # KL(pi || ref)
    kl_rev = (ref_logp.exp() * (ref_logp - logp)).sum()  # KL(ref || pi)
    grad_fwd, = torch.autograd.grad(kl_fwd, theta, retain_graph=True)
    grad_rev, = torch.autograd.grad(kl_rev, theta, retain_graph=True)

    def reinforce_grad(kind):
        k = pg.kl_estimate(logp.detach(), ref_logp, kind)  # detached, like a reward
        surrogate = (p.detach() * logp * k).sum()  # exact E_pi[log pi(y) * k(y)]: its grad is E[grad log pi * k]
        return torch.autograd.grad(surrogate, theta, retain_graph=True)[0]

    assert torch.allclose(reinforce_grad("k1"), grad_fwd, atol=1e-6)
    assert torch.allclose(reinforce_grad("k3"), grad_fwd - grad_rev, atol=1e-6)
    assert not torch.allclose(reinforce_grad("k3"), grad_fwd, atol=1e-2)


# ------------------------------------------------------------------------------ learning
def _first_token_prob_with_e(policy, prompts):
    """Exact P(first completion token contains the letter 'e'), averaged over prompts."""
    tok = policy.tokenizer
    has_e = torch.tensor(["e" in tok.decode([i]) for i in range(len(tok))])
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    from pgcore.lm.sampling import position_ids_from_mask

    with torch.no_grad():
        logits = policy.model(**enc, position_ids=position_ids_from_mask(enc["attention_mask"])).logits[:, -1]
    return torch.softmax(logits, -1)[:, has_e].sum(-1).mean().item()


def test_training_moves_the_policy_toward_the_rewarded_letter(tmp_path):
    cfg = small_config(tmp_path, steps=15, batch_size=4, num_samples=4, output_dir=None, checkpoint_dir=None,
                       model_dir=None)
    policy = make_policy(seed=0)
    p_before = _first_token_prob_with_e(policy, PROMPTS)
    result = train(cfg, policy=policy, reward=LetterReward("e"), prompts=PROMPTS)
    p_after = _first_token_prob_with_e(result.policy, PROMPTS)
    r = result.rewards
    assert p_after > p_before + 0.05, f"P(token with 'e') {p_before:.3f} -> {p_after:.3f}"
    assert sum(r[-5:]) / 5 > sum(r[:5]) / 5 + 0.05
    kl = {row["step"]: row["kl"] for row in result.history if row["kl"] is not None}  # logged every 10 steps
    # reference = starting policy, up to fp32 rounding (the policy's prompts run batched, the reference's alone)
    assert list(kl) == [1, 11] and abs(kl[1]) < 1e-6 and kl[11] > 0
    assert result.output_dir is None and result.model_path is None and result.last_checkpoint is None


def test_entropy_bonus_raises_entropy(tmp_path):
    from pgcore.lm.rewards import RewardModel

    class Zero(RewardModel):
        name, label = "zero", None

        def score(self, texts):
            return torch.zeros(len(texts))

    def sharp_policy():
        pol = make_policy(seed=0)
        with torch.no_grad():
            pol.model.lm_head.weight.mul_(8.0)  # tied to the embeddings: a confident (low-entropy) model
        return pol

    cfg = small_config(tmp_path, steps=6, advantage="none", output_dir=None, checkpoint_dir=None, model_dir=None,
                       lr=5e-3, warmup_steps=0)
    flat = train(cfg, policy=sharp_policy(), reward=Zero(), prompts=PROMPTS)
    bonus = train(cfg.replace(entropy_coef=1.0), policy=sharp_policy(), reward=Zero(), prompts=PROMPTS)
    assert flat.history[-1]["grad_norm"] == 0.0  # zero reward, no bonus: no gradient at all
    assert bonus.history[-1]["entropy"] > flat.history[-1]["entropy"] + 0.1


# --------------------------------------------------------------------- resume, Ctrl-C, NaN
def _rows(csv_path, steps):
    df = read_csv(csv_path).set_index("step")
    return df.loc[list(steps)].drop(columns=TIME_COLUMNS)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    cfg = small_config(tmp, save_every=10, keep_last=0, kl_coef=0.1, entropy_coef=0.01)
    return cfg, run(cfg)


def test_full_run_writes_everything(full_run):
    cfg, result = full_run
    out = result.output_dir
    assert {p.name for p in out.iterdir()} == {"training_metrics.csv", "log_history.json", "summary.json",
                                               "training_curves.png"}
    df = read_csv(out / "training_metrics.csv")
    assert list(df["step"]) == list(range(1, 21)) and set(CSV_COLUMNS) <= set(df.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20 and summary["config"]["kl_coef"] == 0.1
    assert summary["reward_model"] == "letter-e" and summary["versions"]["torch"] == torch.__version__
    assert [p.name for p in list_checkpoints(cfg.checkpoint_dir)] == ["checkpoint-10", "checkpoint-20"]
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(result.model_path)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), result.policy.model.state_dict().values()))


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    cfg, result = full_run
    resumed_cfg = cfg.replace(output_dir=str(tmp_path / "out2"), checkpoint_dir=str(tmp_path / "ck2"),
                              model_dir=str(tmp_path / "m2"))
    resumed = run(resumed_cfg, resume=f"{cfg.checkpoint_dir}/checkpoint-10")
    assert [r["step"] for r in resumed.history] == list(range(1, 21))
    a = _rows(result.output_dir / "training_metrics.csv", range(11, 21))
    b = _rows(resumed.output_dir / "training_metrics.csv", range(11, 21))
    assert a.equals(b), f"resumed metrics differ:\n{a.compare(b)}"
    assert all(torch.equal(x, y) for x, y in zip(result.policy.model.parameters(), resumed.policy.model.parameters()))


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(full_run, tmp_path):
    cfg, result = full_run
    cfg2 = cfg.replace(save_every=0, output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ck"),
                       model_dir=str(tmp_path / "m"))

    def ctrl_c_at_7(trainer, row):
        if row["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg2, callbacks=[ctrl_c_at_7])
    assert latest_checkpoint(cfg2.checkpoint_dir).name == "checkpoint-7"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 7
    assert len(read_csv(tmp_path / "out" / "training_metrics.csv")) == 7
    assert not (tmp_path / "m").exists(), "an interrupted run is not a final model"
    resumed = run(cfg2, resume=True)
    a = _rows(result.output_dir / "training_metrics.csv", range(1, 21))
    b = _rows(tmp_path / "out" / "training_metrics.csv", range(1, 21))
    assert a.equals(b), f"metrics after Ctrl-C + resume differ:\n{a.compare(b)}"
    assert resumed.summary["resumed_from"].endswith("checkpoint-7")


def test_resume_refuses_a_mismatched_checkpoint(full_run, tmp_path):
    cfg, _ = full_run
    ckpt = f"{cfg.checkpoint_dir}/checkpoint-10"
    with pytest.raises(ValueError, match="lr"):
        Trainer(cfg.replace(lr=0.5), policy=make_policy(), reward=LetterReward(), prompts=PROMPTS, resume=ckpt)
    with pytest.raises(ValueError, match="different model"):
        Trainer(cfg, policy=make_policy(n_embd=16), reward=LetterReward(), prompts=PROMPTS, resume=ckpt)
    with pytest.raises(ValueError, match="reward_model"):
        Trainer(cfg, policy=make_policy(), reward=LetterReward("a"), prompts=PROMPTS, resume=ckpt)
    with pytest.raises(ValueError, match="prompts"):
        Trainer(cfg, policy=make_policy(), reward=LetterReward(), prompts=PROMPTS[:3], resume=ckpt)
    with pytest.raises(ValueError, match="no checkpoint"):
        Trainer(cfg.replace(checkpoint_dir=str(tmp_path)), policy=make_policy(), reward=LetterReward(),
                prompts=PROMPTS, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    class NanAfter2(LetterReward):
        calls = 0

        def score(self, texts):
            self.calls += 1
            out = super().score(texts)
            return out * float("nan") if self.calls >= 3 else out

    cfg = small_config(tmp_path, save_every=2, steps=10)
    policy = make_policy(seed=0)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train(cfg, policy=policy, reward=NanAfter2(), prompts=PROMPTS)
    assert [p.name for p in list_checkpoints(cfg.checkpoint_dir)] == ["checkpoint-2"]
    assert all(torch.isfinite(p).all() for p in policy.model.parameters())
    df = read_csv(tmp_path / "out" / "training_metrics.csv")
    assert list(df["step"]) == [1, 2]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "nonfinite"
    assert not (tmp_path / "models").exists()


def test_config_is_frozen_and_documented():
    cfg = LMConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    from pgcore.engine.config import field_docs

    docs = field_docs(LMConfig)  # the CLI's --help is made of these: one line each, CleanRL's length
    for f in dataclasses.fields(LMConfig):
        assert f.name in docs, f"field {f.name} needs a docstring"
        assert "\n" not in docs[f.name] and len(docs[f.name].split()) <= 20, (f.name, docs[f.name])
