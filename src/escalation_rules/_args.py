"""Checks of the arguments of the public functions: one place that names the Python argument.

Every public function takes a protocol in any of its forms (a :class:`Protocol`,
a :class:`CompiledProtocol` or the protocol mapping a TOML file holds) and a
history as an outcome string or as entries (objects or the documented JSON
entries).  Anything else is a ``TypeError`` naming the argument.

Examples
--------
>>> as_protocol(None)
Traceback (most recent call last):
...
TypeError: protocol: expected a Protocol, a CompiledProtocol or a protocol mapping (got NoneType)
>>> as_entries([{"dose": 1, "outcomes": "N"}])
(Cohort(dose=1, outcomes='N'),)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._limits import MAX_HISTORY_CHARS
from .graph import as_protocol
from .history import Choice, Cohort, Entry, parse_history_json, parse_outcomes

__all__ = ["as_entries", "as_protocol", "check_count"]


def as_entries(value: Any, name: str = "history") -> tuple[Entry, ...]:
    """History entries from an outcome string, a list of entries or of their JSON objects, or ``{"history": ...}``."""
    if isinstance(value, str):
        return parse_outcomes(value)
    if isinstance(value, Mapping):
        return parse_history_json(dict(value), name)
    if isinstance(value, list | tuple):
        if all(_well_typed(e) for e in value):
            return tuple(value)  # the engine checks each entry as it replays it
        return parse_history_json([_json_entry(e) for e in value], name)  # as their JSON objects
    raise TypeError(f"{name}: expected an outcome string such as '1NNN 2NTN' or a list of entries "
                    f"(got {type(value).__name__})")


def _well_typed(entry: Any) -> bool:
    if type(entry) is Cohort:
        return (type(entry.dose) is int and entry.dose.bit_length() <= 64 and type(entry.outcomes) is str
                and len(entry.outcomes) <= MAX_HISTORY_CHARS)
    if type(entry) is Choice:
        return type(entry.option) is str and (entry.signoff is None or (
            isinstance(entry.signoff, tuple) and all(type(role) is str for role in entry.signoff)))
    return False


def _json_entry(entry: Any) -> Any:
    if isinstance(entry, Cohort):
        return {"dose": entry.dose, "outcomes": entry.outcomes}
    if isinstance(entry, Choice):
        signoff = entry.signoff
        listed = list(signoff) if isinstance(signoff, tuple | list) else signoff
        return {"decision": entry.option, **({"signoff": listed} if signoff is not None else {})}
    return entry


def check_count(value: Any, name: str, low: int = 0, optional: bool = False) -> None:
    """Refuse ``value`` unless it is an integer of at least ``low`` (or None when ``optional``).

    Examples
    --------
    >>> check_count(-1, "max_depth", optional=True)
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: max_depth: expected an integer of 0 or more (got -1)
    """
    from ._limits import show
    from .errors import EscalationRulesError

    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an integer (got {type(value).__name__})")
    if value < low:
        raise EscalationRulesError(f"{name}: expected an integer of {low} or more (got {show(value)})")
