"""The course as a learner meets it: every numbered notebook run in JupyterLab in headless Chromium.

For each `notebooks/NN_*.ipynb`: open it in JupyterLab, Run → Run All Cells, fail on any error output,
then move the first control of the main widget panel (`.pg-main-panel`) and check that its readout
(`.pg-readout`) changes the way the lesson says (`EXPECTATIONS` below). Screenshots land in
`output/browser/<notebook>.png` (the panel) and `<notebook>_page.png` (the JupyterLab window).

One server and one browser serve all notebooks; the notebooks run in a temporary copy of the course,
with their stored outputs cleared, so every output checked here was produced in the browser.
Without Chromium or Playwright the tests skip (with the reason), except under `CI`, where they fail.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from browser_helpers import (
    CHROMIUM_ARGS,
    JupyterLab,
    NotebookDriver,
    course_copy,
    find_chromium,
    missing_browser_reason,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SCREENSHOTS = ROOT / "output" / "browser"
SELFTEST = "_browser_selftest/selftest.ipynb"


# --------------------------------------------------------------------------------------------
# What each notebook's main panel must show when its first control moves
# --------------------------------------------------------------------------------------------
def _number(label: str, text: str) -> float:
    """The number after `label` in a readout text (fails with the text if it is not there)."""
    m = re.search(re.escape(label) + r"\s*([+-]?\d+(?:\.\d+)?)", text)
    assert m, f"readout has no number after {label!r}: {text!r}"
    return float(m.group(1))


def _baseline_lowers_variance(before: str, after: str) -> None:
    """01: moving the baseline b from 0 towards the variance-minimizing b* keeps the exact gradient
    (a baseline adds no bias) and lowers the variance of one single-sample estimate."""
    b_star = _number("variance-minimizing baseline for this entry =", before)
    assert b_star > 0.3, f"the check moves b from 0 to 0.3, towards b* only if b* > 0.3; readout: {before!r}"
    assert _number("exact =", after) == _number("exact =", before), (
        f"a baseline must not change the exact gradient:\nbefore: {before}\nafter:  {after}")
    var_before, var_after = _number("(exact", before), _number("(exact", after)
    assert var_after < var_before, (
        f"a baseline closer to b* = {b_star} must lower the estimator's variance, "
        f"got {var_before} -> {var_after}:\nbefore: {before}\nafter:  {after}")


def _larger_step_more_deterministic(before: str, after: str) -> None:
    """02: raising the learning rate reruns the same short REINFORCE (same seed): the first batch, played
    before any update, is unchanged, and after the same budget the larger steps have made the policy
    more deterministic (lower final entropy). `_number` only parses plain decimals, so every number
    it reads is finite."""
    lr_before, lr_after = _number("lr =", before), _number("lr =", after)
    assert lr_after > 2 * lr_before, f"the first control should raise lr:\nbefore: {before}\nafter:  {after}"
    assert _number("first batch =", after) == _number("first batch =", before), (
        f"the first batch is played before any update, so lr cannot change it:\nbefore: {before}\nafter:  {after}")
    for label in ("final =", "max grad norm ="):
        _number(label, after)
    ent_before, ent_after = _number("final entropy =", before), _number("final entropy =", after)
    assert ent_after < ent_before, (
        f"a larger step should leave a more deterministic policy (lower entropy), got {ent_before} -> {ent_after}:"
        f"\nbefore: {before}\nafter:  {after}")


def _larger_lambda_more_variance(before: str, after: str) -> None:
    """03: raising GAE's lambda from 0.95 towards 1 (the Monte Carlo end, G_t - V) on the same precomputed
    batches raises the measured variance of the gradient estimate (tr Cov): lambda trades the critic's bias
    for the returns' variance, and above 0.9 the variance side wins (section 2 of the notebook)."""
    lam_before, lam_after = _number("GAE λ =", before), _number("GAE λ =", after)
    assert lam_after > lam_before, f"the first control should raise lambda:\nbefore: {before}\nafter:  {after}"
    var_before, var_after = _number("tr Cov =", before), _number("tr Cov =", after)
    assert var_after > var_before, (
        f"a larger lambda above 0.95 should raise the gradient variance, got {var_before} -> {var_after}:"
        f"\nbefore: {before}\nafter:  {after}")


