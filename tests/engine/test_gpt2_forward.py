"""gpt2.py's plain-tensor GPT-2 forward against its naive twin, the model's own forward: the same logits at
real positions, the same cache columns and the same gradient of every parameter (fp32 tolerance), for left-padded
prompts with a shared prefix and completions against their cache, on the course's tiny models and a fake GPT-2;
the engine's log-probs with and without it; other models keep their forward."""
from __future__ import annotations

import copy

import pytest
import torch

from lm_fakes import make_llama_policy, make_policy
from pgcore.engine import gpt2 as gpt2_module
from pgcore.engine.fused import fuse_gelu
from pgcore.engine.gpt2 import GPT2Forward, forward_of
from pgcore.engine.kv_cache import _plain_layers, prompt_forward
from pgcore.engine.logprobs import per_token_logps, per_token_logps_shared_prompt
from pgcore.lm import load_policy
from pgcore.lm.sampling import encode_prompts, position_ids_from_mask

PROMPTS = {"tiny": ["the movie was", "a", "i loved this film because it", "the food"],
           "tiny-arith": ["12+345=", "7+8=", "999+1=", "40+40="],
           "fake": ["the movie", "a", "terrible plot, boring and", "i loved"]}
G, T = 3, 6


@pytest.fixture(scope="module", params=["tiny", "tiny-arith", "fake"])
def policy(request):
    p = make_policy(seed=0) if request.param == "fake" else load_policy(request.param)
    fuse_gelu(p.model.eval())
    p.prompts = PROMPTS[request.param]
    return p


def _batch(policy, seed=0):
    """Left-padded prompt rows (N, P) and random completions (N, T) with some rows ended early (mask 0)."""
    model, tok = policy.model, policy.tokenizer
    ids, mask, _, _ = encode_prompts(model, tok, policy.prompts, G, T, 1.0, True)
    gen = torch.Generator().manual_seed(seed)
    completion = torch.randint(0, model.config.vocab_size, (ids.shape[0], T), generator=gen)
    lengths = torch.randint(1, T + 1, (ids.shape[0],), generator=gen)
    completion_mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return ids, mask, completion, completion_mask


def _naive(monkeypatch):
    monkeypatch.setattr(GPT2Forward, "supports", staticmethod(lambda model: False))



def _assert_same(fast, naive):
    """(log-probs, entropies, {parameter: gradient}) of the fast path equal the naive twin's, to fp32 tolerance."""
    torch.testing.assert_close(fast[0], naive[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], naive[1], atol=2e-5, rtol=1e-5)
    for name in naive[2]:
        torch.testing.assert_close(fast[2][name], naive[2][name], atol=1e-5, rtol=1e-4, msg=name)

