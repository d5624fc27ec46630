"""The command line: ``escalation-rules COMMAND SPEC ...``, thin over the Python API.

SPEC is a protocol file or folder (``spec/nct07117175`` or
``spec/nct07117175.toml``), a shipped protocol's name (``nct07117175``, from
any folder) or a built-in design name with ``--doses N``.

Exit status: 0 success; 1 a check failed (``verify`` found a violation,
``trial verify`` a broken chain); 2 the input was refused (bad protocol,
impossible history, bad arguments); ``screen`` also answers 3 (not
eligible) and 4 (undetermined); 70 an unexpected error, a bug in the package
(one line on stderr names the file holding the traceback; set
ESCALATION_RULES_DEBUG=1 to print it instead).
Errors are printed on stderr, one line each, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .designs import DESIGNS
from .errors import EscalationRulesError

if TYPE_CHECKING:
    from .protocol import Protocol

__all__ = ["main"]

#: Subcommands that other modules add (each module defines ``register(subparsers)``), by command name.
#: Only the module of the command being run is imported (all of them for the top-level ``--help``), and
#: each command imports what it needs when it runs: ``next``, ``screen`` and ``trial status`` start without
#: networkx, numpy or the analyses (see benchmarks/bench_core.py).
_COMMAND_MODULES: dict[str, str] = {
    "docs": "escalation_rules.auditsite",
    **dict.fromkeys(("oc", "simulate", "grid"), "escalation_rules.analysis._cli"),
    "trial": "escalation_rules.trial._cli",
    **dict.fromkeys(("screen", "data-items"), "escalation_rules.eligibility._cli"),
    "serve": "escalation_rules.service._cli",
}

Handler = Callable[[argparse.Namespace], int]


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, told the terminal width without importing :mod:`shutil` (start-up time)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() if width is None else width)


def _columns() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it (``COLUMNS``, the terminal, else 80)."""
    import os

    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # one line, exit 2, as for every refused input
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the SPEC positional and ``--doses`` (shared by every subcommand)."""
    parser.add_argument("spec", metavar="SPEC",
                        help="protocol file or folder, a shipped protocol (nct07117175), or a built-in design: "
                             f"{', '.join(sorted(DESIGNS))}")
    parser.add_argument("--doses", type=int, default=None, metavar="N",
                        help="number of doses for a built-in design (default 5)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="design_set",
                        help="a parameter of a model-assisted design (boin, keyboard, mtpi2, i3+3), e.g. "
                             "--set target=0.3 (repeatable; see 'show' for each design's parameters)")


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """Add SPEC, ``--doses``, an OUTCOMES positional and ``--history-json``."""
    add_spec_arguments(parser)
    parser.add_argument("outcomes", nargs="?", default="", metavar="OUTCOMES",
                        help="history as an outcome string, e.g. '1NNN 2NTN' (decisions in brackets: '[escalate]')")
    parser.add_argument("--history-json", metavar="FILE", help="read the history as JSON from FILE ('-' for stdin)")


def load_spec(args: argparse.Namespace) -> Protocol:
    """Resolve the SPEC and ``--doses`` arguments."""
    from .spec import resolve_spec

    return resolve_spec(args.spec, args.doses, parse_design_settings(getattr(args, "design_set", [])))



def parse_design_settings(items: Sequence[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` arguments as a mapping (values stay text; the design checks them)."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise EscalationRulesError(f"--set {item!r}: expected NAME=VALUE, e.g. --set target=0.3")
        if name in params:
            raise EscalationRulesError(f"--set {name}: given twice")
        params[name] = value
    return params


def load_history(args: argparse.Namespace) -> Any:
    """The history given by OUTCOMES or ``--history-json`` (entries or an outcome string)."""
    if getattr(args, "history_json", None):
        if args.outcomes:
            raise EscalationRulesError("give the history either as OUTCOMES or with --history-json, not both")
        path = Path(args.history_json)
        try:
            text = sys.stdin.read() if args.history_json == "-" else path.read_text(encoding="utf-8")
        except OSError as err:
            raise EscalationRulesError(f"{path}: cannot read: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise EscalationRulesError(f"{path}: not UTF-8 text (byte {err.start})") from None
        from .history import parse_history_json

        return parse_history_json(text, str(path))
    return args.outcomes or ""


def _cmd_next(args: argparse.Namespace) -> int:
    from .engine import decide
    from .graph import explore_merged

    protocol = load_spec(args)
    explore_merged(protocol)  # refuse a protocol that fails its build checks
    decision = decide(protocol, load_history(args))
    if args.json:
        print(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"history: {decision.history or '(none)'}")
    if decision.action == "treat":
        print(f"treat {decision.cohort_size} patient(s) at dose {decision.dose} ({decision.dose_label})")
    elif decision.action == "decide":
        print("decide: " + "; ".join(
            f"{o.id} = {o.label}" + (f" (dose {o.dose}, {o.cohort_size} patients)" if o.dose else "")
            for o in decision.options))
    else:
        mtd = "not determined" if decision.mtd is None else f"dose {decision.mtd} ({decision.mtd_label})"
        print(f"stop: MTD {mtd}")
    if decision.signoff:
        print(f"sign-off: {', '.join(decision.signoff)}")
    print(f"rule: {decision.rule} [{decision.clause}]")
    print(f"reason: {decision.reason}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .graph import compile_protocol
    from .verify import verify

    protocol = load_spec(args)
    report = verify(compile_protocol(protocol) if args.full else protocol)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.text())
    return 0 if report.ok else 1


def _cmd_paths(args: argparse.Namespace) -> int:
    from .graph import explore_merged
    from .paths import future_paths, paths_text

    protocol = load_spec(args)
    explore_merged(protocol)  # refuse a protocol that fails its build checks
    tree = future_paths(protocol, load_history(args), max_depth=args.depth)
    if args.truth:
        from .analysis import parse_truth, path_probabilities

        tree = path_probabilities(tree, parse_truth(args.truth), as_json=args.json)
    if args.json:
        print(json.dumps(tree, ensure_ascii=False, indent=1))
    else:
        print(paths_text(tree))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from .graph import compile_protocol

    protocol = load_spec(args)
    compiled = compile_protocol(protocol)
    if args.json:
        from .describe import protocol_summary

        print(json.dumps(protocol_summary(compiled), ensure_ascii=False, indent=2))
        return 0
    from .describe import protocol_text

    print(protocol_text(compiled))
    return 0


def _cmd_names(args: argparse.Namespace) -> int:
    from .protocol import GUARD_NAME_DOCS

    for name, doc in GUARD_NAME_DOCS.items():
        print(f"{name:18} {doc}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with every subcommand registered (or only what ``command`` needs)."""
    parser = _Parser(prog="escalation-rules", description="Rules engine for dose-escalation protocols.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("next", help="the decision after a history")
    add_history_arguments(p)
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(handler=_cmd_next)

    p = sub.add_parser("verify", help="check every invariant on every reachable state")
    add_spec_arguments(p)
    p.add_argument("--full", action="store_true",
                   help="walk the full compiled state graph instead of merged states (same checks; time and memory "
                        "grow with every history, so keep it for short ladders)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("paths", help="the tree of every future decision from a history")
    add_history_arguments(p)
    p.add_argument("--depth", type=int, default=None, metavar="N", help="expand at most N steps")
    p.add_argument("--truth", metavar="P1,P2,...",
                   help="attach each path's probability under these true DLT probabilities (fractions stay exact)")
    p.add_argument("--json", action="store_true", help="print the tree as JSON")
    p.set_defaults(handler=_cmd_paths)

    p = sub.add_parser("show", help="the protocol's dose ladder and decision tables")
    add_spec_arguments(p)
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.set_defaults(handler=_cmd_show)

    p = sub.add_parser("names", help="the names a rule's guard may read")
    p.set_defaults(handler=_cmd_names)

    if command in sub.choices:
        return parser  # a command of this module: no other module is imported
    modules = [_COMMAND_MODULES[command]] if command in _COMMAND_MODULES else _COMMAND_MODULES.values()
    for module_name in dict.fromkeys(modules):
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (also used by the console script)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    args, extra = parser.parse_known_args(argv)
    # argparse fills an optional positional before it sees later options
    # ("next SPEC --doses 3 '1NNN'"); take such a trailing history here.
    if extra and hasattr(args, "outcomes") and not args.outcomes and len(extra) == 1 and not extra[0].startswith("-"):
        args.outcomes = extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status = int(args.handler(args))
    except EscalationRulesError as err:
        for line in _as_options(str(err)).splitlines() or [type(err).__name__]:
            print(f"escalation-rules {args.command}: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # pragma: no cover - e.g. piped into head
        return 0
    except UnicodeDecodeError as err:  # a last guard: every reader names its file where it can
        print(f"escalation-rules {args.command}: input is not UTF-8 text (byte {err.start})", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"escalation-rules {args.command}: input nested too deeply to read", file=sys.stderr)
        return 2
    except Exception:  # never mistaken for a verdict: a status of its own, and where the details are
        return _report_bug(args.command)
    return status


#: The Python arguments the API names in its errors, as the options that set them.
_OPTIONS = {"truth": "--truth", "target": "--target", "overdose_patients": "--overdose-patients",
            "trials": "--trials", "seed": "--seed", "jobs": "--jobs", "policy": "--policy", "max_depth": "--depth"}


def _as_options(message: str) -> str:
    """Reword an API error that names a Python argument (``truth[0]: ...``) by its option (``--truth: entry 1:``).

    Examples
    --------
    >>> _as_options("truth[1]: expected a probability from 0 to 1 (got 1.5)")
    '--truth: entry 2: expected a probability from 0 to 1 (got 1.5)'
    """
    import re

    match = re.match(r"^(" + "|".join(_OPTIONS) + r")(?:\[(\d+)\])?: ", message)
    if match is None:
        return message
    name, index = match.groups()
    entry = f" entry {int(index) + 1}:" if index is not None else ""
    return f"{_OPTIONS[name]}:{entry} {message[match.end():]}"


#: Exit status of an unexpected error (a bug), distinct from every verdict (EX_SOFTWARE of sysexits.h).
EXIT_BUG = 70


def _report_bug(command: str) -> int:
    import os
    import tempfile
    import traceback

    details = traceback.format_exc()
    if os.environ.get("ESCALATION_RULES_DEBUG"):
        sys.stderr.write(details)
        where = "the traceback above"
    else:
        try:
            fd, name = tempfile.mkstemp(prefix="escalation-rules-bug-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(details)
            where = name
        except OSError:
            where = "none written (set ESCALATION_RULES_DEBUG=1 to print the traceback)"
    error = details.rstrip().splitlines()[-1]
    print(f"escalation-rules {command}: internal error (a bug in escalation-rules, not a verdict on the input): "
          f"{error[:200]}; details: {where}", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
