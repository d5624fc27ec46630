"""Tests of trial histories: outcome strings and their JSON form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escalation_rules.errors import HistoryError
from escalation_rules.history import Choice, Cohort, format_history, parse_history_json, parse_outcomes


def test_outcome_string_lists_cohorts() -> None:
    """``1NNN 2NTN`` is two cohorts: dose 1 without DLT, dose 2 with one DLT."""
    entries = parse_outcomes("1NNN 2NTN")
    assert entries == (Cohort(1, "NNN"), Cohort(2, "NTN"))
    assert [c.dlts for c in entries if isinstance(c, Cohort)] == [0, 1]


def test_spaces_between_cohorts_are_optional() -> None:
    """Cohorts may be written without spaces, and extra white space is ignored."""
    assert parse_outcomes("1NNN2NTN") == parse_outcomes("  1NNN   2NTN ")


def test_multi_digit_dose_levels() -> None:
    """A dose level may have several digits."""
    assert parse_outcomes("12TN") == (Cohort(12, "TN"),)


def test_empty_history() -> None:
    """An empty or blank string is the history before the first patient."""
    assert parse_outcomes("") == ()
    assert parse_outcomes("   ") == ()


def test_decisions_in_brackets() -> None:
    """A decision people took is written in brackets between cohorts."""
    assert parse_outcomes("1N [escalate] 2NNN") == (Cohort(1, "N"), Choice("escalate"), Cohort(2, "NNN"))


def test_format_history_writes_entries_back() -> None:
    """Entries format back to the normalised outcome string."""
    assert format_history(parse_outcomes("1N[escalate]2NNN")) == "1N [escalate] 2NNN"
    assert str(Cohort(3, "NTT")) == "3NTT"
    assert str(Choice("fill", ("investigator",))) == "[fill]"


@pytest.mark.parametrize(
    ("text", "cohort", "message"),
    [
        ("1NXN", 1, "cohort 1 ('1NXN'): unknown symbol 'X' (expected N for no DLT or T for a DLT)"),
        ("1NNN 2nnn", 2, "cohort 2 ('2nnn'): unknown symbol 'n' (expected N for no DLT or T for a DLT) "
                         "(symbols are upper case)"),
        ("1NNN xyz", 2, "cohort 2 ('xyz'): expected a dose level followed by N/T letters"),
        ("1NNN 2", 2, "cohort 2 ('2'): expected a dose level followed by N/T letters"),
        ("NNN", 1, "cohort 1 ('NNN'): expected a dose level"),
        ("1N [esc alate]", 2, "cohort 2 ('[esc'): expected a dose level"),
        ("1N [escalate] 2Q", 3, "cohort 3 ('2Q'): unknown symbol 'Q'"),
    ],
)
def test_outcome_string_errors_name_the_cohort(text: str, cohort: int, message: str) -> None:
    """A malformed outcome string is refused naming the 1-based entry and what is wrong."""
    with pytest.raises(HistoryError) as caught:
        parse_outcomes(text)
    assert caught.value.cohort == cohort
    assert message in str(caught.value)


def test_outcome_string_must_be_text() -> None:
    """A history that is not a string is refused."""
    with pytest.raises(HistoryError, match="expected an outcome string"):
        parse_outcomes(["1NNN"])  # type: ignore[arg-type]


def test_json_list_of_entries() -> None:
    """The JSON form lists cohorts and decisions with their sign-offs."""
    data = [{"dose": 1, "outcomes": "N", "note": "first"},
            {"decision": "escalate", "signoff": ["investigator", "sponsor"], "note": "meeting"},
            {"dose": 2, "outcomes": "NTN"}]
    assert parse_history_json(data) == (Cohort(1, "N"), Choice("escalate", ("investigator", "sponsor")),
                                        Cohort(2, "NTN"))


def test_json_text_and_object_forms() -> None:
    """JSON text, an object with ``history``, and an outcome string inside it all parse."""
    entries = (Cohort(1, "NNN"), Cohort(2, "NTN"))
    as_list = [{"dose": 1, "outcomes": "NNN"}, {"dose": 2, "outcomes": "NTN"}]
    assert parse_history_json(json.dumps(as_list)) == entries
    assert parse_history_json({"history": as_list, "protocol": "3+3-deescalate"}) == entries
    assert parse_history_json('{"history": "1NNN 2NTN"}') == entries


def test_json_decision_without_signoff() -> None:
    """A decision without a ``signoff`` key records no sign-off (None), not an empty one."""
    assert parse_history_json([{"decision": "fill"}]) == (Choice("fill", None),)
    assert parse_history_json([{"decision": "fill", "signoff": []}]) == (Choice("fill", ()),)


@pytest.mark.parametrize(
    ("data", "cohort", "message"),
    [
        ("[{", None, "history: not valid JSON:"),
        ({"entries": []}, None, "history: unknown key 'entries' (expected 'history')"),
        ({"protocol": "x"}, None, "history: expected a list of entries or an object with 'history'"),
        (3, None, "history: expected a list of entries (got int)"),
        ([[1, "NNN"]], 1, "history[0]: expected an object"),
        ([{"dose": 1, "outcomes": "NNN", "dlts": 0}], 1, "history[0].dlts: unknown key"),
        ([{"dose": 1, "outcomes": "NNN"}, {"decision": "go", "by": "me"}], 2, "history[1].by: unknown key"),
        ([{"decision": 3}], 1, "history[0].decision: expected an option id"),
        ([{"decision": ""}], 1, "history[0].decision: expected an option id"),
        ([{"decision": "go", "signoff": "sponsor"}], 1, "history[0].signoff: expected a list of role names"),
        ([{"decision": "go", "signoff": [1]}], 1, "history[0].signoff: expected a list of role names"),
        ([{"dose": "1", "outcomes": "NNN"}], 1, "history[0].dose: expected a dose level as an integer"),
        ([{"dose": True, "outcomes": "NNN"}], 1, "history[0].dose: expected a dose level as an integer"),
        ([{"outcomes": "NNN"}], 1, "history[0].dose: expected a dose level as an integer"),
        ([{"dose": 1, "outcomes": ""}], 1, "history[0].outcomes: expected a string of N/T letters"),
        ([{"dose": 1, "outcomes": 3}], 1, "history[0].outcomes: expected a string of N/T letters"),
        ([{"dose": 1, "outcomes": "N 2N"}], 1, "history[0].outcomes: cohort 1: unknown symbol ' '"),
    ],
)
def test_json_errors_name_the_entry(data: object, cohort: int | None, message: str) -> None:
    """A malformed JSON history is refused naming the entry's JSON path and what is wrong."""
    with pytest.raises(HistoryError) as caught:
        parse_history_json(data)
    assert caught.value.cohort == cohort
    assert message in str(caught.value)


