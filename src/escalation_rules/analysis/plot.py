"""Plot a scenario grid: selection probabilities and expected patients per dose.

One row of two panels per scenario: on the left the probability that each
dose (or none) is selected as the MTD, on the right the expected number of
patients treated at each dose, with one bar per design.  The true MTD is
marked.  The figure is drawn with matplotlib's Agg canvas (no display
needed) and written as PNG or SVG, by the file's suffix.

matplotlib is an optional dependency: ``pip install -e '.[plot]'`` from the repository's clone.

Examples
--------
>>> import tempfile, os
>>> from escalation_rules.analysis.grid import Scenario, run_grid
>>> grid = run_grid(["3+3-deescalate"], [Scenario("s", (0.1, 0.3))], jobs=1)
>>> path = os.path.join(tempfile.mkdtemp(), "grid.svg")
>>> plot_grid(grid, path) == path and os.path.getsize(path) > 0
True
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import EscalationRulesError, install_hint
from .grid import GridResult

__all__ = ["plot_format", "plot_grid", "render_grid"]

FORMATS = ("png", "svg")


def _figure_class() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (the Agg canvas)
        from matplotlib.figure import Figure
    except ImportError:
        raise EscalationRulesError(f"plotting needs matplotlib, the 'plot' extra: {install_hint('plot')}") from None
    return Figure


def plot_format(path: str | Path) -> str:
    """The image format named by the file's suffix, once the file could be written.

    Raises
    ------
    EscalationRulesError
        For a suffix other than ``.png``/``.svg``, or a folder that does not exist.

    Examples
    --------
    >>> plot_format("grid.SVG")
    'svg'
    >>> plot_format("/no/such/folder/grid.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: --plot: ...grid.png: the folder /no/such/folder does not exist
    """
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise EscalationRulesError(f"--plot: {path}: expected a .png or .svg file name (got {target.suffix or 'none'})")
    if not target.parent.is_dir():
        raise EscalationRulesError(f"--plot: {path}: the folder {target.parent} does not exist")
    return fmt


def plot_grid(grid: GridResult, path: str | Path) -> str:
    """Draw ``grid`` and write it to ``path`` (``.png`` or ``.svg``); returns the path written.

    Raises
    ------
    EscalationRulesError
        For another suffix, a folder that does not exist, or when matplotlib is not installed.
    """
    data = render_grid(grid, plot_format(path))
    try:
        Path(path).write_bytes(data)
    except OSError as err:
        raise EscalationRulesError(f"--plot: {path}: cannot write: {err.strerror}") from None
    return str(path)


def render_grid(grid: GridResult, fmt: str) -> bytes:
    """Draw ``grid`` as an image in ``fmt`` (``"png"`` or ``"svg"``) and return its bytes.

    Raises
    ------
    EscalationRulesError
        For another format, or when matplotlib is not installed.
    """
    if fmt not in FORMATS:
        raise EscalationRulesError(f"--plot: expected png or svg (got {fmt!r})")
    figure_class = _figure_class()
    rows = len(grid.scenarios)
    designs = grid.designs
    fig = figure_class(figsize=(11, 2.8 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    bar = 0.8 / len(designs)
    for r, scenario in enumerate(grid.scenarios):
        k = len(scenario.truth)
        left, right = axes[r]
        for i, design in enumerate(designs):
            oc = grid.result(design, scenario.name)
            offset = (i - (len(designs) - 1) / 2) * bar
            left.bar([x + offset for x in range(k + 1)], [float(v) for v in oc.mtd], bar, label=design)
            right.bar([x + 1 + offset for x in range(k)], [float(v) for v in oc.patients_at_dose], bar, label=design)
        true_mtd = grid.result(designs[0], scenario.name).true_mtd
        truth = ", ".join(f"{float(p):.2f}" for p in scenario.truth)
        left.set_title(f"{scenario.name}: P(selected as MTD)  [true P(DLT): {truth}]", fontsize=9)
        left.set_xticks(range(k + 1), ["none", *[str(d) for d in range(1, k + 1)]])
        left.set_ylim(0, 1)
        left.axvline(true_mtd if true_mtd is not None else 0, color="grey", linestyle=":", linewidth=1)
        right.set_title(f"{scenario.name}: expected patients per dose", fontsize=9)
        right.set_xticks(range(1, k + 1), [str(d) for d in range(1, k + 1)])
        left.set_xlabel("dose")
        right.set_xlabel("dose")
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Operating characteristics (dotted line: true MTD)", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    return buffer.getvalue()
