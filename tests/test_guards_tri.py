"""The criteria dialect of the guard language: Kleene logic, quantities, dates and calendar windows."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escalation_rules.errors import GuardSyntaxError
from escalation_rules.guards import (
    BOOL,
    DATE,
    EVENTS,
    INT,
    NUMBER,
    CodeType,
    parse_criterion,
    parse_guard,
    quantity_type,
    unit_factor,
)

TRI = (True, False, None)
BOOLS = {"a": BOOL, "b": BOOL, "c": BOOL}
# Kleene's order false < unknown < true: 'and' is the minimum, 'or' the maximum.
RANK = {False: 0, None: 1, True: 2}
BY_RANK = {0: False, 1: None, 2: True}


def kleene_and(*xs: Any) -> Any:
    return BY_RANK[min(RANK[x] for x in xs)]


def kleene_or(*xs: Any) -> Any:
    return BY_RANK[max(RANK[x] for x in xs)]


def kleene_not(x: Any) -> Any:
    return None if x is None else not x


def ev(text: str, names: dict[str, Any], **env: Any) -> Any:
    return parse_criterion(text, names).evaluate(env)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(TRI, TRI)))
def test_kleene_truth_tables(a: Any, b: Any) -> None:
    """and, or, not, implies, all_of and any_of follow Kleene's strong three-valued tables."""
    assert ev("a and b", BOOLS, a=a, b=b) is kleene_and(a, b)
    assert ev("a or b", BOOLS, a=a, b=b) is kleene_or(a, b)
    assert ev("not a", BOOLS, a=a) is kleene_not(a)
    assert ev("implies(a, b)", BOOLS, a=a, b=b) is kleene_or(kleene_not(a), b)
    assert ev("all_of(a, b)", BOOLS, a=a, b=b) is kleene_and(a, b)
    assert ev("any_of(a, b)", BOOLS, a=a, b=b) is kleene_or(a, b)


@pytest.mark.parametrize("values", list(itertools.product(TRI, TRI, TRI)))
@pytest.mark.parametrize("need", [0, 1, 2, 3, 4])
def test_at_least_is_true_false_or_unknown_as_the_counts_allow(values: tuple[Any, ...], need: int) -> None:
    """at_least(n, ...) is true once n are true, false once n can no longer be reached, else unknown."""
    yes = sum(v is True for v in values)
    maybe = sum(v is None for v in values)
    expected = True if yes >= need else False if yes + maybe < need else None
    a, b, c = values
    assert ev(f"at_least({need}, a, b, c)", BOOLS, a=a, b=b, c=c) is expected


def expressions() -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["a", "b", "c", "true", "false"])
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(lambda x: f"not ({x})", inner),
        st.builds(lambda x, y: f"({x}) and ({y})", inner, inner),
        st.builds(lambda x, y: f"({x}) or ({y})", inner, inner),
        st.builds(lambda x, y: f"implies({x}, {y})", inner, inner),
    ), max_leaves=8)


@given(expressions(), expressions(), st.sampled_from(TRI), st.sampled_from(TRI), st.sampled_from(TRI))
def test_de_morgan_laws_hold_in_three_valued_logic(x: str, y: str, a: Any, b: Any, c: Any) -> None:
    """not (x and y) equals not x or not y, and not (x or y) equals not x and not y, for every valuation."""
    env = {"a": a, "b": b, "c": c}
    assert ev(f"not (({x}) and ({y}))", BOOLS, **env) is ev(f"not ({x}) or not ({y})", BOOLS, **env)
    assert ev(f"not (({x}) or ({y}))", BOOLS, **env) is ev(f"not ({x}) and not ({y})", BOOLS, **env)


@given(expressions(), st.sampled_from(TRI), st.sampled_from(TRI), st.sampled_from(TRI), st.data())
def test_filling_unknowns_never_changes_a_definite_result(x: str, a: Any, b: Any, c: Any, data: st.DataObject) -> None:
    """Monotonicity: replacing unknown inputs by true or false keeps a true or false result as it was."""
    before = ev(x, BOOLS, a=a, b=b, c=c)
    filled = {k: (v if v is not None else data.draw(st.booleans())) for k, v in {"a": a, "b": b, "c": c}.items()}
    after = ev(x, BOOLS, **filled)
    assert after is not None
    if before is not None:
        assert after is before


