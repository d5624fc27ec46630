"""Tests of the public Hypothesis strategies (escalation_rules.strategies)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import (
    DESIGNS,
    Choice,
    Cohort,
    CompiledProtocol,
    EscalationRulesError,
    HistoryError,
    builtin_design,
    compile_protocol,
    decide,
    load_protocol,
    parse_history_json,
    parse_outcomes,
)
from escalation_rules.history import format_history
from escalation_rules.strategies import (
    INVALID_KINDS,
    builtin_designs,
    histories,
    invalid_histories,
    invalid_kinds,
    outcome_strings,
    partial_histories,
)


class Case:
    """A compiled protocol with a short name for Hypothesis' reports."""

    def __init__(self, name: str, compiled: CompiledProtocol) -> None:
        self.name = name
        self.compiled = compiled

    def __repr__(self) -> str:
        return self.name


CASES = [Case(f"{name} --doses {k}", compile_protocol(builtin_design(name, k)))
         for name in sorted(DESIGNS) for k in range(1, 7)]
CASES.append(Case("spec/nct07117175", compile_protocol(load_protocol("spec/nct07117175"))))
NCT = CASES[-1]

FEW = settings(max_examples=150, deadline=None)

#: What the refusal of each kind of invalid history says.
MESSAGES = {
    "wrong start dose": r"the first cohort must be at the starting dose \d+",
    "skipped dose": r"skips dose \d+; .* sends the next patients to dose \d+",
    "too many patients": r"more patients than the rules allow: after \d+, rule '[^']+'",
    "dose not permitted": r"dose \d+ is not permitted here; .* sends the next patients to dose \d+",
    "dose not offered": r"at the decision point of rule '[^']+' .* none treats at dose \d+",
    "cohort after stop": r"the trial stopped after cohort \d+",
    "unknown symbol": r"unknown symbol '[^NT]' \(expected N for no DLT or T for a DLT\)",
    "unknown dose": r"unknown dose \d+ \(the ladder has doses 1 to \d+\)",
    "unknown option": r"rule '[^']+' offers .* \(got '[^']+'\)",
    "no decision open": r"no decision is open here",
    "incomplete cohort": r"cohort \d+ at dose \d+ is incomplete .* not yet determined",
}


def cases_and(strategy: Any) -> st.SearchStrategy[tuple[Case, Any]]:
    """Draw a case, then a value of ``strategy(case.compiled)``."""
    return st.sampled_from(CASES).flatmap(lambda case: strategy(case.compiled).map(lambda h: (case, h)))


