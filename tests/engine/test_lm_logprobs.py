"""pgcore.engine.logprobs against its naive twins: log_softmax(...).gather(...), a loop over single
unpadded sequences, and the log-probs generate actually sampled from."""
from __future__ import annotations

import pytest
import torch

import pgcore as pg
from lm_fakes import make_llama_policy, make_policy
from pgcore.engine import kv_cache, logprobs
from pgcore.engine.sampling import generate_shared
from pgcore.lm import sampling
from pgcore.engine.logprobs import entropy_from_logits, per_token_logps, selective_log_softmax
from pgcore.lm.sampling import position_ids_from_mask
from pgcore.lm.sampling import generate

PROMPTS = ["the movie", "a", "terrible plot, boring and too", "i loved"]


@pytest.fixture(scope="module")
def policy():
    return make_policy(seed=1, n_layer=2)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 0.07)])
def test_selective_log_softmax_equals_log_softmax_gather(dtype, tol):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50, generator=g)).to(dtype)
    index = torch.randint(0, 50, (3, 7), generator=g)
    naive = torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    fast = selective_log_softmax(logits, index)
    assert fast.dtype == dtype
    assert torch.allclose(fast.double(), naive.double(), atol=tol, rtol=0)


def test_entropy_equals_categorical_entropy():
    logits = torch.randn(4, 6, 30, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(entropy_from_logits(logits), torch.distributions.Categorical(logits=logits).entropy(), atol=1e-5)


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(position_ids_from_mask(mask), torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]))


