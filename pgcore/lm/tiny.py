"""The `tiny` policy: a GPT-2-architecture LM and a byte-level BPE tokenizer trained in seconds on the
review corpus pgcore ships, plus the small training helpers the other built models (`tiny-sentiment`,
`tiny-arith`) share with it.

The default build ships with pgcore (`pgcore/models/tiny/`, rebuilt by `python -m pgcore.lm.shipped`); another
config is built once, then cached under `pgcore.files.cache_dir()` in `tiny-<fingerprint>/` (the fingerprint
hashes the corpus, the config and the build code), written atomically with `atomic_dir`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..files import quiet_transformers
from ..files import atomic_dir, data_path, model_dir

__all__ = [
    "TinyConfig", "read_reviews", "train_tokenizer", "build_tiny", "tiny_fingerprint", "tiny_dir", "fingerprint",
    "length_batches", "pad_right", "one_thread", "train_lm", "kernels", "save_build", "lazy_transformers", "EOS",
    "BUILD_FILE",
]

EOS = "<|endoftext|>"
BUILD_FILE = "pgcore_build.json"  # how a cached model was made: config, fingerprint, loss/accuracy, seconds
_BUILD_VERSION = 1  # bump when the build code changes what it produces


@dataclass(frozen=True)
class TinyConfig:
    """Architecture and training of the `tiny` policy. Every field enters the cache fingerprint."""

    vocab_size: int = 1536
    """byte-level BPE vocabulary size (256 bytes + merges + the EOS token)"""
    n_layer: int = 2
    """transformer blocks"""
    n_head: int = 4
    """attention heads per block"""
    n_embd: int = 96
    """width of the residual stream"""
    n_positions: int = 128
    """longest prompt + completion, in tokens (reviews are <= ~40)"""
    steps: int = 1000
    """optimizer steps of next-token training (~6 epochs of the corpus)"""
    batch_size: int = 32
    """reviews per step (each review is followed by EOS, so the model learns to stop)"""
    lr: float = 3e-3
    """peak AdamW learning rate (linear warmup, cosine decay)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    seed: int = 0
    """seeds the initialization and the batch order: same seed, same weights"""


def lazy_transformers():
    """`import transformers`, only when a model is actually needed (it is heavy)."""
    import transformers  # noqa: PLC0415

    return transformers


