"""Explore a protocol's trial states, merging states whose futures are identical.

:func:`escalation_rules.compile_protocol` keys a state by everything it
holds (the counts at every dose, the enrolment, the closed and passed masks),
which verification needs, but which makes the graph of a 3+3 design grow by
a factor of about 2.2 per dose.  The operating characteristics only need the
*future* of a state: which cohorts will be treated where, which decisions
will arise and where the trial stops.  This module computes that future once
per class of states that provably share it.

How states merge
----------------
A state is split into a *control* part (phase, stage, current dose, cohort
size, the rule of a decision point) and a *data* part (patients and DLTs per
dose, the closed-dose and passed-dose masks and the enrolment; see
:data:`FIELDS`).  Exploring a state records
which data fields its rules actually read: the guards evaluate against a
lazy environment that notes each name it is asked for (``n`` reads the
patients at the current dose, ``n_prev`` those at the dose below,
``remaining`` the enrolment, and so on), and a state's read set is what its
own rules read plus what its successors' futures read.  The future of a
state is a deterministic function of the fields it read, so any later state
with the same control part that agrees on those fields has the same future,
and is looked up instead of explored.  Nothing about any particular design
is assumed: a field is merged away only when no rule on the way to any stop
reads it.

The enrolment cap is checked without reading the enrolment: each class
records the most patients its future can still enrol (``horizon``), and
every state that reaches a class is checked against ``enrolled + horizon <=
cap``.  Table gaps and overlaps, moves off the ladder, empty cohorts and the
cap are refused with the same messages as the compiler.

A caller may ask for guards to be *watched* at decision points (a policy
whose choice depends on the data passes its guards): each decide node then
records whether each watched guard of its rule holds (``facts``), and the
fields the guards read are read fields like any other, so the merging stays
exact for that policy.

An *observer* (verification passes one, see :mod:`escalation_rules.verify`)
is shown every state and transition as it is explored, reads data fields
through a :class:`FieldView` that records them too, and so keeps apart any
states its checks could tell apart: what it finds on one state of a class
holds for every state of the class.

The merged graph has one node per class; node ids are assigned children
first, so ascending ids are a reverse topological order.  Root-to-stop paths
correspond one to one with those of the compiled graph.

Examples
--------
>>> from escalation_rules import builtin_design
>>> graph = reduce_protocol(builtin_design("3+3-deescalate", doses=5))
>>> graph.stats["nodes"] < 200, graph.count_paths()
(True, 922)
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._attrs import value_repr
from ._interval import BOUNDARY_NAMES, select_isotonic
from ._limits import MAX_MERGED_STATES
from ._machine import Counts, StepError, boundary_env, env_of, fire, model_env
from .errors import CompileError
from .guards import Guard
from .protocol import Outcome, Protocol

__all__ = ["DECIDE", "FIELDS", "STOP", "TREAT", "FieldView", "Node", "Observer", "Reads", "ReducedGraph", "Watch",
           "reduce_protocol", "watch_key"]

TREAT, DECIDE, STOP = 0, 1, 2
_BOUNDARY = frozenset(BOUNDARY_NAMES)

#: The data vector of a state with K doses: patients at dose i (index i), DLTs
#: (K + i), closed for toxicity (2K + i), escalated from (3K + i), then the enrolment (4K),
#: the lowest closed dose (4K + 1; K when none is closed) and the highest dose treated so far
#: (4K + 2; -1 before the first cohort).  The last two are functions of the others, carried
#: along so that a check need not scan the ladder (a dose is never reopened, so the lowest
#: closed dose only falls); they are never recorded as read: a check records the fields its
#: answer depends on, so the merging is the same as with a scan.
FIELDS = ("n", "tox", "closed", "passed", "enrolled", "lowest_closed", "highest_treated")


def initial_data(k: int) -> list[int]:
    """The data vector before the first cohort, for a ladder of ``k`` doses (see :data:`FIELDS`).

    Examples
    --------
    >>> initial_data(2)
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, -1]
    """
    return [0] * (4 * k + 1) + [k, -1]


class Reads:
    """The data fields read while exploring a state, as a bit mask (field i is bit i).

    Adding a field, a run of fields or another set costs a few machine words
    whatever the ladder's length, and the mask is the key of the fields read.

    Examples
    --------
    >>> reads = Reads()
    >>> reads.add(3)
    >>> reads.add_range(5, 8)
    >>> reads.mask |= 1 << 10
    >>> reads.fields()
    (3, 5, 6, 7, 10)
    """

    __slots__ = ("mask",)

    def __init__(self, mask: int = 0) -> None:
        self.mask = mask

    def add(self, field: int) -> None:
        """Record ``field`` as read."""
        self.mask |= 1 << field

    def add_range(self, start: int, stop: int) -> None:
        """Record the fields ``start`` to ``stop - 1`` as read."""
        if stop > start:
            self.mask |= ((1 << (stop - start)) - 1) << start

    def fields(self) -> tuple[int, ...]:
        """The fields read, in ascending order."""
        bits = bin(self.mask)[:1:-1]  # bit 0 first
        return tuple(i for i, bit in enumerate(bits) if bit == "1")


class FieldView:
    """Read access to a state's data vector that records every field read.

    Examples
    --------
    >>> reads = Reads()
    >>> view = FieldView([3, 0, 1, 0, 0, 0, 1, 0, 4, 2, 0], 2, reads)
    >>> view.n(0), view.tox(0), view.passed(0), reads.fields()
    (3, 1, True, (0, 2, 6))
    >>> view.closed_up_to(1), view.treated_from(0), reads.fields()
    (False, True, (0, 2, 4, 5, 6))
    """

    __slots__ = ("k", "reads", "vals")

    def __init__(self, vals: list[int], k: int, reads: Reads) -> None:
        self.vals, self.k, self.reads = vals, k, reads

    def _get(self, field: int) -> int:
        self.reads.mask |= 1 << field
        return self.vals[field]

    def n(self, dose: int) -> int:
        """Patients evaluated at ``dose``."""
        return self._get(dose)

    def tox(self, dose: int) -> int:
        """Patients with a DLT at ``dose``."""
        return self._get(self.k + dose)

    def closed(self, dose: int) -> bool:
        """Whether ``dose`` was closed for toxicity."""
        return bool(self._get(2 * self.k + dose))

    def passed(self, dose: int) -> bool:
        """Whether the trial escalated from ``dose``."""
        return bool(self._get(3 * self.k + dose))

    def closed_up_to(self, dose: int) -> bool:
        """Whether any dose at or below ``dose`` was closed for toxicity.

        Answered from the lowest closed dose in constant time; records as read
        the closed flags a scan upwards from dose 0 would read (up to the first
        closed one), which decide the answer.
        """
        k, lowest = self.k, self.vals[4 * self.k + 1]
        self.reads.add_range(2 * k, 2 * k + min(lowest, dose) + 1)
        return lowest <= dose

    def treated_from(self, dose: int) -> bool:
        """Whether any patient was treated at ``dose`` or above.

        Answered from the highest dose treated; records as read the patient
        counts a scan upwards from ``dose`` would read (up to the first treated
        dose), which decide the answer.  On a ladder treated without gaps from
        the start dose up, that is one field.
        """
        k, highest, vals = self.k, self.vals[4 * self.k + 2], self.vals
        if highest < dose:
            self.reads.add_range(max(dose, 0), k)
            return False
        i = max(dose, 0)
        while not vals[i]:
            i += 1
        self.reads.add_range(max(dose, 0), i + 1)
        return True


class Observer:
    """Shown every state class and transition during exploration (this base class checks nothing).

    Each method returns the checks it made as ``(key, failure)`` pairs: ``key``
    names the check, ``failure`` is None when it holds.  The explorer records
    them with the node (and child) they were made on, in ``ReducedGraph.checks``.
    """

    def treat(self, stage: str, dose: int, cohort: int, view: FieldView) -> list[tuple[Any, str | None]]:
        """A class about to treat ``cohort`` at ``dose``; return the checks made as (key, failure or None)."""
        return []

    def transition(self, stage: str, dose: int, child: tuple[Any, ...], view: FieldView,
                   rule: str, signoff: tuple[str, ...]) -> list[tuple[Any, str | None]]:
        """A transition from a decision at (stage, dose) to ``child`` (its control part), ``view`` on the new data."""
        return []


@attrs.frozen
class Node:
    """One class of trial states sharing the same future.

    Attributes
    ----------
    kind : int
        ``TREAT``, ``DECIDE`` or ``STOP``.
    stage : str
        The stage in force (``""`` for a stop).
    dose : int
        0-based dose to treat at, or where the decision arose (``-1`` for a stop).
    cohort : int
        Cohort size (treat nodes), else 0.
    rule : str
        The decision point's rule id (decide nodes), else ``""``.
    children : tuple of int
        Treat: the successor for 0, 1, ... DLTs; decide: one per option.
    labels : tuple of str
        Treat: the rule that fired for each DLT count; decide: the option ids.
    mtd : int or None
        Stop: the 0-based MTD, or None.
    closes : bool
        Stop: the stopping rule or option closed a dose for toxicity.
    horizon : int
        The most patients the future of this class can enrol.
    facts : tuple of (str, bool)
        Decide nodes: each watched guard of the rule (by its text) and whether it holds.
    """

    __repr__ = value_repr

    kind: int
    stage: str
    dose: int
    cohort: int
    rule: str
    children: tuple[int, ...]
    labels: tuple[str, ...]
    mtd: int | None
    closes: bool
    horizon: int
    facts: tuple[tuple[str, bool], ...] = ()


#: Guards watched at decision points: rule id to guards.
Watch = Mapping[str, Iterable[Guard]]


def watch_key(watch: Watch | None) -> frozenset[tuple[str, str]]:
    """The watched guards as a set of (rule id, guard text).

    Examples
    --------
    >>> from escalation_rules.guards import INT, parse_guard
    >>> sorted(watch_key({"fill-complete": [parse_guard("tox <= 1", {"tox": INT})]}))
    [('fill-complete', 'tox <= 1')]
    """
    return frozenset((rule, guard.text) for rule, guards in (watch or {}).items() for guard in guards)


@attrs.frozen
class ReducedGraph:
    """The merged state graph of a protocol (see the module docstring).

    Attributes
    ----------
    protocol : Protocol
    nodes : tuple of Node
        Children before parents.
    root : int
        The node of the initial state.
    stats : dict
        ``nodes`` (classes), ``visits`` (states looked up or explored),
        ``treat``, ``decide`` and ``stop`` node counts.
    """

    __repr__ = value_repr

    protocol: Protocol = attrs.field(eq=False, repr=False)
    nodes: tuple[Node, ...] = attrs.field(repr=False)
    root: int
    stats: dict[str, int] = attrs.field(eq=False)
    #: What an observer checked: (node id, child index or None, check key, failure or None).
    checks: tuple[tuple[int, int | None, Any, str | None], ...] = attrs.field(default=(), eq=False, repr=False)
    #: The guards watched at decision points, as (rule id, guard text) (see :func:`watch_key`).
    watched: frozenset[tuple[str, str]] = attrs.field(default=frozenset(), eq=False, repr=False)

    @property
    def doses(self) -> int:
        """Number of doses on the ladder."""
        return len(self.protocol.doses)

    def count_paths(self) -> int:
        """Number of root-to-stop paths (cohort outcomes counted by their number of DLTs)."""
        counts: list[int] = []
        for node in self.nodes:
            counts.append(1 if node.kind == STOP else sum(counts[c] for c in node.children))
        return counts[self.root]

    def decision_rules(self) -> tuple[str, ...]:
        """Ids of the decision rules that arise somewhere, in the protocol's order."""
        seen = {node.rule for node in self.nodes if node.kind == DECIDE}
        return tuple(rule.id for stage in self.protocol.stages for rule in stage.rules if rule.id in seen)


