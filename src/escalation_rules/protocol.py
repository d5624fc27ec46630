"""The protocol model (frozen attrs classes) and its TOML loader.

A protocol declares a dose ladder, stages with decision tables, the points
where people decide, the enrolment cap and the provenance of every rule.  It
is read from a TOML file, or from a folder of TOML files whose top-level keys
are merged.  Loading checks everything and refuses a bad file with one line
per problem, each naming the file and the key path::

    spec/x.toml: stages[1].rules[2].when: unknown name 'dlts' (known: ...)

Examples
--------
>>> from escalation_rules.protocol import load_protocol
>>> p = load_protocol("spec/nct07117175")
>>> [d.label for d in p.doses][:2]
['1×10^7 CAR-NK cells/kg', '2×10^7 CAR-NK cells/kg']
>>> p.cap
18
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._attrs import value_repr
from ._crm import CrmModel
from ._interval import BOUNDARY_NAMES, Boundary, Selection
from ._limits import MAX_CAP, MAX_COHORT, MAX_DOSES, MAX_OPTIONS, MAX_RULES, MAX_STAGES, check_int, read_toml, show
from .errors import EscalationRulesError, GuardSyntaxError, ProtocolError
from .guards import BOOL, INT, Guard, parse_guard, parse_int_expression

__all__ = [
    "GUARD_NAMES",
    "ConditionalChoice",
    "Dose",
    "EarlyTermination",
    "Option",
    "Outcome",
    "PolicyCase",
    "PolicyEntry",
    "Protocol",
    "Rule",
    "Stage",
    "Window",
    "load_protocol",
    "policy_entry_data",
    "protocol_from_mapping",
    "read_policy_entry",
]

#: The names a rule's guard may read, with their types.  The counts are those
#: of the dose being treated ("current"), the one below ("prev") and the one
#: above ("next"); a dose that does not exist counts as 0 patients.
GUARD_NAMES: Mapping[str, str] = {
    "n": INT,
    "tox": INT,
    "n_prev": INT,
    "tox_prev": INT,
    "n_next": INT,
    "tox_next": INT,
    "has_prev": BOOL,
    "has_next": BOOL,
    "next_closed": BOOL,
    "next_provisional": BOOL,
    "dose": INT,
    "doses": INT,
    "enrolled": INT,
    "remaining": INT,
    "cap": INT,
    **dict.fromkeys(BOUNDARY_NAMES, INT),
    "model_dose": INT,
    "model_too_toxic": BOOL,
}

#: What each name means, for documentation and ``show``.
GUARD_NAME_DOCS: Mapping[str, str] = {
    "n": "patients evaluated at the current dose",
    "tox": "patients with a DLT at the current dose",
    "n_prev": "patients evaluated at the dose below (0 if none)",
    "tox_prev": "patients with a DLT at the dose below (0 if none)",
    "n_next": "patients evaluated at the dose above (0 if none)",
    "tox_next": "patients with a DLT at the dose above (0 if none)",
    "has_prev": "a lower dose exists on the ladder",
    "has_next": "a higher dose exists on the ladder",
    "next_closed": "the dose above has been closed for toxicity",
    "next_provisional": "the dose above is a provisional (added-by-decision) dose group",
    "dose": "1-based level of the current dose",
    "doses": "number of doses on the ladder",
    "enrolled": "patients enrolled in the trial so far",
    "remaining": "places left under the enrolment cap",
    "cap": "the enrolment cap",
    **BOUNDARY_NAMES,
    "model_dose": "the 1-based dose the [model] sends the next cohort to (restrictions applied)",
    "model_too_toxic": "the [model]'s safety rule: Pr(DLT rate at dose 1 > target | data) > stop_p",
}

ACTIONS = ("treat", "stop", "decide")
MOVES = ("stay", "next", "previous", "model")
_MOVE_STEP = {"stay": 0, "next": 1, "previous": -1}
MTDS = ("current", "previous", "none", "selected", "model")
STAGE_KINDS = ("escalation", "titration", "deescalation", "fill", "interval", "model")
HIT_POLICIES = ("unique", "first")


@attrs.frozen
class Dose:
    """One rung of the dose ladder.

    Attributes
    ----------
    id : str
        Identifier used in the protocol file.
    label : str
        Human-readable dose, e.g. ``"2×10^7 CAR-NK cells/kg"``.
    amount : float or None
        The amount, in ``unit``.
    unit : str or None
        Unit of ``amount``.
    provisional : bool
        A dose group that exists only if people decide to add it.
    """

    __repr__ = value_repr

    id: str
    label: str
    amount: float | None = None
    unit: str | None = None
    provisional: bool = False


@attrs.frozen
class Window:
    """A DLT observation window in days (``min_days`` to ``max_days``)."""

    __repr__ = value_repr

    min_days: int
    max_days: int


@attrs.frozen
class Outcome:
    """What happens next: treat a cohort, or stop.

    Attributes
    ----------
    action : str
        ``"treat"`` or ``"stop"``.
    move : str
        For ``treat``: ``"stay"``, ``"next"`` or ``"previous"`` dose.
    cohort : Guard or None
        For ``treat``: the cohort size as an integer expression; ``None``
        takes the entry cohort of the stage that governs the target dose.
    stage : str or None
        For ``treat``: the stage to enter; ``None`` keeps the current stage on
        ``stay`` and takes the target dose's own stage otherwise.
    mtd : str
        For ``stop``: ``"current"``, ``"previous"`` or ``"none"``.
    close : bool
        Close the current dose for toxicity before moving on.
    """

    __repr__ = value_repr

    action: str
    move: str = "stay"
    cohort: Guard | None = None
    stage: str | None = None
    mtd: str = "none"
    close: bool = False

    def target(self, dose: int) -> int:
        """The 0-based dose a ``treat`` outcome moves to from ``dose`` (may be off the ladder).

        Examples
        --------
        >>> Outcome("treat", move="previous").target(2)
        1
        """
        if self.move == "model":
            raise ValueError("a move chosen by the model has no fixed target (see _machine.apply_outcome)")
        return dose + _MOVE_STEP[self.move]

    def treats_at(self, dose: int) -> int | None:
        """The 0-based dose this outcome treats at from ``dose``, or None when it stops.

        Examples
        --------
        >>> Outcome("treat", move="next").treats_at(0), Outcome("stop").treats_at(0)
        (1, None)
        """
        return self.target(dose) if self.action == "treat" else None

    def mtd_dose(self, dose: int) -> int | None:
        """The 0-based MTD a ``stop`` outcome declares at ``dose`` (None: no MTD).

        Examples
        --------
        >>> Outcome("stop", mtd="previous").mtd_dose(0) is None
        True
        """
        if self.mtd == "current":
            return dose
        if self.mtd == "previous" and dose > 0:
            return dose - 1
        return None


@attrs.frozen
class Option:
    """One choice at a decision point."""

    __repr__ = value_repr

    id: str
    label: str
    outcome: Outcome
    signoff: tuple[str, ...]


@attrs.frozen
class Rule:
    """One row of a stage's decision table.

    Attributes
    ----------
    id : str
        Unique across the protocol.
    when : Guard
        When the row applies.
    action : str
        ``"treat"``, ``"stop"`` or ``"decide"``.
    outcome : Outcome or None
        What happens, for ``treat`` and ``stop``.
    options : tuple of Option
        The choices left to people, for ``decide``.
    signoff : tuple of str
        Roles whose agreement the row requires.
    clause : str
        The protocol clause it encodes (section and paragraph).
    paraphrase : str
        What the clause says, in our words.
    window : Window or None
        A DLT observation window for the patients this row (or its options)
        sends to treatment, when it differs from the stage's.
    """

    __repr__ = value_repr

    id: str
    when: Guard
    action: str
    outcome: Outcome | None
    options: tuple[Option, ...]
    signoff: tuple[str, ...]
    clause: str
    paraphrase: str
    window: Window | None = None


@attrs.frozen
class Stage:
    """A stage: a decision table consulted whenever a cohort at its doses completes.

    Attributes
    ----------
    kind : str
        ``"escalation"``, ``"titration"``, ``"deescalation"`` or ``"fill"``;
        it tells verification which invariants apply (a titration stage may
        escalate after a single patient without DLT; a fill stage may hold
        more than six patients at a dose).
    cohort : int
        Size of the first cohort on entering the stage.
    doses : tuple of str
        The doses this stage governs when the trial moves onto them.
    hit_policy : str
        ``"unique"`` (exactly one row may apply) or ``"first"`` (the first
        row that applies wins, in the order written).
    """

    __repr__ = value_repr

    id: str
    label: str
    kind: str
    cohort: int
    doses: tuple[str, ...]
    hit_policy: str
    window: Window | None
    rules: tuple[Rule, ...]
    clause: str


@attrs.frozen
class PolicyCase:
    """One case of a :class:`ConditionalChoice`: take ``option`` when ``when`` holds (None: otherwise)."""

    __repr__ = value_repr

    when: Guard | None
    option: str


@attrs.frozen
class ConditionalChoice:
    """A policy entry that depends on the data: the option of the first case whose guard holds.

    The guards are written in the guard language of the rules and read the
    state at the decision point (``n`` and ``tox`` are the counts at the dose
    where the decision arose).  The cases cover every state: the loader
    refuses a list that leaves one out.

    Examples
    --------
    >>> names = {"n": INT, "tox": INT}
    >>> entry = ConditionalChoice((PolicyCase(parse_guard("3 * tox <= n", names), "declare"),
    ...                            PolicyCase(None, "no-mtd")))
    >>> entry.choose(lambda g: g.evaluate({"n": 6, "tox": 2})), entry.choose(lambda g: g.evaluate({"n": 3, "tox": 2}))
    ('declare', 'no-mtd')
    >>> str(entry)
    'declare when 3 * tox <= n, otherwise no-mtd'
    """

    __repr__ = value_repr

    cases: tuple[PolicyCase, ...]

    @property
    def guards(self) -> tuple[Guard, ...]:
        """The guards of the cases, in order (the otherwise case has none)."""
        return tuple(case.when for case in self.cases if case.when is not None)

    @property
    def options(self) -> tuple[str, ...]:
        """The option ids the entry may choose."""
        return tuple(dict.fromkeys(case.option for case in self.cases))

    def choose(self, holds: Callable[[Guard], Any]) -> str:
        """The option of the first case whose guard ``holds`` (a function of the guard)."""
        for case in self.cases:
            if case.when is None or holds(case.when):
                return case.option
        raise ValueError(f"no case of {self} applies")  # the loader refuses lists that leave a state out

    def __str__(self) -> str:
        return ", ".join(_case_text(case) for case in self.cases)


def _case_text(case: PolicyCase) -> str:
    return f"otherwise {case.option}" if case.when is None else f"{case.option} when {case.when.text}"


#: A policy entry: an option id, or options that depend on the data.
PolicyEntry = str | ConditionalChoice


def policy_entry_data(entry: PolicyEntry) -> Any:
    """A policy entry as TOML/JSON data: the option id, or a list of ``{when, option}`` tables.

    Examples
    --------
    >>> policy_entry_data("declare")
    'declare'
    >>> policy_entry_data(load_protocol("spec/nct07117175").default_policy["fill-complete"])
    [{'when': '3 * tox <= n', 'option': 'declare'}, {'option': 'no-mtd'}]
    """
    if isinstance(entry, str):
        return entry
    return [{"option": c.option} if c.when is None else {"when": c.when.text, "option": c.option}
            for c in entry.cases]


@attrs.frozen
class EarlyTermination:
    """People may end the trial at any time, with these roles signing."""

    __repr__ = value_repr

    signoff: tuple[str, ...]
    clause: str
    paraphrase: str


@attrs.frozen
class Protocol:
    """A loaded, checked protocol. Compile it with :func:`escalation_rules.compile_protocol`.

    Attributes
    ----------
    id, title, source : str
        Identifier, title and where it was read from (file, folder or design name).
    doses : tuple of Dose
        The ladder, lowest first.
    stages : tuple of Stage
    start_dose, start_stage : str
        Where the first cohort goes.
    cap : int
        The enrolment cap.
    roles : tuple of str
        The roles that may sign decisions.
    escalation_signoff : tuple of str
        Roles that must sign every escalation (checked by ``verify``).
    early_termination : EarlyTermination or None
    clauses : dict
        Clause reference to a short description of the clause, for traceability.
    default_policy : dict
        Rule id to the option taken by default at that decision point: an
        option id, or a :class:`ConditionalChoice` that depends on the data.
    """

    __repr__ = value_repr

    id: str
    title: str
    source: str
    doses: tuple[Dose, ...]
    stages: tuple[Stage, ...]
    start_dose: str
    start_stage: str
    cap: int
    roles: tuple[str, ...]
    escalation_signoff: tuple[str, ...]
    early_termination: EarlyTermination | None
    clauses: Mapping[str, str]
    default_policy: Mapping[str, PolicyEntry]
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    files: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)
    boundaries: tuple[Boundary, ...] = ()
    selection: Selection | None = None
    model: CrmModel | None = None

    def key_source(self, key: str) -> str:
        """The file that declared a top-level key (for error messages), else :attr:`source`.

        Examples
        --------
        >>> load_protocol("spec/nct07117175").key_source("doses")
        'spec/nct07117175/protocol.toml'
        """
        return self.files.get(key, self.source)

    def stage(self, stage_id: str) -> Stage:
        """Return the stage with this id."""
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    def dose_index(self, dose_id: str) -> int:
        """0-based position of a dose on the ladder."""
        for i, dose in enumerate(self.doses):
            if dose.id == dose_id:
                return i
        raise KeyError(dose_id)

    def rule(self, rule_id: str) -> Rule:
        """Return the rule with this id."""
        for stage in self.stages:
            for rule in stage.rules:
                if rule.id == rule_id:
                    return rule
        raise KeyError(rule_id)


# ---------------------------------------------------------------- loading


class _Reader:
    """Walks raw TOML data, collecting one problem line per mistake."""

    def __init__(self, source: str, owners: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.owners = owners or {}
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        top = path.split(".")[0].split("[")[0]
        self.problems.append(f"{self.owners.get(top, self.source)}: {path}: {message}")

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        default: Any = attrs.NOTHING,
    ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in table:
            if default is attrs.NOTHING:
                self.problem(where, "missing")
                return None
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
        if not ok:
            names = " or ".join(_type_name(k) for k in kinds)
            self.problem(where, f"expected {names} (got {show(value)})")
            return None
        return value

    def unknown_keys(self, table: Mapping[str, Any], path: str, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key in table:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.problem(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def bounded(self, value: Any, path: str, high: int, low: int = 1) -> Any:
        """``value`` if it is an integer within ``low..high``; else records a problem and returns None."""
        if not isinstance(value, int):
            return None
        problem = check_int(value, path, high, low)
        if problem is None:
            return value
        top = path.split(".")[0].split("[")[0]
        self.problems.append(f"{self.owners.get(top, self.source)}: {problem}")
        return None

    def items(self, value: Any, path: str, limit: int, what: str) -> list[Any]:
        """The list ``value`` (empty if it was refused), refusing more than ``limit`` entries."""
        if not isinstance(value, list):
            return []
        if len(value) > limit:
            self.problem(path, f"expected at most {limit} {what} (got {len(value)})")
            return []
        return value

    def choice(self, value: Any, path: str, choices: Iterable[str]) -> None:
        choices = tuple(choices)
        if value is not None and value not in choices:
            self.problem(path, f"expected one of {', '.join(choices)} (got {show(value)})")

    def guard(self, text: Any, path: str, integer: bool = False) -> Guard | None:
        if text is None:
            return None
        if isinstance(text, int) and not isinstance(text, bool) and integer:
            if self.bounded(text, path, MAX_COHORT) is None:
                return None
            text = str(text)
        if not isinstance(text, str):
            self.problem(path, f"expected an expression string (got {show(text)})")
            return None
        try:
            if integer:
                return parse_int_expression(text, GUARD_NAMES)
            return parse_guard(text, GUARD_NAMES)
        except GuardSyntaxError as err:
            self.problem(path, err.message)
            return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(kind, kind.__name__)


_RULE_KEYS = ("id", "when", "action", "move", "cohort", "stage", "mtd", "close", "options",
              "signoff", "clause", "paraphrase", "window_days")
_OPTION_KEYS = ("id", "label", "action", "move", "cohort", "stage", "mtd", "close", "signoff")


def _read_outcome(r: _Reader, raw: Mapping[str, Any], path: str, action: str) -> Outcome:
    move = r.get(raw, "move", path, str, "stay")
    r.choice(move, f"{path}.move", MOVES)
    mtd = r.get(raw, "mtd", path, str, "none")
    r.choice(mtd, f"{path}.mtd", MTDS)
    cohort = r.guard(raw.get("cohort"), f"{path}.cohort", integer=True)
    stage = r.get(raw, "stage", path, str, None)
    close = r.get(raw, "close", path, bool, False)
    if action == "stop":
        for key in ("move", "cohort", "stage"):
            if key in raw:
                r.problem(f"{path}.{key}", "not allowed with action 'stop'")
    if action == "treat" and "mtd" in raw:
        r.problem(f"{path}.mtd", "not allowed with action 'treat'")
    return Outcome(action, move or "stay", cohort, stage, mtd or "none", bool(close))


def _read_roles(r: _Reader, raw: Mapping[str, Any], path: str, roles: tuple[str, ...],
                default: tuple[str, ...] = (), key: str = "signoff") -> tuple[str, ...]:
    value = r.get(raw, key, path, list, list(default))
    if value is None:
        return ()
    result = []
    for i, role in enumerate(value):
        if not isinstance(role, str):
            r.problem(f"{path}.{key}[{i}]", f"expected a role name (got {show(role)})")
        elif role not in roles:
            r.problem(f"{path}.{key}[{i}]",
                      f"unknown role {show(role)} (known: {', '.join(roles) or 'none; declare them in roles'})")
        else:
            result.append(role)
    return tuple(result)


def _read_rule(r: _Reader, raw: Any, path: str, roles: tuple[str, ...]) -> Rule | None:
    if not isinstance(raw, dict):
        r.problem(path, f"expected a table (got {show(raw)})")
        return None
    r.unknown_keys(raw, path, _RULE_KEYS)
    rule_id = r.get(raw, "id", path, str)
    when = r.guard(r.get(raw, "when", path, str), f"{path}.when")
    action = r.get(raw, "action", path, str)
    r.choice(action, f"{path}.action", ACTIONS)
    signoff = _read_roles(r, raw, path, roles)
    clause = r.get(raw, "clause", path, str)
    paraphrase = r.get(raw, "paraphrase", path, str)
    outcome = None
    options: list[Option] = []
    if action in ("treat", "stop"):
        outcome = _read_outcome(r, raw, path, action)
        if "options" in raw:
            r.problem(f"{path}.options", f"only allowed with action 'decide' (got action {show(action)})")
    elif action == "decide":
        for key in ("move", "cohort", "stage", "mtd", "close"):
            if key in raw:
                r.problem(f"{path}.{key}", "not allowed with action 'decide': put it on an option")
        raw_options = r.get(raw, "options", path, list)
        if raw_options is not None and not raw_options:
            r.problem(f"{path}.options", "expected at least one option (got an empty list)")
        seen: set[str] = set()
        for j, raw_option in enumerate(r.items(raw_options, f"{path}.options", MAX_OPTIONS, "options")):
            opath = f"{path}.options[{j}]"
            if not isinstance(raw_option, dict):
                r.problem(opath, f"expected a table (got {show(raw_option)})")
                continue
            r.unknown_keys(raw_option, opath, _OPTION_KEYS)
            oid = r.get(raw_option, "id", opath, str)
            if oid in seen:
                r.problem(f"{opath}.id", f"duplicate option id {show(oid)}")
            seen.add(oid)
            label = r.get(raw_option, "label", opath, str, oid or "")
            oaction = r.get(raw_option, "action", opath, str)
            r.choice(oaction, f"{opath}.action", ("treat", "stop"))
            oout = _read_outcome(r, raw_option, opath, oaction or "stop")
            osign = _read_roles(r, raw_option, opath, roles, signoff)
            if oid is not None and oaction in ("treat", "stop"):
                options.append(Option(oid, label or oid, oout, osign))
    window = _read_window(r, raw, path)
    if rule_id is None or when is None or action is None or clause is None or paraphrase is None:
        return None
    return Rule(rule_id, when, action, outcome, tuple(options), signoff, clause, paraphrase, window)


#: Coverage of a policy entry's cases is checked on every combination of the values its guards
#: read, up to this many; beyond, the list must end with a case without ``when``.
COVERAGE_LIMIT = 200_000
_DOSE_NAMES = ("dose", "has_prev", "has_next", "next_provisional", "next_closed", "n_prev", "tox_prev",
               "n_next", "tox_next")


def _coverage_gap(guards: Iterable[Guard], cap: int, doses: tuple[Dose, ...]) -> dict[str, Any] | str | None:
    """A state no guard holds in (the values of the names they read), ``"too many"``, or None when covered.

    The states are every combination of values the guards' names can take
    together: counts from 0 to the cap with no more DLTs than patients, a
    dose on the ladder (``has_prev``, ``has_next`` and ``next_provisional``
    follow from it, a dose that does not exist counts 0), the enrolment with
    ``remaining = cap - enrolled``.
    """
    guards = tuple(guards)
    names = set().union(*(g.names for g in guards))
    k = max(len(doses), 1)
    axes: list[tuple[str, range | tuple[bool, ...]]] = []
    if names & set(_DOSE_NAMES):
        axes.append(("dose", range(1, k + 1)))
    for suffix in ("", "_prev", "_next"):
        if names & {"n" + suffix, "tox" + suffix}:
            axes += [("n" + suffix, range(cap + 1)), ("tox" + suffix, range(cap + 1))]
    if names & {"enrolled", "remaining"}:
        axes.append(("enrolled", range(cap + 1)))
    if "next_closed" in names:
        axes.append(("next_closed", (False, True)))
    if math.prod(len(values) for _, values in axes) > COVERAGE_LIMIT:
        return "too many"
    keys = [name for name, _ in axes]
    for combo in itertools.product(*(values for _, values in axes)):
        env: dict[str, Any] = dict(zip(keys, combo, strict=True))
        dose = env.get("dose", 1)
        if "dose" in env:
            env["has_prev"], env["has_next"] = dose > 1, dose < k
            env["next_provisional"] = dose < k and doses[dose].provisional
            if (dose == 1 and env.get("n_prev", 0)) or (dose == k and (env.get("n_next", 0) or env.get("next_closed"))):
                continue
        if any(env.get("tox" + x, 0) > env.get("n" + x, 0) for x in ("", "_prev", "_next")):
            continue
        if "enrolled" in env:
            env["remaining"] = cap - env["enrolled"]
            if env.get("n", 0) + env.get("n_prev", 0) + env.get("n_next", 0) > env["enrolled"]:
                continue
        env["doses"], env["cap"] = k, cap
        if not any(g.evaluate(env) for g in guards):
            return {name: env[name] for name in sorted(names)}
    return None


def read_policy_entry(value: Any, rule: Rule, cap: int, doses: tuple[Dose, ...],
                      problem: Callable[[str, str], None]) -> PolicyEntry | None:
    """Read one policy entry for a decision ``rule``: an option id, or a list of ``{when, option}`` cases.

    ``problem(path, message)`` is told each mistake, with the path below the
    entry (``""`` for the entry itself, ``"[1].when"`` for a case's guard);
    the result is None when there was one.

    Examples
    --------
    >>> nct = load_protocol("spec/nct07117175")
    >>> rule, report = nct.rule("fill-complete"), lambda path, message: print(f"[{path}] {message}")
    >>> str(read_policy_entry([{"when": "tox <= 1", "option": "declare"}, {"option": "no-mtd"}], rule, 18,
    ...                       nct.doses, report))
    'declare when tox <= 1, otherwise no-mtd'
    >>> read_policy_entry([{"when": "tox <= 1", "option": "declare"}], rule, 18, nct.doses, report)
    [] the cases leave out some states (none applies when tox = 2): add a last case without 'when' (otherwise)
    >>> read_policy_entry([{"when": "dlts <= 1", "option": "end"}], rule, 18, nct.doses, report)  # doctest: +ELLIPSIS
    [[0].option] unknown option 'end' (offered: declare, no-mtd)
    [[0].when] unknown name 'dlts' (known: ...)
    """
    offered = [o.id for o in rule.options]

    def option_ok(option: Any, path: str) -> bool:
        if isinstance(option, str) and option in offered:
            return True
        problem(path, f"unknown option {show(option)} (offered: {', '.join(offered)})")
        return False

    if isinstance(value, str):
        return value if option_ok(value, "") else None
    if not isinstance(value, list) or not value:
        problem("", f"expected an option id or a list of {{when, option}} cases (got {show(value)})")
        return None
    cases: list[PolicyCase] = []
    ok = True
    for i, raw in enumerate(value):
        path = f"[{i}]"
        if not isinstance(raw, dict):
            problem(path, f"expected a table with 'when' and 'option' (got {show(raw)})")
            ok = False
            continue
        unknown = sorted(set(raw) - {"when", "option"})
        if unknown:
            problem(f"{path}.{unknown[0]}", "unknown key (expected one of: option, when)")
            ok = False
        if "option" not in raw:
            problem(f"{path}.option", "missing")
            ok = False
        elif not option_ok(raw["option"], f"{path}.option"):
            ok = False
        when = None
        if "when" in raw:
            text = raw["when"]
            if not isinstance(text, str):
                problem(f"{path}.when", f"expected an expression string (got {show(text)})")
                ok = False
            else:
                try:
                    when = parse_guard(text, GUARD_NAMES)
                except GuardSyntaxError as err:
                    problem(f"{path}.when", err.message)
                    ok = False
        elif i < len(value) - 1:
            problem(f"{path}", "only the last case may leave out 'when' (it applies otherwise)")
            ok = False
        if ok:
            cases.append(PolicyCase(when, raw["option"]))
    if not ok:
        return None
    if cases[-1].when is not None:
        gap = _coverage_gap((c.when for c in cases if c.when is not None), cap, doses)
        if gap == "too many":
            problem("", f"the cases read too many values to check that they cover every state "
                        f"(more than {COVERAGE_LIMIT:,}): add a last case without 'when' (otherwise)")
            return None
        if gap is not None:
            assert isinstance(gap, dict)
            where = ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in gap.items())
            problem("", f"the cases leave out some states (none applies when {where}): "
                        "add a last case without 'when' (otherwise)")
            return None
    return ConditionalChoice(tuple(cases))


def _read_window(r: _Reader, raw: Mapping[str, Any], path: str) -> Window | None:
    value = r.get(raw, "window_days", path, list, None)
    if value is None:
        return None
    if (len(value) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            or not 0 < value[0] <= value[1]):
        r.problem(f"{path}.window_days", f"expected [min, max] days with 0 < min <= max (got {show(value)})")
        return None
    return Window(value[0], value[1])


def protocol_from_mapping(data: Mapping[str, Any], source: str, owners: Mapping[str, str] | None = None) -> Protocol:
    """Build a :class:`Protocol` from already-parsed data (a TOML document as a dict).

    Built-in designs use this too, so they pass the same checks as files.
    ``owners`` maps a top-level key to the file it came from (for a folder),
    so each problem names the file that holds it.

    Raises
    ------
    ProtocolError
        With one line per problem, each naming ``source`` and the key path.
    """
    r = _Reader(source, owners)
    r.unknown_keys(data, "", ("protocol", "doses", "stages", "roles", "early_termination",
                              "clauses", "policy", "eligibility", "dlt", "scenarios", "meta",
                              "boundaries", "selection", "model", "fhir"))
    head = r.get(data, "protocol", "", dict) or {}
    r.unknown_keys(head, "protocol", ("id", "title", "cap", "start_dose", "start_stage",
                                      "escalation_signoff", "description"))
    pid = r.get(head, "id", "protocol", str)
    title = r.get(head, "title", "protocol", str, pid or "")
    cap = r.bounded(r.get(head, "cap", "protocol", int), "protocol.cap", MAX_CAP)

    roles_raw = r.get(data, "roles", "", list, [])
    roles: list[str] = []
    for i, role in enumerate(roles_raw or []):
        if isinstance(role, str):
            roles.append(role)
        else:
            r.problem(f"roles[{i}]", f"expected a role name (got {show(role)})")
    role_tuple = tuple(roles)
    esc_sign = _read_roles(r, head, "protocol", role_tuple, key="escalation_signoff")

    doses: list[Dose] = []
    seen_doses: set[str] = set()
    raw_doses = r.items(r.get(data, "doses", "", list), "doses", MAX_DOSES, "doses")
    if not raw_doses and "doses" in data:
        r.problem("doses", "expected at least one dose (got an empty list)")
    for i, raw in enumerate(raw_doses):
        path = f"doses[{i}]"
        if not isinstance(raw, dict):
            r.problem(path, f"expected a table (got {show(raw)})")
            continue
        r.unknown_keys(raw, path, ("id", "label", "amount", "unit", "provisional"))
        did = r.get(raw, "id", path, str)
        if did in seen_doses:
            r.problem(f"{path}.id", f"duplicate dose id {show(did)}")
        seen_doses.add(did)
        amount = r.get(raw, "amount", path, (int, float), None)
        if isinstance(amount, int) and amount.bit_length() > 1000:  # past a float's range
            r.problem(f"{path}.amount", f"expected a positive amount (got {show(amount)})")
            amount = None
        dose = Dose(did or "", r.get(raw, "label", path, str, did) or "",
                    float(amount) if amount is not None else None,
                    r.get(raw, "unit", path, str, None),
                    bool(r.get(raw, "provisional", path, bool, False)))
        if did is not None:
            doses.append(dose)
    previous: Dose | None = None
    for i, dose in enumerate(doses):
        if dose.amount is None:
            continue
        if not math.isfinite(dose.amount) or dose.amount <= 0:
            r.problem(f"doses[{i}].amount", f"expected a positive amount (got {show(dose.amount)})")
        elif previous is not None and previous.unit == dose.unit and dose.amount <= (previous.amount or 0):
            before = f"{previous.amount:g} {dose.unit}" if dose.unit else f"{previous.amount:g}"
            r.problem(f"doses[{i}].amount",
                      f"the ladder goes lowest first: expected more than {before} (the dose before) "
                      f"(got {dose.amount:g})")
        previous = dose
    seen_provisional = False
    for i, dose in enumerate(doses):
        if not dose.provisional and seen_provisional:
            r.problem(f"doses[{i}].provisional",
                      "a provisional dose group may only be followed by other provisional ones")
        seen_provisional = seen_provisional or dose.provisional

    stages: list[Stage] = []
    rule_ids: set[str] = set()
    stage_ids: set[str] = set()
    raw_stages = r.items(r.get(data, "stages", "", list), "stages", MAX_STAGES, "stages")
    for i, raw in enumerate(raw_stages):
        path = f"stages[{i}]"
        if not isinstance(raw, dict):
            r.problem(path, f"expected a table (got {show(raw)})")
            continue
        r.unknown_keys(raw, path, ("id", "label", "kind", "cohort", "doses", "hit_policy",
                                   "window_days", "rules", "clause"))
        sid = r.get(raw, "id", path, str)
        if sid in stage_ids:
            r.problem(f"{path}.id", f"duplicate stage id {show(sid)}")
        if sid is not None:
            stage_ids.add(sid)
        kind = r.get(raw, "kind", path, str, "escalation")
        r.choice(kind, f"{path}.kind", STAGE_KINDS)
        cohort = r.bounded(r.get(raw, "cohort", path, int), f"{path}.cohort", MAX_COHORT)
        sdoses = r.items(r.get(raw, "doses", path, list, []), f"{path}.doses", MAX_DOSES, "doses")
        for j, did in enumerate(sdoses):
            if not isinstance(did, str):
                r.problem(f"{path}.doses[{j}]", f"expected a dose id (got {show(did)})")
            elif did not in seen_doses:
                r.problem(f"{path}.doses[{j}]", f"unknown dose {show(did)} (known: {', '.join(d.id for d in doses)})")
        policy = r.get(raw, "hit_policy", path, str, "unique")
        r.choice(policy, f"{path}.hit_policy", HIT_POLICIES)
        window = _read_window(r, raw, path)
        rules: list[Rule] = []
        raw_rules = r.items(r.get(raw, "rules", path, list), f"{path}.rules", MAX_RULES, "rules")
        if len(rule_ids) + len(raw_rules) > MAX_RULES:
            r.problem(f"{path}.rules", f"expected at most {MAX_RULES} rules in the protocol (got more)")
            raw_rules = []
        if "rules" in raw and not raw_rules:
            r.problem(f"{path}.rules", "expected at least one rule (got an empty list)")
        for j, raw_rule in enumerate(raw_rules):
            rule = _read_rule(r, raw_rule, f"{path}.rules[{j}]", role_tuple)
            if rule is None:
                continue
            if rule.id in rule_ids:
                r.problem(f"{path}.rules[{j}].id", f"duplicate rule id {show(rule.id)}")
            rule_ids.add(rule.id)
            rules.append(rule)
        stages.append(Stage(sid or "", r.get(raw, "label", path, str, sid) or "", kind or "escalation",
                            cohort if isinstance(cohort, int) else 1,
                            tuple(d for d in sdoses if isinstance(d, str)),
                            policy or "unique", window, tuple(rules), r.get(raw, "clause", path, str, "") or ""))

    # cross references
    governed: dict[str, str] = {}
    for i, stage in enumerate(stages):
        for did in stage.doses:
            if did in governed:
                r.problem(f"stages[{i}].doses", f"dose {show(did)} is already governed by stage {show(governed[did])}")
            governed[did] = stage.id
    for dose in doses:
        if dose.id not in governed:
            r.problem("stages", f"no stage governs dose {show(dose.id)} (list it in one stage's doses)")
    for i, stage in enumerate(stages):
        for j, rule in enumerate(stage.rules):
            outcomes = [(f"stages[{i}].rules[{j}]", rule.outcome)] if rule.outcome else []
            outcomes += [(f"stages[{i}].rules[{j}].options[{k}]", o.outcome) for k, o in enumerate(rule.options)]
            for opath, outcome in outcomes:
                if outcome is not None and outcome.stage is not None and outcome.stage not in stage_ids:
                    known = ", ".join(sorted(stage_ids))
                    r.problem(f"{opath}.stage", f"unknown stage {show(outcome.stage)} (known: {known})")

    start_dose = r.get(head, "start_dose", "protocol", str, doses[0].id if doses else None)
    if start_dose is not None and start_dose not in seen_doses:
        r.problem("protocol.start_dose", f"unknown dose {show(start_dose)}")
    start_stage = r.get(head, "start_stage", "protocol", str, governed.get(start_dose or ""))
    if start_stage is not None and start_stage not in stage_ids:
        r.problem("protocol.start_stage", f"unknown stage {show(start_stage)}")

    early = None
    raw_early = r.get(data, "early_termination", "", dict, None)
    if raw_early is not None:
        r.unknown_keys(raw_early, "early_termination", ("signoff", "clause", "paraphrase"))
        early = EarlyTermination(
            _read_roles(r, raw_early, "early_termination", role_tuple),
            r.get(raw_early, "clause", "early_termination", str) or "",
            r.get(raw_early, "paraphrase", "early_termination", str) or "",
        )

    clauses = r.get(data, "clauses", "", dict, {}) or {}
    for key, value in clauses.items():
        if not isinstance(value, str):
            r.problem(f"clauses.{key}", f"expected a string (got {show(value)})")

    declared_rules = {rule.get("id") for stage in raw_stages if isinstance(stage, dict)
                      for rule in _list(stage.get("rules"))
                      if isinstance(rule, dict) and isinstance(rule.get("id"), str)}
    policy_raw = r.get(data, "policy", "", dict, {}) or {}
    r.unknown_keys(policy_raw, "policy", ("default",))
    default_policy = r.get(policy_raw, "default", "policy", dict, {}) or {}
    entries: dict[str, PolicyEntry] = {}
    for rule_id, value in default_policy.items():
        try:
            rule = next(x for s in stages for x in s.rules if x.id == rule_id)
        except StopIteration:
            if rule_id not in declared_rules:  # a declared rule that was refused is reported already
                r.problem(f"policy.default.{rule_id}", f"unknown rule {show(rule_id)}")
            continue
        if rule.action != "decide":
            r.problem(f"policy.default.{rule_id}", f"rule {show(rule_id)} is not a decision point")
            continue
        def report(path: str, message: str, rid: str = rule_id) -> None:
            r.problem(f"policy.default.{rid}{path}", message)

        entry = read_policy_entry(value, rule, cap if isinstance(cap, int) else 0, tuple(doses), report)
        if entry is not None:
            entries[rule_id] = entry

    boundaries, selection = _read_model(r, data, stages)
    model = _read_crm(r, data, stages, len(doses))

    if r.problems:
        raise ProtocolError(r.problems)
    extra = {k: data[k] for k in ("eligibility", "dlt", "scenarios", "meta", "fhir") if k in data}
    return Protocol(pid or "", title or "", source, tuple(doses), tuple(stages), start_dose or "",
                    start_stage or "", cap, role_tuple, esc_sign, early, dict(clauses),
                    entries, extra, dict(owners or {}), boundaries, selection, model)



_SELECTION_KEYS = ("method", "target", "cutoff_eli", "extrasafe", "offset")
_MODEL_KEYS = ("method", "skeleton", "target", "prior_sd", "model", "intcpt", "restrict", "stop_p")


def _read_crm(r: _Reader, data: Mapping[str, Any], stages: list[Stage], doses: int) -> CrmModel | None:
    """The ``[model]`` table (a CRM), checked against the rules that read it."""
    raw = r.get(data, "model", "", dict, None)
    model = None
    if raw is not None:
        r.unknown_keys(raw, "model", _MODEL_KEYS)
        method = r.get(raw, "method", "model", str, "crm")
        r.choice(method, "model.method", ("crm",))
        skeleton = r.get(raw, "skeleton", "model", list)
        target = r.get(raw, "target", "model", (int, float))
        prior_sd = r.get(raw, "prior_sd", "model", (int, float), math.sqrt(1.34))
        kind = r.get(raw, "model", "model", str, "empiric")
        r.choice(kind, "model.model", ("empiric", "logistic"))
        intcpt = r.get(raw, "intcpt", "model", (int, float), 3.0)
        restrict = r.get(raw, "restrict", "model", bool, True)
        stop_p = r.get(raw, "stop_p", "model", (int, float), None)
        ok = True
        if isinstance(skeleton, list):
            if len(skeleton) != doses:
                r.problem("model.skeleton", f"expected one prior DLT rate per dose ({doses}) (got {len(skeleton)})")
                ok = False
            elif not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < 1 for x in skeleton):
                r.problem("model.skeleton", f"expected rates between 0 and 1 (got {show(skeleton)})")
                ok = False
            elif any(a >= b for a, b in itertools.pairwise(skeleton)):
                r.problem("model.skeleton", f"expected rates rising with the dose (got {show(skeleton)})")
                ok = False
        for key, value, low, high in (("target", target, 0, 1), ("prior_sd", prior_sd, 0, 100),
                                      ("stop_p", stop_p, 0, 1)):
            if value is not None and not low < value < high:
                r.problem(f"model.{key}", f"expected a number between {low} and {high} (got {show(value)})")
                ok = False
        if (kind == "logistic" and ok and isinstance(skeleton, list) and isinstance(intcpt, int | float)
                and not all(math.log(x / (1 - x)) - intcpt < 0 for x in skeleton)):
            r.problem("model.intcpt", f"too small for the skeleton: every logit(rate) - intcpt must be "
                                      f"below 0 (got intcpt {intcpt})")
            ok = False
        if ok and isinstance(skeleton, list) and target is not None and kind is not None and intcpt is not None:
            model = CrmModel(tuple(float(x) for x in skeleton), float(target), float(prior_sd), kind,
                             float(intcpt), bool(restrict), None if stop_p is None else float(stop_p))
    for i, stage in enumerate(stages):
        for j, rule in enumerate(stage.rules):
            used = sorted(set(rule.when.names) & {"model_dose", "model_too_toxic"})
            if used and raw is None:
                r.problem(f"stages[{i}].rules[{j}].when", f"reads {', '.join(used)}, which need a [model] table")
            if raw is None and rule.outcome is not None and "model" in (rule.outcome.move, rule.outcome.mtd):
                r.problem(f"stages[{i}].rules[{j}]", "moves or declares by the model, which needs a [model] table")
            for k, option in enumerate(rule.options):
                if option.outcome.move == "model":
                    r.problem(f"stages[{i}].rules[{j}].options[{k}].move",
                              "'model' is for rules: an option people choose names its dose")
    return model


def _read_model(r: _Reader, data: Mapping[str, Any],
                stages: list[Stage]) -> tuple[tuple[Boundary, ...], Selection | None]:
    """The boundary table and the MTD selection of a model-assisted design, checked against the rules' use."""
    boundaries: list[Boundary] = []
    raw_rows = r.get(data, "boundaries", "", list, [])
    for i, raw in enumerate(raw_rows or []):
        path = f"boundaries[{i}]"
        if not isinstance(raw, dict):
            r.problem(path, f"expected a table (got {show(raw)})")
            continue
        r.unknown_keys(raw, path, ("n", "escalate", "deescalate", "eliminate", "stop"))
        n = r.get(raw, "n", path, int)
        if n is None:
            continue
        if n != i + 1:
            r.problem(f"{path}.n", f"expected rows for n = 1, 2, 3, ... in order (got {n} in row {i + 1})")
            continue
        values = [r.get(raw, key, path, int, n + 1 if key != "escalate" else -1)
                  for key in ("escalate", "deescalate", "eliminate", "stop")]
        if any(v is None for v in values):
            continue
        for key, v in zip(("escalate", "deescalate", "eliminate", "stop"), values, strict=True):
            if not -1 <= v <= n + 1:
                r.problem(f"{path}.{key}", f"expected a DLT count from -1 to {n + 1} (got {v})")
        esc, deesc, elim, stop = values
        if esc >= deesc:
            r.problem(path, f"escalate ({esc}) must be below deescalate ({deesc})")
        boundaries.append(Boundary(n, esc, deesc, elim, stop))
    selection = None
    raw_sel = r.get(data, "selection", "", dict, None)
    if raw_sel is not None:
        r.unknown_keys(raw_sel, "selection", _SELECTION_KEYS)
        method = r.get(raw_sel, "method", "selection", str, "isotonic")
        r.choice(method, "selection.method", ("isotonic",))
        target = r.get(raw_sel, "target", "selection", float)
        cutoff = r.get(raw_sel, "cutoff_eli", "selection", float, 0.95)
        extrasafe = r.get(raw_sel, "extrasafe", "selection", bool, False)
        offset = r.get(raw_sel, "offset", "selection", float, 0.05)
        for key, value in (("target", target), ("cutoff_eli", cutoff), ("offset", offset)):
            if value is not None and not 0 < value < 1:
                r.problem(f"selection.{key}", f"expected a number between 0 and 1 (got {show(value)})")
        if target is not None and cutoff is not None and offset is not None:
            selection = Selection(target, cutoff, bool(extrasafe), offset, method or "isotonic")
    for i, stage in enumerate(stages):
        for j, rule in enumerate(stage.rules):
            used = sorted(set(rule.when.names) & set(BOUNDARY_NAMES))
            if used and not boundaries:
                r.problem(f"stages[{i}].rules[{j}].when",
                          f"reads {', '.join(used)}, which need a [[boundaries]] table")
            outcomes = [rule.outcome] + [o.outcome for o in rule.options]
            if selection is None and any(o is not None and o.mtd == "selected" for o in outcomes):
                r.problem(f"stages[{i}].rules[{j}].mtd", "'selected' needs a [selection] table")
    return tuple(boundaries), selection


def read_protocol_data(path: str | Path) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Read a protocol file, or merge the TOML files of a protocol folder.

    Returns the merged data, the source name used in error messages, and the
    file each top-level key came from.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise ProtocolError([f"{path}: no .toml files in this folder"])
    elif path.is_file():
        files = [path]
    else:
        raise ProtocolError([f"{path}: no such protocol file or folder"])
    merged: dict[str, Any] = {}
    owner: dict[str, Path] = {}
    problems = []
    for file in files:
        try:
            data = read_toml(file, "protocol file")
        except EscalationRulesError as err:
            problems.append(str(err))
            continue
        for key, value in data.items():
            if key in merged:
                problems.append(f"{file}: {key}: already declared in {owner[key]}")
            else:
                merged[key] = value
                owner[key] = file
    if problems:
        raise ProtocolError(problems)
    return merged, str(path), {key: str(file) for key, file in owner.items()}


def load_protocol(path: str | Path) -> Protocol:
    """Load and check a protocol file or folder.

    Raises
    ------
    ProtocolError
        With one line per problem (file and key path).

    Examples
    --------
    >>> load_protocol("no/such.toml")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.ProtocolError: no/such.toml: no such protocol file or folder
    """
    if not isinstance(path, str | Path):
        raise TypeError(f"path: expected a protocol file or folder as a str or Path (got {type(path).__name__})")
    data, source, owners = read_protocol_data(path)
    return protocol_from_mapping(data, source, owners)