def as_json(entries: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The JSON form of entries, written by hand."""
    return [{"dose": e.dose, "outcomes": e.outcomes} if isinstance(e, Cohort)
            else {"decision": e.option, "signoff": list(e.signoff or ())} for e in entries]


# ---------------------------------------------------------------- valid histories


@FEW
@given(cases_and(histories))
def test_complete_histories_are_accepted_and_end_in_a_stop(pair: tuple[Case, str]) -> None:
    """Every complete history is accepted by decide and ends with the trial stopped."""
    case, history = pair
    decision = decide(case.compiled, history)
    assert decision.action == "stop"
    assert not decision.determined_early


@FEW
@given(cases_and(lambda c: histories(c, complete=False)))
def test_incomplete_histories_are_accepted(pair: tuple[Case, str]) -> None:
    """Every history cut anywhere is accepted by decide."""
    case, history = pair
    decide(case.compiled, history)


@FEW
@given(cases_and(lambda c: histories(c, max_cohorts=2)))
def test_max_cohorts_bounds_the_number_of_cohorts(pair: tuple[Case, str]) -> None:
    """A history drawn with max_cohorts=2 has at most two cohorts and is accepted."""
    case, history = pair
    assert sum(isinstance(e, Cohort) for e in parse_outcomes(history)) <= 2
    decide(case.compiled, history)


@FEW
@given(cases_and(lambda c: histories(c, form="entries", complete=False)))
def test_entries_json_and_outcome_string_forms_agree(pair: tuple[Case, tuple[Any, ...]]) -> None:
    """The entries form, its JSON form and its outcome string all get the same decision."""
    case, entries = pair
    assert all(isinstance(e, Cohort | Choice) for e in entries)
    by_entries = decide(case.compiled, entries)
    assert by_entries.history == format_history(entries)
    assert decide(case.compiled, parse_history_json(as_json(entries))) == by_entries
    assert decide(case.compiled, format_history(entries)) == by_entries


@FEW
@given(cases_and(lambda c: histories(c, form="json")))
def test_json_form_is_read_by_parse_history_json(pair: tuple[Case, list[dict[str, Any]]]) -> None:
    """The JSON form, sign-offs included, passes parse_history_json and decide."""
    case, data = pair
    assert decide(case.compiled, parse_history_json(data)).action == "stop"


@FEW
@given(cases_and(lambda c: histories(c, complete=False)))
def test_brackets_appear_only_where_the_next_dose_does_not_imply_the_decision(pair: tuple[Case, str]) -> None:
    """Removing any bracketed decision from a drawn outcome string changes or breaks the history."""
    case, history = pair
    entries = parse_outcomes(history)
    before = decide(case.compiled, history)
    for i, entry in enumerate(entries):
        if isinstance(entry, Choice):
            shorter = format_history(entries[:i] + entries[i + 1:])
            try:
                after = decide(case.compiled, shorter)
            except HistoryError:
                continue
            assert after != before, f"[{entry.option}] is implied in {history!r}"


@FEW
@given(cases_and(partial_histories))
def test_partial_histories_are_accepted(pair: tuple[Case, str]) -> None:
    """Every partial history is accepted; an open decision asks for the rest of the cohort at its dose."""
    case, history = pair
    decision = decide(case.compiled, history)
    entries = parse_outcomes(history)
    if entries and isinstance(entries[-1], Cohort) and "complete the cohort" in decision.reason:
        assert decision.action == "treat" and decision.dose == entries[-1].dose


def test_partial_histories_include_incomplete_cohorts() -> None:
    """Some partial history of the 3+3 ends in an incomplete cohort still open."""
    design = CASES[[c.name for c in CASES].index("3+3-deescalate --doses 3")].compiled

    @settings(max_examples=200, deadline=None)
    @given(partial_histories(design))
    def find_open(history: str) -> None:
        assert "complete the cohort" not in decide(design, history).reason

    with pytest.raises(AssertionError):
        find_open()


# ---------------------------------------------------------------- invalid histories


@settings(max_examples=300, deadline=None)
@given(cases_and(invalid_histories))
def test_invalid_histories_are_refused_with_a_message_of_their_kind(pair: tuple[Case, tuple[str, str]]) -> None:
    """Every invalid history is refused with a HistoryError that names its last entry and fits its kind."""
    case, (history, kind) = pair
    with pytest.raises(HistoryError) as info:
        decide(case.compiled, history)
    message = str(info.value)
    assert re.search(MESSAGES[kind], message), (kind, message)
    written = len(re.findall(r"\d+[A-Za-z]+|\[[^\]\s]+\]", history))
    assert message.startswith(f"cohort {written} ("), message
    assert info.value.cohort == written


@pytest.mark.parametrize("kind", sorted(INVALID_KINDS))
def test_each_kind_of_invalid_history_is_refused_under_nct(kind: str) -> None:
    """Under NCT07117175 every kind arises and is refused with its message."""

    @settings(max_examples=25, deadline=None)
    @given(invalid_histories(NCT.compiled, kinds=[kind]))
    def check(pair: tuple[str, str]) -> None:
        history, drawn = pair
        assert drawn == kind
        with pytest.raises(HistoryError, match=MESSAGES[kind]):
            decide(NCT.compiled, history)

    check()


def test_kinds_that_can_arise_depend_on_the_ladder() -> None:
    """Skipping needs three doses, a wrong start two, and option kinds need decision points."""
    one = invalid_kinds(builtin_design("3+3-escalate-only", doses=1))
    two = invalid_kinds(builtin_design("3+3-escalate-only", doses=2))
    three = invalid_kinds(builtin_design("3+3-deescalate", doses=3))
    assert "wrong start dose" not in one and "wrong start dose" in two
    assert "skipped dose" not in two and "skipped dose" in three
    assert "unknown option" not in three and "dose not offered" not in three
    assert set(invalid_kinds(NCT.compiled)) == set(INVALID_KINDS)


def test_unknown_or_impossible_kinds_are_refused() -> None:
    """Asking for a kind that does not exist, or cannot arise, is refused with one line."""
    design = builtin_design("3+3-escalate-only", doses=1)
    with pytest.raises(EscalationRulesError, match=r"unknown kind 'typo' \(known: wrong start dose, "):
        invalid_histories(design, kinds=["typo"])
    with pytest.raises(EscalationRulesError, match=r"'skipped dose' cannot arise under 3\+3-escalate-only"):
        invalid_histories(design, kinds=["skipped dose"])
    with pytest.raises(EscalationRulesError, match="expected at least one kind"):
        invalid_histories(design, kinds=[])


# ---------------------------------------------------------------- outcome strings and the rest


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CASES), outcome_strings())
def test_outcome_strings_are_decided_or_refused_with_a_history_error(case: Case, text: str) -> None:
    """parse_outcomes and decide either succeed or raise HistoryError on any outcome-string-like text."""
    try:
        entries = parse_outcomes(text)
    except HistoryError as err:
        assert "\n" not in str(err)
        return
    try:
        decide(case.compiled, entries)
    except HistoryError as err:
        assert "\n" not in str(err)


@FEW
@given(outcome_strings(syntax_errors=False))
def test_outcome_strings_without_syntax_errors_parse_and_round_trip(text: str) -> None:
    """Without syntax errors every drawn string parses, and its normal form parses to the same entries."""
    entries = parse_outcomes(text)
    assert parse_outcomes(format_history(entries)) == entries


@settings(max_examples=20, deadline=None)
@given(builtin_designs(names=["3+3-deescalate", "accelerated-titration"], min_doses=2, max_doses=4))
def test_builtin_designs_draws_the_named_designs(protocol: Any) -> None:
    """builtin_designs draws the named designs with ladders in the range asked for."""
    assert protocol.id in ("3+3-deescalate", "accelerated-titration")
    assert 2 <= len(protocol.doses) <= 4


def test_bad_arguments_are_refused() -> None:
    """An unknown form, design name or dose range is refused with one line naming it."""
    design = builtin_design("3+3-escalate-only", doses=2)
    with pytest.raises(EscalationRulesError, match=r"form: expected one of outcomes, entries, json \(got 'xml'\)"):
        histories(design, form="xml")
    with pytest.raises(EscalationRulesError, match=r"unknown design 'x'"):
        builtin_designs(names=["x"])
    with pytest.raises(EscalationRulesError, match=r"min_doses <= max_doses"):
        builtin_designs(min_doses=3, max_doses=2)
    with pytest.raises(EscalationRulesError, match="expected a Protocol or CompiledProtocol"):
        histories("3+3-escalate-only")  # type: ignore[arg-type]


def test_import_without_hypothesis_names_the_extra() -> None:
    """Importing the module without Hypothesis raises ImportError telling how to install the extra."""
    code = (
        "import sys\n"
        "sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import escalation_rules.strategies\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install -e '.[strategies]'" in out
