"""Tests of the guard language (rule dialect): parsing, precedence, type checks, errors, evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escalation_rules.errors import EscalationRulesError, GuardSyntaxError
from escalation_rules.guards import (
    BOOL,
    INT,
    Arith,
    BoolOp,
    Call,
    Compare,
    Literal,
    Name,
    Not,
    parse_guard,
    parse_int_expression,
)
from escalation_rules.protocol import GUARD_NAMES

NAMES = {"n": INT, "tox": INT, "remaining": INT, "a": BOOL, "b": BOOL, "c": BOOL}


def test_guard_evaluates_against_counts() -> None:
    """A 3+3 guard is true exactly on the counts it names."""
    g = parse_guard("n == 6 and tox <= 1", NAMES)
    assert g.evaluate({"n": 6, "tox": 1}) is True
    assert g.evaluate({"n": 6, "tox": 2}) is False
    assert g.evaluate({"n": 3, "tox": 0}) is False


def test_guard_keeps_text_type_and_names() -> None:
    """A guard keeps its (stripped) source text, its type and the names it reads."""
    g = parse_guard("  n == 3 and not a  ", NAMES)
    assert g.text == "n == 3 and not a"
    assert str(g) == "n == 3 and not a"
    assert g.type == BOOL
    assert g.names == frozenset({"n", "a"})


def test_and_binds_tighter_than_or() -> None:
    """``a or b and c`` parses as ``a or (b and c)``."""
    tree = parse_guard("a or b and c", NAMES).tree
    assert tree == BoolOp("or", (Name("a"), BoolOp("and", (Name("b"), Name("c")))))


def test_not_binds_tighter_than_and() -> None:
    """``not a and b`` parses as ``(not a) and b``."""
    tree = parse_guard("not a and b", NAMES).tree
    assert tree == BoolOp("and", (Not(Name("a")), Name("b")))
    assert parse_guard("not a and b", NAMES).evaluate({"a": False, "b": False}) is False


def test_not_takes_a_whole_comparison() -> None:
    """``not n == 3`` negates the comparison, since comparison binds tighter than ``not``."""
    tree = parse_guard("not n == 3", NAMES).tree
    assert tree == Not(Compare("==", Name("n"), Literal(3)))


def test_comparison_binds_looser_than_arithmetic() -> None:
    """``n + 1 == 2 * tox`` compares two sums."""
    tree = parse_guard("n + 1 == 2 * tox", NAMES).tree
    assert tree == Compare("==", Arith("+", Name("n"), Literal(1)), Arith("*", Literal(2), Name("tox")))


def test_multiplication_binds_tighter_than_addition() -> None:
    """``1 + 2 * 3`` is 7, and ``(1 + 2) * 3`` is 9."""
    assert parse_int_expression("1 + 2 * 3", {}).evaluate({}) == 7
    assert parse_int_expression("(1 + 2) * 3", {}).evaluate({}) == 9


def test_subtraction_is_left_associative() -> None:
    """``10 - 3 - 2`` is ``(10 - 3) - 2``."""
    assert parse_int_expression("10 - 3 - 2", {}).evaluate({}) == 5


def test_unary_minus() -> None:
    """Unary minus is ``0 - x`` and binds tighter than multiplication."""
    assert parse_int_expression("-2 * 3", {}).evaluate({}) == -6
    assert parse_int_expression("--4", {}).evaluate({}) == 4
    assert parse_int_expression("-n", {"n": INT}).tree == Arith("-", Literal(0), Name("n"))


def test_boolean_literals() -> None:
    """``true`` and ``false`` are boolean constants."""
    assert parse_guard("true or false", {}).evaluate({}) is True
    assert parse_guard("a == false", NAMES).evaluate({"a": False}) is True


@pytest.mark.parametrize(
    ("text", "env", "value"),
    [
        ("min(3, remaining)", {"remaining": 2}, 2),
        ("min(3, remaining)", {"remaining": 7}, 3),
        ("max(n, tox, 2)", {"n": 1, "tox": 0}, 2),
        ("max(n, tox, 2)", {"n": 5, "tox": 0}, 5),
        ("min(max(n, 1), 4) + 1", {"n": 9}, 5),
        ("6 - min(n, 6)", {"n": 4}, 2),
    ],
)
def test_min_and_max(text: str, env: dict[str, int], value: int) -> None:
    """``min`` and ``max`` take one or more integers, nest, and join arithmetic."""
    assert parse_int_expression(text, NAMES).evaluate(env) == value


def test_call_tree() -> None:
    """A call parses into a Call node with its arguments."""
    assert parse_int_expression("min(3, n)", NAMES).tree == Call("min", (Literal(3), Name("n")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n + ", "expected a value at column 5 in 'n + ' (got the end)"),
        ("n == 3 && tox == 0", "unexpected character '&' at column 8"),
        ("(n == 3", "expected ')' at column 8"),
        ("n == 3)", "expected an operator or the end at column 7"),
        ("", "expected an expression at column 1"),
        ("n == and", "expected a value at column 6"),
        ("1 < n < 3", "expected an operator or the end at column 7"),
        ("min(3 n)", "expected ',' or ')' at column 7"),
        ("n = 3", "at column 3"),
    ],
)
def test_syntax_errors_name_the_column(text: str, message: str) -> None:
    """A syntax error says what was expected and at which column (1-based)."""
    with pytest.raises(GuardSyntaxError) as caught:
        parse_guard(text, NAMES)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_syntax_error_keeps_text_and_position() -> None:
    """GuardSyntaxError carries the guard text and the 0-based offset of the problem."""
    with pytest.raises(GuardSyntaxError) as caught:
        parse_guard("n == 3 && tox", NAMES)
    assert caught.value.text == "n == 3 && tox"
    assert caught.value.position == 7


def test_guard_errors_are_value_errors() -> None:
    """Guard errors can be caught as EscalationRulesError or as ValueError."""
    with pytest.raises(EscalationRulesError):
        parse_guard("n +", NAMES)
    with pytest.raises(ValueError):
        parse_guard("n +", NAMES)


def test_unknown_name_lists_the_known_ones() -> None:
    """An unknown name is refused with the names the protocol offers."""
    with pytest.raises(GuardSyntaxError, match=r"unknown name 'dlts' \(known: .*\btox\b"):
        parse_guard("dlts >= 2", GUARD_NAMES)


def test_unknown_function_is_refused() -> None:
    """Only ``min`` and ``max`` may be called."""
    with pytest.raises(GuardSyntaxError, match=r"unknown function 'abs' \(known: max, min\)"):
        parse_int_expression("abs(n)", NAMES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n and tox == 0", "'and' expects booleans on both sides"),
        ("a or n", "'or' expects booleans on both sides"),
        ("not n", "'not' expects a boolean"),
        ("n == a", "'==' compares a int with a bool"),
        ("a < 3", "'<' expects integers (got bool and int)"),
        ("a + 1 == 2", "'+' expects integers"),
        ("min(a, 1) == 1", "'min' expects integers"),
        ("n + 1", "expected a bool expression (got a int)"),
    ],
)
def test_type_errors(text: str, message: str) -> None:
    """Operators refuse operands of the wrong type, and a guard must be boolean."""
    with pytest.raises(GuardSyntaxError) as caught:
        parse_guard(text, NAMES)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value)


def test_integer_expression_must_be_integer() -> None:
    """A cohort-size expression that is boolean is refused."""
    with pytest.raises(GuardSyntaxError, match="expected a int expression"):
        parse_int_expression("n == 3", NAMES)


def test_keywords_are_not_values() -> None:
    """A keyword where a value is expected is a syntax error, not a name."""
    with pytest.raises(GuardSyntaxError, match="expected a value"):
        parse_guard("and == 1", NAMES)


def test_non_string_guard_is_refused() -> None:
    """A guard given as a number (not text) is refused."""
    with pytest.raises(GuardSyntaxError, match="expected an expression as a string"):
        parse_guard(3, NAMES)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "n.__class__", "[n]", "n if a else tox"])
def test_python_is_not_evaluated(text: str) -> None:
    """Python syntax outside the grammar is refused, never evaluated."""
    with pytest.raises(GuardSyntaxError):
        parse_guard(text, NAMES)


def test_all_protocol_names_type_check() -> None:
    """Every name a protocol offers parses with its declared type."""
    for name, kind in GUARD_NAMES.items():
        text = f"{name} == {name}"
        assert parse_guard(text, GUARD_NAMES).names == frozenset({name})
        assert kind in (INT, BOOL)


_small = st.integers(min_value=-20, max_value=20)


@given(_small, _small, _small, st.sampled_from(["+", "-", "*"]), st.sampled_from(["+", "-", "*"]))
def test_arithmetic_precedence_matches_python(a: int, b: int, c: int, op1: str, op2: str) -> None:
    """Invariant: ``a op1 b op2 c`` evaluates as Python's precedence and left associativity say."""
    text = f"({a}) {op1} ({b}) {op2} ({c})"
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    multiplication_first = op2 == "*" and op1 != "*"
    expected = ops[op1](a, b * c) if multiplication_first else ops[op2](ops[op1](a, b), c)
    assert parse_int_expression(text, {}).evaluate({}) == expected


