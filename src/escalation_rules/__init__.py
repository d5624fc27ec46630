"""escalation_rules: a rules engine for early-phase dose-escalation protocols.

Protocols are data (TOML files under ``spec/``, or built-in designs); they
compile into a frozen state graph that the decision engine, the exhaustive
verifier and the analyses all read.

Examples
--------
>>> import escalation_rules as er
>>> design = er.builtin_design("3+3-deescalate", doses=3)
>>> er.decide(design, "1NNN 2NTN").action
'treat'
>>> er.verify(er.compile_protocol(design)).ok
True
"""

from .designs import DESIGNS, builtin_design
from .engine import Decision, OptionView, decide
from .errors import CompileError, EscalationRulesError, GuardSyntaxError, HistoryError, ProtocolError
from .graph import CompiledProtocol, compile_protocol
from .history import Choice, Cohort, parse_history_json, parse_outcomes
from .paths import future_paths
from .protocol import Protocol, load_protocol
from .spec import resolve_spec
from .verify import InvariantResult, VerificationReport, verify

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
    "OptionView",
    "Protocol",
    "ProtocolError",
    "VerificationReport",
    "builtin_design",
    "compile_protocol",
    "decide",
    "future_paths",
    "load_protocol",
    "parse_history_json",
    "parse_outcomes",
    "resolve_spec",
    "verify",
]

__version__ = "0.1.0"
