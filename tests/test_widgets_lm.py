"""pgcore.widgets.lm: the text statistics of notebook 04 and the short runs behind its panel."""
from __future__ import annotations

import pytest
import torch

from pgcore.widgets import lm as wlm


def test_text_stats_counts_distinct_and_repeated_words_by_hand():
    texts = ["Great great great film", "a fine film"]
    s = wlm.text_stats(texts)
    # words: great great great film | a fine film -> 7 words, 4 distinct (great, film, a, fine)
    assert s["distinct1"] == pytest.approx(4 / 7)
    # bigrams: (great great) x2, (great film), (a fine), (fine film) -> 5 bigrams, 4 distinct
    assert s["distinct_n"] == pytest.approx(4 / 5)
    # repeats within a text: "great" twice more in the first; "film" once per text does not count
    assert s["repeated"] == pytest.approx(2 / 7)
    assert s["words"] == pytest.approx(3.5)
    assert wlm.text_stats(["as as as as"])["distinct_n"] == pytest.approx(1 / 3)


def test_text_stats_edge_cases_and_bad_n():
    assert wlm.text_stats([]) == {"distinct1": 0.0, "distinct_n": 0.0, "repeated": 0.0, "words": 0.0, "n": 2}
    assert wlm.text_stats(["one"])["distinct_n"] == 0.0  # no bigram at all
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        wlm.text_stats(["a b"], n=0)


@pytest.fixture(scope="module")
def tiny():
    from pgcore.lm.models import load_policy
    from pgcore.lm.rewards import load_reward

    return load_policy("tiny"), load_reward("tiny-sentiment")


def test_short_run_leaves_the_policy_alone_and_is_reproducible(tiny):
    policy, reward = tiny
    before = [p.detach().clone() for p in policy.model.parameters()]
    a = wlm.short_run(policy, reward, steps=4, seed=3)
    b = wlm.short_run(policy, reward, steps=4, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(before, policy.model.parameters())), "the original is not trained"
    assert not all(torch.equal(p, q) for p, q in zip(before, a["policy"].model.parameters())), "the copy is"
    assert a["reward_mean"].tolist() == b["reward_mean"].tolist() and a["samples"] == b["samples"]
    assert a["step"].tolist() == [1, 2, 3, 4] and len(a["samples"]) == 4 * len(wlm.SAMPLE_PROMPTS)
    assert "KL coefficient</b> = 0.00" in wlm.format_readout(a)


def test_the_kl_penalty_keeps_the_short_run_closer_to_the_start(tiny):
    """What the browser test checks on the panel: raising beta from 0 lowers the KL to the start."""
    policy, reward = tiny
    free = wlm.short_run(policy, reward, kl_coef=0.0, lr=1e-3, steps=25)
    penalized = wlm.short_run(policy, reward, kl_coef=0.3, lr=1e-3, steps=25)
    assert penalized["kl_last"] < free["kl_last"] / 1.5
    assert free["reward_last"] > free["reward_first"], "the short run learns"


def test_short_run_rejects_bad_settings(tiny):
    policy, reward = tiny
    with pytest.raises(ValueError, match="advantage 'best' unknown"):
        wlm.short_run(policy, reward, advantage="best", steps=1)
    with pytest.raises(ValueError, match="kl_coef must be a number >= 0"):
        wlm.short_run(policy, reward, kl_coef=-1.0, steps=1)
