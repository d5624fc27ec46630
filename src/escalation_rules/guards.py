"""The guard language: small expressions over the counts a rule reads.

A guard is text such as ``"n == 6 and tox <= 1 and not has_next"``.  It is
tokenised and parsed here into a tree of frozen nodes, type-checked against
the names a protocol offers, and interpreted by walking the tree.  Nothing is
ever handed to Python's ``eval``.

Grammar (lowest precedence first)::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
    sum      := product (("+" | "-") product)*
    product  := unary ("*" unary)*
    unary    := "-" unary | atom
    atom     := INTEGER | "true" | "false" | NAME | NAME "(" expr ("," expr)* ")"
              | "(" expr ")"

    # criteria dialect only (parse_criterion):
    product  := unary (("*" | "/") unary)*
    atom     := ... | DECIMAL | NUMBER "'" UNIT "'"      (a quantity: 60 'mL/min')
              | "'" TEXT "'"                              (a code: 'aml')

Types are ``int`` and ``bool``; ``and``/``or``/``not`` take booleans,
arithmetic and ordering take integers, ``==``/``!=`` take two of the same
type.  The functions are ``min`` and ``max`` over integers.

The same tokenizer, parser and tree serve a second dialect, *criteria*
(:func:`parse_criterion`), used for eligibility criteria.  It adds decimal
numbers, quoted strings (codes such as ``'aml'``), quantities written as a
number followed by a quoted unit (``60 'mL/min'``, ``3 'months'``), and
more types: ``number``, codes, dates, event lists and quantities with a unit
dimension (:class:`QuantityType`).  Its booleans are three-valued (Kleene):
``None`` is *unknown*, missing data is unknown, ``false and unknown`` is
false, ``true or unknown`` is true, and every operator passes unknown on
where the answer depends on it.  Units are converted when the criterion is
parsed (comparing different dimensions is refused then); evaluation only
multiplies by a pre-computed factor.  Functions of the criteria dialect:
``all_of``, ``any_of``, ``implies``, ``at_least(n, ...)``, ``one_of(code,
'a', ...)``, ``ratio_to_uln(m)``, ``ratio_to_lln(m)``, ``within(events,
duration, anchor)`` (some event touches the window of ``duration`` up to
``anchor``), ``within_after(events, duration, anchor)`` (the window after
``anchor``), ``ongoing(events, anchor)``, ``exists(events)``, ``min``,
``max``.  Durations count calendar days, weeks, months and years.

Examples
--------
>>> g = parse_guard("n == 3 and tox <= 1", {"n": INT, "tox": INT})
>>> g.evaluate({"n": 3, "tox": 1})
True
>>> sorted(g.names)
['n', 'tox']
>>> parse_guard("dlts >= 2", {"n": INT, "tox": INT})
Traceback (most recent call last):
...
escalation_rules.errors.GuardSyntaxError: unknown name 'dlts' (known: n, tox)
"""

from __future__ import annotations

import datetime as _dt
import functools
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from . import _units
from ._attrs import value_repr
from ._limits import MAX_GUARD_CHARS, MAX_INT_DIGITS, show
from .errors import GuardSyntaxError

__all__ = [
    "BOOL",
    "DATE",
    "EVENTS",
    "INT",
    "NUMBER",
    "CodeType",
    "Guard",
    "QuantityType",
    "parse_criterion",
    "parse_guard",
    "parse_int_expression",
    "parse_unit",
    "quantity_type",
    "snap",
    "unit_factor",
]

INT = "int"
BOOL = "bool"
#: Types of the criteria dialect (see :func:`parse_criterion`).
NUMBER = "number"
DATE = "date"
EVENTS = "events"
_STRING = "string"  # a quoted literal before it meets a code

_TOKEN = re.compile(
    r"\s*(?:(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>==|!=|<=|>=|<|>|\+|-|\*|\(|\)|,)|(?P<bad>\S)|(?P<end>\Z))"
)
_TOKEN_CRITERIA = re.compile(
    r"\s*(?:(?P<float>[0-9]+\.[0-9]+)|(?P<int>[0-9]+)|(?P<string>'[^']*')|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|,)|(?P<bad>\S)|(?P<end>\Z))"
)
# Each pattern ends with an alternative for the end of the text, so that trailing white space is
# consumed by one match instead of being rescanned from every position (which took time quadratic in it).
_KEYWORDS = {"and", "or", "not", "true", "false"}
_FUNCTIONS = {"min": min, "max": max}


@attrs.frozen
class Literal:
    """A constant: an integer or a boolean (criteria also: a decimal number or a quoted string)."""

    __repr__ = value_repr

    value: int | bool | float | str


@attrs.frozen
class QuantityLiteral:
    """A number with a unit, written ``60 'mL/min'`` (criteria dialect only)."""

    __repr__ = value_repr

    value: float
    unit: str


@attrs.frozen
class Name:
    """A name the protocol provides (``n``, ``tox``, ``has_next``…)."""

    __repr__ = value_repr

    name: str


@attrs.frozen
class Not:
    """Logical negation."""

    __repr__ = value_repr

    operand: Node


