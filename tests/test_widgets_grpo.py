"""pgcore.widgets.grpo: the group statistics behind notebook 05's panel (what the browser test expects of it)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pgcore.widgets import grpo


def test_group_stats_by_hand():
    """Two problems x 4 answers, G = 2: problem 0 (rate 1/4) splits into groups [1, 0] and [0, 0], problem 1
    (rate 3/4) into [1, 1] and [1, 0]. rloo's |A| for [1, 0] is (1, 1), so a group's mean |A| is 1 or 0."""
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 0]])
    s = grpo.group_stats(correct, 2, "rloo")
    assert s["groups"] == 4 and s["problems"] == 2 and s["zero_spread"] == 0.5
    cls = dict(zip(s["classes"], zip(s["count"], s["class_zero_spread"], s["weight"])))
    assert cls["medium-hard"] == (1, 0.5, 0.5) and cls["medium-easy"] == (1, 0.5, 0.5)
    assert cls["hard"][0] == 0 and math.isnan(cls["hard"][1])
    # group: (r - mean) / (std + eps) = +-0.5 / sqrt(1/2) for [1, 0] (sample std), 0 for [0, 0]
    g = grpo.group_stats(correct, 2, "group")
    assert g["weight"][1] == pytest.approx(0.5 * 2 ** -0.5, rel=1e-3)
    assert "group size G</b> = 2" in grpo.format_readout(s) and "zero-spread groups = 0.50" in grpo.format_readout(s)


def test_zero_spread_follows_the_exact_chance_and_falls_with_g():
    """On simulated answers with known rates, the measured zero-spread fraction is p^G + (1-p)^G, and raising G
    (what the browser test does on the panel) lowers it."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=400)
    correct = (rng.random((400, 64)) < p[:, None]).astype(int)
    exact = {G: float(np.mean(p ** G + (1 - p) ** G)) for G in (2, 4, 8, 16)}
    measured = {G: grpo.group_stats(correct, G, "group")["zero_spread"] for G in (2, 4, 8, 16)}
    for G in exact:
        assert abs(measured[G] - exact[G]) < 0.02, (G, measured[G], exact[G])
    assert measured[2] > measured[4] > measured[8] > measured[16]


def test_group_weighs_hard_and_easy_problems_up_relative_to_rloo():
    """Dr. GRPO's difficulty bias, as the panel shows it: group's weight relative to rloo's is larger at the
    extremes than in the middle."""
    rng = np.random.default_rng(1)
    p = np.repeat([0.1, 0.5, 0.9], 200)
    correct = (rng.random((600, 64)) < p[:, None]).astype(int)
    g, r = grpo.group_stats(correct, 8, "group"), grpo.group_stats(correct, 8, "rloo")
    ratio = dict(zip(g["classes"], np.array(g["weight"]) / np.array(r["weight"])))
    assert ratio["hard"] > 1.1 * ratio["medium"] and ratio["easy"] > 1.1 * ratio["medium"]


def test_group_stats_rejects_bad_settings():
    correct = np.zeros((3, 8))
    with pytest.raises(ValueError, match="num_samples 3 must be >= 2 and divide the 8"):
        grpo.group_stats(correct, 3)
    with pytest.raises(ValueError, match="advantage 'grpo' unknown"):
        grpo.group_stats(correct, 2, "grpo")
    with pytest.raises(ValueError, match="problems, samples"):
        grpo.group_stats(np.zeros(8), 2)


def test_the_panel_builds_and_redraws():
    pytest.importorskip("ipywidgets")
    rng = np.random.default_rng(2)
    box = grpo.grpo_panel((rng.random((50, 64)) < 0.5).astype(int), num_samples=2)
    slider, readout = box.children[0], box.children[2]
    assert slider.description == "group size G" and list(slider.options) == [2, 4, 8, 16, 32]
    before = readout.value
    slider.value = 8
    assert "G</b> = 8" in readout.value and readout.value != before