def _kl_penalty_keeps_policy_close(before: str, after: str) -> None:
    """04: raising the KL coefficient beta from 0 reruns the same short LM run (same seed) with a penalty on
    the distance from the starting policy: the KL to the start at the end of the run must be lower."""
    beta_before, beta_after = _number("KL coefficient =", before), _number("KL coefficient =", after)
    assert beta_after > beta_before, f"the first control should raise beta:\nbefore: {before}\nafter:  {after}"
    _number("last 5 =", after)
    kl_before, kl_after = _number("KL to start =", before), _number("KL to start =", after)
    assert kl_after < kl_before, (
        f"a KL penalty should keep the policy closer to its start, got KL {kl_before} -> {kl_after}:"
        f"\nbefore: {before}\nafter:  {after}")


def _larger_groups_fewer_without_signal(before: str, after: str) -> None:
    """05: raising the group size G regroups the same sampled answers (no training): the same problems, and
    fewer groups have zero spread (all answers right or all wrong), since p^G + (1-p)^G falls with G."""
    g_before, g_after = _number("group size G =", before), _number("group size G =", after)
    assert g_after > g_before, f"the first control should raise G:\nbefore: {before}\nafter:  {after}"
    assert _number("groups from", after) == _number("groups from", before), (
        f"the problems cannot depend on G:\nbefore: {before}\nafter:  {after}")
    z_before, z_after = _number("zero-spread groups =", before), _number("zero-spread groups =", after)
    assert z_after < z_before, (
        f"larger groups should have zero spread less often, got {z_before} -> {z_after}:"
        f"\nbefore: {before}\nafter:  {after}")


def _more_updates_move_the_policy_further(before: str, after: str) -> None:
    """06: raising mu, the updates per batch, reruns the same passes over the same sampled batch from the same
    starting weights (no sampling): the policy ends further from the sampler pi_old (a larger KL(pi_old || pi)
    after the last update), and from mu = 1, whose only update is on-policy (ratio exactly 1, nothing clipped),
    the last update's clipped share rises (with ppo or cispo; pg clips nothing)."""
    mu_before, mu_after = _number("updates μ =", before), _number("updates μ =", after)
    assert mu_after > mu_before, f"the first control should raise mu:\nbefore: {before}\nafter:  {after}"
    assert _number("on", after) == _number("on", before), (
        f"the batch cannot depend on mu:\nbefore: {before}\nafter:  {after}")
    clip_before, clip_after = _number("clipped (last update) =", before), _number("clipped (last update) =", after)
    if mu_before == 1:
        assert clip_before == 0, f"at mu = 1 the ratio is 1 and nothing is clipped:\nbefore: {before}"
        if re.search(r"policy loss = (ppo|cispo)", after):
            assert clip_after > 0, f"a moved ratio meets the clip:\nbefore: {before}\nafter:  {after}"
    kl_before, kl_after = _number("KL(π_old‖π) after =", before), _number("KL(π_old‖π) after =", after)
    assert kl_after > kl_before, (
        f"more updates on one batch should move the policy further from pi_old, got KL {kl_before} -> {kl_after}:"
        f"\nbefore: {before}\nafter:  {after}")


BROWSER_TIMING = "browser_seconds"  # user property read by the root conftest.py: open, run all, widget, screenshots


@dataclass(frozen=True)
class WidgetCheck:
    """How the browser moves a notebook's main panel, and what the lesson says must follow."""

    expect: Callable[[str, str], None]
    """expect(readout_before, readout_after) asserts the lesson's direction"""
    steps: int = 3
    """arrow-key presses on the first slider (or options forward in the first dropdown)"""
    direction: int = +1
    """+1 moves the first slider right (a dropdown forward), -1 left"""
    run_timeout: float = 300.0
    """seconds allowed for Run All Cells"""