@attrs.frozen
class BoolOp:
    """``and`` / ``or`` over two or more operands."""

    __repr__ = value_repr

    op: str
    operands: tuple[Node, ...]


@attrs.frozen
class Compare:
    """A single comparison between two operands."""

    __repr__ = value_repr

    op: str
    left: Node
    right: Node


@attrs.frozen
class Arith:
    """Integer arithmetic: ``+``, ``-``, ``*`` (and unary minus as ``0 - x``)."""

    __repr__ = value_repr

    op: str
    left: Node
    right: Node


@attrs.frozen
class Call:
    """A call of one of the built-in functions (``min``, ``max``)."""

    __repr__ = value_repr

    function: str
    args: tuple[Node, ...]


Node = Literal | QuantityLiteral | Name | Not | BoolOp | Compare | Arith | Call


_MAX_NESTING = 40  # parentheses; deeper would exhaust the recursive descent
_MAX_TOKENS = 2000


class _Parser:
    def __init__(self, text: str, criteria: bool = False) -> None:
        self.text = text
        self.criteria = criteria
        self.tokens: list[tuple[str, str, int]] = []
        if len(text.strip()) > MAX_GUARD_CHARS:
            raise GuardSyntaxError(f"expression too long: expected at most {MAX_GUARD_CHARS} characters "
                                   f"(got {len(text.strip())}) in {show(text)}", text[:MAX_GUARD_CHARS])
        for match in (_TOKEN_CRITERIA if criteria else _TOKEN).finditer(text):
            kind = match.lastgroup
            if kind is None or kind == "end":  # trailing white space
                continue
            value = match.group(kind)
            start = match.start(kind)
            if kind == "bad":
                raise GuardSyntaxError(
                    f"unexpected character {value!r} at column {start + 1} in {show(text)}",
                    text,
                    start,
                )
            if kind in ("int", "float") and len(value.lstrip("0")) > MAX_INT_DIGITS:
                raise GuardSyntaxError(
                    f"number too large at column {start + 1} (at most {MAX_INT_DIGITS} digits, got {len(value)}) "
                    f"in {show(text)}",
                    text,
                    start,
                )
            self.tokens.append((kind, value, start))
        self.tokens.append(("end", "", len(text)))
        self.pos = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, expected: str) -> GuardSyntaxError:
        kind, value, start = self.peek()
        got = "the end" if kind == "end" else repr(value)
        return GuardSyntaxError(
            f"expected {expected} at column {start + 1} in {self.text!r} (got {got})",
            self.text,
            start,
        )

    def accept(self, value: str) -> bool:
        kind, token, _ = self.peek()
        if kind in ("op", "name") and token == value:
            self.pos += 1
            return True
        return False

    def parse(self) -> Node:
        depth = deepest = 0
        for kind, value, _ in self.tokens:
            if kind == "op" and value in "()":
                depth += 1 if value == "(" else -1
                deepest = max(deepest, depth)
        if deepest > _MAX_NESTING or len(self.tokens) > _MAX_TOKENS:
            raise GuardSyntaxError(f"expression too deeply nested or too long (at most {_MAX_NESTING} levels of "
                                   f"parentheses and {_MAX_TOKENS} tokens) in {self.text[:40]!r}...", self.text)
        if self.peek()[0] == "end":
            raise self.error("an expression")
        node = self.parse_or()
        if self.peek()[0] != "end":
            raise self.error("an operator or the end")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.accept("or"):
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.accept("and"):
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def parse_not(self) -> Node:
        if self.accept("not"):
            return Not(self.parse_not())
        return self.parse_compare()

    def parse_compare(self) -> Node:
        left = self.parse_sum()
        kind, value, _ = self.peek()
        if kind == "op" and value in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.parse_sum()
            return Compare(value, left, right)
        return left

    def parse_sum(self) -> Node:
        node = self.parse_product()
        while True:
            kind, value, _ = self.peek()
            if kind == "op" and value in ("+", "-"):
                self.take()
                node = Arith(value, node, self.parse_product())
            else:
                return node

    def parse_product(self) -> Node:
        node = self.parse_unary()
        while True:
            if self.accept("*"):
                node = Arith("*", node, self.parse_unary())
            elif self.criteria and self.accept("/"):
                node = Arith("/", node, self.parse_unary())
            else:
                return node

    def parse_unary(self) -> Node:
        if self.accept("-"):
            return Arith("-", Literal(0), self.parse_unary())
        return self.parse_atom()

    def parse_atom(self) -> Node:
        kind, value, _ = self.peek()
        if kind in ("int", "float"):
            self.take()
            number: int | float = int(value) if kind == "int" else float(value)
            if self.peek()[0] == "string":
                return QuantityLiteral(float(number), self.take()[1][1:-1].strip())
            return Literal(number)
        if kind == "string":
            self.take()
            return Literal(value[1:-1])
        if kind == "name":
            if value in ("true", "false"):
                self.take()
                return Literal(value == "true")
            if value in _KEYWORDS:
                raise self.error("a value")
            self.take()
            if self.accept("("):
                args = [self.parse_or()]
                while self.accept(","):
                    args.append(self.parse_or())
                if not self.accept(")"):
                    raise self.error("',' or ')'")
                return Call(value, tuple(args))
            return Name(value)
        if self.accept("("):
            node = self.parse_or()
            if not self.accept(")"):
                raise self.error("')'")
            return node
        raise self.error("a value")


