"""The ``eligibility`` section of a protocol: data items, formulas and criteria.

A protocol folder declares, under the top-level key ``eligibility``, the
data items its criteria read (``[eligibility.items.NAME]``, each taken from
a place in the patient record or computed by a declared formula) and the
criteria (``[[eligibility.criteria]]``, each with an id, a kind, a clause
reference, a paraphrase and a ``when`` expression in the criteria dialect of
the guard language).  :func:`load_eligibility` checks all of it when the
protocol loads and refuses it with one line per problem, naming the file and
the key path.

Examples
--------
>>> from escalation_rules import load_protocol
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> spec.criteria[0].id, spec.items["crcl"].formula
('inc_age', 'cockcroft_gault')
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._attrs import value_repr
from ..errors import GuardSyntaxError, ProtocolError
from ..guards import (
    BOOL,
    DATE,
    EVENTS,
    INT,
    CodeType,
    Guard,
    QuantityType,
    _shift,
    parse_criterion,
    quantity_type,
    snap,
    unit_factor,
)
from ..protocol import Protocol
from ._record import LIST_FIELDS, SECTION_FIELDS, PatientRecord, RecordError, _show
from ._units import lab_factor

__all__ = ["FORMULAS", "Criterion", "DataItem", "EligibilitySpec", "Formula", "load_eligibility"]

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
KINDS = ("inclusion", "exclusion", "definition")


@attrs.frozen
class Formula:
    """A declared formula for a derived data item.

    Attributes
    ----------
    name : str
    text : str
        The formula as a person reads it.
    roles : dict
        Input role to a description of what it needs (checked at load).
    unit : str or None
        Unit of the result (``None``: a whole number without unit, unless ``result`` says otherwise).
    parameters : dict
        Parameter name to (default value, what it means); an item may set them (``parameters = {...}``).
    result : object or None
        The result's type in the guard language when it is not a number (a ``CodeType``).
    """

    __repr__ = value_repr

    name: str
    text: str
    roles: Mapping[str, str]
    unit: str | None
    parameters: Mapping[str, tuple[float, str]] = attrs.field(factory=dict)
    result: Any = None


FORMULAS: dict[str, Formula] = {
    "age_years": Formula("age_years", "completed years from birth_date to the anchor date 'on'",
                         {"birth_date": "a date", "on": "a date"}, None),
    "cockcroft_gault": Formula(
        "cockcroft_gault",
        "(140 - age) × weight[kg] × (0.85 if female) / (72 × serum creatinine[mg/dL]), in mL/min; "
        "weight is the recorded actual body weight",
        {"age": "a whole number of years", "sex": "a code with 'female'", "weight": "a mass",
         "creatinine": "a creatinine concentration (mass, or substance with a molar mass)"},
        "mL/min"),
    "relapse_evidence": Formula(
        "relapse_evidence",
        "from dated results after the first remission: bone-marrow blasts at or above marrow_blasts_percent outside "
        "recovery_days after a chemotherapy course; else blasts in two blood samples at least blood_interval_days "
        "apart; else a new extramedullary lesion; 'none' when the results show none of these; the attested code "
        "when no dated results are recorded",
        {"assessments": "the dated disease assessments", "remission": "a date (the first remission)",
         "chemotherapy": "an event list (chemotherapy courses)", "chemotherapy_drugs": "an event list",
         "attested": "a code with 'marrow_blasts_5_percent' (the site's attested evidence, the fallback)"},
        None,
        {"marrow_blasts_percent": (5.0, "lowest marrow blast share that shows a relapse, in %"),
         "recovery_days": (28.0, "days after the end of a chemotherapy course counted as haematopoietic recovery "
                                 "(our assumption: the registry text gives no length)"),
         "blood_interval_days": (7.0, "least number of days between the two blood samples")},
        CodeType(frozenset(("marrow_blasts_5_percent", "peripheral_blood_blasts_twice", "extramedullary", "none")))),
    "pregnancy_status": Formula(
        "pregnancy_status",
        "false for a man or when recorded not applicable; else true if recorded pregnant or a positive pregnancy "
        "test within test_window_days before the anchor 'on', false if recorded not pregnant or a negative test in "
        "that window, otherwise unknown",
        {"stated": "a boolean (recorded pregnant)", "test": "a code with 'positive'", "test_date": "a date",
         "on": "a date", "sex": "a code with 'female'", "not_applicable": "a boolean"},
        None,
        {"test_window_days": (14.0, "greatest age of a pregnancy test, in days before the anchor "
                                    "(our assumption: the registry text does not say)")},
        BOOL),
    "viral_load": Formula(
        "viral_load",
        "from a numeric viral load: not detected (detected = false) is below the detection limit; a value at or "
        "above the assay's LLOQ, or detected = true, is detectable; a value below the LLOQ without 'detected' is "
        "unknown (the LLOQ is not the detection limit); without a numeric result, the recorded code",
        {"load": "a measurement (the numeric viral load)",
         "stated": "a code with 'negative' or 'below_detection_limit' (the recorded result, the fallback)"},
        None),
    "female_only": Formula(
        "female_only",
        "false for a man or when recorded not applicable; else the recorded value",
        {"stated": "a boolean", "sex": "a code with 'female'", "not_applicable": "a boolean"},
        None, {}, BOOL),
}

#: The type of the ``disease_assessments`` list (only formulas read it).
ASSESSMENTS = "assessments"


@attrs.frozen
class DataItem:
    """One data item the criteria read.

    Attributes
    ----------
    name : str
    source : str
        Where it comes from in the record (``"measurements.creatinine"``), or
        ``"formula:NAME"`` for a derived item.
    type : object
        Its type in the guard language (``"bool"``, a ``QuantityType``…).
    description : str
    unit, molar_mass : str or None
        The unit values are held in, and for a concentration its molar mass.
    where, where_not : dict
        For event lists: field to the values an entry must (not) have.
    formula : str or None
    inputs : dict
        Formula role to the item that fills it.
    max_age, age_anchor : tuple or None, str or None
        For a measurement: the greatest age of a value, ``(amount, "day"|"week"|"month"|"year")``, before
        the anchor (``"screening"``); an older or undated value is unknown.
    attested : bool
        True for items an investigator attests (judgements).
    """

    __repr__ = value_repr

    name: str
    source: str
    type: Any
    description: str = ""
    unit: str | None = None
    molar_mass: str | None = None
    where: Mapping[str, tuple[Any, ...]] = attrs.field(factory=dict)
    where_not: Mapping[str, tuple[Any, ...]] = attrs.field(factory=dict)
    formula: str | None = None
    inputs: Mapping[str, str] = attrs.field(factory=dict)
    attested: bool = False
    parameters: Mapping[str, float] = attrs.field(factory=dict)
    max_age: tuple[int, str] | None = None
    age_anchor: str | None = None

    @property
    def type_name(self) -> str:
        """The type as shown in the data dictionary."""
        kind = self.type
        if isinstance(kind, QuantityType):
            return "measurement" if kind.ranged else "quantity"
        if isinstance(kind, CodeType):
            return "code"
        return str(kind)

    @property
    def dimension(self) -> str | None:
        """The unit dimension for quantities, else ``None``."""
        return self.type.dimension if isinstance(self.type, QuantityType) else None


@attrs.frozen
class Criterion:
    """One inclusion or exclusion criterion (or a named definition other criteria use)."""

    __repr__ = value_repr

    id: str
    kind: str
    clause: str
    paraphrase: str
    when: Guard

    @property
    def reads(self) -> tuple[str, ...]:
        """The names the criterion reads, sorted (data items, ``ITEM.uln``, earlier definitions)."""
        return self._reads

    _reads: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    @_reads.default
    def _sorted_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.when.names))


Filler = Callable[[PatientRecord, dict[str, Any]], None]


@attrs.frozen
class EligibilitySpec:
    """The checked eligibility section of a protocol.

    Attributes
    ----------
    protocol_id, source : str
    items : dict
        Data item name to :class:`DataItem`, in declaration order.
    criteria : tuple of Criterion
        In protocol order; a criterion may read the definitions before it.
    used_by : dict
        Name read (item, ``ITEM.uln``/``ITEM.lln``) to the criteria that read it.
    """

    __repr__ = value_repr

    protocol_id: str
    source: str
    items: Mapping[str, DataItem]
    criteria: tuple[Criterion, ...]
    used_by: Mapping[str, tuple[str, ...]]
    _fillers: tuple[Filler, ...] = attrs.field(eq=False, repr=False)
    _codes: frozenset[str] = attrs.field(eq=False, repr=False)
    _attestations: frozenset[str] = attrs.field(eq=False, repr=False)
    _plan: tuple[tuple[str, int, Callable[[Mapping[str, Any]], Any]], ...] = attrs.field(eq=False, repr=False)
    _by_id: Mapping[str, Criterion] = attrs.field(eq=False, repr=False)
    _order: tuple[str, ...] = attrs.field(eq=False, repr=False, default=())
    #: The protocol's FHIR mapping (``fhir.toml``), or ``None`` when it has none.
    fhir: Any = attrs.field(eq=False, repr=False, default=None)

    @property
    def item_names(self) -> tuple[str, ...]:
        """Every name a criterion may read, in data-dictionary order (``ITEM.uln`` after its item)."""
        return self._order

    @property
    def plan(self) -> tuple[tuple[str, int, Callable[[Mapping[str, Any]], Any]], ...]:
        """``(id, kind, evaluate)`` per criterion, kind 0 inclusion, 1 exclusion, 2 definition."""
        return self._plan

    def criterion(self, criterion_id: str) -> Criterion:
        """The criterion with this id."""
        return self._by_id[criterion_id]

    def definition(self, name: str) -> Criterion | None:
        """The criterion called ``name`` if there is one (criteria may read earlier definitions)."""
        return self._by_id.get(name)

    def environment(self, record: PatientRecord, site: Any = None) -> dict[str, Any]:
        """Values of every data item for ``record`` (``None`` where unknown), units converted once.

        ``site`` (a :class:`~escalation_rules.eligibility.SiteRanges`) gives the
        reference ranges of measurements whose record carries none.

        Raises
        ------
        RecordError
            For a measurement or attestation this protocol does not know, or a
            unit of the wrong dimension.
        """
        problems = []
        if record.measurements is not None:
            for code in record.measurements.keys() - self._codes:
                problems.append(f"measurements[{record.measurements[code].index}].code: unknown data item "
                                f"{code!r} (this protocol reads: {', '.join(sorted(self._codes))})")
        for key in record.attestations.keys() - self._attestations:
            problems.append(f"attestations.{key}: unknown data item "
                            f"(this protocol reads: {', '.join(sorted(self._attestations))})")
        env: dict[str, Any] = {} if site is None else {"#site": site}
        try:
            for fill in self._fillers:
                fill(record, env)
        except RecordError as err:
            problems.extend(err.problems)
        if problems:
            raise RecordError([f"{record.source}: {p}" for p in problems])
        return env


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.max_age: tuple[int, str] | None = None  # the declared default for measurements
        self.age_anchor = "screening"

    def window(self, raw: Any, path: str) -> tuple[int, str] | None:
        """Read a window such as ``"14 days"`` (whole days, weeks, months or years)."""
        amount, _, unit = str(raw).strip().partition(" ")
        unit = unit.strip().rstrip("s")
        if not isinstance(raw, str) or not amount.isdigit() or unit not in ("day", "week", "month", "year"):
            self.problem(path, f"expected a window such as '14 days' or '1 month' (got {_show(raw)})")
            return None
        return int(amount), unit

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def text(self, table: Mapping[str, Any], key: str, path: str, required: bool = True) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.problem(f"{path}.{key}", "missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{path}.{key}", f"expected a non-empty string (got {_show(value)})")
            return None
        return value


_ITEM_KEYS = ("source", "formula", "inputs", "parameters", "max_age", "unit", "molar_mass", "description", "where",
              "where_not")


def _source_type(load: _Loader, path: str, raw: Mapping[str, Any], source: str) -> tuple[Any, dict[str, Any]]:
    """The type of a record path, and extra settings (unit, where...)."""
    head, _, rest = source.partition(".")
    extra: dict[str, Any] = {}
    unit = raw.get("unit")
    if head == "anchors" and rest in ("screening", "cell_collection", "enrolment", "planned_infusion"):
        return DATE, extra
    if source == "ecog":
        return INT, extra
    if source == "disease_assessments":
        return ASSESSMENTS, extra
    if source in ("weight", "life_expectancy") or (head == "measurements" and rest):
        default = {"weight": "kg", "life_expectancy": "week"}.get(source)
        unit = unit or default
        if not isinstance(unit, str):
            load.problem(f"{path}.unit", "missing (a measurement item declares the unit it is compared in)")
            return None, extra
        try:
            qtype = quantity_type(unit, ranged=head == "measurements")
        except GuardSyntaxError as err:
            load.problem(f"{path}.unit", err.message)
            return None, extra
        wanted = {"weight": "[mass]", "life_expectancy": "[time]"}.get(source)
        if wanted and qtype.dimension != wanted:
            load.problem(f"{path}.unit", f"expected a unit of {wanted} for {source} (got {_show(unit)})")
        molar = raw.get("molar_mass")
        if molar is not None:
            try:
                unit_factor("g/mol", molar.split(" ", 1)[1] if " " in molar else "", None)
                float(molar.split(" ", 1)[0])
            except (GuardSyntaxError, ValueError, IndexError):
                load.problem(f"{path}.molar_mass", f"expected a molar mass such as '113.12 g/mol' (got {_show(molar)})")
                molar = None
        extra.update(unit=unit, molar_mass=molar)
        if head == "measurements":
            extra["max_age"] = (load.window(raw["max_age"], f"{path}.max_age") if "max_age" in raw
                                else load.max_age)
            extra["age_anchor"] = load.age_anchor if extra["max_age"] is not None else None
        if head == "measurements" and not _ID.match(rest):
            load.problem(f"{path}.source", f"expected measurements.CODE with a lower-case code (got {_show(source)})")
        return qtype, extra
    if head == "attestations" and _ID.match(rest):
        extra["attested"] = True
        return BOOL, extra
    if head in SECTION_FIELDS and rest in SECTION_FIELDS[head]:
        kind = SECTION_FIELDS[head][rest]
        if kind in ("bool", "date"):
            return {"bool": BOOL, "date": DATE}[kind], extra
        if isinstance(kind, tuple) and kind[0] == "int":
            return INT, extra
        return CodeType(frozenset(kind)), extra
    if source in LIST_FIELDS:
        fields = LIST_FIELDS[source][0]
        for key in ("where", "where_not"):
            table = raw.get(key, {})
            if not isinstance(table, dict):
                load.problem(f"{path}.{key}", f"expected a table of field = [values] (got {_show(table)})")
                continue
            conditions = {}
            for field, values in table.items():
                values = values if isinstance(values, list) else [values]
                kind = fields.get(field)
                if kind is None or kind in ("date", "text"):
                    known = ", ".join(k for k, v in fields.items() if v not in ("date", "text"))
                    load.problem(f"{path}.{key}.{field}", f"not a field {source} entries can be matched on "
                                 f"(known: {known})")
                    continue
                allowed = (True, False) if kind == "bool" else (
                    tuple(range(kind[1], kind[2] + 1)) if kind[0] == "int" else kind)
                bad = [v for v in values if v not in allowed or isinstance(v, bool) != (kind == "bool")]
                if bad:
                    load.problem(f"{path}.{key}.{field}", f"unknown value(s) {_show(bad)} "
                                 f"(expected: {', '.join(map(str, allowed))})")
                conditions[field] = tuple(values)
            extra[key] = conditions
        return EVENTS, extra
    load.problem(f"{path}.source", f"unknown record field {source!r} (see docs/eligibility.md for the record format)")
    return None, extra


def _read_items(load: _Loader, raw_items: Any) -> dict[str, DataItem]:
    items: dict[str, DataItem] = {}
    if not isinstance(raw_items, dict) or not raw_items:
        load.problem("eligibility.items", "expected a table of data items")
        return items
    for name, raw in raw_items.items():
        path = f"eligibility.items.{name}"
        if not _ID.match(name):
            load.problem(path, "expected a lower-case name with letters, digits and underscores")
            continue
        if not isinstance(raw, dict):
            load.problem(path, f"expected a table (got {_show(raw)})")
            continue
        for key in raw:
            if key not in _ITEM_KEYS:
                load.problem(f"{path}.{key}", f"unknown key (expected one of: {', '.join(_ITEM_KEYS)})")
        description = load.text(raw, "description", path, required=False) or ""
        if "formula" in raw:
            item = _formula_item(load, path, name, raw, items, description)
            if item is not None:
                items[name] = item
            continue
        source = load.text(raw, "source", path)
        if source is None:
            continue
        kind, extra = _source_type(load, path, raw, source)
        if "max_age" in raw and not source.startswith("measurements."):
            load.problem(f"{path}.max_age", "only measurements (measurements.CODE) have a maximum age")
        if kind is None:
            continue
        if kind != EVENTS and ("where" in raw or "where_not" in raw):
            load.problem(f"{path}.where", "only event lists (medications, therapies, events...) take where")
        if not isinstance(kind, QuantityType) and ("unit" in raw or "molar_mass" in raw):
            load.problem(f"{path}.unit", f"{source} has no unit")
        items[name] = DataItem(name, source, kind, description, **extra)
    return items


def _formula_item(load: _Loader, path: str, name: str, raw: Mapping[str, Any], items: Mapping[str, DataItem],
                  description: str) -> DataItem | None:
    formula = FORMULAS.get(raw["formula"])
    if formula is None:
        load.problem(f"{path}.formula", f"unknown formula {_show(raw['formula'])} (known: {', '.join(FORMULAS)})")
        return None
    inputs = raw.get("inputs")
    if not isinstance(inputs, dict):
        load.problem(f"{path}.inputs", f"expected a table of role = item ({', '.join(formula.roles)})")
        return None
    ok = True
    for role in formula.roles:
        if role not in inputs:
            load.problem(f"{path}.inputs.{role}", f"missing ({formula.roles[role]})")
            ok = False
    for role, item_name in inputs.items():
        where = f"{path}.inputs.{role}"
        if role not in formula.roles:
            load.problem(where, f"unknown role (expected: {', '.join(formula.roles)})")
            ok = False
        elif item_name not in items:
            load.problem(where, f"unknown item {item_name!r} (items must be declared before formulas that use them)")
            ok = False
        elif not _fits(formula.name, role, items[item_name]):
            load.problem(where, f"{item_name!r} is {items[item_name].type} but the role needs {formula.roles[role]}")
            ok = False
    parameters = {key: default for key, (default, _) in formula.parameters.items()}
    raw_parameters = raw.get("parameters", {})
    if not isinstance(raw_parameters, dict):
        load.problem(f"{path}.parameters", f"expected a table of name = number (got {_show(raw_parameters)})")
        ok = False
        raw_parameters = {}
    for key, value in raw_parameters.items():
        if key not in formula.parameters:
            known = ", ".join(formula.parameters) or "none"
            load.problem(f"{path}.parameters.{key}", f"unknown parameter (this formula takes: {known})")
            ok = False
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            load.problem(f"{path}.parameters.{key}", f"expected a number of 0 or more (got {_show(value)})")
            ok = False
        else:
            parameters[key] = float(value)
    if not ok:
        return None
    unit = raw.get("unit", formula.unit)
    if formula.name == "viral_load":
        kind: Any = items[inputs["stated"]].type
    elif formula.result is not None:
        kind = formula.result
    elif formula.unit is None:
        kind = INT
    else:
        try:
            kind = quantity_type(unit)
            unit_factor(formula.unit, unit)
        except GuardSyntaxError as err:
            load.problem(f"{path}.unit", err.message)
            return None
    return DataItem(name, f"formula:{formula.name}", kind, description, unit=unit if formula.unit else None,
                    formula=formula.name, inputs=dict(inputs), parameters=parameters)


def _fits(formula: str, role: str, item: DataItem) -> bool:
    kind = item.type
    if formula == "age_years":
        return kind == DATE
    if formula in ("pregnancy_status", "female_only"):
        if role == "sex":
            return isinstance(kind, CodeType) and "female" in kind.values
        if role in ("stated", "not_applicable"):
            return kind == BOOL
        if role == "test":
            return isinstance(kind, CodeType) and "positive" in kind.values
        return kind == DATE
    if formula == "viral_load":
        if role == "load":
            return isinstance(kind, QuantityType) and item.source.startswith("measurements.")
        return isinstance(kind, CodeType) and bool({"negative", "below_detection_limit"} & kind.values)
    if formula == "relapse_evidence":
        wanted = {"assessments": ASSESSMENTS, "remission": DATE, "chemotherapy": EVENTS, "chemotherapy_drugs": EVENTS}
        if role in wanted:
            return kind == wanted[role]
        return isinstance(kind, CodeType) and "marrow_blasts_5_percent" in kind.values
    if role == "age":
        return kind == INT
    if role == "sex":
        return isinstance(kind, CodeType) and "female" in kind.values
    if role == "weight":
        return isinstance(kind, QuantityType) and kind.dimension == "[mass]"
    if role == "creatinine" and isinstance(kind, QuantityType):
        try:
            unit_factor(kind.unit, "mg/dL", item.molar_mass)
        except GuardSyntaxError:
            return False
        return True
    return False


def _names(items: Mapping[str, DataItem]) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for item in items.values():
        names[item.name] = item.type
        if isinstance(item.type, QuantityType) and item.type.ranged:
            names[f"{item.name}.uln"] = item.type
            names[f"{item.name}.lln"] = item.type
    return names


def _read_criteria(load: _Loader, raw: Any, items: Mapping[str, DataItem]) -> list[Criterion]:
    criteria: list[Criterion] = []
    if not isinstance(raw, list) or not raw:
        load.problem("eligibility.criteria", "expected a list of criteria ([[eligibility.criteria]])")
        return criteria
    names = _names(items)
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"eligibility.criteria[{i}]"
        if not isinstance(entry, dict):
            load.problem(path, f"expected a table (got {_show(entry)})")
            continue
        for key in entry:
            if key not in ("id", "kind", "clause", "paraphrase", "when"):
                load.problem(f"{path}.{key}", "unknown key (expected one of: clause, id, kind, paraphrase, when)")
        cid = load.text(entry, "id", path)
        kind = load.text(entry, "kind", path)
        clause = load.text(entry, "clause", path)
        paraphrase = load.text(entry, "paraphrase", path)
        text = load.text(entry, "when", path)
        if cid is not None:
            if not _ID.match(cid):
                load.problem(f"{path}.id", f"expected a lower-case id with underscores (got {_show(cid)})")
            elif cid in seen or cid in names:
                load.problem(f"{path}.id", f"{cid!r} is already used by another criterion or data item")
            path = f"eligibility.criteria[{i}]"
        if kind is not None and kind not in KINDS:
            load.problem(f"{path}.kind", f"expected one of {', '.join(KINDS)} (got {_show(kind)})")
        if text is None or cid is None:
            continue
        try:
            guard = parse_criterion(text, names)
        except GuardSyntaxError as err:
            load.problem(f"{path}.when", err.message)
            continue
        seen.add(cid)
        if kind == "definition":
            names[cid] = BOOL
        if None not in (kind, clause, paraphrase):
            criteria.append(Criterion(cid, str(kind), str(clause), str(paraphrase), guard))
    return criteria


def load_eligibility(protocol: Protocol) -> EligibilitySpec:
    """Check the protocol's ``eligibility`` section and build its screener.

    Raises
    ------
    ProtocolError
        With one line per problem, e.g. ``spec/x: eligibility.criteria[3].when: ...``.

    Examples
    --------
    >>> from escalation_rules import builtin_design, load_protocol
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> sum(c.kind == "exclusion" for c in spec.criteria) > 20
    True
    >>> load_eligibility(builtin_design("3+3-deescalate", 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.errors.ProtocolError: 3+3-deescalate (--doses 3): eligibility: this protocol declares no ...
    """
    from ..graph import as_protocol

    protocol = as_protocol(protocol)
    source = protocol.source
    raw = protocol.extra.get("eligibility")
    if not isinstance(raw, dict):
        raise ProtocolError([f"{source}: eligibility: this protocol declares no eligibility criteria"])
    load = _Loader(protocol.key_source("eligibility"))
    for key in raw:
        if key not in ("items", "criteria", "description", "measurement_age"):
            load.problem(f"eligibility.{key}", "unknown key (expected one of: criteria, description, items, "
                         "measurement_age)")
    ages = raw.get("measurement_age", {})
    if not isinstance(ages, dict):
        load.problem("eligibility.measurement_age", f"expected a table (got {_show(ages)})")
        ages = {}
    for key in ages:
        if key not in ("default", "anchor"):
            load.problem(f"eligibility.measurement_age.{key}", "unknown key (expected one of: anchor, default)")
    if "default" in ages:
        load.max_age = load.window(ages["default"], "eligibility.measurement_age.default")
    if ages.get("anchor", "screening") not in ("screening", "cell_collection", "enrolment", "planned_infusion"):
        load.problem("eligibility.measurement_age.anchor", "expected one of screening, cell_collection, enrolment, "
                     f"planned_infusion (got {_show(ages['anchor'])})")
    else:
        load.age_anchor = ages.get("anchor", "screening")
    items = _read_items(load, raw.get("items"))
    before = len(load.problems)
    criteria = _read_criteria(load, raw.get("criteria"), items)
    if len(load.problems) > before:  # what a broken criterion reads is not known: no "never read" lines
        raise ProtocolError(load.problems)
    used: dict[str, list[str]] = {}
    definitions = {c.id for c in criteria if c.kind == "definition"}
    for criterion in criteria:
        for name in sorted(criterion.when.names):
            used.setdefault(name, []).append(criterion.id)
    for item in items.values():
        for role_item in item.inputs.values():
            used.setdefault(role_item, []).append(item.name)
    for name in items:
        if name not in used:
            load.problem(f"eligibility.items.{name}", "declared but no criterion or formula reads it")
    for cid in definitions:
        if cid not in used:
            load.problem("eligibility.criteria", f"definition {cid!r} is never used by a later criterion")
    if load.problems:
        raise ProtocolError(load.problems)
    fillers = _fillers(items)
    codes = frozenset(i.source.split(".", 1)[1] for i in items.values() if i.source.startswith("measurements."))
    attested = frozenset(i.source.split(".", 1)[1] for i in items.values() if i.attested)
    plan = tuple((c.id, KINDS.index(c.kind), c.when._run) for c in criteria)
    fhir = None
    if "fhir" in protocol.extra:
        from ._fhir import load_mapping

        fhir = load_mapping(protocol.extra["fhir"], protocol.key_source("fhir"), codes)
    return EligibilitySpec(protocol.id, source, dict(items), tuple(criteria),
                           {k: tuple(v) for k, v in used.items()}, fillers, codes, attested, plan,
                           {c.id: c for c in criteria}, tuple(_names(items)), fhir)


# ------------------------------------------------------------------ filling an environment


def _fillers(items: Mapping[str, DataItem]) -> tuple[Filler, ...]:
    """One filler per group of plain fields (a section, the anchors, the attestations), one per other item.

    Formula items come last, in declaration order, so their inputs are filled first.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    singles: list[Filler] = []
    formulas: list[Filler] = []
    for item in items.values():
        head, _, rest = item.source.partition(".")
        if item.formula is not None:
            formulas.append(_formula_filler(item, items))
        elif head in SECTION_FIELDS or head in ("anchors", "attestations"):
            groups.setdefault(head, []).append((item.name, rest))
        else:
            singles.append(_filler(item, items))
    for head in ("anchors", "attestations"):
        if head in groups:
            singles.append(_group_filler(head, tuple(groups.pop(head))))
    if groups:
        singles.append(_sections_filler(tuple((head, tuple(pairs)) for head, pairs in groups.items())))
    return (*singles, *formulas)


def _sections_filler(groups: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> Filler:
    """Every item read from the flat sections, in one pass."""
    def sections(rec: PatientRecord, env: dict[str, Any]) -> None:
        tables = rec.sections
        for head, pairs in groups:
            table = tables.get(head)
            if table is None:
                for name, _ in pairs:
                    env[name] = None
            else:
                for name, key in pairs:
                    env[name] = table.get(key)
    return sections


def _group_filler(head: str, pairs: tuple[tuple[str, str], ...]) -> Filler:
    if head == "anchors":
        def anchors(rec: PatientRecord, env: dict[str, Any]) -> None:
            for name, key in pairs:
                env[name] = getattr(rec.anchors, key)
        return anchors
    if head == "attestations":
        def attested(rec: PatientRecord, env: dict[str, Any]) -> None:
            table = rec.attestations
            for name, key in pairs:
                env[name] = table.get(key)
        return attested
    return _sections_filler(((head, pairs),))


def _filler(item: DataItem, items: Mapping[str, DataItem]) -> Filler:
    """A function that puts ``item``'s value (converted to its unit) into the environment."""
    name, source = item.name, item.source
    head, _, rest = source.partition(".")
    if item.formula is not None:
        return _formula_filler(item, items)
    if source == "ecog":
        return lambda rec, env: env.__setitem__(name, rec.ecog)
    if item.type == ASSESSMENTS:
        return lambda rec, env: env.__setitem__(name, rec.lists.get(source))
    if isinstance(item.type, QuantityType):
        unit, molar = item.type.unit, item.molar_mass
        if head == "measurements":
            uln, lln = f"{name}.uln", f"{name}.lln"
            factors: dict[str, float] = {}  # record unit -> factor into this item's unit, worked out once

            max_age, anchor = item.max_age, item.age_anchor
            why = f"{name}#why"

            def measurement(rec: PatientRecord, env: dict[str, Any]) -> None:
                m = None if rec.measurements is None else rec.measurements.get(rest)
                if m is None:
                    env[name] = env[uln] = env[lln] = None
                    return
                if max_age is not None:
                    stale = _too_old(m.date, getattr(rec.anchors, str(anchor)), max_age, str(anchor))
                    if stale is not None:
                        env[name] = env[uln] = env[lln] = None
                        env[why] = stale
                        return
                f = factors.get(m.unit)
                if f is None:
                    f = factors[m.unit] = _factor(m.unit, unit, molar, f"measurements[{m.index}].unit")
                env[name] = m.value if f == 1.0 else snap(m.value * f)
                if m.low is None and m.high is None:
                    site = env.get("#site")
                    rng = None if site is None else site.range(rest, *_sex_age(rec))
                    if rng is None:
                        env[uln] = env[lln] = None
                        env[f"{uln}#why"] = env[f"{lln}#why"] = (
                            "no reference range in the record and no site file (screen --site)" if site is None else
                            f"no reference range in the record, and none in the site file {site.name} fits "
                            "this patient's sex and age")
                        return
                    f = factors.get(rng.unit) or _factor(rng.unit, unit, molar, f"site range {rng.unit}")
                    env[uln] = None if rng.high is None else snap(rng.high * f)
                    env[lln] = None if rng.low is None else snap(rng.low * f)
                    env[f"{name}#range"] = rng
                    return
                if m.range_unit != m.unit:
                    f = factors.get(m.range_unit) or _factor(m.range_unit, unit, molar,
                                                            f"measurements[{m.index}].reference_range.unit")
                env[uln] = None if m.high is None else m.high if f == 1.0 else snap(m.high * f)
                env[lln] = None if m.low is None else m.low if f == 1.0 else snap(m.low * f)
            return measurement

        def quantity(rec: PatientRecord, env: dict[str, Any]) -> None:
            q = getattr(rec, source)
            if q is None:
                env[name] = None
                return
            f = _factor(q.unit, unit, molar, f"{source}.unit")
            env[name] = q.value if f == 1.0 else snap(q.value * f)
        return quantity
    # event lists
    where = tuple((_getter(source, k), frozenset(v)) for k, v in item.where.items())
    where_not = tuple((_getter(source, k), frozenset(v)) for k, v in item.where_not.items())
    required = LIST_FIELDS[source][1]
    if len(where) == 1 and not where_not and next(iter(item.where)) in required:
        # the common case: one condition on a field every entry has, so no entry can be unknown
        get, allowed = where[0]

        def by_kind(rec: PatientRecord, env: dict[str, Any]) -> None:
            entries = rec.lists.get(source)
            env[name] = None if entries is None else tuple(
                (e.start, e.end) for e in entries if get(e) in allowed)
        return by_kind

    def events(rec: PatientRecord, env: dict[str, Any]) -> None:
        entries = rec.lists.get(source)
        if entries is None:
            env[name] = None
            return
        spans = []
        for entry in entries:
            keep = _matches(entry, where)
            if keep is not False and where_not:
                dropped = _matches(entry, where_not)
                keep = None if keep is None or dropped is None else not dropped
            if keep is None:  # an entry whose relevant field is not known: the list is not known
                env[name] = None
                return
            if keep:
                spans.append((entry.start, entry.end))
        env[name] = tuple(spans)
    return events


def _sex_age(rec: PatientRecord) -> tuple[str | None, int | None]:
    """The record's sex and completed years at screening (``None`` where not known), for site ranges."""
    demographics = rec.sections.get("demographics", {})
    birth = demographics.get("birth_date")
    return demographics.get("sex"), None if birth is None else _completed_years(birth, rec.anchors.screening)


@functools.lru_cache(maxsize=4096)  # anchors repeat across a batch
def _earliest(anchor: dt.date, amount: int, unit: str) -> dt.date:
    """The earliest date within ``amount unit`` before ``anchor``."""
    return _shift(anchor, -amount, unit)


def _too_old(day: dt.date | None, anchor: dt.date | None, window: tuple[int, str], anchor_name: str) -> str | None:
    """Why a measurement of ``day`` is too old (or undated) for the window before the anchor, else ``None``."""
    amount, unit = window
    span = f"{amount} {unit}{'s' if amount != 1 else ''}"
    if day is None:
        return f"undated, so it cannot be shown to be within {span} before {anchor_name}"
    if anchor is None:
        return f"no {anchor_name} date to check its age against (at most {span})"
    if day < _earliest(anchor, amount, unit):
        return f"measured {day}, more than {span} before {anchor_name} {anchor} (the protocol's window)"
    return None


def _matches(entry: Any, conditions: tuple[tuple[Callable[[Any], Any], frozenset[Any]], ...]) -> bool | None:
    """Kleene: does the entry meet every condition (``None`` if a field it needs is not known)?"""
    unknown = False
    for get, allowed in conditions:
        value = get(entry)
        if value is None:
            unknown = True
        elif value not in allowed:
            return False
    return None if unknown else True


def _getter(source: str, key: str) -> Callable[[Any], Any]:
    """Read field ``key`` of an entry of list ``source`` (an Exposure or a HistoryEvent)."""
    if source in ("medications", "therapies"):
        return operator.attrgetter(key)
    if key in ("category", "type"):
        return operator.attrgetter("kind")
    return lambda entry: entry.details.get(key)


def _factor(source: str, target: str, molar: str | None, path: str) -> float:
    try:
        return lab_factor(source, target, molar)
    except GuardSyntaxError:
        raise RecordError([f"{path}: expected a unit convertible to {target} (got {_show(source)})"]) from None


def _formula_filler(item: DataItem, items: Mapping[str, DataItem]) -> Filler:
    name, inputs = item.name, item.inputs
    if item.formula == "age_years":
        birth, on = inputs["birth_date"], inputs["on"]

        def age(rec: PatientRecord, env: dict[str, Any]) -> None:
            b, d = env[birth], env[on]
            env[name] = None if b is None or d is None else _completed_years(b, d)
        return age
    if item.formula == "relapse_evidence":
        return _relapse_filler(item)
    if item.formula == "viral_load":
        return _viral_filler(item, items)
    if item.formula in ("pregnancy_status", "female_only"):
        return _pregnancy_filler(item)
    age_name, sex, weight, creat = inputs["age"], inputs["sex"], inputs["weight"], inputs["creatinine"]
    weight_item, creat_item = items[weight], items[creat]
    assert isinstance(weight_item.type, QuantityType) and isinstance(creat_item.type, QuantityType)
    to_kg = unit_factor(weight_item.type.unit, "kg")
    to_mgdl = unit_factor(creat_item.type.unit, "mg/dL", creat_item.molar_mass)
    out = unit_factor("mL/min", str(item.unit))

    def cockcroft_gault(rec: PatientRecord, env: dict[str, Any]) -> None:
        a, s, w, c = env[age_name], env[sex], env[weight], env[creat]
        if a is None or s is None or w is None or c is None or c <= 0:
            env[name] = None
            return
        env[name] = (140 - a) * w * to_kg * (0.85 if s == "female" else 1.0) / (72 * c * to_mgdl) * out
    return cockcroft_gault


def _viral_filler(item: DataItem, items: Mapping[str, DataItem]) -> Filler:
    """A viral load against its assay's limits, the recorded code as fallback."""
    name, why = item.name, f"{item.name}#why"
    load_name, stated_name = item.inputs["load"], item.inputs["stated"]
    code = items[load_name].source.split(".", 1)[1]
    codes = items[stated_name].type.values
    negative, positive = (("below_detection_limit", "detectable") if "below_detection_limit" in codes
                          else ("negative", "positive"))

    def viral(rec: PatientRecord, env: dict[str, Any]) -> None:
        m = None if rec.measurements is None else rec.measurements.get(code)
        if m is None or env[load_name] is None:  # no numeric result, or one too old
            stated = env[stated_name]
            env[name] = stated
            if stated is not None:
                env[why] = f"recorded as {stated}" + ("" if m is None else f" ({env.get(load_name + '#why')})")
            return
        shown = f"{m.value:g} {m.unit} on {m.date}" if m.date else f"{m.value:g} {m.unit}"
        if m.detected is False:
            env[name], env[why] = negative, f"{shown}: target not detected"
        elif m.lloq is not None and m.value >= m.lloq:
            env[name], env[why] = positive, f"{shown}, at or above the LLOQ {m.lloq:g} {m.unit}"
        elif m.detected:
            env[name], env[why] = positive, f"{shown}: detected" + (
                "" if m.lloq is None else f" below the LLOQ {m.lloq:g} {m.unit}")
        else:
            unsure = (f"{shown} is below the LLOQ {m.lloq:g} {m.unit}, but whether the target was detected is "
                      "not recorded (measurements[].detected)" if m.lloq is not None else
                      f"{shown} without the assay's LLOQ or whether the target was detected")
            env[name] = env[stated_name]  # the recorded result, if any, settles it
            env[why] = unsure if env[name] is None else f"recorded as {env[name]} ({unsure})"
    return viral


def _pregnancy_filler(item: DataItem) -> Filler:
    """Pregnancy or lactation: not applicable to a man or when so recorded; else the recorded status or a test.

    For ``pregnancy_status`` a pregnancy test within the window also counts (a
    positive test wins over a recorded "not pregnant").
    """
    name, inputs, why = item.name, item.inputs, f"{item.name}#why"
    stated_name, sex_name, na_name = inputs["stated"], inputs["sex"], inputs["not_applicable"]
    tested = item.formula == "pregnancy_status"
    window = dt.timedelta(days=item.parameters.get("test_window_days", 0.0))

    def pregnancy(rec: PatientRecord, env: dict[str, Any]) -> None:
        stated, sex, not_applicable = env[stated_name], env[sex_name], env[na_name]
        test = day = on = recent = None
        if tested:
            test, day, on = env[inputs["test"]], env[inputs["test_date"]], env[inputs["on"]]
            if test is not None and day is not None and on is not None:
                recent = on - window <= day <= on
                if not recent:
                    env[why] = f"the {test} pregnancy test of {day} is not within {window.days} days before {on}"
        if sex == "male":
            env[name], env[why] = False, "not applicable to a man"
        elif recent and test == "positive":
            env[name], env[why] = True, f"positive pregnancy test on {day}"
        elif stated is not None:
            env[name], env[why] = stated, f"recorded as {'true' if stated else 'false'}"
        elif not_applicable:
            env[name], env[why] = False, "recorded as not applicable (pregnancy.not_applicable)"
        elif recent:
            env[name], env[why] = False, f"negative pregnancy test on {day}, within {window.days} days before {on}"
        else:
            env[name] = None
    return pregnancy


def _relapse_filler(item: DataItem) -> Filler:
    """Relapse evidence from the dated results (Inclusion 4 (1)), the attested code as fallback.

    The value is the evidence code (or ``'none'``); ``env[NAME + '#why']``
    says in words which results showed it, or that the attestation was used.
    """
    name, inputs, params = item.name, item.inputs, item.parameters
    remission_name, attested_name = inputs["remission"], inputs["attested"]
    chemo_names = (inputs["chemotherapy"], inputs["chemotherapy_drugs"])
    threshold, recovery = params["marrow_blasts_percent"], dt.timedelta(days=params["recovery_days"])
    interval = params["blood_interval_days"]

    def relapse(rec: PatientRecord, env: dict[str, Any]) -> None:
        why = f"{name}#why"
        data = rec.lists.get("disease_assessments")
        remission = env[remission_name]
        found, note = _evidence(data, remission, [env[c] for c in chemo_names], threshold, recovery, interval)
        if found is None:
            attested = env[attested_name]
            env[name] = attested
            if attested is not None:
                reason = ("no dated disease assessments" if data is None else
                          "no first remission date" if remission is None else note)
                env[why] = f"attested as diagnosis.relapse_evidence ({reason})"
            elif note:
                env[why] = note
            return
        env[name] = found
        env[why] = f"from dated results: {note}"
    return relapse


def _evidence(data: tuple[Any, ...] | None, remission: dt.date | None, chemo: list[Any], threshold: float,
              recovery: dt.timedelta, interval: float) -> tuple[str | None, str]:
    """The evidence code the results show, and its description; ``(None, why)`` when they cannot tell."""
    if data is None or remission is None:
        return None, ""
    after = sorted((a for a in data if a.date > remission), key=lambda a: a.date)
    spans: list[tuple[dt.date, dt.date | None]] | None = []
    for courses in chemo:
        if courses is None:
            spans = None
            break
        assert spans is not None
        spans.extend(courses)
    unsure, skipped = [], []
    for a in after:
        if a.specimen != "bone_marrow" or a.blasts_percent is None or a.blasts_percent < threshold:
            continue
        if spans is None:
            unsure.append(a)
            continue
        recovering = [(s, e) for s, e in spans if s <= a.date and (e is None or a.date <= e + recovery)]
        if recovering:
            start, end = recovering[-1]
            skipped.append(f"; the marrow's {a.blasts_percent:g}% on {a.date} falls in the recovery after the "
                           f"chemotherapy course {start} to {end or 'ongoing'}")
        else:
            return "marrow_blasts_5_percent", (f"bone marrow {a.blasts_percent:g}% blasts on {a.date}, after the "
                                               f"remission of {remission}, outside post-chemotherapy recovery")
    blood = [a for a in after if a.specimen == "peripheral_blood" and a.blasts_percent]
    for i, first in enumerate(blood):
        for second in blood[i + 1:]:
            if (second.date - first.date).days >= interval:
                return "peripheral_blood_blasts_twice", (
                    f"blood blasts on {first.date} ({first.blasts_percent:g}%) and {second.date} "
                    f"({second.blasts_percent:g}%), {(second.date - first.date).days} days apart, after the "
                    f"remission of {remission}")
    for a in after:
        if a.specimen == "extramedullary" and a.lesion_present:
            return "extramedullary", f"extramedullary lesion found on {a.date}, after the remission of {remission}"
    if unsure:
        return None, (f"bone marrow {unsure[0].blasts_percent:g}% blasts on {unsure[0].date}, but the chemotherapy "
                      "courses are not recorded, so the recovery period cannot be ruled out")
    return "none", (f"no marrow sample with {threshold:g}% blasts or more outside post-chemotherapy recovery, no two "
                    f"blood samples with blasts {interval:g} days apart and no new extramedullary lesion after "
                    f"the remission of {remission}" + "".join(skipped))


def _completed_years(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
