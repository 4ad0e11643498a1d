"""Notebook 02's panel and pictures: short REINFORCE runs on CartPole-v1, live; the cart and pole drawn.

`short_run` is the plain function (tests call it): a few seconds of `pgcore.reinforce.train` with
a given learning rate, batch of episodes, discount and baseline, returning the learning curve and
the gradient norm of every update. `reinforce_panel` wraps it in ipywidgets: a learning-rate
slider (log scale, the first control), the batch size, gamma and a baseline switch; two plots
(return and gradient norm against env steps) and a readout with the run's numbers.

`cartpole_episode` and `plot_cartpole_frames` draw what a policy does: the cart and pole at a few
moments of one episode, from the state alone (no pygame, no display).

Introduced in notebooks/02_reinforce_cartpole.ipynb.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from .. import reinforce as _reinforce
from .._checks import check_int, is_int
from ._panel import panel, readout_and_output

__all__ = ["short_run", "format_readout", "reinforce_panel", "cartpole_episode", "plot_cartpole_frames"]


def short_run(
    lr: float = 1e-2,
    episodes: int = 8,
    gamma: float = 0.99,
    baseline: bool = True,
    seed: int = 0,
    budget: int = 6_000,
    env: str = "CartPole-v1",
    hidden_sizes: tuple[int, ...] = (32,),
) -> dict:
    """A short REINFORCE run (reward-to-go, no advantage normalization) and its per-update curves.

    Args:
        lr: Adam learning rate of the policy (> 0).
        episodes: episodes per update (the batch; one per parallel env copy), >= 2.
        gamma: discount in (0, 1] of the reward-to-go.
        baseline: subtract the batch mean of the reward-to-go (True) or use it raw (False).
            Advantages are *not* normalized here, so the switch shows what the baseline alone does.
        seed: seeds the init, the envs and the action samples: same arguments, same numbers.
        budget: env steps of training (>= 1); a few thousand run in about a second.
        env: a discrete-action Gymnasium id.
        hidden_sizes: hidden widths of the policy MLP.

    Returns:
        dict with the arguments and
          "env_steps" (U,) int array: env steps used after each of the U updates,
          "return_mean" (U,) mean undiscounted return of each update's batch,
          "grad_norm" (U,) global norm of each update's policy gradient (before the step),
          "entropy" (U,) mean policy entropy (nats) on each batch,
          "first_return", "final_return": mean return of the first batch / of the last 3 batches,
          "max_grad_norm": the largest gradient norm of the run, "updates": U.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    if not is_int(episodes) or episodes < 2:
        raise ValueError(f"episodes must be an int >= 2 (a batch mean needs two), got {episodes!r}")
    if not isinstance(baseline, (bool, np.bool_)):
        raise ValueError(f"baseline must be True or False, got {baseline!r}")
    config = _reinforce.ReinforceConfig(
        lr=float(lr), gamma=float(gamma), num_envs=int(episodes), episodes_per_env=1,
        max_env_steps=int(budget) if is_int(budget) else budget,
        hidden_sizes=tuple(hidden_sizes), weighting="reward_to_go",
        baseline="mean" if baseline else "none", normalize_adv=False, early_stop=False,
    )  # validates lr, gamma, budget
    result = _reinforce.train(env, seed=seed, config=config, progress=False)
    hist = result.history

    def col(key, dtype=float):
        return np.array([h[key] for h in hist], dtype=dtype)

    ret = col("return_mean")
    grad_norm = col("grad_norm")
    return {
        "lr": float(lr), "episodes": int(episodes), "gamma": float(gamma), "baseline": bool(baseline),
        "seed": int(seed), "budget": int(budget), "env": env,
        "env_steps": col("env_steps", np.int64),
        "return_mean": ret,
        "grad_norm": grad_norm,
        "entropy": col("entropy"),
        "first_return": float(ret[0]),
        "final_return": float(ret[-3:].mean()),
        "max_grad_norm": float(grad_norm.max()),
        "updates": len(hist),
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `short_run`."""
    return (
        f"<b>lr</b> = {stats['lr']:.4g} &nbsp;|&nbsp; {stats['updates']} updates of {stats['episodes']} episodes, "
        f"{stats['env_steps'][-1]} env steps &nbsp;|&nbsp; "
        f"return: first batch = {stats['first_return']:.1f}, final = {stats['final_return']:.1f} &nbsp;|&nbsp; "
        f"max grad norm = {stats['max_grad_norm']:.3f} &nbsp;|&nbsp; "
        f"final entropy = {stats['entropy'][-1]:.3f} nats (uniform: {math.log(2):.3f})"
    )


def reinforce_panel(seed: int = 0, budget: int = 6_000, lr: float = 1e-2, episodes: int = 8, gamma: float = 0.99,
                    baseline: bool = True):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel").

    First control: the learning rate, a log slider from 1e-4 to 1 (steps of 10^0.25). Then the
    batch of episodes per update, gamma and the baseline switch. Every change runs `short_run`
    (about a second for the default budget) and redraws the return and gradient-norm curves and the
    readout (class "pg-readout").

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    lr_slider = widgets.FloatLogSlider(
        value=lr, base=10, min=-4, max=0, step=0.25, description="learning rate lr", readout_format=".2g",
        continuous_update=False, style=style, layout=layout,
    )
    batch = widgets.SelectionSlider(
        options=[2, 4, 8, 16, 32], value=episodes if episodes in (2, 4, 8, 16, 32) else 8,
        description="episodes per update", continuous_update=False, style=style, layout=layout,
    )
    gamma_slider = widgets.SelectionSlider(
        options=[0.9, 0.95, 0.98, 0.99, 0.995, 1.0], value=gamma if gamma in (0.9, 0.95, 0.98, 0.99, 0.995, 1.0) else 0.99,
        description="discount γ", continuous_update=False, style=style, layout=layout,
    )
    baseline_box = widgets.Checkbox(value=baseline, description="baseline (batch mean)", style=style, layout=layout)
    readout, out = readout_and_output()

    def update(*_):
        stats = short_run(lr=lr_slider.value, episodes=batch.value, gamma=gamma_slider.value,
                          baseline=baseline_box.value, seed=seed, budget=budget)
        readout.value = format_readout(stats)
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
            axes[0].plot(stats["env_steps"], stats["return_mean"], "o-", markersize=3)
            axes[0].set(xlabel="env steps", ylabel="mean return of the batch", ylim=(0, 510),
                        title=f"CartPole-v1, lr = {stats['lr']:.2g}")
            axes[1].semilogy(stats["env_steps"], stats["grad_norm"], "o-", markersize=3, color="C3")
            axes[1].set(xlabel="env steps", ylabel="‖∇ loss‖ (before the step)", title="gradient norm per update")
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    controls = [lr_slider, batch, gamma_slider, baseline_box]
    return panel(controls, update, readout, out)


def cartpole_episode(policy, seed: int = 0, max_steps: int = 500, greedy: bool = False) -> np.ndarray:
    """The states of one CartPole-v1 episode played by `policy` on a fresh Gymnasium env.

    Args:
        policy: module, policy(obs (B, 4)) -> Categorical.
        seed: seeds the env's reset and the action samples.
        max_steps: cap on the number of steps (CartPole-v1 truncates at 500 anyway).
        greedy: take the most probable action instead of sampling.

    Returns:
        (T + 1, 4) float array: cart position x, cart velocity, pole angle theta (radians, 0 =
        upright, > 0 leaning right), pole angular velocity; row 0 is the reset state, row T the
        state after the last step.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    env = gym.make("CartPole-v1")
    generator = torch.Generator().manual_seed(int(seed))
    try:
        obs, _ = env.reset(seed=int(seed))
        states = [obs]
        for _ in range(max_steps):
            batch = np.asarray(obs, dtype=np.float32)[None]
            if greedy:
                with torch.no_grad():
                    act = int(policy(torch.as_tensor(batch)).probs.argmax(-1)[0])
            else:
                act = int(_reinforce.sample_actions(policy, batch, generator)[0][0])
            obs, _, terminated, truncated, _ = env.step(act)
            states.append(obs)
            if terminated or truncated:
                break
    finally:
        env.close()
    return np.asarray(states, dtype=np.float64)


def plot_cartpole_frames(states: np.ndarray, num_frames: int = 6, axes=None, label: str | None = None,
                         color="C0"):
    """Draw the cart and pole at `num_frames` evenly spaced moments of an episode, one small axes each.

    Geometry of Gymnasium's CartPole-v1: the track ends at x = +-2.4 (the episode ends there), the
    pole is 1.0 long (its half-length is 0.5) and the episode ends when it leans more than 12 degrees.

    Args:
        states: (T + 1, 4) from `cartpole_episode`.
        num_frames: frames drawn (the first and the last state included).
        axes: a sequence of `num_frames` matplotlib axes; None makes a new figure with one row.
        label: text put left of the first frame (e.g. "before training").

    Returns:
        The axes.

    Introduced in notebooks/02_reinforce_cartpole.ipynb.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    states = np.asarray(states, dtype=float)
    if states.ndim != 2 or states.shape[1] != 4 or len(states) < 1:
        raise ValueError(f"states must be shaped (T + 1, 4), got {states.shape}")
    num_frames = check_int(num_frames, "num_frames")
    if axes is None:
        _, axes = plt.subplots(1, num_frames, figsize=(2.0 * num_frames, 1.6))
    axes = np.atleast_1d(axes)
    if len(axes) != num_frames:
        raise ValueError(f"got {len(axes)} axes for num_frames={num_frames}")
    steps = np.unique(np.linspace(0, len(states) - 1, num_frames).round().astype(int))
    cart_w, cart_h, pole_len, limit = 0.5, 0.3, 1.0, 2.4
    for k, ax in enumerate(axes):
        ax.set_xlim(-limit - 0.3, limit + 0.3)
        ax.set_ylim(-0.4, 1.4)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(steps):
            ax.axis("off")
            continue
        x, _, theta, _ = states[steps[k]]
        ax.axhline(0.0, color="0.6", linewidth=1)
        for end in (-limit, limit):
            ax.axvline(end, color="0.8", linewidth=1, linestyle=":")
        ax.add_patch(Rectangle((x - cart_w / 2, -cart_h / 2), cart_w, cart_h, color="0.3"))
        ax.plot([x, x + pole_len * math.sin(theta)], [0.0, pole_len * math.cos(theta)], color=color,
                linewidth=3, solid_capstyle="round")
        ax.set_title(f"t = {steps[k]}", fontsize=9)
    if label:
        axes[0].set_ylabel(label, fontsize=9)
    return axes
