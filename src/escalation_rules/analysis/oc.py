"""Exact operating characteristics by dynamic programming over the merged state graph.

For assumed true DLT probabilities at each dose, every cohort's number of
DLTs is binomial; the trial's future from a state depends only on the
state, so the probability of reaching each class of states, and from it
every operating characteristic, follows from one pass over the merged graph
of :mod:`escalation_rules._reduce` (forward for probabilities and
expectations, backward for the distributions).  The cost grows with the
number of distinct futures, not with the number of paths: 3+3 with
de-escalation has 922 paths with 5 doses but 50 classes of states.

Definitions
-----------
true MTD
    For a target DLT probability (``target``), the dose just below the first
    dose whose true probability exceeds the target (none when dose 1 does).
    The doses *above the true MTD* are that first dose and all above it.
stopping early for toxicity
    The trial ends with no MTD by a rule or option that closes a dose for
    toxicity.
policy
    The option people take at each decision point (see
    :mod:`~escalation_rules.analysis.policy`).  ``bounds`` holds, for each
    safety figure, its least and greatest value over *every* way of deciding
    (each decision point may be decided differently each time it arises,
    knowing the whole history): what holds whatever people decide.

Probabilities given as :class:`fractions.Fraction` give exact fractions
throughout; floats give floats.  Early termination by decision (the
protocol's ``early_termination``) is not modelled.

Examples
--------
>>> from fractions import Fraction
>>> from escalation_rules import builtin_design
>>> oc = operating_characteristics(builtin_design("3+3-escalate-only", doses=1), [Fraction(1, 10)])
>>> oc.mtd                     # (no MTD, dose 1)
(Fraction(93853, 1000000), Fraction(906147, 1000000))
>>> oc = operating_characteristics(builtin_design("3+3-deescalate", doses=3), [0.05, 0.15, 0.4], target=0.3)
>>> [round(x, 3) for x in oc.mtd], oc.true_mtd
([0.028, 0.205, 0.522, 0.245], 2)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import attrs

from .._attrs import value_repr
from .._limits import MAX_CAP, show
from .._reduce import DECIDE, STOP, TREAT, ReducedGraph, Watch, reduce_protocol, watch_key
from ..errors import EscalationRulesError
from ..graph import as_protocol
from ..protocol import Protocol
from ._interval_oc import IntervalPlan, interval_figures, interval_plan
from .policy import Policy, resolve_policy

__all__ = [
    "BOUNDED_FIGURES",
    "OperatingCharacteristics",
    "figure_label",
    "format_number",
    "merged_graph",
    "operating_characteristics",
    "parse_probability",
    "parse_truth",
]

Number = Any  # float or Fraction

#: Figures reported with their least and greatest value over every policy.
BOUNDED_FIGURES: tuple[str, ...] = (
    "expected_patients",
    "expected_dlts",
    "expected_patients_above_mtd",
    "p_any_above_mtd",
    "p_overdose",
    "p_select_above_mtd",
    "p_correct_selection",
    "p_stop_toxicity",
    "p_no_mtd",
)

_FIGURE_TEXT = {
    "expected_patients": "expected patients",
    "expected_dlts": "expected DLTs",
    "expected_patients_above_mtd": "expected patients above the true MTD",
    "p_any_above_mtd": "P(any patient treated above the true MTD)",
    "p_overdose": "P({m} or more patients treated above the true MTD)",
    "p_select_above_mtd": "P(a dose above the true MTD selected)",
    "p_correct_selection": "P(the true MTD selected)",
    "p_stop_toxicity": "P(stopped early for toxicity)",
    "p_no_mtd": "P(no MTD selected)",
}


def figure_label(name: str, overdose_patients: int = 3) -> str:
    """The words for one of :data:`BOUNDED_FIGURES`, as ``escalation-rules oc`` prints them.

    Examples
    --------
    >>> figure_label("p_overdose", 3)
    'P(3 or more patients treated above the true MTD)'
    """
    return _FIGURE_TEXT[name].format(m=overdose_patients)


def shown(value: Any) -> str:
    """A value as JSON writes it (``null``, ``true``, ``[0.1]``), for messages; Python's ``None`` never shows.

    Examples
    --------
    >>> shown(None), shown(True), shown(Fraction(1, 4)), shown("x")
    ('null', 'true', '1/4', "'x'")
    """
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Fraction):
        return str(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return show(value, 40)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_probability(text: str, where: str = "--truth") -> Number:
    """Read a probability written as a decimal (``0.25``) or a fraction (``1/4``).

    Fractions (and integers) are returned as :class:`fractions.Fraction`,
    decimals as floats.

    Examples
    --------
    >>> parse_probability("1/4"), parse_probability("0.3")
    (Fraction(1, 4), 0.3)
    >>> parse_probability("1.5")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: --truth: expected a probability from 0 to 1 (got '1.5')
    """
    raw = text.strip()
    try:
        value: Number = Fraction(raw) if "/" in raw else float(raw)
    except (ValueError, ZeroDivisionError):
        raise EscalationRulesError(f"{where}: expected a probability such as 0.25 or 1/4 (got {text!r})") from None
    if not 0 <= value <= 1 or value != value:
        raise EscalationRulesError(f"{where}: expected a probability from 0 to 1 (got {text!r})")
    return value


def parse_truth(text: str) -> tuple[Number, ...]:
    """Read ``--truth`` (comma-separated probabilities, one per dose).

    When any entry is a fraction, every entry is read exactly (``0.1`` as
    1/10), so the results are exact fractions.

    Examples
    --------
    >>> parse_truth("1/10, 0.2")
    (Fraction(1, 10), Fraction(1, 5))
    >>> parse_truth("0.1,0.2")
    (0.1, 0.2)
    """
    parts = [p for p in text.split(",")]
    if not text.strip() or any(not p.strip() for p in parts):
        raise EscalationRulesError(f"--truth: expected comma-separated probabilities, one per dose (got {text!r})")
    values = [parse_probability(p, f"--truth: entry {i}") for i, p in enumerate(parts, 1)]
    if any("/" in p for p in parts):
        values = [Fraction(p.strip()) for p in parts]
    return tuple(values)


def format_number(value: Number, digits: int = 4) -> str:
    """A float rounded for people, or a fraction as ``p/q``.

    Examples
    --------
    >>> format_number(0.123456), format_number(Fraction(1, 3)), format_number(Fraction(2))
    ('0.1235', '1/3', '2')
    """
    if isinstance(value, Fraction):
        return str(value)
    return f"{value:.{digits}f}"


def _decimal(value: Number, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}"


def _json_number(value: Number) -> Any:
    return str(value) if isinstance(value, Fraction) else float(value)


_CACHE: dict[tuple[int, frozenset[tuple[str, str]]], tuple[Protocol, ReducedGraph]] = {}


def check_target(target: Any) -> None:
    """Refuse a target DLT probability outside [0, 1] (or not a number), naming the argument.

    Examples
    --------
    >>> check_target(2)
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: target: expected a probability from 0 to 1 (got 2)
    """
    if isinstance(target, bool) or not isinstance(target, int | float | Fraction) or not 0 <= target <= 1:
        raise EscalationRulesError(f"target: expected a probability from 0 to 1 (got {shown(target)})")


def merged_graph(protocol: Protocol | ReducedGraph, watch: Watch | None = None) -> ReducedGraph:
    """The merged state graph of ``protocol`` (kept for the protocol objects last used).

    ``watch`` (decision rule id to guards, see :meth:`Policy.guards`) asks for
    the guards a data-dependent policy reads to be recorded at its decision
    points; a graph given here that does not watch them is explored again.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> merged_graph(builtin_design("3+3-deescalate", doses=5)).stats["nodes"]
    50
    """
    key = watch_key(watch)
    if isinstance(protocol, ReducedGraph):
        if key <= protocol.watched:
            return protocol
        protocol = protocol.protocol
    protocol = as_protocol(protocol)
    hit = _CACHE.get((id(protocol), key))
    if hit is not None and hit[0] is protocol:
        return hit[1]
    graph = reduce_protocol(protocol, watch=watch)
    if len(_CACHE) >= 32:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[(id(protocol), key)] = (protocol, graph)
    return graph


def _protocol_of(protocol: Any) -> Protocol:
    return protocol.protocol if isinstance(protocol, ReducedGraph) else as_protocol(protocol)


def policy_graph(protocol: Protocol | ReducedGraph, policy: str | Mapping[str, Any] | Policy | None
                 ) -> tuple[ReducedGraph, Policy]:
    """The policy named by ``policy`` and the merged graph that records what it reads at decision points."""
    pol = resolve_policy(_protocol_of(protocol), policy)
    return merged_graph(protocol, pol.guards()), pol


@attrs.frozen
class OperatingCharacteristics:
    """Exact operating characteristics of a design under assumed true DLT probabilities.

    Attributes
    ----------
    protocol : str
        The protocol's id.
    truth : tuple
        True DLT probability per dose.
    target : float or Fraction
        Target DLT probability defining the true MTD.
    true_mtd : int or None
        1-based true MTD (None when dose 1 is above the target).
    policy : str
        The policy assumed at decision points.
    exact : bool
        True when every figure is an exact fraction.
    mtd : tuple
        Probability of each selection: no MTD, then doses 1..K.
    patients_at_dose, dlts_at_dose : tuple
        Expected patients and DLTs per dose.
    expected_patients, expected_dlts : number
    sample_size : tuple of (int, number)
        Distribution of the total number of patients.
    p_stop_toxicity, p_no_mtd, p_correct_selection, p_select_above_mtd : number
    expected_patients_above_mtd, p_any_above_mtd : number
    overdose_patients : int
        The threshold ``m`` of ``p_overdose``.
    p_overdose : number
        Probability of treating ``m`` or more patients above the true MTD.
    bounds : dict
        Figure name (see :data:`BOUNDED_FIGURES`) to (least, greatest) over every policy.
    states : int
        Classes of states in the merged graph.
    """

    __repr__ = value_repr

    protocol: str
    truth: tuple[Number, ...]
    target: Number
    true_mtd: int | None
    policy: str
    exact: bool
    mtd: tuple[Number, ...]
    patients_at_dose: tuple[Number, ...]
    dlts_at_dose: tuple[Number, ...]
    expected_patients: Number
    expected_dlts: Number
    sample_size: tuple[tuple[int, Number], ...]
    p_stop_toxicity: Number
    p_no_mtd: Number
    p_correct_selection: Number
    p_select_above_mtd: Number
    expected_patients_above_mtd: Number
    p_any_above_mtd: Number
    overdose_patients: int
    p_overdose: Number
    bounds: Mapping[str, tuple[Number, Number]] = attrs.field(eq=False)
    states: int = 0

    def figure(self, name: str) -> Number:
        """The value of one of :data:`BOUNDED_FIGURES`."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``escalation-rules oc --json`` (fractions as ``"p/q"`` strings)."""
        j = _json_number
        return {
            "protocol": self.protocol,
            "truth": [j(p) for p in self.truth],
            "target": j(self.target),
            "true_mtd": self.true_mtd,
            "policy": self.policy,
            "exact": self.exact,
            "mtd": [j(x) for x in self.mtd],
            "expected_patients": j(self.expected_patients),
            "expected_dlts": j(self.expected_dlts),
            "patients_at_dose": [j(x) for x in self.patients_at_dose],
            "dlts_at_dose": [j(x) for x in self.dlts_at_dose],
            "sample_size": [[n, j(q)] for n, q in self.sample_size],
            "p_stop_toxicity": j(self.p_stop_toxicity),
            "p_no_mtd": j(self.p_no_mtd),
            "p_correct_selection": j(self.p_correct_selection),
            "p_select_above_mtd": j(self.p_select_above_mtd),
            "expected_patients_above_mtd": j(self.expected_patients_above_mtd),
            "p_any_above_mtd": j(self.p_any_above_mtd),
            "overdose_patients": self.overdose_patients,
            "p_overdose": j(self.p_overdose),
            "bounds": {name: {"min": j(lo), "max": j(hi)} for name, (lo, hi) in self.bounds.items()},
            "states": self.states,
        }

    def text(self) -> str:
        """A table per dose, the summary figures, and their range over every policy."""
        f = _decimal
        lines = [f"operating characteristics of {self.protocol} (policy {self.policy}, target {f(self.target)}, "
                 f"true MTD {'none' if self.true_mtd is None else 'dose ' + str(self.true_mtd)})",
                 f"{'dose':>6} {'true P(DLT)':>12} {'P(MTD)':>10} {'patients':>10} {'DLTs':>10}"]
        lines.append(f"{'none':>6} {'':>12} {f(self.mtd[0]):>10}")
        for d, p in enumerate(self.truth):
            lines.append(f"{d + 1:>6} {f(p):>12} {f(self.mtd[d + 1]):>10} {f(self.patients_at_dose[d]):>10} "
                         f"{f(self.dlts_at_dose[d]):>10}")
        width = max(len(t) for t in _FIGURE_TEXT.values()) + 2
        lines.append("")
        lines.append(f"{'figure':<{width}} {'value':>10} {'least':>10} {'greatest':>10}  (over every policy)")
        for name in BOUNDED_FIGURES:
            label = figure_label(name, self.overdose_patients)
            lo, hi = self.bounds[name]
            lines.append(f"{label:<{width}} {f(self.figure(name)):>10} {f(lo):>10} {f(hi):>10}")
        sizes = ", ".join(f"{n}: {f(q)}" for n, q in self.sample_size)
        lines.append(f"sample size distribution: {sizes}")
        if self.exact:
            lines.append("(computed exactly; --json prints every figure as a fraction)")
        return "\n".join(lines)


