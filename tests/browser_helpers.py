"""Machinery for the real-browser test: a throwaway JupyterLab server and a notebook driver.

Nothing here knows about a particular lesson; `test_browser.py` says what each notebook's widget
must do. The pieces:

- `course_copy(repo, dest)`: a temporary copy of the course (notebooks with outputs cleared, data;
  `models/` linked so model caches are reused), so the browser never writes into the repo's notebooks.
- `JupyterLab(root, state_dir)`: a context manager running `jupyter lab` on 127.0.0.1 with a random token,
  isolated config/settings/workspaces, no news or update checks; stopped in a `finally`.
- `NotebookDriver(page, lab)`: open a notebook, Run All from the menu, wait for the kernel, collect
  error outputs, move the first control of the `.pg-main-panel` widget and read its `.pg-readout`.

Every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def find_chromium() -> str | None:
    """Path of a Chromium executable (Debian's `chromium`, or `chromium-browser`, `google-chrome`)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_browser_reason() -> str | None:
    """None if the browser test can run here, else a one-line reason (what to install)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return "Chromium not found on PATH (Debian/Ubuntu: apt-get install chromium)"
    return None


# --------------------------------------------------------------------------------------------
# The temporary course copy
# --------------------------------------------------------------------------------------------
def clear_notebook(path: Path) -> None:
    """Remove outputs, execution counts and saved widget state, so every output seen is fresh."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


def course_copy(repo: Path, dest: Path) -> Path:
    """Copy what notebooks read into `dest` (notebooks cleared, data, the stored results in benchmarks/results).

    `output/`, `checkpoints/` and `models/` are fresh empty folders, so runs here never touch the
    repo's. The tiny models ship with pgcore (`pgcore/models/`).
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo / "notebooks", dest / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    if (repo / "data").is_dir():
        shutil.copytree(repo / "data", dest / "data")
    if (repo / "benchmarks" / "results").is_dir():  # notebook 05 loads its stored multi-seed runs
        shutil.copytree(repo / "benchmarks" / "results", dest / "benchmarks" / "results")
    for name in ("output", "checkpoints", "models"):
        (dest / name).mkdir(exist_ok=True)
    for nb in (dest / "notebooks").glob("*.ipynb"):
        clear_notebook(nb)
    return dest


# --------------------------------------------------------------------------------------------
# The JupyterLab server
# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """`jupyter lab` serving `root` on 127.0.0.1, isolated from the user's Jupyter config.

    The server and its `python3` kernel (a kernelspec put first on JUPYTER_PATH) run on this
    interpreter (`sys.executable`), the environment with `pgcore`. Use as a context manager; the
    server is terminated (then killed) on exit. `base_url` ends with `/`.
    """

    def __init__(self, root: Path, state_dir: Path, start_timeout: float = 120.0):
        self.root = Path(root)
        self.state = Path(state_dir)
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.log_path = self.state / "jupyter.log"

    # The user settings the learner would otherwise be asked about on first start.
    SETTINGS = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false", "checkForUpdates": False},
    }

    def __enter__(self) -> "JupyterLab":
        for sub in ("config", "runtime", "settings", "workspaces"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        for rel, value in self.SETTINGS.items():
            path = self.state / "settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        # The notebooks' kernel `python3` is this interpreter, whatever python3 kernelspec the user
        # has installed elsewhere: JUPYTER_PATH is searched first.
        kernel_dir = self.state / "path" / "kernels" / "python3"
        kernel_dir.mkdir(parents=True, exist_ok=True)
        (kernel_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}))
        env = dict(os.environ)
        jupyter_path = os.pathsep.join(p for p in (str(self.state / "path"), env.get("JUPYTER_PATH")) if p)
        # Isolation from the user's Jupyter config, settings and saved workspaces.
        env.update(JUPYTER_PATH=jupyter_path,
                   JUPYTER_CONFIG_DIR=str(self.state / "config"),
                   JUPYTER_RUNTIME_DIR=str(self.state / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(self.state / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.state / "workspaces"),
                   PYTHONUNBUFFERED="1")
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={_free_port()}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.terminals_enabled=False",
            "--ServerApp.allow_root=True",  # CI containers run as root
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.user_settings_dir={self.state / 'settings'}",
            f"--LabApp.workspaces_dir={self.state / 'workspaces'}",
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        runtime = self.state / "runtime"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            for info_file in runtime.glob(f"jpserver-{self.proc.pid}.json"):
                with contextlib.suppress(ValueError, OSError):
                    info = json.loads(info_file.read_text())
                    self.base_url = f"http://127.0.0.1:{info['port']}/"
            if self.base_url:
                with contextlib.suppress(OSError):
                    self.api("GET", "api/status", timeout=5)
                    return
            time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {self.start_timeout:.0f} s:\n{self.log_tail()}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    def api(self, method: str, path: str, timeout: float = 30):
        """Call the server's REST API; returns the decoded JSON (or None for an empty body)."""
        req = urllib.request.Request(self.base_url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}{'&' if '?' in path else '?'}token={self.token}"

    def shutdown_sessions(self, path: str | None = None) -> None:
        """Shut down the kernel sessions (of `path`, or all): frees CPU and memory between notebooks."""
        with contextlib.suppress(OSError, ValueError):
            for s in self.api("GET", "api/sessions"):
                if path is None or s.get("path") == path:
                    with contextlib.suppress(OSError):
                        self.api("DELETE", f"api/sessions/{s['id']}")


# --------------------------------------------------------------------------------------------
# Driving a notebook in the page
# --------------------------------------------------------------------------------------------
# State of the notebook at `path`, read from JupyterLab's own models (window.jupyterapp).
_STATE_JS = r"""
(path) => {
  const app = window.jupyterapp;
  if (!app) return null;
  let panel = null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path === path && w.content && w.sessionContext) { panel = w; break; }
  }
  if (!panel) return null;
  const session = panel.sessionContext.session;
  const kernel = session ? session.kernel : null;
  const cells = [];
  panel.content.widgets.forEach((cell, index) => {
    const m = cell.model;
    if (m.type !== 'code') return;
    const errors = [];
    for (let j = 0; j < m.outputs.length; j++) {
      const o = m.outputs.get(j).toJSON();
      if (o.output_type === 'error') {
        errors.push(`${o.ename}: ${o.evalue}\n${(o.traceback || []).join('\n')}`);
      }
    }
    cells.push({index, count: m.executionCount, state: m.executionState || 'idle',
                source: m.sharedModel.getSource(), errors});
  });
  return {ready: panel.context.isReady && panel.sessionContext.isReady,
          kernel: kernel ? kernel.name : null, status: kernel ? kernel.status : 'none',
          dialog: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText).join('\n'),
          cells};
}
"""


@dataclass
class CellError:
    index: int
    source: str
    error: str

    def __str__(self) -> str:
        src = "\n".join("    " + line for line in self.source.splitlines()[:8])
        return f"cell {self.index}:\n{src}\n  raised:\n{ANSI.sub('', self.error)}"


@dataclass
class RunResult:
    seconds: float
    code_cells: int
    errors: list[CellError] = field(default_factory=list)
    widget_errors: list[str] = field(default_factory=list)


class NotebookDriver:
    """One notebook open in one Playwright page of a `JupyterLab` server."""

    PANEL = ".pg-main-panel"
    READOUT = ".pg-readout"

    def __init__(self, page, lab: JupyterLab, path: str):
        self.page, self.lab, self.path = page, lab, path

    def state(self) -> dict | None:
        return self.page.evaluate(_STATE_JS, self.path)

    def _wait(self, what: str, predicate, timeout: float, poll: float = 0.25):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.page.wait_for_timeout(poll * 1000)
        raise TimeoutError(f"{self.path}: timed out after {timeout:.0f} s waiting for {what}")

    def open(self, timeout: float = 120.0) -> dict:
        """Open the notebook in its own workspace (nothing restored), wait for an idle kernel.

        Fails if any dialog shows (a kernel-selection dialog means the kernelspec was not found).
        """
        name = re.sub(r"[^A-Za-z0-9_-]", "-", self.path)
        self.page.goto(self.lab.url(f"lab/workspaces/{name}/tree/{self.path}"),
                       timeout=timeout * 1000, wait_until="domcontentloaded")

        def ready():
            s = self.state()
            if s and s["dialog"]:
                raise AssertionError(f"{self.path}: JupyterLab opened a dialog:\n{s['dialog']}")
            return s if s and s["ready"] and s["status"] == "idle" else None

        return self._wait("the notebook to open with an idle kernel", ready, timeout)

    def run_all(self, timeout: float) -> RunResult:
        """Run → Run All Cells from the menu bar, as a learner would; wait until the kernel is done.

        Fails early if the kernel dies; a timeout names the cell still running.
        """
        start = time.monotonic()
        self.page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        self.page.locator(".lm-Menu .lm-Menu-item").filter(has=label).click()
        self._wait("Run All Cells to start", lambda: (s := self.state()) and any(
            c["state"] == "running" or c["count"] is not None for c in s["cells"]), 30)
        last = {}

        def finished():
            s = last["state"] = self.state()
            if s is None:
                return None
            if s["status"] in ("dead", "restarting", "autorestarting"):
                raise AssertionError(f"{self.path}: the kernel died ({s['status']}) during Run All:\n"
                                     f"{self.lab.log_tail()}")
            cells = s["cells"]
            running = any(c["state"] == "running" for c in cells)
            errored = any(c["errors"] for c in cells)
            done = all(c["count"] is not None for c in cells) or errored
            return s if done and not running and s["status"] == "idle" else None

        try:
            s = self._wait("Run All to finish", finished, timeout, poll=0.5)
        except TimeoutError as exc:
            cells = (last.get("state") or {}).get("cells", [])
            busy = [c for c in cells if c["state"] == "running"][:1]
            where = f"; still running cell {busy[0]['index']}:\n{busy[0]['source'][:500]}" if busy else ""
            raise TimeoutError(f"{exc}{where}") from None
        # Queued cells after an error are aborted, never counted: that is only reported via the error.
        result = RunResult(seconds=time.monotonic() - start, code_cells=len(s["cells"]))
        for c in s["cells"]:
            result.errors += [CellError(c["index"], c["source"], e) for e in c["errors"]]
        # A widget the front end cannot render shows this text instead of the widget.
        for text in self.page.locator(".jp-OutputArea-output").all_text_contents():
            if "Error displaying widget" in text or "Error rendering output" in text:
                result.widget_errors.append(text.strip()[:500])
        return result

    # ---- the main widget panel ----------------------------------------------------------------
    def panel(self, timeout: float = 60.0):
        loc = self.page.locator(self.PANEL).first
        loc.wait_for(state="visible", timeout=timeout * 1000)
        loc.scroll_into_view_if_needed(timeout=timeout * 1000)
        return loc

    def show_cell(self, panel) -> None:
        """Scroll so the panel's whole cell (the code that built it, then the panel) is in view, if it fits."""
        panel.evaluate("""e => {
            const cell = e.closest('.jp-Cell');
            const fits = cell && cell.getBoundingClientRect().height < window.innerHeight - 120;
            (fits ? cell : e).scrollIntoView({block: 'start'});
        }""")
        self.page.wait_for_timeout(300)

    def readout(self, panel) -> str:
        loc = panel.locator(self.READOUT)
        if loc.count() == 0:
            raise AssertionError(f"{self.path}: the {self.PANEL} has no {self.READOUT} widget")
        return loc.first.inner_text(timeout=10_000).strip()

    def move_first_control(self, panel, steps: int = 3, direction: int = +1) -> str:
        """Move the panel's first control; returns a description of what was done.

        Slider (noUiSlider): focus its handle and press the arrow key `steps` times (`direction`
        +1 = right/up, −1 = left; reversed if the handle already sits at that end). Dropdown:
        select the option `steps` places on (wrapping around).
        """
        control = panel.locator(".noUi-handle, select").first
        if control.count() == 0:
            raise AssertionError(f"{self.path}: the {self.PANEL} has no slider or dropdown "
                                 "(its first control must be one)")
        if control.evaluate("e => e.tagName") == "SELECT":
            options = control.locator("option").all_inner_texts()
            current = control.evaluate("e => e.selectedIndex")
            target = (current + direction * steps) % len(options)
            if target == current:
                raise AssertionError(f"{self.path}: the first dropdown has a single option")
            control.select_option(index=target)
            return f"dropdown {options[current]!r} -> {options[target]!r}"
        now, lo, hi = (float(control.get_attribute(f"aria-value{a}")) for a in ("now", "min", "max"))
        if (direction > 0 and now >= hi) or (direction < 0 and now <= lo):
            direction = -direction
        key = "ArrowRight" if direction > 0 else "ArrowLeft"
        before = control.get_attribute("aria-valuetext")
        control.focus()
        for _ in range(steps):
            control.press(key)
        return f"slider {before} -> {control.get_attribute('aria-valuetext')} ({steps}x {key})"

    def wait_readout_ready(self, panel, timeout: float = 60.0, settle: float = 1.0) -> str:
        """The readout once it shows text, the kernel is idle and the text is stable: a panel may fill
        its readout after the cell's output appeared (the front end renders widgets asynchronously)."""
        return self.wait_readout_change(panel, "", timeout, settle)

    def wait_readout_change(self, panel, before: str, timeout: float = 60.0, settle: float = 1.0) -> str:
        """Wait until the readout differs from `before`, the kernel is idle and the text is stable."""
        self._wait("the readout to change", lambda: self.readout(panel) != before, timeout)
        last, stable_since = self.readout(panel), time.monotonic()

        def settled():
            nonlocal last, stable_since
            now = self.readout(panel)
            s = self.state()
            if now != last:
                last, stable_since = now, time.monotonic()
                return False
            return s is not None and s["status"] == "idle" and time.monotonic() - stable_since >= settle

        self._wait("the readout to settle", settled, timeout)
        return last
