"""pgcore.engine.metrics (the generic run logger) and pgcore.engine.checkpoint (exact resume, pruning, atomic saves)."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from pgcore.engine import checkpoint as ck
from pgcore.engine.metrics import MetricsLogger, environment_info, plot_curves, read_csv, write_csv


# ----------------------------------------------------------------------------------- metrics
def test_logger_writes_four_files_that_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    logger = MetricsLogger(tmp_path / "run", panels=[("return", "ret", "ret_std"), "loss"], title="t")
    for step in range(1, 8):
        logger.log({"step": step, "ret": float(rng.normal()), "ret_std": 0.1, "loss": float(rng.normal()) / 3,
                    "time": 0.01})
    logger.log({"step": 8, "ret": float("nan"), "ret_std": 0.1, "loss": 1.0, "time": 0.01})
    paths = logger.write(summary={"config": {"lr": 0.1}, "nan": float("nan"), "dev": torch.device("cpu")})
    assert set(paths) == {"csv", "history", "summary", "curves"}
    df = read_csv(paths["csv"])
    assert list(df.columns) == ["step", "ret", "ret_std", "loss", "time"]
    for row, (_, back) in zip(logger.history[:7], df.iterrows()):
        assert back["ret"] == row["ret"] and back["loss"] == row["loss"]  # full precision round trip
    assert math.isnan(df["ret"].iloc[-1])
    history = json.loads(paths["history"].read_text())
    assert [r["step"] for r in history] == list(range(1, 9)) and history[-1]["ret"] is None  # NaN -> null
    summary = json.loads(paths["summary"].read_text())
    assert summary == {"config": {"lr": 0.1}, "nan": None, "dev": "cpu"}
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logger_in_memory_and_bad_rows(tmp_path):
    logger = MetricsLogger(None)
    logger.log({"step": 1, "x": 2.0})
    assert logger.write() == {} and logger.column("x") == [2.0]
    with pytest.raises(ValueError, match="step"):
        logger.log({"x": 1.0})
    with pytest.raises(ValueError, match="panel"):
        MetricsLogger(tmp_path, panels=[("a",)])


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.csv"
    write_csv([{"step": 1, "a": 1.0}], path)
    before = path.read_bytes()
    import pandas as pd

    def boom(self, *a, **k):
        with open(a[0], "w") as f:
            f.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        write_csv([{"step": 1, "a": 2.0}], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"], "no temp file left behind"


def test_plot_curves_default_panels_and_environment_info(tmp_path):
    out = plot_curves([{"step": i, "a": i * 0.5, "time": 1.0, "name": "x"} for i in range(1, 4)], tmp_path / "c.png")
    assert out.stat().st_size > 1000
    info = environment_info(device="cpu")
    assert info["torch"] == torch.__version__ and info["device"] == "cpu" and "python" in info


# -------------------------------------------------------------------------------- checkpoints
def _train_steps(model, opt, sched, n, gen):
    losses = []
    for _ in range(n):
        x = torch.randn(8, 4, generator=gen) + torch.randn(8, 4)  # global RNG + a named generator
        noise = random.random() + np.random.rand()  # python and numpy RNGs too
        loss = ((model(x) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched, torch.Generator().manual_seed(seed + 1)


def test_resume_from_checkpoint_is_exact(tmp_path):
    random.seed(0), np.random.seed(0)
    model, opt, sched, gen = _setup()
    first = _train_steps(model, opt, sched, 5, gen)
    path = ck.save_checkpoint(tmp_path, 5, model=model, optimizer=opt, scheduler=sched, history=[{"step": 5}],
                              config={"lr": 0.05}, extra={"who": "test"}, generators={"data": gen})
    uninterrupted = _train_steps(model, opt, sched, 5, gen)
    final = [p.detach().clone() for p in model.parameters()]

    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # scramble every RNG
    model2, opt2, sched2, gen2 = _setup(seed=7)
    got = ck.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2, generators={"data": gen2})
    assert (got.step, got.history, got.config, got.extra) == (5, [{"step": 5}], {"lr": 0.05}, {"who": "test"})
    resumed = _train_steps(model2, opt2, sched2, 5, gen2)
    assert resumed == uninterrupted and first != resumed
    assert all(torch.equal(a, b) for a, b in zip(final, model2.parameters()))


def test_rng_state_roundtrip():
    state = ck.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ck.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_latest_and_keep_last_pruning(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (2, 9, 10, 11):
        ck.save_checkpoint(tmp_path, step, model=model, keep_last=3)
    (tmp_path / ".checkpoint-12.abc.tmp").mkdir()  # a crashed save's leftovers are not checkpoints
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-11"]
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint-11"  # numeric, not lexicographic
    assert ck.latest_checkpoint(tmp_path / "nowhere") is None
    assert [p.name for p in ck.prune_checkpoints(tmp_path, 1)] == ["checkpoint-9", "checkpoint-10"]
    assert ck.prune_checkpoints(tmp_path, 0) == []


def test_crash_mid_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt, sched, _ = _setup()
    ck.save_checkpoint(tmp_path, 10, model=model, optimizer=opt, scheduler=sched, keep_last=1)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real_save = torch.save

    def crash(obj, f, *a, **k):
        if str(f).endswith("scheduler.pt"):
            raise KeyboardInterrupt  # killed mid-save, after the model and optimizer were written
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", crash)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 20, model=model, optimizer=opt, scheduler=sched, keep_last=1)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "checkpoint-10 changed or a partial checkpoint-20 was left"
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert ck.read_checkpoint(tmp_path / "checkpoint-10", model).step == 10


def test_corrupt_or_mismatched_checkpoint_is_refused(tmp_path):
    model, opt, sched, _ = _setup()
    path = ck.save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched)
    with pytest.raises(ValueError, match="different model"):
        ck.read_checkpoint(path, torch.nn.Linear(4, 3))
    (path / "rng_state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        ck.read_checkpoint(path, model)
    (path / "rng_state.pt").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        ck.read_checkpoint(path, model)
    with pytest.raises(ValueError, match="not a folder"):
        ck.read_checkpoint(tmp_path / "checkpoint-99", model)
    with pytest.raises(ValueError, match="step"):
        ck.save_checkpoint(tmp_path, -1, model=model)


def test_save_pretrained_model_checkpoint_roundtrip(tmp_path):
    from lm_fakes import make_policy

    pol = make_policy(seed=0)
    path = ck.save_checkpoint(tmp_path, 1, model=pol.model, tokenizer=pol.tokenizer)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(path / "model").eos_token == pol.tokenizer.eos_token
    assert AutoModelForCausalLM.from_pretrained(path / "model").num_parameters() == pol.model.num_parameters()
    other = make_policy(seed=1).model
    ck.load_checkpoint(path, model=other, restore_rng=False)
    assert all(torch.equal(a, b) for a, b in zip(pol.model.state_dict().values(), other.state_dict().values()))
    (path / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        ck.read_checkpoint(path, other)
