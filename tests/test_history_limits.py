"""Histories past the documented limits, absurd numbers and long white space are refused or read fast (issue 13)."""

from __future__ import annotations

import json

import pytest

from escalation_rules import builtin_design, decide
from escalation_rules._limits import MAX_HISTORY_CHARS, MAX_HISTORY_ENTRIES
from escalation_rules.errors import HistoryError
from escalation_rules.history import parse_history_json, parse_outcomes


def test_white_space_around_a_history_is_read_in_linear_time() -> None:
    """90,000 spaces before or after a history parse at once (quadratic scanning took minutes)."""
    spaces = " " * (MAX_HISTORY_CHARS - 10)
    assert len(parse_outcomes("1NNN" + spaces)) == 1
    assert len(parse_outcomes(spaces + "1NNN")) == 1
    assert decide(builtin_design("3+3-deescalate", 3), "1NNN" + spaces).action == "treat"


@pytest.mark.parametrize("text", ["1" * 5000 + "N", "1NNN " + "9" * 16 + "N"])
def test_an_absurd_dose_level_is_refused_naming_the_cohort(text: str) -> None:
    """A dose level past 15 digits is a HistoryError for its cohort, not Python's 4,300-digit ValueError."""
    with pytest.raises(HistoryError, match="dose level too large"):
        parse_outcomes(text)


def test_a_history_past_the_length_limit_is_refused() -> None:
    """An outcome string longer than the limit is refused before it is scanned."""
    with pytest.raises(HistoryError, match=f"longer than the limit of {MAX_HISTORY_CHARS} characters"):
        parse_outcomes("1N " * MAX_HISTORY_CHARS)


def test_a_history_past_the_entry_limit_is_refused() -> None:
    """More entries than the limit are refused, in text and in JSON."""
    with pytest.raises(HistoryError, match=f"more than the limit of {MAX_HISTORY_ENTRIES} entries"):
        parse_outcomes("1N" * (MAX_HISTORY_ENTRIES + 1))
    with pytest.raises(HistoryError, match=f"more than the limit of {MAX_HISTORY_ENTRIES} entries"):
        parse_history_json([{"dose": 1, "outcomes": "N"}] * (MAX_HISTORY_ENTRIES + 1))


@pytest.mark.parametrize(("data", "message"), [
    ('[{"dose": ' + "1" * 5000 + ', "outcomes": "N"}]', "a number in the JSON is too large"),
    ([{"dose": 10**5000, "outcomes": "N"}], r"history\[0\].dose: dose level too large \(got an integer of 5001"),
    ("[" * 100_000 + "]" * 100_000, "longer than the limit"),
    ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
    ([[10**5000]], r"history\[0\]: expected an object \(got a list holding a number too large to print\)"),
])
def test_absurd_json_histories_are_refused(data: object, message: str) -> None:
    """Huge integers and deep nesting in a JSON history are one-line HistoryErrors."""
    with pytest.raises(HistoryError, match=message):
        parse_history_json(data)


def test_json_history_entries_round_trip() -> None:
    """The documented JSON entries parse as they are written."""
    entries = parse_history_json(json.dumps([{"dose": 1, "outcomes": "NNN"}]))
    assert str(entries[0]) == "1NNN"