# Keyed by the notebook's two-digit number. The panel code is in pgcore/widgets/<topic>.py.
EXPECTATIONS: dict[str, WidgetCheck] = {
    # pgcore/widgets/bandit.py: first control = baseline slider (0 in [-3, 6], step 0.1).
    "01": WidgetCheck(expect=_baseline_lowers_variance, steps=3, direction=+1),
    # pgcore/widgets/reinforce.py: first control = lr, a log slider (10^-2 in [10^-4, 1], steps of 10^0.25);
    # 4 steps right = lr 0.1. Each step reruns a ~1 s REINFORCE on CartPole-v1.
    "02": WidgetCheck(expect=_larger_step_more_deterministic, steps=4, direction=+1, run_timeout=600.0),
    # pgcore/widgets/variance.py: first control = GAE lambda (0.95 in [0, 1], step 0.01); 3 steps right = 0.98.
    # Each step recomputes the variance from precomputed batches (< 1 s); Run All trains for about a minute.
    "03": WidgetCheck(expect=_larger_lambda_more_variance, steps=3, direction=+1, run_timeout=600.0),
    # pgcore/widgets/lm.py: first control = KL coefficient, a selection slider over (0, 0.01, 0.03, 0.1, 0.3, 1);
    # 3 steps right = 0.1. Each step reruns a 25-step LM run of the tiny tier (a few seconds).
    "04": WidgetCheck(expect=_kl_penalty_keeps_policy_close, steps=3, direction=+1, run_timeout=900.0),
    # pgcore/widgets/grpo.py: first control = group size G, a selection slider over (2, 4, 8, 16, 32) at 2; 2 steps
    # right = 8. Each step regroups section 2's sampled answers (no training, instant).
    "05": WidgetCheck(expect=_larger_groups_fewer_without_signal, steps=2, direction=+1, run_timeout=900.0),
    # pgcore/widgets/reuse.py: first control = updates per batch mu, a selection slider over (1, 2, 4, 8) at 1; 2 steps
    # right = 4. Each step reruns mu PPO updates on one sampled batch of 64 x 8 tiny-arith completions (~0.5 s each).
    "06": WidgetCheck(expect=_more_updates_move_the_policy_further, steps=2, direction=+1, run_timeout=900.0),
}


