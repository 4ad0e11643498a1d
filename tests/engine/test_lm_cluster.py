"""`pgcore` as people install and run it on clusters: a wheel outside the checkout, SIGTERM, a killed
run's metrics, two runs into one folder, unusable output paths, the KL reference on resume, several EOS
ids, and a sequence classifier offered as the policy."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch

from lm_fakes import LetterReward, make_policy
from pgcore.lm import sampling
from pgcore.engine import LMConfig
from pgcore.engine import Trainer
from pgcore.engine.metrics import read_csv
from pgcore.engine.locks import FolderInUseError, FolderLock, check_writable_dir

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--batch-size", "2", "--num-samples", "2", "--max-new-tokens", "8", "--seed", "1"]


def places(root: Path) -> list[str]:
    return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir", str(root / "models")]


def cli(*args: str, timeout: float = 600, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgcore.lm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgcore-lm: error:"), proc.stderr[-2000:]
    return lines[0]


def fake_config(root: Path, **kw) -> LMConfig:
    base = dict(model="fake-gpt2", reward_model="letter-e", steps=4, batch_size=2, num_samples=2, max_new_tokens=6,
                save_every=2, keep_last=0, output_dir=str(root / "out"), checkpoint_dir=str(root / "ckpt"),
                model_dir=None, seed=0)
    base.update(kw)
    return LMConfig(**base)


PROMPTS = ["the movie was", "the food was", "i loved"]


# ------------------------------------------------------------------ 1. a wheel, outside the checkout
@pytest.mark.slow
def test_wheel_runs_from_any_folder_with_packaged_data_and_a_user_cache(tmp_path):
    """Build a wheel, install it (not editable) in a fresh venv, run pgcore-lm and reinforce.train
    from an unrelated folder: data and the tiny models come from the package, nothing is built or written
    beside it, and a model of another recipe is cached in $PGCORE_HOME."""
    dist, venv, work, home = (tmp_path / n for n in ("dist", "venv", "work", "home"))
    src = tmp_path / "src"  # a copy: building in the checkout would leave a build/ folder there
    skip = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__")
    run_products = {"output", "checkpoints", "models", "notebooks"}  # at the top only: pgcore/models/ ships

    def ignore(folder, names):
        return set(skip(folder, names)) | (run_products & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("pgcore-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, transformers, ...) come from this environment's site-packages; a .pth line
    # adds the folder without running its .pth files, so this checkout's editable install stays out
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PGCORE_HOME"] = str(home)
    where = subprocess.run([str(py), "-c", "import pgcore, pgcore.files as u; print(pgcore.__file__); "
                            "print(u.data_path('reviews.tsv').is_file(), u.cache_dir())"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site), f"pgcore imported from {where[0]}, not the wheel"
    assert where[1] == "True" and Path(where[2]) == home / "models"

    script = venv / ("Scripts" if os.name == "nt" else "bin") / "pgcore-lm"
    proc = subprocess.run([str(script), "--reward-model", "tiny-sentiment", "--steps", "3", *FAST, "--quiet"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_csv(work / "output" / "policy_gradient_metrics" / "training_metrics.csv")) == 3
    assert (work / "checkpoints" / "checkpoint-3").is_dir() and (work / "models" / "policy_gradient").is_dir()
    assert not (home / "models").exists() or not any((home / "models").iterdir()), "the shipped models were rebuilt"
    code = ("import pgcore.lm.tiny as t; from pgcore.lm.tiny_sentiment import tiny_sentiment_dir as s; "
            "from pgcore.lm.tiny_arith import tiny_arith_dir as a; print(t.tiny_dir(), s(), a()); "
            "print(t.tiny_dir(t.TinyConfig(steps=3, vocab_size=300, n_embd=16, n_layer=1, n_head=2)))")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *shipped, other = map(Path, proc.stdout.split())
    assert all(p.is_relative_to(site / "pgcore" / "models") and (p / "model.safetensors").is_file() for p in shipped)
    assert other.parent == home / "models", "a model of another recipe is built into the user cache"
    assert not any(p.name in ("models", "data", "output") for p in site.iterdir()), "nothing written beside the package"

    code = ("import pgcore as pg; cfg = pg.reinforce.ReinforceConfig(max_env_steps=2000, early_stop=False); "
            "r = pg.reinforce.train('CartPole-v1', seed=0, config=cfg, progress=False); print(r.env_steps)")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert proc.returncode == 0 and int(proc.stdout.split()[-1]) >= 2000, proc.stderr[-2000:]


# ------------------------------------------------------------------ 2. SIGTERM and a killed run's rows
def test_sigterm_saves_a_checkpoint_and_the_outputs_then_exits_143(tmp_path):
    args = [sys.executable, "-m", "pgcore.lm", "--reward-model", "tiny-sentiment", "--steps", "100000",
            "--save-every", "0", *FAST, *places(tmp_path)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv = tmp_path / "out" / "training_metrics.csv"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:  # the CSV grows while the run goes on
            if csv.is_file() and len(csv.read_text().splitlines()) > 5:
                break
            time.sleep(0.2)
        assert proc.poll() is None and csv.is_file(), "no streamed metrics rows before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM)" in err and "--resume" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["status"] == "terminated" and steps >= 5
    assert list(read_csv(csv)["step"]) == list(range(1, steps + 1))
    assert (tmp_path / "ckpt" / f"checkpoint-{steps}").is_dir() and (tmp_path / "out" / "training_curves.png").is_file()
    assert not list((tmp_path / "out").glob(".pgcore-run*")), "the folder lock is released"
    again = cli("--reward-model", "tiny-sentiment", "--steps", str(steps + 2), "--save-every", "0", *FAST,
                *places(tmp_path), "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert list(read_csv(csv)["step"]) == list(range(1, steps + 3))


def test_resume_drops_the_rows_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    """A run killed at step 6 (SIGKILL, OOM) left 6 streamed rows but its last checkpoint is at step 3:
    resuming continues from 3, and the CSV is the resumed run's, not a mix."""
    first = Trainer(fake_config(tmp_path, steps=6, save_every=3), policy=make_policy(), reward=LetterReward(),
                    prompts=PROMPTS)
    for step in range(1, 7):  # the steps of a run killed after step 6, with its checkpoint at step 3
        first.step()
        if step == 3:
            first.save_checkpoint()
    csv = tmp_path / "out" / "training_metrics.csv"
    assert list(read_csv(csv)["step"]) == list(range(1, 7)), "rows are on disk as soon as each step ends"

    resumed = Trainer(fake_config(tmp_path, steps=6, save_every=3), policy=make_policy(), reward=LetterReward(),
                      prompts=PROMPTS, resume=True)
    assert resumed.global_step == 3
    assert list(read_csv(csv)["step"]) == list(range(1, 7)), "resuming alone writes nothing"
    resumed.step()  # one new step: the CSV is rewritten from the checkpoint's rows plus this one
    df = read_csv(csv)
    assert list(df["step"]) == [1, 2, 3, 4]
    assert df["reward_mean"].tolist() == [r["reward_mean"] for r in first.history[:4]], "resume is exact"


