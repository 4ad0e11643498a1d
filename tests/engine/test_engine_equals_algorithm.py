"""The engine's step equals the teaching step: on the same batch, `pgcore.engine.Trainer.compute_loss` and
`pgcore.lm.algorithm.compute_loss` give the same loss and the same gradient of every parameter (fp32
tolerance), for every option both have. The engine's fast paths (shared-prompt sampling and forward with the
prompt graph kept from sampling, the reference's prompt cache, the fused log-softmax backward) are on the
engine side only; the teaching side is the naive `log_softmax -> gather` over prompt + completion."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

from lm_fakes import LetterReward, make_llama_policy, make_policy
from pgcore.engine import LMConfig, Trainer
from pgcore.lm import algorithm

PROMPTS = ["the movie", "a", "terrible plot", "i loved this", "the food was", "we"]
OPTIONS = list(itertools.product(("reward", "loss"), ("token", "sequence", "constant", "sum"),
                                 ("none", "mean", "rloo", "group")))


def _moved_away(policy, seed=0):
    """The policy with its weights nudged, so that it differs from the reference and the KL acts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy


def _both_sides(policy, share_prompt, kl_in, aggregation, advantage, kl_estimator="k1", temperature=1.0):
    cfg = LMConfig(steps=1, batch_size=3, num_samples=3, max_new_tokens=6, kl_coef=0.5, kl_in=kl_in,
                   kl_estimator=kl_estimator, loss_aggregation=aggregation, advantage=advantage,
                   temperature=temperature, share_prompt=share_prompt, output_dir=None, checkpoint_dir=None,
                   model_dir=None)
    reward = LetterReward("e")
    tr = Trainer(cfg, policy=copy.deepcopy(policy), reward=reward, prompts=PROMPTS)
    teach_ref = copy.deepcopy(policy.model).eval()  # the model as given: transformers' own GELU, not fused.py's
    _moved_away(tr.policy)  # after the trainer froze its reference: policy != reference
    teach_model = copy.deepcopy(policy.model)  # the same weights, for the teaching step
    teach_model.load_state_dict(tr.model.state_dict())
    if "NewGELUActivation" in _activations(policy.model):  # GPT-2: the engine's GELU is fused, the teaching one not
        assert _activations(tr.model) == {"FusedTanhGELU"} and _activations(teach_model) == {"NewGELUActivation"}

    batch, prompt_state = tr.sample(1)
    assert (prompt_state is not None) == share_prompt  # the shared path keeps the prompts' forward for the gradient
    rewards = algorithm.score(reward, batch)
    loss_engine, _ = tr.compute_loss(batch, rewards, prompt_state)
    loss_engine.backward()
    loss_teach, stats = algorithm.compute_loss(teach_model, teach_ref, batch, rewards, cfg.args)
    loss_teach.backward()
    return tr.model, teach_model, loss_engine, loss_teach, stats


def _activations(model) -> set[str]:
    """The class names of a GPT-2 model's MLP activations."""
    return {type(m).__name__ for m in model.modules() if type(m).__name__.endswith("GELU")
            or type(m).__name__.endswith("GELUActivation")}


def _assert_same(engine_model, teach_model, loss_engine, loss_teach):
    assert torch.allclose(loss_engine, loss_teach, atol=1e-6, rtol=1e-5), (loss_engine.item(), loss_teach.item())
    named = dict(teach_model.named_parameters())
    checked = 0
    for name, p in engine_model.named_parameters():
        q = named[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), (name, (p.grad - q.grad).abs().max().item())
            checked += 1
    assert checked > 0


@pytest.fixture(scope="module")
def gpt2():
    return make_policy(seed=0)


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
@pytest.mark.parametrize("kl_in,aggregation,advantage", OPTIONS)
def test_engine_step_equals_the_teaching_step(gpt2, share_prompt, kl_in, aggregation, advantage):
    engine_model, teach_model, loss_e, loss_t, stats = _both_sides(gpt2, share_prompt, kl_in, aggregation, advantage)
    assert stats["kl"] != 0.0  # the KL term is really exercised
    _assert_same(engine_model, teach_model, loss_e, loss_t)


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
def test_engine_equals_teaching_with_k3_in_the_reward_and_a_temperature(gpt2, share_prompt):
    _assert_same(*_both_sides(gpt2, share_prompt, "reward", "token", "rloo", kl_estimator="k3", temperature=0.7)[:4])


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
def test_engine_equals_teaching_on_a_llama(share_prompt):
    """SmolLM2's architecture (rotary positions, grouped key/value heads), where the shared prompt pays."""
    _assert_same(*_both_sides(make_llama_policy(seed=1), share_prompt, "loss", "sequence", "group")[:4])


def test_the_comparison_can_fail(gpt2):
    """A teaching step that differs (another advantage) is told apart: the test above is not vacuous."""
    engine_model, _, loss_e, _, _ = _both_sides(gpt2, False, "reward", "token", "rloo")
    _, teach_model, _, loss_t, _ = _both_sides(gpt2, False, "reward", "token", "none")
    with pytest.raises(AssertionError):
        _assert_same(engine_model, teach_model, loss_e, loss_t)


FAST_PATHS = {"sampling": ("generate_shared", "sample_categorical"),
              "logprobs": ("selective_log_softmax", "selective_log_softmax_and_entropy", "per_token_logps",
                           "per_token_logps_shared_prompt"),
              "kv_cache": ("prompt_forward", "PromptCache"), "gpt2": ("GPT2Forward", "forward_of")}


