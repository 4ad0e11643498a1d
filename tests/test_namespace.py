"""`import pgcore as pg`: the flat teaching names, the subpackages, and the one lazy loader behind them."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pgcore as pg
from pgcore import estimators, returns

FLAT = {
    estimators: ["pg_loss", "mean_baseline", "normalize", "rloo", "group_normalize", "kl_k1", "kl_k2", "kl_k3",
                 "kl_estimate", "aggregate", "ppo_clip_loss"],
    returns: ["discount_cumsum", "reward_to_go", "discounted_return", "td_error", "gae"],
}
SUBPACKAGES = ["bandit", "reinforce", "envs", "lm", "exercises", "widgets", "actor_critic", "policies", "returns",
               "estimators", "variance", "plotting"]


def test_the_estimators_are_top_level_names_with_one_definition():
    for module, names in FLAT.items():
        for name in names:
            assert getattr(pg, name) is getattr(module, name), name
    assert callable(pg.set_seed) and callable(pg.get_device)
    package = Path(pg.__file__).parent
    assert not (package / "pg.py").exists() and not (package / "advantages.py").exists()  # one path per name


def test_every_subpackage_is_reachable_and_listed():
    code = "import pgcore as pg; print(*[getattr(pg, n).__name__ for n in %r])" % (SUBPACKAGES,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [f"pgcore.{n}" for n in SUBPACKAGES]
    assert set(SUBPACKAGES) <= set(dir(pg)) and {"lm", "widgets", "engine"} <= set(dir(pg))


def test_a_lazy_submodule_loads_on_first_use_and_a_missing_one_is_an_attribute_error(tmp_path):
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from pgcore._lazy import lazy_submodules
        __getattr__, __dir__ = lazy_submodules(__name__, ("heavy", "missing"), {"VALUE": "heavy"})
    """))
    (pkg / "heavy.py").write_text("VALUE = 42\n")
    code = textwrap.dedent("""
        import sys, lazypkg
        assert "lazypkg.heavy" not in sys.modules
        assert lazypkg.VALUE == 42 and lazypkg.heavy.VALUE == 42
        assert not hasattr(lazypkg, "missing") and not hasattr(lazypkg, "other")
        assert {"heavy", "missing", "VALUE"} <= set(dir(lazypkg))
        print("ok")
    """)
    path = os.pathsep.join([str(tmp_path), *(p for p in sys.path if p)])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path})
    assert proc.stdout.strip() == "ok", proc.stderr
