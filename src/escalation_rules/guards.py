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

Types are ``int`` and ``bool``; ``and``/``or``/``not`` take booleans,
arithmetic and ordering take integers, ``==``/``!=`` take two of the same
type.  The functions are ``min`` and ``max`` over integers.

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

import re
from collections.abc import Callable, Mapping
from typing import Any, Union

import attrs

from .errors import GuardSyntaxError

__all__ = [
    "BOOL",
    "INT",
    "Guard",
    "parse_guard",
    "parse_int_expression",
]

INT = "int"
BOOL = "bool"

_TOKEN = re.compile(
    r"\s*(?:(?P<int>\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>==|!=|<=|>=|<|>|\+|-|\*|\(|\)|,)|(?P<bad>\S))"
)
_KEYWORDS = {"and", "or", "not", "true", "false"}
_FUNCTIONS = {"min": min, "max": max}


@attrs.frozen
class Literal:
    """A constant: an integer or a boolean."""

    value: int | bool


@attrs.frozen
class Name:
    """A name the protocol provides (``n``, ``tox``, ``has_next``…)."""

    name: str


@attrs.frozen
class Not:
    """Logical negation."""

    operand: Node


@attrs.frozen
class BoolOp:
    """``and`` / ``or`` over two or more operands."""

    op: str
    operands: tuple[Node, ...]


@attrs.frozen
class Compare:
    """A single comparison between two operands."""

    op: str
    left: Node
    right: Node


@attrs.frozen
class Arith:
    """Integer arithmetic: ``+``, ``-``, ``*`` (and unary minus as ``0 - x``)."""

    op: str
    left: Node
    right: Node


@attrs.frozen
class Call:
    """A call of one of the built-in functions (``min``, ``max``)."""

    function: str
    args: tuple[Node, ...]


Node = Union[Literal, Name, Not, BoolOp, Compare, Arith, Call]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        for match in _TOKEN.finditer(text):
            kind = match.lastgroup
            if kind is None:  # trailing white space
                continue
            value = match.group(kind)
            start = match.start(kind)
            if kind == "bad":
                raise GuardSyntaxError(
                    f"unexpected character {value!r} at column {start + 1} in {text!r}",
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
        while self.accept("*"):
            node = Arith("*", node, self.parse_unary())
        return node

    def parse_unary(self) -> Node:
        if self.accept("-"):
            return Arith("-", Literal(0), self.parse_unary())
        return self.parse_atom()

    def parse_atom(self) -> Node:
        kind, value, _ = self.peek()
        if kind == "int":
            self.take()
            return Literal(int(value))
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
        raise GuardSyntaxError(f"expected an expression as a string (got {text!r})", str(text))
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