@pytest.mark.parametrize("module,name", [(m, n) for m, names in FAST_PATHS.items() for n in names])
def test_every_fast_path_names_its_naive_twin(module, name):
    """The engine's rule: a fast path says in its docstring what plain code it equals (its test is beside it)."""
    import importlib

    obj = getattr(importlib.import_module(f"pgcore.engine.{module}"), name)
    assert "Naive twin" in (obj.__doc__ or ""), f"pgcore.engine.{module}.{name} does not name its naive twin"


# ------------------------------------------------------------------ reusing a batch (notebook 06's options)
REUSE_OPTIONS = {"ppo": dict(policy_loss="ppo"), "ppo clip-higher": dict(policy_loss="ppo", clip_eps_high=0.28),
                 "cispo": dict(policy_loss="cispo", clip_eps_high=0.5),
                 "gspo": dict(policy_loss="ppo", ratio_level="sequence", clip_eps=0.05),
                 "pg, k2 in the loss": dict(kl_in="loss", kl_loss_estimator="k2"),
                 "ppo, k3 in the loss x ratio": dict(policy_loss="ppo", kl_in="loss", kl_ratio_correction=True),
                 "gspo, k3 in the loss x ratio": dict(policy_loss="ppo", ratio_level="sequence", clip_eps=0.05,
                                                      kl_in="loss", kl_ratio_correction=True,
                                                      loss_aggregation="sequence"),
                 "k2 in the reward": dict(kl_estimator="k2")}


def _reuse_config(share_prompt, **kw):
    return LMConfig(**{**dict(steps=1, batch_size=3, num_samples=3, max_new_tokens=6, kl_coef=0.5,
                              share_prompt=share_prompt, output_dir=None, checkpoint_dir=None, model_dir=None), **kw})


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
@pytest.mark.parametrize("option", list(REUSE_OPTIONS))
def test_engine_equals_teaching_off_policy_for_every_reuse_option(gpt2, share_prompt, option):
    """One update against a pi_old that is neither the policy nor the reference: the ratio is not 1, the clip acts."""
    cfg = _reuse_config(share_prompt, **REUSE_OPTIONS[option])
    reward = LetterReward("e")
    tr = Trainer(cfg, policy=copy.deepcopy(gpt2), reward=reward, prompts=PROMPTS)
    _moved_away(tr.policy)
    teach_model = copy.deepcopy(tr.model)
    batch, prompt_state = tr.sample(1)
    rewards = algorithm.score(reward, batch)
    with torch.no_grad():  # (N, T) pi_old: the starting weights moved another way
        old = algorithm.per_token_logps(_moved_away(copy.deepcopy(gpt2), seed=1).model, batch)
    loss_engine, parts = tr.compute_loss(batch, rewards, prompt_state, old_logps=old)
    loss_engine.backward()
    loss_teach, stats = algorithm.compute_loss(teach_model, tr.ref_model, batch, rewards, cfg.args, old_logp=old)
    loss_teach.backward()
    _assert_same(tr.model, teach_model, loss_engine, loss_teach)
    if cfg.policy_loss != "pg":
        assert stats["ratio_max"] - stats["ratio_min"] > 0.1  # off-policy indeed
        for k, v in parts["ratio"].items():
            assert v == pytest.approx(stats[k], rel=1e-4, abs=1e-6), k
        if cfg.policy_loss == "ppo":
            assert stats["clip_low_frac"] + stats["clip_high_frac"] > 0  # the clip is exercised


@pytest.mark.parametrize("share_prompt", [False, True], ids=["plain", "shared-prompt"])
def test_engine_reuse_updates_equal_the_teaching_reuse_batch(gpt2, share_prompt):
    """mu = 2 passes over 3 minibatches: the same 6 updates (per-update statistics and the final weights)."""
    from pgcore.engine.metrics import StepTimer
    from pgcore.engine.policy_loss import reuse_updates

    cfg = _reuse_config(share_prompt, updates_per_batch=2, minibatches=3, policy_loss="ppo", clip_eps_high=0.28,
                        kl_in="loss", kl_ratio_correction=True, lr=3e-3, advantage="mean")
    reward = LetterReward("e")
    tr = Trainer(cfg, policy=copy.deepcopy(gpt2), reward=reward, prompts=PROMPTS)
    teach_model = copy.deepcopy(tr.model)
    batch, _ = tr.sample(1)
    rewards = algorithm.score(reward, batch)
    tr.optimizer = torch.optim.SGD(tr.model.parameters(), lr=cfg.lr)  # plain steps: rounding is not amplified
    tr.scheduler = torch.optim.lr_scheduler.LambdaLR(tr.optimizer, lambda _: 1.0)
    loss_all, _, _, parts = reuse_updates(tr, batch, rewards, step=1, timer=StepTimer())
    updates, _ = algorithm.reuse_batch(teach_model, tr.ref_model, torch.optim.SGD(teach_model.parameters(), lr=cfg.lr),
                                       batch, rewards, cfg.args)
    assert len(tr.last_updates) == len(updates) == 6 and loss_all.shape == (6,)
    for e, t in zip(tr.last_updates, updates):
        for k in ("loss", "grad_norm", "ratio_min", "ratio_max", "kl_old", "clip_low_frac", "clip_high_frac"):
            assert e[k] == pytest.approx(t[k], rel=1e-4, abs=1e-6), k
    assert updates[-1]["kl_old"] > 0  # the later updates are off-policy
    named = dict(teach_model.named_parameters())
    for name, p in tr.model.named_parameters():
        assert torch.allclose(p, named[name], atol=1e-6, rtol=1e-5), name
    moved = max((p - q).abs().max().item() for p, q in zip(tr.model.parameters(), tr.ref_model.parameters()))
    assert moved > 1e-4
