"""Notebook 04's measurements and panel: short LM policy-gradient runs, live, and how text degenerates.

`text_stats` measures what a reward model does not: how repetitive and how varied a set of
completions is (distinct-n, repeated words, length). `short_run` is the plain function (tests call
it): a few seconds of `pgcore.engine.trainer.train` on a *copy* of a policy with a given KL coefficient,
learning rate, advantage and temperature, returning the curves, samples and their text statistics.
`lm_panel` wraps it in ipywidgets: a KL-coefficient slider (the first control), the learning rate,
the advantage and the temperature; live reward and KL curves; a readout; and a prompt box that
samples from the policy the last run trained.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import copy
import html
from collections import Counter

import numpy as np
from ._panel import panel, readout_and_output

__all__ = ["text_stats", "short_run", "format_readout", "lm_panel", "KL_CHOICES", "SAMPLE_PROMPTS"]

KL_CHOICES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
"""The KL-coefficient slider's stops."""
SAMPLE_PROMPTS = ("The movie was", "I thought the plot", "This film", "Honestly, the acting")
"""Prompts whose completions `short_run` samples after training (fixed, so runs compare)."""


def text_stats(texts: list[str], n: int = 2) -> dict:
    """How varied and how repetitive a set of texts is, on whitespace words (lower-cased).

    Args:
        texts: completions.
        n: the n of distinct-n.

    Returns:
        dict with
          "distinct1", "distinct_n": unique words / all words, unique n-grams / all n-grams, over all
              texts together (Li et al. 2016); 1 = nothing repeats, near 0 = the same words over and over;
          "repeated": fraction of words equal to an earlier word of the *same* text (within-text repetition);
          "words": mean number of words per text;
          "n": n.
        Empty input (or no n-grams) gives 0.0 for the ratios.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    words = [t.lower().split() for t in texts]
    unigrams = [w for ws in words for w in ws]
    ngrams = [tuple(ws[i:i + n]) for ws in words for i in range(len(ws) - n + 1)]
    repeated = sum(sum(c - 1 for c in Counter(ws).values()) for ws in words)
    return {
        "distinct1": len(set(unigrams)) / len(unigrams) if unigrams else 0.0,
        "distinct_n": len(set(ngrams)) / len(ngrams) if ngrams else 0.0,
        "repeated": repeated / len(unigrams) if unigrams else 0.0,
        "words": float(np.mean([len(ws) for ws in words])) if words else 0.0,
        "n": n,
    }


def short_run(
    policy,
    reward,
    *,
    kl_coef: float = 0.0,
    lr: float = 1e-3,
    advantage: str = "rloo",
    temperature: float = 1.0,
    steps: int = 25,
    batch_size: int = 4,
    num_samples: int = 4,
    max_new_tokens: int = 12,
    seed: int = 0,
    prompts: list[str] | None = None,
    sample_prompts=SAMPLE_PROMPTS,
) -> dict:
    """A short policy-gradient run on a copy of `policy` (the original is left untouched).

    Args:
        policy: a `pgcore.lm.Policy` (e.g. `load_policy("tiny")`); it is deep-copied first.
        reward: a `pgcore.lm.RewardModel` (e.g. `load_reward("tiny-sentiment")`).
        kl_coef: weight of the KL(policy || start) penalty (k1) subtracted from each reward.
        lr: AdamW learning rate (constant).
        advantage: none, mean, rloo or group.
        temperature: sampling temperature of training and of the samples.
        steps, batch_size, num_samples, max_new_tokens: the run's size (prompts per step, samples per prompt).
        seed: seeds the run and the samples: same arguments, same numbers.
        prompts: training prompts (None: data/prompts.txt).
        sample_prompts: prompts completed after training, 4 samples each, to read and to measure.

    Returns:
        dict with the settings and
          "step", "reward_mean", "kl", "entropy", "completion_len": (steps,) arrays from the run's history;
          "reward_first", "reward_last": mean score of the first / last 5 steps (the reward model's score,
              `reward_mean` of the history: without the KL penalty);
          "kl_last": mean KL to the starting policy over the last 5 steps (nats per completion);
          "samples": list of (prompt, completion) after training; "sample_rewards": their rewards;
          "text": `text_stats` of the sampled completions; "policy": the trained copy.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    from ..lm.sampling import generate
    from ..engine.config import LMConfig
    from ..engine.trainer import train

    config = LMConfig(
        model=policy.name, reward_model=reward.name, steps=steps, seed=seed,
        batch_size=batch_size, num_samples=num_samples, max_new_tokens=max_new_tokens,
        temperature=float(temperature), advantage=advantage, kl_coef=float(kl_coef), lr=float(lr),
        lr_scheduler="constant", kl_log_every=1, output_dir=None, checkpoint_dir=None, model_dir=None,
    )  # validates every setting; the KL logged at every step, also with kl_coef 0 (its panel shows it)
    trained = copy.deepcopy(policy)
    result = train(config, policy=trained, reward=reward, prompts=prompts)
    hist = result.history

    def col(key):
        return np.array([row[key] for row in hist], dtype=float)

    batch = generate(trained.model, trained.tokenizer, list(sample_prompts), 4, max_new_tokens, temperature,
                     seed=seed + 1, add_special_tokens=not trained.chat_template)
    sample_rewards = reward.score(batch.texts)
    return {
        "kl_coef": float(kl_coef), "lr": float(lr), "advantage": advantage, "temperature": float(temperature),
        "steps": int(steps), "seed": int(seed),
        "step": col("step").astype(int), "reward_mean": col("reward_mean"), "kl": col("kl"),
        "entropy": col("entropy"), "completion_len": col("completion_len"),
        "reward_first": float(col("reward_mean")[:5].mean()),
        "reward_last": float(col("reward_mean")[-5:].mean()),
        "kl_last": float(col("kl")[-5:].mean()),
        "samples": list(zip(batch.prompts, batch.texts)),
        "sample_rewards": sample_rewards.tolist(),
        "text": text_stats(batch.texts),
        "policy": trained,
    }