# --------------------------------------------------------------------------------------------
# Fixtures: one server and one browser for the whole module
# --------------------------------------------------------------------------------------------
def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def lab():
    reason = missing_browser_reason()
    if reason:
        if _ci():
            pytest.fail(f"CI is set, so the browser test must run, but: {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="pg-browser-") as tmp:
        course = course_copy(ROOT, Path(tmp) / "course")
        _write_selftest_notebook(course / SELFTEST)
        with JupyterLab(course, Path(tmp) / "jupyter") as server:
            try:
                specs = server.api("GET", "api/kernelspecs")["kernelspecs"]
                assert "python3" in specs, f"the server offers no python3 kernel: {sorted(specs)}"
                argv = specs["python3"]["spec"]["argv"]
                assert argv[0] == sys.executable, f"the python3 kernel would run {argv[0]}, not {sys.executable}"
                yield server
            finally:
                server.shutdown_sessions()


@pytest.fixture(scope="module")
def browser_context(lab):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            yield context
        finally:
            browser.close()
    finally:
        pw.stop()


# --------------------------------------------------------------------------------------------
# The check of one course notebook
# --------------------------------------------------------------------------------------------
def _screenshot(page_or_locator, path: Path) -> None:
    """Save a PNG atomically (a teacher never sees half a file); no pgcore import (it pulls in torch)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(page_or_locator.screenshot(timeout=30_000))
    os.replace(tmp, path)


def _check_notebook(context, lab: JupyterLab, rel_path: str, check: WidgetCheck, shots: str | None,
                   record_property: Callable[[str, object], None]):
    """Open, Run All, assert no errors, move the panel's first control, assert the readout's change."""
    if shots:
        (SCREENSHOTS / f"{shots}_failure.png").unlink(missing_ok=True)
    page = context.new_page()
    driver = NotebookDriver(page, lab, rel_path)
    try:
        t0 = time.monotonic()
        driver.open()
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # more notebook in the screenshots
        t1 = time.monotonic()
        result = driver.run_all(timeout=check.run_timeout)
        t2 = time.monotonic()
        assert not result.errors, f"{rel_path}: error output in the browser run:\n\n" + "\n\n".join(map(str, result.errors))
        assert not result.widget_errors, f"{rel_path}: a widget failed to render:\n" + "\n".join(result.widget_errors)

        panel = driver.panel()
        before = driver.wait_readout_ready(panel)
        moved = driver.move_first_control(panel, steps=check.steps, direction=check.direction)
        try:
            after = driver.wait_readout_change(panel, before)
        except TimeoutError as exc:
            raise AssertionError(f"{rel_path}: moved the first control ({moved}) but the readout stayed "
                                 f"{before!r}") from exc
        t3 = time.monotonic()
        if shots:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            _screenshot(panel, SCREENSHOTS / f"{shots}.png")
            driver.show_cell(panel)
            _screenshot(page, SCREENSHOTS / f"{shots}_page.png")
        # the root conftest.py prints these in the end-of-run summary
        record_property(BROWSER_TIMING, [t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3])
        check.expect(before, after)
    except BaseException:
        if shots:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            try:
                _screenshot(page, SCREENSHOTS / f"{shots}_failure.png")
            except Exception:  # the failure itself is what gets reported
                pass
        raise
    finally:
        page.close()
        lab.shutdown_sessions(rel_path)


# --------------------------------------------------------------------------------------------
# The harness itself: it must see an error output and a widget that moves
# --------------------------------------------------------------------------------------------
_SELFTEST_PANEL = '''\
import ipywidgets as widgets
import pgcore  # the kernel is this environment's Python
n = widgets.IntSlider(value=10, min=10, max=50, step=10, description="n", continuous_update=False)
readout = widgets.HTML().add_class("pg-readout")
def update(_=None):
    readout.value = f"<b>1/n</b> = {1 / n.value:.3f}"
update()
n.observe(update, names="value")
widgets.VBox([n, readout, widgets.Output()]).add_class("pg-main-panel")'''

_SELFTEST_DROPDOWN = '''\
pick = widgets.Dropdown(options=["a", "b", "c"], value="a", description="pick")
picked = widgets.Label("picked a").add_class("pg-readout")
pick.observe(lambda change: setattr(picked, "value", f"picked {change.new}"), names="value")
widgets.VBox([pick, picked]).add_class("pg-selftest-dropdown")'''


def _write_selftest_notebook(path: Path) -> None:
    """A tiny notebook following the widget convention, with a deliberate error in its last cell."""
    nb = new_notebook(cells=[new_code_cell(_SELFTEST_PANEL), new_code_cell(_SELFTEST_DROPDOWN),
                             new_code_cell("1 / 0"), new_code_cell("print('not run')")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_harness_reports_errors_and_moves_a_widget(lab, browser_context):
    """The checks below can fail: an error output is reported with its cell, a moved slider is seen."""
    page = browser_context.new_page()
    driver = NotebookDriver(page, lab, SELFTEST)
    try:
        driver.open()
        result = driver.run_all(timeout=120)
        assert result.code_cells == 4
        assert [(e.index, "ZeroDivisionError" in e.error) for e in result.errors] == [(2, True)], result.errors
        assert "1 / 0" in str(result.errors[0])
        panel = driver.panel()
        before = driver.readout(panel)
        assert before == "1/n = 0.100", before
        driver.move_first_control(panel, steps=2, direction=+1)
        assert driver.wait_readout_change(panel, before) == "1/n = 0.033"
        # Clamped at the right end; from there the slider is moved left instead.
        driver.move_first_control(panel, steps=8, direction=+1)
        assert driver.wait_readout_change(panel, "1/n = 0.033") == "1/n = 0.020"
        driver.move_first_control(panel, steps=1, direction=+1)
        assert driver.wait_readout_change(panel, "1/n = 0.020") == "1/n = 0.025"
        # A dropdown as the first control: the next option is picked (wrapping around at the end).
        dropdown = page.locator(".pg-selftest-dropdown")
        driver.move_first_control(dropdown, steps=1, direction=+1)
        assert driver.wait_readout_change(dropdown, "picked a") == "picked b"
        driver.move_first_control(dropdown, steps=2, direction=+1)
        assert driver.wait_readout_change(dropdown, "picked b") == "picked a"
    finally:
        page.close()
        lab.shutdown_sessions(SELFTEST)


# --------------------------------------------------------------------------------------------
# The course
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_browser(notebook: Path, lab, browser_context, record_property):
    number = notebook.name[:2]
    assert number in EXPECTATIONS, (
        f"{notebook.name}: no lesson expectation for its widget; add EXPECTATIONS[{number!r}] in "
        f"tests/test_browser.py (what its readout must do when the panel's first control moves)")
    _check_notebook(browser_context, lab, f"notebooks/{notebook.name}", EXPECTATIONS[number], shots=notebook.stem,
                   record_property=record_property)
