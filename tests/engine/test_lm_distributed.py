"""Data-parallel `pgcore.lm` on 2 CPU processes (gloo): `accelerate launch` of the real tiny tier,
exact resume on 2 processes, one writer, the world-size rule, errors on every rank, and the averaged
gradient of 2 processes against the single-process gradient on the concatenated batch."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lm_fakes import LetterReward, make_policy
from pgcore.engine.cli import main
from pgcore.engine.metrics import read_csv

TIME_COLUMNS = ["time", "time_generate", "time_reward", "time_update", "time_reference", "time_policy", "time_optimizer"]
RUN = ["--reward-model", "tiny-sentiment", "--steps", "4", "--batch-size", "2", "--num-samples", "2",
       "--max-new-tokens", "4", "--save-every", "2", "--keep-last", "0", "--seed", "5"]
ONE_THREAD = ["--threads", "1"]  # per process: 2 processes share 2 cores
PLACES = ["--output-dir", "out", "--checkpoint-dir", "ckpt", "--model-dir", "models"]  # relative to each rank's cwd
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "ACCELERATE_USE_CPU")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)  # 2 processes on 2 cores: 1 thread each
    return env


def metrics(out: Path):
    return read_csv(out / "training_metrics.csv").set_index("step").drop(columns=TIME_COLUMNS)


def run_ranks(args: list[str], cwds: list[Path], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """What torchrun does, by hand: one `python -m pgcore.lm` per rank (each in its own folder), so
    every rank's exit status, output and files can be checked on their own."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "pgcore.lm", *args], cwd=cwd, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(len(cwds)),
                                            LOCAL_WORLD_SIZE=str(len(cwds)), MASTER_ADDR="127.0.0.1",
                                            MASTER_PORT=str(port)))
             for r, cwd in enumerate(cwds)]
    try:
        deadline = time.monotonic() + timeout
        outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """`accelerate launch` with 2 CPU processes, 4 steps, checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("launched")
    # on a machine without GPUs, --multi_gpu starts torch's elastic launcher and Accelerate falls back to gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "pgcore.lm", *RUN, *ONE_THREAD, *PLACES]
    proc = subprocess.run(cmd, cwd=root, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_accelerate_launch_two_processes_writes_one_set_of_outputs(launched):
    root, proc = launched
    assert proc.stdout.count("policy: tiny") == 1 and proc.stdout.count("step     4/4") == 1, proc.stdout
    assert "2 processes" in proc.stdout and "Traceback" not in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["ckpt", "models", "out"]
    assert {p.name for p in (root / "out").iterdir()} == {"training_metrics.csv", "log_history.json",
                                                          "summary.json", "training_curves.png"}
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed" and summary["steps"] == 4
    assert list(metrics(root / "out").index) == [1, 2, 3, 4]
    assert sorted(p.name for p in (root / "ckpt").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert (root / "models" / "policy_gradient" / "config.json").exists()


def test_resume_on_two_processes_reproduces_the_run_and_only_rank_0_writes(launched, tmp_path):
    root, _ = launched
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for d in cwds:
        d.mkdir()
    procs = run_ranks([*RUN, *ONE_THREAD, *PLACES, "--resume", str(root / "ckpt" / "checkpoint-2")], cwds)
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r}: {p.stderr[-3000:]}"
        assert "Traceback" not in p.stderr
    assert "resumed from" in procs[0].stdout and procs[1].stdout == ""
    assert list(cwds[1].iterdir()) == [], "rank 1 wrote files"
    a, b = metrics(root / "out"), metrics(cwds[0] / "out")
    assert a.equals(b), a.compare(b)  # steps 3-4 recomputed on 2 processes; 1-2 from the checkpoint
    from safetensors.torch import load_file

    wa = load_file(root / "models" / "policy_gradient" / "model.safetensors")
    wb = load_file(cwds[0] / "models" / "policy_gradient" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_reusing_a_batch_on_two_processes_and_resuming_it(tmp_path):
    """mu = 2 passes over 2 minibatches on each of 2 ranks: the reuse columns, and a bitwise resume."""
    reuse = ["--batch-size", "4", "--updates-per-batch", "2", "--minibatches", "2", "--policy-loss", "ppo",
             "--kl-in", "loss", "--kl-ratio-correction", "--lr", "1e-3"]
    runs = {name: [tmp_path / name / f"rank{r}" for r in range(2)] for name in ("full", "resumed")}
    for d in [*runs["full"], *runs["resumed"]]:
        d.mkdir(parents=True)
    resume = ["--resume", str(runs["full"][0] / "ckpt" / "checkpoint-2")]
    for name, extra in (("full", []), ("resumed", resume)):
        for r, p in enumerate(run_ranks([*RUN, *ONE_THREAD, *PLACES, *reuse, *extra], runs[name])):
            assert p.returncode == 0 and "Traceback" not in p.stderr, f"{name} rank {r}: {p.stderr[-3000:]}"
    a, b = metrics(runs["full"][0] / "out"), metrics(runs["resumed"][0] / "out")
    assert {"clip_low_frac", "clip_high_frac", "grad_token_frac", "kl_old"} <= set(a.columns)
    assert a["kl_old"].gt(0).all()
    assert a.equals(b), a.compare(b)


def test_a_two_process_checkpoint_does_not_resume_on_one_process(launched, tmp_path, capsys):
    root, _ = launched
    with pytest.raises(SystemExit) as exc:
        main([*RUN, "--output-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
              "--model-dir", str(tmp_path / "models"), "--resume", str(root / "ckpt" / "checkpoint-4")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "world_size=2" in err and "this run has world_size=1" in err, err  # a plain run is one process
    assert not any(tmp_path.iterdir()), "nothing may be written"


# ------------------------------------------------------------------ the gradient, on a fixed sample
PROMPTS = ["the movie", "a", "terrible plot", "i loved this", "the food was"]


def grad_config(share_prompt: bool = False):
    from pgcore.engine import LMConfig

    return LMConfig(steps=4, batch_size=4, num_samples=2, max_new_tokens=6, lr=1e-2, kl_coef=0.1, entropy_coef=0.01,
                    max_grad_norm=1e9, output_dir=None, checkpoint_dir=None, model_dir=None, share_prompt=share_prompt)


def rows(batch, start: int, stop: int):
    s = slice(start, stop)
    return dataclasses.replace(batch, prompt_ids=batch.prompt_ids[s], prompt_mask=batch.prompt_mask[s],
                               completion_ids=batch.completion_ids[s], completion_mask=batch.completion_mask[s],
                               texts=batch.texts[s], prompts=batch.prompts[s], sampling_logps=None)


def one_step(trainer_cls, batch, monkeypatch_sample, share_prompt: bool = False):
    """One step on `batch` instead of sampling; the gradient (after backward) and the metrics row. In the
    shared-prompt step the stand-in runs the prompts' forward with its graph, as `generate_shared` does, on the
    bare model (inside the DDP wrapper), and the policy forward reuses it."""
    from pgcore.engine.kv_cache import prompt_forward

    def fake_sample(self, step):
        if not share_prompt:
            return batch, None
        G = self.config.num_samples
        with torch.enable_grad():
            state = prompt_forward(self.unwrapped_model, batch.prompt_ids[::G], batch.prompt_mask[::G])
        return batch, state

    monkeypatch_sample(fake_sample)
    tr = trainer_cls(grad_config(share_prompt), policy=make_policy(seed=0), reward=LetterReward("e"), prompts=PROMPTS)
    row = tr.step()
    return tr, [p.grad.detach().clone() for p in tr.unwrapped_model.parameters()], row


def _worker(rank: int, port: int, batch, out: str) -> None:
    """Rank `rank` of 2 (gloo): one step on its half of `batch`, then the command line with a
    --prompts file that only rank 0 has. Results go to <out>/rank<rank>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import contextlib
    import io

    from pgcore.engine.distributed import AccelerateTrainer

    half = len(batch) // 2
    tr, grads, row = one_step(AccelerateTrainer, rows(batch, rank * half, (rank + 1) * half),
                              lambda fake: setattr(AccelerateTrainer, "sample", fake))
    _, shared_grads, shared_row = one_step(AccelerateTrainer, rows(batch, rank * half, (rank + 1) * half),
                                           lambda fake: setattr(AccelerateTrainer, "sample", fake), share_prompt=True)
    work = Path(out) / f"cli{rank}"
    work.mkdir()
    if rank == 0:
        (work / "prompts.txt").write_text("The movie was\nThe food was\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([*RUN, *ONE_THREAD, "--output-dir", str(work / "out"), "--checkpoint-dir", str(work / "ckpt"),
                         "--model-dir", str(work / "models"), "--prompts", str(work / "prompts.txt")])
    except SystemExit as e:
        code = e.code
    torch.save({"grads": grads, "row": row, "shared_grads": shared_grads, "shared_row": shared_row,
                "world": tr.num_processes, "code": code, "stdout": stdout.getvalue(),
                "stderr": stderr.getvalue(), "files": sorted(p.name for p in work.iterdir())}, f"{out}/rank{rank}.pt")
    tr.end()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    """2 spawned processes; the fixed batch (4 prompts x 2 samples) they split; their results."""
    import torch.multiprocessing as mp

    from pgcore.lm.sampling import generate

    out = tmp_path_factory.mktemp("workers")
    policy = make_policy(seed=0)
    batch = generate(policy.model, policy.tokenizer, PROMPTS[:4], 2, 6, 1.0, seed=11)  # (8, T)
    batch.completion_mask[6:, 2:] = 0  # rank 1's share gets fewer tokens: the token-level mean must weigh it
    assert batch.completion_mask[:4].sum() != batch.completion_mask[4:].sum()
    ctx = mp.start_processes(_worker, args=(free_port(), batch, str(out)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process workers did not finish")
    return batch, [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("share_prompt", [False, True], ids=["one-pass", "shared-prompt"])
def test_two_process_gradient_equals_the_single_process_gradient_on_the_whole_batch(workers, monkeypatch,
                                                                                     share_prompt):
    from pgcore.engine import Trainer

    batch, results = workers
    _, grads_1, row_1 = one_step(Trainer, batch, lambda fake: monkeypatch.setattr(Trainer, "sample", fake),
                                 share_prompt=share_prompt)
    prefix = "shared_" if share_prompt else ""
    assert all(r["world"] == 2 for r in results)
    assert any(g.abs().max() > 0 for g in grads_1)
    for r in results:
        assert len(r[prefix + "grads"]) == len(grads_1)
        for g2, g1 in zip(r[prefix + "grads"], grads_1):
            assert torch.allclose(g2, g1, rtol=1e-4, atol=1e-7), (g2 - g1).abs().max()
        for key in ("loss", "reward_mean", "reward_std", "kl", "entropy", "completion_len", "tokens", "grad_norm"):
            # the whole batch's; the KL of a policy that is still the reference is fp32 rounding (a few 1e-7)
            assert r[prefix + "row"][key] == pytest.approx(row_1[key], rel=1e-5, abs=1e-6 if key == "kl" else 1e-7), key


def test_an_error_on_one_rank_exits_2_on_every_rank_with_one_line(workers):
    """Rank 1 has no --prompts file: neither rank may wait forever for the other; both exit 2, rank 0
    prints one line naming rank 1's error, rank 1 (a second process on the machine) prints nothing."""
    _, (r0, r1) = workers
    assert (r0["code"], r1["code"]) == (2, 2), (r0["stderr"], r1["stderr"])
    lines = r0["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgcore-lm: error: process 1 of 2:") and "cli1" in lines[0], lines
    assert r1["stderr"] == "" and r0["stdout"] == r1["stdout"] == ""
    assert r0["files"] == ["prompts.txt"] and r1["files"] == [], "nothing may be written"


def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """A scheduler's SIGTERM (here to rank 1 only) reaches every rank through a flag they gather after
    each step: all stop after the same step, rank 0 saves the checkpoint and outputs, all exit 143."""
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for d in cwds:
        d.mkdir()
    port = free_port()
    args = [*RUN, *ONE_THREAD, *PLACES, "--steps", "100000", "--save-every", "0"]
    procs = [subprocess.Popen([sys.executable, "-m", "pgcore.lm", *args], cwd=cwd, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=clean_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r, cwd in enumerate(cwds)]
    csv = cwds[0] / "out" / "training_metrics.csv"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if csv.is_file() and len(csv.read_text().splitlines()) > 3:
                break
            time.sleep(0.2)
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        procs[1].send_signal(15)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 143], [e[-2000:] for _, e in outs]
    summary = json.loads((cwds[0] / "out" / "summary.json").read_text())
    steps = summary["steps"]
    assert summary["status"] == "terminated" and summary["world_size"] == 2
    assert list(metrics(cwds[0] / "out").index) == list(range(1, steps + 1))
    assert (cwds[0] / "ckpt" / f"checkpoint-{steps}").is_dir()
    assert list(cwds[1].iterdir()) == [], "rank 1 wrote files"


def test_reward_functions_and_dataset_columns_on_two_processes(tmp_path):
    """Each rank scores its own rows with their own dataset columns; the gathered columns are the whole batch's."""
    rows = [{"prompt": f"{a}+{a + 1}=", "answer": str(2 * a + 1)} for a in range(10, 18)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "funcs.py").write_text("def echo(prompts, completions, answer, **kw):\n"
                                       "    assert all(p == f\"{(int(a) - 1) // 2}+{(int(a) + 1) // 2}=\" "
                                       "for p, a in zip(prompts, answer))\n"
                                       "    return [float(a) for a in answer]\n"
                                       "def digits(prompts, completions, answer, **kw):\n"
                                       "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for cwd in cwds:
        cwd.mkdir()
    procs = run_ranks(["--model", "tiny-arith", "--prompts", str(tmp_path / "qa.jsonl"), "--reward-fn",
                       f"{tmp_path / 'funcs.py'}:echo", "--reward-fn", f"{tmp_path / 'funcs.py'}:digits",
                       "--steps", "2", "--batch-size", "8", "--num-samples", "2", "--max-new-tokens", "6",
                       "--save-every", "0", "--kl-coef", "0", *ONE_THREAD, *PLACES], cwds)
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    df = read_csv(cwds[0] / "out" / "training_metrics.csv")
    assert df["reward/echo_mean"].tolist() == pytest.approx([sum(2 * a + 1 for a in range(10, 18)) / 8] * 2)
    assert df["reward/digits_mean"].between(0, 1).all()
    assert not (cwds[1] / "out").exists()


def test_a_reward_function_failing_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"prompt": f"{a}+1=", "answer": str(a + 1)}) + "\n"
                                               for a in range(4)))
    (tmp_path / "funcs.py").write_text("def picky(prompts, completions, answer, **kw):\n"
                                       "    return [float('nan') if a == '3' else 0.0 for a in answer]\n")
    cwds = [tmp_path / "rank0", tmp_path / "rank1"]
    for cwd in cwds:
        cwd.mkdir()
    procs = run_ranks(["--model", "tiny-arith", "--prompts", str(tmp_path / "qa.jsonl"), "--reward-fn",
                       f"{tmp_path / 'funcs.py'}:picky", "--steps", "2", "--batch-size", "4", "--num-samples", "2",
                       "--max-new-tokens", "4", "--advantage", "mean", *ONE_THREAD, *PLACES], cwds, timeout=240)
    assert [p.returncode for p in procs] == [2, 2], [p.stderr[-1500:] for p in procs]
    err = procs[0].stderr.strip().splitlines()
    assert len(err) == 1 and "of 2:" in err[0] and "funcs.py:picky' at step 1 returned nan" in err[0], err
    assert not [p for cwd in cwds for p in cwd.rglob("*") if p.is_file()], "nothing written"
