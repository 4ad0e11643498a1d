"""Reusing a batch in the engine on the real tiny-arith tier: the first update's ratio is exactly 1 and later
updates move it, the reuse columns in the metrics files, the schedule counts updates, the NaN guard, and a
resumed run with mu > 1 is bitwise the uninterrupted one."""
from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch

from pgcore.engine import LMConfig, NonFiniteLossError, Trainer
from pgcore.engine.cli import main
from pgcore.engine.metrics import read_csv
from pgcore.engine.policy_loss import REUSE_COLUMNS
from pgcore.lm import load_policy, load_reward

TIME_COLUMNS = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]
RUN = ["--model", "tiny-arith", "--reward-model", "arithmetic", "--steps", "6", "--batch-size", "4", "--num-samples",
       "4", "--max-new-tokens", "8", "--save-every", "3", "--keep-last", "0", "--seed", "2", "--lr", "2e-3",
       "--updates-per-batch", "2", "--minibatches", "2", "--policy-loss", "ppo", "--clip-eps-high", "0.28",
       "--kl-in", "loss", "--kl-coef", "0.05", "--kl-ratio-correction", "--quiet"]


@pytest.fixture(scope="module")
def arith():
    return load_policy("tiny-arith"), load_reward("arithmetic")


def _config(tmp_path=None, **kw) -> LMConfig:
    places = dict(output_dir=None, checkpoint_dir=None, model_dir=None) if tmp_path is None else dict(
        output_dir=str(tmp_path / "out"), checkpoint_dir=None, model_dir=None)
    return LMConfig(**{**dict(model="tiny-arith", reward_model="arithmetic", steps=2, batch_size=4, num_samples=4,
                              max_new_tokens=8, lr=3e-3, kl_coef=0.0, save_every=0), **places, **kw})


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
def test_the_first_update_has_ratio_exactly_one_and_later_updates_move_it(arith, share_prompt, ratio_level):
    policy, reward = arith
    cfg = _config(updates_per_batch=3, policy_loss="ppo", ratio_level=ratio_level, share_prompt=share_prompt)
    tr = Trainer(cfg, policy=copy.deepcopy(policy), reward=reward)
    tr.step()
    first, *later = tr.last_updates
    assert first["ratio_min"] == first["ratio_max"] == 1.0 and first["kl_old"] == 0.0
    assert first["clip_low_frac"] == first["clip_high_frac"] == 0.0
    for u in later:
        assert u["ratio_min"] < 1.0 < u["ratio_max"] and u["kl_old"] > 0


def test_reuse_columns_are_logged_and_the_schedule_counts_updates(arith, tmp_path):
    policy, reward = arith
    cfg = _config(tmp_path, steps=3, updates_per_batch=2, minibatches=2, policy_loss="cispo",
                  lr_scheduler="linear")
    tr = Trainer(cfg, policy=copy.deepcopy(policy), reward=reward)
    result = tr.train()
    df = read_csv(tmp_path / "out" / "training_metrics.csv")
    assert set(REUSE_COLUMNS) <= set(df.columns) and df[list(REUSE_COLUMNS)].notna().all().all()
    assert ((df["clip_high_frac"] >= 0) & (df["grad_token_frac"] <= 1)).all() and (df["kl_old"] > 0).all()
    assert len(tr.last_updates) == 4 and tr.scheduler.last_epoch == 3 * 4  # one schedule step per update
    assert tr.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # linear decay reached its end
    lrs = [row["lr"] for row in result.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[1] == pytest.approx(cfg.lr * (1 - 4 / 12))


def test_a_default_run_has_no_reuse_columns(arith, tmp_path):
    policy, reward = arith
    Trainer(_config(tmp_path, steps=1), policy=copy.deepcopy(policy), reward=reward).train()
    assert not set(REUSE_COLUMNS) & set(read_csv(tmp_path / "out" / "training_metrics.csv").columns)


def test_a_nan_loss_in_a_later_update_stops_the_run(arith, tmp_path, monkeypatch):
    policy, reward = arith
    tr = Trainer(_config(tmp_path, steps=3, updates_per_batch=2, policy_loss="ppo"), policy=copy.deepcopy(policy),
                 reward=reward)
    import pgcore.engine.policy_loss as pl

    real, calls = pl.update_loss, []

    def nan_on_the_second_update(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(pl, "update_loss", nan_on_the_second_update)
    with pytest.raises(NonFiniteLossError, match="update 2"):
        tr.train()
    assert tr.global_step == 0  # the step was not recorded


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_with_several_updates_per_batch_is_bitwise_the_uninterrupted_run(tmp_path):
    def places(root):
        return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir",
                str(root / "models")]

    assert main([*RUN, *places(tmp_path / "a")]) == 0
    assert main([*RUN, *places(tmp_path / "b"), "--resume", str(tmp_path / "a" / "ckpt" / "checkpoint-3")]) == 0
    a = read_csv(tmp_path / "a" / "out" / "training_metrics.csv").set_index("step").drop(columns=TIME_COLUMNS)
    b = read_csv(tmp_path / "b" / "out" / "training_metrics.csv").set_index("step").drop(columns=TIME_COLUMNS)
    assert set(REUSE_COLUMNS) <= set(a.columns) and a["kl_old"].gt(0).all()
    assert a.equals(b), a.compare(b)
    model = "models/policy_gradient/model.safetensors"
    assert _sha(tmp_path / "a" / model) == _sha(tmp_path / "b" / model)
    opt_a, opt_b = (torch.load(tmp_path / run / "ckpt/checkpoint-6/optimizer.pt") for run in "ab")
    moments = [(k, sa[k], opt_b["state"][i][k]) for i, sa in opt_a["state"].items() for k in sa]
    assert moments and all(torch.equal(x, y) for _, x, y in moments)  # AdamW's state too
    summary = json.loads((tmp_path / "b" / "out" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-3") and summary["config"]["updates_per_batch"] == 2
    assert torch.isfinite(torch.tensor(a["loss"].to_numpy())).all()
