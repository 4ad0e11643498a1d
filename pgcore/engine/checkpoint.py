"""Checkpoints that resume a run *exactly*: model, optimizer, scheduler, step, metrics, config, RNG states.

A checkpoint is one folder, `checkpoint-<step>/`, written atomically (built beside its final name,
then renamed), so a crash mid-save leaves the previous checkpoints as they were:

    checkpoint-<step>/
        model/              save_pretrained (config.json, model.safetensors, tokenizer files), loadable
                            with from_pretrained; a plain nn.Module gets model/state_dict.pt instead
        optimizer.pt        optimizer.state_dict()
        scheduler.pt        lr scheduler state_dict()
        rng_state.pt        python `random`, numpy, torch CPU, every CUDA device, named torch.Generators
        trainer_state.json  step, metrics history, config, extra

Exact resume needs every source of randomness and every piece of optimizer state back as it was;
the test of that is `tests/test_lm_trainer.py::test_resume_reproduces_uninterrupted_run`.
Nothing here knows what is being trained.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..files import atomic_dir, quiet_transformers

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "checkpoint_step",
    "rng_state",
    "set_rng_state",
    "quiet_transformers",
]

FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")
_STATE = "trainer_state.json"
_REQUIRED = (_STATE, "rng_state.pt", "model")


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state of the process: python `random`, numpy's global, torch CPU, each CUDA device,
    plus the states of named `torch.Generator`s. Plain lists/ints/tensors (loadable with weights_only).

    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what `rng_state` captured (CUDA states only when CUDA is present).

    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise ValueError(f"checkpoint has no RNG state for generator {name!r}; it has {sorted(saved)}")
        g.set_state(saved[name])


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-<step>` folder name, or None for any other name.

    """
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>/` folders of `directory`, oldest step first (temp folders ignored).

    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None when there is none.

    """
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: str | os.PathLike, keep_last: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest checkpoints (None or 0: keep all). Returns the deleted paths.

    """
    if keep_last is None or keep_last <= 0:
        return []
    old = list_checkpoints(directory)[:-keep_last]
    for path in old:
        shutil.rmtree(path)
    return old


def _save_model(model, tokenizer, folder: Path) -> None:
    folder.mkdir()
    if hasattr(model, "save_pretrained"):
        with quiet_transformers():
            model.save_pretrained(folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
    else:
        torch.save(model.state_dict(), folder / "state_dict.pt")


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    *,
    model,
    optimizer=None,
    scheduler=None,
    tokenizer=None,
    history: list[dict] | None = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write `directory/checkpoint-<step>/` atomically, then prune to the `keep_last` newest.

    model: a transformers model (saved with save_pretrained, with `tokenizer` beside it) or any
    nn.Module (state_dict). history: the metrics rows so far. config / extra: JSON-able dicts.
    generators: named torch.Generators whose states must come back on resume. Returns the path.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    from .metrics import jsonable

    path = Path(directory) / f"checkpoint-{step}"
    with atomic_dir(path) as tmp:
        _save_model(model, tokenizer, tmp / "model")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(generators), tmp / "rng_state.pt")
        state = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "config": jsonable(dict(config or {})),
            "extra": jsonable(dict(extra or {})),
            "history": jsonable(list(history or [])),
        }
        (tmp / _STATE).write_text(json.dumps(state, indent=1) + "\n")
    prune_checkpoints(directory, keep_last)
    return path


@dataclass
class Checkpoint:
    """A checkpoint read into memory (nothing applied yet): validate it, then `apply` it.

    """

    path: Path
    """the checkpoint-<step>/ folder"""
    step: int
    """optimizer steps done when it was saved"""
    history: list[dict]
    """metrics rows up to `step`"""
    config: dict
    """the run's config as saved"""
    extra: dict
    """anything else the trainer stored (model name, reward label, ...)"""
    model_state: dict[str, torch.Tensor]
    """the model's full state_dict (tied weights included)"""
    optimizer_state: dict | None
    scheduler_state: dict | None
    rng: dict = field(repr=False, default_factory=dict)

    def apply(self, model=None, optimizer=None, scheduler=None, generators=None, restore_rng: bool = True) -> None:
        """Load the states into live objects; shape or key mismatches raise ValueError."""
        if model is not None:
            _check_model_state(model, self.model_state, self.path)
            model.load_state_dict(self.model_state)
        if optimizer is not None:
            if self.optimizer_state is None:
                raise ValueError(f"checkpoint {self.path} has no optimizer.pt")
            try:
                optimizer.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError, RuntimeError) as e:
                raise ValueError(f"checkpoint {self.path}: optimizer state does not match ({e})") from None
        if scheduler is not None:
            if self.scheduler_state is None:
                raise ValueError(f"checkpoint {self.path} has no scheduler.pt")
            scheduler.load_state_dict(self.scheduler_state)
        if restore_rng:
            set_rng_state(self.rng, generators)


def _check_model_state(model, state: Mapping[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} holds a different model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"checkpoint {path} holds a different model: {name} is {tuple(state[name].shape)}, "
                f"this model has {tuple(tensor.shape)}"
            )


def _read_model_state(folder: Path, model) -> dict[str, torch.Tensor]:
    if (folder / "state_dict.pt").exists():
        return torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
    with quiet_transformers():
        loaded = type(model).from_pretrained(folder, dtype=next(model.parameters()).dtype)
    return {k: v.detach() for k, v in loaded.state_dict().items()}


def read_checkpoint(path: str | os.PathLike, model=None, *, map_location="cpu") -> Checkpoint:
    """Read and check a checkpoint folder without changing anything (so a bad one is refused
    before any output is touched). `model`: the live model, needed to read save_pretrained weights
    and to check they fit it. Any unreadable, missing or mismatched part raises ValueError.

    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is not a folder; accepted: a checkpoint-<step>/ folder")
    missing = [name for name in _REQUIRED if not (path / name).exists()]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    if model is None and not (path / "model" / "state_dict.pt").exists():
        raise ValueError(f"checkpoint {path} holds a save_pretrained model; pass the live model to read it")

    def load(name: str, location="cpu"):
        file = path / name
        return torch.load(file, map_location=location, weights_only=True) if file.exists() else None

    try:
        state = json.loads((path / _STATE).read_text())
        step = state["step"]
        if not isinstance(step, int) or state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"step {step!r}, format_version {state.get('format_version')!r}")
        rng, opt, sch = load("rng_state.pt"), load("optimizer.pt", map_location), load("scheduler.pt")
        model_state = _read_model_state(path / "model", model)
    except Exception as e:  # json / torch.load / safetensors / from_pretrained errors come in many types
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"checkpoint {path} is corrupt ({type(e).__name__}: {first_line})") from None
    ckpt = Checkpoint(
        path=path, step=step, history=list(state.get("history", [])), config=dict(state.get("config", {})),
        extra=dict(state.get("extra", {})), model_state=model_state, optimizer_state=opt, scheduler_state=sch, rng=rng,
    )
    if model is not None:
        _check_model_state(model, model_state, path)
    return ckpt


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model=None,
    optimizer=None,
    scheduler=None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
) -> Checkpoint:
    """Read a checkpoint (see `read_checkpoint`) and load it into the given objects. Returns it
    (`.step`, `.history`, `.config`, `.extra`).

    """
    ckpt = read_checkpoint(path, model)
    ckpt.apply(model, optimizer, scheduler, generators, restore_rng)
    return ckpt


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bytes), in state_dict order.

    Two models hash alike exactly when their weights are bit-identical. 
    """
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
