"""pgcore.widgets.reuse: the statistics behind notebook 06's panel on a real tiny-arith batch (what the browser
test expects of it): ratio 1 at the first update, more updates move the policy further, deterministic, equal to
`algorithm.reuse_batch` called directly."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from pgcore.lm import algorithm, arith, models, rewards as lm_rewards
from pgcore.widgets import reuse


@pytest.fixture(scope="module")
def arith_batch():
    """16 training problems x 4 samples of tiny-arith, as notebook 05 samples its batches."""
    policy, reward = models.load_policy("tiny-arith"), lm_rewards.load_reward("arithmetic")
    prompts = models.format_prompts(policy, [arith.make_prompt(a, b) for a, b in arith.problems("train", 200)])
    args = algorithm.Args(batch_size=16, num_samples=4, max_new_tokens=arith.MAX_NEW_TOKENS, advantage="group",
                          kl_coef=0.0, seed=0)
    batch = algorithm.sample(policy, prompts, args, step=1)
    return policy, batch, algorithm.score(reward, batch)


def _number(label: str, text: str) -> float:
    """As tests/test_browser.py reads a readout: the number after `label`, in the text without HTML tags."""
    text = re.sub(r"<[^>]+>", "", text).replace("&nbsp;", " ")
    m = re.search(re.escape(label) + r"\s*([+-]?\d+(?:\.\d+)?)", text)
    assert m, f"readout has no number after {label!r}: {text!r}"
    return float(m.group(1))


def test_the_first_update_is_on_policy_and_nothing_is_clipped(arith_batch):
    policy, batch, rewards = arith_batch
    assert 0 < rewards.mean() < 1, "the batch has right and wrong answers"
    for kw in ({}, dict(ratio_level="sequence"), dict(policy_loss="cispo")):
        s = reuse.reuse_stats(policy, batch, rewards, updates=1, **kw)
        (first,) = s["per_update"]
        assert first["ratio_min"] == first["ratio_max"] == 1.0 and first["kl_old"] == 0.0
        assert s["clipped_last"] == 0.0 and 0 < first["grad_token_frac"] <= 1
        assert s["kl_after"] > 0, "one update moves the policy"
    s = reuse.reuse_stats(policy, batch, rewards, updates=4)
    assert s["clip_low"][0] == s["clip_high"][0] == 0.0 and s["kl_before"][0] == 0.0
    assert s["ratio_min"][-1] < 1.0 < s["ratio_max"][-1]


def test_more_updates_move_the_policy_further_and_clip_more(arith_batch):
    """What the browser test checks on the panel: moving mu right raises KL(pi_old || pi) after, and from mu = 1
    (nothing clipped) the clipped share rises."""
    policy, batch, rewards = arith_batch
    runs = {mu: reuse.reuse_stats(policy, batch, rewards, updates=mu) for mu in (1, 2, 4)}
    kl = [runs[mu]["kl_after"] for mu in (1, 2, 4)]
    assert kl[0] < kl[1] < kl[2], kl
    assert runs[1]["clipped_last"] == 0 < runs[2]["clipped_last"]
    # the same start and the same first update: KL after mu updates is what update mu + 1 sees before it
    assert runs[2]["kl_before"][1] == pytest.approx(runs[1]["kl_after"], rel=1e-5)
    assert runs[4]["kl_before"][:2] == pytest.approx(runs[2]["kl_before"], rel=1e-5)
    assert runs[4]["dlogp_rewarded"] > runs[4]["dlogp_unrewarded"], "the update favours the rewarded completions"


def test_same_controls_same_numbers_and_the_policy_is_left_alone(arith_batch):
    policy, batch, rewards = arith_batch
    before = [p.detach().clone() for p in policy.model.parameters()]
    kw = dict(updates=2, clip_eps_high=0.28, ratio_level="sequence", policy_loss="ppo")
    a, b = reuse.reuse_stats(policy, batch, rewards, **kw), reuse.reuse_stats(policy, batch, rewards, **kw)
    assert all(torch.equal(p, q) for p, q in zip(before, policy.model.parameters()))
    assert a["per_update"] == b["per_update"] and a["after"] == b["after"]
    assert np.array_equal(a["ratio_after"], b["ratio_after"]) and a["ratio_after"].shape == (len(batch),)
    assert reuse.format_readout(a) == reuse.format_readout(b)


def test_the_stats_are_reuse_batchs_own(arith_batch):
    policy, batch, rewards = arith_batch
    s = reuse.reuse_stats(policy, batch, rewards, updates=3, clip_eps_high=0.3, policy_loss="cispo", lr=1e-3)
    args = algorithm.Args(batch_size=16, num_samples=4, max_new_tokens=batch.completion_ids.shape[1],
                          advantage="group", kl_coef=0.0, updates_per_batch=3, policy_loss="cispo",
                          clip_eps_high=0.3, lr=1e-3)
    model = copy.deepcopy(policy.model).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    rows, _ = algorithm.reuse_batch(model, policy.model, optimizer, batch, rewards, args)
    assert rows == s["per_update"]
    assert s["kl_before"].tolist() == [r["kl_old"] for r in rows] and s["clipped_last"] == rows[-1]["clip_high_frac"]
    with torch.no_grad():
        old = algorithm.per_token_logps(policy.model, batch)
        log_ratio = algorithm.per_token_logps(model, batch) - old
    on = batch.completion_mask.bool()
    assert s["kl_after"] == pytest.approx((log_ratio.exp() - 1 - log_ratio)[on].mean().item(), rel=1e-6)
    assert np.allclose(s["ratio_after"], log_ratio.exp()[on].numpy())
    assert s["tokens"] == on.sum().item() and s["rewarded"] == (rewards > 0).sum().item()


def test_bad_settings_raise_one_line(arith_batch):
    policy, batch, rewards = arith_batch
    with pytest.raises(ValueError, match=r"rewards must have shape \(64,\)"):
        reuse.reuse_stats(policy, batch, rewards[:10])
    with pytest.raises(ValueError, match="updates_per_batch must be an int >= 1"):
        reuse.reuse_stats(policy, batch, rewards, updates=0)
    with pytest.raises(ValueError, match="clip_eps_high 0.1 is below clip_eps 0.2"):
        reuse.reuse_stats(policy, batch, rewards, clip_eps_high=0.1)
    with pytest.raises(ValueError, match="ratio_level 'seq' unknown"):
        reuse.reuse_stats(policy, batch, rewards, ratio_level="seq")


def test_the_panel_builds_and_its_readout_parses(arith_batch):
    pytest.importorskip("ipywidgets")
    policy, batch, rewards = arith_batch
    box = reuse.reuse_panel(policy, batch, rewards)
    slider, readout = box.children[0], box.children[4]
    assert "pg-main-panel" in box._dom_classes and "pg-readout" in readout._dom_classes
    assert slider.description == "updates per batch μ" and list(slider.options) == [1, 2, 4, 8]
    before = readout.value
    assert _number("updates μ =", before) == 1 and _number("clipped (last update) =", before) == 0
    slider.value = 4
    after = readout.value
    assert _number("updates μ =", after) == 4 and _number("on", after) == len(batch)
    assert _number("KL(π_old‖π) after =", after) > _number("KL(π_old‖π) after =", before)
    assert _number("clipped (last update) =", after) > 0
    for label in ("tokens with gradient (last update) =", "rewarded =", "unrewarded =", "max ="):
        _number(label, after)
    assert "<table" in box.children[6].value and after.count("<b>") == 2


def test_a_runs_optimizer_state_is_loaded_as_a_copy(arith_batch):
    """optimizer_state: the updates are `reuse_batch`'s with an AdamW holding those moments, the state passed in is
    not changed, and a warm AdamW moves the policy less in one update than a fresh one (whose first step moves
    every weight by about lr)."""
    policy, batch, rewards = arith_batch
    warm = copy.deepcopy(policy.model)
    opt = torch.optim.AdamW(warm.parameters(), lr=5e-4, weight_decay=0.0)
    args = algorithm.Args(batch_size=16, num_samples=4, max_new_tokens=batch.completion_ids.shape[1],
                          advantage="group", kl_coef=0.0, lr=5e-4, policy_loss="ppo", updates_per_batch=3)
    algorithm.reuse_batch(warm, policy.model, opt, batch, rewards, args)  # some history for the moments
    state = copy.deepcopy(opt.state_dict())
    kept = copy.deepcopy(state)
    s = reuse.reuse_stats(policy, batch, rewards, updates=3, optimizer_state=state)
    assert all(torch.equal(a["exp_avg"], b["exp_avg"]) for a, b in zip(state["state"].values(), kept["state"].values()))
    twin = copy.deepcopy(policy.model)
    opt2 = torch.optim.AdamW(twin.parameters(), lr=5e-4, weight_decay=0.0)
    opt2.load_state_dict(copy.deepcopy(kept))
    rows, _ = algorithm.reuse_batch(twin, policy.model, opt2, batch, rewards, args)
    assert [r["kl_old"] for r in rows] == pytest.approx(list(s["kl_before"]), rel=1e-5)
    fresh = reuse.reuse_stats(policy, batch, rewards, updates=1)
    assert reuse.reuse_stats(policy, batch, rewards, updates=1, optimizer_state=state)["kl_after"] < fresh["kl_after"]
