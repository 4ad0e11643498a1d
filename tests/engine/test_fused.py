"""fused.py's GELU against its naive twin, transformers' `NewGELUActivation`, on the course's tiny-arith model:
the same function, the same logits and the same gradient of every parameter up to fp32 rounding; the weights,
the config and what `save_pretrained` writes unchanged; and the engine's Trainer runs it."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers.activations import NewGELUActivation

from pgcore.engine import LMConfig, Trainer
from pgcore.engine.fused import FusedTanhGELU, fuse_gelu
from pgcore.lm import load_policy


@pytest.fixture(scope="module")
def arith():
    return load_policy("tiny-arith")


def test_the_same_function_and_derivative():
    x = torch.linspace(-8, 8, 10001, dtype=torch.float64, requires_grad=True)
    naive, fused = NewGELUActivation()(x), FusedTanhGELU()(x)
    torch.testing.assert_close(fused, naive, atol=1e-12, rtol=1e-12)
    (g_naive,), (g_fused,) = torch.autograd.grad(naive.sum(), x), torch.autograd.grad(fused.sum(), x)
    torch.testing.assert_close(g_fused, g_naive, atol=1e-12, rtol=1e-12)


def test_fused_model_equals_the_model_as_loaded(arith, tmp_path):
    naive = copy.deepcopy(arith.model).eval()
    fused = copy.deepcopy(arith.model).eval()
    assert fuse_gelu(fused) == naive.config.n_layer  # one per block's MLP
    assert fuse_gelu(fused) == 0  # nothing left to replace
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    ids = arith.tokenizer(["12+34=", "7+8=5", "99+1="], return_tensors="pt", padding=True)
    out_naive = naive(**ids).logits
    out_fused = fused(**ids).logits
    torch.testing.assert_close(out_fused, out_naive, atol=1e-5, rtol=1e-5)
    out_naive.logsumexp(-1).sum().backward()
    out_fused.logsumexp(-1).sum().backward()
    grads = dict(naive.named_parameters())
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    # what is saved is the model as loaded: same weights, same config (activation_function gelu_new)
    fused.save_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert again.config.activation_function == naive.config.activation_function == "gelu_new"
    for (name, a), (_, b) in zip(again.state_dict().items(), naive.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_trainer_runs_the_fused_gelu(arith, tmp_path):
    cfg = LMConfig(model="tiny-arith", reward_model="arithmetic", steps=1, batch_size=2, num_samples=2,
                   max_new_tokens=4, output_dir=None, checkpoint_dir=None, model_dir=None)
    tr = Trainer(cfg, policy=copy.deepcopy(arith))
    for model in (tr.model, tr.ref_model):
        kinds = {type(m) for m in model.modules()}
        assert FusedTanhGELU in kinds and NewGELUActivation not in kinds