# ------------------------------------------------------------------ 3. two runs, one folder
def test_a_second_run_into_a_locked_folder_exits_2_naming_the_holder(tmp_path):
    with FolderLock(tmp_path / "out", "output dir"):
        proc = cli("--reward-model", "tiny-sentiment", "--steps", "2", *FAST, *places(tmp_path))
    line = one_error_line(proc)
    assert proc.returncode == 2 and "in use" in line and f"pid {os.getpid()}" in line
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "out" / "training_metrics.csv").exists()


def test_a_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / FolderLock.LOCK_NAME).write_text("")  # left by a killed run: nobody holds the OS lock
    (out / FolderLock.INFO_NAME).write_text(json.dumps({"pid": 99999999, "host": "gone"}))
    trainer = Trainer(fake_config(tmp_path, steps=2), policy=make_policy(), reward=LetterReward(), prompts=PROMPTS)
    assert trainer.train().status == "completed"
    assert sorted(p.name for p in out.iterdir()) == ["log_history.json", "summary.json", "training_curves.png",
                                                     "training_metrics.csv"]


def test_two_trainers_into_the_same_checkpoint_dir(tmp_path):
    """The second run is refused while the first runs, even with another output dir."""
    seen = []

    def start_second(trainer, row):
        other = Trainer(fake_config(tmp_path, output_dir=str(tmp_path / "out2")), policy=make_policy(1),
                        reward=LetterReward(), prompts=PROMPTS)
        with pytest.raises(FolderInUseError, match="checkpoint dir .* in use"):
            other.train()
        seen.append(row["step"])
        return True

    Trainer(fake_config(tmp_path), policy=make_policy(), reward=LetterReward(), prompts=PROMPTS).train(
        callbacks=[start_second])
    assert seen == [1] and not (tmp_path / "out2" / "training_metrics.csv").exists()


