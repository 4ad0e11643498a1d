"""Tiny stand-ins for the LM tests: a random 1-layer GPT-2, a byte-level BPE tokenizer trained on a few
sentences, and a reward that counts a letter. Built in well under a second, no files, no hub."""
from __future__ import annotations

import functools

import torch

SENTENCES = [
    "the movie was great and the acting was good",
    "the food was bad and the service was slow",
    "i loved this film, a wonderful story",
    "terrible plot, boring and too long",
    "excellent cast, fine music, nice ending",
    "awful sound, weak script, poor pacing",
]
EOS = "<|endoftext|>"


@functools.lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    return tok.to_str()


def make_tokenizer(vocab_size: int = 300):
    """Byte-level BPE (256 byte symbols + merges), eos == pad == <|endoftext|>, left padding."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        eos_token=EOS,
        pad_token=EOS,
        padding_side="left",
    )
    return tok


def make_model(tokenizer, seed: int = 0, n_layer: int = 1, n_embd: int = 32, n_positions: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(cfg).eval()


from pgcore.lm.models import Policy  # noqa: E402
from pgcore.lm.rewards import RewardModel  # noqa: E402


def make_policy(seed: int = 0, **kw):
    tok = make_tokenizer()
    return Policy(model=make_model(tok, seed=seed, **kw), tokenizer=tok, name="fake-gpt2", chat_template=False)


def make_llama_policy(seed: int = 0):
    """A tiny random Llama (SmolLM2's architecture: rotary positions, RMSNorm, tied embeddings, grouped
    key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    return Policy(model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, name="fake-llama", chat_template=False)


class LetterReward(RewardModel):
    """Reward = fraction of the completion's characters equal to `letter` (0 for an empty text)."""

    def __init__(self, letter: str = "e", label: str | None = None):
        self.letter, self.name, self.label = letter, f"letter-{letter}", label

    def score(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([t.count(self.letter) / max(len(t), 1) for t in texts], dtype=torch.float32)
