"""Reward models that read the prompt, built offline from tiny configs: a cross-encoder scores the (prompt,
completion) text pair, a chat reward model (scalar head) the conversation through its chat template; chosen from
the model's config, overridden by `--reward-input`. The course's tiny-sentiment still reads the completion alone."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pgcore.engine.cli import main
from pgcore.lm import rewards

WORDS = "the movie was great good bad film food a of and i it is this what write review 1 2 3 + = 4 5 6 7 8 9 0".split()
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
PROMPTS = ["write a review", "what is 1+2="]
TEXTS = ["the movie was great", "3"]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    """A 1-layer BERT with a scalar head and a WordPiece tokenizer (segment ids: a pair encoder)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("cross")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory) -> Path:
    """A 2-layer Llama with a scalar head; its tokenizer has a chat template."""
    from lm_fakes import make_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("chat")
    tok = make_tokenizer()
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _logits(path: Path, **enc) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(**enc).logits[:, 0]


def test_a_cross_encoder_reads_the_prompt_and_completion_as_a_pair(cross_encoder):
    from transformers import AutoTokenizer

    rm = rewards.load_reward(str(cross_encoder), device="cpu")
    assert rm.reward_input == "pair" and rm.needs_prompts and rm.single_output
    tok = AutoTokenizer.from_pretrained(cross_encoder)
    expected = _logits(cross_encoder, **tok(PROMPTS, TEXTS, padding=True, return_tensors="pt"))
    assert torch.allclose(rm.score(TEXTS, prompts=PROMPTS), expected, atol=1e-6)
    other = rm.score(TEXTS, prompts=["the food was bad", "what is 4+5="])
    assert not torch.allclose(other, expected), "the prompt changes the score"
    with pytest.raises(ValueError, match="reads the prompt"):
        rm.score(TEXTS)
    alone = rewards.load_reward(str(cross_encoder), device="cpu", reward_input="completion")
    assert not alone.needs_prompts
    assert torch.allclose(alone.score(TEXTS), _logits(cross_encoder, **tok(TEXTS, padding=True, return_tensors="pt")),
                          atol=1e-6)


def test_a_chat_reward_model_reads_the_conversation_through_its_template(chat_rm):
    from transformers import AutoTokenizer

    rm = rewards.load_reward(str(chat_rm), device="cpu")
    assert rm.reward_input == "chat" and rm.needs_prompts
    tok = AutoTokenizer.from_pretrained(chat_rm)
    chats = [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": t}],
                                     tokenize=False) for p, t in zip(PROMPTS, TEXTS)]
    assert chats[0] == "<|user|>write a review<|endoftext|><|assistant|>the movie was great<|endoftext|>"
    scores = rm.score(TEXTS, prompts=PROMPTS)
    one_by_one = torch.cat([_logits(chat_rm, **tok([c], add_special_tokens=False, return_tensors="pt")) for c in chats])
    assert torch.allclose(scores, one_by_one, atol=1e-5)  # padding does not change a row's score
    system = [{"role": "system", "content": "be kind"}, {"role": "user", "content": PROMPTS[0]}]
    assert not torch.allclose(rm.score(TEXTS[:1], prompts=[system]), scores[:1]), "a chat prompt is read whole"


def test_the_course_sentiment_model_still_reads_the_completion_alone():
    rm = rewards.load_reward("tiny-sentiment")
    assert rm.reward_input == "completion" and not rm.needs_prompts
    with pytest.raises(ValueError, match="no chat template"):
        rewards.load_reward("tiny-sentiment", reward_input="chat")
    with pytest.raises(ValueError, match="not a classifier"):
        rewards.load_reward("vader", reward_input="pair")


def places(root: Path) -> list[str]:
    return ["--output-dir", str(root / "out"), "--checkpoint-dir", str(root / "ckpt"), "--model-dir", str(root / "m")]


RUN = ["--model", "tiny-arith", "--max-new-tokens", "4", "--batch-size", "2", "--num-samples", "2", "--steps", "2",
       "--save-every", "0", "--quiet"]


def test_the_command_line_trains_against_prompt_reading_reward_models(cross_encoder, chat_rm, tmp_path, capsys):
    import pandas as pd

    (tmp_path / "p.txt").write_text("1+2=\n4+5=\n")
    code = main([*RUN, "--prompts", str(tmp_path / "p.txt"), "--reward-model", str(cross_encoder), "--reward-model",
                 str(chat_rm), "--reward-weights", "1", "-1", *places(tmp_path)])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(tmp_path / "out" / "training_metrics.csv")
    names = [c for c in df.columns if c.startswith("reward/") and c.endswith("_mean")]
    assert len(names) == 2 and df[names].notna().all().all()
    assert df["reward_mean"].tolist() == pytest.approx((df[names[0]] - df[names[1]]).tolist(), abs=1e-5)
    with pytest.raises(SystemExit) as e:  # the override, refused where the model cannot do it
        main([*RUN, "--reward-model", str(cross_encoder), "--reward-input", "chat", *places(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no chat template" in err and len(err.strip().splitlines()) == 1
