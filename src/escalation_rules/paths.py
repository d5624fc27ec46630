"""The tree of every future decision from a history (the field's "dose paths").

Examples
--------
>>> from escalation_rules import builtin_design
>>> tree = future_paths(builtin_design("3+3-escalate-only", doses=1), "")
>>> tree["decision"]["action"], len(tree["children"])
('treat', 4)
>>> count_leaves(tree)
7
"""

from __future__ import annotations

from typing import Any

from ._args import as_entries, check_count
from ._machine import State, after_cohort, choose
from .engine import Decision, decision_at, replay
from .errors import EscalationRulesError
from .graph import CompiledProtocol, as_protocol
from .history import Choice, Cohort, Entry, format_history, parse_outcomes
from .protocol import Protocol

__all__ = ["count_leaves", "future_paths", "paths_text"]


def _summary(decision: Decision) -> dict[str, Any]:
    return {k: v for k, v in decision.to_dict().items() if k in (
        "action", "dose", "cohort_size", "mtd", "rule", "signoff")} | {
        "options": [o.id for o in decision.options]}


def future_paths(protocol: Protocol | CompiledProtocol, history: str = "",
                 max_depth: int | None = None, max_nodes: int = 200_000) -> dict[str, Any]:
    """Every future decision from ``history``, as a nested dict.

    Each node has ``history`` (outcome string), ``decision`` (a summary of the
    decision there) and ``children``; each child edge names the ``step`` taken
    (a cohort's outcomes such as ``"2NNT"``, or an option in brackets).

    Parameters
    ----------
    max_depth : int or None
        Stop expanding after this many steps (cohorts or decisions).
    max_nodes : int
        Refuse trees larger than this, with an error suggesting ``max_depth``.

    Raises
    ------
    HistoryError
        If ``history`` is impossible.
    EscalationRulesError
        If the tree would exceed ``max_nodes``.
    """
    p = as_protocol(protocol)
    entries = as_entries(history)
    check_count(max_depth, "max_depth", optional=True)
    check_count(max_nodes, "max_nodes", low=1)
    state, decision = replay(p, entries)
    budget = [max_nodes]
    base = decision.history
    root: dict[str, Any] = {"history": base, "decision": _summary(decision), "children": []}
    budget[0] -= 1
    if max_depth is not None and max_depth <= 0:
        return root
    if decision.action == "treat" and decision.dose is not None and not _complete(state, decision):
        # an incomplete cohort (the last entry of the normalised history): branch on the rest of it
        *before, partial = parse_outcomes(base)
        assert isinstance(partial, Cohort)
        size = decision.cohort_size or 0
        for u in range(size + 1):
            rest = "N" * (size - u) + "T" * u
            child_entries = [*before, Cohort(partial.dose, partial.outcomes + rest)]
            child_state, child_decision = replay(p, child_entries)
            node = _node(p, child_state, child_decision, child_entries, budget, max_depth, 1)
            root["children"].append({"step": f"{decision.dose}{rest}", "node": node})
        return root
    root["children"] = _children(p, state, entries, budget, max_depth, 0)
    return root


def _complete(state: State, decision: Decision) -> bool:
    return state.phase == "treat" and state.dose + 1 == decision.dose and state.cohort == decision.cohort_size


def _node(p: Protocol, state: State, decision: Decision, entries: list[Entry], budget: list[int],
          max_depth: int | None, depth: int) -> dict[str, Any]:
    budget[0] -= 1
    if budget[0] < 0:
        raise EscalationRulesError("paths: the tree has more nodes than the limit; give a smaller --depth")
    node: dict[str, Any] = {"history": format_history(entries), "decision": _summary(decision), "children": []}
    if max_depth is None or depth < max_depth:
        node["children"] = _children(p, state, tuple(entries), budget, max_depth, depth)
    return node


def _children(p: Protocol, state: State, entries: tuple[Entry, ...], budget: list[int],
              max_depth: int | None, depth: int) -> list[dict[str, Any]]:
    children = []
    if state.phase == "treat":
        for dlts in range(state.cohort + 1):
            cohort = Cohort(state.dose + 1, "N" * (state.cohort - dlts) + "T" * dlts)
            _, nxt = after_cohort(p, state, dlts)
            new_entries = [*entries, cohort]
            children.append({"step": str(cohort), "node": _node(p, nxt, decision_at(p, nxt, new_entries),
                                                                  new_entries, budget, max_depth, depth + 1)})
    elif state.phase == "decide":
        rule = p.rule(state.rule or "")
        for option in rule.options:
            nxt = choose(p, state, option)
            new_entries = [*entries, Choice(option.id)]
            children.append({"step": f"[{option.id}]", "node": _node(p, nxt, decision_at(p, nxt, new_entries),
                                                                       new_entries, budget, max_depth, depth + 1)})
    return children


def count_leaves(tree: dict[str, Any]) -> int:
    """Number of paths (leaves) in a tree from :func:`future_paths`."""
    if not tree["children"]:
        return 1
    return sum(count_leaves(child["node"]) for child in tree["children"])


def paths_text(tree: dict[str, Any]) -> str:
    """The tree as indented lines, one per node."""
    lines: list[str] = []

    def say(decision: dict[str, Any]) -> str:
        if decision["action"] == "treat":
            return f"treat {decision['cohort_size']} at dose {decision['dose']}"
        if decision["action"] == "decide":
            return f"decide: {' | '.join(decision['options'])} ({decision['rule']})"
        mtd = decision["mtd"]
        return f"stop, MTD {'none' if mtd is None else 'dose ' + str(mtd)} ({decision['rule']})"

    def walk(node: dict[str, Any], step: str, indent: int) -> None:
        probability = (f"  [p = {node['probability']:.6g}]" if isinstance(node.get("probability"), float) else f"  [p = {node['probability']}]" if "probability" in node else "")  # noqa: E501
        lines.append(f"{'  ' * indent}{step} -> {say(node['decision'])}{probability}")
        for child in node["children"]:
            walk(child["node"], child["step"], indent + 1)

    walk(tree, tree["history"] or "(start)", 0)
    return "\n".join(lines)




