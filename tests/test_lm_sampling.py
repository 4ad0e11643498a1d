"""pgcore.lm.sampling against its naive twins: a per-row loop for the completion mask, and a
hand-written token-by-token sampler (no KV cache, no generate) for the batched sampler."""
from __future__ import annotations

import pytest
import torch

from lm_fakes import make_llama_policy, make_policy
from pgcore.engine.logprobs import per_token_logps
from pgcore.engine.sampling import generate_shared, sample_categorical
from pgcore.lm.sampling import completion_mask, expand_prompts, generate, position_ids_from_mask

PROMPTS = ["the movie", "a", "terrible plot, boring and"]


def naive_completion_mask(ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    mask = torch.zeros_like(ids)
    for i, row in enumerate(ids.tolist()):
        for t, tok in enumerate(row):
            mask[i, t] = 1
            if tok in eos_ids:
                break
    return mask


@pytest.fixture(scope="module")
def policy():
    return make_policy(seed=0)


def test_completion_mask_matches_loop_on_edge_cases():
    eos = 0  # also the pad token, as in GPT-2: never build the mask from pad
    ids = torch.tensor([
        [5, 6, 0, 0, 0],  # EOS then pad (== EOS): only the first counts
        [0, 0, 0, 0, 0],  # EOS at the first position: a one-token completion
        [5, 6, 7, 8, 9],  # no EOS: cut by max_new_tokens, all ones
        [5, 0, 7, 0, 9],  # tokens after the first EOS do not count
    ])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert torch.equal(completion_mask(ids, eos), expected)
    assert torch.equal(naive_completion_mask(ids, {eos}), expected)


def test_completion_mask_random_and_several_eos_ids():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (200, 9), generator=g)
    for eos in (0, [0, 3], (5,)):
        eos_set = {eos} if isinstance(eos, int) else set(eos)
        assert torch.equal(completion_mask(ids, eos), naive_completion_mask(ids, eos_set))
    with pytest.raises(ValueError, match="eos_token_id"):
        completion_mask(ids, [])


def test_expand_prompts_is_prompt_major():
    assert expand_prompts(["a", "b"], 3) == ["a", "a", "a", "b", "b", "b"]


