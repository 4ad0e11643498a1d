"""pgcore.widgets.reinforce: notebook 02's short runs, its panel, and the cart-and-pole pictures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pgcore.policies import MLPPolicy  # noqa: E402
from pgcore.widgets import reinforce as wr  # noqa: E402


def test_short_run_is_reproducible_and_its_curves_line_up():
    a = wr.short_run(lr=1e-2, budget=2_000, seed=1)
    b = wr.short_run(lr=1e-2, budget=2_000, seed=1)
    for key in ("env_steps", "return_mean", "grad_norm", "entropy"):
        assert np.array_equal(a[key], b[key]), key
        assert len(a[key]) == a["updates"], key
    assert (np.diff(a["env_steps"]) > 0).all() and a["env_steps"][-1] >= 2_000
    assert a["first_return"] == a["return_mean"][0]
    assert a["final_return"] == pytest.approx(a["return_mean"][-3:].mean())
    assert a["max_grad_norm"] == a["grad_norm"].max()
    assert not np.array_equal(a["return_mean"], wr.short_run(lr=1e-2, budget=2_000, seed=2)["return_mean"])


def test_a_large_step_makes_the_policy_deterministic():
    """What the browser test checks on the panel: moving lr from 0.01 to 0.1 lowers the final entropy."""
    small = wr.short_run(lr=1e-2)
    large = wr.short_run(lr=1e-1)
    assert large["entropy"][-1] < small["entropy"][-1] - 0.1
    assert small["entropy"][0] == pytest.approx(np.log(2), abs=0.01), "the initial policy is nearly uniform"


def test_without_a_baseline_every_cartpole_weight_is_positive_and_the_gradient_larger():
    with_baseline = wr.short_run(baseline=True, budget=3_000)
    without = wr.short_run(baseline=False, budget=3_000)
    assert without["max_grad_norm"] > 2 * with_baseline["max_grad_norm"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(episodes=1), "episodes must be an int >= 2"),
    (dict(episodes=True), "episodes must be an int >= 2"),
    (dict(baseline="yes"), "baseline must be True or False"),
    (dict(lr=0.0), "lr"),
    (dict(gamma=1.5), "gamma"),
])
def test_short_run_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wr.short_run(**kwargs)


def test_the_panel_reruns_when_its_first_control_moves():
    panel = wr.reinforce_panel(budget=1_500)
    assert "pg-main-panel" in panel._dom_classes
    lr_slider, readout = panel.children[0], panel.children[4]
    assert "learning rate" in lr_slider.description and "pg-readout" in readout._dom_classes
    before = readout.value
    assert "<b>lr</b> = 0.01 " in before
    lr_slider.value = 0.1
    assert readout.value != before and "<b>lr</b> = 0.1 " in readout.value
    plt.close("all")


def test_cartpole_episode_and_its_frames():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, (8,))
    states = wr.cartpole_episode(policy, seed=3)
    assert states.ndim == 2 and states.shape[1] == 4 and 2 <= len(states) <= 501
    assert np.array_equal(states, wr.cartpole_episode(policy, seed=3)), "seeded: the same episode"
    assert abs(states[-1, 2]) > 0.2 or abs(states[-1, 0]) > 2.4 or len(states) == 501, "it ends by a fall or the limit"
    axes = wr.plot_cartpole_frames(states, num_frames=4)
    assert len(axes) == 4
    with pytest.raises(ValueError, match="states must be shaped"):
        wr.plot_cartpole_frames(states[:, :3])
    with pytest.raises(ValueError, match="num_frames"):
        wr.plot_cartpole_frames(states, num_frames=0)
    plt.close("all")