def _number_kind(truth: Sequence[Number]) -> tuple[bool, Number, Number]:
    exact = bool(truth) and all(isinstance(p, Fraction | int) and not isinstance(p, bool) for p in truth)
    return (exact, Fraction(0), Fraction(1)) if exact else (False, 0.0, 1.0)


def _check_truth(graph: ReducedGraph, truth: Sequence[Number]) -> tuple[Number, ...]:
    return _checked_truth(graph.protocol.id, graph.doses, truth)


def _checked_truth(pid: str, k: int, truth: Sequence[Number]) -> tuple[Number, ...]:
    check_probabilities(truth)
    if len(truth) != k:
        raise EscalationRulesError(
            f"truth: {pid} has {k} doses (including provisional ones); "
            f"expected {k} probabilities (got {len(truth)})")
    exact, _, _ = _number_kind(truth)
    return tuple(Fraction(p) if exact else float(p) for p in truth)


def check_probabilities(truth: Any, name: str = "truth") -> None:
    """Refuse anything but a sequence of probabilities from 0 to 1, naming the argument and the entry.

    Examples
    --------
    >>> check_probabilities([0.1, "1/20"])
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: truth[1]: expected a probability from 0 to 1 (got '1/20')
    """
    if isinstance(truth, str | bytes) or not isinstance(truth, Sequence):
        raise TypeError(f"{name}: expected a sequence of probabilities, one per dose (got {type(truth).__name__})")
    for i, p in enumerate(truth):
        if isinstance(p, bool) or not isinstance(p, int | float | Fraction) or not 0 <= p <= 1:
            raise EscalationRulesError(f"{name}[{i}]: expected a probability from 0 to 1 (got {shown(p)})")