def format_readout(stats: dict) -> str:
    """One HTML line with the key numbers of `short_run`.
    """
    t = stats["text"]
    return (
        f"<b>KL coefficient</b> = {stats['kl_coef']:.2f} &nbsp;|&nbsp; lr = {stats['lr']:.2g}, "
        f"{stats['advantage']}, T = {stats['temperature']:.2f}, {stats['steps']} steps &nbsp;|&nbsp; "
        f"score (reward model, no KL penalty): first 5 steps = {stats['reward_first']:.3f}, last 5 = {stats['reward_last']:.3f} &nbsp;|&nbsp; "
        f"KL to start = {stats['kl_last']:.3f} nats &nbsp;|&nbsp; "
        f"samples: distinct-2 = {t['distinct_n']:.2f}, repeated words = {t['repeated']:.2f}"
    )


def _samples_html(pairs, rewards=None, limit: int = 8) -> str:
    rows = []
    for k, (prompt, text) in enumerate(list(pairs)[:limit]):
        r = "" if rewards is None else f"<td style='padding-right:1em'>{rewards[k]:.2f}</td>"
        rows.append(f"<tr>{r}<td><i>{html.escape(prompt)}</i>{html.escape(text)}</td></tr>")
    head = "<tr><th style='text-align:left'>score</th><th style='text-align:left'>completion</th></tr>" \
        if rewards is not None else ""
    return f"<table style='font-family:monospace;font-size:12px'>{head}{''.join(rows)}</table>"


def lm_panel(policy, reward, *, kl_coef: float = 0.0, lr: float = 1e-3, advantage: str = "rloo",
             temperature: float = 1.0, steps: int = 25, batch_size: int = 4, num_samples: int = 4, seed: int = 0):
    """The notebook's main panel (an ipywidgets VBox with class "pg-main-panel").

    First control: the KL coefficient (a selection slider over `KL_CHOICES`). Then the learning rate
    (log slider), the advantage and the temperature. Every change reruns `short_run` (a few seconds
    for the default 25 steps of the tiny tier) and redraws reward and KL against the step and the
    readout (class "pg-readout"); the samples after training are listed below. A prompt box samples
    four completions from the policy the last run trained.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from ..lm.sampling import generate
    from ..lm.algorithm import ADVANTAGES

    style = {"description_width": "150px"}
    layout = widgets.Layout(width="460px")
    choices = KL_CHOICES if kl_coef in KL_CHOICES else tuple(sorted({*KL_CHOICES, float(kl_coef)}))
    kl_slider = widgets.SelectionSlider(options=list(choices), value=kl_coef, description="KL coefficient β",
                                        continuous_update=False, style=style, layout=layout)
    lr_slider = widgets.FloatLogSlider(value=lr, base=10, min=-5, max=-2, step=0.25, description="learning rate",
                                       readout_format=".2g", continuous_update=False, style=style, layout=layout)
    adv = widgets.Dropdown(options=list(ADVANTAGES), value=advantage, description="advantage", style=style,
                           layout=layout)
    temp = widgets.FloatSlider(value=temperature, min=0.5, max=1.5, step=0.1, description="temperature",
                               readout_format=".1f", continuous_update=False, style=style, layout=layout)
    readout, out = readout_and_output()
    samples = widgets.HTML()
    prompt = widgets.Text(value="The acting was", description="your prompt", style=style, layout=layout)
    button = widgets.Button(description="sample 4 completions")
    generated = widgets.HTML()
    state: dict = {}

    def update(*_):
        stats = short_run(policy, reward, kl_coef=kl_slider.value, lr=lr_slider.value, advantage=adv.value,
                          temperature=temp.value, steps=steps, batch_size=batch_size, num_samples=num_samples,
                          seed=seed)
        state["policy"], state["temperature"] = stats["policy"], stats["temperature"]
        readout.value = format_readout(stats)
        samples.value = "<b>after training</b>" + _samples_html(stats["samples"], stats["sample_rewards"])
        with out:
            out.clear_output(wait=True)
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
            axes[0].plot(stats["step"], stats["reward_mean"], "o-", markersize=3)
            axes[0].set(xlabel="step", ylabel="mean score of the batch", ylim=(-0.02, 1.02),
                        title=f"score (reward model), β = {stats['kl_coef']:g}, lr = {stats['lr']:.2g}")
            axes[1].plot(stats["step"], stats["kl"], "o-", markersize=3, color="C3")
            axes[1].set(xlabel="step", ylabel="KL(π ‖ π_start) per completion (nats)", title="distance from the start")
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    def sample(*_):
        trained = state["policy"]
        text = prompt.value.strip()
        if not text:
            generated.value = "<i>type a prompt first</i>"
            return
        batch = generate(trained.model, trained.tokenizer, [text], 4, 16, state["temperature"], seed=seed,
                         add_special_tokens=not trained.chat_template)
        generated.value = _samples_html(list(zip(batch.prompts, batch.texts)),
                                        reward.score(batch.texts).tolist())

    controls = [kl_slider, lr_slider, adv, temp]
    button.on_click(sample)
    return panel(controls, update, readout, out, samples, widgets.HBox([prompt, button]), generated)
