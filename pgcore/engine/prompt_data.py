"""Prompt datasets: `--prompts` as a text file, a `.jsonl` / `.json` / `.csv` / `.parquet` file, a folder saved by
`datasets`' `save_to_disk`, or (online) a hub dataset name.

A table's prompt is its `--prompt-column` (default `prompt`; when that column is missing and there is a
`messages` column, that one): a string, or a chat as a list of `{"role", "content"}` turns, which goes
through the policy's chat template. Every other column is handed to reward functions, row by row
(`f(prompts, completions, answer=[...])`, TRL's convention). A text file is one prompt a line, no columns
(`pgcore.lm.models.load_prompts`, as before).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["PromptData", "load_prompt_data", "prompt_data_from_rows", "format_prompt_data", "TABLE_SUFFIXES"]

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ACCEPTED = ("a text file (one prompt a line), a .jsonl, .json, .csv or .parquet file, a folder saved with "
            "datasets' save_to_disk, or a hub dataset name when online")
RESERVED = ("prompts", "completions")  # the reward functions' own keywords


@dataclass
class PromptData:
    """Prompts (strings, or chats: lists of turns) and the other columns, one value a prompt."""

    prompts: list[Any]
    """one prompt a row: a string, or a list of {"role", "content"} dicts"""
    columns: dict[str, list] = field(default_factory=dict)
    """the dataset's other columns, each a list as long as prompts"""

    @property
    def texts(self) -> list[str]:
        """Each prompt as one string (a chat as its JSON): what logs, checks and checkpoints see."""
        return [p if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in self.prompts]

    def rows(self, indices: Sequence[int], repeat: int = 1) -> tuple[list[Any], dict[str, list]]:
        """The prompts and columns of `indices`, each repeated `repeat` times (one per sample)."""
        prompts = [self.prompts[i] for i in indices for _ in range(repeat)]
        return prompts, {k: [v[i] for i in indices for _ in range(repeat)] for k, v in self.columns.items()}


