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
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..errors import EscalationRulesError, GuardSyntaxError
from ..guards import parse_unit

__all__ = [
    "SECTION_FIELDS",
    "Anchors",
    "Exposure",
    "HistoryEvent",
    "Measurement",
    "PatientRecord",
    "Quantity",
    "RecordError",
    "read_record",
    "read_record_json",
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
        "induction_complete_remission": "bool",
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
    "pregnancy": {"pregnant": "bool", "lactating": "bool", "planning_pregnancy": "bool"},
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
    "infections": ({
        "type": ("bacterial", "viral", "fungal", "other"),
        "site": ("simple_urinary_tract", "upper_respiratory", "other"),
        "requires_treatment": "bool", "controlled": "bool", "start": "date", "end": "date",
    }, ("type", "site", "requires_treatment", "controlled", "start")),
}

_TOP_KEYS = ("format", "id", "as_of", "anchors", "ecog", "weight", "life_expectancy", "measurements",
             "attestations", *SECTION_FIELDS, *LIST_FIELDS)
_ANCHORS = ("screening", "cell_collection", "enrolment", "planned_infusion")
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


@attrs.frozen
class Quantity:
    """A value with its unit as written in the record, and when it was measured."""

    value: float
    unit: str
    date: dt.date | None = None


@attrs.frozen
class Measurement:
    """A laboratory or other measurement, with its own reference range (in ``range_unit``)."""

    code: str
    value: float
    unit: str
    date: dt.date | None
    low: float | None
    high: float | None
    range_unit: str


@attrs.frozen
class Exposure:
    """A medication or therapy from ``start`` to ``end`` (``None``: ongoing)."""

    category: str
    start: dt.date
    end: dt.date | None
    route: str | None = None
    name: str | None = None


