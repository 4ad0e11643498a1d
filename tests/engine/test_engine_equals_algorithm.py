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
              "logprobs": ("selective_log_softmax", "per_token_logps", "per_token_logps_shared_prompt"),
              "kv_cache": ("prompt_forward", "PromptCache")}


@pytest.mark.parametrize("module,name", [(m, n) for m, names in FAST_PATHS.items() for n in names])
def test_every_fast_path_names_its_naive_twin(module, name):
    """The engine's rule: a fast path says in its docstring what plain code it equals (its test is beside it)."""
    import importlib

    obj = getattr(importlib.import_module(f"pgcore.engine.{module}"), name)
    assert "Naive twin" in (obj.__doc__ or ""), f"pgcore.engine.{module}.{name} does not name its naive twin"
