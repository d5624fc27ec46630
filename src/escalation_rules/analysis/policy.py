"""Policies: what people choose at each decision point, for the analyses.

A protocol's decision points (rules with ``action = "decide"``) leave a
choice to people.  Operating characteristics need an assumption about that
choice: a *policy* maps each decision rule id to one of its option ids.

Built-in policies
-----------------
``default``
    The protocol's own ``[policy.default]`` table.
``most-aggressive``
    At every decision point, the option that treats the highest dose
    (escalate before stay before de-escalate before stop).
``most-cautious``
    The reverse: stop before de-escalate before stay before escalate.

Ties keep the order the options are written in.  A policy file (TOML or
JSON) maps rule ids to option ids; rules it leaves out take the protocol's
default.

Examples
--------
>>> from escalation_rules import load_protocol
>>> nct = load_protocol("spec/nct07117175")
>>> resolve_policy(nct, "most-aggressive").choices["top-pass"]
'add-group'
>>> resolve_policy(nct, "most-cautious").choices["top-pass"]
'terminate'
>>> resolve_policy(nct, {"top-pass": "grow"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
escalation_rules.errors.EscalationRulesError: policy: top-pass: unknown option 'grow' (offered: add-group, ...)
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import EscalationRulesError
from ..protocol import Option, Protocol, Rule

__all__ = ["BUILTIN_POLICIES", "Policy", "resolve_policy"]

#: The policies every protocol has.
BUILTIN_POLICIES = ("default", "most-aggressive", "most-cautious")


@attrs.frozen
class Policy:
    """A choice of option at every decision point.

    Attributes
    ----------
    name : str
        ``default``, ``most-aggressive``, ``most-cautious``, a file name or ``custom``.
    choices : dict
        Decision rule id to option id.
    """

    name: str
    choices: Mapping[str, str] = attrs.field(eq=False)

    def option(self, rule_id: str) -> str | None:
        """The option chosen at ``rule_id``'s decision points (None if the policy is silent)."""
        return self.choices.get(rule_id)


def _decision_rules(protocol: Protocol) -> list[Rule]:
    return [rule for stage in protocol.stages for rule in stage.rules if rule.action == "decide"]


def _aggressiveness(option: Option) -> int:
    if option.outcome.action == "stop":
        return 0
    return {"previous": 1, "stay": 2, "next": 3}[option.outcome.move]


def _ranked(protocol: Protocol, most: bool) -> dict[str, str]:
    choices = {}
    for rule in _decision_rules(protocol):
        ranked = sorted(rule.options, key=_aggressiveness, reverse=most)
        choices[rule.id] = ranked[0].id
    return choices


def _check(protocol: Protocol, mapping: Mapping[str, Any], source: str) -> dict[str, str]:
    rules = {rule.id: rule for rule in _decision_rules(protocol)}
    choices = dict(protocol.default_policy)
    for rule_id, option_id in mapping.items():
        if rule_id not in rules:
            known = ", ".join(rules) or "none: the protocol has no decision points"
            raise EscalationRulesError(f"{source}: {rule_id}: not a decision rule of {protocol.id} (known: {known})")
        offered = [o.id for o in rules[rule_id].options]
        if not isinstance(option_id, str) or option_id not in offered:
            raise EscalationRulesError(
                f"{source}: {rule_id}: unknown option {option_id!r} (offered: {', '.join(offered)})")
        choices[rule_id] = option_id
    return choices


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise EscalationRulesError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise EscalationRulesError(f"{path}: not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else "a single value"
        raise EscalationRulesError(f"{path}: expected a table of rule id = option id (got {got})")
    return data


def resolve_policy(protocol: Protocol, policy: str | Mapping[str, str] | Policy | None = None) -> Policy:
    """The policy named by ``policy`` for ``protocol``.

    Parameters
    ----------
    policy : str, mapping, Policy or None
        A built-in name (see :data:`BUILTIN_POLICIES`; None means
        ``default``), the path of a TOML/JSON file mapping rule ids to option
        ids, or such a mapping.

    Raises
    ------
    EscalationRulesError
        For an unknown name or file, a rule that is not a decision point of
        the protocol, or an option the rule does not offer.
    """
    if isinstance(policy, Policy):
        return Policy(policy.name, _check(protocol, policy.choices, f"policy {policy.name}"))
    if policy is None or policy == "default":
        return Policy("default", dict(protocol.default_policy))
    if policy == "most-aggressive":
        return Policy(policy, _ranked(protocol, True))
    if policy == "most-cautious":
        return Policy(policy, _ranked(protocol, False))
    if isinstance(policy, str):
        path = Path(policy)
        if not path.is_file():
            raise EscalationRulesError(f"policy: {policy!r} is neither a built-in policy "
                                       f"({', '.join(BUILTIN_POLICIES)}) nor a policy file")
        return Policy(path.name, _check(protocol, _read_file(path), str(path)))
    return Policy("custom", _check(protocol, policy, "policy"))
