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

An entry may depend on the data: instead of an option id, a list of cases
``{when = "GUARD", option = "ID"}``, the first whose guard holds applies; the
last case may leave out ``when`` (otherwise).  The guards are written in the
language of the rules' guards and read the state at the decision point
(``n`` and ``tox`` count the patients and DLTs at the dose where the decision
arose).  Unknown names or options, and lists whose guards leave some state
uncovered, are refused when the policy is read::

    fill-complete = [
      { when = "3 * tox <= n", option = "declare" },
      { option = "no-mtd" },
    ]

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
>>> str(resolve_policy(nct, {"fill-complete": [{"when": "tox <= 2", "option": "declare"},
...                                            {"when": "tox > 2", "option": "no-mtd"}]}).choices["fill-complete"])
'declare when tox <= 2, no-mtd when tox > 2'
>>> resolve_policy(nct, {"fill-complete": [{"when": "tox <= 2", "option": "declare"}]})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
escalation_rules.errors.EscalationRulesError: policy: fill-complete: the cases leave out ... when tox = 3): ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .. import _toml as tomllib
from .._attrs import value_repr
from ..errors import EscalationRulesError
from ..guards import Guard
from ..protocol import ConditionalChoice, Option, PolicyEntry, Protocol, Rule, policy_entry_data, read_policy_entry

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
        Decision rule id to option id, or to a
        :class:`~escalation_rules.protocol.ConditionalChoice` that depends on the data.
    """

    __repr__ = value_repr

    name: str
    choices: Mapping[str, PolicyEntry] = attrs.field(eq=False)

    def option(self, rule_id: str, env: Mapping[str, Any] | None = None,
               facts: Mapping[str, bool] | None = None) -> str | None:
        """The option chosen at a decision point of ``rule_id`` (None if the policy is silent).

        An entry that depends on the data needs the state at the decision
        point: ``env`` (guard names to values) or ``facts`` (guard text to
        whether it holds, as a merged graph's decide node records them).

        Examples
        --------
        >>> from escalation_rules import load_protocol
        >>> policy = resolve_policy(load_protocol("spec/nct07117175"))
        >>> policy.option("top-pass"), policy.option("fill-complete", {"n": 17, "tox": 6})
        ('fill', 'no-mtd')
        >>> policy.option("fill-complete", facts={"3 * tox <= n": True})
        'declare'
        """
        entry = self.choices.get(rule_id)
        if not isinstance(entry, ConditionalChoice):
            return entry
        if facts is not None:
            return entry.choose(lambda guard: facts[guard.text])
        if env is not None:
            return entry.choose(lambda guard: guard.evaluate(env))
        raise ValueError(f"the policy's entry for {rule_id!r} depends on the data")

    def guards(self) -> dict[str, tuple[Guard, ...]]:
        """Decision rule id to the guards its entry reads (only entries that depend on the data)."""
        return {rule_id: entry.guards for rule_id, entry in self.choices.items()
                if isinstance(entry, ConditionalChoice)}


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


def _collect(problems: list[tuple[str, str]]) -> Callable[[str, str], None]:
    def report(path: str, message: str) -> None:
        problems.append((path, message))
    return report


def _check(protocol: Protocol, mapping: Mapping[str, Any], source: str) -> dict[str, PolicyEntry]:
    rules = {rule.id: rule for rule in _decision_rules(protocol)}
    choices = dict(protocol.default_policy)
    for rule_id, value in mapping.items():
        if rule_id not in rules:
            known = ", ".join(rules) or "none: the protocol has no decision points"
            raise EscalationRulesError(f"{source}: {rule_id}: not a decision rule of {protocol.id} (known: {known})")
        if isinstance(value, ConditionalChoice):
            value = policy_entry_data(value)
        problems: list[tuple[str, str]] = []
        entry = read_policy_entry(value, rules[rule_id], protocol.cap, protocol.doses, _collect(problems))
        if problems:
            path, message = problems[0]
            raise EscalationRulesError(f"{source}: {rule_id}{path}: {message}")
        assert entry is not None
        choices[rule_id] = entry
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
        raise EscalationRulesError(f"{path}: expected a table of rule id = option id or cases (got {got})")
    return data


def resolve_policy(protocol: Protocol, policy: str | Mapping[str, Any] | Policy | None = None) -> Policy:
    """The policy named by ``policy`` for ``protocol``.

    Parameters
    ----------
    policy : str, mapping, Policy or None
        A built-in name (see :data:`BUILTIN_POLICIES`; None means
        ``default``), the path of a TOML/JSON file mapping rule ids to option
        ids (or to lists of ``{when, option}`` cases), or such a mapping.

    Raises
    ------
    EscalationRulesError
        For an unknown name or file, a rule that is not a decision point of
        the protocol, an option the rule does not offer, a guard that does not
        parse, or cases that leave some state uncovered.
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