@attrs.frozen
class HistoryEvent:
    """A dated entry of ``events``, ``malignancies`` or ``infections``; other fields in ``details``."""

    kind: str
    start: dt.date
    end: dt.date | None
    details: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Anchors:
    """The dates criteria are anchored to; only ``screening`` is required."""

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
        ``infections``: a tuple of entries, or ``None`` when not known.
    attestations : dict
        Investigator attestations: key to ``True``/``False``.
    """

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


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def table(self, raw: Any, path: str) -> Mapping[str, Any] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.problem(path, f"expected an object (got {_show(raw)})")
            return None
        return raw

    def unknown(self, raw: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.problem(f"{path}.{key}" if path else key,
                             f"unknown field (expected one of: {', '.join(sorted(allowed))})")

    def date(self, raw: Any, path: str) -> dt.date | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            try:
                return dt.date.fromisoformat(raw)
            except ValueError:
                pass
        self.problem(path, f"expected a date as YYYY-MM-DD (got {_show(raw)})")
        return None

    def number(self, raw: Any, path: str) -> float | None:
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw or raw in (
                float("inf"), float("-inf")):
            self.problem(path, f"expected a number (got {_show(raw)})")
            return None
        return float(raw)

    def unit(self, raw: Any, path: str) -> str | None:
        if not isinstance(raw, str):
            self.problem(path, f"expected a unit string such as 'mg/dL' (got {_show(raw)})")
            return None
        try:
            parse_unit(raw)
        except GuardSyntaxError as err:
            self.problem(path, err.message)
            return None
        return raw

    def field(self, raw: Any, path: str, kind: Any) -> Any:
        if raw is None:
            return None
        if kind == "bool":
            if not isinstance(raw, bool):
                self.problem(path, f"expected true or false (got {_show(raw)})")
                return None
            return raw
        if kind == "date":
            return self.date(raw, path)
        if kind == "text":
            if not isinstance(raw, str):
                self.problem(path, f"expected a string (got {_show(raw)})")
                return None
            return raw
        if isinstance(kind, tuple) and kind and kind[0] == "int":
            _, low, high = kind
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.problem(path, f"expected a whole number (got {_show(raw)})")
                return None
            if not low <= raw <= high:
                self.problem(path, f"expected {low} to {high} (got {raw})")
                return None
            return raw
        if raw not in kind:
            self.problem(path, f"expected one of {', '.join(kind)} (got {_show(raw)})")
            return None
        return raw

    def quantity(self, raw: Any, path: str, dated: bool) -> Quantity | None:
        table = self.table(raw, path)
        if table is None:
            return None
        self.unknown(table, path, ("value", "unit", "date") if dated else ("value", "unit"))
        value = self.number(table.get("value"), f"{path}.value")
        unit = self.unit(table.get("unit"), f"{path}.unit")
        when = self.date(table.get("date"), f"{path}.date")
        if table.get("value") is None:
            self.problem(f"{path}.value", "missing (leave out the whole object when the value is not known)")
        if value is None or unit is None:
            return None
        return Quantity(value, unit, when)


def _show(raw: Any) -> str:
    text = json.dumps(raw) if not isinstance(raw, str) else repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _measurement(r: _Reader, raw: Any, path: str) -> Measurement | None:
    table = r.table(raw, path)
    if table is None:
        r.problem(path, "expected an object (got null)")
        return None
    r.unknown(table, path, ("code", "value", "unit", "date", "reference_range"))
    code = table.get("code")
    if not isinstance(code, str) or not _CODE.match(code):
        r.problem(f"{path}.code", f"expected a lower-case code such as 'creatinine' (got {_show(code)})")
        code = None
    value = r.number(table.get("value"), f"{path}.value")
    if table.get("value") is None:
        r.problem(f"{path}.value", "missing (leave the measurement out when it is not known)")
    unit = r.unit(table.get("unit"), f"{path}.unit")
    when = r.date(table.get("date"), f"{path}.date")
    low = high = None
    range_unit = unit
    rng = r.table(table.get("reference_range"), f"{path}.reference_range")
    if rng is not None:
        r.unknown(rng, f"{path}.reference_range", ("low", "high", "unit"))
        low = r.number(rng.get("low"), f"{path}.reference_range.low")
        high = r.number(rng.get("high"), f"{path}.reference_range.high")
        if "unit" in rng:
            range_unit = r.unit(rng.get("unit"), f"{path}.reference_range.unit")
        for bound, name in ((low, "low"), (high, "high")):
            if bound is not None and bound <= 0 and name == "high":
                r.problem(f"{path}.reference_range.high", f"expected a positive limit (got {bound:g})")
        if low is not None and high is not None and low > high:
            r.problem(f"{path}.reference_range", f"low {low:g} is above high {high:g}")
    if value is not None and unit is not None:
        if value < 0:
            r.problem(f"{path}.value", f"expected a value of 0 or more (got {value:g})")
        elif parse_unit(unit)[1] == "dimensionless" and value * _fraction(unit) > 1:
            r.problem(f"{path}.value", f"expected at most 100% (got {value:g} {unit})")
    if code is None or value is None or unit is None or range_unit is None:
        return None
    return Measurement(code, value, unit, when, low, high, range_unit)


def _fraction(unit: str) -> float:
    from ..guards import unit_factor

    return unit_factor(unit, "dimensionless") if unit.strip() else 1.0


def _entries(r: _Reader, name: str, raw: Any) -> tuple[Any, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        r.problem(name, f"expected a list (got {_show(raw)})")
        return None
    fields, required = LIST_FIELDS[name]
    out: list[Any] = []
    for i, item in enumerate(raw):
        path = f"{name}[{i}]"
        table = r.table(item, path)
        if table is None:
            r.problem(path, "expected an object (got null)")
            continue
        r.unknown(table, path, tuple(fields))
        values = {key: r.field(table.get(key), f"{path}.{key}", kind) for key, kind in fields.items()}
        missing = [key for key in required if table.get(key) is None]
        for key in missing:
            r.problem(f"{path}.{key}", "missing (required in every entry)")
        if missing or any(values[k] is None and table.get(k) is not None for k in fields):
            continue
        start, end = values.pop("start"), values.pop("end")
        if name == "events" and end is None:  # an event without an end is a single day
            end = start
        if end is not None and end < start:
            r.problem(f"{path}.end", f"{end} is before the start {start}")
            continue
        if name in ("medications", "therapies"):
            out.append(Exposure(values["category"], start, end, values.get("route"), values.get("name")))
        else:
            kind_key = "category" if name == "malignancies" else "type"
            kind = values.pop(kind_key)
            out.append(HistoryEvent(kind, start, end, {k: v for k, v in values.items() if v is not None}))
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
    r = _Reader(source)
    if not isinstance(data, dict):
        raise RecordError([f"{source}: expected a JSON object (got {_show(data)})"])
    r.unknown(data, "", _TOP_KEYS)
    fmt = data.get("format")
    if fmt is not None and fmt != "escalation-rules/patient-record/1":
        r.problem("format", f"expected 'escalation-rules/patient-record/1' (got {_show(fmt)})")
    rid = data.get("id")
    if not isinstance(rid, str) or not rid:
        r.problem("id", f"expected a non-empty string (got {_show(rid)})")
        rid = ""
    anchors_raw = r.table(data.get("anchors"), "anchors") or {}
    r.unknown(anchors_raw, "anchors", _ANCHORS)
    dates = {key: r.date(anchors_raw.get(key), f"anchors.{key}") for key in _ANCHORS}
    if dates["screening"] is None and "screening" not in anchors_raw:
        r.problem("anchors.screening", "missing (every record is screened as of a date)")
    as_of = r.date(data.get("as_of"), "as_of") or dates["screening"]
    if as_of is not None and dates["screening"] is not None and as_of < dates["screening"]:
        r.problem("as_of", f"{as_of} is before the screening date {dates['screening']}")

    ecog = r.field(data.get("ecog"), "ecog", ("int", 0, 5))
    weight = r.quantity(data.get("weight"), "weight", dated=True)
    if weight is not None:
        if weight.value <= 0:
            r.problem("weight.value", f"expected more than 0 (got {weight.value:g})")
        elif parse_unit(weight.unit)[1] != "[mass]":
            r.problem("weight.unit", f"expected a unit of mass such as 'kg' or 'lb' (got {weight.unit!r})")
    life = r.quantity(data.get("life_expectancy"), "life_expectancy", dated=False)
    if life is not None:
        if life.value < 0:
            r.problem("life_expectancy.value", f"expected 0 or more (got {life.value:g})")
        elif parse_unit(life.unit)[1] != "[time]":
            r.problem("life_expectancy.unit", f"expected a unit of time such as 'weeks' (got {life.unit!r})")

    measurements: dict[str, Measurement] | None = None
    raw_m = data.get("measurements")
    if raw_m is not None:
        measurements = {}
        if not isinstance(raw_m, list):
            r.problem("measurements", f"expected a list (got {_show(raw_m)})")
        else:
            for i, item in enumerate(raw_m):
                m = _measurement(r, item, f"measurements[{i}]")
                if m is None:
                    continue
                old = measurements.get(m.code)
                if old is None or (m.date or dt.date.min) >= (old.date or dt.date.min):
                    measurements[m.code] = m

    sections: dict[str, dict[str, Any]] = {}
    for name, fields in SECTION_FIELDS.items():
        table = r.table(data.get(name), name)
        if table is None:
            continue
        r.unknown(table, name, tuple(fields))
        sections[name] = {key: r.field(table.get(key), f"{name}.{key}", kind) for key, kind in fields.items()}

    lists = {name: _entries(r, name, data.get(name)) for name in LIST_FIELDS}

    attestations: dict[str, bool] = {}
    raw_a = r.table(data.get("attestations"), "attestations") or {}
    for key, value in raw_a.items():
        if not _CODE.match(key):
            r.problem(f"attestations.{key}", "expected a lower-case key such as 'no_other_effective_treatment'")
        elif value is not None:
            checked = r.field(value, f"attestations.{key}", "bool")
            if checked is not None:
                attestations[key] = checked

    if as_of is not None:
        _check_past(r, as_of, data, measurements, sections, lists, dates)
    if r.problems:
        raise RecordError(r.problems)
    assert dates["screening"] is not None and as_of is not None
    anchors = Anchors(dates["screening"], dates["cell_collection"], dates["enrolment"], dates["planned_infusion"])
    return PatientRecord(rid, anchors, as_of, ecog, weight, life, measurements, sections, lists,
                         attestations)


def _check_past(r: _Reader, as_of: dt.date, data: Mapping[str, Any], measurements: Mapping[str, Measurement] | None,
                sections: Mapping[str, Mapping[str, Any]], lists: Mapping[str, tuple[Any, ...] | None],
                anchors: Mapping[str, dt.date | None]) -> None:
    """Dates of things that have happened may not be after the record's date."""
    def late(path: str, day: dt.date | None) -> None:
        if day is not None and day > as_of:
            r.problem(path, f"{day} is after the record's date {as_of} (a past date is expected)")

    for name, fields in SECTION_FIELDS.items():
        for key, kind in fields.items():
            if kind == "date":
                late(f"{name}.{key}", sections.get(name, {}).get(key))
    birth = sections.get("demographics", {}).get("birth_date")
    if birth is not None and anchors["screening"] is not None and (anchors["screening"].year - birth.year) > 130:
        r.problem("demographics.birth_date", f"{birth} gives an age over 130 years")
    weight = data.get("weight")
    if isinstance(weight, dict):
        late("weight.date", _maybe_date(weight.get("date")))
    for i, item in enumerate(data.get("measurements") or []):
        if isinstance(item, dict):
            late(f"measurements[{i}].date", _maybe_date(item.get("date")))
    for name, entries in lists.items():
        for i, entry in enumerate(entries or ()):
            late(f"{name}[{i}].start", entry.start)
            if name != "medications" and name != "therapies":
                late(f"{name}[{i}].end", entry.end)


def _maybe_date(raw: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError([f"{source}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from None
    return read_record(data, source)