# ------------------------------------------------------------------ 4. unusable output paths
@pytest.mark.parametrize("flag", ["--output-dir", "--checkpoint-dir", "--model-dir"])
@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_unusable_output_paths_exit_2_in_one_line_before_anything(tmp_path, flag, where):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("keep me")
    path = blocker if where == "a file" else blocker / "sub"
    args = dict(zip(places(tmp_path)[::2], places(tmp_path)[1::2]))
    args[flag] = str(path)
    start = time.perf_counter()
    proc = cli("--reward-model", "tiny-sentiment", "--steps", "2", *FAST, *[x for kv in args.items() for x in kv])
    line = one_error_line(proc)
    assert proc.returncode == 2 and str(blocker) in line and "accepted" in line
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["blocker.txt"]
    assert time.perf_counter() - start < 60


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root (and Windows) may write anywhere")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="no permission"):
            check_writable_dir(locked / "out", "output dir")
    finally:
        locked.chmod(0o700)


def test_check_writable_dir_accepts_new_and_existing_folders(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b", "x") == tmp_path / "a" / "b"
    assert check_writable_dir(tmp_path, "x") == tmp_path
    assert not (tmp_path / "a").exists(), "checking creates nothing"


# ------------------------------------------------------------------ 5. the KL reference on resume
def test_resume_refuses_a_different_reference(tmp_path):
    Trainer(fake_config(tmp_path, steps=2), policy=make_policy(seed=0), reward=LetterReward(), prompts=PROMPTS).train()
    same = Trainer(fake_config(tmp_path, steps=3), policy=make_policy(seed=0), reward=LetterReward(), prompts=PROMPTS,
                   resume=True)
    assert same.global_step == 2
    with pytest.raises(ValueError, match="reference_sha256"):  # same name, other starting weights
        Trainer(fake_config(tmp_path, steps=3), policy=make_policy(seed=1), reward=LetterReward(), prompts=PROMPTS,
                resume=True)


# ------------------------------------------------------------------ 6. every EOS id ends a completion
def test_generation_stops_at_the_models_end_of_turn_token_too():
    """A chat model's end-of-turn token may be only in generation_config.eos_token_id: generation must
    stop there and the completion mask end there, not run to max_new_tokens."""
    policy = make_policy()
    model, tok = policy.model, policy.tokenizer
    end_of_turn = tok.convert_tokens_to_ids("e")
    assert end_of_turn != tok.eos_token_id
    with torch.no_grad():  # make the model always say `end_of_turn`: constant final hidden state along its embedding
        model.transformer.wte.weight[end_of_turn] = 10 * torch.nn.functional.normalize(
            torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0)), dim=0)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(100 * model.transformer.wte.weight[end_of_turn])
    model.generation_config.eos_token_id = [tok.eos_token_id, end_of_turn]
    assert sampling.eos_token_ids(model, tok) == sorted({tok.eos_token_id, end_of_turn})
    batch = sampling.generate(model, tok, ["the movie was", "i"], 2, max_new_tokens=8, seed=0)
    assert batch.completion_ids.shape[1] == 1 and (batch.completion_ids == end_of_turn).all()
    assert batch.completion_mask.tolist() == [[1]] * 4
    model.generation_config.eos_token_id = tok.eos_token_id  # the tokenizer's EOS alone: it never stops
    assert sampling.generate(model, tok, ["i"], 1, max_new_tokens=8, seed=0).completion_ids.shape[1] == 8


# ------------------------------------------------------------------ 7. a classifier is not a policy
def test_a_sequence_classifier_is_refused_as_the_policy():
    from pgcore.lm import models
    from pgcore.lm.tiny_sentiment import tiny_sentiment_dir

    with pytest.raises(ValueError, match="not a causal language model") as err:
        models.load_policy(str(tiny_sentiment_dir()))
    assert "\n" not in str(err.value) and "ForSequenceClassification" in str(err.value)
    proc = cli("--model", str(tiny_sentiment_dir()), "--reward-model", "vader", "--steps", "1")
    assert proc.returncode == 2 and "not a causal language model" in one_error_line(proc)


def test_shipped_prompt_files_are_found_from_any_folder(tmp_path, monkeypatch):
    from pgcore.lm.models import load_prompts
    from pgcore.files import data_path

    monkeypatch.chdir(tmp_path)
    shipped = load_prompts(data_path("chat_prompts.txt"))
    assert load_prompts("data/chat_prompts.txt") == shipped == load_prompts("chat_prompts.txt")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "chat_prompts.txt").write_text("my own prompt\n")  # a file that exists wins
    assert load_prompts("data/chat_prompts.txt") == ["my own prompt"]
    with pytest.raises(ValueError, match="not found"):
        load_prompts("data/no_such_prompts.txt")