def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_logits_cache_and_gradients_equal_the_models_forward(policy):
    model = policy.model
    ids, mask, completion, completion_mask = _batch(policy)
    full_mask = torch.cat([mask, completion_mask], dim=1)
    position_ids = position_ids_from_mask(full_mask)
    P = ids.shape[1]
    fast = GPT2Forward(model)
    outs = {}
    for name, forward in (("naive", model), ("fast", fast)):
        model.zero_grad()
        prompt = forward(input_ids=ids, attention_mask=mask, position_ids=position_ids[:, :P], use_cache=True)
        kv = [(k.detach().clone(), v.detach().clone()) for k, v in _plain_layers(prompt.cache)]
        logits = forward(input_ids=completion, attention_mask=full_mask, position_ids=position_ids[:, P:],
                         use_cache=False, cache=prompt.cache).logits  # (N, T, V)
        real = completion_mask.bool()
        loss = logits[real].logsumexp(-1).sum() + prompt.logits[:, -1].logsumexp(-1).sum()
        loss.backward()
        outs[name] = (prompt.logits[:, -1], logits[real], kv, _grads(model))
    (p_n, c_n, kv_n, g_n), (p_f, c_f, kv_f, g_f) = outs["naive"], outs["fast"]
    prompt = fast(input_ids=ids, attention_mask=mask, position_ids=position_ids[:, :P], use_cache=True)
    rows = fast(input_ids=completion, attention_mask=full_mask, position_ids=position_ids[:, P:], cache=prompt.cache,
                logits_rows=completion_mask.bool()).logits  # the LM head at real positions only
    torch.testing.assert_close(rows, c_n, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(p_f, p_n, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(c_f, c_n, atol=2e-5, rtol=1e-5)
    real_columns = mask.bool()[:, None, :, None]  # (N, 1, P, 1): padding columns are never read
    for (kf, vf), (kn, vn) in zip(kv_f, kv_n):
        torch.testing.assert_close(kf * real_columns, kn * real_columns, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(vf * real_columns, vn * real_columns, atol=2e-5, rtol=1e-5)
    assert g_f.keys() == g_n.keys() and g_n
    for name in g_n:
        torch.testing.assert_close(g_f[name], g_n[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared-prompt"])
def test_engine_logprobs_equal_with_the_models_forward(policy, shared, monkeypatch):
    """`per_token_logps(_shared_prompt)` (which call gpt2.py for a GPT-2) with it and with the model's forward:
    the same log-probs and entropies at completion tokens, the same gradients."""
    model = policy.model
    ids, mask, completion, completion_mask = _batch(policy, seed=1)

    def run():
        model.zero_grad()
        if shared:
            logps, ent = per_token_logps_shared_prompt(model, ids, mask, completion, completion_mask, G,
                                                       return_entropy=True)
        else:
            logps, ent = per_token_logps(model, torch.cat([ids, completion], 1),
                                         torch.cat([mask, completion_mask], 1), T, return_entropy=True)
        (logps * completion_mask).sum().backward()
        real = completion_mask.bool()
        return logps[real].detach(), ent[real].detach(), _grads(model)

    fast = run()
    _naive(monkeypatch)
    naive = run()
    _assert_same(fast, naive)


def test_prompt_forward_with_a_shared_prefix(policy, monkeypatch):
    """`prompt_forward` runs a prefix all prompts share once, then the suffixes against its cache."""
    model, tok = policy.model, policy.tokenizer
    prompts = [f"the same start {p}" for p in policy.prompts]
    ids, mask, _, _ = encode_prompts(model, tok, prompts, 1, T, 1.0, True)
    with torch.no_grad():
        cache_f, logits_f, layout_f = prompt_forward(model, ids, mask)
        _naive(monkeypatch)
        cache_n, logits_n, layout_n = prompt_forward(model, ids, mask)
    assert torch.equal(layout_f, layout_n)
    torch.testing.assert_close(logits_f, logits_n, atol=2e-5, rtol=1e-5)
    real = layout_n.bool()[:, None, :, None]
    for (kf, vf), (kn, vn) in zip(_plain_layers(cache_f), _plain_layers(cache_n)):
        torch.testing.assert_close(kf * real, kn * real, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(vf * real, vn * real, atol=2e-5, rtol=1e-5)


def test_other_models_keep_their_forward():
    gpt2, llama = make_policy(seed=0).model, make_llama_policy(seed=0).model
    assert isinstance(forward_of(gpt2.eval()), GPT2Forward)
    assert forward_of(copy.deepcopy(gpt2).train()) is not None
    assert not isinstance(forward_of(copy.deepcopy(gpt2).train()), GPT2Forward)  # dropout: the model's forward
    assert forward_of(llama.eval()) is llama
    hooked = copy.deepcopy(gpt2).eval()
    hooked.register_forward_hook(lambda *a: None)  # a hook the model's forward calls: that forward
    assert forward_of(hooked) is hooked
    assert "Naive twin" in gpt2_module.__doc__ and "Naive twin" in (forward_of.__doc__ or "")


def test_the_reward_models_scores_equal_its_own_score():
    """`rewards.classifier_score` (tiny-sentiment's GPT-2 classifier through `gpt2.classifier_logits`) against the
    reward's own `score`: the same rewards, with right padding, an empty completion (a row of padding only) and
    several chunks of the reward's batch size; other rewards keep their own `score`."""
    from lm_fakes import LetterReward
    from pgcore.engine import rewards
    from pgcore.engine.gpt2 import classifier_logits
    from pgcore.lm import load_reward

    reward = load_reward("tiny-sentiment")
    texts = ["a wonderful film", "", "terrible, boring and far too long", "ok", "the acting was great but the plot"]
    enc = reward._encode(texts, None)
    torch.testing.assert_close(classifier_logits(reward.model, enc["input_ids"], enc["attention_mask"]),
                               reward.model(**enc).logits, atol=2e-5, rtol=1e-5)
    for batch_size in (64, 2):
        reward.batch_size = batch_size
        fast = rewards.classifier_score(reward, texts)
        torch.testing.assert_close(fast, reward.score(texts), atol=2e-6, rtol=1e-5)
    assert rewards.classifier_score(reward, ["", ""]) is None  # the reward pads empty texts its own way
    assert rewards.classifier_score(LetterReward("e"), texts) is None
    assert classifier_logits(make_policy(seed=0).model, enc["input_ids"], enc["attention_mask"]) is None


def test_shared_log_probs_when_every_completion_is_one_token(monkeypatch):
    """No completion position after the first is kept (all ended at once): the same log-probs and gradients."""
    policy = make_policy(seed=0)
    policy.prompts = PROMPTS["fake"]
    ids, mask, completion, completion_mask = _batch(policy, seed=2)
    completion_mask[:, 1:] = 0

    def run():
        policy.model.zero_grad()
        logps, ent = per_token_logps_shared_prompt(policy.model, ids, mask, completion, completion_mask, G,
                                                   return_entropy=True)
        logps[:, 0].sum().backward()
        return logps[:, 0].detach(), ent[:, 0], _grads(policy.model)

    fast = run()
    _naive(monkeypatch)
    naive = run()
    _assert_same(fast, naive)