def _type_of(node: Node, names: Mapping[str, str], text: str) -> str:
    def fail(message: str) -> GuardSyntaxError:
        return GuardSyntaxError(f"{message} in {text!r}", text)

    if isinstance(node, Literal):
        return BOOL if isinstance(node.value, bool) else INT
    if isinstance(node, Name):
        if node.name not in names:
            known = ", ".join(sorted(names))
            raise GuardSyntaxError(f"unknown name {node.name!r} (known: {known})", text)
        return names[node.name]
    if isinstance(node, Not):
        if _type_of(node.operand, names, text) != BOOL:
            raise fail("'not' expects a boolean")
        return BOOL
    if isinstance(node, BoolOp):
        for operand in node.operands:
            if _type_of(operand, names, text) != BOOL:
                raise fail(f"'{node.op}' expects booleans on both sides")
        return BOOL
    if isinstance(node, Compare):
        left = _type_of(node.left, names, text)
        right = _type_of(node.right, names, text)
        if node.op in ("==", "!="):
            if left != right:
                raise fail(f"'{node.op}' compares a {left} with a {right}")
        elif left != INT or right != INT:
            raise fail(f"'{node.op}' expects integers (got {left} and {right})")
        return BOOL
    if isinstance(node, Arith):
        if _type_of(node.left, names, text) != INT or _type_of(node.right, names, text) != INT:
            raise fail(f"'{node.op}' expects integers")
        return INT
    if isinstance(node, Call):
        if node.function not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise fail(f"unknown function {node.function!r} (known: {known})")
        for arg in node.args:
            if _type_of(arg, names, text) != INT:
                raise fail(f"'{node.function}' expects integers")
        return INT
    raise AssertionError(node)  # pragma: no cover


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_ARITH: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}


def _closure(node: Node) -> Callable[[Mapping[str, Any]], Any]:
    """Turn a checked tree into nested closures: an interpreter without a walk per call."""
    if isinstance(node, Literal):
        value = node.value
        return lambda env: value
    if isinstance(node, Name):
        name = node.name
        return lambda env: env[name]
    if isinstance(node, Not):
        inner = _closure(node.operand)
        return lambda env: not inner(env)
    if isinstance(node, BoolOp):
        parts = tuple(_closure(o) for o in node.operands)
        if node.op == "and":
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)
    if isinstance(node, Compare):
        op, left, right = _COMPARE[node.op], _closure(node.left), _closure(node.right)
        return lambda env: op(left(env), right(env))
    if isinstance(node, Arith):
        aop, aleft, aright = _ARITH[node.op], _closure(node.left), _closure(node.right)
        return lambda env: aop(aleft(env), aright(env))
    if isinstance(node, Call):
        function = _FUNCTIONS[node.function]
        args = tuple(_closure(a) for a in node.args)
        return lambda env: function(a(env) for a in args)
    raise AssertionError(node)  # pragma: no cover


def _names_in(node: Node) -> frozenset[str]:
    if isinstance(node, Name):
        return frozenset({node.name})
    if isinstance(node, Not):
        return _names_in(node.operand)
    if isinstance(node, BoolOp | Call):
        children = node.operands if isinstance(node, BoolOp) else node.args
        return frozenset().union(*(_names_in(c) for c in children))
    if isinstance(node, Compare | Arith):
        return _names_in(node.left) | _names_in(node.right)
    return frozenset()


