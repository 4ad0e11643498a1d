"""A run logger that knows nothing about what is being trained: one row of numbers per step.

It writes the four files of a run (every write atomic, so a crash never leaves half a file):

- `training_metrics.csv`: one row per step, one column per metric (with `stream=True` each row is also
  appended and flushed as it is logged, so `tail -f` follows a run and a killed run keeps its rows);
- `log_history.json`: the same rows as a list of dicts (Hugging Face Trainer's `log_history` style);
- `summary.json`: whatever the caller describes the run with (config, models, versions, ...);
- `training_curves.png`: one panel per chosen metric against the step.

REINFORCE (02) and the LM trainer (04) both use it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..files import atomic_path, atomic_write_text

__all__ = [
    "StepTimer",
    "MetricsLogger",
    "write_csv",
    "read_csv",
    "write_json",
    "plot_curves",
    "environment_info",
    "jsonable",
    "CSV_NAME",
    "HISTORY_NAME",
    "SUMMARY_NAME",
    "CURVES_NAME",
]

CSV_NAME = "training_metrics.csv"
HISTORY_NAME = "log_history.json"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "training_curves.png"

Panel = str | tuple  # "column" or (title, column) or (title, column, std_column)


def jsonable(x: Any) -> Any:
    """Plain JSON values: tensors/numpy scalars to numbers, non-finite floats to None, paths to str."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (str, bool)) or x is None:
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if hasattr(x, "item") and callable(x.item):  # torch / numpy scalar
        try:
            x = x.item()
        except (ValueError, RuntimeError):
            return str(x)
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return str(x)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically (NaN/inf become null, so the file is valid JSON).

    """
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def write_csv(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (dicts) as a CSV with a header, atomically. Columns: the union of keys, first-seen order.

    Floats are written with full precision (`repr`), so reading the file back gives the same numbers.
    """
    import pandas as pd

    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    df = pd.DataFrame(list(history), columns=columns)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def read_csv(path: str | os.PathLike):
    """Read a `training_metrics.csv` back as a pandas DataFrame.

    """
    import pandas as pd

    return pd.read_csv(path)