def _single_sequence_logps(model, prompt: list[int], completion: list[int], temperature: float):
    """Naive twin: one unpadded sequence at a time, positions 0..L-1, full log_softmax."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0].float() / temperature  # (L, V)
    logp = torch.log_softmax(logits, dim=-1)
    # logits[i] predicts token i+1: the completion tokens are predicted by positions P-1 .. L-2
    return torch.stack([logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(completion)])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_per_token_logps_equal_single_sequence_loop_with_left_padding(policy, temperature):
    batch = generate(policy, None, PROMPTS, 2, 10, temperature, seed=0)
    T = batch.completion_ids.shape[1]
    with torch.no_grad():
        logps = per_token_logps(policy.model, batch.input_ids, batch.attention_mask, T, temperature)
    assert logps.shape == batch.completion_ids.shape
    P = batch.prompt_ids.shape[1]
    checked = 0
    for i in range(len(batch)):
        prompt = batch.prompt_ids[i, P - int(batch.prompt_mask[i].sum()):].tolist()
        k = int(batch.completion_mask[i].sum())
        with torch.no_grad():
            expected = _single_sequence_logps(policy.model, prompt, batch.completion_ids[i, :k].tolist(), temperature)
        assert torch.allclose(logps[i, :k], expected, atol=1e-5), f"row {i}"
        checked += k
    assert checked > 20
    assert batch.prompt_mask.sum(1).min() < P, "the batch must contain left padding for this test to mean anything"


def test_left_padding_without_position_ids_would_be_wrong(policy):
    """The test above can fail: GPT-2 with default positions (0..L-1 over the padding) gives other log-probs."""
    batch = generate(policy, None, PROMPTS, 1, 6, seed=0)
    T = batch.completion_ids.shape[1]
    with torch.no_grad():
        right = per_token_logps(policy.model, batch.input_ids, batch.attention_mask, T)
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, -T - 1:-1]
    wrong = torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)
    padded = batch.prompt_mask.sum(1) < batch.prompt_ids.shape[1]
    assert (right[padded] - wrong[padded]).abs().max() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logps_recomputed_equal_the_ones_generate_sampled_from(policy, temperature):
    batch = generate(policy, None, PROMPTS, 3, 12, temperature, seed=5, return_logps=True)
    T = batch.completion_ids.shape[1]
    with torch.no_grad():
        logps = per_token_logps(policy.model, batch.input_ids, batch.attention_mask, T, temperature)
    m = batch.completion_mask.bool()
    assert torch.allclose(logps[m], batch.sampling_logps[m], atol=1e-5)


def test_entropy_output_and_gradients(policy):
    batch = generate(policy, None, PROMPTS[:2], 2, 6, seed=2)
    T = batch.completion_ids.shape[1]
    logps, ent = per_token_logps(policy.model, batch.input_ids, batch.attention_mask, T, return_entropy=True)
    with torch.no_grad():
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=position_ids_from_mask(batch.attention_mask)).logits[:, -T - 1:-1]
    assert torch.allclose(ent, torch.distributions.Categorical(logits=logits).entropy(), atol=1e-5)
    (logps * batch.completion_mask).sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad(set_to_none=True)


def test_per_token_logps_rejects_bad_shapes(policy):
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="logits_to_keep"):
        per_token_logps(policy.model, ids, torch.ones_like(ids), 5)
    with pytest.raises(ValueError, match="attention_mask"):
        per_token_logps(policy.model, ids, torch.ones(2, 4, dtype=torch.long), 2)


SYSTEM = "system: you are a kind critic. user: "  # a prefix every prompt shares, as a chat template's system turn


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("num_samples", [1, 4])
@pytest.mark.parametrize("prefix", ["", SYSTEM])
def test_shared_prompt_forward_equals_the_one_pass_forward(arch, num_samples, prefix):
    """Each prompt run once (and the prefix they all share, once), its cache shared by its G samples: the
    same per-token log-probs, entropies and parameter gradients as one forward over prompt + completion
    (fp32 tolerance: only the order of additions differs), for left-padded prompts of mixed lengths."""
    policy = make_policy(n_layer=2) if arch == "gpt2" else make_llama_policy()
    model, tok = policy.model, policy.tokenizer
    b = sampling.generate(model, tok, [prefix + p for p in ["the movie was great and the acting", "i",
                                                            "terrible plot, boring"]],
                          num_samples, max_new_tokens=10, seed=3)
    assert b.prompt_mask.sum(dim=1).unique().numel() == 3, "prompts of three lengths"
    shared = kv_cache.common_prefix_length(b.prompt_ids[::num_samples], b.prompt_mask[::num_samples])
    assert (shared >= len(tok(SYSTEM)["input_ids"]) - 1) if prefix else shared == 0
    T = b.completion_ids.shape[1]
    mask = b.completion_mask
    adv = torch.linspace(-1, 1, len(b))
    params = [p for p in model.parameters() if p.requires_grad]

    def run(shared):
        if shared:
            lp, ent = logprobs.per_token_logps_shared_prompt(model, b.prompt_ids, b.prompt_mask, b.completion_ids,
                                                             mask, num_samples, 0.9, return_entropy=True)
        else:
            lp, ent = logprobs.per_token_logps(model, b.input_ids, b.attention_mask, T, 0.9, return_entropy=True)
        grads = torch.autograd.grad(pg.pg_loss(lp, adv, mask) - 0.01 * (ent * mask).sum(), params)
        return lp.detach(), ent.detach(), grads

    (lp1, ent1, g1), (lp2, ent2, g2) = run(False), run(True)
    m = mask.bool()
    assert torch.allclose(lp1[m], lp2[m], atol=2e-5) and torch.allclose(ent1[m], ent2[m], atol=2e-5)
    for a, c in zip(g1, g2):
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-6), (a - c).abs().max()


def test_shared_prompt_forward_refuses_rows_that_do_not_share_a_prompt():
    policy = make_policy()
    b = sampling.generate(policy.model, policy.tokenizer, ["the movie", "i"], 2, max_new_tokens=4, seed=0)
    with pytest.raises(ValueError, match="share their prompt"):
        logprobs.per_token_logps_shared_prompt(policy.model, b.prompt_ids.roll(1, 0), b.prompt_mask.roll(1, 0),
                                               b.completion_ids, b.completion_mask, 2)
    with pytest.raises(ValueError, match="divide"):
        logprobs.per_token_logps_shared_prompt(policy.model, b.prompt_ids, b.prompt_mask, b.completion_ids,
                                               b.completion_mask, 3)


def test_common_prefix_length_of_left_padded_rows():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [5, 6, 7, 9, 9, 9], [0, 0, 0, 5, 6, 1]])
    mask = (torch.arange(6)[None] >= torch.tensor([[2], [0], [3]])).long()
    assert kv_cache.common_prefix_length(ids, mask) == 2  # 5, 6
    assert kv_cache.common_prefix_length(ids[:2], mask[:2]) == 3  # 5, 6, 7
    same = torch.tensor([[4, 5, 6], [4, 5, 6]])
    assert kv_cache.common_prefix_length(same, torch.ones_like(same)) == 2, "each row keeps its last token"
    assert kv_cache.common_prefix_length(ids[:1], mask[:1]) == 0, "one row: nothing to share"
    assert kv_cache.common_prefix_length(torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2, dtype=torch.long)) == 0


def test_shared_prompt_forward_of_one_token_completions():
    """T = 1: only the prompts' last logits are needed (no completion forward at all)."""
    policy = make_llama_policy()
    b = sampling.generate(policy.model, policy.tokenizer, [SYSTEM + "the movie", SYSTEM + "i"], 3, max_new_tokens=1,
                          seed=0)
    assert b.completion_ids.shape[1] == 1
    with torch.no_grad():
        one_pass = logprobs.per_token_logps(policy.model, b.input_ids, b.attention_mask, 1)
        shared = logprobs.per_token_logps_shared_prompt(policy.model, b.prompt_ids, b.prompt_mask, b.completion_ids,
                                                        b.completion_mask, 3)
    assert torch.allclose(one_pass, shared, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_log_softmax_gradient_equals_autograd_of_the_naive_twin(dtype):
    """The hand-written backward (onehot - softmax, one (..., V) tensor) against autograd through
    log_softmax + gather, on a strided view of the logits as the one-pass forward passes it."""
    g = torch.Generator().manual_seed(2)
    base = (4 * torch.randn(3, 8, 40, generator=g)).to(dtype).requires_grad_(True)
    index = torch.randint(0, 40, (3, 7), generator=g)
    weight = torch.randn(3, 7, generator=g).to(dtype)
    logits = base[:, :-1]  # (3, 7, 40), not contiguous
    fast = selective_log_softmax(logits, index)
    naive = torch.log_softmax(logits, dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    (g_fast,) = torch.autograd.grad((fast * weight).sum(), base)
    (g_naive,) = torch.autograd.grad((naive * weight).sum(), base)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert torch.allclose(fast, naive, atol=tol, rtol=0)
    assert torch.allclose(g_fast, g_naive, atol=tol, rtol=0)
    assert (g_fast[:, -1] == 0).all(), "the last position was sliced away: no gradient"


@pytest.mark.parametrize("elements", [1, 1 << 22], ids=["a-row-a-slice", "one-slice"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_log_probs_and_entropy_from_one_pass_equal_the_naive_twin(dtype, elements, monkeypatch):
    """`selective_log_softmax_and_entropy` against its naive twin, `selective_log_softmax` and
    `entropy_from_logits`: the same log-probs, entropies (no graph) and gradient, also on a strided view
    (as the one-pass forward passes it) and in slices of rows."""
    monkeypatch.setattr(logprobs.row_chunks, "__kwdefaults__", {"elements": elements})
    g = torch.Generator().manual_seed(3)
    base = (4 * torch.randn(3, 8, 40, generator=g)).to(dtype).requires_grad_(True)
    index = torch.randint(0, 40, (3, 7), generator=g)
    weight = torch.randn(3, 7, generator=g).to(dtype)
    logits = base[:, :-1]  # (3, 7, 40), not contiguous
    fast, ent = logprobs.selective_log_softmax_and_entropy(logits, index)
    naive = torch.log_softmax(logits.double(), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    assert not ent.requires_grad and fast.dtype == dtype and ent.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    (g_fast,) = torch.autograd.grad((fast * weight).sum(), base)
    (g_naive,) = torch.autograd.grad((selective_log_softmax(logits, index) * weight).sum(), base)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 0.07}[dtype]
    assert torch.allclose(fast.double(), naive, atol=tol, rtol=0)
    naive_ent = torch.distributions.Categorical(logits=logits.detach().double()).entropy()
    assert torch.allclose(ent.double(), naive_ent, atol=tol, rtol=0)
    assert torch.allclose(g_fast.double(), g_naive.double(), atol=tol, rtol=0)
    with torch.no_grad():
        again, ent_again = logprobs.selective_log_softmax_and_entropy(logits, index)
    assert torch.equal(again, fast.detach()) and torch.equal(ent_again, ent)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prompt_cache_equals_running_the_prompts(arch):
    """A frozen model's prompt caches kept across calls: the same log-probs as running the prompts
    (fp32 tolerance), each prompt run once however often it comes back, the same bits from a fresh
    cache (what is kept depends on the prompt only: a resumed run computes the same), and a bounded size."""
    policy = make_policy(n_layer=2) if arch == "gpt2" else make_llama_policy()
    model, tok = policy.model, policy.tokenizer
    prompts = [SYSTEM + p for p in ["the movie was great and the acting", "i", "terrible plot, boring"]]
    b1 = sampling.generate(model, tok, prompts, 2, max_new_tokens=6, seed=1)
    b2 = sampling.generate(model, tok, prompts[1:] + ["what a day"], 2, max_new_tokens=6, seed=2)

    def logps(b, cache):
        with torch.inference_mode():
            return logprobs.per_token_logps_shared_prompt(model, b.prompt_ids, b.prompt_mask, b.completion_ids,
                                                          b.completion_mask, 2, prompt_cache=cache)

    cache = kv_cache.PromptCache()
    for b in (b1, b2, b1):
        m = b.completion_mask.bool()
        assert torch.allclose(logps(b, cache)[m], logps(b, None)[m], atol=2e-5)
    assert (len(cache), cache.misses, cache.hits) == (4, 4, 5), "each distinct prompt run once"
    assert torch.equal(logps(b2, cache), logps(b2, kv_cache.PromptCache())), "kept = recomputed, bit for bit"
    small = kv_cache.PromptCache(max_bytes=cache.bytes // 3)
    logps(b1, small)
    assert len(small) < 3 and (small.bytes <= small.max_bytes or len(small) == 1), "least recently used out"
    with pytest.raises(ValueError, match="inference_mode"):
        small.forward(model, b1.prompt_ids, b1.prompt_mask)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_one_prompt_forward_for_sampling_and_gradient(arch):
    """generate_shared(prompt_graph=True) keeps the prompts' forward with its graph; sampling from its detached
    copy draws the same tokens, and the gradient forward that reuses it gives the same log-probs and
    parameter gradients as running the prompts again (the same forward, so the same bits). Used once."""
    policy = make_policy(n_layer=2) if arch == "gpt2" else make_llama_policy()
    model, tok = policy.model, policy.tokenizer
    prompts = [SYSTEM + p for p in ["the movie was great", "i", "terrible plot, boring and"]]
    plain, plain_state = generate_shared(model, tok, prompts, 3, max_new_tokens=8, seed=4)
    kept, kept_state = generate_shared(model, tok, prompts, 3, max_new_tokens=8, seed=4, prompt_graph=True)
    assert plain_state is None and kept_state is not None
    assert torch.equal(plain.completion_ids, kept.completion_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    adv = torch.linspace(-1, 1, len(kept))

    def run(state):
        lp = logprobs.per_token_logps_shared_prompt(model, kept.prompt_ids, kept.prompt_mask, kept.completion_ids,
                                                    kept.completion_mask, 3, prompt_state=state)
        return lp.detach(), torch.autograd.grad(pg.pg_loss(lp, adv, kept.completion_mask), params)

    (lp1, g1), (lp2, g2) = run(None), run(kept_state)
    assert torch.equal(lp1, lp2)
    for a, c in zip(g1, g2):
        assert torch.allclose(a, c, rtol=1e-6, atol=1e-8), (a - c).abs().max()
    with pytest.raises(ValueError, match="not used before"):
        run(kept_state)


@pytest.mark.parametrize("elements", [1, 40 * 7 * 2, 1 << 22], ids=["a-row-a-slice", "two-rows-a-slice", "one-slice"])
def test_slices_of_rows_give_the_row_by_row_values_and_gradients(elements, monkeypatch):
    """`row_chunks` against its naive twin, one row at a time (elements=1 is exactly that): the same bits for the
    log-probs, the logsumexp's gradient and the logged entropy, whatever the slice size."""
    g = torch.Generator().manual_seed(5)
    base = (3 * torch.randn(5, 7, 40, generator=g)).requires_grad_(True)
    index = torch.randint(0, 40, (5, 7), generator=g)
    weight = torch.randn(5, 7, generator=g)

    def run(n):
        monkeypatch.setattr(logprobs.row_chunks, "__kwdefaults__", {"elements": n})
        assert len(list(logprobs.row_chunks(base))) == len(list(logprobs.row_chunks(base, elements=n)))
        out = selective_log_softmax(base, index)
        (grad,) = torch.autograd.grad((out * weight).sum(), base)
        return out.detach(), grad, logprobs._entropy(base, grad=False)

    chunks = list(logprobs.row_chunks(base, elements=elements))
    assert len(chunks) == {1: 5, 560: 3, 1 << 22: 1}[elements]
    for a, b in zip(run(1), run(elements)):
        assert torch.equal(a, b)