def read_reviews(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The labeled review corpus: a list of (label, text), label "positive" or "negative".

    `path` defaults to the shipped `data/reviews.tsv` (`pgcore.utils.data_path`): a `label<TAB>text`
    file with a header line.
    """
    path = Path(path) if path is not None else data_path("reviews.tsv")
    if not path.is_file():
        raise ValueError(f"review corpus {str(path)!r} not found; accepted: a label<TAB>text file "
                         "such as data/reviews.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [tuple(line.split("\t", 1)) for line in lines[1:] if line.strip()]
    if not rows or any(len(r) != 2 or r[0] not in ("positive", "negative") for r in rows):
        raise ValueError(f"review corpus {str(path)!r} is malformed; accepted: a header, then label<TAB>text lines, "
                         "label positive or negative")
    return rows  # type: ignore[return-value]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers.

    `<|endoftext|>` is the EOS and the pad token (as in GPT-2 and SmolLM2, where pad == EOS).
    Any string can be encoded (the 256 bytes are in the vocabulary). Deterministic.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    transformers = lazy_transformers()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left")


def fingerprint(kind: str, corpus: Path, config: Any) -> str:
    """12 hex digits naming a build: the corpus bytes, the kind, the build-code version and the config."""
    h = hashlib.sha256()
    h.update(corpus.read_bytes())
    h.update(json.dumps({"kind": kind, "version": _BUILD_VERSION, "config": asdict(config)}, sort_keys=True).encode())
    return h.hexdigest()[:12]


def tiny_fingerprint(config: TinyConfig | None = None, corpus: str | os.PathLike | None = None) -> str:
    """12 hex digits identifying a `tiny` build: hash of the corpus bytes, the config and the build code."""
    return fingerprint("tiny", Path(corpus) if corpus else data_path("reviews.tsv"), config or TinyConfig())


def length_batches(lengths: list[int], batch_size: int, steps: int, generator: torch.Generator):
    """`steps` index batches over shuffled epochs, each of `batch_size` indices of similar length.

    Length bucketing (sort each window of 16 batches by length, then shuffle the batches) keeps
    padding, hence wasted compute, small. Deterministic given the generator.
    """
    window = 16 * batch_size
    lengths_t = torch.tensor(lengths)
    order = torch.empty(0, dtype=torch.long)
    ready: list[torch.Tensor] = []
    for _ in range(steps):
        if not ready:
            while len(order) < window:
                order = torch.cat([order, torch.randperm(len(lengths), generator=generator)])
            chunk, order = order[:window], order[window:]
            chunk = chunk[torch.argsort(lengths_t[chunk], stable=True)]
            ready = list(chunk.split(batch_size))
            ready = [ready[i] for i in torch.randperm(len(ready), generator=generator).tolist()]
        yield ready.pop()


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids right-padded with `pad_id` and the (B, L) mask of real tokens."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@contextlib.contextmanager
def one_thread():
    """Build on one CPU thread: the weights then do not depend on the machine's core count, and
    these tiny matrices gain little from more threads anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_lm(model, batches_of_inputs, steps: int, lr: float, weight_decay: float) -> float:
    """AdamW with warmup + cosine decay on `model(**inputs).loss`; returns the mean loss of the last 10%."""
    transformers = lazy_transformers()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = transformers.get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)
    model.train()
    losses = []
    with one_thread(), quiet_transformers():
        for inputs in batches_of_inputs:
            loss = model(**inputs).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
    model.eval()
    tail = losses[-max(1, steps // 10):]
    return sum(tail) / len(tail)


def build_tiny(out_dir: str | os.PathLike, config: TinyConfig | None = None,
               corpus: str | os.PathLike | None = None) -> Path:
    """Train the `tiny` tokenizer and GPT-2 LM on the review texts; `save_pretrained` both into `out_dir`.

    Each review is followed by EOS (so the model learns to stop) and starts at position 0, like a
    prompt does. CPU training, seeded: the same config and corpus give the same weights.
    `out_dir` is written atomically. Returns it.
    """
    transformers = lazy_transformers()
    config = config or TinyConfig()
    corpus = Path(corpus) if corpus else data_path("reviews.tsv")
    texts = [text for _, text in read_reviews(corpus)]
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    tokenizer.model_max_length = config.n_positions
    eos = tokenizer.eos_token_id
    seqs = [ids[: config.n_positions - 1] + [eos] for ids in tokenizer(texts)["input_ids"]]
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout: the policy is exact
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    ))

    def inputs():
        generator = torch.Generator().manual_seed(config.seed)
        for idx in length_batches([len(s) for s in seqs], config.batch_size, config.steps, generator):
            ids, mask = pad_right([seqs[i] for i in idx], eos)
            yield {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    final_loss = train_lm(model, inputs(), config.steps, config.lr, config.weight_decay)
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    build = {"kind": "tiny", "fingerprint": tiny_fingerprint(config, corpus), "config": asdict(config),
             "corpus": corpus.name, "parameters": model.num_parameters(), "final_train_loss": round(final_loss, 4),
             "train_seconds": round(time.perf_counter() - start, 2)}
    return save_build(out_dir, model, tokenizer, build)


def kernels() -> dict:
    """What decides a build's last bits besides the recipe: torch, its CPU kernels (`ATEN_CPU_CAPABILITY`), MKL's
    instruction set (`MKL_ENABLE_INSTRUCTIONS`) and the processor, whose vendor and model MKL dispatches on."""
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS", "auto"), "cpu": cpu}


def save_build(out_dir: str | os.PathLike, model, tokenizer, build: dict) -> Path:
    """`save_pretrained` a built model and its tokenizer into `out_dir` with BUILD_FILE (how it was
    made), atomically: a reader sees no folder or the complete one. Returns `Path(out_dir)`."""
    build = {**build, "built_on": kernels()}
    with atomic_dir(out_dir) as tmp, quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BUILD_FILE).write_text(json.dumps(build, indent=2) + "\n")
    return Path(out_dir)


def tiny_dir(config: TinyConfig | None = None, cache: str | os.PathLike | None = None) -> Path:
    """The `tiny` build for `config`: the shipped one for the default recipe, else built once under `cache`
    (default `pgcore.files.cache_dir()`)."""
    return model_dir("tiny", tiny_fingerprint(config), lambda p: build_tiny(p, config), cache, BUILD_FILE)
