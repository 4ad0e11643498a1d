"""`--report-to tensorboard` (event files read back with TensorBoard's own reader), `--report-to wandb` (W&B's
offline run folder), `--log-completions N` (completions.jsonl), and that none of them changes the run."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pgcore.engine.cli import main

TIME = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]
RUN = ["--model", "tiny-arith", "--reward-model", "arithmetic", "--max-new-tokens", "6", "--batch-size", "2",
       "--num-samples", "4", "--steps", "3", "--save-every", "0", "--quiet"]


def places(root: Path) -> list[str]:
    return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir", str(root / "m")]


def test_tensorboard_event_files_hold_every_logged_scalar(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main([*RUN, *places(tmp_path), "--report-to", "tensorboard"]) == 0, capsys.readouterr().err
    df = pd.read_csv(tmp_path / "out" / "training_metrics.csv")
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    logged = {c for c in df.columns if c != "step" and df[c].notna().any()}
    assert logged <= tags and {"reward_mean", "loss", "kl", "zero_spread_frac"} <= tags, logged - tags
    for column in ("reward_mean", "loss", "grad_norm", "tokens"):
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx(df[column].tolist(), rel=1e-6)


def test_wandb_offline_writes_a_run_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_home").mkdir()
    assert main([*RUN, *places(tmp_path), "--report-to", "wandb", "--run-name", "wb"]) == 0, capsys.readouterr().err
    runs = sorted((tmp_path / "wandb_home" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb_home").rglob("*"))[:20]
    files = {p.name for p in runs[0].rglob("*")}
    assert any(name.endswith(".wandb") for name in files), files  # the run's records, for `wandb sync`
    assert not (tmp_path / "out" / "wandb").exists()


def test_log_completions_writes_n_rows_a_step_and_nothing_changes_the_numbers(tmp_path, capsys):
    assert main([*RUN, *places(tmp_path / "plain")]) == 0
    assert main([*RUN, *places(tmp_path / "logged"), "--log-completions", "3"]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "logged" / "out" / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(set(r) == {"step", "prompt", "completion", "reward"} and r["reward"] in (0.0, 1.0) for r in rows)
    from pgcore.lm.arith import parse_prompt, verify

    assert all(verify(r["completion"], *parse_prompt(r["prompt"])) == r["reward"] for r in rows)
    a = pd.read_csv(tmp_path / "plain" / "out" / "training_metrics.csv").drop(columns=TIME)
    b = pd.read_csv(tmp_path / "logged" / "out" / "training_metrics.csv").drop(columns=TIME)
    assert a.equals(b)
    assert not (tmp_path / "plain" / "out" / "completions.jsonl").exists()


def test_a_resumed_run_keeps_the_completions_up_to_its_checkpoint(tmp_path, capsys):
    args = [*RUN, "--steps", "4", "--save-every", "2", "--keep-last", "0", "--log-completions", "1"]
    assert main([*args, *places(tmp_path)]) == 0, capsys.readouterr().err
    path = tmp_path / "out" / "completions.jsonl"
    first = path.read_text().splitlines()
    assert main([*args, *places(tmp_path), "--resume", str(tmp_path / "ckpt" / "checkpoint-2")]) == 0
    again = path.read_text().splitlines()
    assert [json.loads(r)["step"] for r in again] == [1, 2, 3, 4] and again == first


def test_an_unknown_reporter_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*RUN, *places(tmp_path), "--report-to", "mlflow"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "mlflow" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main([*RUN, *places(tmp_path), "--report-to", "none", "tensorboard"])
    assert e.value.code == 2 and "report_to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