class _Env(dict[str, Any]):
    """The guard names at a dose, computed on first use and recorded as read fields."""

    def __init__(self, explorer: _Explorer, vals: list[int], dose: int, reads: Reads,
                 last: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.explorer = explorer
        self.vals = vals
        self.dose = dose
        self.reads = reads
        self.last = last  # the cohort just completed (size, DLTs): the model's restriction reads it

    def __missing__(self, name: str) -> Any:
        if name in ("model_dose", "model_too_toxic"):
            value = self.explorer.model_value(name, self.vals, self.dose, self.reads, self.last)
            self[name] = value
            return value
        value = self.explorer.name_value(name, self.vals, self.dose, self.reads)
        self[name] = value
        return value


class _Bucket:
    """The classes of one control part that read the same fields: field values → node id.

    ``first`` holds the values of the first few fields of every class, so
    that a state of another class is usually turned away without projecting
    (and hashing) all the fields, which grow with the ladder.
    """

    __slots__ = ("first", "firsts", "mask", "project", "table")

    def __init__(self, reads: Reads) -> None:
        self.mask = reads.mask  # the fields read (see Reads)
        fields = reads.fields()
        self.project: Callable[[list[int]], Any]
        self.first: Callable[[list[int]], Any]
        if not fields:
            self.project = self.first = lambda vals: ()
        else:
            self.project = operator.itemgetter(*fields)
            self.first = operator.itemgetter(*fields[:_FIRST])
        self.firsts: set[Any] = set()
        self.table: dict[Any, int] = {}

    def add(self, vals: list[int], nid: int) -> None:
        """Record the class of ``vals`` as node ``nid``."""
        self.firsts.add(self.first(vals))
        self.table[self.project(vals)] = nid


_FIRST = 3  # fields in a bucket's quick pre-check (see _Bucket)


class _Explorer:
    def __init__(self, protocol: Protocol, observer: Observer | None = None, watch: Watch | None = None) -> None:
        self.p = protocol
        self.watch = {rule: tuple(guards) for rule, guards in (watch or {}).items()}
        self.k = len(protocol.doses)
        self.cap = protocol.cap
        self.enrolled = 4 * self.k  # index of the enrolment in a data vector (see FIELDS)
        self.lowest_closed = 4 * self.k + 1
        self.highest_treated = 4 * self.k + 2
        self.observer = observer
        #: (node id, child index or None, check key, failure or None) for every check the observer made
        self.checks: list[tuple[int, int | None, Any, str | None]] = []
        self.stages = {s.id: s for s in protocol.stages}
        self.nodes: list[Node] = []
        #: per control part, its buckets by the fields they read (in the order made)
        self.memo: dict[tuple[Any, ...], dict[int, _Bucket]] = {}
        self.visits = 0
        self.governing = {}
        for stage in protocol.stages:
            for dose_id in stage.doses:
                self.governing[protocol.dose_index(dose_id)] = stage.id

    # -- guard names ------------------------------------------------------

    def name_value(self, name: str, vals: list[int], dose: int, reads: Reads) -> Any:
        k = self.k
        if name == "n":
            reads.add(dose)
            return vals[dose]
        if name == "tox":
            reads.add(k + dose)
            return vals[k + dose]
        if name in ("n_prev", "tox_prev"):
            if dose == 0:
                return 0
            field = dose - 1 + (k if name == "tox_prev" else 0)
            reads.add(field)
            return vals[field]
        if name in ("n_next", "tox_next"):
            if dose + 1 >= k:
                return 0
            field = dose + 1 + (k if name == "tox_next" else 0)
            reads.add(field)
            return vals[field]
        if name == "has_prev":
            return dose > 0
        if name == "has_next":
            return dose + 1 < k
        if name == "next_closed":
            if dose + 1 >= k:
                return False
            reads.add(2 * k + dose + 1)
            return bool(vals[2 * k + dose + 1])
        if name == "next_provisional":
            return dose + 1 < k and self.p.doses[dose + 1].provisional
        if name == "dose":
            return dose + 1
        if name == "doses":
            return k
        if name == "cap":
            return self.cap
        if name in _BOUNDARY:
            reads.add(dose)
            return boundary_env(self.p, vals[dose])[name]
        if name in ("enrolled", "remaining"):
            reads.add(self.enrolled)
            return vals[self.enrolled] if name == "enrolled" else self.cap - vals[self.enrolled]
        # A name this module does not know yet: take the engine's value and
        # count every field as read (exact, merges nothing).
        reads.add_range(0, self.enrolled + 1)  # the carried fields follow from these
        closed = sum(1 << i for i in range(k) if vals[2 * k + i])
        return env_of(self.p, dose, self.counts(vals, reads), vals[self.enrolled], closed)[name]

    def counts(self, vals: list[int], reads: Reads) -> Counts:
        """(patients, DLTs) at every dose, as the engine holds them; every field they come from is read."""
        k = self.k
        reads.add_range(0, 2 * k)
        return tuple(zip(vals[:k], vals[k:2 * k], strict=True))

    def model_value(self, name: str, vals: list[int], dose: int, reads: Reads,
                    last: tuple[int, int] | None) -> Any:
        """A name of the protocol's [model]: it reads the counts at every dose."""
        return model_env(self.p, dose, self.counts(vals, reads), last)[name]

    # -- steps ------------------------------------------------------------

    def fail(self, message: str, path: list[str], step: str = "") -> CompileError:
        history = " ".join(path)
        where = f"{history} {step}".strip() if history or not step else step
        return CompileError([f"{self.p.source}: {message} after history {where!r}"])

    def apply(self, outcome: Outcome, stage: str, dose: int, vals: list[int], env: _Env, label: str,
              path: list[str], step: str) -> tuple[tuple[Any, ...], tuple[tuple[int, int], ...]]:
        """Mirror of ``_machine.apply_outcome`` on a data vector: the next control part, and the changes to the
        data as (field, new value) pairs, which the caller makes (and undoes after visiting the child)."""
        k = self.k
        changes: list[tuple[int, int]] = []
        lowest_closed = vals[self.lowest_closed]
        if outcome.close and not vals[2 * k + dose]:
            changes.append((2 * k + dose, 1))
            if dose < lowest_closed:  # doses are never reopened: the lowest closed dose only falls
                lowest_closed = dose
                changes.append((self.lowest_closed, dose))
        if outcome.action == "stop":
            if outcome.mtd == "selected":  # reads every count and the closed doses
                env.reads.add_range(2 * k, 3 * k)
                assert self.p.selection is not None  # the loader requires it
                mtd = select_isotonic(self.p.selection, self.counts(vals, env.reads),
                                      lowest_closed if lowest_closed < k else None)
                return (STOP, mtd, outcome.close), tuple(changes)
            if outcome.mtd == "model":
                assert self.p.model is not None
                return (STOP, self.p.model.recommend(self.counts(vals, env.reads)) - 1, outcome.close), tuple(changes)
            return (STOP, outcome.mtd_dose(dose), outcome.close), tuple(changes)
        target = env["model_dose"] - 1 if outcome.move == "model" else outcome.target(dose)
        if target > dose and not vals[3 * k + dose]:
            changes.append((3 * k + dose, 1))
        if not 0 <= target < k:
            where = "above the top dose" if target > dose else "below the lowest dose"
            raise self.fail(f"rule {label!r} moves {where}", path, step)
        if outcome.stage is not None:
            stage_id = outcome.stage
        elif outcome.move == "stay":
            stage_id = stage
        else:
            stage_id = self.governing[target]
        cohort = outcome.cohort.evaluate(env) if outcome.cohort is not None else self.stages[stage_id].cohort
        if cohort < 1:
            raise self.fail(f"rule {label!r} treats a cohort of {cohort} (expected at least 1)", path, step)
        if vals[self.enrolled] + cohort > self.cap:
            raise self.fail(f"rule {label!r} treats {cohort} more with {self.cap - vals[self.enrolled]} places "
                            f"left under the cap of {self.cap}", path, step)
        return (TREAT, stage_id, target, cohort), tuple(changes)

    def child(self, control: tuple[Any, ...], child: tuple[Any, ...], changes: tuple[tuple[int, int], ...],
              vals: list[int], reads: Reads, path: list[str], step: str, by: tuple[str, tuple[str, ...]],
              checks: list[tuple[int | None, Any, str | None]], index: int) -> int:
        """Visit the successor ``child`` of ``control`` (``changes``: its data, made in place and undone after).

        The observer is shown the transition (``by``: the rule or option and its sign-off); the
        child's reads join ``reads``.  Returns the child's node id.
        """
        undo = self.change(vals, changes) if changes else changes
        if self.observer is not None:
            view = FieldView(vals, self.k, reads)
            checks += [(index, key, failure) for key, failure in
                       self.observer.transition(control[1], control[2], child, view, by[0], by[1])]
        path.append(step)
        cid, fields = self.visit(child, vals, path)
        path.pop()
        if undo:
            self.change(vals, undo)
        reads.mask |= fields
        return cid

    @staticmethod
    def change(vals: list[int], changes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """Make ``changes`` (field, value) to the data in place; return the changes that undo them."""
        undo = []
        for i, value in changes:
            undo.append((i, vals[i]))
            vals[i] = value
        undo.reverse()
        return undo

    def visit(self, control: tuple[Any, ...], vals: list[int], path: list[str]) -> tuple[int, int]:
        """The node of the class of (control, vals), exploring it if new; with the fields it reads (a mask)."""
        self.visits += 1
        buckets = self.memo.get(control)
        if buckets is not None:
            # newest first: a state is most often met again soon after its class was made
            for bucket in reversed(buckets.values()):
                if bucket.first(vals) not in bucket.firsts:
                    continue
                nid = bucket.table.get(bucket.project(vals))
                if nid is not None:
                    if vals[self.enrolled] + self.nodes[nid].horizon > self.cap:
                        raise self.cap_error(nid, vals[self.enrolled], path)
                    return nid, bucket.mask
        else:
            buckets = self.memo[control] = {}
        kind = control[0]
        reads = Reads()
        children: list[int] = []
        labels: list[str] = []
        checks: list[tuple[int | None, Any, str | None]] = []
        observer = self.observer
        k = self.k
        if kind == STOP:
            node = Node(STOP, "", -1, 0, "", (), (), control[1], bool(control[2]), 0)
        elif kind == TREAT:
            _, stage_id, dose, cohort = control
            stage = self.stages[stage_id]
            if observer is not None:
                checks += [(None, key, failure)
                           for key, failure in observer.treat(stage_id, dose, cohort, FieldView(vals, k, reads))]
            # the cohort's data is written into the vector in place (and taken out again below)
            tox, highest = vals[k + dose], vals[self.highest_treated]
            vals[dose] += cohort
            vals[self.enrolled] += cohort
            vals[self.highest_treated] = max(highest, dose)
            for dlts in range(cohort + 1):
                step = f"{dose + 1}{'N' * (cohort - dlts)}{'T' * dlts}"
                vals[k + dose] = tox + dlts
                env = _Env(self, vals, dose, reads, (cohort, dlts))
                try:
                    rule = fire(self.p, stage, env)
                except StepError as err:
                    raise self.fail(str(err), path, step) from None
                changes: tuple[tuple[int, int], ...] = ()
                if rule.action == "decide":
                    child_control: tuple[Any, ...] = (DECIDE, stage_id, dose, rule.id)
                else:
                    assert rule.outcome is not None
                    child_control, changes = self.apply(rule.outcome, stage_id, dose, vals, env, rule.id, path, step)
                children.append(self.child(control, child_control, changes, vals, reads, path, step,
                                           (rule.id, rule.signoff), checks, dlts))
                labels.append(rule.id)
            vals[dose] -= cohort
            vals[k + dose] = tox
            vals[self.enrolled] -= cohort
            vals[self.highest_treated] = highest
            horizon = cohort + max(self.nodes[c].horizon for c in children)
            node = Node(TREAT, stage_id, dose, cohort, "", tuple(children), tuple(labels), None, False, horizon)
        else:
            _, stage_id, dose, rule_id = control
            rule = self.p.rule(rule_id)
            env = _Env(self, vals, dose, reads)
            for option in rule.options:
                step = f"[{option.id}]"
                child_control, changes = self.apply(option.outcome, stage_id, dose, vals, env,
                                                    f"{rule_id}/{option.id}", path, step)
                children.append(self.child(control, child_control, changes, vals, reads, path, step,
                                           (f"{rule_id}/{option.id}", option.signoff), checks, len(children)))
                labels.append(option.id)
            horizon = max(self.nodes[c].horizon for c in children)
            facts = tuple((g.text, bool(g.evaluate(env))) for g in self.watch.get(rule_id, ()))
            node = Node(DECIDE, stage_id, dose, 0, rule_id, tuple(children), tuple(labels), None, False, horizon,
                        facts)
        nid = len(self.nodes)
        if nid >= MAX_MERGED_STATES:
            raise CompileError([f"{self.p.source}: more than {MAX_MERGED_STATES:,} classes of states to explore "
                                "(the limit, docs/reference/limits.md); lower the cap or shorten the ladder"])
        self.nodes.append(node)
        self.checks.extend((nid, child, key, failure) for child, key, failure in checks)
        fields = reads.mask
        if fields not in buckets:
            buckets[fields] = _Bucket(reads)
        bucket = buckets[fields]
        bucket.add(vals, nid)
        return nid, fields

    def cap_error(self, nid: int, enrolled: int, path: list[str]) -> CompileError:
        """Follow the longest future from a class to the step that passes the cap."""
        steps = list(path)
        label = "start"
        while True:
            node = self.nodes[nid]
            if node.kind == TREAT and enrolled + node.cohort > self.cap:
                return self.fail(f"rule {label!r} treats {node.cohort} more with {self.cap - enrolled} places left "
                                 f"under the cap of {self.cap}", steps[:-1], steps[-1] if steps else "")
            i = max(range(len(node.children)), key=lambda j: self.nodes[node.children[j]].horizon)
            if node.kind == TREAT:
                dlts = i
                steps.append(f"{node.dose + 1}{'N' * (node.cohort - dlts)}{'T' * dlts}")
                enrolled += node.cohort
                label = node.labels[i]
            else:
                steps.append(f"[{node.labels[i]}]")
                label = f"{node.rule}/{node.labels[i]}"
            nid = node.children[i]


def reduce_protocol(protocol: Protocol, observer: Observer | None = None, watch: Watch | None = None) -> ReducedGraph:
    """Explore every reachable class of states of ``protocol`` (see the module docstring).

    ``watch`` maps decision rule ids to guards whose truth each decide node of
    that rule records in ``facts`` (the classes are split as far as they need).

    Raises
    ------
    CompileError
        When a decision table is incomplete or overlapping at a reachable
        state, a rule moves off the ladder, a cohort is empty or the cap would
        be passed, naming the rule and a history reaching the state.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> graph = reduce_protocol(load_protocol("spec/nct07117175"))
    >>> graph.decision_rules()[:2]
    ('at-pass-one', 'at-pass-three')
    """
    explorer = _Explorer(protocol, observer, watch)
    stage = protocol.stage(protocol.start_stage)
    start = (TREAT, stage.id, protocol.dose_index(protocol.start_dose), min(stage.cohort, protocol.cap))
    # One frame per step (cohort or decision), at most 2 * cap + 1 steps deep, plus the guards'
    # own frames; raised only when a large cap needs it (never lowered, for other threads' sake).
    if sys.getrecursionlimit() < 4 * protocol.cap + 200:
        sys.setrecursionlimit(4 * protocol.cap + 200)
    root, _ = explorer.visit(start, initial_data(explorer.k), [])
    nodes = tuple(explorer.nodes)
    stats = {
        "nodes": len(nodes),
        "visits": explorer.visits,
        "treat": sum(n.kind == TREAT for n in nodes),
        "decide": sum(n.kind == DECIDE for n in nodes),
        "stop": sum(n.kind == STOP for n in nodes),
    }
    return ReducedGraph(protocol, nodes, root, stats, tuple(explorer.checks), watch_key(watch))
