"""Patient records: the JSON format, its frozen attrs classes and a checking reader.

A record is one JSON object (documented in ``docs/eligibility.md``, schema in
``spec/patients/patient-record.schema.json``).  :func:`read_record` checks
its shape, types, units, value ranges and dates, and refuses it with one line
per problem naming the field.  A key that is absent, or ``null``, means *not
known*; an empty list means *known to be none*.

Examples
--------
>>> rec = read_record({"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 1})
>>> rec.ecog, rec.anchors.screening.isoformat(), rec.measurements
(1, '2026-03-02', None)
>>> read_record({"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 7})
Traceback (most recent call last):
...
escalation_rules.eligibility._record.RecordError: record: ecog: expected 0 to 5 (got 7)
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._attrs import value_repr
from .._limits import MAX_FILE_BYTES, MAX_INT_DIGITS, show
from ..errors import EscalationRulesError, GuardSyntaxError
from ..guards import parse_unit
from ._units import lab_factor, lab_unit

__all__ = [
    "ASSESSMENT_FIELDS",
    "PLAUSIBLE",
    "SECTION_FIELDS",
    "Anchors",
    "Assessment",
    "Exposure",
    "HistoryEvent",
    "Measurement",
    "PatientRecord",
    "Quantity",
    "RecordError",
    "read_record",
    "read_record_json",
    "record_schema",
]


class RecordError(EscalationRulesError):
    """A patient record was refused; :attr:`problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


_POSNEG = ("positive", "negative")

#: The flat sections of a record: field name to kind ("bool", "date",
#: ("int", low, high)) or the tuple of allowed codes.
SECTION_FIELDS: dict[str, dict[str, Any]] = {
    "demographics": {"birth_date": "date", "sex": ("female", "male")},
    "diagnosis": {
        "who2022": ("aml", "b_all_lbl", "t_all_lbl", "mpal", "other"),
        "date": "date",
        "relapsed": "bool",
        "first_remission_date": "date",
        "relapse_date": "date",
        "relapse_evidence": ("marrow_blasts_5_percent", "peripheral_blood_blasts_twice", "extramedullary"),
        "salvage_courses_without_remission": ("int", 0, 99),
        "targeted_courses_without_remission": ("int", 0, 99),
        "induction_completed": "bool",
        "induction_complete_remission": "bool",
        "second_line_given": "bool",
        "second_line_complete_remission": "bool",
        "mrd_persistent_positive": "bool",
        "extramedullary_disease": "bool",
    },
    "transplant": {
        "allogeneic": "bool",
        "date": "date",
        "relapse_after_transplant": "bool",
        "acute_gvhd_active": "bool",
        "acute_gvhd_grade": ("int", 0, 4),
        "acute_gvhd_grade_date": "date",
        "chronic_gvhd_active": "bool",
    },
    "serology": {
        "hbsag": _POSNEG,
        "hbcab": _POSNEG,
        "hbv_dna": ("below_detection_limit", "detectable"),
        "hcv_ab": _POSNEG,
        "hcv_rna": _POSNEG,
        "tppa": _POSNEG,
        "hiv_ab": _POSNEG,
    },
    "cardiac": {
        "inadequate_function": "bool",
        "ecg_clinically_significant_change": "bool",
        "congestive_heart_failure": "bool",
        "unstable_angina": "bool",
        "significant_arrhythmia": "bool",
        "uncontrolled_hypertension": "bool",
    },
    "pulmonary": {"inadequate_function": "bool"},
    "cns": {"active_uncontrolled_involvement": "bool", "history_requiring_treatment": "bool"},
    "pregnancy": {"not_applicable": "bool", "pregnant": "bool", "lactating": "bool", "planning_pregnancy": "bool",
                  "test_result": _POSNEG, "test_date": "date"},
    "allergies": {"product_components": "bool", "cyclophosphamide": "bool", "fludarabine": "bool"},
    "plans": {"long_term_systemic_corticosteroids": "bool", "immunosuppression_over_two_years": "bool"},
    "consent": {"signed": "bool", "date": "date"},
}

#: Lists of dated entries: field name to kind, and which fields are required.
LIST_FIELDS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "medications": ({
        "name": "text",
        "category": ("corticosteroid", "immunosuppressant", "pd1_antibody", "pdl1_antibody", "targeted",
                     "chemotherapy", "other"),
        "route": ("oral", "intravenous", "subcutaneous", "intramuscular", "inhaled", "topical", "other"),
        "indication": ("treatment", "physiological_replacement", "unspecified"),
        "prednisone_equivalent_mg_per_day": ("number", 0.0, 10000.0),
        "start": "date", "end": "date",
    }, ("category", "start")),
    "therapies": ({
        "name": "text",
        "category": ("car_t", "car_nk", "gene_modified_cell", "allogeneic_hsct", "autologous_hsct",
                     "chemotherapy", "radiotherapy", "other"),
        "start": "date", "end": "date",
    }, ("category", "start")),
    "events": ({
        "type": ("arterial_thrombosis", "deep_vein_thrombosis", "pulmonary_embolism", "gi_bleeding",
                 "hypertensive_crisis", "hypertensive_encephalopathy", "coronary_angioplasty",
                 "electrical_cardioversion", "other"),
        "symptomatic": "bool", "start": "date", "end": "date",
    }, ("type", "start")),
    "malignancies": ({
        "category": ("cervical_carcinoma_in_situ", "basal_cell_skin", "squamous_cell_skin", "localized_prostate",
                     "ductal_carcinoma_in_situ", "thyroid", "other"),
        "curatively_treated": "bool", "start": "date", "end": "date",
    }, ("category", "curatively_treated", "start")),
    "transplants": ({
        "type": ("allogeneic", "autologous"),
        "start": "date",
    }, ("type", "start")),
    "infections": ({
        "type": ("bacterial", "viral", "fungal", "other"),
        "site": ("simple_urinary_tract", "upper_respiratory", "other"),
        "requires_treatment": "bool", "controlled": "bool", "start": "date", "end": "date",
    }, ("type", "site", "requires_treatment", "controlled", "start")),
}

#: Plausible ranges of physical quantities; a value outside is refused as impossible (bounds included).
#: Record place (``weight``, ``life_expectancy``, ``measurements.CODE``) to (unit, lowest, highest).
PLAUSIBLE: dict[str, tuple[str, float, float]] = {
    "weight": ("kg", 0.2, 650.0),
    "life_expectancy": ("year", 0.0, 130.0),
    "measurements.height": ("cm", 20.0, 280.0),
    "measurements.spo2": ("%", 0.0, 100.0),
    "measurements.lvef": ("%", 0.0, 100.0),
    "measurements.cd7_flow": ("%", 0.0, 100.0),
    "measurements.cd7_ihc": ("%", 0.0, 100.0),
}
_MAX_AGE = 130
_PLACES = {key.split(".", 1)[1]: key for key in PLAUSIBLE if key.startswith("measurements.")}

#: Dated disease assessments (relapse evidence, Inclusion 4 (1)): field to kind; specimen and date required.
ASSESSMENT_FIELDS: dict[str, Any] = {
    "specimen": ("bone_marrow", "peripheral_blood", "extramedullary"),
    "date": "date",
    "blasts_percent": ("number", 0.0, 100.0),
    "lesion_present": "bool",
}

_TOP_KEYS = ("format", "id", "as_of", "anchors", "ecog", "weight", "life_expectancy", "measurements",
             "attestations", "disease_assessments", *SECTION_FIELDS, *LIST_FIELDS)
_ANCHORS = ("screening", "cell_collection", "enrolment", "planned_infusion")
#: Pairs of anchors in their natural order: (earlier, later).
_ANCHOR_ORDER = (("screening", "cell_collection"), ("screening", "enrolment"),
                 ("cell_collection", "planned_infusion"), ("enrolment", "planned_infusion"),
                 ("screening", "planned_infusion"))
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


@attrs.frozen
class Quantity:
    """A value with its unit as written in the record, and when it was measured."""

    __repr__ = value_repr

    value: float
    unit: str
    date: dt.date | None = None


@attrs.frozen
class Measurement:
    """A laboratory or other measurement, with its own reference range (in ``range_unit``)."""

    __repr__ = value_repr

    code: str
    value: float
    unit: str
    date: dt.date | None
    low: float | None
    high: float | None
    range_unit: str
    index: int | None = attrs.field(default=None, eq=False, repr=False)  # position in the record's list
    lloq: float | None = None  # the assay's lower limit of quantification, in ``unit``
    detected: bool | None = None  # whether the assay detected the target (viral loads)


@attrs.frozen
class Exposure:
    """A medication or therapy from ``start`` to ``end`` (``None``: ongoing)."""

    __repr__ = value_repr

    category: str
    start: dt.date
    end: dt.date | None
    route: str | None = None
    name: str | None = None
    indication: str = "unspecified"  # treatment, physiological_replacement or unspecified (the default)
    dose: float | None = None  # prednisone-equivalent mg per day, for corticosteroids


@attrs.frozen
class HistoryEvent:
    """A dated entry of ``events``, ``malignancies`` or ``infections``; other fields in ``details``."""

    __repr__ = value_repr

    kind: str
    start: dt.date
    end: dt.date | None
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Assessment:
    """A dated disease assessment: marrow or blood blasts (%), or an extramedullary lesion found or not."""

    __repr__ = value_repr

    specimen: str
    date: dt.date
    blasts_percent: float | None = None
    lesion_present: bool | None = None


@attrs.frozen
class Anchors:
    """The dates criteria are anchored to; only ``screening`` is required."""

    __repr__ = value_repr

    screening: dt.date
    cell_collection: dt.date | None = None
    enrolment: dt.date | None = None
    planned_infusion: dt.date | None = None


@attrs.frozen
class PatientRecord:
    """A checked patient record.  ``None`` means not known; an empty tuple means none.

    Attributes
    ----------
    id : str
    anchors : Anchors
    as_of : datetime.date
        The date the record describes (default: the screening date); dates of
        past events may not be later.
    ecog : int or None
    weight, life_expectancy : Quantity or None
    measurements : dict or None
        Measurement code to its most recent :class:`Measurement`.
    sections : dict
        Section name (``"cardiac"``, ``"serology"``…) to its field values.
    lists : dict
        ``medications``, ``therapies``, ``events``, ``malignancies``,
        ``infections``: a tuple of entries, or ``None`` when not known;
        ``disease_assessments``: a tuple of :class:`Assessment`.
    attestations : dict
        Investigator attestations: key to ``True``/``False``.
    """

    __repr__ = value_repr

    id: str
    anchors: Anchors
    as_of: dt.date
    ecog: int | None
    weight: Quantity | None
    life_expectancy: Quantity | None
    measurements: Mapping[str, Measurement] | None
    sections: Mapping[str, Mapping[str, Any]]
    lists: Mapping[str, tuple[Any, ...] | None]
    attestations: Mapping[str, bool]
    source: str = attrs.field(default="record", eq=False)  # the file (or line) it was read from
    #: For a record read from a FHIR Bundle: record place to the resource(s) each value came from.
    provenance: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.as_of: dt.date | None = None

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def table(self, raw: Any, path: str) -> Mapping[str, Any] | None:
        if raw is None:
            return None
        if type(raw) is not dict:
            self.problem(path, f"expected an object (got {_show(raw)})")
            return None
        return raw

    def unknown(self, raw: Mapping[str, Any], path: str, allowed: frozenset[str]) -> None:
        extra = raw.keys() - allowed
        for key in sorted(extra, key=str):
            self.problem(f"{path}.{key}" if path else key,
                         f"unknown field (expected one of: {', '.join(sorted(allowed))})")

    def date(self, raw: Any, path: str) -> dt.date | None:
        if raw is None:
            return None
        if type(raw) is str:
            try:
                return _iso(raw)
            except ValueError:
                pass
        self.problem(path, f"expected a date as YYYY-MM-DD (got {_show(raw)})")
        return None

    def past(self, raw: Any, path: str) -> dt.date | None:
        """A date of something that has happened: not after the record's date."""
        day = self.date(raw, path)
        if day is not None and self.as_of is not None and day > self.as_of:
            self.problem(path, f"{day} is after the record's date {self.as_of} (a past date is expected)")
        return day

    def number(self, raw: Any, path: str) -> float | None:
        if raw is None:
            return None
        kind = type(raw)
        if kind is int or kind is float:
            if kind is int and raw.bit_length() > 50:  # past 15 digits: no measurement is that large
                self.problem(path, f"expected a number of at most {MAX_INT_DIGITS} digits (got {show(raw)})")
                return None
            if raw - raw == 0:  # nan - nan and inf - inf are nan
                return float(raw)
            self.problem(path, f"expected a finite number (got {_show(raw)})")
            return None
        self.problem(path, f"expected a number (got {_show(raw)})")
        return None

    def unit(self, raw: Any, path: str) -> str | None:
        if type(raw) is not str:
            self.problem(path, f"expected a unit string such as 'mg/dL' (got {_show(raw)})")
            return None
        try:
            lab_unit(raw)
        except GuardSyntaxError as err:
            self.problem(path, err.message)
            return None
        return raw

    def field(self, raw: Any, path: str, kind: Any) -> Any:
        """Check one value against its kind (the slow path, which also explains refusals)."""
        if raw is None:
            return None
        if kind == "bool":
            if type(raw) is not bool:
                self.problem(path, f"expected true or false (got {_show(raw)})")
                return None
            return raw
        if kind == "date":
            return self.past(raw, path)
        if kind == "text":
            if type(raw) is not str:
                self.problem(path, f"expected a string (got {_show(raw)})")
                return None
            return raw
        if isinstance(kind, tuple) and kind and kind[0] == "number":
            number = self.number(raw, path)
            if number is not None and not kind[1] <= number <= kind[2]:
                self.problem(path, f"expected {kind[1]:g} to {kind[2]:g} (got {number:g})")
                return None
            return number
        if isinstance(kind, tuple) and kind and kind[0] == "int":
            _, low, high = kind
            if type(raw) is not int:
                self.problem(path, f"expected a whole number (got {_show(raw)})")
                return None
            if not low <= raw <= high:
                self.problem(path, f"expected {low} to {high} (got {_show(raw)})")
                return None
            return raw
        if type(raw) is not str or raw not in kind:
            self.problem(path, f"expected one of {', '.join(kind)} (got {_show(raw)})")
            return None
        return raw

    def fields(self, table: Mapping[str, Any], path: str, kinds: Mapping[str, Any],
               allowed: frozenset[str]) -> dict[str, Any]:
        """The present values of a flat object; the common, valid case costs a type test per field."""
        if (kinds is _BOOLEAN_ONLY.get(path)  # sections of booleans: check, then take them as they are
                and set(map(type, table.values())) <= _BOOL_TYPES and table.keys() <= allowed):
            return dict(table)  # None values stay: a missing key and null both read as not known
        out: dict[str, Any] = {}
        as_of = self.as_of
        get = kinds.get
        for key, value in table.items():
            if value is None:
                continue
            kind = get(key)
            if kind is _BOOL:
                if value is True or value is False:
                    out[key] = value
                    continue
            elif kind is _DATE:
                if type(value) is str:
                    try:
                        day = _iso(value)
                    except ValueError:
                        pass
                    else:
                        if as_of is None or day <= as_of:
                            out[key] = day
                            continue
            elif type(kind) is frozenset:
                if type(value) is str and value in kind:
                    out[key] = value
                    continue
            elif type(kind) is tuple:  # ("int", low, high)
                if type(value) is int and kind[1] <= value <= kind[2]:
                    out[key] = value
                    continue
            elif kind == "text":
                if type(value) is str:
                    out[key] = value
                    continue
            elif kind is None:
                continue  # reported by unknown()
            checked = self.field(value, f"{path}.{key}", kind)
            if checked is not None:
                out[key] = checked
        if len(out) < len(table):
            self.unknown(table, path, allowed)
        return out

    def quantity(self, raw: Any, path: str, dated: bool) -> Quantity | None:
        if type(raw) is dict and raw.keys() <= (_DATED if dated else _UNDATED):  # fast path for the usual case
            value, unit, when = raw.get("value"), raw.get("unit"), raw.get("date")
            if ((type(value) is int or (type(value) is float and value - value == 0.0))
                    and type(unit) is str and _unit_ok(unit) is not None):
                if when is None:
                    return Quantity(float(value), unit, None)
                if type(when) is str:
                    try:
                        day = _iso(when)
                    except ValueError:
                        pass
                    else:
                        if self.as_of is None or day <= self.as_of:
                            return Quantity(float(value), unit, day)
        table = self.table(raw, path)
        if table is None:
            return None
        self.unknown(table, path, _DATED if dated else _UNDATED)
        value = self.number(table.get("value"), f"{path}.value")
        unit = self.unit(table.get("unit"), f"{path}.unit")
        when = self.past(table.get("date"), f"{path}.date")
        if table.get("value") is None:
            self.problem(f"{path}.value", "missing (leave out the whole object when the value is not known)")
        if value is None or unit is None:
            return None
        return Quantity(value, unit, when)


_BOOL, _DATE = "bool", "date"  # the fast path compares kinds by identity (these literals are interned)
_DATED = frozenset(("value", "unit", "date"))
_UNDATED = frozenset(("value", "unit"))
_MEASUREMENT_KEYS = frozenset(("code", "value", "unit", "date", "reference_range", "lloq", "detected"))
_FAST_MEASUREMENT_KEYS = frozenset(("code", "value", "unit", "date", "reference_range"))
_RANGE_KEYS = frozenset(("low", "high", "unit"))


def _fast(kinds: Mapping[str, Any]) -> dict[str, Any]:
    """Kinds as the fast path reads them: code tuples become frozensets."""
    return {k: frozenset(v) if isinstance(v, tuple) and v and v[0] not in ("int", "number") else v
            for k, v in kinds.items()}


_SECTION_FAST = {name: (_fast(kinds), frozenset(kinds)) for name, kinds in SECTION_FIELDS.items()}
_LIST_FAST = {name: (_fast(kinds), frozenset(kinds), required) for name, (kinds, required) in LIST_FIELDS.items()}
_BOOL_TYPES = frozenset((bool, type(None)))
_BOOLEAN_ONLY = {name: kinds for name, (kinds, _) in _SECTION_FAST.items() if set(kinds.values()) == {_BOOL}}
_ALLOWED_TOP = frozenset(_TOP_KEYS)
_ALLOWED_ANCHORS = frozenset(_ANCHORS)


def _implausible(place: str, value: float, unit: str) -> str | None:
    """Why ``value unit`` is impossible at ``place`` (a key of :data:`PLAUSIBLE`), else ``None``."""
    target, low, high = PLAUSIBLE[place]
    factor = _factor_or_none(unit, target)
    if factor is None:
        return None  # another dimension: the unit check reports it
    converted = value * factor
    if low <= converted <= high:
        return None
    what = place.rpartition(".")[2].replace("_", " ")
    shown = f"{value:g} {unit}" + ("" if unit == target else f" = {converted:.4g} {target}")
    return f"expected a plausible {what} of {low:g} to {high:g} {target} (got {shown})"


@functools.cache
def _factor_or_none(unit: str, target: str) -> float | None:
    """The factor from ``unit`` to ``target``, ``None`` across dimensions (worked out once per pair)."""
    try:
        return lab_factor(unit, target)
    except GuardSyntaxError:
        return None


def _show(raw: Any) -> str:
    try:
        text = json.dumps(raw) if not isinstance(raw, str) else repr(raw)
    except (TypeError, ValueError, RecursionError):  # not JSON data (the API accepts any mapping), or absurd
        return show(raw, 40)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _percent_scale(unit: str) -> float | None:
    """For a dimensionless unit, the value of 1 unit as a fraction (``%`` → 0.01); else ``None``."""
    if parse_unit(lab_unit(unit))[1] != "dimensionless":
        return None
    return lab_factor(unit, "dimensionless") if unit.strip() else 1.0


@functools.cache
def _unit_ok(unit: str) -> tuple[float | None] | None:
    """``(percent scale,)`` for a known unit, ``None`` for one pint does not know (the slow path explains)."""
    try:
        lab_unit(unit)
    except GuardSyntaxError:
        return None
    return (_percent_scale(unit),)


@functools.lru_cache(maxsize=16384)  # dates repeat across records; parsing each once is cheaper
def _iso(text: str) -> dt.date:
    """Parse exactly ``YYYY-MM-DD`` (Python 3.11 would also take ``20260302`` or week dates).

    Raises
    ------
    ValueError
        For anything else.
    """
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(text)
    return dt.date.fromisoformat(text)


_GOOD_CODES: set[str] = set()
_INF = float("inf")


def _measurement_fast(raw: Any, as_of: dt.date | None, index: int) -> Measurement | None:
    """The usual, valid measurement at the cost of a few type tests; ``None`` sends it to the checking path."""
    if type(raw) is not dict or not raw.keys() <= _FAST_MEASUREMENT_KEYS:
        return None
    code, unit = raw.get("code"), raw.get("unit")
    value: Any = raw.get("value")
    kind = type(value)
    if not ((kind is int or kind is float) and type(unit) is str and type(code) is str):
        return None
    if code not in _GOOD_CODES:
        if not _CODE.match(code):
            return None
        _GOOD_CODES.add(code)
    info = _unit_ok(unit)
    if info is None or not 0 <= value < _INF:
        return None
    scale = info[0]
    if scale is not None and value * scale > 1:
        return None
    when = raw.get("date")
    if when is not None:
        if type(when) is not str:
            return None
        try:
            when = _iso(when)
        except ValueError:
            return None
        if as_of is not None and when > as_of:
            return None
    low: Any = None
    high: Any = None
    range_unit = unit
    rng = raw.get("reference_range")
    if rng is not None:
        if type(rng) is not dict or not rng.keys() <= _RANGE_KEYS:
            return None
        low, high = rng.get("low"), rng.get("high")
        if low is not None:
            if type(low) is not int and (type(low) is not float or low - low != 0.0):
                return None  # the checking path says what is wrong (NaN and infinities included)
            low = float(low)
        if high is not None:
            if (type(high) is not int and (type(high) is not float or high - high != 0.0)) or high <= 0:
                return None
            high = float(high)
        if low is not None and high is not None and low > high:
            return None
        if "unit" in rng:
            range_unit = rng["unit"]
            if type(range_unit) is not str or _unit_ok(range_unit) is None:
                return None
    return Measurement(code, float(value), unit, when, low, high, range_unit, index)


def _measurement(r: _Reader, raw: Any, index: int) -> Measurement | None:
    path = f"measurements[{index}]"
    fast = _measurement_fast(raw, r.as_of, index)
    if fast is not None:
        return fast
    if type(raw) is not dict:
        r.problem(path, f"expected an object (got {_show(raw)})")
        return None
    if len(raw.keys() - _MEASUREMENT_KEYS):
        r.unknown(raw, path, _MEASUREMENT_KEYS)
    code = raw.get("code")
    if type(code) is not str or not _CODE.match(code):
        r.problem(f"{path}.code", f"expected a lower-case code such as 'creatinine' (got {_show(code)})")
        code = None
    value = r.number(raw.get("value"), f"{path}.value")
    if raw.get("value") is None:
        r.problem(f"{path}.value", "missing (leave the measurement out when it is not known)")
    unit = r.unit(raw.get("unit"), f"{path}.unit")
    when = r.past(raw.get("date"), f"{path}.date")
    low = high = None
    range_unit = unit
    rng = raw.get("reference_range")
    if rng is not None:
        rng = r.table(rng, f"{path}.reference_range")
    if rng is not None:
        if len(rng.keys() - _RANGE_KEYS):
            r.unknown(rng, f"{path}.reference_range", _RANGE_KEYS)
        low = r.number(rng.get("low"), f"{path}.reference_range.low")
        high = r.number(rng.get("high"), f"{path}.reference_range.high")
        if "unit" in rng:
            range_unit = r.unit(rng.get("unit"), f"{path}.reference_range.unit")
        if high is not None and high <= 0:
            r.problem(f"{path}.reference_range.high", f"expected a positive limit (got {high:g})")
        if low is not None and high is not None and low > high:
            r.problem(f"{path}.reference_range", f"low {low:g} is above high {high:g}")
    if value is not None and unit is not None:
        if value < 0:
            r.problem(f"{path}.value", f"expected a value of 0 or more (got {value:g})")
        else:
            scale = _percent_scale(unit)
            if scale is not None and value * scale > 1:
                r.problem(f"{path}.value", f"expected at most 100% (got {value:g} {unit})")
    lloq = r.number(raw.get("lloq"), f"{path}.lloq")
    if lloq is not None and lloq < 0:
        r.problem(f"{path}.lloq", f"expected 0 or more (got {lloq:g})")
    detected = r.field(raw.get("detected"), f"{path}.detected", "bool")
    if detected is False and value is not None and lloq is not None and value >= lloq:
        r.problem(f"{path}.detected", f"false, but the value {value:g} is at or above the LLOQ {lloq:g}")
    if code is None or value is None or unit is None or range_unit is None:
        return None
    return Measurement(code, value, unit, when, low, high, range_unit, index, lloq, detected)


def _entries(r: _Reader, name: str, raw: Any) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    if type(raw) is not list:
        r.problem(name, f"expected a list (got {_show(raw)})")
        return None
    kinds, allowed, required = _LIST_FAST[name]
    out: list[Any] = []
    before = len(r.problems)
    for i, item in enumerate(raw):
        path = f"{name}[{i}]"
        if type(item) is not dict:
            r.problem(path, f"expected an object (got {_show(item)})")
            continue
        if name in ("medications", "therapies"):
            saved, r.as_of = r.as_of, None  # a course may be planned to end after the record's date
            values = r.fields(item, path, kinds, allowed)
            r.as_of = saved
            start = values.get("start")
            if start is not None and r.as_of is not None and start > r.as_of:
                r.problem(f"{path}.start", f"{start} is after the record's date {r.as_of} (a past date is expected)")
        else:
            values = r.fields(item, path, kinds, allowed)
        for key in required:
            if item.get(key) is None:
                r.problem(f"{path}.{key}", "missing (required in every entry)")
        if len(r.problems) > before:
            before = len(r.problems)
            continue
        start, end = values.pop("start"), values.pop("end", None)
        if name in ("events", "transplants") and end is None:  # a single day
            end = start
        if end is not None and end < start:
            r.problem(f"{path}.end", f"{end} is before the start {start}")
            before = len(r.problems)
            continue
        if name in ("medications", "therapies"):
            out.append(Exposure(values["category"], start, end, values.get("route"), values.get("name"),
                                values.get("indication") or "unspecified",
                                values.get("prednisone_equivalent_mg_per_day")))
        else:
            kind = values.pop("category" if name == "malignancies" else "type")
            out.append(HistoryEvent(kind, start, end, values))
    return tuple(out)


def _assessments(r: _Reader, raw: Any) -> tuple[Assessment, ...] | None:
    """Read ``disease_assessments``: blasts need a marrow or blood specimen, a lesion an extramedullary one."""
    if raw is None:
        return None
    if type(raw) is not list:
        r.problem("disease_assessments", f"expected a list (got {_show(raw)})")
        return None
    out = []
    allowed = frozenset(ASSESSMENT_FIELDS)
    for i, item in enumerate(raw):
        path = f"disease_assessments[{i}]"
        if type(item) is not dict:
            r.problem(path, f"expected an object (got {_show(item)})")
            continue
        before = len(r.problems)
        r.unknown(item, path, allowed)
        values = {key: r.field(item.get(key), f"{path}.{key}", kind) for key, kind in ASSESSMENT_FIELDS.items()}
        for key in ("specimen", "date"):
            if item.get(key) is None:
                r.problem(f"{path}.{key}", "missing (required in every entry)")
        specimen, blasts, lesion = values["specimen"], values["blasts_percent"], values["lesion_present"]
        if specimen == "extramedullary" and blasts is not None:
            r.problem(f"{path}.blasts_percent", "an extramedullary assessment records lesion_present, not blasts")
        if specimen in ("bone_marrow", "peripheral_blood") and lesion is not None:
            r.problem(f"{path}.lesion_present", f"a {specimen} assessment records blasts_percent, not a lesion")
        if len(r.problems) == before:
            out.append(Assessment(specimen, values["date"], blasts, lesion))
    return tuple(out)


def read_record(data: Any, source: str = "record") -> PatientRecord:
    """Check a decoded JSON record and build a :class:`PatientRecord`.

    Raises
    ------
    RecordError
        With one line per problem, each naming the field (``measurements[2].unit``).

    Examples
    --------
    >>> read_record({"id": "P1", "anchors": {"screening": "2026-03-02"},
    ...              "weight": {"value": -3, "unit": "kg"}})
    Traceback (most recent call last):
    ...
    escalation_rules.eligibility._record.RecordError: record: weight.value: expected more than 0 (got -3)
    """
    if not isinstance(source, str):
        raise TypeError(f"source: expected a string naming the record (got {type(source).__name__})")
    try:
        return _read_record(data, source)
    except RecursionError:
        raise RecordError([f"{source}: nested too deeply to read"]) from None


def _read_record(data: Any, source: str) -> PatientRecord:
    r = _Reader(source)
    if type(data) is not dict:
        raise RecordError([f"{source}: expected a JSON object (got {_show(data)})"])
    if len(data.keys() - _ALLOWED_TOP):
        if "resourceType" in data:
            raise RecordError([f"{source}: resourceType: a FHIR resource, not a patient record (screen a Bundle "
                               "with screen(spec, bundle) or escalation-rules screen SPEC BUNDLE.json)"])
        r.unknown(data, "", _ALLOWED_TOP)
    fmt = data.get("format")
    if fmt is not None and fmt != "escalation-rules/patient-record/1":
        r.problem("format", f"expected 'escalation-rules/patient-record/1' (got {_show(fmt)})")
    rid = data.get("id")
    if type(rid) is not str or not rid:
        r.problem("id", f"expected a non-empty string (got {_show(rid)})")
        rid = ""
    anchors_raw = r.table(data.get("anchors"), "anchors") or {}
    if len(anchors_raw.keys() - _ALLOWED_ANCHORS):
        r.unknown(anchors_raw, "anchors", _ALLOWED_ANCHORS)
    dates: dict[str, dt.date | None] = {}
    for key in _ANCHORS:
        raw_date = anchors_raw.get(key)
        if type(raw_date) is str and len(raw_date) == 10:
            try:
                dates[key] = _iso(raw_date)
                continue
            except ValueError:
                pass
        dates[key] = r.date(raw_date, f"anchors.{key}")
    screening = dates["screening"]
    if screening is None and anchors_raw.get("screening") is None:
        r.problem("anchors.screening", "missing (every record is screened as of a date)")
    for before, key in _ANCHOR_ORDER:  # cell collection may come before or after enrolment
        first, day = dates[before], dates[key]
        if first is not None and day is not None and day < first:
            r.problem(f"anchors.{key}", f"{day} is before anchors.{before} {first} (expected screening first, "
                      "then cell_collection and enrolment, then planned_infusion)")
    as_of = r.date(data.get("as_of"), "as_of") or screening
    if as_of is not None and screening is not None and as_of < screening:
        r.problem("as_of", f"{as_of} is before the screening date {screening}")
    r.as_of = as_of

    ecog = data.get("ecog")
    if ecog is not None and not (type(ecog) is int and 0 <= ecog <= 5):
        ecog = r.field(ecog, "ecog", ("int", 0, 5))
    weight = r.quantity(data.get("weight"), "weight", dated=True) if data.get("weight") is not None else None
    if weight is not None:
        if weight.value <= 0:
            r.problem("weight.value", f"expected more than 0 (got {weight.value:g})")
        elif parse_unit(lab_unit(weight.unit))[1] != "[mass]":
            r.problem("weight.unit", f"expected a unit of mass such as 'kg' or 'lb' (got {weight.unit!r})")
        elif (why := _implausible("weight", weight.value, weight.unit)) is not None:
            r.problem("weight.value", why)
    life = (r.quantity(data.get("life_expectancy"), "life_expectancy", dated=False)
            if data.get("life_expectancy") is not None else None)
    if life is not None:
        if life.value < 0:
            r.problem("life_expectancy.value", f"expected 0 or more (got {life.value:g})")
        elif parse_unit(lab_unit(life.unit))[1] != "[time]":
            r.problem("life_expectancy.unit", f"expected a unit of time such as 'weeks' (got {life.unit!r})")
        elif (why := _implausible("life_expectancy", life.value, life.unit)) is not None:
            r.problem("life_expectancy.value", why)

    measurements: dict[str, Measurement] | None = None
    raw_m = data.get("measurements")
    if raw_m is not None:
        measurements = {}
        if type(raw_m) is not list:
            r.problem("measurements", f"expected a list (got {_show(raw_m)})")
        else:
            seen: dict[tuple[str, dt.date | None], Measurement] = {}
            for i, item in enumerate(raw_m):
                m = _measurement(r, item, i)
                if m is None:
                    continue
                place = _PLACES.get(m.code)
                if place is not None and (why := _implausible(place, m.value, m.unit)) is not None:
                    r.problem(f"measurements[{i}].value", why)
                twin = seen.setdefault((m.code, m.date), m)
                if twin is not m and (twin.value, twin.unit) != (m.value, m.unit):
                    r.problem(f"measurements[{i}]", f"{m.code} on {m.date or 'an undated day'} is {m.value:g} "
                              f"{m.unit} but measurements[{twin.index}] gives {twin.value:g} {twin.unit} "
                              "(expected one value per code and date)")
                old = measurements.get(m.code)
                if old is None or (m.date or dt.date.min) >= (old.date or dt.date.min):
                    measurements[m.code] = m

    sections: dict[str, dict[str, Any]] = {}
    for name, (kinds, allowed) in _SECTION_FAST.items():
        raw = data.get(name)
        if raw is None:
            continue
        table = r.table(raw, name)
        if table is not None:
            sections[name] = r.fields(table, name, kinds, allowed)
    birth = sections.get("demographics", {}).get("birth_date")
    if birth is not None and screening is not None:
        if screening.year - birth.year > _MAX_AGE:
            r.problem("demographics.birth_date", f"{birth} gives an age over {_MAX_AGE} years")
        elif birth > screening:
            r.problem("demographics.birth_date", f"{birth} is after the screening date {screening}")

    pregnancy = sections.get("pregnancy", {})
    if sections.get("demographics", {}).get("sex") == "male":
        for key in ("pregnant", "lactating"):
            if pregnancy.get(key):
                r.problem(f"pregnancy.{key}", "true for a man (leave it out, or record pregnancy.not_applicable)")
    if pregnancy.get("test_result") is not None and pregnancy.get("test_date") is None:
        r.problem("pregnancy.test_date", "missing (a pregnancy test result needs its date)")
    lists = {name: _entries(r, name, data.get(name)) for name in LIST_FIELDS}
    transplants = lists["transplants"]
    if transplants is not None:  # the list, when given, says whether there was an allogeneic transplant
        allogeneic = any(t.kind == "allogeneic" for t in transplants)
        stated = sections.get("transplant", {}).get("allogeneic")
        if stated is not None and stated != allogeneic:
            r.problem("transplant.allogeneic", f"{str(stated).lower()}, but the transplants list has "
                      f"{'an' if allogeneic else 'no'} allogeneic transplant")
        sections["transplant"] = {**sections.get("transplant", {}), "allogeneic": allogeneic}
    lists["disease_assessments"] = _assessments(r, data.get("disease_assessments"))

    attestations: dict[str, bool] = {}
    raw_a = data.get("attestations")
    if raw_a is not None:
        for key, value in (r.table(raw_a, "attestations") or {}).items():
            if value is True or value is False:
                attestations[key] = value
            elif value is not None:
                r.field(value, f"attestations.{key}", "bool")
            if key not in _GOOD_CODES:
                if _CODE.match(key):
                    _GOOD_CODES.add(key)
                else:
                    r.problem(f"attestations.{key}", "expected a lower-case key such as 'no_other_effective_treatment'")

    if r.problems:
        raise RecordError(r.problems)
    assert screening is not None and as_of is not None
    anchors = Anchors(screening, dates["cell_collection"], dates["enrolment"], dates["planned_infusion"])
    return PatientRecord(rid, anchors, as_of, ecog, weight, life, measurements, sections, lists, attestations,
                         source)


def read_record_json(text: str, source: str = "record") -> PatientRecord:
    """Decode JSON text and read it as a record.

    Raises
    ------
    RecordError
        For malformed JSON (with line and column) or a refused record.

    Examples
    --------
    >>> read_record_json('{"id": "P1", ', "p.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.eligibility._record.RecordError: p.json: not valid JSON: Expecting property name ... column 14
    """
    return read_record(decode_json(text, source), source)


def decode_json(text: str, source: str = "record") -> Any:
    """Decode the JSON text of a record (or a FHIR Bundle) within the limits, refusing it with our error.

    Examples
    --------
    >>> decode_json('{"id": "P1"}')
    {'id': 'P1'}
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected JSON text as a string (got {type(text).__name__})")
    if len(text) > MAX_FILE_BYTES:
        raise RecordError([f"{source}: longer than the limit of {MAX_FILE_BYTES} characters for a record"])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError([f"{source}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from None
    except RecursionError:
        raise RecordError([f"{source}: JSON nested too deeply to read"]) from None
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise RecordError([f"{source}: a number in the JSON is too large (at most {MAX_INT_DIGITS} digits)"]) from None
    return data


def record_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the record format, built from the same tables the reader uses.

    ``spec/patients/patient-record.schema.json`` is this schema; a test keeps
    the two equal.  The schema checks shape and types; the reader also checks
    what a schema cannot (units pint knows, dates not after the record's
    date, at most 100% for percentages).

    Examples
    --------
    >>> sorted(record_schema()["required"])
    ['anchors', 'id']
    """
    def kind_schema(kind: Any) -> dict[str, Any]:
        if kind == "bool":
            return {"type": ["boolean", "null"]}
        if kind == "date":
            return {"type": ["string", "null"], "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
        if kind == "text":
            return {"type": ["string", "null"]}
        if isinstance(kind, tuple) and kind[0] == "int":
            return {"type": ["integer", "null"], "minimum": kind[1], "maximum": kind[2]}
        if isinstance(kind, tuple) and kind[0] == "number":
            return {"type": ["number", "null"], "minimum": kind[1], "maximum": kind[2]}
        return {"enum": [*kind, None]}

    def obj(props: Mapping[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": dict(props)}
        if required:
            out["required"] = list(required)
        return out

    date = kind_schema("date")
    quantity = obj({"value": {"type": "number", "minimum": 0}, "unit": {"type": "string", "minLength": 1},
                    "date": date}, ("value", "unit"))
    measurement = obj({
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "value": {"type": "number", "minimum": 0},
        "unit": {"type": "string"},
        "date": date,
        "lloq": {"type": ["number", "null"], "minimum": 0},
        "detected": {"type": ["boolean", "null"]},
        "reference_range": {"oneOf": [{"type": "null"}, obj({
            "low": {"type": ["number", "null"]}, "high": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "unit": {"type": "string"}})]},
    }, ("code", "value", "unit"))
    props: dict[str, Any] = {
        "format": {"const": "escalation-rules/patient-record/1"},
        "id": {"type": "string", "minLength": 1},
        "as_of": date,
        "anchors": obj({key: date for key in _ANCHORS}, ("screening",)),
        "ecog": {"type": ["integer", "null"], "minimum": 0, "maximum": 5},
        "weight": {"oneOf": [{"type": "null"}, quantity]},
        "life_expectancy": {"oneOf": [{"type": "null"}, quantity]},
        "measurements": {"type": ["array", "null"], "items": measurement},
        "attestations": {"type": ["object", "null"], "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                         "additionalProperties": {"type": ["boolean", "null"]}},
    }
    assessment = obj({key: kind_schema(kind) for key, kind in ASSESSMENT_FIELDS.items()}, ("specimen", "date"))
    props["disease_assessments"] = {"type": ["array", "null"], "items": assessment}
    for name, kinds in SECTION_FIELDS.items():
        section = obj({key: kind_schema(kind) for key, kind in kinds.items()})
        section["type"] = ["object", "null"]
        props[name] = section
    for name, (kinds, required) in LIST_FIELDS.items():
        entry = obj({key: kind_schema(kind) for key, kind in kinds.items()}, required)
        for key in required:
            entry["properties"][key] = {k: ([t for t in v if t != "null"] if k == "type" else
                                            [e for e in v if e is not None] if k == "enum" else v)
                                        for k, v in entry["properties"][key].items()}
        props[name] = {"type": ["array", "null"], "items": entry}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://escalation-rules.invalid/patient-record.schema.json",
        "title": "escalation-rules patient record (format 1)",
        "description": "A patient record screened by `escalation-rules screen`. Absent or null means not known; "
                       "an empty list means known to be none. See docs/eligibility.md.",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "anchors"],
        "properties": props,
    }