def _binomials(p: Number, cohort: int, one: Number) -> list[Number]:
    q = one - p
    return [math.comb(cohort, x) * p**x * q ** (cohort - x) for x in range(cohort + 1)]


class _Model:
    """The truth-dependent quantities shared by the passes."""

    def __init__(self, graph: ReducedGraph, truth: Sequence[Number], target: Number, overdose: int) -> None:
        self.graph = graph
        self.truth = _check_truth(graph, truth)
        self.exact, self.zero, self.one = _number_kind(self.truth)
        if self.exact and not isinstance(target, Fraction | int):
            target = Fraction(str(target))
        self.target = target
        self.first_over = next((d for d, p in enumerate(self.truth) if p > target), len(self.truth))
        self.true_mtd = self.first_over - 1 if self.first_over > 0 else None
        self.m = overdose
        self.binom: dict[tuple[int, int], list[Number]] = {}

    def b(self, dose: int, cohort: int) -> list[Number]:
        key = (dose, cohort)
        got = self.binom.get(key)
        if got is None:
            got = self.binom[key] = _binomials(self.truth[dose], cohort, self.one)
        return got


def _chosen(graph: ReducedGraph, policy: Policy) -> list[int]:
    """For each node reachable under ``policy``: the child taken at a decision (else -1); -2 unreachable."""
    nodes = graph.nodes
    chosen = [-2] * len(nodes)
    chosen[graph.root] = -1
    for i in range(graph.root, -1, -1):
        if chosen[i] == -2:
            continue
        node = nodes[i]
        if node.kind == TREAT:
            for c in node.children:
                if chosen[c] == -2:
                    chosen[c] = -1
        elif node.kind == DECIDE:
            option = policy.option(node.rule, facts=dict(node.facts))
            if option is None or option not in node.labels:
                offered = ", ".join(node.labels)
                raise EscalationRulesError(f"policy {policy.name}: no option for decision rule {node.rule!r} "
                                           f"(offered: {offered}); name one in the policy")
            c = node.children[node.labels.index(option)]
            chosen[i] = c
            if chosen[c] == -2:
                chosen[c] = -1
    return chosen


