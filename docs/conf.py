"""The course as a website (`make site`): Sphinx reads the repository root with this configuration.

Why Sphinx + MyST-NB + sphinx-book-theme (Jupyter Book 1's stack): it builds offline from pip wheels
and renders the stored notebook outputs as they are; Jupyter Book 2 fetches its theme at build time.

Pages: index.md (the landing page, which includes the README's parts), the numbered notebooks with
their stored outputs (never executed here), docs/*.md and CONTRIBUTING.md. A widget cannot run
without a kernel: each widget output becomes the still picture `notebooks/img/<notebook>_panel.png`
(`make panels` takes them with the browser test). Math is typeset by MathJax 3 served from the site
(sphinx-mathjax-offline); the search is Sphinx's own, in the browser.
"""
from __future__ import annotations

import json
from pathlib import PurePosixPath

project = "Policy Gradient, from a bandit arm to a language model"
html_title = "Policy Gradient course"
root_doc = "index"

extensions = ["myst_nb", "sphinx-mathjax-offline"]
include_patterns = ["index.md", "CONTRIBUTING.md", "docs/*.md", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = ["**/.*", "_site", "output", "models", "checkpoints", "pgcore", "tests", "benchmarks"]
nitpicky = True
smartquotes = False  # the text as the notebooks write it

nb_execution_mode = "off"  # the stored outputs, the ones `pytest --nbval` checks
nb_merge_streams = True  # a cell's printed lines in one box, as JupyterLab shows them
nb_ipywidgets_js = {}  # no widget scripts from a CDN: the panels are pictures (below)
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # `$$…$$` inside a paragraph, as the notebooks write it (and JupyterLab shows it)
myst_heading_anchors = 4  # GitHub's anchors, so that `docs/lm.md#flags` links work here too

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "use_download_button": True,
    "show_toc_level": 2,
}

WIDGET = "application/vnd.jupyter.widget-view+json"
OPEN = "make course"  # README "Set up": a virtual environment, then JupyterLab on notebooks/


def _run_it_note(name: str) -> str:
    return (f"> **Run it yourself:** the notebook file is {{download}}`{name} <{name}>`; "
            f"`{OPEN}` opens JupyterLab on `notebooks/`, then open `{name}`.")


def _panel(stem: str) -> dict:
    text = (f"![the notebook's panel, as the browser test sees it in JupyterLab](img/{stem}_panel.png)\n\n"
            f"*A still picture of the panel: to move its controls, run the notebook (`{OPEN}`, then "
            f"open `notebooks/{stem}.ipynb`).*")
    return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": text}}


def notebook_for_the_site(app, docname: str, source: list[str]) -> None:
    """Sphinx's source-read: a notebook page gets the run-it note under its title, and each widget
    output (a live panel needs a kernel) becomes the panel's still picture; a missing picture is
    Sphinx's "image file not readable" warning, so it fails the build."""
    path = PurePosixPath(docname)
    if path.parent.name != "notebooks":
        return
    try:
        nb = json.loads(source[0])
    except ValueError:
        return  # MyST-NB reports the notebook that does not convert
    nb["metadata"].pop("widgets", None)  # the saved widget state would pull in the widget scripts
    title_cell = nb["cells"][0]["source"]
    lines = (title_cell if isinstance(title_cell, str) else "".join(title_cell)).split("\n", 1)
    nb["cells"][0]["source"] = "\n\n".join([lines[0], _run_it_note(f"{path.name}.ipynb"), *lines[1:]])
    for cell in nb["cells"]:
        cell["outputs"] = [_panel(path.name) if WIDGET in out.get("data", {}) else out
                           for out in cell.get("outputs", [])]
    source[0] = json.dumps(nb)


def setup(app):
    app.connect("source-read", notebook_for_the_site)
