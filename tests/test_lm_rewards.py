"""pgcore.lm.rewards: tiny-sentiment is accurate, the positive label is picked by name (never by
index), single-output models reward their logit, and unusable labels/names are one-line ValueErrors."""
from __future__ import annotations

import json

import pytest
import torch

from pgcore.lm import models, rewards, tiny, tiny_sentiment

POSITIVE = ["I loved this movie, the acting was wonderful.", "The pasta was delicious and the staff was friendly.",
            "These headphones are great, worth every penny."]
NEGATIVE = ["This film was boring and far too long.", "The soup was cold and the waiter was rude.",
            "The charger broke after a week. Avoid it."]
TEXTS = POSITIVE + NEGATIVE


@pytest.fixture(scope="module")
def sentiment():
    return rewards.load_reward("tiny-sentiment")


@pytest.fixture(scope="module")
def sentiment_dir(sentiment):
    return tiny_sentiment.tiny_sentiment_dir()


def _variant(src, dst, num_labels, id2label, head_rows):
    """Save a copy of the classifier in `src` with a new head: row j = `head_rows(old_weight)[j]`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    old = AutoModelForSequenceClassification.from_pretrained(src)
    config = old.config
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else None
    config.id2label, config.label2id = id2label, {n: i for i, n in id2label.items()}
    new = AutoModelForSequenceClassification.from_config(config)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("score.")}
    new.load_state_dict(state, strict=False)
    with torch.no_grad():
        new.score.weight.copy_(head_rows(old.score.weight))
    new.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_tiny_sentiment_is_accurate(sentiment, sentiment_dir):
    build = json.loads((sentiment_dir / tiny.BUILD_FILE).read_text())
    assert build["heldout_accuracy"] > 0.9 and build["heldout_size"] >= 200
    r = sentiment.score(TEXTS)
    assert r.dtype == torch.float32 and r.device.type == "cpu" and r.shape == (len(TEXTS),)
    assert not r.requires_grad and ((r >= 0) & (r <= 1)).all()
    assert (r[: len(POSITIVE)] > 0.5).all() and (r[len(POSITIVE):] < 0.5).all(), r
    assert sentiment.label == "positive" and sentiment.name == "tiny-sentiment"


def test_tiny_sentiment_heldout_accuracy_recomputed(sentiment):
    """Re-derive the held-out split (same seed) and measure accuracy through the reward interface."""
    config = tiny_sentiment.SentimentConfig()
    rows = tiny.read_reviews()
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
    test = [rows[i] for i in perm[: int(len(rows) * config.holdout)]]
    p = sentiment.score([t for _, t in test])
    y = torch.tensor([label == "positive" for label, _ in test])
    assert ((p > 0.5) == y).float().mean() > 0.9


def test_tiny_policy_has_room_to_move_sentiment(sentiment):
    """The tiny policy's samples are scored both ways: reward can rise by far more than 0.3."""
    policy = models.load_policy("tiny")
    tok = policy.tokenizer
    enc = tok(models.load_prompts(), padding=True, return_tensors="pt").to(policy.model.device)
    torch.manual_seed(0)
    out = policy.model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=40)
    r = sentiment.score(tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert 0.25 < r.mean() < 0.75, r.mean()
    assert (r > 0.9).float().mean() > 0.15 and (r < 0.1).float().mean() > 0.15


def test_empty_text_scores_are_finite(sentiment):
    r = sentiment.score(["", "", "Great."])
    assert torch.isfinite(r).all() and r.shape == (3,)
    assert rewards.load_reward("vader").score([""]).tolist() == [0.0]


def test_positive_label_at_index_0_is_found_by_name(sentiment, sentiment_dir, tmp_path):
    swapped_dir = rewards.permute_labels(sentiment_dir, tmp_path / "swapped", [1, 0])
    swapped = rewards.load_reward(str(swapped_dir))
    assert swapped.model.config.id2label[0] == "positive" and swapped.index == 0 and swapped.label == "positive"
    original = sentiment.score(TEXTS)
    assert torch.allclose(swapped.score(TEXTS), original, atol=1e-5)
    # What code that assumes "index 1 is positive" would reward: the negative class.
    by_index = rewards.HFClassifierReward(swapped.model, swapped.tokenizer, name="swapped", label="negative")
    assert by_index.index == 1
    assert torch.allclose(by_index.score(TEXTS), 1 - original, atol=1e-5)
    assert (by_index.score(TEXTS)[: len(POSITIVE)] < 0.5).all()


def test_explicit_label(sentiment_dir):
    neg = rewards.load_reward(str(sentiment_dir), label="NEGATIVE")  # case-insensitive
    pos = rewards.load_reward(str(sentiment_dir), label="positive")
    assert neg.label == "negative" and torch.allclose(neg.score(TEXTS), 1 - pos.score(TEXTS), atol=1e-5)
    with pytest.raises(ValueError, match="'negative', 'positive'") as err:
        rewards.load_reward(str(sentiment_dir), label="joy")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="'negative', 'positive'"):
        rewards.load_reward("tiny-sentiment", label="LABEL_1")