def _bounds(model: _Model) -> dict[str, tuple[Number, Number]]:
    """Least and greatest value of every bounded figure over every way of deciding (one backward pass)."""
    graph, zero, one, m = model.graph, model.zero, model.one, model.m
    true_mtd, first_over = model.true_mtd, model.first_over
    width = 7 + m  # patients, dlts, above, sel_above, correct, tox, no_mtd, tail 1..m
    lows: list[list[Number]] = []
    highs: list[list[Number]] = []
    for node in graph.nodes:
        if node.kind == STOP:
            mtd = node.mtd
            vec = [zero, zero, zero,
                   one if mtd is not None and mtd >= first_over else zero,
                   one if mtd == true_mtd else zero,
                   one if mtd is None and node.closes else zero,
                   one if mtd is None else zero] + [zero] * m
            lows.append(vec)
            highs.append(vec)
            continue
        if node.kind == DECIDE:
            kids_lo = [lows[c] for c in node.children]
            kids_hi = [highs[c] for c in node.children]
            lows.append([min(v) for v in zip(*kids_lo, strict=True)])
            highs.append([max(v) for v in zip(*kids_hi, strict=True)])
            continue
        b = model.b(node.dose, node.cohort)
        cohort = node.cohort
        above = node.dose >= first_over
        shift = cohort if above else 0
        imm = [cohort * one, cohort * model.truth[node.dose], shift * one]
        for table in (lows, highs):
            acc = imm + [zero] * (width - 3)
            for x, c in enumerate(node.children):
                w = b[x]
                if not w:
                    continue
                child = table[c]
                for j in range(7):
                    acc[j] += w * child[j]
                for r in range(1, m + 1):
                    rr = r - shift
                    acc[6 + r] += w * (one if rr <= 0 else child[6 + rr])
            table.append(acc)
    lo, hi = lows[graph.root], highs[graph.root]
    names = ("expected_patients", "expected_dlts", "expected_patients_above_mtd", "p_select_above_mtd",
             "p_correct_selection", "p_stop_toxicity", "p_no_mtd")
    result = {name: (lo[i], hi[i]) for i, name in enumerate(names)}
    result["p_any_above_mtd"] = (lo[7], hi[7]) if m >= 1 else (zero, zero)
    result["p_overdose"] = (lo[6 + m], hi[6 + m]) if m >= 1 else (one, one)
    return {name: result[name] for name in BOUNDED_FIGURES}