def test_json_errors_name_the_source() -> None:
    """The ``source`` argument (e.g. a file name) starts every JSON error message."""
    with pytest.raises(HistoryError, match=r"^trial\.json\[0\]\.dose:"):
        parse_history_json([{"dose": None, "outcomes": "N"}], "trial.json")


def test_json_unknown_symbol_names_the_entry() -> None:
    """An unknown symbol in the second JSON entry is reported as cohort 2, at history[1].outcomes."""
    with pytest.raises(HistoryError) as caught:
        parse_history_json([{"dose": 1, "outcomes": "NNN"}, {"dose": 2, "outcomes": "NXN"}])
    assert caught.value.cohort == 2
    assert "history[1].outcomes" in str(caught.value)


_cohort = st.builds(Cohort, st.integers(min_value=1, max_value=40), st.text(alphabet="NT", min_size=1, max_size=8))
_choice = st.builds(Choice, st.sampled_from(["escalate", "terminate", "fill", "add-group", "reduce"]))
_entries = st.lists(st.one_of(_cohort, _choice), max_size=8).map(tuple)


@given(_entries)
def test_format_then_parse_round_trips(entries: tuple[Cohort | Choice, ...]) -> None:
    """Invariant: parsing the formatted outcome string gives back the same entries."""
    assert parse_outcomes(format_history(entries)) == entries


@given(_entries)
def test_json_form_matches_outcome_string(entries: tuple[Cohort | Choice, ...]) -> None:
    """Invariant: the JSON form of a history parses to the same entries as its outcome string."""
    data = [{"dose": e.dose, "outcomes": e.outcomes} if isinstance(e, Cohort) else {"decision": e.option}
            for e in entries]
    assert parse_history_json(data) == parse_outcomes(format_history(entries))


def test_only_ascii_digits_name_a_dose() -> None:
    """A full-width digit is not a dose level."""
    with pytest.raises(HistoryError, match="cohort 1"):
        parse_outcomes("１N")


def test_json_nested_too_deeply_is_refused() -> None:
    """Pathologically nested JSON gives a one-line refusal, not a RecursionError."""
    with pytest.raises(HistoryError, match="nested too deeply"):
        parse_history_json("[" * 100_000)
