"""The ``oc``, ``simulate`` and ``grid`` subcommands (registered by :mod:`escalation_rules.cli`).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> parser.parse_args(["oc", "3+3-deescalate", "--truth", "0.1,0.2"]).truth
'0.1,0.2'
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..designs import DESIGNS
from ..errors import EscalationRulesError
from ..protocol import Protocol
from .oc import operating_characteristics, parse_probability, parse_truth

__all__ = ["register"]


def _protocol(args: argparse.Namespace, doses: int) -> Protocol:
    from ..cli import load_spec

    if args.spec in DESIGNS:
        if args.doses is not None and args.doses != doses:
            raise EscalationRulesError(f"--doses {args.doses} but --truth gives {doses} probabilities; "
                                       f"for a built-in design the number of doses is the length of --truth")
        args.doses = doses
    return load_spec(args)


def _common(parser: argparse.ArgumentParser, truth: bool = True) -> None:
    from ..cli import add_spec_arguments

    add_spec_arguments(parser)
    if truth:
        parser.add_argument("--truth", required=True, metavar="P1,P2,...",
                            help="true DLT probability per dose, e.g. 0.05,0.1,0.25 or 1/20,1/10,1/4 (exact)")
    parser.add_argument("--policy", default=None, metavar="P",
                        help="choices at decision points: default, most-aggressive, most-cautious, "
                             "or a TOML/JSON file of rule id = option id (default: the protocol's)")
    parser.add_argument("--target", default="0.3", metavar="T",
                        help="target DLT probability defining the true MTD (default 0.3)")
    parser.add_argument("--overdose-patients", type=int, default=3, metavar="M",
                        help="report P(M or more patients treated above the true MTD) (default 3)")


def _write(text: str | bytes, path: str | None) -> None:
    if isinstance(text, str) and not text.endswith("\n"):
        text += "\n"
    if path is None or path == "-":
        sys.stdout.write(text if isinstance(text, str) else text.decode("utf-8"))
        return
    try:
        if isinstance(text, bytes):
            Path(path).write_bytes(text)
        else:
            Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise EscalationRulesError(f"{path}: cannot write: {err.strerror}") from None


def _check_output(path: str | None, option: str) -> None:
    """Refuse an output file whose folder does not exist (before any work is done; no folder is created)."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise EscalationRulesError(f"{option}: {path}: is a folder (expected a file name)")
    if not target.parent.is_dir():
        raise EscalationRulesError(f"{option}: {path}: the folder {target.parent} does not exist")


def _truth(text: str) -> tuple[Any, ...]:
    """``--truth`` read, with a one-line warning on stderr when it is not monotone (allowed)."""
    truth = parse_truth(text)
    drop = next((i for i in range(1, len(truth)) if truth[i] < truth[i - 1]), None)
    if drop is not None:
        print(f"escalation-rules: warning: --truth is not increasing (dose {drop + 1}: {truth[drop]} after "
              f"{truth[drop - 1]}); the true MTD is the dose below the first one over the target",
              file=sys.stderr)
    return truth


