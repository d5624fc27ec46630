"""Exhaustive verification: check safety invariants on every reachable state.

The compiled graph already holds every reachable state of the trial: every
number of DLTs in every cohort and every option at every decision point, up
to the enrolment cap.  Each invariant below is checked on every state or
edge of it; a failure is reported with a shortest counterexample, written as
an outcome string (decisions people took in brackets).

Invariants
----------
``no-escalation-after-two-dlts``
    Never escalate from a dose with 2 or more DLTs (among its first 6: no
    escalation stage holds more than 6 at a dose, see below).
``no-escalation-under-three``
    Never escalate from a dose with fewer than 3 evaluated patients, except
    a single patient without DLT in a stage of kind ``titration``.
``no-skipped-dose``
    Never treat at a dose more than one above the highest dose treated so far.
``no-return-to-closed-dose``
    Never treat at a dose closed for toxicity, or above it.
``at-most-six-during-escalation``
    Never more than 6 patients at a dose outside a ``fill`` stage.
``within-cap``
    Never enrol beyond the cap.
``mtd-accepted``
    A declared MTD is not closed, and the rules accepted it: escalated from
    it, or it holds 0 DLT in 3 or at most 1 in 6 (for a fill stage: when the
    fill began).
``coherence``
    One more DLT in a cohort never gives a more aggressive decision (a higher
    next dose, highest option, or MTD).
``terminates``
    Every path ends in a stop (the graph is acyclic, and every state that is
    not a stop has a successor).
``escalation-signoff``
    Every escalation carries the sign-off the protocol requires of it.

Examples
--------
>>> from escalation_rules import builtin_design, compile_protocol
>>> report = verify(compile_protocol(builtin_design("3+3-deescalate", doses=3)))
>>> report.ok, len(report.results)
(True, 10)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import networkx as nx

from ._machine import State
from .graph import CompiledProtocol, describe_path

__all__ = ["INVARIANTS", "InvariantResult", "VerificationReport", "verify"]

#: Invariant id to a one-line statement.
INVARIANTS: dict[str, str] = {
    "no-escalation-after-two-dlts": "never escalate from a dose with 2 or more DLTs among its first 6 patients",
    "no-escalation-under-three": "never escalate from a dose with fewer than 3 evaluated patients "
                                 "(except one patient without DLT in a titration stage)",
    "no-skipped-dose": "never skip a dose",
    "no-return-to-closed-dose": "never treat at a dose closed for toxicity, or above it",
    "at-most-six-during-escalation": "never more than 6 patients at a dose outside a fill stage",
    "within-cap": "never enrol beyond the cap",
    "mtd-accepted": "a declared MTD is a dose the rules accepted (escalated from it, or 0/3 or at most 1/6)",
    "coherence": "one more DLT in a cohort never gives a more aggressive decision",
    "terminates": "every path ends in a stop within the cap",
    "escalation-signoff": "every escalation carries the required sign-off",
}

Edge = tuple[State, State, dict[str, Any]]


@attrs.frozen
class InvariantResult:
    """The outcome of one invariant over the whole graph."""

    id: str
    statement: str
    ok: bool
    checked: int
    counterexample: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return attrs.asdict(self)


@attrs.frozen
class VerificationReport:
    """Every invariant's result, with what was enumerated."""

    protocol: str
    states: int
    edges: int
    paths: int
    results: tuple[InvariantResult, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every invariant holds."""
        return all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"protocol": self.protocol, "ok": self.ok, "states": self.states, "edges": self.edges,
                "paths": self.paths, "results": [r.to_dict() for r in self.results],
                "warnings": list(self.warnings)}

    def text(self) -> str:
        """The report as lines of text."""
        lines = [f"verify {self.protocol}: {self.states} states, {self.edges} transitions, {self.paths} paths"]
        for r in self.results:
            mark = "ok  " if r.ok else "FAIL"
            lines.append(f"  {mark} {r.id}: {r.statement} ({r.checked} checked)")
            if not r.ok:
                lines.append(f"       counterexample: {r.counterexample}")
                if r.detail:
                    lines.append(f"       {r.detail}")
        for w in self.warnings:
            lines.append(f"  note: {w}")
        lines.append("all invariants hold" if self.ok else "INVARIANT VIOLATED")
        return "\n".join(lines)


def _acceptable(n: int, tox: int) -> bool:
    return n >= 3 and tox <= 1 and (tox == 0 or n >= 6)


def _level(graph: nx.DiGraph, state: State) -> int:
    if state.phase == "treat":
        return state.dose
    if state.phase == "stop":
        return state.mtd if state.mtd is not None else -1
    return max((_level(graph, s) for s in graph.successors(state)), default=-1)


class _Checker:
    def __init__(self, compiled: CompiledProtocol) -> None:
        self.c = compiled
        self.p = compiled.protocol
        self.g = compiled.graph
        self.kinds = {s.id: s.kind for s in self.p.stages}
        self.required = set(self.p.escalation_signoff)

    def escalations(self) -> Iterator[Edge]:
        for a, b, data in self.g.edges(data=True):
            if b.phase == "treat" and b.dose > a.dose:
                yield a, b, data

    # each check yields (checked, violation) pairs; violation is None or (edge-or-state, detail)
    def check_no_escalation_after_two(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.escalations():
            n, tox = b.counts[a.dose]
            yield ((a, b, data), f"escalated from dose {a.dose + 1} with {tox} DLT in {n}") if tox >= 2 else None

    def check_no_escalation_under_three(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.escalations():
            n, tox = b.counts[a.dose]
            allowed = n >= 3 or (self.kinds[a.stage] == "titration" and n == 1 and tox == 0)
            yield None if allowed else ((a, b, data), f"escalated from dose {a.dose + 1} with {n} evaluated")

    def check_no_skipped_dose(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.g.edges(data=True):
            if b.phase != "treat":
                continue
            highest = max((i for i, (n, _) in enumerate(b.counts) if n > 0), default=-1)
            skipped = b.dose > highest + 1
            yield ((a, b, data), f"treats dose {b.dose + 1} with dose {b.dose} never treated") if skipped else None

    def check_no_return_to_closed(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.g.edges(data=True):
            if b.phase != "treat":
                continue
            bad = b.closed and b.dose >= (b.closed & -b.closed).bit_length() - 1
            yield ((a, b, data), f"treats dose {b.dose + 1} after a dose at or below it was closed") if bad else None

    def check_at_most_six(self) -> Iterator[tuple[Any, str] | None]:
        for s in self.g:
            if s.phase != "treat" or self.kinds[s.stage] == "fill":
                continue
            total = s.counts[s.dose][0] + s.cohort
            yield (s, f"{total} patients at dose {s.dose + 1} in stage {s.stage!r}") if total > 6 else None

    def check_within_cap(self) -> Iterator[tuple[Any, str] | None]:
        for s in self.g:
            total = s.enrolled + (s.cohort if s.phase == "treat" else 0)
            yield (s, f"{total} enrolled with a cap of {self.p.cap}") if total > self.p.cap else None

    def check_mtd_accepted(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.g.edges(data=True):
            if b.phase == "treat" and self.kinds[b.stage] == "fill" and self.kinds[a.stage] != "fill":
                n, tox = b.counts[b.dose]
                ok = bool(b.passed >> b.dose & 1) or _acceptable(n, tox)
                yield None if ok else ((a, b, data), f"fill begins at dose {b.dose + 1} with {tox} DLT in {n}")
            if b.phase != "stop" or b.mtd is None:
                continue
            d = b.mtd
            if b.closed >> d & 1:
                yield (a, b, data), f"MTD {d + 1} is a closed dose"
                continue
            if self.kinds[b.stage] == "fill" and d == b.dose:
                yield None  # checked when the fill began
                continue
            n, tox = b.counts[d]
            ok = bool(b.passed >> d & 1) or _acceptable(n, tox)
            yield None if ok else ((a, b, data), f"MTD {d + 1} with {tox} DLT in {n}, never escalated from")

    def check_coherence(self) -> Iterator[tuple[Any, str] | None]:
        for a in self.g:
            if a.phase != "treat":
                continue
            by_dlts = sorted(((d["dlts"], b, d) for _, b, d in self.g.out_edges(a, data=True)), key=lambda x: x[0])
            for (t0, b0, _d0), (t1, b1, d1) in itertools.pairwise(by_dlts):
                l0, l1 = _level(self.g, b0), _level(self.g, b1)
                if l1 > l0:
                    yield (a, b1, d1), (f"{t1} DLT leads to level {l1 + 1} but {t0} DLT leads to level {l0 + 1}")
                else:
                    yield None

    def check_terminates(self) -> Iterator[tuple[Any, str] | None]:
        acyclic = nx.is_directed_acyclic_graph(self.g)
        for s in self.g:
            bad = (s.phase != "stop" and self.g.out_degree(s) == 0) or (s.phase == "stop" and self.g.out_degree(s))
            yield (s, f"state {s.phase} with no way on") if bad else None
        if not acyclic:  # pragma: no cover - enrolment grows along every path
            yield self.c.initial, "the state graph has a cycle"

    def check_signoff(self) -> Iterator[tuple[Any, str] | None]:
        for a, b, data in self.escalations():
            roles = set(data.get("signoff", ())) if data["kind"] == "option" else set(self.p.rule(data["rule"]).signoff)
            missing = self.required - roles
            yield ((a, b, data), f"escalation by rule {data['rule']!r} lacks sign-off by "
                                 f"{', '.join(sorted(missing))}") if missing else None


_CHECKS: dict[str, Callable[[_Checker], Iterator[tuple[Any, str] | None]]] = {
    "no-escalation-after-two-dlts": _Checker.check_no_escalation_after_two,
    "no-escalation-under-three": _Checker.check_no_escalation_under_three,
    "no-skipped-dose": _Checker.check_no_skipped_dose,
    "no-return-to-closed-dose": _Checker.check_no_return_to_closed,
    "at-most-six-during-escalation": _Checker.check_at_most_six,
    "within-cap": _Checker.check_within_cap,
    "mtd-accepted": _Checker.check_mtd_accepted,
    "coherence": _Checker.check_coherence,
    "terminates": _Checker.check_terminates,
    "escalation-signoff": _Checker.check_signoff,
}


def verify(compiled: CompiledProtocol) -> VerificationReport:
    """Check every invariant on every reachable state and transition.

    Parameters
    ----------
    compiled : CompiledProtocol

    Returns
    -------
    VerificationReport
        With, for a violated invariant, a shortest counterexample history.
    """
    checker = _Checker(compiled)
    depth: dict[State, int] | None = None
    results = []
    for inv_id, check in _CHECKS.items():
        checked = 0
        violations = []
        for item in check(checker):
            checked += 1
            if item is not None:
                violations.append(item)
        if not violations:
            results.append(InvariantResult(inv_id, INVARIANTS[inv_id], True, checked))
            continue
        if depth is None:
            depth = nx.single_source_shortest_path_length(compiled.graph, compiled.initial)
        best_depth = depth

        def key(v: tuple[Any, str], depth: dict[State, int] = best_depth) -> int:
            where = v[0]
            return depth[where[0]] if isinstance(where, tuple) else depth[where]

        where, detail = min(violations, key=key)
        results.append(InvariantResult(inv_id, INVARIANTS[inv_id], False, checked,
                                       _counterexample(compiled, where), detail))
    stats = compiled.stats
    return VerificationReport(compiled.protocol.source, stats["states"], stats["edges"], stats["paths"],
                              tuple(results), compiled.warnings)


def _counterexample(compiled: CompiledProtocol, where: Any) -> str:
    if isinstance(where, tuple):
        a, b, data = where
        return describe_path([*compiled.path_to(a), (a, b, data)])
    return describe_path(compiled.path_to(where))