@attrs.frozen
class Guard:
    """A parsed, type-checked expression.

    Attributes
    ----------
    text : str
        The source text, as written in the protocol.
    tree : Node
        The parsed expression.
    type : str
        ``"bool"`` or ``"int"``.
    names : frozenset of str
        The names the expression reads.
    """

    __repr__ = value_repr

    text: str
    tree: Node
    type: str
    names: frozenset[str]
    _run: Callable[[Mapping[str, Any]], Any] = attrs.field(eq=False, repr=False)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Evaluate against a mapping from names to values.

        Examples
        --------
        >>> parse_int_expression("min(3, remaining)", {"remaining": INT}).evaluate({"remaining": 2})
        2
        """
        return self._run(env)

    def __str__(self) -> str:
        return self.text


def _build(text: str, names: Mapping[str, str], expected: str) -> Guard:
    if not isinstance(text, str):
        raise GuardSyntaxError(f"expected an expression as a string (got {show(text)})", show(text))
    tree = _Parser(text).parse()
    kind = _type_of(tree, names, text)
    if kind != expected:
        raise GuardSyntaxError(f"expected a {expected} expression (got a {kind}) in {text!r}", text)
    return Guard(text.strip(), tree, kind, _names_in(tree), _closure(tree))


def parse_guard(text: str, names: Mapping[str, str]) -> Guard:
    """Parse a boolean guard over ``names`` (a mapping from name to ``INT`` or ``BOOL``).

    Raises
    ------
    GuardSyntaxError
        On a syntax error, an unknown name or a type mismatch.

    Examples
    --------
    >>> parse_guard("not has_next", {"has_next": BOOL}).evaluate({"has_next": False})
    True
    >>> parse_guard("n + ", {"n": INT})
    Traceback (most recent call last):
    ...
    escalation_rules.errors.GuardSyntaxError: expected a value at column 5 in 'n + ' (got the end)
    """
    return _build(text, names, BOOL)


def parse_int_expression(text: str, names: Mapping[str, str]) -> Guard:
    """Parse an integer expression (used for cohort sizes such as ``"min(3, remaining)"``).

    Examples
    --------
    >>> parse_int_expression("remaining", {"remaining": INT}).evaluate({"remaining": 7})
    7
    """
    return _build(text, names, INT)


# ------------------------------------------------------------------ criteria dialect
#
# Everything below serves eligibility criteria: three-valued booleans
# (``None`` is unknown), units, dates and event lists.  It shares the
# tokenizer, parser and tree above; only type checking and evaluation differ,
# and they happen in one pass that returns typed closures, so that unit
# conversion factors are fixed when the criterion is parsed.


@attrs.frozen
class QuantityType:
    """The type of a quantity: values are plain floats in ``unit``.

    Attributes
    ----------
    unit : str
        The unit every value of this type is held in (pint's spelling).
    dimension : str
        Its dimensionality, e.g. ``"[length] ** 3 / [time]"``.
    ranged : bool
        Whether values come with a reference range (``ratio_to_uln`` needs one).
    """

    __repr__ = value_repr

    unit: str
    dimension: str
    ranged: bool = False

    def __str__(self) -> str:
        return f"quantity in {self.unit} ({self.dimension})"


@attrs.frozen
class CodeType:
    """The type of a coded value; ``values`` are the codes it may take."""

    __repr__ = value_repr

    values: frozenset[str]

    def __str__(self) -> str:
        return f"code ({', '.join(sorted(self.values))})"


@functools.cache
def _registry() -> Any:
    import pint  # imported on first use: the dose-escalation guards never need it

    registry: Any = pint.UnitRegistry()
    for setup in _REGISTRY_SETUP:
        setup(registry)
    return registry


#: Functions run on the unit registry when it is first made (the eligibility screener adds UCUM's atoms).
_REGISTRY_SETUP: list[Callable[[Any], None]] = []


@functools.cache
def parse_unit(text: str) -> tuple[str, str]:
    """Check a unit and return its canonical spelling and dimensionality.

    Raises
    ------
    GuardSyntaxError
        If pint does not know the unit, or it has an offset (°C) or a scale factor.

    Examples
    --------
    >>> parse_unit("mL/min")
    ('milliliter / minute', '[length] ** 3 / [time]')
    >>> parse_unit("%")
    ('percent', 'dimensionless')
    >>> parse_unit("mg/dLL")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.GuardSyntaxError: unknown unit 'mg/dLL'
    """
    known = _units.UNITS.get(text)
    if known is not None:  # recorded from pint for the shipped units: no pint import at start-up
        return known
    return _pint_parse_unit(text)


def _pint_parse_unit(text: str) -> tuple[str, str]:
    """:func:`parse_unit` as pint answers it."""
    ureg = _registry()
    try:
        unit = ureg.Unit(text) if text.strip() else ureg.dimensionless
        if ureg.Quantity(0.0, unit).to_base_units().magnitude != 0:
            raise GuardSyntaxError(f"unit {text!r} has an offset (not a ratio scale)", text)
    except GuardSyntaxError:
        raise
    except Exception:  # pint raises several kinds (undefined unit, syntax, scale factor)
        raise GuardSyntaxError(f"unknown unit {text!r}", text) from None
    return str(unit), str(unit.dimensionality)


@functools.cache
def unit_factor(source: str, target: str, molar_mass: str | None = None) -> float:
    """The factor that converts a value in ``source`` into ``target``.

    With ``molar_mass`` (e.g. ``"113.12 g/mol"``), a mass concentration
    converts to a substance concentration and back.  Results are cached, so a
    record's units cost one dictionary look-up each after the first time.

    Raises
    ------
    GuardSyntaxError
        If a unit is unknown or the dimensions differ.

    Examples
    --------
    >>> round(unit_factor("lb", "kg"), 6)
    0.453592
    >>> round(unit_factor("mg/dL", "umol/L", "113.12 g/mol"), 2)
    88.4
    >>> unit_factor("kg", "mL/min")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.GuardSyntaxError: cannot convert kg ([mass]) to mL/min ([length] ** 3 / [time])
    """
    known = _units.FACTORS.get((source, target, molar_mass))
    if known is not None:  # recorded from pint for the shipped units
        return known
    return _pint_unit_factor(source, target, molar_mass)


def _pint_unit_factor(source: str, target: str, molar_mass: str | None = None) -> float:
    """:func:`unit_factor` as pint answers it."""
    _, sdim = parse_unit(source)
    _, tdim = parse_unit(target)
    ureg = _registry()
    one = ureg.Quantity(1.0, source)
    if sdim != tdim and molar_mass is not None:
        mass = ureg.Quantity(molar_mass)
        for candidate in (one / mass, one * mass):
            if str(candidate.dimensionality) == tdim:
                return float(candidate.to(target).magnitude)
    if sdim != tdim:
        raise GuardSyntaxError(f"cannot convert {source} ({sdim}) to {target} ({tdim})", source)
    return float(one.to(target).magnitude)


def quantity_type(unit: str, ranged: bool = False) -> QuantityType:
    """The :class:`QuantityType` of values held in ``unit``.

    Examples
    --------
    >>> quantity_type("mg/dL").dimension
    '[mass] / [length] ** 3'
    """
    _, dimension = parse_unit(unit)
    return QuantityType(unit, dimension, ranged)


_CALENDAR = {"day": "day", "week": "week", "month": "month", "year": "year"}


def _shift(day: _dt.date, amount: int, unit: str) -> _dt.date:
    """Calendar arithmetic: months keep the day of month (clipped to the month's end)."""
    if unit == "day":
        return day + _dt.timedelta(days=amount)
    if unit == "week":
        return day + _dt.timedelta(weeks=amount)
    months = amount * (12 if unit == "year" else 1)
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    following = _dt.date(year + (month0 + 1) // 12, (month0 + 1) % 12 + 1, 1)  # the next month's first day
    last = (following - _dt.timedelta(days=1)).day
    return _dt.date(year, month0 + 1, min(day.day, last))


Run = Callable[[Mapping[str, Any]], Any]
_OPERATOR: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def snap(value: float) -> float:
    """Round to 12 significant digits, so that unit conversions and ratios meet exact thresholds.

    ``3.6 'L/h'`` is 60.00000000000001 mL/min in binary floating point and
    ``0.3 / 0.1`` is 2.9999999999999996; snapped, both are what a person means.

    Examples
    --------
    >>> snap(0.3 / 0.1)
    3.0
    """
    return float("%.12g" % value)  # noqa: UP031 (measurably faster than an f-string here)
_Typed = tuple[Any, Run, frozenset[str]]  # type, closure, names read


def _describe(kind: Any) -> str:
    return {INT: "an integer", NUMBER: "a number", BOOL: "a boolean", DATE: "a date", EVENTS: "an event list",
            _STRING: "a string"}.get(kind, f"a {kind}") if isinstance(kind, str) else f"a {kind}"


def _numeric(kind: Any) -> bool:
    return kind in (INT, NUMBER)


class _Criteria:
    """Type-check a tree of the criteria dialect and build Kleene closures."""

    def __init__(self, text: str, names: Mapping[str, Any]) -> None:
        self.text = text
        self.names = names

    def fail(self, message: str) -> GuardSyntaxError:
        return GuardSyntaxError(f"{message} in {self.text!r}", self.text)

    def build(self, node: Node) -> _Typed:
        if isinstance(node, Literal):
            value = node.value
            kind = BOOL if isinstance(value, bool) else INT if isinstance(value, int) else (
                NUMBER if isinstance(value, float) else _STRING)
            return kind, (lambda env: value), frozenset()
        if isinstance(node, QuantityLiteral):
            try:
                qtype = quantity_type(node.unit)
            except GuardSyntaxError as err:
                raise self.fail(err.message) from None
            number = node.value
            return qtype, (lambda env: number), frozenset()
        if isinstance(node, Name):
            if node.name not in self.names:
                known = ", ".join(sorted(self.names))
                raise GuardSyntaxError(f"unknown name {node.name!r} (known: {known})", self.text)
            name = node.name
            return self.names[name], (lambda env: env[name]), frozenset({name})
        if isinstance(node, Not):
            kind, inner, read = self.build(node.operand)
            self.expect_bool(kind, "'not'")
            if isinstance(node.operand, Name):
                key = node.operand.name
                return BOOL, (lambda env: None if (v := env[key]) is None else not v), read
            return BOOL, (lambda env: None if (v := inner(env)) is None else not v), read
        if isinstance(node, BoolOp):
            return self.logic(node.op, node.operands, f"'{node.op}'")
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Arith):
            lkind, left, lread = self.build(node.left)
            rkind, right, rread = self.build(node.right)
            if not (_numeric(lkind) and _numeric(rkind)):
                raise self.fail(f"'{node.op}' expects plain numbers (got {_describe(lkind)} and {_describe(rkind)}); "
                                "compare quantities directly or use ratio_to_uln")
            op: Callable[[Any, Any], Any] = _ARITH.get(node.op) or (lambda a, b: a / b)
            kind = INT if lkind == rkind == INT and node.op != "/" else NUMBER

            def arith(env: Mapping[str, Any]) -> Any:
                a = left(env)
                if a is None:
                    return None
                b = right(env)
                if b is None or (node.op == "/" and b == 0):
                    return None
                return op(a, b)

            return kind, arith, lread | rread
        if isinstance(node, Call):
            return self.call(node)
        raise AssertionError(node)  # pragma: no cover

    def expect_bool(self, kind: Any, where: str) -> None:
        if kind != BOOL:
            raise self.fail(f"{where} expects a boolean (got {_describe(kind)})")

    def logic(self, op: str, operands: tuple[Node, ...], where: str) -> _Typed:
        built = [self.build(o) for o in operands]
        for kind, _, _ in built:
            self.expect_bool(kind, where)
        # operands that are plain names are read from the environment directly, the others called
        keys = tuple(o.name for o in operands if isinstance(o, Name))
        parts = tuple(run for o, (_, run, _) in zip(operands, built, strict=True) if not isinstance(o, Name))
        read = frozenset().union(*(r for _, _, r in built))
        if op == "and":
            def run(env: Mapping[str, Any]) -> Any:
                unknown = False
                for key in keys:
                    value = env[key]
                    if value is None:
                        unknown = True
                    elif not value:
                        return False
                for part in parts:
                    value = part(env)
                    if value is None:
                        unknown = True
                    elif not value:
                        return False
                return None if unknown else True
        else:
            def run(env: Mapping[str, Any]) -> Any:
                unknown = False
                for key in keys:
                    value = env[key]
                    if value is None:
                        unknown = True
                    elif value:
                        return True
                for part in parts:
                    value = part(env)
                    if value is None:
                        unknown = True
                    elif value:
                        return True
                return None if unknown else False
        return BOOL, run, read

    def compare(self, node: Compare) -> _Typed:
        lkind, left, lread = self.build(node.left)
        rkind, right, rread = self.build(node.right)
        op = _OPERATOR[node.op]
        equality = node.op in ("==", "!=")
        if isinstance(lkind, QuantityType) or isinstance(rkind, QuantityType):
            if not (isinstance(lkind, QuantityType) and isinstance(rkind, QuantityType)):
                plain = rkind if isinstance(lkind, QuantityType) else lkind
                unit = (lkind if isinstance(lkind, QuantityType) else rkind).unit
                raise self.fail(f"'{node.op}' compares a quantity in {unit} with {_describe(plain)}; "
                                f"write the unit, e.g. 60 '{unit}'")
            if lkind.dimension != rkind.dimension:
                raise self.fail(f"'{node.op}' compares {lkind.unit} ({lkind.dimension}) "
                                f"with {rkind.unit} ({rkind.dimension})")
            if isinstance(node.right, QuantityLiteral):
                constant = snap(node.right.value * unit_factor(rkind.unit, lkind.unit))
                return BOOL, self._against(op, left, constant, node.left), lread
            if isinstance(node.left, QuantityLiteral):
                constant = snap(node.left.value * unit_factor(lkind.unit, rkind.unit))
                flipped = _OPERATOR[{"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(node.op, node.op)]
                return BOOL, self._against(flipped, right, constant, node.right), rread
            factor = unit_factor(rkind.unit, lkind.unit)
            if factor != 1.0:
                inner_right = right
                right = lambda env: None if (v := inner_right(env)) is None else snap(v * factor)  # noqa: E731
        elif isinstance(lkind, CodeType) or isinstance(rkind, CodeType):
            if not equality:
                raise self.fail(f"'{node.op}' cannot order codes; use == or !=")
            for code_kind, other, other_kind in ((lkind, node.right, rkind), (rkind, node.left, lkind)):
                if isinstance(code_kind, CodeType) and other_kind == _STRING:
                    assert isinstance(other, Literal)
                    self.check_code(code_kind, str(other.value))
                elif isinstance(code_kind, CodeType) and not isinstance(other_kind, CodeType):
                    raise self.fail(f"'{node.op}' compares a code with {_describe(other_kind)}")
        elif _numeric(lkind) and _numeric(rkind):
            pass
        elif lkind != rkind:
            raise self.fail(f"'{node.op}' compares {_describe(lkind)} with {_describe(rkind)}")
        elif lkind not in (DATE,) and not equality:
            raise self.fail(f"'{node.op}' cannot order {_describe(lkind)}s")
        elif lkind == EVENTS:
            raise self.fail(f"'{node.op}' cannot compare event lists; use within, ongoing or exists")

        if isinstance(node.right, Literal):  # compare with a constant: one call, not three
            return BOOL, self._against(op, left, node.right.value, node.left), lread
        if isinstance(node.left, Literal):
            flipped = _OPERATOR[{"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(node.op, node.op)]
            return BOOL, self._against(flipped, right, node.left.value, node.right), rread

        def run(env: Mapping[str, Any]) -> Any:
            a = left(env)
            if a is None:
                return None
            b = right(env)
            if b is None:
                return None
            return op(a, b)

        return BOOL, run, lread | rread

    @staticmethod
    def _against(op: Callable[[Any, Any], bool], side: Run, constant: Any, node: Node) -> Run:
        if isinstance(node, Name):  # the common case: read the environment directly
            name = node.name
            return lambda env: None if (v := env[name]) is None else op(v, constant)
        return lambda env: None if (v := side(env)) is None else op(v, constant)

    def check_code(self, kind: CodeType, value: str) -> None:
        if value not in kind.values:
            raise self.fail(f"{value!r} is not one of the codes {', '.join(sorted(kind.values))}")

    def call(self, node: Call) -> _Typed:
        name, args = node.function, node.args
        handler = getattr(self, f"fn_{name}", None)
        if handler is None:
            known = ", ".join(sorted(n[3:] for n in dir(self) if n.startswith("fn_")))
            raise self.fail(f"unknown function {name!r} (known: {known})")
        result: _Typed = handler(args)
        return result

    def arity(self, name: str, args: tuple[Node, ...], low: int, high: int | None = None) -> None:
        if len(args) < low or (high is not None and len(args) > high):
            wanted = str(low) if high == low else f"{low} or more" if high is None else f"{low} to {high}"
            raise self.fail(f"'{name}' takes {wanted} arguments (got {len(args)})")

    def fn_all_of(self, args: tuple[Node, ...]) -> _Typed:
        return self.logic("and", args, "'all_of'")

    def fn_any_of(self, args: tuple[Node, ...]) -> _Typed:
        return self.logic("or", args, "'any_of'")

    def fn_implies(self, args: tuple[Node, ...]) -> _Typed:
        self.arity("implies", args, 2, 2)
        return self.logic("or", (Not(args[0]), args[1]), "'implies'")

    def fn_at_least(self, args: tuple[Node, ...]) -> _Typed:
        self.arity("at_least", args, 2)
        first = args[0]
        if not (isinstance(first, Literal) and type(first.value) is int and first.value >= 0):
            raise self.fail("'at_least' expects a whole number first, e.g. at_least(2, a, b, c)")
        need = int(first.value)
        _, _, read = self.logic("or", args[1:], "'at_least'")
        parts = tuple(self.build(a)[1] for a in args[1:])

        def run(env: Mapping[str, Any]) -> Any:
            yes = unknown = 0
            for part in parts:
                value = part(env)
                if value is None:
                    unknown += 1
                elif value:
                    yes += 1
            if yes >= need:
                return True
            return False if yes + unknown < need else None

        return BOOL, run, read

    def fn_one_of(self, args: tuple[Node, ...]) -> _Typed:
        self.arity("one_of", args, 2)
        kind, value, read = self.build(args[0])
        if not isinstance(kind, CodeType):
            raise self.fail(f"'one_of' expects a code first (got {_describe(kind)})")
        codes = []
        for arg in args[1:]:
            if not (isinstance(arg, Literal) and isinstance(arg.value, str)):
                raise self.fail("'one_of' expects quoted codes after the first argument")
            self.check_code(kind, arg.value)
            codes.append(arg.value)
        allowed = frozenset(codes)
        return BOOL, (lambda env: None if (v := value(env)) is None else v in allowed), read

    def _measurement(self, fname: str, args: tuple[Node, ...]) -> tuple[str, Any]:
        self.arity(fname, args, 1, 1)
        arg = args[0]
        kind = self.names.get(arg.name) if isinstance(arg, Name) else None
        if not (isinstance(arg, Name) and isinstance(kind, QuantityType) and kind.ranged):
            raise self.fail(f"'{fname}' expects the name of a measurement with a reference range")
        return arg.name, kind

    def _ratio(self, fname: str, args: tuple[Node, ...], limit: str) -> _Typed:
        name, _ = self._measurement(fname, args)
        key = f"{name}.{limit}"

        def run(env: Mapping[str, Any]) -> Any:
            value = env[name]
            bound = env[key]
            if value is None or bound is None or bound == 0:
                return None
            return snap(value / bound)

        return NUMBER, run, frozenset({name, key})

    def fn_ratio_to_uln(self, args: tuple[Node, ...]) -> _Typed:
        return self._ratio("ratio_to_uln", args, "uln")

    def fn_ratio_to_lln(self, args: tuple[Node, ...]) -> _Typed:
        return self._ratio("ratio_to_lln", args, "lln")

    def _events(self, fname: str, node: Node) -> tuple[Run, frozenset[str]]:
        kind, run, read = self.build(node)
        if kind == DATE:
            return (lambda env: None if (d := run(env)) is None else ((d, d),)), read
        if kind != EVENTS:
            raise self.fail(f"'{fname}' expects a date or an event list first (got {_describe(kind)})")
        return run, read

    def _anchor(self, fname: str, node: Node) -> tuple[Run, frozenset[str]]:
        kind, run, read = self.build(node)
        if kind != DATE:
            raise self.fail(f"'{fname}' expects an anchor date (got {_describe(kind)})")
        return run, read

    def _duration(self, fname: str, node: Node) -> tuple[int, str]:
        if not isinstance(node, QuantityLiteral):
            raise self.fail(f"'{fname}' expects a duration such as 3 'months'")
        try:
            unit, _ = parse_unit(node.unit)
        except GuardSyntaxError as err:
            raise self.fail(err.message) from None
        if unit not in _CALENDAR or node.value != int(node.value):
            raise self.fail(f"'{fname}' expects a whole number of days, weeks, months or years (got "
                            f"{node.value:g} '{node.unit}')")
        return int(node.value), _CALENDAR[unit]

    def _window(self, fname: str, args: tuple[Node, ...], after: bool) -> _Typed:
        self.arity(fname, args, 3, 3)
        events, eread = self._events(fname, args[0])
        amount, unit = self._duration(fname, args[1])
        anchor, aread = self._anchor(fname, args[2])
        bounds: dict[_dt.date, _dt.date] = {}

        def run(env: Mapping[str, Any]) -> Any:
            spans = events(env)
            if spans is None:
                return None
            if not spans:
                return False
            day = anchor(env)
            if day is None:
                return None
            other = bounds.get(day)
            if other is None:
                other = bounds[day] = _shift(day, amount if after else -amount, unit)
            low, high = (day, other) if after else (other, day)
            return any(start <= high and (end is None or end >= low) for start, end in spans)

        return BOOL, run, eread | aread

    def fn_within(self, args: tuple[Node, ...]) -> _Typed:
        return self._window("within", args, after=False)

    def fn_within_after(self, args: tuple[Node, ...]) -> _Typed:
        return self._window("within_after", args, after=True)

    def fn_ongoing(self, args: tuple[Node, ...]) -> _Typed:
        self.arity("ongoing", args, 2, 2)
        events, eread = self._events("ongoing", args[0])
        anchor, aread = self._anchor("ongoing", args[1])

        def run(env: Mapping[str, Any]) -> Any:
            spans = events(env)
            if spans is None:
                return None
            if not spans:
                return False
            day = anchor(env)
            if day is None:
                return None
            return any(start <= day and (end is None or end >= day) for start, end in spans)

        return BOOL, run, eread | aread

    def fn_exists(self, args: tuple[Node, ...]) -> _Typed:
        self.arity("exists", args, 1, 1)
        events, read = self._events("exists", args[0])
        return BOOL, (lambda env: None if (v := events(env)) is None else bool(v)), read

    def _extreme(self, fname: str, args: tuple[Node, ...], pick: Callable[..., Any]) -> _Typed:
        self.arity(fname, args, 1)
        built = [self.build(a) for a in args]
        if not all(_numeric(k) for k, _, _ in built):
            raise self.fail(f"'{fname}' expects plain numbers")
        parts = tuple(r for _, r, _ in built)
        kind = INT if all(k == INT for k, _, _ in built) else NUMBER

        def run(env: Mapping[str, Any]) -> Any:
            values = [p(env) for p in parts]
            return None if any(v is None for v in values) else pick(values)

        return kind, run, frozenset().union(*(r for _, _, r in built))

    def fn_min(self, args: tuple[Node, ...]) -> _Typed:
        return self._extreme("min", args, min)

    def fn_max(self, args: tuple[Node, ...]) -> _Typed:
        return self._extreme("max", args, max)


def parse_criterion(text: str, names: Mapping[str, Any]) -> Guard:
    """Parse a three-valued eligibility criterion over typed ``names``.

    ``names`` maps each name to its type: ``BOOL``, ``INT``, ``NUMBER``,
    ``DATE``, ``EVENTS``, a :class:`CodeType` or a :class:`QuantityType`.  The
    environment passed to :meth:`Guard.evaluate` holds ``None`` for a missing
    value; quantities are floats in their type's unit; a measurement ``m``
    with a reference range also has ``"m.uln"`` and ``"m.lln"``; event lists
    are tuples of ``(start, end)`` dates, ``end`` ``None`` while ongoing.  The
    result is ``True``, ``False`` or ``None`` (unknown).

    Raises
    ------
    GuardSyntaxError
        On a syntax error, an unknown name or function, a type mismatch, an
        unknown unit, or a comparison of different dimensions.

    Examples
    --------
    >>> names = {"crcl": quantity_type("mL/min"), "female": BOOL}
    >>> g = parse_criterion("crcl >= 1 'L/h'", names)
    >>> g.evaluate({"crcl": 20.0}), g.evaluate({"crcl": 12.0}), g.evaluate({"crcl": None})
    (True, False, None)
    >>> parse_criterion("female and crcl > 60 'mL/min'", names).evaluate({"female": False, "crcl": None})
    False
    >>> parse_criterion("crcl > 60 'kg'", names)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.errors.GuardSyntaxError: '>' compares mL/min ([length] ** 3 / [time]) with kg ([mass]) in ...
    """
    if not isinstance(text, str):
        raise GuardSyntaxError(f"expected an expression as a string (got {show(text)})", show(text))
    tree = _Parser(text, criteria=True).parse()
    kind, run, read = _Criteria(text, names).build(tree)
    if kind != BOOL:
        raise GuardSyntaxError(f"expected a boolean criterion (got {_describe(kind)}) in {text!r}", text)
    return Guard(text.strip(), tree, BOOL, read, run)
