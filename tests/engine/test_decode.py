"""decode.py's GPT-2 decoding step against its naive twin, the model's own forward with its cache: the same
logits at every step (fp32 tolerance), from left-padded prompts with a shared prefix, on the course's tiny
models and a fake GPT-2; the same sampled completions from `generate_shared` with and without it; other
models keep their forward."""
from __future__ import annotations

import copy

import pytest
import torch

import pgcore.engine.sampling as sampling_module
from lm_fakes import make_llama_policy, make_policy
from pgcore.engine.decode import GPT2Decoder
from pgcore.engine.fused import fuse_gelu
from pgcore.engine.kv_cache import cache_kwarg, prompt_forward
from pgcore.lm import load_policy
from pgcore.lm.sampling import encode_prompts, position_ids_from_mask

PROMPTS = {"tiny": ["the movie was", "a", "i loved this film because it", "the food"],
           "tiny-arith": ["12+345=", "7+8=", "999+1=", "40+40="]}


def _policy(name):
    return make_policy(seed=0) if name == "fake" else load_policy(name)


def _prompts(name):
    return PROMPTS.get(name, ["the movie", "a", "terrible plot, boring and", "i loved"])


@pytest.mark.parametrize("name", ["tiny", "tiny-arith", "fake"])
@pytest.mark.parametrize("fused", [False, True], ids=["model-gelu", "fused-gelu"])
def test_every_step_gives_the_forward_logits(name, fused):
    policy = _policy(name)
    model, tok = policy.model.eval(), policy.tokenizer
    if fused:
        fuse_gelu(model)
    G, T = 3, 7
    ids, mask, _, _ = encode_prompts(model, tok, _prompts(name), G, T, 1.0, True)
    distinct_ids, distinct_mask = ids[::G], mask[::G]
    with torch.no_grad():
        cache_a, logits, layout = prompt_forward(model, distinct_ids, distinct_mask)
        cache_b, _, _ = prompt_forward(model, distinct_ids, distinct_mask)
        cache_a.batch_repeat_interleave(G)
        cache_b.batch_repeat_interleave(G)
        mask = layout.repeat_interleave(G, dim=0)
        decoder = GPT2Decoder.from_cache(model, cache_b, mask, T)
        assert decoder is not None
        position = position_ids_from_mask(mask)[:, -1:]
        gen = torch.Generator().manual_seed(0)
        for _ in range(T):
            token = torch.randint(0, model.config.vocab_size, (mask.shape[0],), generator=gen)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            position = position + 1
            naive = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                          **{cache_kwarg(model): cache_a}).logits[:, -1]
            fast = decoder.step(token, position[:, 0])
            torch.testing.assert_close(fast, naive, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny-arith"])
def test_generate_shared_samples_the_same_completions(name, monkeypatch):
    policy = _policy(name)
    model = policy.model.eval()
    run = lambda: sampling_module.generate_shared(model, policy.tokenizer, _prompts(name), 4, 8, 1.0, seed=3,
                                                  return_logps=True)[0]
    fast = run()
    monkeypatch.setattr(GPT2Decoder, "from_cache", classmethod(lambda cls, *a: None))  # the model's forward
    naive = run()
    assert torch.equal(fast.completion_ids, naive.completion_ids)
    torch.testing.assert_close(fast.sampling_logps, naive.sampling_logps, atol=1e-5, rtol=1e-5)


def test_only_plain_gpt2_in_eval_mode():
    gpt2, llama = make_policy(seed=0).model, make_llama_policy(seed=0).model
    assert GPT2Decoder.supports(gpt2.eval())
    assert not GPT2Decoder.supports(copy.deepcopy(gpt2).train())  # dropout: the model's forward
    assert not GPT2Decoder.supports(llama.eval())
