"""The part every panel shares: a readout, an output area, and the controls wired to one update."""
from __future__ import annotations

from typing import Callable, Sequence


def readout_and_output():
    """(readout, out): an HTML line with class "pg-readout" for the key numbers, and an Output for the plots."""
    import ipywidgets as widgets

    readout = widgets.HTML()
    readout.add_class("pg-readout")
    return readout, widgets.Output()


def panel(controls: Sequence, update: Callable, *rest):
    """A VBox with class "pg-main-panel": the controls, then `rest`; every control's change calls `update`,
    which runs once now."""
    import ipywidgets as widgets

    for c in controls:
        c.observe(update, names="value")
    box = widgets.VBox([*controls, *rest])
    box.add_class("pg-main-panel")
    update()
    return box
