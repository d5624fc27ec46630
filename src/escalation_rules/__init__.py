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

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import CompileError, EscalationRulesError, GuardSyntaxError, HistoryError, ProtocolError

if TYPE_CHECKING:
    from .analysis import (
        OperatingCharacteristics,
        load_scenarios,
        operating_characteristics,
        path_probabilities,
        run_grid,
    )
    from .analysis.simulation import SimulationResult, simulate
    from .designs import DESIGNS, builtin_design
    from .eligibility import ScreeningResult, load_eligibility, screen
    from .engine import Decision, OptionView, decide
    from .graph import CompiledProtocol, compile_protocol
    from .history import Choice, Cohort, parse_history_json, parse_outcomes
    from .paths import future_paths
    from .protocol import Protocol, load_protocol
    from .spec import resolve_spec
    from .trial import TrialStatus, TrialStore, trial_status
    from .verify import InvariantResult, VerificationReport, verify

#: Where each public name lives.  Names are imported on first use, so that
#: ``import escalation_rules`` (and the command line's ``next``, ``screen`` and
#: ``trial status``) does not pay for networkx, numpy and the analyses.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("OperatingCharacteristics", "load_scenarios", "operating_characteristics",
                     "path_probabilities", "run_grid"), ".analysis"),
    **dict.fromkeys(("SimulationResult", "simulate"), ".analysis.simulation"),
    **dict.fromkeys(("DESIGNS", "builtin_design"), ".designs"),
    **dict.fromkeys(("ScreeningResult", "load_eligibility", "screen"), ".eligibility"),
    **dict.fromkeys(("Decision", "OptionView", "decide"), ".engine"),
    **dict.fromkeys(("CompiledProtocol", "compile_protocol"), ".graph"),
    **dict.fromkeys(("Choice", "Cohort", "parse_history_json", "parse_outcomes"), ".history"),
    "future_paths": ".paths",
    **dict.fromkeys(("Protocol", "load_protocol"), ".protocol"),
    "resolve_spec": ".spec",
    **dict.fromkeys(("TrialStatus", "TrialStore", "trial_status"), ".trial"),
    **dict.fromkeys(("InvariantResult", "VerificationReport", "verify"), ".verify"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package module: importing the submodule ``verify`` leaves the name ``verify`` the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if _LAZY.get(name) == f".{name}" and isinstance(value, types.ModuleType):
            value = getattr(value, name)  # the import system binds a submodule on its package
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
