"""Operating characteristics of designs: exact, simulated, and over scenario grids.

The data flow is one way: a protocol is explored into its merged state graph
(:mod:`~escalation_rules._reduce`: states whose futures are
identical become one node), which the exact dynamic programme
(:mod:`~escalation_rules.analysis.oc`) and the vectorised simulator
(:mod:`~escalation_rules.analysis.simulation`) both read; grids
(:mod:`~escalation_rules.analysis.grid`) run either over many truths in
parallel, and :mod:`~escalation_rules.analysis.plot` draws them.

Examples
--------
>>> from escalation_rules import builtin_design
>>> from escalation_rules.analysis import operating_characteristics
>>> oc = operating_characteristics(builtin_design("3+3-deescalate", doses=4), [0.05, 0.1, 0.25, 0.4])
>>> round(oc.expected_patients, 3), oc.true_mtd
(15.056, 3)
"""

import importlib
from typing import TYPE_CHECKING, Any

from .._reduce import ReducedGraph, reduce_protocol
from .grid import GridResult, Scenario, load_scenarios, run_grid
from .oc import (
    BOUNDED_FIGURES,
    OperatingCharacteristics,
    merged_graph,
    operating_characteristics,
    parse_probability,
    parse_truth,
)
from .paths import leaf_probabilities, path_probabilities
from .plot import plot_grid
from .policy import BUILTIN_POLICIES, Policy, resolve_policy

if TYPE_CHECKING:
    from .simulation import SimulationResult, simulate


def __getattr__(name: str) -> Any:
    # numpy is imported only when simulation is used, so that every command
    # line call (``next``, ``verify``...) does not pay for it.
    if name in ("simulate", "SimulationResult"):
        module = importlib.import_module(f"{__name__}.simulation")
        # bind the names here so that later lookups skip __getattr__
        globals().update(simulate=module.simulate, SimulationResult=module.SimulationResult)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BOUNDED_FIGURES",
    "BUILTIN_POLICIES",
    "GridResult",
    "OperatingCharacteristics",
    "Policy",
    "ReducedGraph",
    "Scenario",
    "SimulationResult",
    "leaf_probabilities",
    "load_scenarios",
    "merged_graph",
    "operating_characteristics",
    "parse_probability",
    "parse_truth",
    "path_probabilities",
    "plot_grid",
    "reduce_protocol",
    "resolve_policy",
    "run_grid",
    "simulate",
]