def _allow_negative_values(parser: argparse.ArgumentParser) -> None:
    """Let ``--truth -0.1,0.2`` reach the probability check (argparse took it for an option).

    argparse treats an argument that starts with ``-`` and does not look like a
    number as an option; this widens its number test to comma-separated
    numbers and fractions, so the value is refused with a message saying
    probabilities are from 0 to 1.
    """
    parser._negative_number_matcher = re.compile(r"^-[\d.,/\s-]+$")  # no option of ours looks like this


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _cmd_oc(args: argparse.Namespace) -> int:
    truth = _truth(args.truth)
    protocol = _protocol(args, len(truth))
    target = parse_probability(args.target, "--target")
    oc = operating_characteristics(protocol, truth, policy=args.policy, target=target,
                                   overdose_patients=args.overdose_patients, bounds=not args.no_bounds)
    print(_json(oc.to_dict()) if args.json else oc.text())
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulation import simulate

    if args.seed is not None and args.seed < 0:
        raise EscalationRulesError(f"--seed: expected a whole number of 0 or more (got {args.seed})")
    truth = _truth(args.truth)
    protocol = _protocol(args, len(truth))
    result = simulate(protocol, truth, trials=args.trials, seed=args.seed, policy=args.policy,
                      target=float(parse_probability(args.target, "--target")),
                      overdose_patients=args.overdose_patients, engine="engine" if args.engine else "graph",
                      progress=None if not args.no_progress else False)
    print(_json(result.to_dict()) if args.json else result.text())
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from .grid import load_scenarios, run_grid

    if args.jobs is not None and args.jobs < 1:
        raise EscalationRulesError(f"--jobs: expected a whole number of 1 or more (got {args.jobs})")
    for path, option in ((args.json, "--json"), (args.csv, "--csv"), (args.plot, "--plot")):
        _check_output(path, option)
    if args.plot:
        from .plot import _figure_class, plot_format

        plot_format(args.plot)
        _figure_class()  # matplotlib is there: refused now rather than after the grid is computed
    scenarios = load_scenarios(args.scenarios)
    designs = [args.spec, *(args.also or [])]
    if args.doses is not None:
        bad = [s.name for s in scenarios if len(s.truth) != args.doses]
        if bad:
            raise EscalationRulesError(f"--doses {args.doses}: scenario {bad[0]!r} gives another number of doses; "
                                       f"for built-in designs the number of doses is each scenario's length")
    for spec in designs:
        if spec not in DESIGNS and not Path(spec).exists() and not Path(spec).with_suffix("").is_dir():
            raise EscalationRulesError(f"{spec}: no such protocol file or folder, and not a built-in design "
                                       f"(known: {', '.join(sorted(DESIGNS))})")
    grid = run_grid(designs, scenarios, policy=args.policy, target=parse_probability(args.target, "--target"),
                    overdose_patients=args.overdose_patients, bounds=not args.no_bounds, jobs=args.jobs)
    outputs: list[tuple[str | None, str | bytes]] = []  # everything is rendered before anything is written
    if args.json:
        outputs.append((args.json, _json(grid.to_json())))
    if args.csv:
        outputs.append((args.csv, grid.to_csv()))
    if args.plot:
        from .plot import plot_format, render_grid

        outputs.append((args.plot, render_grid(grid, plot_format(args.plot))))
    if not args.json and not args.csv:
        outputs.append((None, grid.to_csv()))
    for path, data in outputs:
        _write(data, path)
        if path == args.plot:
            print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``oc``, ``simulate`` and ``grid`` subcommands."""
    p = subparsers.add_parser("oc", help="exact operating characteristics under assumed true DLT probabilities")
    _common(p)
    _allow_negative_values(p)
    p.add_argument("--no-bounds", action="store_true", help="skip the range of each figure over every policy")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(handler=_cmd_oc)

    p = subparsers.add_parser("simulate", help="Monte Carlo operating characteristics with standard errors")
    _common(p)
    _allow_negative_values(p)
    p.add_argument("--trials", type=int, default=10_000, metavar="N",
                   help="number of simulated trials (default 10000, at most 1000000000)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed, 0 or more (equal seeds, equal results; default: drawn from the OS and printed)")
    p.add_argument("--engine", action="store_true",
                   help="run every trial through the decision engine (slow; for comparison with the graph walk)")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.add_argument("--json", action="store_true", help="print the figures and standard errors as JSON")
    p.set_defaults(handler=_cmd_simulate)

    p = subparsers.add_parser("grid", help="operating characteristics of designs over a file of scenarios")
    _common(p, truth=False)
    _allow_negative_values(p)
    p.add_argument("--also", action="append", metavar="SPEC", help="another design to compare (repeatable)")
    p.add_argument("--scenarios", required=True, metavar="FILE",
                   help="CSV (name,p1,p2,...) or JSON ([{\"name\":..., \"truth\": [...]}]) of truth vectors")
    p.add_argument("--csv", metavar="FILE", help="write the table as CSV ('-' for stdout; the default output)")
    p.add_argument("--json", metavar="FILE", help="write the table as JSON ('-' for stdout)")
    p.add_argument("--plot", metavar="FILE", help="draw selection probabilities and patients per dose (.png or .svg)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes (default: one per CPU; 1 runs in this process)")
    p.add_argument("--no-bounds", action="store_true", help="skip the range of each figure over every policy")
    p.set_defaults(handler=_cmd_grid)
