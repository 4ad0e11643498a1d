"""What a `pgcore.lm` step computes, at less cost: the shared-prompt forward (each prompt once, its cache
shared by its samples) gives the step the one-pass forward gives, resumes exactly, and a run that needs
no reference (kl_coef 0) skips its forward except to log the KL every `kl_log_every` steps."""
from __future__ import annotations

import math

import pytest
import torch

from lm_fakes import LetterReward, make_policy
from pgcore.engine import LMConfig, Trainer, train
from pgcore.engine.metrics import read_csv

PROMPTS = ["the movie", "a", "terrible plot, boring and too", "i loved this", "the food was"]


def config(tmp_path, **kw) -> LMConfig:
    base = dict(model="fake-gpt2", reward_model="letter-e", steps=4, batch_size=3, num_samples=3, max_new_tokens=8,
                lr=3e-3, save_every=0, keep_last=0, output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ck"),
                model_dir=None, seed=2)
    base.update(kw)
    return LMConfig(**base)


def trainer(cfg) -> Trainer:
    return Trainer(cfg, policy=make_policy(seed=0, n_layer=2), reward=LetterReward("e"), prompts=PROMPTS)


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_a_shared_prompt_step_is_the_one_pass_step(tmp_path, kl_in, monkeypatch):
    """On the same batch, the loss, KL, entropy and every parameter's gradient agree to fp32 tolerance
    (only the order of additions differs). (Weights after an AdamW step are not compared: Adam divides
    by the root of the squared gradient, which blows rounding up where a gradient is ~0.) The shared
    sampler draws other random numbers than `generate`, so here both trainers sample with `generate`
    (the shared sampler is checked against a naive one in test_lm_sampling.py)."""
    import pgcore.engine.trainer as trainer_module

    plain_generate = trainer_module.generate

    def shared_by_generate(*a, prompt_graph=False, **kw):  # generate's samples; the log-prob pass runs the prompts
        return plain_generate(*a, **kw), None

    monkeypatch.setattr(trainer_module, "generate_shared", shared_by_generate)
    a = trainer(config(tmp_path / "a", kl_in=kl_in, kl_coef=0.2))
    b = trainer(config(tmp_path / "b", kl_in=kl_in, kl_coef=0.2, share_prompt=True))
    ra, rb = a.step(), b.step()
    assert a.last_batch.completion_ids.equal(b.last_batch.completion_ids), "the same samples"
    for key in ("loss", "reward_mean", "kl", "entropy", "grad_norm"):
        assert math.isclose(ra[key], rb[key], rel_tol=1e-4, abs_tol=1e-6), (key, ra[key], rb[key])
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-7), (p.grad - q.grad).abs().max()
    b.model.load_state_dict(a.model.state_dict())  # step 2 from the same weights: a nonzero KL to the reference
    b.optimizer.load_state_dict(a.optimizer.state_dict())
    ra, rb = a.step(), b.step()
    assert ra["kl"] != 0 and math.isclose(ra["kl"], rb["kl"], rel_tol=1e-3, abs_tol=1e-6)
    assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-3, abs_tol=1e-6)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-7), (p.grad - q.grad).abs().max()


def test_a_shared_prompt_run_resumes_exactly(tmp_path):
    cfg = config(tmp_path, steps=4, save_every=2, share_prompt=True)
    whole = train(cfg, policy=make_policy(seed=0, n_layer=2), reward=LetterReward("e"), prompts=PROMPTS)
    cfg2 = cfg.replace(output_dir=str(tmp_path / "out2"), checkpoint_dir=str(tmp_path / "ck2"))
    resumed = train(cfg2, policy=make_policy(seed=0, n_layer=2), reward=LetterReward("e"), prompts=PROMPTS,
                    resume=str(tmp_path / "ck" / "checkpoint-2"))
    strip = [c for c in whole.history[0] if c.startswith("time")]
    assert [{k: v for k, v in r.items() if k not in strip} for r in whole.history] == \
        [{k: v for k, v in r.items() if k not in strip} for r in resumed.history]
    assert all(torch.equal(p, q) for p, q in zip(whole.policy.model.parameters(), resumed.policy.model.parameters()))


@pytest.mark.parametrize("every,logged", [(1, [1, 2, 3, 4, 5]), (3, [1, 4]), (0, [])])
def test_no_reference_forward_when_nothing_needs_it(tmp_path, every, logged):
    t = trainer(config(tmp_path, kl_coef=0.0, kl_log_every=every, steps=5))
    calls = []
    t.ref_model.register_forward_hook(lambda *a: calls.append(t.global_step + 1))
    result = t.train()
    assert sorted(set(calls)) == logged, "the reference runs only on KL-logging steps"
    assert [r["step"] for r in result.history if r["kl"] is not None] == logged
    df = read_csv(tmp_path / "out" / "training_metrics.csv")
    assert df["kl"].notna().tolist() == [s in logged for s in range(1, 6)], "not computed: an empty cell"
    if not logged:
        assert result.summary["kl_last"] is None


def test_with_a_kl_coefficient_the_reference_runs_every_step(tmp_path):
    t = trainer(config(tmp_path, kl_coef=0.1, kl_log_every=0, steps=3))
    calls = []
    t.ref_model.register_forward_hook(lambda *a: calls.append(t.global_step + 1))
    assert all(r["kl"] is not None for r in t.train().history) and sorted(set(calls)) == [1, 2, 3]


def test_the_update_time_is_split(tmp_path):
    row = trainer(config(tmp_path, steps=1)).train().history[0]
    parts = row["time_reference"] + row["time_policy"] + row["time_optimizer"]
    assert min(row["time_reference"], row["time_policy"], row["time_optimizer"]) > 0
    assert parts <= row["time_update"] + 1e-6 and row["time_generate"] + row["time_reward"] + parts <= row["time"]


def test_bfloat16_autocast_trains_with_float32_weights(tmp_path):
    """--dtype bfloat16 computes the forward passes in bf16 (autocast) and keeps weights and AdamW in float32:
    a step is finite, and its policy's entropy is the float32 policy's up to bf16 rounding."""
    a = trainer(config(tmp_path / "a", steps=2))
    b = trainer(config(tmp_path / "b", steps=2, dtype="bfloat16"))
    ra, rb = a.step(), b.step()
    assert a.last_batch.completion_ids.shape[0] == b.last_batch.completion_ids.shape[0]
    assert math.isfinite(rb["loss"]) and math.isfinite(rb["grad_norm"]) and math.isfinite(rb["kl"])
    assert all(p.dtype == torch.float32 for p in b.model.parameters())
    assert abs(ra["entropy"] - rb["entropy"]) < 0.05 * abs(ra["entropy"]) + 0.05
    with pytest.raises(ValueError, match="dtype 'float16' unknown"):
        config(tmp_path, dtype="float16")


def test_share_prompt_is_automatic_and_validated(tmp_path):
    """None (the default) turns the shared prompt on whenever a prompt has several samples; True / False
    force it; anything else is refused."""
    assert LMConfig().share_prompt is None
    assert trainer(config(tmp_path / "a")).share_prompt is True  # 3 samples a prompt
    assert trainer(config(tmp_path / "c", num_samples=1, advantage="none")).share_prompt is False
    assert trainer(config(tmp_path / "b", share_prompt=False)).share_prompt is False
    with pytest.raises(ValueError, match="share_prompt must be True, False or None"):
        config(tmp_path, share_prompt="yes")