def _native(x: Any) -> Any:
    """numpy / pyarrow values as plain Python ones (lists, numbers, strings)."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Mapping):
        return {k: _native(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_native(v) for v in x]
    return x


def _is_chat(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(m, Mapping) and "role" in m and "content" in m
                                                   for m in x)


def prompt_data_from_rows(rows: Sequence[Mapping[str, Any]], prompt_column: str = "prompt",
                          source: str = "prompts") -> PromptData:
    """PromptData from table rows (dicts); ValueError (one line, naming the bad row or column) else."""
    if not rows:
        raise ValueError(f"prompt dataset {source!r} has no rows; accepted: at least one prompt")
    names = list(dict.fromkeys(k for r in rows for k in r))
    column = prompt_column
    if column not in names and column == "prompt" and "messages" in names:
        column = "messages"
    if column not in names:
        raise ValueError(f"prompt dataset {source!r} has no column {prompt_column!r} (its columns: "
                         f"{', '.join(map(repr, names))}); accepted: --prompt-column naming one of them")
    clash = [k for k in names if k in RESERVED and k != column]
    if clash:
        raise ValueError(f"prompt dataset {source!r} has a column {clash[0]!r}, the name of a reward function's "
                         "own argument; accepted: other column names")
    prompts = []
    for i, r in enumerate(rows):
        p = _native(r.get(column))
        if isinstance(p, str) and p.strip():
            prompts.append(p.strip())
        elif _is_chat(p):
            prompts.append([{"role": str(m["role"]), "content": str(m["content"])} for m in p])
        else:
            raise ValueError(f"prompt dataset {source!r}: row {i} has {column} {p!r:.60}; accepted: a non-empty "
                             "string, or a chat (a list of {'role': ..., 'content': ...} turns)")
    columns = {k: [_native(r.get(k)) for r in rows] for k in names if k != column}
    return PromptData(prompts=prompts, columns=columns)


def _read_table(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"prompt file {str(path)!r}: line {n} is not JSON ({e}); accepted: one JSON "
                                     "object a line") from None
                if not isinstance(row, dict):
                    raise ValueError(f"prompt file {str(path)!r}: line {n} is {type(row).__name__}; accepted: "
                                     "one JSON object a line")
                rows.append(row)
        return rows
    if suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"prompt file {str(path)!r} is not JSON ({e}); accepted: a list of objects") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"prompt file {str(path)!r} is not a list of objects; accepted: a list of objects")
        return rows
    import pandas as pd

    try:
        if suffix == ".csv":  # every cell a string, as written (an answer "007" stays "007")
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            df = pd.read_parquet(path)
    except ImportError as e:
        raise ValueError(f"prompt file {str(path)!r}: {e}; accepted: pip install pyarrow") from None
    except Exception as e:  # pandas' and pyarrow's parse errors come in many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"prompt file {str(path)!r} cannot be read ({first}); accepted: {ACCEPTED}") from None
    return [{k: _native(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def _read_datasets(spec: str, local: bool) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ValueError(f"prompt dataset {spec!r} needs the datasets package; accepted: pip install datasets, "
                         f"or {ACCEPTED}") from None
    try:
        if local:
            ds = datasets.load_from_disk(spec)
        else:
            ds = datasets.load_dataset(spec)
    except Exception as e:  # FileNotFoundError, ConnectionError, DatasetNotFoundError, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        where = "cannot be read as a saved dataset" if local else "is not a local file or folder, nor loadable"
        raise ValueError(f"prompt dataset {spec!r} {where} ({first}); accepted: {ACCEPTED}") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise ValueError(f"prompt dataset {spec!r} has no train split (its splits: {', '.join(ds)}); "
                             "accepted: a dataset with a train split")
        ds = ds["train"]
    return list(ds)


def load_prompt_data(spec: str | os.PathLike | None, prompt_column: str = "prompt") -> PromptData:
    """Read `--prompts` (see the module docstring). None: the shipped data/prompts.txt."""
    from ..files import data_path
    from ..lm.models import load_prompts

    if spec is None:
        return PromptData(load_prompts(None))
    path = Path(spec)
    if not path.exists() and not path.is_absolute() and str(path.parent) in (".", "data") \
            and data_path(path.name).exists():
        path = data_path(path.name)  # `data/NAME` outside the checkout: the file pgcore ships
    if path.is_dir():
        return prompt_data_from_rows(_read_datasets(str(path), local=True), prompt_column, str(spec))
    if path.suffix.lower() in TABLE_SUFFIXES:
        if not path.is_file():
            raise ValueError(f"prompt file {str(spec)!r} not found; accepted: {ACCEPTED}")
        return prompt_data_from_rows(_read_table(path), prompt_column, str(spec))
    if path.is_file() or path.suffix or str(spec).startswith((".", "/", "~")):
        return PromptData(load_prompts(spec))  # a text file, one prompt a line (its own errors)
    return prompt_data_from_rows(_read_datasets(str(spec), local=False), prompt_column, str(spec))


def format_prompt_data(policy, data: PromptData) -> list[str]:
    """The strings the policy is prompted with: text prompts as `format_prompts` makes them, chats through
    the policy's chat template (ValueError when its tokenizer has none)."""
    from ..lm.models import format_prompts

    chats = [i for i, p in enumerate(data.prompts) if not isinstance(p, str)]
    if not chats:
        return format_prompts(policy, data.prompts)
    if not getattr(policy.tokenizer, "chat_template", None):
        raise ValueError(f"prompt row {chats[0]} is a chat (a list of turns), but model {policy.name!r} has no "
                         "chat template; accepted: text prompts, or a model with a chat template")
    texts = format_prompts(policy, [p if isinstance(p, str) else "" for p in data.prompts])
    for i in chats:
        texts[i] = policy.tokenizer.apply_chat_template(data.prompts[i], tokenize=False, add_generation_prompt=True)
    return texts
