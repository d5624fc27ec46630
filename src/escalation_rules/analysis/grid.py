"""Scenario grids: many truth vectors against one or several designs, in parallel.

A *scenario* is a named vector of true DLT probabilities.  :func:`run_grid`
computes the exact operating characteristics of every design under every
scenario, spreading the work over any :class:`concurrent.futures.Executor`
(a process pool by default), and returns a :class:`GridResult` that writes
itself as a table (CSV or JSON) and, with :mod:`~escalation_rules.analysis.plot`,
as a figure.

Designs are given by name, as on the command line: a built-in design
(whose number of doses is then the length of each scenario) or the path of
a protocol file or folder (whose ladder must match the scenarios).  Names
rather than objects travel to the workers, so any executor works, including
a process pool on another machine: with Dask, pass ``client.get_executor()``
of a ``dask.distributed.Client`` (its workers need this package installed).

Examples
--------
>>> from concurrent.futures import ThreadPoolExecutor
>>> scenarios = [Scenario("low", (0.05, 0.1, 0.15)), Scenario("high", (0.3, 0.45, 0.6))]
>>> with ThreadPoolExecutor(2) as pool:
...     grid = run_grid(["3+3-escalate-only", "3+3-deescalate"], scenarios, executor=pool)
>>> [(row["design"], row["scenario"]) for row in grid.rows()][:2]
[('3+3-escalate-only', 'low'), ('3+3-escalate-only', 'high')]
>>> round(grid.result("3+3-deescalate", "high").mtd[0], 4)
0.5673
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

from .. import _toml as tomllib
from .._attrs import value_repr
from ..designs import DESIGNS, design_parameters
from ..errors import EscalationRulesError
from ..protocol import Protocol
from ..spec import resolve_spec
from .oc import BOUNDED_FIGURES, OperatingCharacteristics, operating_characteristics, parse_probability, shown

__all__ = ["GridResult", "Scenario", "load_scenarios", "run_grid"]

Number = Any


@attrs.frozen
class Scenario:
    """A named vector of true DLT probabilities, one per dose."""

    __repr__ = value_repr

    name: str
    truth: tuple[Number, ...]


def _row_truth(values: Sequence[Any], where: str) -> tuple[Number, ...]:
    texts = [str(v).strip() for v in values]
    if not texts:
        raise EscalationRulesError(f"{where}: expected at least one probability")
    parsed = [parse_probability(t, f"{where}: entry {i}") for i, t in enumerate(texts, 1)]
    if any("/" in t for t in texts):
        return tuple(Fraction(t) for t in texts)
    return tuple(parsed)


def load_scenarios(path: str | Path) -> tuple[Scenario, ...]:
    """Read scenarios from a CSV, JSON or TOML file (by the file's suffix; anything else is read as CSV).

    CSV: a header row; a column named ``name`` (or ``scenario``) holds the
    names, every other column one dose's probability (blank cells end a
    shorter ladder).  JSON: a list (or ``{"scenarios": [...]}``) of objects
    ``{"name": "...", "truth": [0.05, "1/10", ...]}`` or of bare lists, or an
    object of name to list.  TOML: as a protocol declares its scenarios
    (``spec/nct07117175/scenarios.toml``): ``[[scenarios]]`` tables with
    ``name`` and ``truth``, or a ``[scenarios]`` table of name = list.
    Entries written as fractions (``1/10``) make that scenario exact.

    Raises
    ------
    EscalationRulesError
        Naming the file, row and entry that is not a probability.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    ...     _ = f.write("name,p1,p2\\nflat,0.1,0.1\\nexact,1/10,1/5\\n")
    >>> load_scenarios(f.name)
    (Scenario(name='flat', truth=(0.1, 0.1)), Scenario(name='exact', truth=(Fraction(1, 10), Fraction(1, 5))))
    >>> os.unlink(f.name)
    """
    if not isinstance(path, str | Path):
        raise TypeError(f"path: expected a scenarios file as a str or Path (got {type(path).__name__})")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise EscalationRulesError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise EscalationRulesError(f"{path}: cannot read: not UTF-8 text (byte {err.start})") from None
    scenarios: list[Scenario] = []
    suffix = path.suffix.lower()
    if suffix in (".json", ".toml"):
        try:
            data: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
        except ValueError as err:  # tomllib.TOMLDecodeError is a ValueError too
            raise EscalationRulesError(f"{path}: not valid {suffix[1:].upper()}: {err}") from None
        if isinstance(data, dict):
            data = data.get("scenarios")
        if isinstance(data, dict):  # a table of name = list
            data = [{"name": name, "truth": truth} for name, truth in data.items()]
        if not isinstance(data, list):
            expected = "{\"scenarios\": [...]}" if suffix == ".json" else "[[scenarios]] tables with name and truth"
            raise EscalationRulesError(f"{path}: expected a list of scenarios (or {expected})")
        for i, item in enumerate(data):
            where = f"{path}: scenarios[{i}]"
            if isinstance(item, dict):
                name = item.get("name", f"scenario {i + 1}")
                truth = item.get("truth")
            else:
                name, truth = f"scenario {i + 1}", item
            if not isinstance(truth, list):
                raise EscalationRulesError(f"{where}.truth: expected a list of probabilities (got {shown(truth)})")
            scenarios.append(Scenario(str(name), _row_truth(truth, f"{where}.truth")))
    else:
        rows = list(csv.reader(io.StringIO(text)))
        if len(rows) < 2:
            raise EscalationRulesError(f"{path}: expected a header row and at least one scenario row")
        header = [h.strip().lower() for h in rows[0]]
        name_col = next((i for i, h in enumerate(header) if h in ("name", "scenario")), None)
        for r, row in enumerate(rows[1:], 2):
            if not any(cell.strip() for cell in row):
                continue
            cells = [c for i, c in enumerate(row) if i != name_col]
            while cells and not cells[-1].strip():
                cells.pop()
            name = row[name_col].strip() if name_col is not None and name_col < len(row) else f"scenario {r - 1}"
            scenarios.append(Scenario(name, _row_truth(cells, f"{path}: row {r}")))
    if not scenarios:
        raise EscalationRulesError(f"{path}: no scenarios")
    return tuple(scenarios)


_PROTOCOLS: dict[tuple[str, int, tuple[tuple[str, Any], ...]], Protocol] = {}


def _protocol(spec: str, doses: int, params: tuple[tuple[str, Any], ...] = ()) -> Protocol:
    """The protocol of a grid column; ``params`` go to the model-assisted designs only."""
    if not design_parameters(spec):
        params = ()
    key = (spec, doses, params)
    if key not in _PROTOCOLS:
        _PROTOCOLS[key] = resolve_spec(spec, doses if spec in DESIGNS else None, dict(params))
    return _PROTOCOLS[key]


def _task(spec: str, scenario: Scenario, policy: str | Mapping[str, Any] | None, target: Number,
          overdose_patients: int, bounds: bool,
          params: tuple[tuple[str, Any], ...] = ()) -> OperatingCharacteristics:
    """One cell of the grid (runs in a worker: only picklable arguments and results)."""
    try:
        protocol = _protocol(spec, len(scenario.truth), params)
        return operating_characteristics(protocol, scenario.truth, policy=policy, target=target,
                                         overdose_patients=overdose_patients, bounds=bounds)
    except EscalationRulesError as err:  # re-raised as the base class: it pickles with its message
        raise EscalationRulesError(f"grid: design {spec}, scenario {scenario.name!r}: {err}") from None


def _cell(value: Number) -> Any:
    return str(value) if isinstance(value, Fraction) else float(value)


@attrs.frozen
class GridResult:
    """Exact operating characteristics of every design under every scenario.

    Attributes
    ----------
    designs : tuple of str
    scenarios : tuple of Scenario
    results : tuple of OperatingCharacteristics
        Design-major: all scenarios of the first design, then the next.
    """

    __repr__ = value_repr

    designs: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    results: tuple[OperatingCharacteristics, ...] = attrs.field(repr=False)

    def result(self, design: str, scenario: str) -> OperatingCharacteristics:
        """The characteristics of one design under one scenario (by name)."""
        names = [s.name for s in self.scenarios]
        if design not in self.designs or scenario not in names:
            raise KeyError((design, scenario))
        return self.results[self.designs.index(design) * len(names) + names.index(scenario)]

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per (design, scenario): the table written by :meth:`to_csv`."""
        width = max(len(s.truth) for s in self.scenarios)
        rows = []
        for i, design in enumerate(self.designs):
            for j, scenario in enumerate(self.scenarios):
                oc = self.results[i * len(self.scenarios) + j]
                k = len(oc.truth)
                row: dict[str, Any] = {"design": design, "scenario": scenario.name, "doses": k,
                                       "truth": ";".join(str(p) for p in oc.truth), "target": _cell(oc.target),
                                       "true_mtd": oc.true_mtd, "policy": oc.policy, "p_no_mtd": _cell(oc.mtd[0])}
                for d in range(width):
                    row[f"p_mtd_{d + 1}"] = _cell(oc.mtd[d + 1]) if d < k else None
                for d in range(width):
                    row[f"patients_{d + 1}"] = _cell(oc.patients_at_dose[d]) if d < k else None
                for d in range(width):
                    row[f"dlts_{d + 1}"] = _cell(oc.dlts_at_dose[d]) if d < k else None
                for name in BOUNDED_FIGURES:
                    row[name] = _cell(oc.figure(name))
                for name in BOUNDED_FIGURES:
                    lo, hi = oc.bounds[name]
                    row[f"{name}_min"] = _cell(lo)
                    row[f"{name}_max"] = _cell(hi)
                rows.append(row)
        return rows

    def to_csv(self) -> str:
        """The table as CSV text (one row per design and scenario)."""
        rows = self.rows()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        """The grid as JSON-ready data: designs, scenarios and each cell's ``oc --json`` document."""
        return {
            "designs": list(self.designs),
            "scenarios": [{"name": s.name, "truth": [_cell(p) for p in s.truth]} for s in self.scenarios],
            "results": [{"design": self.designs[i // len(self.scenarios)],
                         "scenario": self.scenarios[i % len(self.scenarios)].name, **oc.to_dict()}
                        for i, oc in enumerate(self.results)],
        }


def run_grid(
    designs: Sequence[str],
    scenarios: Sequence[Scenario | Sequence[Number]],
    *,
    policy: str | Mapping[str, Any] | None = None,
    target: Number = 0.3,
    overdose_patients: int = 3,
    bounds: bool = True,
    executor: Executor | None = None,
    jobs: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> GridResult:
    """Exact operating characteristics of each design under each scenario.

    Parameters
    ----------
    designs : sequence of str
        Built-in design names or protocol paths.
    scenarios : sequence of Scenario or of probability vectors
    policy, target, overdose_patients, bounds
        As for :func:`~escalation_rules.analysis.oc.operating_characteristics`
        (``policy``: a built-in name, a file path or a mapping).
    executor : concurrent.futures.Executor or None
        Where the cells run: any executor (a thread or process pool, Dask's
        ``client.get_executor()``).  By default a process pool of ``jobs``
        workers is created for the call; ``jobs=1`` runs in this process.

    Raises
    ------
    EscalationRulesError
        Naming the design and scenario of the first cell that fails.
    """
    if not designs:
        raise EscalationRulesError("grid: expected at least one design")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise EscalationRulesError(f"jobs: expected a whole number of 1 or more (got {shown(jobs)})")
    cells = tuple(s if isinstance(s, Scenario) else Scenario(f"scenario {i + 1}", tuple(s))
                  for i, s in enumerate(scenarios))
    if not cells:
        raise EscalationRulesError("grid: expected at least one scenario")
    settings = tuple(sorted((params or {}).items()))
    args = [(spec, scenario, policy, target, overdose_patients, bounds, settings)
            for spec in designs for scenario in cells]
    if executor is None and (jobs == 1 or len(args) == 1):
        results = [_task(*a) for a in args]
    elif executor is None:
        workers = jobs or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=min(workers, len(args))) as pool:
            results = _gather(pool, args)
    else:
        results = _gather(executor, args)
    return GridResult(tuple(designs), cells, tuple(results))


def _gather(executor: Executor, args: list[tuple[Any, ...]]) -> list[OperatingCharacteristics]:
    futures: list[Future[OperatingCharacteristics]] = [executor.submit(_task, *a) for a in args]
    try:
        return [f.result() for f in futures]
    finally:
        for f in futures:
            f.cancel()