def test_quantities_convert_when_parsed() -> None:
    """A literal in another unit of the same dimension is converted once, at parse time."""
    names = {"crcl": quantity_type("mL/min")}
    g = parse_criterion("crcl >= 3.6 'L/h'", names)  # 3.6 L/h is 60 mL/min
    assert g.evaluate({"crcl": 60.0}) is True
    assert g.evaluate({"crcl": 59.9}) is False
    assert g.evaluate({"crcl": None}) is None
    assert parse_criterion("3.6 'L/h' <= crcl", names).evaluate({"crcl": 61.0}) is True


def test_two_items_of_one_dimension_compare_after_conversion() -> None:
    """Two quantity items in different units of one dimension are compared in the left unit."""
    names = {"a": quantity_type("kg"), "b": quantity_type("lb")}
    assert ev("a > b", names, a=1.0, b=2.0) is True
    assert ev("a > b", names, a=1.0, b=2.3) is False


@pytest.mark.parametrize(("text", "message"), [
    ("crcl > 60 'kg'", "compares mL/min ([length] ** 3 / [time]) with kg ([mass])"),
    ("crcl > 60", "compares a quantity in mL/min with an integer; write the unit"),
    ("spo2 > 92", "compares a quantity in % with an integer"),
    ("crcl > 60 'mL/mn'", "unknown unit 'mL/mn'"),
    ("sex == 'femal'", "'femal' is not one of the codes female, male"),
    ("sex < 'female'", "cannot order codes"),
    ("one_of(flag, 'x')", "'one_of' expects a code first"),
    ("within(when, 2.5 'months', anchor)", "whole number of days, weeks, months or years"),
    ("within(when, 3 'seconds', anchor)", "whole number of days, weeks, months or years"),
    ("within(when, 3, anchor)", "expects a duration"),
    ("within(flag, 3 'months', anchor)", "expects a date or an event list first"),
    ("ratio_to_uln(crcl) <= 3", "expects the name of a measurement with a reference range"),
    ("at_least(x, flag)", "expects a whole number first"),
    ("crcl + 1 > 2", "expects plain numbers"),
    ("flag and 3", "'and' expects a boolean (got an integer)"),
    ("nope(flag)", "unknown function 'nope'"),
    ("ecog", "expected a boolean criterion (got an integer)"),
    ("flag and missing", "unknown name 'missing'"),
    ("when < flag", "compares a date with a boolean"),
    ("events == events", "cannot compare event lists"),
])
def test_criteria_are_refused_when_parsed(text: str, message: str) -> None:
    """Unknown units, different dimensions, bare numbers against quantities and bad calls are refused at load."""
    names = {"crcl": quantity_type("mL/min"), "spo2": quantity_type("%"),
             "sex": CodeType(frozenset({"female", "male"})), "flag": BOOL, "when": DATE, "anchor": DATE,
             "ecog": INT, "events": EVENTS}
    with pytest.raises(GuardSyntaxError) as err:
        parse_criterion(text, names)
    assert message in str(err.value)


def test_ratio_to_uln_and_lln_use_the_measurements_own_range() -> None:
    """Thresholds as multiples of the normal limits read the measurement's own range; a missing range is unknown."""
    names = {"alt": quantity_type("U/L", ranged=True)}
    g = parse_criterion("ratio_to_uln(alt) <= 3", names)
    assert g.evaluate({"alt": 120.0, "alt.uln": 40.0, "alt.lln": 7.0}) is True
    assert g.evaluate({"alt": 121.0, "alt.uln": 40.0, "alt.lln": 7.0}) is False
    assert g.evaluate({"alt": 121.0, "alt.uln": None, "alt.lln": None}) is None
    assert g.names == frozenset({"alt", "alt.uln"})
    assert ev("ratio_to_lln(alt) >= 1", names, **{"alt": 7.0, "alt.lln": 7.0, "alt.uln": 40.0}) is True


D = dt.date


