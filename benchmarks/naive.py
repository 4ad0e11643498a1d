"""The engine with issue 29's fast paths swapped for their naive twins, for before/after measurements.

    import naive; naive.use_naive_twins(); LMConfig(..., **naive.NAIVE_CONFIG)

- `share_prompt=False`: Hugging Face `generate` and one forward over every prompt + completion row (the shared
  prompt's twin; it also turns off `decode.GPT2Decoder`, which only the shared-prompt sampler uses)
- `kl_log_every=1`: the frozen reference at every step, also with kl_coef 0
- `use_naive_twins()`: transformers' own GELU (`fused.py`'s twin), the log-softmax one row at a time
  (`logprobs.row_chunks`'s twin), the model's own forward (`gpt2.GPT2Forward`'s twin) and the reward model's
  (`rewards.classifier_score`'s), the logged entropy from its own log-softmax
  (`logprobs.selective_log_softmax_and_entropy`'s twin). Call it in a fresh process, before the Trainer is built.
"""
from __future__ import annotations

NAIVE_CONFIG = dict(share_prompt=False, kl_log_every=1)


def use_naive_twins() -> None:
    from pgcore.engine import gpt2, logprobs, rewards
    from pgcore.engine import trainer as trainer_module

    trainer_module.fuse_gelu = lambda model: 0
    logprobs.row_chunks.__kwdefaults__ = {"elements": 1}
    gpt2.GPT2Forward.supports = staticmethod(lambda model: False)
    rewards.classifier_score = lambda reward, texts: None
    logprobs.selective_log_softmax_and_entropy = lambda logits, index: (
        logprobs.selective_log_softmax(logits, index), logprobs._entropy(logits, grad=False))
