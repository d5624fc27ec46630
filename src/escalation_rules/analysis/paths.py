"""Attach probabilities under a truth to a tree of future decisions.

:func:`escalation_rules.future_paths` returns every future decision from a
history as a nested dict; :func:`path_probabilities` adds to each node the
probability of reaching it from the root when the true DLT probabilities
are ``truth``.  A cohort step such as ``"2NNT"`` stands for its number of
DLTs in any order (the rules only read counts), so its probability is
binomial: ``C(3, 1) p₂ (1 - p₂)²`` here.  A decision step (``"[escalate]"``)
is taken as given: its probability is 1, so a node's probability is
conditional on the decisions along its path.

Examples
--------
>>> from fractions import Fraction
>>> from escalation_rules import builtin_design, future_paths
>>> tree = path_probabilities(future_paths(builtin_design("3+3-escalate-only", doses=1)), [Fraction(1, 10)])
>>> [child["step"] for child in tree["children"]]
['1NNN', '1NNT', '1NTT', '1TTT']
>>> [child["step_probability"] for child in tree["children"]]
[Fraction(729, 1000), Fraction(243, 1000), Fraction(27, 1000), Fraction(1, 1000)]
>>> sum(leaf_probabilities(tree).values())
Fraction(1, 1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from ..errors import EscalationRulesError

__all__ = ["leaf_probabilities", "path_probabilities"]

_STEP = re.compile(r"^(\d+)([NT]+)$")


def _step_probability(step: str, truth: Sequence[Any], one: Any) -> Any:
    if step.startswith("["):
        return one
    match = _STEP.match(step)
    if match is None:
        raise EscalationRulesError(f"paths: cannot read the step {step!r} (expected e.g. '2NNT' or '[escalate]')")
    dose, outcomes = int(match.group(1)), match.group(2)
    if not 1 <= dose <= len(truth):
        raise EscalationRulesError(f"truth: gives {len(truth)} doses but the tree treats at dose {dose}")
    p = truth[dose - 1]
    c, x = len(outcomes), outcomes.count("T")
    return math.comb(c, x) * p**x * (one - p) ** (c - x)


def path_probabilities(tree: dict[str, Any], truth: Sequence[Any], *, as_json: bool = False) -> dict[str, Any]:
    """A copy of ``tree`` with ``probability`` on every node (and ``step_probability`` on every edge).

    Parameters
    ----------
    tree : dict
        From :func:`escalation_rules.future_paths`.
    truth : sequence of float or Fraction
        True DLT probability per dose (all Fractions: exact probabilities).
    as_json : bool
        Write fractions as ``"p/q"`` strings (for ``--json``).

    Raises
    ------
    EscalationRulesError
        When the tree treats at a dose the truth does not cover.
    """
    from .oc import check_probabilities

    if not isinstance(tree, dict):
        raise TypeError(f"tree: expected the dict future_paths returns (got {type(tree).__name__})")
    check_probabilities(truth)
    exact = all(isinstance(p, Fraction | int) and not isinstance(p, bool) for p in truth)
    one: Any = Fraction(1) if exact else 1.0
    values = [Fraction(p) if exact else float(p) for p in truth]

    def out(value: Any) -> Any:
        return str(value) if as_json and isinstance(value, Fraction) else value

    def walk(node: dict[str, Any], probability: Any) -> dict[str, Any]:
        copy = {key: value for key, value in node.items() if key != "children"}
        copy["probability"] = out(probability)
        children = []
        for child in node.get("children", []):
            q = _step_probability(child["step"], values, one)
            children.append({**{key: value for key, value in child.items() if key != "node"},
                             "step_probability": out(q), "node": walk(child["node"], probability * q)})
        copy["children"] = children
        return copy

    try:
        result = walk(tree, one)
    except (KeyError, TypeError, AttributeError):
        raise EscalationRulesError("tree: not a tree from future_paths (each node has children, each child a step "
                                   "and a node)") from None
    result["truth"] = [out(p) for p in values]
    return result


def leaf_probabilities(tree: dict[str, Any]) -> dict[str, Any]:
    """Each leaf's history to its probability, from a tree with probabilities.

    With no decision step in the tree, the values sum to 1.
    """
    leaves: dict[str, Any] = {}

    def walk(node: dict[str, Any]) -> None:
        if not node["children"]:
            leaves[node["history"]] = node["probability"]
        for child in node["children"]:
            walk(child["node"])

    walk(tree)
    return leaves
