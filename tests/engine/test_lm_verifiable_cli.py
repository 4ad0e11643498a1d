"""`python -m pgcore.lm` with the arithmetic verifier: a short tiny-arith run (held-out pass@1 in the metrics and
summary.json, a from_pretrained model), and bad input: one line on stderr, exit status 2, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgcore.lm", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


ARITH = ["--model", "tiny-arith", "--reward-model", "arithmetic", "--max-new-tokens", "6"]


def test_help_explains_the_new_flags():
    out = subprocess.run([sys.executable, "-m", "pgcore.lm", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    flat = " ".join(out.split())
    for text in ("--loss-aggregation {token,sequence,constant,sum}", "--kl-in {reward,loss}", "--eval-every",
                 "Dr. GRPO's r - mean up to the factor G/(G-1)", "GRPO's (r - mean) / std", "arithmetic"):
        assert text in flat, text


def test_short_arithmetic_run(tmp_path):
    proc = cli(*ARITH, "--steps", "4", "--batch-size", "4", "--num-samples", "4", "--eval-every", "2",
               "--eval-problems", "16", "--eval-samples", "2", "--advantage", "group", "--loss-aggregation",
               "constant", "--kl-in", "loss", "--kl-coef", "0.05", "--save-every", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "output" / "policy_gradient_metrics"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward_model"] == "arithmetic" and summary["model"] == "tiny-arith"
    assert 0 <= summary["heldout_pass1_first"] <= 1 and 0 <= summary["heldout_pass1_final"] <= 1
    assert summary["config"]["loss_aggregation"] == "constant" and summary["config"]["kl_in"] == "loss"
    import pandas as pd

    df = pd.read_csv(out / "training_metrics.csv")
    assert df["heldout_pass1"].notna().tolist() == [True, False, True, False]
    assert {"zero_spread_frac", "len_correct", "len_incorrect"} <= set(df.columns)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "models" / "policy_gradient"
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert tok.decode(tok("12+30=")["input_ids"]) == "12+30=" and model.config.n_positions == 32


def _letters_only_model(path: Path) -> Path:
    """A GPT-2 whose tokenizer knows 'a', 'b' and EOS only: it cannot write a digit."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2, "b": 3, "+": 4, "=": 5}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("args,message", [
    (["--loss-aggregation", "foo"], "argument --loss-aggregation: invalid choice: 'foo'"),
    (["--kl-in", "both"], "argument --kl-in: invalid choice: 'both'"),
    (["--eval-every", "-1"], "argument --eval-every: '-1' is negative"),
    (["--eval-samples", "0"], "argument --eval-samples: '0' is not positive"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, message):
    proc = cli(*ARITH, *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_a_policy_that_cannot_write_digits_exits_2(tmp_path):
    model = _letters_only_model(tmp_path / "letters")
    work = tmp_path / "work"
    work.mkdir()
    proc = cli("--model", str(model), "--reward-model", "arithmetic", cwd=work)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a policy that can write digits" in lines[0], proc.stderr
    assert list(work.iterdir()) == []


def test_eval_every_without_a_verifier_and_heldout_prompts_exit_2(tmp_path):
    proc = cli("--reward-model", "vader", "--eval-every", "5", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "needs a verifier reward" in proc.stderr
    from pgcore.lm.arith import problems

    a, b = problems("heldout", 1)[0]
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"1+2=\n{a}+{b}=\n")
    proc = cli(*ARITH, "--prompts", str(prompts), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "is a held-out problem" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]
