"""escalation_rules: a rules engine for early-phase dose-escalation protocols.

Protocols are data (TOML files under ``spec/``, or built-in designs); they
compile into a frozen state graph that the decision engine, the exhaustive
verifier and the analyses all read.

The names below are the stable API.  Each feature area keeps its fuller API
in its own public module: :mod:`escalation_rules.analysis` (operating
characteristics, simulation, grids), :mod:`escalation_rules.eligibility`
(screening), :mod:`escalation_rules.trial` (the event record and store),
:mod:`escalation_rules.strategies` (Hypothesis strategies) and
:mod:`escalation_rules.sphinx` (the documentation extension).

Examples
--------
>>> import escalation_rules as er
>>> design = er.builtin_design("3+3-deescalate", doses=3)
>>> er.decide(design, "1NNN 2NTN").action
'treat'
>>> er.verify(er.compile_protocol(design)).ok
True
"""

from typing import TYPE_CHECKING, Any

from .analysis import (
    OperatingCharacteristics,
    load_scenarios,
    operating_characteristics,
    path_probabilities,
    run_grid,
)
from .designs import DESIGNS, builtin_design
from .eligibility import ScreeningResult, load_eligibility, screen
from .engine import Decision, OptionView, decide
from .errors import CompileError, EscalationRulesError, GuardSyntaxError, HistoryError, ProtocolError
from .graph import CompiledProtocol, compile_protocol
from .history import Choice, Cohort, parse_history_json, parse_outcomes
from .paths import future_paths
from .protocol import Protocol, load_protocol
from .spec import resolve_spec
from .trial import TrialStatus, TrialStore, trial_status
from .verify import InvariantResult, VerificationReport, verify

if TYPE_CHECKING:
    from .analysis.simulation import SimulationResult, simulate


def __getattr__(name: str) -> Any:
    # simulation needs numpy: load it on first use, not on every import
    if name in ("simulate", "SimulationResult"):
        from .analysis import simulation

        globals().update(simulate=simulation.simulate, SimulationResult=simulation.SimulationResult)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DESIGNS",
    "Choice",
    "Cohort",
    "CompileError",
    "CompiledProtocol",
    "Decision",
    "EscalationRulesError",
    "GuardSyntaxError",
    "HistoryError",
    "InvariantResult",
    "OperatingCharacteristics",
    "OptionView",
    "Protocol",
    "ProtocolError",
    "ScreeningResult",
    "SimulationResult",
    "TrialStatus",
    "TrialStore",
    "VerificationReport",
    "builtin_design",
    "compile_protocol",
    "decide",
    "future_paths",
    "load_eligibility",
    "load_protocol",
    "load_scenarios",
    "operating_characteristics",
    "parse_history_json",
    "parse_outcomes",
    "path_probabilities",
    "resolve_spec",
    "run_grid",
    "screen",
    "simulate",
    "trial_status",
    "verify",
]

__version__ = "0.1.0"