def test_single_output_model_rewards_its_logit(sentiment, sentiment_dir, tmp_path):
    """A scalar head w_pos - w_neg: its logit is the log-odds of the two-label model."""
    path = _variant(sentiment_dir, tmp_path / "scalar", 1, {0: "score"}, lambda w: (w[1] - w[0])[None])
    scalar = rewards.load_reward(str(path))
    assert scalar.label == "score" and scalar.single_output
    r = scalar.score(TEXTS)
    assert ((r < 0) | (r > 1)).any()  # a logit, not a probability
    assert torch.allclose(torch.sigmoid(r), sentiment.score(TEXTS), atol=1e-5)


def test_multi_label_model_without_positive_label_asks_for_reward_label(sentiment_dir, tmp_path):
    labels = {0: "anger", 1: "joy", 2: "fear"}
    path = _variant(sentiment_dir, tmp_path / "emotions", 3, labels, lambda w: torch.stack([w[0], w[1], w[0]]))
    with pytest.raises(ValueError, match="--reward-label") as err:
        rewards.load_reward(str(path))
    assert "'anger', 'joy', 'fear'" in str(err.value) and "\n" not in str(err.value)
    joy = rewards.load_reward(str(path), label="joy")
    assert joy.index == 1 and joy.label == "joy"


@pytest.mark.parametrize("id2label, label, expected", [
    ({0: "NEGATIVE", 1: "POSITIVE"}, None, (1, "POSITIVE")),
    ({0: "pos", 1: "neg"}, None, (0, "pos")),
    ({0: "Negative", 1: "Neutral", 2: "Positive"}, None, (2, "Positive")),
    ({"0": "score"}, None, (0, "score")),
    ({0: "LABEL_0", 1: "LABEL_1"}, "LABEL_0", (0, "LABEL_0")),
])
def test_pick_label(id2label, label, expected):
    assert rewards.pick_label(id2label, label) == expected


def test_pick_label_never_falls_back_to_an_index():
    with pytest.raises(ValueError, match="--reward-label"):
        rewards.pick_label({0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="'pos', 'positive'"):
        rewards.pick_label({0: "pos", 1: "positive"})  # ambiguous


@pytest.mark.parametrize("name", ["no-such-org/no-such-reward", "not-a-reward", "./missing/dir"])
def test_unknown_reward_names_are_one_line_value_errors(name):
    with pytest.raises(ValueError) as err:
        rewards.load_reward(name)
    msg = str(err.value)
    assert "\n" not in msg and "tiny-sentiment" in msg and "vader" in msg


def test_vader():
    vader = rewards.load_reward("vader")
    r = vader.score(TEXTS)
    assert vader.label is None and r.dtype == torch.float32 and ((r >= -1) & (r <= 1)).all()
    assert r[: len(POSITIVE)].min() > r[len(POSITIVE):].max()
    with pytest.raises(ValueError, match="vader"):
        rewards.load_reward("vader", label="positive")


def test_every_reward_declares_the_trainer_protocol(sentiment):
    """The trainer reads these from any reward without probing: the base class gives neutral defaults."""
    base = rewards.RewardModel()
    assert (base.name, base.label, base.needs_prompts, base.verifier, base.evaluate) == ("reward", None, False,
                                                                                        False, None)
    assert base.default_prompts() is None and base.check_policy(None) is None and base.check_prompts(["x"]) is None
    vader, arithmetic = rewards.load_reward("vader"), rewards.load_reward("arithmetic")
    assert all(isinstance(r, rewards.RewardModel) for r in (sentiment, vader, arithmetic))
    assert sentiment.evaluate is None and vader.evaluate is None and not sentiment.verifier
    assert arithmetic.needs_prompts and arithmetic.verifier and callable(arithmetic.evaluate)
    assert (arithmetic.name, arithmetic.label) == ("arithmetic", None)
