"""Trial histories: outcome strings (the field's notation) and their JSON form.

An outcome string lists cohorts as a dose level (1-based) followed by one
letter per patient, ``N`` for no DLT and ``T`` for a DLT: ``"1NNN 2NTN"``.
Spaces between cohorts are optional.  As an extension, a decision people took
at a decision point may be written in brackets, ``"1N [escalate] 2NNN"``;
outcome strings without brackets imply the decision from the next cohort's
dose.

The JSON form is a list (or an object with a ``"history"`` list) of entries,
each either a cohort ``{"dose": 2, "outcomes": "NTN"}`` or a decision
``{"decision": "escalate", "signoff": ["investigator", "sponsor"]}``.

Examples
--------
>>> parse_outcomes("1NNN 2NTN")
(Cohort(dose=1, outcomes='NNN'), Cohort(dose=2, outcomes='NTN'))
>>> format_history(parse_outcomes("1N [escalate] 2NNN"))
'1N [escalate] 2NNN'
>>> parse_outcomes("1NXN")
Traceback (most recent call last):
...
escalation_rules.errors.HistoryError: cohort 1 ('1NXN'): unknown symbol 'X' (expected N for no DLT or T for a DLT)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import attrs

from ._attrs import value_repr
from ._limits import MAX_HISTORY_CHARS, MAX_HISTORY_ENTRIES, MAX_INT_DIGITS, show
from .errors import HistoryError

__all__ = ["Choice", "Cohort", "Entry", "format_history", "parse_history_json", "parse_outcomes"]


@attrs.frozen
class Cohort:
    """Patients treated at one dose, in order: ``N`` no DLT, ``T`` DLT."""

    __repr__ = value_repr

    dose: int
    outcomes: str

    @property
    def dlts(self) -> int:
        """Number of DLTs in the cohort."""
        return self.outcomes.count("T")

    def __str__(self) -> str:
        return f"{self.dose}{self.outcomes}"


@attrs.frozen
class Choice:
    """A decision people took at a decision point (an option id), and who signed it."""

    __repr__ = value_repr

    option: str
    signoff: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return f"[{self.option}]"


Entry = Cohort | Choice

# The last alternative takes trailing white space in one match (without it, every position of the
# trailing run would be rescanned: quadratic time).
_TOKEN = re.compile(
    r"\s*(?:(?P<cohort>(?P<dose>[0-9]+)(?P<out>[A-Za-z]+))|\[(?P<choice>[^\]\s]+)\]|(?P<bad>\S+)|(?P<end>\Z))")


def parse_outcomes(text: str) -> tuple[Entry, ...]:
    """Parse an outcome string into entries.

    Raises
    ------
    HistoryError
        Naming the cohort (1-based entry number) and what is wrong with it.
    """
    if not isinstance(text, str):
        raise HistoryError(f"expected an outcome string such as '1NNN 2NTN' (got {show(text)})")
    _check_size(len(text.strip()), "history")
    entries: list[Entry] = []
    for match in _TOKEN.finditer(text):
        if match.lastgroup == "end" or match.lastgroup is None:
            continue
        index = len(entries) + 1
        _check_entries(index, "history")
        if match.group("bad"):
            bad = match.group("bad")
            raise HistoryError(
                f"cohort {index} ({show(bad)}): expected a dose level followed by N/T letters, "
                f"such as '2NTN', or a decision in brackets such as '[escalate]'",
                index,
            )
        if match.group("choice"):
            entries.append(Choice(match.group("choice")))
            continue
        token = match.group("cohort")
        dose = _dose_level(match.group("dose"), f"cohort {index} ({show(token)})", index)
        outcomes = match.group("out")
        for symbol in outcomes:
            if symbol not in "NT":
                hint = " (symbols are upper case)" if symbol in "nt" else ""
                raise HistoryError(
                    f"cohort {index} ({show(token)}): unknown symbol {symbol!r} "
                    f"(expected N for no DLT or T for a DLT){hint}",
                    index,
                )
        entries.append(Cohort(dose, outcomes))
    return tuple(entries)


def parse_history_json(data: Any, source: str = "history") -> tuple[Entry, ...]:
    """Parse the JSON form of a history (already decoded, or as a JSON string).

    Examples
    --------
    >>> parse_history_json('[{"dose": 1, "outcomes": "N"}, {"decision": "escalate"}]')
    (Cohort(dose=1, outcomes='N'), Choice(option='escalate', signoff=None))
    """
    if isinstance(data, str):
        _check_size(len(data), source)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise HistoryError(f"{source}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
        except RecursionError:
            raise HistoryError(f"{source}: JSON nested too deeply to read") from None
        except ValueError:  # an integer past Python's 4,300-digit conversion limit
            raise HistoryError(f"{source}: a number in the JSON is too large (at most {MAX_INT_DIGITS} digits)") \
                from None
    if isinstance(data, dict):
        unknown = set(data) - {"history", "protocol"}
        if unknown:
            raise HistoryError(f"{source}: unknown key {sorted(unknown)[0]!r} (expected 'history')")
        if "history" not in data:
            raise HistoryError(f"{source}: expected a list of entries or an object with 'history'")
        data = data["history"]
    if isinstance(data, str):
        return parse_outcomes(data)
    if not isinstance(data, list):
        raise HistoryError(f"{source}: expected a list of entries (got {type(data).__name__})")
    _check_entries(len(data), source)
    entries: list[Entry] = []
    for i, raw in enumerate(data):
        where = f"{source}[{i}]"
        index = i + 1
        if not isinstance(raw, dict):
            raise HistoryError(f"{where}: expected an object (got {show(raw)})", index)
        if "decision" in raw:
            unknown = set(raw) - {"decision", "signoff", "note"}
            if unknown:
                key = sorted(unknown)[0]
                raise HistoryError(f"{where}.{key}: unknown key (expected decision, signoff, note)", index)
            option = raw["decision"]
            if not isinstance(option, str) or not option:
                raise HistoryError(f"{where}.decision: expected an option id (got {show(option)})", index)
            signoff = raw.get("signoff")
            if signoff is not None and (not isinstance(signoff, list) or not all(isinstance(s, str) for s in signoff)):
                raise HistoryError(f"{where}.signoff: expected a list of role names (got {show(signoff)})", index)
            entries.append(Choice(option, tuple(signoff) if signoff is not None else None))
            continue
        unknown = set(raw) - {"dose", "outcomes", "note"}
        if unknown:
            raise HistoryError(f"{where}.{sorted(unknown)[0]}: unknown key (expected dose, outcomes, note)", index)
        dose = raw.get("dose")
        if not isinstance(dose, int) or isinstance(dose, bool):
            raise HistoryError(f"{where}.dose: expected a dose level as an integer (got {show(dose)})", index)
        if dose.bit_length() > 64:
            raise HistoryError(f"{where}.dose: dose level too large (got {show(dose)})", index)
        outcomes = raw.get("outcomes")
        if not isinstance(outcomes, str) or not outcomes:
            raise HistoryError(f"{where}.outcomes: expected a string of N/T letters (got {show(outcomes)})", index)
        for symbol in outcomes:
            if symbol not in "NT":
                raise HistoryError(f"{where}.outcomes: cohort {index}: unknown symbol {symbol!r} "
                                   f"(expected N for no DLT or T for a DLT)", index)
        entries.append(Cohort(dose, outcomes))
    return tuple(entries)


def _check_size(length: int, source: str) -> None:
    if length > MAX_HISTORY_CHARS:
        raise HistoryError(f"{source}: longer than the limit of {MAX_HISTORY_CHARS} characters (got {length})")


def _check_entries(count: int, source: str) -> None:
    if count > MAX_HISTORY_ENTRIES:
        raise HistoryError(f"{source}: more than the limit of {MAX_HISTORY_ENTRIES} entries")


def _dose_level(digits: str, where: str, index: int) -> int:
    if len(digits.lstrip("0")) > MAX_INT_DIGITS:
        raise HistoryError(f"{where}: dose level too large (at most {MAX_INT_DIGITS} digits, got {len(digits)})", index)
    return int(digits)


def format_history(entries: Sequence[Entry]) -> str:
    """Write entries back as an outcome string (decisions in brackets)."""
    return " ".join(str(e) for e in entries)
