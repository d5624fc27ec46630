"""Trial events: frozen records of what happened to patients and who decided what.

Every event has a ``type`` and an ``at`` (when it happened: an ISO 8601
date-time; a date alone means midnight UTC, a time without an offset means
UTC).  The JSON form is a flat object; :func:`parse_event` refuses unknown
fields, missing fields and malformed values with one line naming the field,
and ``spec/trial/event.schema.json`` states the same contract as a JSON
Schema.

Examples
--------
>>> ev = parse_event({"type": "enrolled", "at": "2025-01-06T09:00:00Z", "patient": "P01", "dose": 1})
>>> ev  # doctest: +ELLIPSIS
Enrolled(at=datetime.datetime(2025, 1, 6, 9, 0, tzinfo=datetime.timezone.utc), patient='P01', dose=1, ...)
>>> event_to_dict(ev)
{'type': 'enrolled', 'at': '2025-01-06T09:00:00Z', 'patient': 'P01', 'dose': 1}
>>> parse_event({"type": "infused", "at": "2025-01-07", "patient": "P01", "date": "2025-02-30"})
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
escalation_rules.trial.events.TrialError: event (infused): date: expected an ISO 8601 date ... (got '2025-02-30')
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from datetime import date as Date
from typing import Any, ClassVar, Union

import attrs

from .._attrs import value_repr
from ..errors import EscalationRulesError
from .dlt import ATTRIBUTIONS

__all__ = [
    "AMENDMENT_CHANGES",
    "EVENT_TYPES",
    "AdverseEventReported",
    "AdverseEventUpdated",
    "DecisionSigned",
    "DltAdjudicated",
    "Enrolled",
    "Event",
    "Infused",
    "NotEvaluable",
    "PatientScreened",
    "ProtocolAmended",
    "TrialError",
    "canonical_json",
    "event_to_dict",
    "format_time",
    "load_json",
    "parse_event",
    "parse_time",
    "person_key",
]


class TrialError(EscalationRulesError):
    """A trial event, record or store was refused; one line saying what and why.

    ``index`` is the 0-based position of the offending event in the list
    given (or the store's sequence number), when there is one.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        self.index = index
        super().__init__(message)


#: The changes a protocol amendment may make.
AMENDMENT_CHANGES: tuple[str, ...] = ("add-dose", "change-dose", "remove-dose", "change-cap")


#: What ``at`` and other moments look like (the JSON Schema states the same pattern).
_TIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")


#: The years a date or moment may fall in: date arithmetic on observation windows stays far from
#: the limits of Python's dates (years 1 and 9999).
YEARS: tuple[int, int] = (1900, 2999)


def _in_years(moment: date, value: Any, where: str) -> None:
    if not YEARS[0] <= moment.year <= YEARS[1]:
        raise TrialError(f"{where}: expected a year from {YEARS[0]} to {YEARS[1]} (got {value!r})")


def parse_time(value: Any, where: str) -> datetime:
    """Parse an ISO 8601 date or date-time into an aware datetime (UTC when no offset is given).

    Years outside :data:`YEARS` are refused, so that date arithmetic on the
    moment cannot overflow.

    Examples
    --------
    >>> parse_time("2025-01-06", "at").isoformat()
    '2025-01-06T00:00:00+00:00'
    >>> parse_time("2025-01-06T10:30+08:00", "at").isoformat()
    '2025-01-06T10:30:00+08:00'
    >>> parse_time("9999-12-22", "at")
    Traceback (most recent call last):
    ...
    escalation_rules.trial.events.TrialError: at: expected a year from 1900 to 2999 (got '9999-12-22')
    """
    text = value if isinstance(value, str) and _TIME_TEXT.match(value) else ""
    if len(text) == 10:
        try:
            d = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            _in_years(d, value, where)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
    elif text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            _in_years(moment, value, where)
            moment = moment.replace(microsecond=0)
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    raise TrialError(f"{where}: expected an ISO 8601 date or date-time such as 2025-01-06 or "
                     f"2025-01-06T09:00:00Z (got {value!r})")


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def load_json(text: str, source: str) -> Any:
    """Decode JSON text, refusing NaN and Infinity and nesting too deep to decode, with one line naming ``source``.

    Examples
    --------
    >>> load_json('{"a": [1, 2]}', "ev.json")
    {'a': [1, 2]}
    >>> load_json('{"amount": NaN}', "ev.json")
    Traceback (most recent call last):
    ...
    escalation_rules.trial.events.TrialError: ev.json: not valid JSON: NaN is not a number JSON allows
    >>> load_json("[" * 100_000, "ev.json")
    Traceback (most recent call last):
    ...
    escalation_rules.trial.events.TrialError: ev.json: not valid JSON: too deeply nested
    """
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise TrialError(f"{source}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise TrialError(f"{source}: not valid JSON: too deeply nested") from None
    except ValueError as err:
        raise TrialError(f"{source}: not valid JSON: {err} is not a number JSON allows") from None


def format_time(moment: datetime) -> str:
    """The canonical text of a moment: seconds precision, ``Z`` for UTC.

    Examples
    --------
    >>> format_time(parse_time("2025-01-06T10:30:00.5+00:00", "at"))
    '2025-01-06T10:30:00Z'
    """
    text = moment.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _parse_date(value: Any, where: str) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            _in_years(day, value, where)
            return day
    raise TrialError(f"{where}: expected an ISO 8601 date such as 2025-01-06 (got {value!r})")


@attrs.frozen
class PatientScreened:
    """A patient was screened; ``result`` holds the screening result as data."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "screened"
    at: datetime
    patient: str
    #: True, False, or None: undetermined (an item the criteria need is missing; ``reasons`` names it)
    eligible: bool | None
    result: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    reasons: tuple[str, ...] = ()
    note: str | None = None


@attrs.frozen
class Enrolled:
    """A patient was enrolled at a dose level (1-based), in a cohort (1-based, optional)."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "enrolled"
    at: datetime
    patient: str
    dose: int
    cohort: int | None = None
    note: str | None = None


@attrs.frozen
class Infused:
    """A patient received the infusion on ``date`` (day 0 of the observation window)."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "infused"
    at: datetime
    patient: str
    date: Date
    note: str | None = None


@attrs.frozen
class AdverseEventReported:
    """An adverse-event episode began: term, category, grade (or ASTCT components), onset, attribution."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "ae_reported"
    at: datetime
    patient: str
    ae: str
    term: str
    category: str
    onset: datetime
    grade: int | None = None
    components: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    attribution: str | None = None
    note: str | None = None


@attrs.frozen
class AdverseEventUpdated:
    """An episode changed: a new grade (or components) from ``date``, a resolution, an attribution."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "ae_updated"
    at: datetime
    patient: str
    ae: str
    date: datetime | None = None
    grade: int | None = None
    components: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    resolved: datetime | None = None
    attribution: str | None = None
    note: str | None = None


@attrs.frozen
class DltAdjudicated:
    """People adjudicated an episode (``ae``) as a DLT or not, or closed a patient's safety assessment.

    Without ``ae``, ``dlt`` must be false: the patient's safety assessment
    ended without DLT (allowed from the window's first day, e.g. day 14 of a
    14-28 day window).
    """

    __repr__ = value_repr

    TYPE: ClassVar[str] = "dlt_adjudicated"
    at: datetime
    patient: str
    dlt: bool
    role: str
    person: str
    ae: str | None = None
    person_id: str | None = None
    note: str | None = None


@attrs.frozen
class NotEvaluable:
    """A patient left before being evaluable for DLT; the place in the cohort reopens for a replacement."""

    __repr__ = value_repr

    TYPE: ClassVar[str] = "not_evaluable"
    at: datetime
    patient: str
    reason: str
    note: str | None = None


@attrs.frozen
class DecisionSigned:
    """A person signed an option at the current decision point, in a role.

    ``option`` is an option id at a decision point, ``"treat"`` or
    ``"stop"`` for a rule that needs sign-off without offering options, or
    ``"terminate"`` for early termination.  ``rule``, when given, must be the
    rule of the current decision.
    """

    __repr__ = value_repr

    TYPE: ClassVar[str] = "decision_signed"
    at: datetime
    option: str
    role: str
    person: str
    rule: str | None = None
    person_id: str | None = None
    note: str | None = None


@attrs.frozen
class ProtocolAmended:
    """The protocol was amended (``reference`` names the amendment).

    ``change`` is ``add-dose`` (``dose`` appended at the top of the ladder,
    governed by ``stage`` or the top dose's stage), ``change-dose`` (the
    ``dose`` fields replace those of dose ``level``), ``remove-dose`` (the
    top dose ``level``, never used) or ``change-cap`` (``cap``).
    """

    __repr__ = value_repr

    TYPE: ClassVar[str] = "protocol_amended"
    at: datetime
    reference: str
    change: str
    dose: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    level: int | None = None
    cap: int | None = None
    stage: str | None = None
    note: str | None = None


Event = Union[  # noqa: UP007 (a runtime alias; the | form needs every class first and reads worse)
    PatientScreened, Enrolled, Infused, AdverseEventReported, AdverseEventUpdated, DltAdjudicated,
    NotEvaluable, DecisionSigned, ProtocolAmended]

_CLASSES: tuple[type, ...] = (PatientScreened, Enrolled, Infused, AdverseEventReported, AdverseEventUpdated,
                              DltAdjudicated, NotEvaluable, DecisionSigned, ProtocolAmended)

#: Event type name (the JSON ``type``) to its class.
EVENT_TYPES: Mapping[str, type] = {cls.TYPE: cls for cls in _CLASSES}  # type: ignore[attr-defined]

# field kinds for parsing: name -> (kind, required)
_TEXT, _INT, _BOOL, _TIME, _DATE, _OBJECT, _TEXTS = "text", "int", "bool", "time", "date", "object", "texts"
_FIELDS: Mapping[str, Mapping[str, tuple[str, bool]]] = {
    "screened": {"patient": (_TEXT, True), "eligible": (_BOOL, True), "result": (_OBJECT, False),
                 "reasons": (_TEXTS, False)},
    "enrolled": {"patient": (_TEXT, True), "dose": (_INT, True), "cohort": (_INT, False)},
    "infused": {"patient": (_TEXT, True), "date": (_DATE, True)},
    "ae_reported": {"patient": (_TEXT, True), "ae": (_TEXT, True), "term": (_TEXT, True),
                    "category": (_TEXT, True), "onset": (_TIME, True), "grade": (_INT, False),
                    "components": (_OBJECT, False), "attribution": (_TEXT, False)},
    "ae_updated": {"patient": (_TEXT, True), "ae": (_TEXT, True), "date": (_TIME, False), "grade": (_INT, False),
                   "components": (_OBJECT, False), "resolved": (_TIME, False), "attribution": (_TEXT, False)},
    "dlt_adjudicated": {"patient": (_TEXT, True), "dlt": (_BOOL, True), "role": (_TEXT, True),
                        "person": (_TEXT, True), "ae": (_TEXT, False), "person_id": (_TEXT, False)},
    "not_evaluable": {"patient": (_TEXT, True), "reason": (_TEXT, True)},
    "decision_signed": {"option": (_TEXT, True), "role": (_TEXT, True), "person": (_TEXT, True),
                        "rule": (_TEXT, False), "person_id": (_TEXT, False)},
    "protocol_amended": {"reference": (_TEXT, True), "change": (_TEXT, True), "dose": (_OBJECT, False),
                         "level": (_INT, False), "cap": (_INT, False), "stage": (_TEXT, False)},
}


def _value(kind: str, value: Any, where: str) -> Any:
    if kind == _TEXT:
        if not isinstance(value, str) or not value.strip():
            raise TrialError(f"{where}: expected a non-empty string (got {value!r})")
        return value
    if kind == _INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TrialError(f"{where}: expected an integer (got {value!r})")
        return value
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise TrialError(f"{where}: expected true or false (got {value!r})")
        return value
    if kind == _TIME:
        return parse_time(value, where)
    if kind == _DATE:
        return _parse_date(value, where)
    if kind == _OBJECT:
        if not isinstance(value, dict):
            raise TrialError(f"{where}: expected an object (got {value!r})")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrialError(f"{where}: expected a list of strings (got {value!r})")
    return tuple(value)


def parse_event(data: Any, source: str = "event") -> Event:
    """Build an event from its JSON form (a decoded object, or JSON text).

    Raises
    ------
    TrialError
        Naming the field and what was expected: unknown type, unknown or
        missing field, malformed date, value out of range.
    """
    if isinstance(data, str):
        data = load_json(data, source)
    if not isinstance(data, dict):
        raise TrialError(f"{source}: expected a JSON object (got {type(data).__name__})")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise TrialError(f"{source}: type: expected one of {', '.join(EVENT_TYPES)} (got {kind!r})")
    where = f"{source} ({kind})"
    fields = _FIELDS[kind]
    for key in data:
        if key not in fields and key not in ("type", "at", "note"):
            raise TrialError(f"{where}: {key}: unknown field (expected {', '.join(['at', *fields, 'note'])})")
    if "at" not in data:
        raise TrialError(f"{where}: at: missing (when it happened, e.g. 2025-01-06T09:00:00Z)")
    values: dict[str, Any] = {"at": parse_time(data["at"], f"{where}: at")}
    for key, (field_kind, required) in fields.items():
        if kind == "screened" and key == "eligible" and key in data and data[key] is None:
            values[key] = None  # undetermined
            continue
        if key not in data or data[key] is None:
            if required:
                raise TrialError(f"{where}: {key}: missing")
            continue
        values[key] = _value(field_kind, data[key], f"{where}: {key}")
    if "note" in data and data["note"] is not None:
        values["note"] = _value(_TEXT, data["note"], f"{where}: note")
    _check(kind, values, where)
    event: Event = EVENT_TYPES[kind](**values)
    return event


def person_key(name: str) -> str:
    """What two names must share to be the same person: NFKC, no invisible characters, spaces collapsed, case folded.

    Examples
    --------
    >>> person_key("W ") == person_key("W\u200b") == person_key("w") == person_key("\uff37")
    True
    >>> person_key("  Dr   A.\tSmith ")
    'dr a. smith'
    """
    text = unicodedata.normalize("NFKC", name)
    text = "".join(" " if c.isspace() else c for c in text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc", "Co", "Cs"))
    return unicodedata.normalize("NFKC", " ".join(text.split()).casefold())


def _check(kind: str, v: Mapping[str, Any], where: str) -> None:
    """Range and consistency checks that need no trial context."""
    for key in ("person", "person_id"):
        if key in v and not person_key(v[key]):
            raise TrialError(f"{where}: {key}: expected visible characters (got {v[key]!r})")
    for key in ("dose", "cohort", "level", "cap"):
        if key in v and isinstance(v[key], int) and v[key] < 1:
            raise TrialError(f"{where}: {key}: expected a positive integer (got {v[key]})")
    if "grade" in v and not 1 <= v["grade"] <= 5:
        raise TrialError(f"{where}: grade: expected a CTCAE grade from 1 to 5 (got {v['grade']})")
    if "attribution" in v and v["attribution"] not in ATTRIBUTIONS:
        raise TrialError(f"{where}: attribution: expected one of {', '.join(ATTRIBUTIONS)} (got {v['attribution']!r})")
    if kind == "ae_reported" and "grade" not in v and "components" not in v:
        raise TrialError(f"{where}: grade: missing (give a grade, or ASTCT components for CRS or ICANS)")
    if kind == "ae_updated":
        if ("grade" in v or "components" in v) and "date" not in v:
            raise TrialError(f"{where}: date: missing (when the new grade took effect)")
        if "date" in v and "grade" not in v and "components" not in v:
            raise TrialError(f"{where}: date: given without a grade or components")
        if not any(k in v for k in ("grade", "components", "resolved", "attribution")):
            raise TrialError(f"{where}: expected at least one of grade, components, resolved, attribution")
    if kind == "dlt_adjudicated" and v["dlt"] and "ae" not in v:
        raise TrialError(f"{where}: ae: missing (a DLT must name its adverse-event episode)")
    if kind == "protocol_amended":
        change = v["change"]
        if change not in AMENDMENT_CHANGES:
            raise TrialError(f"{where}: change: expected one of {', '.join(AMENDMENT_CHANGES)} (got {change!r})")
        needs = {"add-dose": ("dose",), "change-dose": ("level", "dose"), "remove-dose": ("level",),
                 "change-cap": ("cap",)}[change]
        for key in needs:
            if key not in v:
                raise TrialError(f"{where}: {key}: missing (needed by change {change!r})")
        extra = [k for k in ("dose", "level", "cap", "stage") if k in v and k not in needs
                 and not (k == "stage" and change == "add-dose")]
        if extra:
            raise TrialError(f"{where}: {extra[0]}: not used by change {change!r}")
        if "dose" in v:
            unknown = set(v["dose"]) - {"id", "label", "amount", "unit", "provisional"}
            if unknown:
                raise TrialError(f"{where}: dose.{sorted(unknown)[0]}: unknown field "
                                 f"(expected id, label, amount, unit, provisional)")
            if change == "add-dose" and not isinstance(v["dose"].get("id"), str):
                raise TrialError(f"{where}: dose.id: expected the new dose's id as a string "
                                 f"(got {v['dose'].get('id')!r})")
            _check_dose(v["dose"], where)


def _check_dose(dose: Mapping[str, Any], where: str) -> None:
    """The fields of an amended dose, each of the right kind; an amount finite and positive."""
    for key in ("id", "label", "unit"):
        if key in dose and (not isinstance(dose[key], str) or not dose[key].strip()):
            raise TrialError(f"{where}: dose.{key}: expected a non-empty string (got {dose[key]!r})")
    if "provisional" in dose and not isinstance(dose["provisional"], bool):
        raise TrialError(f"{where}: dose.provisional: expected true or false (got {dose['provisional']!r})")
    if "amount" in dose:
        amount = dose["amount"]
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) \
                or amount <= 0:
            raise TrialError(f"{where}: dose.amount: expected a finite positive number (got {amount!r})")


def event_to_dict(event: Event) -> dict[str, Any]:
    """The JSON form of an event (fields left at their default are omitted)."""
    out: dict[str, Any] = {"type": event.TYPE}
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if field.name == "eligible":  # null: undetermined
            out[field.name] = value
            continue
        if value is None or (field.name == "reasons" and not value):
            continue
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def canonical_json(event: Event) -> str:
    """One-line JSON with sorted keys: what the store hashes and exports.

    Examples
    --------
    >>> canonical_json(parse_event('{"type": "not_evaluable", "patient": "P3", "at": "2025-02-01", "reason": "x"}'))
    '{"at":"2025-02-01T00:00:00Z","patient":"P3","reason":"x","type":"not_evaluable"}'
    """
    try:
        return json.dumps(event_to_dict(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except ValueError:
        raise TrialError(f"event ({event.TYPE}): holds NaN or Infinity, which JSON does not allow") from None