def _interval_oc(plan: IntervalPlan, truth: tuple[float, ...], target: Number, m: int,
                 policy: str) -> OperatingCharacteristics:
    """The figures of a built-in interval design by the level-by-level programme (no decision points)."""
    first_over = next((d for d, p in enumerate(truth) if p > target), len(truth))
    f = interval_figures(plan, truth, first_over, m)
    mtd = f["mtd"]
    values = {
        "expected_patients": sum(f["patients_at_dose"]),
        "expected_dlts": sum(f["dlts_at_dose"]),
        "expected_patients_above_mtd": f["expected_patients_above_mtd"],
        "p_any_above_mtd": f["p_any_above_mtd"],
        "p_overdose": f["p_overdose"],
        "p_select_above_mtd": f["p_select_above_mtd"],
        "p_correct_selection": f["p_correct_selection"],
        "p_stop_toxicity": f["p_stop_toxicity"],
        "p_no_mtd": mtd[0],
    }
    return OperatingCharacteristics(
        protocol=plan.protocol.id, truth=truth, target=target,
        true_mtd=first_over if first_over > 0 else None, policy=policy, exact=False, mtd=mtd,
        patients_at_dose=f["patients_at_dose"], dlts_at_dose=f["dlts_at_dose"],
        expected_patients=values["expected_patients"], expected_dlts=values["expected_dlts"],
        sample_size=f["sample_size"], p_stop_toxicity=values["p_stop_toxicity"], p_no_mtd=mtd[0],
        p_correct_selection=values["p_correct_selection"], p_select_above_mtd=values["p_select_above_mtd"],
        expected_patients_above_mtd=values["expected_patients_above_mtd"],
        p_any_above_mtd=values["p_any_above_mtd"], overdose_patients=m, p_overdose=values["p_overdose"],
        bounds={name: (values[name], values[name]) for name in BOUNDED_FIGURES}, states=f["states"])


