"""pgcore.widgets.grpo: the short GRPO runs behind notebook 05's panel (what the browser test expects of it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pgcore.widgets import grpo


@pytest.fixture(scope="module")
def policy():
    from pgcore.lm.models import load_policy

    return load_policy("tiny-arith")


def test_short_run_leaves_the_policy_alone_and_is_reproducible(policy):
    before = [p.detach().clone() for p in policy.model.parameters()]
    kw = dict(steps=4, eval_every=2, eval_problems=16, eval_samples=2, completions_per_step=32, seed=3)
    a, b = grpo.short_run(policy, **kw), grpo.short_run(policy, **kw)
    assert all(torch.equal(p, q) for p, q in zip(before, policy.model.parameters())), "the original is not trained"
    assert a["reward_mean"].tolist() == b["reward_mean"].tolist() and a["pass1"].tolist() == b["pass1"].tolist()
    assert a["eval_step"].tolist() == [0, 2, 4] and a["step"].tolist() == [1, 2, 3, 4]
    assert a["batch_size"] == 4 and 0 <= a["pass1_first"] <= 1
    text = grpo.format_readout(a)
    assert "group size G</b> = 8" in text and "start =" in text and "zero-spread groups (mean over the run) =" in text


def test_larger_groups_have_zero_spread_less_often(policy):
    """What the browser test checks on the panel: G 2 -> 8 (same completions per step) lowers the
    zero-spread fraction over the run; the start's pass@1 is the same measurement."""
    kw = dict(steps=10, eval_every=10, eval_problems=32, eval_samples=2, completions_per_step=128, seed=0)
    g2, g8 = grpo.short_run(policy, num_samples=2, **kw), grpo.short_run(policy, num_samples=8, **kw)
    assert g8["zero_spread_mean"] < g2["zero_spread_mean"] - 0.1, (g2["zero_spread_mean"], g8["zero_spread_mean"])
    assert g8["pass1_first"] == g2["pass1_first"]
    assert np.isfinite(g2["len_incorrect"]).any()


def test_short_run_rejects_bad_settings(policy):
    with pytest.raises(ValueError, match="loss_aggregation 'mean' unknown"):
        grpo.short_run(policy, loss_aggregation="mean", steps=1)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        grpo.short_run(policy, num_samples=1, steps=1)
