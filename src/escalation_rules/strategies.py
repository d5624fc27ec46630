"""Hypothesis strategies for property tests of trial software built on a protocol.

Software that records a dose-escalation trial (a screening form, a database,
a dashboard) can test itself against every history a protocol allows, and
against the histories it must refuse, without writing a generator by hand.
Every valid history drawn here is accepted by :func:`escalation_rules.decide`;
every invalid one is refused by it with a :class:`~escalation_rules.HistoryError`.

The strategies walk the compiled state graph of the protocol: DLT outcomes
are drawn patient by patient for each cohort, and an option is drawn at each
decision point, so a drawn history can reach every state the rules can reach.

Hypothesis is an optional dependency: ``pip install -e '.[strategies]'`` from the repository's clone.

Examples
--------
>>> from hypothesis import find
>>> from escalation_rules import builtin_design, decide
>>> design = builtin_design("3+3-escalate-only", doses=3)
>>> find(histories(design), lambda h: decide(design, h).mtd == 2)
'1NNN 2NNN 3TTT'
>>> find(invalid_histories(design, kinds=["skipped dose"]), lambda pair: True)
('1NNN 3NNN', 'skipped dose')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import install_hint

try:
    from hypothesis import strategies as st
except ImportError as _err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"escalation_rules.strategies needs Hypothesis, the 'strategies' extra: {install_hint('strategies')}"
    ) from _err

import networkx as nx

from ._machine import State
from .designs import DESIGNS, builtin_design
from .engine import option_level
from .errors import EscalationRulesError
from .graph import CompiledProtocol, compile_protocol
from .history import Choice, Cohort, Entry
from .protocol import Option, Protocol

__all__ = [
    "FORMS",
    "INVALID_KINDS",
    "builtin_designs",
    "histories",
    "invalid_histories",
    "invalid_kinds",
    "outcome_strings",
    "partial_histories",
]

#: The forms a drawn history can take: an outcome string (decisions in
#: brackets only where the next cohort's dose does not imply them), a tuple of
#: entries (every decision explicit, with its sign-off), or the JSON form
#: (a list of dicts that :func:`~escalation_rules.parse_history_json` reads).
FORMS: tuple[str, ...] = ("outcomes", "entries", "json")

#: Kinds of invalid history drawn by :func:`invalid_histories`, with what
#: each breaks.  In every kind the offending entry is the last one written.
INVALID_KINDS: dict[str, str] = {
    "wrong start dose": "the first cohort is not at the protocol's starting dose",
    "skipped dose": "a cohort more than one dose above the highest dose treated so far",
    "too many patients": "a cohort holds more patients than the rules treat at its dose before they move on",
    "dose not permitted": "a cohort at a dose the rules do not send the next patients to (no dose skipped)",
    "dose not offered": "a cohort, at a decision point, at a dose that none of the options treats at",
    "cohort after stop": "a cohort after the rules (or people) stopped the trial",
    "unknown symbol": "a cohort with a letter other than N (no DLT) or T (DLT)",
    "unknown dose": "a cohort at a dose that is not on the ladder",
    "unknown option": "a decision, at a decision point, that the rule does not offer",
    "no decision open": "a decision where the rules, not people, say what happens next",
    "incomplete cohort": "an entry after a cohort whose missing patients could still change the decision",
}

_BAD_LETTERS = "".join(c for c in "ABCDEFGHIJKLMOPQRSUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in "NT")
_OPTION_IDS = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)


# ---------------------------------------------------------------- the walker


class _Walker:
    """A compiled protocol with the lookups the strategies need (built once per protocol)."""

    def __init__(self, compiled: CompiledProtocol) -> None:
        self.compiled = compiled
        self.p = compiled.protocol
        self.g = compiled.graph
        self.k = len(self.p.doses)
        self.initial = compiled.initial
        self._succ: dict[State, dict[Any, State]] = {}
        self._reach: dict[str, frozenset[State]] = {}
        self._longest: int | None = None

    def successors(self, state: State) -> dict[Any, State]:
        """Next state by number of DLTs (treat) or by option id (decide)."""
        succ = self._succ.get(state)
        if succ is None:
            key = "dlts" if state.phase == "treat" else "option"
            succ = {data[key]: b for _, b, data in self.g.out_edges(state, data=True)}
            self._succ[state] = succ
        return succ

    def options(self, state: State) -> tuple[Option, ...]:
        return self.p.rule(state.rule or "").options

    @property
    def longest(self) -> int:
        if self._longest is None:
            self._longest = int(nx.dag_longest_path_length(self.g))
        return self._longest

    # -- where each kind of invalid entry can be written

    def highest(self, state: State) -> int:
        """0-based highest dose treated so far (the engine's reference for skipping)."""
        return max((i for i, (n, _) in enumerate(state.counts) if n > 0), default=state.dose)

    def start_doses(self, state: State) -> list[int]:
        return [d for d in range(1, self.k + 1) if d != self.initial.dose + 1] if state == self.initial else []

    def skipped_doses(self, state: State) -> list[int]:
        if state.phase != "treat" or state == self.initial:
            return []
        return list(range(self.highest(state) + 3, self.k + 1))

    def unpermitted_doses(self, state: State) -> list[int]:
        if state.phase != "treat" or state == self.initial:
            return []
        top = min(self.k, self.highest(state) + 2)
        return [d for d in range(1, top + 1) if d != state.dose + 1]

    def unoffered_doses(self, state: State) -> list[int]:
        if state.phase != "decide":
            return []
        targets = {option_level(state, o) for o in self.options(state)}
        return [d for d in range(1, self.k + 1) if d not in targets]

    def undetermined_partials(self, state: State) -> list[tuple[int, int]]:
        """(patients seen, DLTs among them) of incomplete cohorts whose decision is still open."""
        if state.phase != "treat" or state.cohort < 2:
            return []
        succ = self.successors(state)
        found = []
        for seen in range(1, state.cohort):
            for tox in range(seen + 1):
                views = {_view(succ[tox + u]) for u in range(state.cohort - seen + 1)}
                if len(views) > 1:
                    found.append((seen, tox))
        return found

    def good(self, kind: str, state: State) -> bool:
        if kind == "wrong start dose":
            return bool(self.start_doses(state))
        if kind == "skipped dose":
            return bool(self.skipped_doses(state))
        if kind == "dose not permitted":
            return bool(self.unpermitted_doses(state))
        if kind == "dose not offered":
            return bool(self.unoffered_doses(state))
        if kind in ("too many patients", "no decision open"):
            return state.phase == "treat"
        if kind == "cohort after stop":
            return state.phase == "stop"
        if kind == "unknown option":
            return state.phase == "decide"
        if kind == "incomplete cohort":
            return bool(self.undetermined_partials(state))
        return True  # unknown symbol, unknown dose: anywhere

    def reach(self, kind: str) -> frozenset[State]:
        """States from which a state where ``kind`` can be written is reachable."""
        found = self._reach.get(kind)
        if found is None:
            ok: set[State] = set()
            for state in reversed(list(nx.topological_sort(self.g))):
                if self.good(kind, state) or any(s in ok for s in self.g.successors(state)):
                    ok.add(state)
            found = frozenset(ok)
            self._reach[kind] = found
        return found


def _view(state: State) -> tuple[Any, ...]:
    """A coarse picture of a decision: different pictures are surely different decisions."""
    if state.phase == "treat":
        return ("treat", state.dose)
    if state.phase == "stop":
        return ("stop", state.mtd)
    return ("decide",)


_WALKERS: dict[int, tuple[object, _Walker]] = {}


def _walker(protocol: Protocol | CompiledProtocol) -> _Walker:
    if not isinstance(protocol, Protocol | CompiledProtocol):
        raise EscalationRulesError(
            f"strategies: expected a Protocol or CompiledProtocol (got {type(protocol).__name__})")
    cached = _WALKERS.get(id(protocol))
    if cached is not None and cached[0] is protocol:
        return cached[1]
    compiled = protocol if isinstance(protocol, CompiledProtocol) else compile_protocol(protocol)
    walker = _Walker(compiled)
    if len(_WALKERS) >= 64:
        _WALKERS.pop(next(iter(_WALKERS)))
    _WALKERS[id(protocol)] = (protocol, walker)
    return walker


# ---------------------------------------------------------------- drawing steps


def _symbols(draw: st.DrawFn, size: int, level: int) -> str:
    """``size`` outcomes, each a DLT with chance about ``level``/8."""
    return "".join("T" if draw(st.integers(0, 7)) < level else "N" for _ in range(size))


def _arranged(draw: st.DrawFn, size: int, dlts: int) -> str:
    """``size`` outcomes with exactly ``dlts`` DLTs, in a drawn order."""
    return "".join(draw(st.permutations("N" * (size - dlts) + "T" * dlts)))


@st.composite
def _valid_walk(draw: st.DrawFn, walker: _Walker, complete: bool, max_cohorts: int | None,
                early_termination: bool, partial: bool) -> list[tuple[State, Entry]]:
    """A walk from the start: (state before, entry) pairs."""
    p = walker.p
    level = draw(st.integers(0, 8))
    budget = walker.longest if complete else draw(st.integers(0, walker.longest))
    steps: list[tuple[State, Entry]] = []
    state = walker.initial
    cohorts = 0
    while state.phase != "stop" and len(steps) < budget:
        if max_cohorts is not None and cohorts >= max_cohorts:
            break
        if state.phase == "treat":
            et = p.early_termination
            if early_termination and et is not None and draw(st.integers(0, 15)) == 15:
                steps.append((state, Choice("terminate", et.signoff)))
                return steps
            outcomes = _symbols(draw, state.cohort, level)
            steps.append((state, Cohort(state.dose + 1, outcomes)))
            state = walker.successors(state)[outcomes.count("T")]
            cohorts += 1
        else:
            option = draw(st.sampled_from(walker.options(state)))
            steps.append((state, Choice(option.id, option.signoff)))
            state = walker.successors(state)[option.id]
    if partial and state.phase == "treat" and state.cohort >= 2 and draw(st.booleans()):
        seen = draw(st.integers(1, state.cohort - 1))
        steps.append((state, Cohort(state.dose + 1, _symbols(draw, seen, level))))
        et = p.early_termination
        if early_termination and et is not None and draw(st.integers(0, 3)) == 3:
            steps.append((state, Choice("terminate", et.signoff)))  # ended while patients are under observation
    return steps


def _render(walker: _Walker, steps: Sequence[tuple[State, Entry]], form: str) -> Any:
    """Write a walk in the requested form."""
    entries = [entry for _, entry in steps]
    if form == "entries":
        return tuple(entries)
    if form == "json":
        return [{"dose": e.dose, "outcomes": e.outcomes} if isinstance(e, Cohort)
                else {"decision": e.option, "signoff": list(e.signoff or ())} for e in entries]
    return " ".join(_written(walker, steps))


def _written(walker: _Walker, steps: Sequence[tuple[State, Entry]]) -> list[str]:
    """Outcome-string tokens, leaving out decisions the next cohort's dose implies."""
    tokens = []
    for i, (state, entry) in enumerate(steps):
        if isinstance(entry, Choice) and state.phase == "decide" and i + 1 < len(steps):
            nxt = steps[i + 1][1]
            options = walker.options(state)
            chosen = next(o for o in options if o.id == entry.option)
            target = option_level(state, chosen)
            unique = sum(1 for o in options if option_level(state, o) == target) == 1
            if isinstance(nxt, Cohort) and target == nxt.dose and unique:
                continue
        tokens.append(str(entry))
    return tokens


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise EscalationRulesError(f"strategies: form: expected one of {', '.join(FORMS)} (got {form!r})")


# ---------------------------------------------------------------- public strategies


def histories(protocol: Protocol | CompiledProtocol, *, complete: bool = True, max_cohorts: int | None = None,
              form: str = "outcomes", early_termination: bool = True) -> st.SearchStrategy[Any]:
    """Valid histories of a protocol: every one is accepted by :func:`~escalation_rules.decide`.

    The walk starts where the protocol starts; each cohort's outcomes are
    drawn patient by patient (with a DLT rate drawn per history, so both
    long escalations and early stops are common), and an option is drawn at
    each decision point.

    Parameters
    ----------
    protocol : Protocol or CompiledProtocol
        Compiled once, when the strategy is built (pass a compiled protocol
        to share the work between strategies).
    complete : bool
        True: walk until the trial stops.  False: stop the walk after a drawn
        number of steps, so the history may end anywhere (at a decision point
        too).
    max_cohorts : int or None
        Write at most this many cohorts; the history then ends where it got
        to, even when ``complete`` is True.
    form : str
        ``"outcomes"`` (default): an outcome string, with a decision in
        brackets only where the next cohort's dose does not imply it.
        ``"entries"``: a tuple of :class:`~escalation_rules.Cohort` and
        :class:`~escalation_rules.Choice`, every decision explicit with the
        sign-off it requires.  ``"json"``: the JSON form, a list of dicts.
    early_termination : bool
        When the protocol lets people end the trial at any time, sometimes
        do so (``"[terminate]"`` where the rules would treat).

    Returns
    -------
    SearchStrategy
        Of str, tuple of entries, or list of dicts, per ``form``.

    Raises
    ------
    CompileError
        When the protocol fails its build checks.
    EscalationRulesError
        For an unknown ``form``.

    Examples
    --------
    >>> from hypothesis import find
    >>> from escalation_rules import builtin_design, load_protocol
    >>> find(histories(builtin_design("3+3-deescalate", doses=2)), lambda h: "2" in h)
    '1NNN 2NNN'

    Decisions that the next cohort's dose implies are left out of outcome
    strings; the other forms write every decision:

    >>> nct = load_protocol("spec/nct07117175")
    >>> find(histories(nct), lambda h: h.startswith("1N 2"))
    '1N 2NNN 3NNN 4NNN 4NNN 4NNN 4NN [declare]'
    >>> find(histories(nct), lambda h: "[" in h)
    '[terminate]'
    >>> h = find(histories(nct, form="json"), lambda h: len(h) > 1 and "decision" in h[-1])
    >>> sorted(h[0]), sorted(h[-1])  # cohorts, and decisions with who signs them
    (['dose', 'outcomes'], ['decision', 'signoff'])
    """
    _check_form(form)
    walker = _walker(protocol)
    return _valid_walk(walker, complete, max_cohorts, early_termination, False).map(
        lambda steps: _render(walker, steps, form))


def partial_histories(protocol: Protocol | CompiledProtocol, *, form: str = "outcomes",
                      early_termination: bool = True) -> st.SearchStrategy[Any]:
    """Valid histories that may end anywhere, the last cohort possibly incomplete.

    An incomplete last cohort is what a site has while patients are still
    under observation; :func:`~escalation_rules.decide` either decides early
    (every outcome of the rest leads to the same decision) or asks for the
    rest.  When the protocol lets people end the trial at any time, an
    incomplete cohort is sometimes followed by ``"[terminate]"``.

    Parameters
    ----------
    protocol : Protocol or CompiledProtocol
    form : str
        As for :func:`histories`.
    early_termination : bool
        As for :func:`histories`.

    Returns
    -------
    SearchStrategy

    Examples
    --------
    >>> from hypothesis import find
    >>> from escalation_rules import builtin_design, decide
    >>> design = builtin_design("3+3-deescalate", doses=3)
    >>> find(partial_histories(design), lambda h: decide(design, h).determined_early and len(h) <= 3)
    '1TT'
    """
    _check_form(form)
    walker = _walker(protocol)
    return _valid_walk(walker, False, None, early_termination, True).map(lambda steps: _render(walker, steps, form))


@st.composite
def _invalid_walk(draw: st.DrawFn, walker: _Walker, kind: str) -> tuple[str, str]:
    reach = walker.reach(kind)
    steps: list[tuple[State, Entry]] = []
    state = walker.initial
    while True:
        if walker.good(kind, state):
            onward = [s for s in walker.successors(state).values() if s in reach] if state.phase != "stop" else []
            if not onward or draw(st.integers(0, 3)) == 0:
                break
        if state.phase == "treat":
            succ = walker.successors(state)
            dlts = draw(st.sampled_from(sorted(k for k, s in succ.items() if s in reach)))
            steps.append((state, Cohort(state.dose + 1, _arranged(draw, state.cohort, dlts))))
            state = succ[dlts]
        else:
            succ = walker.successors(state)
            options = [o for o in walker.options(state) if succ[o.id] in reach]
            option = draw(st.sampled_from(options))
            steps.append((state, Choice(option.id)))
            state = succ[option.id]
    tokens = _written(walker, steps)
    tokens += _offending(draw, walker, kind, state)
    return " ".join(tokens), kind


def _offending(draw: st.DrawFn, walker: _Walker, kind: str, state: State) -> list[str]:
    """The tokens that make the history invalid, written at ``state``."""
    p = walker.p
    anywhere_dose = state.dose + 1 if state.phase == "treat" else draw(st.integers(1, walker.k))
    size = state.cohort if state.phase == "treat" else draw(st.integers(1, 6))
    if kind == "wrong start dose":
        return [f"{draw(st.sampled_from(walker.start_doses(state)))}{_arranged_any(draw, size)}"]
    if kind == "skipped dose":
        return [f"{draw(st.sampled_from(walker.skipped_doses(state)))}{_arranged_any(draw, size)}"]
    if kind == "dose not permitted":
        return [f"{draw(st.sampled_from(walker.unpermitted_doses(state)))}{_arranged_any(draw, size)}"]
    if kind == "dose not offered":
        return [f"{draw(st.sampled_from(walker.unoffered_doses(state)))}{_arranged_any(draw, size)}"]
    if kind == "cohort after stop":
        return [f"{anywhere_dose}{_arranged_any(draw, size)}"]
    if kind == "unknown dose":
        dose = draw(st.sampled_from([0, *range(walker.k + 1, walker.k + 10)]))
        return [f"{dose}{_arranged_any(draw, size)}"]
    if kind == "unknown symbol":
        letters = list(_arranged_any(draw, size))
        letters[draw(st.integers(0, size - 1))] = draw(st.sampled_from(_BAD_LETTERS))
        return [f"{anywhere_dose}{''.join(letters)}"]
    if kind == "too many patients":
        written = ""
        while True:
            outcomes = _arranged_any(draw, state.cohort)
            written += outcomes
            state = walker.successors(state)[outcomes.count("T")]
            if not (state.phase == "treat" and state.dose + 1 == anywhere_dose):
                break
        return [f"{anywhere_dose}{written}{_arranged_any(draw, draw(st.integers(1, 3)))}"]
    if kind == "unknown option":
        offered = {o.id for o in walker.options(state)}
        return [f"[{draw(_OPTION_IDS.filter(lambda x: x not in offered))}]"]
    if kind == "no decision open":
        taken = {"terminate"} if p.early_termination is not None else set()
        return [f"[{draw(_OPTION_IDS.filter(lambda x: x not in taken))}]"]
    assert kind == "incomplete cohort"
    seen, tox = draw(st.sampled_from(walker.undetermined_partials(state)))
    ending = {"terminate"} if p.early_termination is not None else set()  # people may end the trial meanwhile
    return [f"{anywhere_dose}{_arranged(draw, seen, tox)}", f"[{draw(_OPTION_IDS.filter(lambda x: x not in ending))}]"]


def _arranged_any(draw: st.DrawFn, size: int) -> str:
    return _arranged(draw, size, draw(st.integers(0, size)))


def invalid_histories(protocol: Protocol | CompiledProtocol, *,
                      kinds: Iterable[str] | None = None) -> st.SearchStrategy[tuple[str, str]]:
    """Outcome strings that :func:`~escalation_rules.decide` must refuse, with the kind of mistake.

    Each history is a valid history (as :func:`histories` draws it) cut at a
    point where the mistake can be made, followed by one offending entry (for
    ``"incomplete cohort"``: the incomplete cohort, then a decision).  The
    offending entry is always the last one written, so the
    :class:`~escalation_rules.HistoryError` names it by its number.

    Parameters
    ----------
    protocol : Protocol or CompiledProtocol
    kinds : iterable of str or None
        Which kinds of :data:`INVALID_KINDS` to draw (default: every kind
        that can arise under the protocol; some need at least two or three
        doses, or decision points).

    Returns
    -------
    SearchStrategy of (str, str)
        ``(history, kind)`` pairs.

    Raises
    ------
    EscalationRulesError
        For an unknown kind, or a kind that cannot arise under the protocol.

    Examples
    --------
    >>> from hypothesis import find
    >>> from escalation_rules import builtin_design, load_protocol
    >>> design = builtin_design("3+3-escalate-only", doses=3)
    >>> find(invalid_histories(design, kinds=["too many patients"]), lambda pair: True)
    ('1NNNN', 'too many patients')
    >>> nct = load_protocol("spec/nct07117175")
    >>> find(invalid_histories(nct, kinds=["dose not offered"]), lambda pair: True)
    ('1N 1N', 'dose not offered')
    >>> sorted(INVALID_KINDS) == sorted(invalid_kinds(nct))
    True
    """
    walker = _walker(protocol)
    possible = invalid_kinds(walker.compiled)
    if kinds is None:
        chosen = possible
    else:
        chosen = tuple(kinds)
        for kind in chosen:
            if kind not in INVALID_KINDS:
                raise EscalationRulesError(
                    f"invalid_histories: kinds: unknown kind {kind!r} (known: {', '.join(INVALID_KINDS)})")
            if kind not in possible:
                raise EscalationRulesError(
                    f"invalid_histories: kinds: {kind!r} cannot arise under {walker.p.source} "
                    f"(possible: {', '.join(possible)})")
        if not chosen:
            raise EscalationRulesError("invalid_histories: kinds: expected at least one kind (got none)")
    return st.sampled_from(chosen).flatmap(lambda kind: _invalid_walk(walker, kind))


def invalid_kinds(protocol: Protocol | CompiledProtocol) -> tuple[str, ...]:
    """The kinds of :data:`INVALID_KINDS` that can arise under a protocol.

    Parameters
    ----------
    protocol : Protocol or CompiledProtocol

    Returns
    -------
    tuple of str
        In the order of :data:`INVALID_KINDS`.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> kinds = invalid_kinds(builtin_design("3+3-escalate-only", doses=1))
    >>> "too many patients" in kinds, "skipped dose" in kinds, "unknown option" in kinds
    (True, False, False)
    """
    walker = _walker(protocol)
    return tuple(kind for kind in INVALID_KINDS if walker.initial in walker.reach(kind))


def outcome_strings(*, max_dose: int = 12, max_entries: int = 10, syntax_errors: bool = True,
                    options: Sequence[str] = ("escalate", "terminate", "fill", "reduce")) -> st.SearchStrategy[str]:
    """Strings that look like outcome strings, for syntax-level fuzzing of a history parser.

    Cohort tokens (``"2NTN"``), decisions in brackets (``"[escalate]"``) and
    odd spacing; with ``syntax_errors``, also lower-case and unknown letters,
    stray digits, brackets and other junk.  They follow no protocol:
    :func:`~escalation_rules.parse_outcomes` must either parse one or refuse
    it with a :class:`~escalation_rules.HistoryError`, and
    :func:`~escalation_rules.decide` must either decide or refuse, never
    fail in another way.

    Parameters
    ----------
    max_dose : int
        Highest dose level written (0 is written too).
    max_entries : int
        Most tokens per string.
    syntax_errors : bool
        False: only tokens :func:`~escalation_rules.parse_outcomes` accepts.
    options : sequence of str
        Option ids to write in brackets (besides drawn ones).

    Returns
    -------
    SearchStrategy of str

    Examples
    --------
    >>> from hypothesis import find
    >>> from escalation_rules import parse_outcomes
    >>> find(outcome_strings(syntax_errors=False), lambda s: len(parse_outcomes(s)) >= 2)
    '0N0N'
    """
    letters = "NT" + ("ntX" if syntax_errors else "")
    cohort = st.builds(lambda d, o: f"{d}{o}", st.integers(0, max_dose),
                       st.text(st.sampled_from(letters), min_size=1, max_size=8))
    choice = st.builds(lambda o: f"[{o}]", st.sampled_from(tuple(options)) | _OPTION_IDS)
    token = cohort | choice
    if syntax_errors:
        odd = ["[", "]", "[]", "[ ]", "12", "N", "-1N", "1 N", "1N,", "1Ñ", "💥"]
        junk = st.sampled_from(odd) | st.text(max_size=4)
        token = token | junk
    separator = st.sampled_from(["", " ", " ", "  ", "\t", "\n"])
    return st.lists(st.tuples(separator, token), max_size=max_entries).map(
        lambda parts: "".join(sep + tok for sep, tok in parts).strip() if not syntax_errors
        else "".join(sep + tok for sep, tok in parts))


def builtin_designs(*, names: Iterable[str] | None = None, min_doses: int = 1,
                    max_doses: int = 6) -> st.SearchStrategy[Protocol]:
    """Built-in designs with a drawn number of doses.

    Parameters
    ----------
    names : iterable of str or None
        Design names (default: every one in :data:`~escalation_rules.DESIGNS`).
    min_doses, max_doses : int
        Range of ladder lengths.

    Returns
    -------
    SearchStrategy of Protocol

    Examples
    --------
    >>> from hypothesis import find
    >>> find(builtin_designs(names=["3+3-deescalate"]), lambda p: len(p.doses) > 2).id
    '3+3-deescalate'
    """
    chosen = sorted(DESIGNS) if names is None else list(names)
    for name in chosen:
        if name not in DESIGNS:
            raise EscalationRulesError(f"builtin_designs: names: unknown design {name!r} "
                                       f"(known: {', '.join(sorted(DESIGNS))})")
    if not chosen:
        raise EscalationRulesError("builtin_designs: names: expected at least one design (got none)")
    if not 1 <= min_doses <= max_doses <= 40:
        raise EscalationRulesError(f"builtin_designs: expected 1 <= min_doses <= max_doses <= 40 "
                                   f"(got {min_doses} and {max_doses})")
    return st.builds(builtin_design, st.sampled_from(chosen), st.integers(min_doses, max_doses))
