"""Exhaustive verification: check safety invariants on every reachable state.

Every reachable state of the trial is enumerated: every number of DLTs in
every cohort and every option at every decision point, up to the enrolment
cap.  Each invariant below is checked on every state or transition; a
failure is reported with a shortest counterexample, written as an outcome
string (decisions people took in brackets).

Two walks run the same checks.  Given a :class:`~escalation_rules.graph.CompiledProtocol`,
:func:`verify` walks its full state graph.  Given a protocol, it explores
merged states (:mod:`escalation_rules._reduce`): states whose futures are
identical become one, and the checks read the data of a state through a view
that records what they read, so two states are merged only when every check
would also say the same of both.  The results are the same, and the merged
walk grows with the number of distinct futures rather than of histories
(3+3 with de-escalation and 15 doses: hundreds of classes instead of
millions of states).

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
    fill began at that dose, also when a fill moves to a lower dose).
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
>>> report.ok, len(report.results), report.paths
(True, 10, 118)
>>> merged = verify(builtin_design("3+3-deescalate", doses=3))
>>> merged.ok, merged.paths, merged.states < report.states
(True, 118, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import networkx as nx

from ._attrs import value_repr
from ._machine import State
from ._reduce import DECIDE, STOP, TREAT, Observer, ReducedGraph
from .graph import CompiledProtocol, as_protocol, describe_path, explore_merged
from .protocol import Protocol

__all__ = ["INVARIANTS", "InvariantResult", "VerificationReport", "applicable_invariants", "verify"]

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
    "interval-boundaries": "in a model-assisted (interval) stage, never escalate when the DLTs at the current dose "
                           "reach its de-escalation boundary",
}

#: Invariants of the 3+3 family that model-assisted designs break by their nature (BOIN may escalate
#: after 2 DLTs in 9 and treats more than 6 at a dose); they are not checked in an ``interval`` stage,
#: whose own rule ``interval-boundaries`` is checked instead.
THREE_PLUS_THREE_ONLY = ("no-escalation-after-two-dlts", "at-most-six-during-escalation", "mtd-accepted")


@attrs.frozen
class InvariantResult:
    """The outcome of one invariant over the whole graph."""

    __repr__ = value_repr

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

    __repr__ = value_repr

    protocol: str
    states: int
    edges: int
    paths: int
    results: tuple[InvariantResult, ...]
    warnings: tuple[str, ...]
    method: str = "full state graph"

    @property
    def ok(self) -> bool:
        """True when every invariant holds."""
        return all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"protocol": self.protocol, "ok": self.ok, "method": self.method, "states": self.states,
                "edges": self.edges, "paths": self.paths, "results": [r.to_dict() for r in self.results],
                "warnings": list(self.warnings)}

    def text(self) -> str:
        """The report as lines of text."""
        where = "states of the full state graph" if self.method == "full state graph" else "merged states"
        lines = [f"verify {self.protocol}: {self.states} {where}, {self.edges} transitions, {self.paths} paths"]
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


class _View:
    """Read access to a full-graph state's data, shaped like :class:`escalation_rules._reduce.FieldView`."""

    __slots__ = ("state",)

    def __init__(self, state: State) -> None:
        self.state = state

    def n(self, dose: int) -> int:
        return self.state.counts[dose][0]

    def tox(self, dose: int) -> int:
        return self.state.counts[dose][1]

    def closed(self, dose: int) -> bool:
        return bool(self.state.closed >> dose & 1)

    def passed(self, dose: int) -> bool:
        return bool(self.state.passed >> dose & 1)

    def closed_up_to(self, dose: int) -> bool:
        return bool(self.state.closed & ((2 << dose) - 1))

    def treated_from(self, dose: int) -> bool:
        return any(n for n, _ in self.state.counts[max(dose, 0):])


def _acceptable(n: int, tox: int) -> bool:
    return n >= 3 and tox <= 1 and (tox == 0 or n >= 6)


Check = tuple[str, str | None]


