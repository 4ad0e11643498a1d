"""The tiny models pgcore ships: today's recipes made them, pgcore loads them without building, and the recipe
run on this machine reproduces them (bit for bit on the kernels that built them, closely on others)."""
from __future__ import annotations

import json

import pytest
import torch

from pgcore import files
from pgcore.lm import models, rewards, shipped, tiny, tiny_arith, tiny_sentiment

KINDS = list(shipped.RECIPES)


def test_the_shipped_models_are_todays_recipes():
    """A recipe changed without `python -m pgcore.lm.shipped --write` would leave stale weights (pgcore would then
    build into the cache and every CPU would start from its own weights again)."""
    assert shipped.stale() == [], f"stale shipped models {shipped.stale()}: run `python -m pgcore.lm.shipped --write`"
    for kind in KINDS:
        info = json.loads((files.MODELS_DIR / kind / tiny.BUILD_FILE).read_text())
        assert info["kind"] == kind and info["built_on"]["cpu_capability"]


def test_the_default_models_load_from_the_package_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("PGCORE_HOME", str(tmp_path))

    def no_build(*args, **kwargs):
        raise AssertionError("a shipped model was built")

    for module, name in ((tiny, "build_tiny"), (tiny_sentiment, "build_tiny_sentiment"), (tiny_arith, "build_tiny_arith")):
        monkeypatch.setattr(module, name, no_build)
    policy = models.load_policy("tiny")
    arith_policy = models.load_policy("tiny-arith")
    reward = rewards.load_reward("tiny-sentiment")
    assert tiny.tiny_dir() == files.MODELS_DIR / "tiny"
    assert tiny_arith.tiny_arith_dir() == files.MODELS_DIR / "tiny-arith"
    assert tiny_sentiment.tiny_sentiment_dir() == files.MODELS_DIR / "tiny-sentiment"
    assert not any(tmp_path.iterdir()), "nothing is written to the cache"
    from safetensors.torch import load_file

    weights = load_file(files.MODELS_DIR / "tiny" / "model.safetensors")
    state = policy.model.state_dict()
    assert all(torch.equal(state[k], w) for k, w in weights.items() if k in state)
    assert arith_policy.name == "tiny-arith" and reward.name == "tiny-sentiment"


def test_a_stale_shipped_folder_is_ignored(tmp_path, monkeypatch):
    """The shipped folder is used only when its fingerprint is the recipe's: another one builds into the cache."""
    fake = tmp_path / "shipped"
    (fake / "tiny").mkdir(parents=True)
    (fake / "tiny" / tiny.BUILD_FILE).write_text(json.dumps({"fingerprint": "000000000000"}))
    monkeypatch.setattr(files, "MODELS_DIR", fake)
    built = []
    path = files.model_dir("tiny", tiny.tiny_fingerprint(), lambda p: built.append(p) or p.mkdir()
                           or (p / tiny.BUILD_FILE).write_text("{}"), cache=tmp_path / "cache")
    assert built == [path] and path.parent == tmp_path / "cache"
    assert shipped.stale(fake) == KINDS
    assert files.shipped_model("tiny", "000000000000") == fake / "tiny"


def test_compare_reports_bits_and_closeness(tmp_path):
    """`compare` and `reproduced` on a copy (bit-equal) and on a copy with one weight nudged by 1 ulp."""
    import shutil

    from safetensors.torch import load_file, save_file

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(files.MODELS_DIR / "tiny-sentiment", a)
    shutil.copytree(a, b)
    report = shipped.compare(a, b)
    assert report["bit_equal_tensors"] == report["tensors"] and report["max_abs_diff"] == 0.0
    assert shipped.reproduced(report)[0]
    w = load_file(b / "model.safetensors")
    name = next(iter(w))
    w[name] = w[name].clone()
    w[name].view(-1)[0] = torch.nextafter(w[name].view(-1)[0], torch.tensor(float("inf")))
    save_file(w, b / "model.safetensors", metadata={"format": "pt"})
    report = shipped.compare(a, b)
    assert report["bit_equal_tensors"] == report["tensors"] - 1 and 0 < report["max_abs_diff"] < 1e-6
    assert not shipped.reproduced(report)[0], "on the same kernels one flipped bit is a failure"
    other = {**report, "rebuilt_on": {"torch": "x", "cpu_capability": "AVX2"}}
    assert shipped.reproduced(other)[0], "on other kernels a close rebuild passes"
    worse = {**other, "final_train_loss": (0.5, 0.56)}
    assert not shipped.reproduced(worse)[0]
    assert not shipped.reproduced({**other, "heldout_accuracy": (0.998, 0.95)})[0], "a worse classifier fails"
    assert shipped.reproduced({**other, "heldout_accuracy": (0.998, 0.994)})[0]
    (b / "tokenizer.json").write_text("{}")
    assert shipped.compare(a, b)["files_differ"] == ["tokenizer.json"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_recipe_reproduces_the_shipped_model(kind, tmp_path):
    """Rebuild from the recipe on this machine; on the shipped weights' kernels every bit must come back.
    Measured on another CPU's kernels (AVX2 on this AVX-512 machine): see docs/teaching.md."""
    report = shipped.compare(files.MODELS_DIR / kind, shipped.rebuild(kind, tmp_path / kind))
    ok, why = shipped.reproduced(report)
    print(f"{kind}: {why}; largest weight difference {report['max_abs_diff']:.1e}")
    assert ok, why


def test_stored_reports_are_what_load_prints_and_what_the_docs_show(tmp_path, capsys):
    """`--load` prints the stored AVX2 reports (all reproduced), docs/teaching.md shows exactly those lines, and a
    failed report makes `--load` exit 1; a bad file is a one-line usage error (exit 2)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    stored = root / "benchmarks" / "results" / "shipped_avx2.json"
    assert shipped.main(["--load", str(stored)]) == 0
    out = capsys.readouterr().out
    reports = json.loads(stored.read_text())
    assert sorted(reports) == sorted(KINDS)
    assert all(r["rebuilt_on"]["cpu_capability"] == "AVX2" != r["shipped_on"]["cpu_capability"]
               for r in reports.values())
    docs = (root / "docs" / "teaching.md").read_text()
    block = docs.split("shipped_avx2.json` prints it")[1].split("```")[1].strip()
    assert block == out.strip(), "docs/teaching.md's block is not what --load prints"
    bad = {"tiny": {**reports["tiny"], "final_train_loss": [1.0, 2.0]}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert shipped.main(["--load", str(tmp_path / "bad.json")]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(SystemExit) as exit_:
        shipped.main(["--load", str(tmp_path / "junk.json")])
    assert exit_.value.code == 2 and "junk.json" in capsys.readouterr().err