def _panel_spec(panel: Panel) -> tuple[str, str, str | None]:
    if isinstance(panel, str):
        return panel, panel, None
    if isinstance(panel, tuple) and len(panel) in (2, 3) and all(isinstance(p, str) for p in panel):
        return panel[0], panel[1], panel[2] if len(panel) == 3 else None
    raise ValueError(f"panel {panel!r} not understood; accepted: 'column', (title, column) or "
                     "(title, column, std_column)")


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    panels: Sequence[Panel] | None = None,
    *,
    x: str = "step",
    title: str | None = None,
) -> Path:
    """Save one panel per metric against `x` to `path` (PNG), atomically. Returns the path.

    panels: columns to plot; an entry may be `(title, column)` or `(title, column, std_column)`
    (then a ±std band is shaded). Default: every numeric column except `x` and timings.
    Columns missing from the history are skipped. A rolling mean is drawn over noisy curves.
    Uses matplotlib's object API (no pyplot), so it never touches a notebook's figures or backend.
    """
    import numpy as np
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    df = pd.DataFrame(list(history))
    if panels is None:
        panels = [
            c for c in df.columns
            if c != x and not c.startswith("time") and pd.api.types.is_numeric_dtype(df[c])
        ]
    specs = [_panel_spec(p) for p in panels]
    specs = [s for s in specs if s[1] in df.columns]
    n = max(len(specs), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + (0.4 if title else 0)), dpi=80)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9 if title else 0.94, wspace=0.28, hspace=0.5)
    FigureCanvasAgg(fig)
    xs = df[x].to_numpy() if x in df.columns else np.arange(1, len(df) + 1)
    for i, (panel_title, col, std_col) in enumerate(specs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ys = pd.to_numeric(df[col], errors="coerce")
        ok = ys.notna().to_numpy()  # a column logged every few steps (the KL, kl_log_every > 1): through its points
        xs_c, ys = xs[ok], ys[ok].reset_index(drop=True)
        window = max(1, len(ys) // 20)
        ax.plot(xs_c, ys, color="C0", alpha=0.45 if window > 1 else 1.0, linewidth=1,
                marker="." if not ok.all() else None)
        if std_col is not None and std_col in df.columns:
            sd = pd.to_numeric(df[std_col], errors="coerce")[ok].reset_index(drop=True)
            ax.fill_between(xs_c, ys - sd, ys + sd, color="C0", alpha=0.15, linewidth=0)
        if window > 1:
            ax.plot(xs_c, ys.rolling(window, min_periods=1).mean(), color="C0", linewidth=2)
        ax.set_title(panel_title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def environment_info(**extra: Any) -> dict[str, Any]:
    """Versions and machine facts for a run's summary: python, platform, torch, numpy, and
    transformers / accelerate when already imported (never imported here). `extra` is merged in.

    """
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "numpy", "transformers", "tokenizers", "accelerate", "gymnasium"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "unknown")
    info.update(extra)
    return info


class MetricsLogger:
    """Collects one dict of numbers per step and writes the run's files to `output_dir`.

    Usage:
        logger = MetricsLogger("output/run", panels=["return", "loss"])
        for step in ...:
            logger.log({"step": step, "return": ret, "loss": loss})
        logger.write(summary={"config": ...})

    `output_dir=None` keeps everything in memory (`logger.history`). `history` may be given to
    continue a resumed run. Without `stream`, only `write` touches the disk; call it as often as you
    like. With `stream=True`, `log` also adds each row to the CSV at once (flushed): the first row
    logged rewrites the file from `history` (atomically, so a resumed run drops the rows a killed
    run wrote after its checkpoint), later rows are appended.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None,
        *,
        panels: Sequence[Panel] | None = None,
        title: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        stream: bool = False,
    ):
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.stream = stream
        self._csv_columns: list[str] | None = None  # the header of the CSV on disk, once this logger wrote it
        self.panels = list(panels) if panels is not None else None
        if self.panels is not None:
            for p in self.panels:
                _panel_spec(p)
        self.title = title
        self.history: list[dict[str, Any]] = [dict(r) for r in (history or [])]

    def log(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Append one step's numbers (a dict with a "step" key). Returns the stored row."""
        if "step" not in row:
            raise ValueError(f"a metrics row needs a 'step' key, got keys {sorted(row)}")
        stored = {k: jsonable(v) if not isinstance(v, float) else v for k, v in row.items()}
        self.history.append(stored)
        if self.stream and self.output_dir is not None:
            self._stream_row(stored)
        return stored

    def _stream_row(self, row: Mapping[str, Any]) -> None:
        path = self.paths["csv"]
        if self._csv_columns is None or list(row) != self._csv_columns or not path.is_file():
            self._write_csv()  # first row of this logger, or new columns: the whole file, atomically
            return
        import pandas as pd

        with open(path, "a", newline="", encoding="utf-8") as f:  # the same formatting as write_csv
            pd.DataFrame([row], columns=self._csv_columns).to_csv(f, header=False, index=False)
            f.flush()

    def _write_csv(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = write_csv(self.history, self.paths["csv"])
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        self._csv_columns = columns
        return path

    def column(self, name: str) -> list:
        """All logged values of one metric, in step order (None where a row lacks it)."""
        return [row.get(name) for row in self.history]

    @property
    def paths(self) -> dict[str, Path]:
        """Where the four files go (empty when output_dir is None)."""
        if self.output_dir is None:
            return {}
        return {
            "csv": self.output_dir / CSV_NAME,
            "history": self.output_dir / HISTORY_NAME,
            "summary": self.output_dir / SUMMARY_NAME,
            "curves": self.output_dir / CURVES_NAME,
        }

    def write(self, summary: Mapping[str, Any] | None = None, *, plot: bool = True) -> dict[str, Path]:
        """Write the CSV and log_history.json (and summary.json when given, the PNG when `plot`).

        Returns the paths written. Each file is replaced atomically.
        """
        if self.output_dir is None:
            return {}
        paths = self.paths
        written = {}
        written["csv"] = self._write_csv()
        written["history"] = write_json(paths["history"], self.history)
        if summary is not None:
            written["summary"] = write_json(paths["summary"], summary)
        if plot and self.history:
            written["curves"] = plot_curves(self.history, paths["curves"], self.panels, title=self.title)
        return written


class StepTimer:
    """Seconds spent in the named parts of one step: `with timer("generate"): ...`, then `timer.seconds`
    ({name: seconds, summed over repeated parts}) and `timer.total()` (since the timer was made)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def total(self) -> float:
        return time.perf_counter() - self.start