@pytest.mark.parametrize(("event", "duration", "anchor", "expected"), [
    (D(2025, 12, 10), "3 'months'", D(2026, 3, 10), True),  # exactly three calendar months
    (D(2025, 12, 9), "3 'months'", D(2026, 3, 10), False),
    (D(2026, 2, 28), "1 'month'", D(2026, 3, 31), True),  # 31 March minus a month clips to 28 February
    (D(2026, 2, 27), "1 'month'", D(2026, 3, 31), False),
    (D(2024, 2, 29), "1 'year'", D(2025, 2, 28), True),  # leap day
    (D(2026, 2, 26), "2 'weeks'", D(2026, 3, 12), True),
    (D(2026, 2, 25), "14 'days'", D(2026, 3, 12), False),
    (D(2026, 3, 13), "2 'weeks'", D(2026, 3, 12), False),  # after the anchor is not 'before'
])
def test_within_counts_calendar_units(event: dt.date, duration: str, anchor: dt.date, expected: bool) -> None:
    """within() windows use calendar days, weeks, months and years ending at the anchor."""
    names = {"when": DATE, "anchor": DATE}
    assert ev(f"within(when, {duration}, anchor)", names, when=event, anchor=anchor) is expected


def test_event_lists_windows_and_ongoing() -> None:
    """Event lists overlap windows by their spans; an open end is ongoing; an empty list is false without anchor."""
    names = {"ev": EVENTS, "anchor": DATE}
    course = ((D(2026, 1, 1), D(2026, 2, 20)),)
    ongoing = ((D(2025, 1, 1), None),)
    assert ev("within(ev, 2 'weeks', anchor)", names, ev=course, anchor=D(2026, 3, 6)) is True
    assert ev("within(ev, 2 'weeks', anchor)", names, ev=course, anchor=D(2026, 3, 7)) is False
    assert ev("within(ev, 2 'weeks', anchor)", names, ev=ongoing, anchor=D(2026, 3, 7)) is True
    assert ev("ongoing(ev, anchor)", names, ev=course, anchor=D(2026, 3, 7)) is False
    assert ev("ongoing(ev, anchor)", names, ev=ongoing, anchor=D(2026, 3, 7)) is True
    assert ev("within(ev, 2 'weeks', anchor)", names, ev=(), anchor=None) is False
    assert ev("within(ev, 2 'weeks', anchor)", names, ev=course, anchor=None) is None
    assert ev("exists(ev)", names, ev=None) is None
    assert ev("within_after(ev, 12 'months', anchor)", names, ev=((D(2025, 11, 18), D(2025, 11, 18)),),
              anchor=D(2024, 11, 18)) is True


def test_codes_and_one_of() -> None:
    """Codes compare by equality with their allowed literals; unknown stays unknown."""
    names = {"dx": CodeType(frozenset({"aml", "b_all_lbl", "other"}))}
    assert ev("one_of(dx, 'aml', 'b_all_lbl')", names, dx="aml") is True
    assert ev("one_of(dx, 'aml', 'b_all_lbl')", names, dx="other") is False
    assert ev("dx != 'aml'", names, dx=None) is None


def test_numbers_and_arithmetic_propagate_unknown() -> None:
    """Arithmetic and min/max on unknown numbers give unknown; decimals are allowed in criteria."""
    names = {"x": NUMBER, "n": INT}
    assert ev("x * 2 >= 2.5", names, x=1.25) is True
    assert ev("x * 2 >= 2.5", names, x=None) is None
    assert ev("max(n, 3) == 3", names, n=None) is None
    assert ev("n / 2 > 1", names, n=3) is True


def test_core_dialect_is_unchanged() -> None:
    """The dose-escalation dialect still refuses decimals, strings and division, with its old messages."""
    names = {"n": INT}
    with pytest.raises(GuardSyntaxError, match=r"unexpected character '\.' at column 7"):
        parse_guard("n >= 1.5", names)
    with pytest.raises(GuardSyntaxError, match="unexpected character"):
        parse_guard("n == 'x'", names)
    with pytest.raises(GuardSyntaxError, match="unexpected character '/'"):
        parse_guard("n / 2 == 1", names)
    assert parse_guard("n == 3 and not false", names).evaluate({"n": 3}) is True


def test_unit_factor_through_molar_mass() -> None:
    """Creatinine converts between mg/dL and µmol/L through its molar mass (88.4 µmol/L per mg/dL)."""
    assert unit_factor("mg/dL", "µmol/L", "113.12 g/mol") == pytest.approx(88.4, rel=1e-3)
    assert unit_factor("umol/L", "mg/dL", "113.12 g/mol") == pytest.approx(1 / 88.4, rel=1e-3)
    with pytest.raises(GuardSyntaxError):
        unit_factor("mg/dL", "µmol/L")