@given(st.booleans(), st.booleans(), st.booleans())
def test_boolean_precedence_matches_python(a: bool, b: bool, c: bool) -> None:
    """Invariant: ``not``/``and``/``or`` combine as in Python for every assignment."""
    env = {"a": a, "b": b, "c": c}
    assert parse_guard("a or b and c", NAMES).evaluate(env) == (a or (b and c))
    assert parse_guard("not a or b and not c", NAMES).evaluate(env) == ((not a) or (b and not c))
    assert parse_guard("not (a or b) and c", NAMES).evaluate(env) == ((not (a or b)) and c)


def test_deeply_nested_guards_are_refused_not_overflowed() -> None:
    """Hundreds of nested parentheses are refused with a clear message instead of a RecursionError."""
    with pytest.raises(GuardSyntaxError, match="too deeply nested"):
        parse_guard("(" * 300 + "n == 1" + ")" * 300, NAMES)


def test_every_recorded_unit_answer_is_what_pint_answers() -> None:
    """The unit table (escalation_rules._units, written by scripts/units_table.py) agrees with pint entry by entry."""
    from escalation_rules import _units, guards

    assert _units.UNITS and _units.FACTORS
    for text, answer in _units.UNITS.items():
        assert guards._pint_parse_unit(text) == answer, text
    for (source, target, molar_mass), factor in _units.FACTORS.items():
        assert guards._pint_unit_factor(source, target, molar_mass) == factor, (source, target, molar_mass)