class _Invariants(Observer):
    """The checks, written once over a data view; both walks call them.

    ``transition`` is shown a step from a decision at (stage, dose) to a child
    given by its control part: ``(TREAT, stage, dose, cohort)``, ``(DECIDE,
    stage, dose, rule)`` or ``(STOP, mtd, closes)``.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.k = len(protocol.doses)
        self.kinds = {s.id: s.kind for s in protocol.stages}
        self.required = set(protocol.escalation_signoff)
        self.boundaries = protocol.boundaries

    def treat(self, stage: str, dose: int, cohort: int, view: Any) -> list[Check]:
        if self.kinds[stage] in ("fill", "interval", "model"):
            return []
        total = view.n(dose) + cohort
        return [("at-most-six-during-escalation",
                 f"{total} patients at dose {dose + 1} in stage {stage!r}" if total > 6 else None)]

    def transition(self, stage: str, dose: int, child: tuple[Any, ...], view: Any,
                   rule: str, signoff: Sequence[str]) -> list[Check]:
        checks: list[Check] = []
        if child[0] == TREAT:
            _, child_stage, target, _cohort = child
            if target > dose:
                n, tox = view.n(dose), view.tox(dose)
                if self.kinds[stage] == "interval":
                    limit = self.boundaries[n - 1].deescalate if 1 <= n <= len(self.boundaries) else n + 1
                    failure = (f"escalated from dose {dose + 1} with {tox} DLT in {n} (de-escalation boundary {limit})"
                               if tox >= limit else None)
                    checks.append(("interval-boundaries", failure))
                elif self.kinds[stage] != "model":
                    checks.append(("no-escalation-after-two-dlts",
                                   f"escalated from dose {dose + 1} with {tox} DLT in {n}" if tox >= 2 else None))
                allowed = (n >= 3 or (self.kinds[stage] == "titration" and n == 1 and tox == 0)
                           or self.kinds[stage] in ("interval", "model"))  # these may escalate after a cohort of 1
                checks.append(("no-escalation-under-three",
                               None if allowed else f"escalated from dose {dose + 1} with {n} evaluated"))
                missing = self.required - set(signoff)
                checks.append(("escalation-signoff", f"escalation by {rule!r} lacks sign-off by "
                                                     f"{', '.join(sorted(missing))}" if missing else None))
            # both answered without a scan of the ladder (the merged walk carries the highest dose treated
            # and the lowest dose closed; doses are never reopened)
            treated_near = target == 0 or view.treated_from(target - 1)
            checks.append(("no-skipped-dose",
                           None if treated_near else f"treats dose {target + 1} with dose {target} never treated"))
            back = view.closed_up_to(target)
            checks.append(("no-return-to-closed-dose", f"treats dose {target + 1} after a dose at or below it "
                                                       f"was closed" if back else None))
            if self.kinds[child_stage] == "fill" and (self.kinds[stage] != "fill" or target != dose):
                n, tox = view.n(target), view.tox(target)
                ok = view.passed(target) or _acceptable(n, tox)
                failure = None if ok else f"fill begins at dose {target + 1} with {tox} DLT in {n}"
                checks.append(("mtd-accepted", failure))
        elif child[0] == STOP and child[1] is not None:
            d = child[1]
            if view.closed(d):
                checks.append(("mtd-accepted", f"MTD {d + 1} is a closed dose"))
            elif self.kinds[stage] == "fill" and d == dose:
                checks.append(("mtd-accepted", None))  # checked when the fill began
            elif self.kinds[stage] in ("interval", "model"):
                pass  # the MTD is selected from the data; that it is not a closed dose is checked above
            else:
                n, tox = view.n(d), view.tox(d)
                ok = view.passed(d) or _acceptable(n, tox)
                failure = None if ok else f"MTD {d + 1} with {tox} DLT in {n}, never escalated from"
                checks.append(("mtd-accepted", failure))
        return checks


def _control(state: State) -> tuple[Any, ...]:
    if state.phase == "treat":
        return (TREAT, state.stage, state.dose, state.cohort)
    if state.phase == "decide":
        return (DECIDE, state.stage, state.dose, state.rule)
    return (STOP, state.mtd, None)


def _coherence(levels: Sequence[int]) -> Iterator[tuple[int, str | None]]:
    """For a treat node whose children (by DLT count) have these levels: one check per adjacent pair."""
    for t in range(1, len(levels)):
        worse = levels[t] > levels[t - 1]
        yield t, (f"{t} DLT leads to level {levels[t] + 1} but {t - 1} DLT leads to level {levels[t - 1] + 1}"
                  if worse else None)


def applicable_invariants(protocol: Protocol) -> tuple[str, ...]:
    """The invariants that apply to a protocol, by the kinds of its stages.

    ``interval-boundaries`` applies where a stage is a model-assisted table
    (kind ``interval``); the 3+3 family's own invariants
    (:data:`THREE_PLUS_THREE_ONLY`) apply where any other stage is.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> "interval-boundaries" in applicable_invariants(builtin_design("boin", 3))
    True
    >>> "no-escalation-after-two-dlts" in applicable_invariants(builtin_design("boin", 3))
    False
    """
    kinds = {stage.kind for stage in protocol.stages}
    out = []
    for key in INVARIANTS:
        if key == "interval-boundaries" and "interval" not in kinds:
            continue
        if key in THREE_PLUS_THREE_ONLY and kinds <= {"interval", "model"}:
            continue
        out.append(key)
    return tuple(out)


class _Tally:
    """Per invariant: how many checks, and the failures with where they happened."""

    def __init__(self, protocol: Protocol) -> None:
        self.applicable = applicable_invariants(protocol)
        self.checked = dict.fromkeys(INVARIANTS, 0)
        self.failures: dict[str, list[tuple[Any, str]]] = {key: [] for key in INVARIANTS}

    def add(self, key: str, where: Any, failure: str | None) -> None:
        self.checked[key] += 1
        if failure is not None:
            self.failures[key].append((where, failure))

    def results(self, counterexample: Any) -> tuple[InvariantResult, ...]:
        out = []
        for key, statement in INVARIANTS.items():
            if key not in self.applicable:
                continue
            failures = self.failures[key]
            if not failures:
                out.append(InvariantResult(key, statement, True, self.checked[key]))
            else:
                text, detail = counterexample(failures)
                out.append(InvariantResult(key, statement, False, self.checked[key], text, detail))
        return tuple(out)


def _verify_full(compiled: CompiledProtocol) -> VerificationReport:
    graph, p = compiled.graph, compiled.protocol
    checks = _Invariants(p)
    tally = _Tally(p)
    for s in graph:
        tally.add("within-cap", s, f"{s.enrolled + s.cohort} enrolled with a cap of {p.cap}"
                  if s.enrolled + s.cohort > p.cap else None)
        open_end = (s.phase != "stop") != bool(graph.out_degree(s))
        tally.add("terminates", s, f"state {s.phase} with no way on" if open_end else None)
        if s.phase == "treat":
            for key, failure in checks.treat(s.stage, s.dose, s.cohort, _View(s)):
                tally.add(key, s, failure)
    for a, b, data in graph.edges(data=True):
        signoff = data.get("signoff", ()) if data["kind"] == "option" else p.rule(data["rule"]).signoff
        label = f"{data['rule']}/{data['option']}" if data["kind"] == "option" else data["rule"]
        for key, failure in checks.transition(a.stage, a.dose, _control(b), _View(b), label, signoff):
            tally.add(key, (a, b, data), failure)
    level: dict[State, int] = {}
    for s in reversed(list(nx.topological_sort(graph))):
        succ = list(graph.successors(s))
        level[s] = (s.dose if s.phase == "treat" else (s.mtd if s.mtd is not None else -1) if s.phase == "stop"
                    else max((level[c] for c in succ), default=-1))
        if s.phase == "treat":
            by_dlts = sorted(((graph.edges[s, c]["dlts"], c) for c in succ), key=lambda x: x[0])
            for t, failure in _coherence([level[c] for _, c in by_dlts]):
                child = by_dlts[t][1]
                tally.add("coherence", (s, child, graph.edges[s, child]), failure)
    if not nx.is_directed_acyclic_graph(graph):  # pragma: no cover - enrolment grows along every path
        tally.add("terminates", compiled.initial, "the state graph has a cycle")
    depth = nx.single_source_shortest_path_length(graph, compiled.initial)

    def shortest(failures: list[tuple[Any, str]]) -> tuple[str, str]:
        def key(item: tuple[Any, str]) -> int:
            where = item[0]
            return depth[where[0]] if isinstance(where, tuple) else depth[where]

        where, detail = min(failures, key=key)
        if isinstance(where, tuple):
            a, b, data = where
            return describe_path([*compiled.path_to(a), (a, b, data)]), detail
        return describe_path(compiled.path_to(where)), detail

    stats = compiled.stats
    return VerificationReport(p.source, stats["states"], stats["edges"], stats["paths"],
                              tally.results(shortest), compiled.warnings)


def _verify_merged(protocol: Protocol) -> VerificationReport:
    graph = explore_merged(protocol, _Invariants(protocol))
    nodes = graph.nodes
    tally = _Tally(protocol)
    for nid, child, key, failure in graph.checks:
        tally.add(key, (nid, child), failure)
    level: list[int] = []
    for nid, node in enumerate(nodes):  # children come before parents
        tally.add("within-cap", (nid, None), None)  # the exploration refuses a passed cap outright
        tally.add("terminates", (nid, None), None if (node.kind == STOP) == (not node.children) else "no way on")
        if node.kind == TREAT:
            level.append(node.dose)
            for t, failure in _coherence([level[c] for c in node.children]):
                tally.add("coherence", (nid, t), failure)
        elif node.kind == STOP:
            level.append(node.mtd if node.mtd is not None else -1)
        else:
            level.append(max(level[c] for c in node.children))
    # shortest histories to every node: breadth first from the root
    parent: dict[int, tuple[int, int] | None] = {graph.root: None}
    depth = {graph.root: 0}
    queue = deque([graph.root])
    while queue:
        nid = queue.popleft()
        for i, c in enumerate(nodes[nid].children):
            if c not in parent:
                parent[c] = (nid, i)
                depth[c] = depth[nid] + 1
                queue.append(c)

    def steps_to(nid: int) -> list[tuple[int, int]]:
        steps: list[tuple[int, int]] = []
        link = parent[nid]
        while link is not None:
            steps.append(link)
            link = parent[link[0]]
        return steps[::-1]

    def shortest(failures: list[tuple[Any, str]]) -> tuple[str, str]:
        def key(item: tuple[Any, str]) -> int:
            nid, child = item[0]
            return depth[nid] + (child is not None)

        (nid, child), detail = min(failures, key=key)
        steps = steps_to(nid) + ([(nid, child)] if child is not None else [])
        return _merged_history(graph, steps), detail

    edges = sum(len(n.children) for n in nodes)
    return VerificationReport(protocol.source, len(nodes), edges, graph.count_paths(), tally.results(shortest),
                              _never_fired(protocol, graph), "merged states")


def _merged_history(graph: ReducedGraph, steps: list[tuple[int, int]]) -> str:
    """Steps through the merged graph as an outcome string (implied decisions left out)."""
    nodes = graph.nodes
    parts: list[str] = []
    for i, (nid, child) in enumerate(steps):
        node = nodes[nid]
        if node.kind == TREAT:
            parts.append(f"{node.dose + 1}{'N' * (node.cohort - child)}{'T' * child}")
            continue
        target = nodes[node.children[child]]
        same_dose = [c for c in node.children if nodes[c].kind == TREAT and nodes[c].dose == target.dose]
        implied = target.kind == TREAT and len(same_dose) == 1 and i + 1 < len(steps)
        if not implied:
            parts.append(f"[{node.labels[child]}]")
    return " ".join(parts) or "(start)"


def _never_fired(protocol: Protocol, graph: ReducedGraph) -> tuple[str, ...]:
    fired = {label.split("/")[0] for node in graph.nodes if node.kind == TREAT for label in node.labels}
    fired |= {node.rule for node in graph.nodes if node.kind == DECIDE}
    return tuple(f"rule {rule.id!r} of stage {stage.id!r} never fires in a reachable state"
                 for stage in protocol.stages for rule in stage.rules if rule.id not in fired)


def verify(protocol: CompiledProtocol | Protocol) -> VerificationReport:
    """Check every invariant on every reachable state and transition.

    Parameters
    ----------
    protocol : CompiledProtocol or Protocol
        A compiled protocol is checked on its full state graph; a protocol is
        explored with merged states (same results, far fewer states).

    Returns
    -------
    VerificationReport
        With, for a violated invariant, a shortest counterexample history.

    Raises
    ------
    CompileError
        When a protocol (not yet compiled) fails the build-time checks.
    """
    if isinstance(protocol, CompiledProtocol):
        return _verify_full(protocol)
    return _verify_merged(as_protocol(protocol))
