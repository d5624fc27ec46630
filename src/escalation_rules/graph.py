"""Compile a protocol into its frozen state graph, with the build-time checks.

Nodes are :class:`~escalation_rules._machine.State` objects (what happens
next: treat a cohort, decide, or stop).  Edges leave a treat state once per
possible number of DLTs in the cohort (``kind="outcome"``, attribute
``dlts``), and a decide state once per option (``kind="option"``).  Every edge
carries the rule that fired, its guard text and the action it gave.

The build refuses a protocol, naming rule ids and states (as outcome strings
that reach them), when a decision table is incomplete or overlapping at a
reachable state, a rule moves off the ladder, a cohort would pass the
enrolment cap, or a path does not end in a stop.  Rules that never fire are
reported as warnings, since a ladder may be too short for some of them.

Examples
--------
>>> from escalation_rules import builtin_design, compile_protocol
>>> compiled = compile_protocol(builtin_design("3+3-escalate-only", doses=2))
>>> compiled.stats["paths"]  # 3 * 2 ** (K + 1) - 5 for K = 2 doses
19
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._attrs import value_repr
from ._limits import MAX_STATES
from ._machine import State, StepError, after_cohort, choose, initial_state
from ._reduce import Observer, ReducedGraph, reduce_protocol
from .errors import CompileError
from .protocol import Protocol, protocol_from_mapping

if TYPE_CHECKING:
    import networkx as nx  # imported where a graph is built or walked: a decision never needs it

__all__ = ["CompiledProtocol", "compile_protocol", "describe_path", "explore_merged"]


@attrs.frozen
class CompiledProtocol:
    """A protocol with its frozen state graph.

    Attributes
    ----------
    protocol : Protocol
    graph : networkx.DiGraph
        Frozen; nodes are states, edges are labelled transitions.
    initial : State
    stats : dict
        ``states``, ``edges``, ``stops``, ``decisions`` and ``paths`` (the number
        of distinct root-to-stop paths, counting DLT totals per cohort).
    warnings : tuple of str
        Rules that never fire, and the like.
    """

    __repr__ = value_repr

    protocol: Protocol
    graph: nx.DiGraph = attrs.field(eq=False, repr=False)
    initial: State
    stats: dict[str, int] = attrs.field(eq=False)
    warnings: tuple[str, ...]

    def path_to(self, state: State) -> list[tuple[State, State, dict[str, Any]]]:
        """A shortest path of edges from the initial state to ``state``."""
        import networkx as nx

        nodes = nx.shortest_path(self.graph, self.initial, state)
        return [(a, b, self.graph.edges[a, b]) for a, b in itertools.pairwise(nodes)]


def _edge_step(state: State, data: dict[str, Any]) -> str:
    if data["kind"] == "outcome":
        cohort = data["cohort"]
        dlts = data["dlts"]
        return f"{state.dose + 1}{'N' * (cohort - dlts)}{'T' * dlts}"
    return f"[{data['option']}]"


def describe_path(edges: list[tuple[State, State, dict[str, Any]]]) -> str:
    """Write a path of edges as an outcome string (decisions in brackets).

    Decisions that the next cohort's dose implies are left out, as in the
    field's notation; the rest are written in brackets.
    """
    parts: list[str] = []
    for i, (a, _b, data) in enumerate(edges):
        if data["kind"] == "option":
            implied = (
                i + 1 < len(edges)
                and edges[i + 1][2]["kind"] == "outcome"
                and data.get("unique_dose", False)
            )
            if implied:
                continue
        parts.append(_edge_step(a, data))
    return " ".join(parts) or "(start)"


def _successors(protocol: Protocol, state: State) -> Iterator[tuple[State, dict[str, Any]]]:
    if state.phase == "treat":
        for dlts in range(state.cohort + 1):
            try:
                rule, nxt = after_cohort(protocol, state, dlts)
            except StepError as err:
                err.step = f"{state.dose + 1}{'N' * (state.cohort - dlts)}{'T' * dlts}"
                raise
            yield nxt, {"kind": "outcome", "dlts": dlts, "cohort": state.cohort, "rule": rule.id,
                        "guard": rule.when.text, "action": rule.action}
    elif state.phase == "decide":
        assert state.rule is not None
        rule = protocol.rule(state.rule)
        doses: dict[int | None, list[str]] = {}
        for option in rule.options:
            doses.setdefault(option.outcome.treats_at(state.dose), []).append(option.id)
        for option in rule.options:
            nxt = choose(protocol, state, option)
            target = option.outcome.treats_at(state.dose)
            yield nxt, {"kind": "option", "option": option.id, "rule": rule.id, "guard": rule.when.text,
                        "action": option.outcome.action, "signoff": option.signoff,
                        "unique_dose": option.outcome.action == "treat" and len(doses[target]) == 1}


def explore_merged(protocol: Protocol, observer: Observer | None = None) -> ReducedGraph:
    """Run the build checks on merged states (fast), refusing as :func:`compile_protocol` words it.

    The merged exploration goes depth first; when it finds a problem, the full
    compiler is run to name the shortest history to it.

    Raises
    ------
    CompileError
        As :func:`compile_protocol` would.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> explore_merged(builtin_design("3+3-deescalate", doses=10)).stats["nodes"]
    175
    """
    try:
        return reduce_protocol(protocol, observer)
    except CompileError as merged:
        try:
            compile_protocol(protocol)
        except CompileError as full:
            if _STATE_LIMIT not in str(full):
                raise
        raise merged from None  # the full graph is too large to name a shorter history


_STATE_LIMIT = "passes the limit of"


def as_protocol(value: Any, name: str = "protocol") -> Protocol:
    """The :class:`Protocol` behind ``value`` (a Protocol, a CompiledProtocol or a protocol mapping).

    Raises
    ------
    TypeError
        For anything else, naming the argument.
    ProtocolError
        For a mapping that is not a valid protocol.
    """
    if isinstance(value, Protocol):
        return value
    if isinstance(value, CompiledProtocol):
        return value.protocol
    if isinstance(value, Mapping):
        return protocol_from_mapping(dict(value), name)
    raise TypeError(f"{name}: expected a Protocol, a CompiledProtocol or a protocol mapping "
                    f"(got {type(value).__name__})")


def compile_protocol(protocol: Protocol | CompiledProtocol | Mapping[str, Any]) -> CompiledProtocol:
    """Explore every reachable state, check the rules, and freeze the graph.

    Raises
    ------
    CompileError
        One line per problem, naming the rules and a history reaching the state.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> compiled = compile_protocol(load_protocol("spec/nct07117175"))
    >>> compiled.stats["states"] > 100
    True
    """
    import networkx as nx

    if isinstance(protocol, CompiledProtocol):
        return protocol
    protocol = as_protocol(protocol)
    graph: nx.DiGraph = nx.DiGraph()
    start = initial_state(protocol)
    graph.add_node(start)
    queue = deque([start])
    problems: list[str] = []
    seen_problem: set[tuple[str, ...]] = set()
    fired: set[str] = set()
    while queue:
        state = queue.popleft()
        try:
            successors = list(_successors(protocol, state))
        except StepError as err:
            key = err.rules or (str(err),)
            if key not in seen_problem:
                seen_problem.add(key)
                history = _history_to(graph, start, state)
                step = getattr(err, "step", "")
                where = f"{history} {step}".strip() if history != "(start)" or not step else step
                problems.append(f"{protocol.source}: {err} after history {where!r}")
            continue
        for nxt, data in successors:
            fired.add(data["rule"])
            if data["kind"] == "option":
                fired.add(f"{data['rule']}/{data['option']}")
            if nxt not in graph:
                if graph.number_of_nodes() >= MAX_STATES:
                    raise CompileError([f"{protocol.source}: the full state graph {_STATE_LIMIT} {MAX_STATES} "
                                        f"states (every history is a state here: shorten the ladder or lower the "
                                        f"cap); verify and decide work on merged states and have no such limit"])
                graph.add_node(nxt)
                queue.append(nxt)
            graph.add_edge(state, nxt, **data)
    if problems:
        raise CompileError(problems)
    stops = 0
    decisions = 0
    for node in graph:
        out = graph.out_degree(node)
        if node.phase == "stop":
            stops += 1
        else:
            if node.phase == "decide":
                decisions += 1
            if out == 0:  # pragma: no cover - _successors always yields for treat/decide
                problems.append(f"{protocol.source}: trap state after {_history_to(graph, start, node)!r}")
    if not nx.is_directed_acyclic_graph(graph):  # pragma: no cover - enrolment grows along every cycle
        problems.append(f"{protocol.source}: the state graph has a cycle")
    if problems:
        raise CompileError(problems)
    warnings = tuple(
        f"rule {rule.id!r} of stage {stage.id!r} never fires in a reachable state"
        for stage in protocol.stages
        for rule in stage.rules
        if rule.id not in fired
    )
    stats = {
        "states": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "stops": stops,
        "decisions": decisions,
        "paths": _count_paths(graph, start),
    }
    return CompiledProtocol(protocol, nx.freeze(graph), start, stats, warnings)


def _count_paths(graph: nx.DiGraph, start: State) -> int:
    import networkx as nx

    counts: dict[State, int] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        succ = list(graph.successors(node))
        counts[node] = 1 if not succ else sum(counts[s] for s in succ)
    return counts[start]


def _history_to(graph: nx.DiGraph, start: State, state: State) -> str:
    import networkx as nx

    nodes = nx.shortest_path(graph, start, state)
    return describe_path([(a, b, graph.edges[a, b]) for a, b in itertools.pairwise(nodes)])