def test_generate_batch_layout(policy):
    tok = policy.tokenizer
    batch = generate(policy, None, PROMPTS, num_samples=3, max_new_tokens=10, seed=0)
    n = len(PROMPTS) * 3
    assert batch.prompt_ids.shape[0] == batch.completion_ids.shape[0] == n == len(batch.texts) == len(batch)
    assert batch.completion_ids.shape[1] <= 10
    # left padding: real tokens flush right, padding (mask 0) on the left
    lengths = batch.prompt_mask.sum(1)
    P = batch.prompt_ids.shape[1]
    for i in range(n):
        assert batch.prompt_mask[i, P - lengths[i]:].all() and not batch.prompt_mask[i, :P - lengths[i]].any()
        # prompt-major rows: row i*G + g holds prompt i
        assert tok.decode(batch.prompt_ids[i, P - lengths[i]:]) == PROMPTS[i // 3] == batch.prompts[i]
    assert torch.equal(batch.completion_mask, completion_mask(batch.completion_ids, tok.eos_token_id))
    for i in range(n):
        k = int(batch.completion_mask[i].sum())
        assert batch.texts[i] == tok.decode(batch.completion_ids[i, :k], skip_special_tokens=True)
        # after the first EOS generate only writes pad
        assert (batch.completion_ids[i, k:] == tok.pad_token_id).all()
    assert batch.input_ids.shape == batch.attention_mask.shape == (n, P + batch.completion_ids.shape[1])


def test_generate_is_reproducible_from_a_seed_and_leaves_global_rng_alone(policy):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate(policy, None, PROMPTS, 2, 12, seed=7)
    assert torch.equal(torch.get_rng_state(), before), "a seeded generate must not consume the global RNG"
    b = generate(policy, None, PROMPTS, 2, 12, seed=7)
    c = generate(policy, None, PROMPTS, 2, 12, seed=8)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def multinomial(logits, temperature):
    return torch.multinomial(torch.softmax(logits.float() / temperature, dim=-1), num_samples=1).squeeze(1)


def naive_sample(model, prompt_ids, prompt_mask, max_new_tokens, temperature, eos, pad, draw=multinomial):
    """Token by token, full forward each time (no cache), softmax(logits / T) (no top-k, no top-p), drawn
    with `draw` (torch.multinomial by default)."""
    ids, mask = prompt_ids, prompt_mask
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    out = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        nxt = draw(logits[:, -1, :], temperature)  # (N,)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        done |= nxt == eos
        if done.all():
            break
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generate_draws_exactly_the_policy_tokens_of_a_naive_sampler(policy, temperature):
    """Same RNG stream, same tokens: generate adds no truncation or penalty, and its left padding
    and positions match a sampler that recomputes everything from scratch."""
    tok = policy.tokenizer
    batch = generate(policy, None, PROMPTS, 2, 12, temperature, seed=3)
    torch.manual_seed(3)
    naive = naive_sample(policy.model, batch.prompt_ids, batch.prompt_mask, 12, temperature,
                         tok.eos_token_id, tok.pad_token_id)
    assert torch.equal(batch.completion_ids, naive)


def test_generate_ignores_a_checkpoint_generation_config(policy):
    """A model's generation_config.json (repetition penalty, top_k=50, ...) must not change the sampler."""
    model = policy.model
    ref = generate(policy, None, PROMPTS, 2, 10, seed=1)
    saved = model.generation_config
    try:
        model.generation_config = type(saved)(repetition_penalty=5.0, top_k=3, top_p=0.5, no_repeat_ngram_size=1)
        other = generate(policy, None, PROMPTS, 2, 10, seed=1)
        assert model.generation_config.repetition_penalty == 5.0  # restored after generate
    finally:
        model.generation_config = saved
    assert torch.equal(ref.completion_ids, other.completion_ids)


def test_generate_rejects_bad_input(policy):
    with pytest.raises(ValueError, match="prompts"):
        generate(policy, None, [], 1, 4)
    with pytest.raises(ValueError, match="num_samples"):
        generate(policy, None, PROMPTS, 0, 4)
    with pytest.raises(ValueError, match="temperature"):
        generate(policy, None, PROMPTS, 1, 4, temperature=0.0)
    with pytest.raises(ValueError, match="context"):
        generate(policy, None, PROMPTS, 1, 1000)
    with pytest.raises(ValueError, match="no tokens"):
        generate(policy, None, ["", "a"], 1, 4)


def test_sample_categorical_draws_each_token_with_its_probability():
    """Inverse-CDF draws: each token's frequency within 5 standard errors of its probability (at two
    temperatures), a token of probability 0 never drawn."""
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125, 0.0], [0.05, 0.05, 0.1, 0.3, 0.5]])
    n = 100_000
    torch.manual_seed(0)
    for temperature in (1.0, 0.5):
        target = torch.softmax(probs.log() / temperature, dim=-1)  # (2, 5)
        draws = sample_categorical(probs.log().repeat_interleave(n, dim=0), temperature).view(2, n)
        freq = torch.stack([torch.bincount(row, minlength=5) for row in draws]).double() / n
        se = (target * (1 - target) / n).sqrt().double()
        assert ((freq - target).abs() <= 5 * se + 1e-12).all(), (freq, target)
        assert freq[0, 4] == 0, "probability 0: never drawn"
    with pytest.raises(ValueError, match="N, V"):
        sample_categorical(torch.zeros(5))


PREFIXED = ["system: be kind. user: " + p for p in PROMPTS]  # one prefix shared by every prompt


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("prompts", [PROMPTS, PREFIXED], ids=["plain", "prefixed"])
@pytest.mark.parametrize("num_samples,temperature", [(3, 1.0), (1, 0.7)])
def test_shared_prompt_sampler_draws_the_tokens_of_a_naive_sampler(policy, arch, prompts, num_samples, temperature):
    """generate_shared: each prompt (and their shared prefix) prefilled once, the cache expanded for the
    samples, tokens drawn by inverse CDF. Same RNG stream, same tokens as a sampler that recomputes
    every forward from scratch on the plain left-padded rows; the log-probs it drew with are the
    policy's (one forward over prompt + completion)."""
    policy = policy if arch == "gpt2" else make_llama_policy()
    tok = policy.tokenizer
    batch, _ = generate_shared(policy.model, tok, prompts, num_samples, 12, temperature, seed=3, return_logps=True)
    plain = generate(policy, None, prompts, num_samples, 12, temperature, seed=3)
    assert torch.equal(batch.prompt_ids, plain.prompt_ids) and torch.equal(batch.prompt_mask, plain.prompt_mask)
    torch.manual_seed(3)
    naive = naive_sample(policy.model, batch.prompt_ids, batch.prompt_mask, 12, temperature,
                         tok.eos_token_id, tok.pad_token_id, draw=sample_categorical)
    assert torch.equal(batch.completion_ids, naive)
    assert torch.equal(batch.completion_mask, completion_mask(batch.completion_ids, tok.eos_token_id))
    with torch.no_grad():
        logps = per_token_logps(policy.model, batch.input_ids, batch.attention_mask, batch.completion_ids.shape[1],
                                temperature)
    m = batch.completion_mask.bool()
    assert torch.allclose(logps[m], batch.sampling_logps[m], atol=1e-5)