def operating_characteristics(
    protocol: Protocol | ReducedGraph,
    truth: Sequence[Number],
    *,
    policy: str | Mapping[str, Any] | Policy | None = None,
    target: Number = 0.3,
    overdose_patients: int = 3,
    bounds: bool = True,
) -> OperatingCharacteristics:
    """Exact operating characteristics of ``protocol`` when the true DLT probabilities are ``truth``.

    Parameters
    ----------
    protocol : Protocol or ReducedGraph
        The design (its merged graph is built once and kept).
    truth : sequence of float or Fraction
        True DLT probability at each dose (all Fractions: exact results).
    policy : str, mapping, Policy or None
        What people choose at decision points (default: the protocol's default policy).
    target : float or Fraction
        Target DLT probability: the true MTD is the dose below the first dose above it.
    overdose_patients : int
        Threshold ``m`` of ``p_overdose`` (P(m or more patients above the true MTD)).
    bounds : bool
        Also compute each safety figure's range over every policy.

    Raises
    ------
    EscalationRulesError
        For a truth of the wrong length or outside [0, 1], or a policy that
        leaves a reachable decision point open.
    CompileError
        If the protocol fails its build checks.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> oc = operating_characteristics(load_protocol("spec/nct07117175"), [0.05, 0.1, 0.2, 0.35])
    >>> round(sum(oc.mtd), 12), round(oc.expected_patients, 2)
    (1.0, 17.92)
    >>> lo, hi = oc.bounds["expected_patients"]
    >>> round(lo, 3), round(hi, 3)     # stop at the first decision point, or never
    (1.1, 17.927)
    """
    fast = None if isinstance(protocol, ReducedGraph) else interval_plan(as_protocol(protocol))
    if fast is not None:
        pol = resolve_policy(fast.protocol, policy)
    else:
        graph, pol = policy_graph(protocol, policy)
    if not isinstance(overdose_patients, int) or not 1 <= overdose_patients <= MAX_CAP:
        raise EscalationRulesError(f"overdose_patients: expected a positive integer of at most {MAX_CAP} "
                                   f"(got {shown(overdose_patients)})")
    check_target(target)
    if fast is not None:
        checked = _checked_truth(fast.protocol.id, fast.k, truth)
        if not _number_kind(checked)[0]:  # exact fractions take the generic programme
            return _interval_oc(fast, checked, target, overdose_patients, pol.name)
        graph, pol = policy_graph(protocol, policy)
    model = _Model(graph, truth, target, overdose_patients)
    chosen = _chosen(graph, pol)
    zero, one, k, m = model.zero, model.one, graph.doses, model.m
    nodes = graph.nodes
    reach = [zero] * len(nodes)
    reach[graph.root] = one
    mtd = [zero] * (k + 1)
    patients = [zero] * k
    dlts = [zero] * k
    tox = sel_above = correct = above = zero
    for i in range(graph.root, -1, -1):
        r = reach[i]
        if chosen[i] == -2:
            continue
        node = nodes[i]
        if node.kind == TREAT:
            b = model.b(node.dose, node.cohort)
            for x, c in enumerate(node.children):
                reach[c] += r * b[x]
            d = node.dose
            patients[d] += r * node.cohort
            dlts[d] += r * node.cohort * model.truth[d]
            if d >= model.first_over:
                above += r * node.cohort
        elif node.kind == DECIDE:
            reach[chosen[i]] += r
        else:
            sel = node.mtd
            mtd[0 if sel is None else sel + 1] += r
            if sel is None and node.closes:
                tox += r
            if sel is not None and sel >= model.first_over:
                sel_above += r
            if sel == model.true_mtd:
                correct += r
    # backward: distribution of the sample size and tail of patients above the true MTD
    sizes: dict[int, dict[int, Number]] = {}
    tails: dict[int, list[Number]] = {}
    for i, node in enumerate(nodes):
        if chosen[i] == -2:
            continue
        if node.kind == STOP:
            sizes[i] = {0: one}
            tails[i] = [one] + [zero] * m
        elif node.kind == DECIDE:
            sizes[i] = sizes[chosen[i]]
            tails[i] = tails[chosen[i]]
        else:
            b = model.b(node.dose, node.cohort)
            shift = node.cohort if node.dose >= model.first_over else 0
            dist: dict[int, Number] = {}
            tail = [one] + [zero] * m
            for x, c in enumerate(node.children):
                w = b[x]
                if not w:
                    continue
                for n, q in sizes[c].items():
                    dist[n + node.cohort] = dist.get(n + node.cohort, zero) + w * q
                child_tail = tails[c]
                for rr in range(1, m + 1):
                    tail[rr] += w * (one if rr - shift <= 0 else child_tail[rr - shift])
            sizes[i] = dist
            tails[i] = tail
    root_tail = tails[graph.root]
    values = {
        "expected_patients": sum(patients, zero),
        "expected_dlts": sum(dlts, zero),
        "expected_patients_above_mtd": above,
        "p_any_above_mtd": root_tail[1],
        "p_overdose": root_tail[m],
        "p_select_above_mtd": sel_above,
        "p_correct_selection": correct,
        "p_stop_toxicity": tox,
        "p_no_mtd": mtd[0],
    }
    # with no decision point there is one way of deciding, so the range is the value itself
    any_decision = any(node.kind == DECIDE for node in graph.nodes)
    ranges = _bounds(model) if bounds and any_decision else {name: (v, v) for name, v in values.items()}
    # the policy's own value lies in its range; in floating point the two passes may differ in the
    # last digit, so the range is widened to include it (exact fractions are unchanged)
    ranges = {name: (min(lo, values[name]), max(hi, values[name])) for name, (lo, hi) in ranges.items()}
    return OperatingCharacteristics(
        protocol=graph.protocol.id,
        truth=model.truth,
        target=model.target,
        true_mtd=None if model.true_mtd is None else model.true_mtd + 1,
        policy=pol.name,
        exact=model.exact,
        mtd=tuple(mtd),
        patients_at_dose=tuple(patients),
        dlts_at_dose=tuple(dlts),
        expected_patients=values["expected_patients"],
        expected_dlts=values["expected_dlts"],
        sample_size=tuple(sorted((n, q) for n, q in sizes[graph.root].items() if q)),
        p_stop_toxicity=tox,
        p_no_mtd=mtd[0],
        p_correct_selection=correct,
        p_select_above_mtd=sel_above,
        expected_patients_above_mtd=above,
        p_any_above_mtd=values["p_any_above_mtd"],
        overdose_patients=m,
        p_overdose=values["p_overdose"],
        bounds=ranges,
        states=graph.stats["nodes"],
    )
