"""The notebooks' asserts carry their claims: where a cell's printed numbers are not compared (a training run's
last digits differ from CPU to CPU), its assert must still fail when the estimator behind the claim is broken.

Each test runs a notebook's set-up cells, a cell that breaks one estimator, and the claim's cells, in a fresh
kernel (nbclient), and expects the claim's assert, by its message."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_cells(name: str, cells: list[int | str], timeout: int = 900) -> None:
    """Run the notebook's code cells `cells` (indices among its code cells, as nbval counts them) and source strings,
    in this order, in a fresh kernel started in notebooks/."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    picked = [nbformat.v4.new_code_cell(c) if isinstance(c, str) else code[c] for c in cells]
    client = NotebookClient(nbformat.v4.new_notebook(cells=picked, metadata=nb.metadata), timeout=timeout,
                            kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()


def code_index(name: str, marker: str) -> int:
    """The index (among code cells) of the one code cell of the notebook that contains `marker`."""
    code = [c for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code"]
    (hit,) = [i for i, c in enumerate(code) if marker in c.source]
    return hit


def expect_assert(name: str, cells: list[int | str], message: str) -> None:
    with pytest.raises(CellExecutionError) as error:
        run_cells(name, cells)
    assert "AssertionError" in str(error.value) and message in str(error.value), str(error.value)[-2000:]


@pytest.mark.slow
def test_nb04_the_baselines_claim_fails_when_the_baseline_subtracts_nothing():
    """Notebook 04's gradient-noise cell: with `rloo` and `mean` returning the raw scores, the claim that the
    baselines lower the noise must fail."""
    broken = "algorithm.lm_advantages = lambda score, kind: score   # every baseline subtracts nothing"
    nb = "04_lm_policy_gradient.ipynb"
    expect_assert(nb, [0, 1, 2, broken, code_index(nb, "var_prompts = models.load_prompts()")],
                  "the baselines lower the noise")


@pytest.mark.slow
def test_nb05_the_grpo_claim_fails_when_the_advantage_has_the_wrong_sign():
    """Notebook 05's held-out pass@1 claim: with the engine's advantages negated (descent instead of ascent), the
    claim that GRPO raises pass@1 must fail (40 steps are enough to see it go down)."""
    broken = ("import pgcore.engine.trainer as _trainer\n"
              "_advantages = _trainer.lm_advantages\n"
              "_trainer.lm_advantages = lambda r, kind: -_advantages(r, kind)\n"
              "steps = 40")
    nb = "05_verifiable_rewards_grpo.ipynb"
    cells = [code_index(nb, m) for m in ('heldout = arith.problems("heldout"', "result = engine.train(cfg",
                                         "trained = result.policy\ncorrect1")]
    expect_assert(nb, [0, 1, 2, broken, *cells], "GRPO raises held-out pass@1")


@pytest.mark.slow
def test_nb06_the_kl_claims_fail_when_k3_is_k1():
    """Notebook 06's exact KL-gradient table: with pg.kl_estimate's k3 replaced by k1, the identity that k3 times the
    ratio has k2's gradient, sample by sample, must fail (and with it the claims on k3 that follow)."""
    broken = ("import pgcore.estimators as _est\n"
              "_kl = _est.kl_estimate\n"
              "pg.kl_estimate = lambda logp, ref, kind='k3': _kl(logp, ref, 'k1' if kind == 'k3' else kind)")
    nb = "06_reusing_a_batch.ipynb"
    expect_assert(nb, [0, 1, 2, broken, code_index(nb, "def exact_kl_gradients"), code_index(nb, "one, seq = kl_tables")],
                  "k2 = k3 x ratio, sample by sample")


@pytest.mark.slow
def test_nb06_the_tis_claim_fails_when_the_weights_are_all_one():
    """Notebook 06's sampler section: with pg.sampler_weights returning weights of 1 (no correction), the claim that
    truncated importance sampling brings the gradient back must fail."""
    broken = ("pg.sampler_weights = lambda old, samp, mask, mode, clip_max=None, clip_min=None: "
              "(torch.ones_like(old[:, :1] if mode.startswith('sequence') else old), 0.0)")
    nb = "06_reusing_a_batch.ipynb"
    expect_assert(nb, [0, 1, 2, code_index(nb, "snapshots, opt_state ="), broken,
                       code_index(nb, "EOS = tok.eos_token_id"), code_index(nb, "true = flat("),
                       code_index(nb, "assert t.loc[\"bf16\"")], "TIS helps at every age")
