"""FHIR input: an HL7 FHIR R4 Bundle becomes an ordinary patient record, with where each value came from.

The protocol folder's ``fhir.toml`` (top-level key ``fhir``) maps LOINC,
SNOMED CT and ATC codes to places of the record (:func:`load_mapping`, checked
when the protocol's eligibility is loaded).  :func:`bundle_to_record` turns a
Bundle into the record's JSON form and a provenance table (record place to
``"Observation/abc"``); :func:`bundle_record` reads that record.  The Bundle
is first validated with the ``fhir.resources`` models (the ``fhir`` extra),
imported only when a Bundle arrives.  Rules (the latest Observation before the
screening date wins, Condition statuses, the local code system...) are in
``docs/howto/fhir.md``.

Examples
--------
>>> from escalation_rules import load_protocol
>>> from escalation_rules.eligibility import load_eligibility
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> rule = [r for r in spec.fhir.rules if r.to == "measurements.alt"][0]
>>> rule.resource, rule.codes[0].system, rule.codes[0].code
('Observation', 'http://loinc.org', '1742-6')
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .._attrs import value_repr
from .._limits import MAX_BUNDLE_ENTRIES, show
from ..errors import EscalationRulesError, ProtocolError
from ._record import LIST_FIELDS, SECTION_FIELDS, PatientRecord, RecordError, read_record
from ._units import lab_factor

__all__ = ["FhirCode", "FhirError", "FhirMapping", "FhirRule", "blame", "bundle_record", "bundle_to_record",
           "is_bundle", "load_mapping"]

#: The resource types read for screening (others are left out and listed as ignored in the result).
RESOURCES = ("Patient", "Observation", "Condition", "Procedure", "MedicationStatement", "MedicationAdministration",
             "Medication")
_RULE_RESOURCES = ("Observation", "Condition", "Procedure", "Medication")
_LISTS = tuple(LIST_FIELDS)
_ASSESSMENT_SPECIMENS = ("bone_marrow", "peripheral_blood")
_OBS_STATUS = frozenset(("final", "amended", "corrected"))
_ACTIVE = frozenset(("active", "recurrence", "relapse"))
_UNSURE = frozenset(("unconfirmed", "provisional", "differential", "entered-in-error"))
_INACTIVE = frozenset(("inactive", "remission", "resolved"))
#: Record places read from a resource's element rather than from a code.
_ELEMENTS = {"demographics.sex": "Patient.gender", "demographics.birth_date": "Patient.birthDate",
             "anchors.screening": "Bundle.timestamp"}
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_UCUM = "http://unitsofmeasure.org"
_NO_RULE = "no mapping rule for its code"
#: Timing.repeat.periodUnit in days (a month and a year have no fixed length).
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0}


class FhirError(RecordError):
    """A FHIR Bundle was refused; one line per problem, naming the entry, the resource and the field."""


@attrs.frozen
class FhirCode:
    """One code of a code system, with its display text."""

    __repr__ = value_repr

    system: str
    code: str
    display: str = ""


@attrs.frozen
class FhirRule:
    """Codes of one resource type that fill one record place.

    Attributes
    ----------
    resource : str
        ``Observation``, ``Condition``, ``Procedure`` or ``Medication``
        (MedicationStatement and MedicationAdministration).
    to : str
        The record place (``measurements.alt``, ``serology.hbsag``, ``medications``...).
    codes : tuple of FhirCode
    set : dict
        For a list: the fields of the entry it makes (``{"category": "corticosteroid"}``).
    value : str or None
        For a Condition filling a coded field: the code it gives (``"aml"``).
    prefix : bool
        Codes match as prefixes (ATC groups).
    none : bool
        The code says the list is known to be empty.
    """

    __repr__ = value_repr

    resource: str
    to: str
    codes: tuple[FhirCode, ...]
    set: Mapping[str, Any] = attrs.field(factory=dict)
    value: str | None = None
    prefix: bool = False
    none: bool = False

    def matches(self, system: str | None, code: str | None) -> bool:
        """Whether a coding is one of this rule's codes.

        Examples
        --------
        >>> rule = FhirRule("Medication", "medications", (FhirCode("http://www.whocc.no/atc", "H02AB"),),
        ...                 {"category": "corticosteroid"}, prefix=True)
        >>> rule.matches("http://www.whocc.no/atc", "H02AB02"), rule.matches("http://www.whocc.no/atc", "L04AA")
        (True, False)
        """
        if system is None or code is None:
            return False
        return any(c.system == system and (code.startswith(c.code) if self.prefix else code == c.code)
                   for c in self.codes)


@attrs.frozen
class FhirMapping:
    """The checked ``fhir`` section of a protocol: rules, coded answers, routes, medication indications and
    prednisone equivalents, and the local code system."""

    __repr__ = value_repr

    source: str
    rules: tuple[FhirRule, ...]
    answers: Mapping[tuple[str, str], str]
    routes: Mapping[tuple[str, str], str]
    local_system: str
    description: str = ""
    #: A medication's reason (a condition code) to its indication: treatment or physiological_replacement.
    indications: Mapping[tuple[str, str], str] = attrs.field(factory=dict)
    #: A drug code to (mg of the drug, mg of prednisone): the doses of equal glucocorticoid effect.
    prednisone: Mapping[tuple[str, str], tuple[float, float]] = attrs.field(factory=dict)

    def codes_for(self, place: str, where: Mapping[str, tuple[Any, ...]] | None = None,
                  where_not: Mapping[str, tuple[Any, ...]] | None = None) -> list[dict[str, str]]:
        """The codes mapped to a record place (for a list, to entries a data item's filters keep).

        Examples
        --------
        >>> from escalation_rules import load_protocol
        >>> from escalation_rules.eligibility import load_eligibility
        >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
        >>> [c["code"] for c in spec.fhir.codes_for("measurements.creatinine")]
        ['2160-0', '14682-9']
        """
        out: list[dict[str, str]] = []
        if place in _ELEMENTS:  # read from an element, not a code
            return [{"resource": _ELEMENTS[place].split(".")[0], "element": _ELEMENTS[place]}]
        for rule in self.rules:
            if rule.to != place and not (place == "disease_assessments" and rule.to.startswith(place + ".")):
                continue
            if rule.set and not _kept(rule.set, where or {}, where_not or {}):
                continue
            for c in rule.codes:
                row = {"system": c.system, "code": c.code, "display": c.display, "resource": rule.resource}
                if rule.prefix:
                    row["match"] = "prefix"
                if rule.none:
                    row["means"] = "none"
                if row not in out:
                    out.append(row)
        return out


def _kept(fields: Mapping[str, Any], where: Mapping[str, tuple[Any, ...]],
          where_not: Mapping[str, tuple[Any, ...]]) -> bool:
    """Whether an entry with these fields can pass a data item's ``where``/``where_not``."""
    for key, allowed in where.items():
        if key in fields and fields[key] not in allowed:
            return False
    return not (where_not and all(key in fields and fields[key] in allowed for key, allowed in where_not.items()))


# ------------------------------------------------------------------ loading the mapping

_TOP = ("description", "local_system", "answers", "routes", "indications", "prednisone_equivalents", "map")
_INDICATIONS = tuple(v for v in LIST_FIELDS["medications"][0]["indication"] if v != "unspecified")
_EQUIVALENCE_KEYS = ("drug_mg", "prednisone_mg", "codes")
_MAX_EQUIVALENT_MG = 1000.0
_RULE_KEYS = ("resource", "to", "codes", "set", "value", "prefix", "none")


def load_mapping(raw: Any, source: str, measurements: frozenset[str] | None = None) -> FhirMapping:
    """Check a protocol's ``fhir`` table and build the mapping.

    ``measurements``, when given, are the measurement codes the protocol
    reads: a rule filling another is refused (its values would be refused).

    Raises
    ------
    ProtocolError
        One line per problem, naming the file and key path (``fhir.map[3].to``).

    Examples
    --------
    >>> load_mapping({"map": [{"resource": "Observation", "to": "measurements.alt", "codes": []}]}, "f.toml")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.ProtocolError: f.toml: fhir.map[0].codes: expected a non-empty list of codes
    """
    problems: list[str] = []

    def problem(path: str, message: str) -> None:
        problems.append(f"{source}: {path}: {message}")

    if not isinstance(raw, dict):
        raise ProtocolError([f"{source}: fhir: expected a table (got {show(raw)})"])
    for key in raw:
        if key not in _TOP:
            problem(f"fhir.{key}", f"unknown key (expected one of: {', '.join(sorted(_TOP))})")
    local = raw.get("local_system", "")
    if not isinstance(local, str):
        problem("fhir.local_system", f"expected a code system URI (got {show(local)})")
        local = ""
    description = raw.get("description", "")
    if not isinstance(description, str):
        problem("fhir.description", f"expected text (got {show(description)})")
        description = ""

    def tables(items: list[Any], path: str, keys: tuple[str, ...],
               shape: str = "a table") -> Iterator[tuple[str, dict[str, Any], bool]]:
        """Each entry of ``items`` that is a table, with its key path and whether all its keys are known.

        Entries that are not tables and unknown keys are reported as problems.
        """
        for i, entry in enumerate(items):
            where = f"{path}[{i}]"
            if not isinstance(entry, dict):
                problem(where, f"expected {shape} (got {show(entry)})")
                continue
            unknown = [key for key in entry if key not in keys]
            for key in unknown:
                problem(f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(keys))})")
            yield where, entry, not unknown

    def codes(value: Any, path: str) -> tuple[FhirCode, ...]:
        if not isinstance(value, list) or not value:
            problem(path, "expected a non-empty list of codes")
            return ()
        out = []
        for where, c, _ in tables(value, path, ("system", "code", "display"), "a table { system, code, display }"):
            system, code, display = c.get("system"), c.get("code"), c.get("display", "")
            if not isinstance(system, str) or not system:
                problem(f"{where}.system", f"expected a code system URI (got {show(system)})")
                continue
            if not isinstance(code, str) or not code.strip():
                problem(f"{where}.code", f"expected a code (got {show(code)})")
                continue
            if not isinstance(display, str):
                problem(f"{where}.display", f"expected text (got {show(display)})")
                display = ""
            out.append(FhirCode(system, code, display))
        return tuple(out)

    def array(name: str) -> list[Any]:
        """The array of tables ``fhir.NAME`` (empty when absent, or reported when not an array)."""
        value = raw.get(name, [])
        if not isinstance(value, list):
            problem(f"fhir.{name}", f"expected an array of tables (got {show(value)})")
            return []
        return value

    def table(name: str, allowed: tuple[str, ...]) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for path, entry, _ in tables(array(name), f"fhir.{name}", ("value", "codes")):
            meaning = entry.get("value")
            if meaning not in allowed:
                problem(f"{path}.value", f"expected one of {', '.join(allowed)} (got {show(meaning)})")
                continue
            for c in codes(entry.get("codes"), f"{path}.codes"):
                out[(c.system, c.code)] = meaning
        return out

    answers = table("answers", ("positive", "negative"))
    routes = table("routes", LIST_FIELDS["medications"][0]["route"])
    indications = table("indications", _INDICATIONS)
    prednisone: dict[tuple[str, str], tuple[float, float]] = {}
    for path, entry, _ in tables(array("prednisone_equivalents"), "fhir.prednisone_equivalents", _EQUIVALENCE_KEYS):
        doses = []
        for key in ("drug_mg", "prednisone_mg"):
            mg = entry.get(key)
            if isinstance(mg, bool) or not isinstance(mg, int | float) or not 0 < mg <= _MAX_EQUIVALENT_MG:
                problem(f"{path}.{key}", f"expected a number of mg above 0 and at most {_MAX_EQUIVALENT_MG:g} "
                        f"(got {show(mg)})")
                continue
            doses.append(float(mg))
        for c in codes(entry.get("codes"), f"{path}.codes"):
            old = prednisone.get((c.system, c.code))
            if len(doses) == 2 and old is not None and old != tuple(doses):
                problem(f"{path}.codes", f"{c.system}|{c.code} already has {old[0]:g} mg = {old[1]:g} mg "
                        "prednisone (one equivalence per drug code)")
            elif len(doses) == 2:
                prednisone[(c.system, c.code)] = (doses[0], doses[1])
    rules: list[FhirRule] = []
    for path, entry, known in tables(array("map"), "fhir.map", _RULE_KEYS):
        before = len(problems)
        resource, to = entry.get("resource"), entry.get("to")
        if resource not in _RULE_RESOURCES:
            problem(f"{path}.resource", f"expected one of {', '.join(_RULE_RESOURCES)} (got {show(resource)})")
            continue
        rule_codes = codes(entry.get("codes"), f"{path}.codes")
        fields = entry.get("set", {})
        value = entry.get("value")
        prefix, none = entry.get("prefix", False), entry.get("none", False)
        for key, flag in (("prefix", prefix), ("none", none)):
            if not isinstance(flag, bool):
                problem(f"{path}.{key}", f"expected true or false (got {show(flag)})")
        why = _check_place(resource, to, fields, value, none)
        if why is not None:
            problem(f"{path}.{why[0]}", why[1])
        elif (measurements is not None and isinstance(to, str) and to.startswith("measurements.")
              and to.split(".", 1)[1] not in measurements):
            problem(f"{path}.to", f"this protocol reads no measurement {to.split('.', 1)[1]!r} (it reads: "
                    f"{', '.join(sorted(measurements))})")
        if known and len(problems) == before:
            rules.append(FhirRule(resource, str(to), rule_codes, dict(fields), value, prefix, none))
    if problems:
        raise ProtocolError(problems)
    return FhirMapping(source, tuple(rules), answers, routes, local, description, indications, prednisone)


def _check_place(resource: str, to: Any, fields: Any, value: Any, none: Any) -> tuple[str, str] | None:
    """Why ``to`` (with ``set``/``value``) cannot take values from ``resource``, as (key, message); else None."""
    if not isinstance(to, str):
        return "to", f"expected a record place such as 'measurements.alt' (got {show(to)})"
    if not isinstance(fields, dict):
        return "set", f"expected a table of entry fields (got {show(fields)})"
    head, _, rest = to.partition(".")
    if to in _LISTS:
        if resource == "Observation":
            return "to", f"an Observation does not make {to} entries (use a Condition, Procedure or Medication rule)"
        kinds, required = LIST_FIELDS[to]
        for key, val in fields.items():
            kind = kinds.get(key)
            if kind is None or key in ("start", "end"):
                allowed = ", ".join(k for k in kinds if k not in ("start", "end"))
                return f"set.{key}", f"not a field of {to} entries (expected one of: {allowed})"
            if isinstance(kind, tuple) and kind[0] not in ("int", "number") and val not in kind:
                return f"set.{key}", f"expected one of {', '.join(kind)} (got {show(val)})"
            if kind == "bool" and not isinstance(val, bool):
                return f"set.{key}", f"expected true or false (got {show(val)})"
        derived = {"infections": ("controlled", "requires_treatment"), "malignancies": ("curatively_treated",)}
        missing = [k for k in required if k not in ("start", *derived.get(to, ())) and k not in fields]
        if missing and not none:
            return "set", f"missing {', '.join(missing)} (required in every {to} entry)"
        return None
    if none:
        return "none", f"only a list ({', '.join(_LISTS)}) can be known to be empty"
    if fields:
        return "set", f"only list entries take set (got to = {to!r})"
    if resource == "Observation":
        if to in ("ecog", "weight") or (head == "measurements" and rest.isidentifier() and rest.islower()):
            return None
        if head == "disease_assessments" and rest in _ASSESSMENT_SPECIMENS:
            return None
        if head in ("serology", "pregnancy") and SECTION_FIELDS[head].get(rest) == ("positive", "negative"):
            return None
        return "to", ("an Observation fills ecog, weight, measurements.CODE, disease_assessments.bone_marrow or "
                      f".peripheral_blood, or a positive/negative field of serology or pregnancy (got {to!r})")
    if resource == "Condition" and head in SECTION_FIELDS and rest in SECTION_FIELDS[head]:
        kind = SECTION_FIELDS[head][rest]
        if kind == "bool" and value is None:
            return None
        if isinstance(kind, tuple) and kind[0] not in ("int", "number"):
            if value in kind:
                return None
            return "value", f"expected the code the Condition gives: one of {', '.join(kind)} (got {show(value)})"
        return "value", f"{to} takes no value from a Condition (it is true or false)"
    return "to", (f"a {resource} fills " + ("a true/false or coded section field (e.g. 'cns.active_uncontrolled_"
                                              "involvement')" if resource == "Condition" else
                                              f"a list ({', '.join(_LISTS)})") + f" (got {to!r})")


# ------------------------------------------------------------------ reading a Bundle


def is_bundle(data: Any) -> bool:
    """Whether decoded JSON is a FHIR Bundle (by its ``resourceType``).

    Examples
    --------
    >>> is_bundle({"resourceType": "Bundle"}), is_bundle({"id": "P1"})
    (True, False)
    """
    return type(data) is dict and data.get("resourceType") == "Bundle"


def _validate(bundle: Mapping[str, Any], source: str) -> None:
    """Validate with the ``fhir.resources`` R4B models (R4-compatible for these resources); our errors only."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError:  # the optional extra is not installed
        raise FhirError([f"{source}: reading a FHIR Bundle needs the 'fhir' extra (fhir.resources 8; in the "
                         "clone: pip install -e '.[fhir]')"]) from None
    from pydantic import ValidationError

    try:
        Bundle.model_validate(bundle)
    except ValidationError as err:
        raw_entries = bundle.get("entry")
        entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
        lines = []
        for e in err.errors()[:5]:
            loc = list(e.get("loc", ()))
            where = "Bundle"
            if len(loc) >= 2 and loc[0] == "entry" and isinstance(loc[1], int):
                index = loc[1]
                resource = entries[index].get("resource") if index < len(entries) and isinstance(
                    entries[index], dict) else None
                where = f"entry[{index}]" + (f" ({_ref(resource)})" if isinstance(resource, dict) else "")
                loc = loc[3:] if len(loc) > 2 and loc[2] == "resource" else loc[2:]
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(resource)"
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {show(got, 40)})"
            lines.append(f"{source}: {where}: {field}: {message}{shown}")
        raise FhirError(lines) from None
    except RecursionError:
        raise FhirError([f"{source}: the Bundle is nested too deeply to read"]) from None


def _ref(resource: Mapping[str, Any]) -> str:
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    return f"{rtype}/{rid}" if isinstance(rid, str) and rid else str(rtype)


def _day(text: Any) -> dt.date | None:
    """The day of a FHIR date or dateTime (``None`` for a year or month alone)."""
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _codings(concept: Any) -> list[tuple[str | None, str | None, str]]:
    if not isinstance(concept, dict):
        return []
    return [(c.get("system"), c.get("code"), c.get("display") or "") for c in concept.get("coding") or []
            if isinstance(c, dict)]


class _Builder:
    """Collects record values from resources, with their provenance and the rules for repeated values."""

    def __init__(self, mapping: FhirMapping, source: str, screening: dt.date | None) -> None:
        self.mapping = mapping
        self.source = source
        self.screening = screening
        self.problems: list[str] = []
        # place -> (date, value, ref): the latest dated value not after the screening date wins
        self.latest: dict[str, tuple[dt.date | None, Any, str]] = {}
        self.lists: dict[str, list[tuple[dict[str, Any], str]]] = {}
        self.known_none: dict[str, str] = {}
        self.fields: dict[str, tuple[Any, str]] = {}
        self.ignored: dict[str, str] = {}  # resource -> why it gave no value
        self.unread: dict[str, list[str]] = {}  # resource -> elements it gave no value from, and why
        self.reasons: set[str] = set()  # Conditions read as a medication's reason
        # a MedicationAdministration's place (entry[i] (...)) -> (drug code, day, mg or None, its entries, its ref)
        self.administered: dict[str, tuple[tuple[str, str], dt.date, float | None, list[dict[str, Any]], str]] = {}

    def unread_element(self, ref: str, note: str) -> None:
        """Note an element that gave no value (``"element: why"``); the result lists them."""
        self.unread.setdefault(ref, []).append(note)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    def keep(self, place: str, day: dt.date | None, value: Any, ref: str, where: str) -> None:
        """Keep the latest value per place; two different values on one day are refused."""
        if day is not None and self.screening is not None and day > self.screening:
            return  # after the screening date: not part of the baseline
        old = self.latest.get(place)
        if old is None or (day or dt.date.min) > (old[0] or dt.date.min):
            self.latest[place] = (day, value, ref)
        elif day is not None and day == old[0] and value != old[1]:
            self.problem(where, f"{place} on {day} is {_text(value)} but {old[2]} gives {_text(old[1])} "
                         "(expected one value per code and day)")

    def add(self, name: str, entry: dict[str, Any], ref: str) -> None:
        """Add a list entry; one that starts after the screening date is not part of the history."""
        start = _day(entry.get("start") or entry.get("date"))
        if start is not None and self.screening is not None and start > self.screening:
            return
        self.lists.setdefault(name, []).append((entry, ref))

    def field(self, place: str, value: Any, ref: str, where: str) -> None:
        old = self.fields.get(place)
        if old is not None and old[0] != value:
            self.problem(where, f"{place} is {_text(value)} but {old[1]} gives {_text(old[0])}")
            return
        self.fields[place] = (value, ref)


def _text(value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        return f"{value['value']:g} {value.get('unit', '')}".strip()
    return str(value)


def bundle_to_record(mapping: FhirMapping, bundle: Mapping[str, Any],
                     source: str = "bundle") -> tuple[dict[str, Any], dict[str, Any]]:
    """The patient record (JSON form) a Bundle gives, and where each value came from.

    Returns
    -------
    record : dict
        As :func:`~escalation_rules.eligibility.read_record` reads it.
    provenance : dict
        Record place (``measurements.alt``, ``demographics.sex``) to the
        resource it came from (``"Observation/alt-1"``); for a list, the
        resources of its entries in order.

    Raises
    ------
    FhirError
        One line per problem, naming the entry, the resource and the field.

    Examples
    --------
    >>> import json
    >>> from escalation_rules import load_protocol
    >>> from escalation_rules.eligibility import load_eligibility
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> record, provenance = bundle_to_record(spec.fhir, json.load(open("examples/fhir/male.json")))
    >>> record["demographics"], provenance["measurements.alt"]
    ({'sex': 'male', 'birth_date': '1985-04-21'}, 'Observation/alt')
    >>> bundle_to_record(spec.fhir, {"resourceType": "Bundle", "type": "collection", "entry": []}, "b.json")
    Traceback (most recent call last):
    ...
    escalation_rules.eligibility._fhir.FhirError: b.json: entry: expected exactly one Patient (got 0)
    """
    if not is_bundle(bundle):
        raise FhirError([f"{source}: resourceType: expected 'Bundle' (got {show(bundle.get('resourceType'))})"
                         if isinstance(bundle, dict) else f"{source}: expected a JSON object (got {show(bundle)})"])
    entries = bundle.get("entry") or []
    if isinstance(entries, list) and len(entries) > MAX_BUNDLE_ENTRIES:
        raise FhirError([f"{source}: entry: {len(entries)} entries, past the limit of {MAX_BUNDLE_ENTRIES} for a "
                         "Bundle (see docs/reference/limits.md)"])
    _validate(bundle, source)
    resources: list[tuple[int, dict[str, Any]]] = [(i, e["resource"]) for i, e in enumerate(entries)
                                                   if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    problems: list[str] = []
    patients = [(i, r) for i, r in resources if r.get("resourceType") == "Patient"]
    if len(patients) != 1:
        problems.append(f"{source}: entry: expected exactly one Patient (got {len(patients)})")
    if problems:
        raise FhirError(problems)
    index, patient = patients[0]
    pid = patient.get("id")
    if not isinstance(pid, str) or not pid:
        raise FhirError([f"{source}: entry[{index}] (Patient): id: missing (the record is named by it)"])
    patient_refs = {f"Patient/{pid}"}
    full = entries[index].get("fullUrl")
    if isinstance(full, str):
        patient_refs.add(full)
    screening = _day(bundle.get("timestamp"))
    for _, r in resources:  # a local anchors.screening Observation wins over the Bundle's timestamp
        if r.get("resourceType") == "Observation":
            for system, code, _ in _codings(r.get("code")):
                if system == mapping.local_system and code == "anchors.screening":
                    screening = _day(r.get("valueDateTime")) or screening
    if screening is None:
        raise FhirError([f"{source}: timestamp: missing (the Bundle's timestamp, or an Observation coded "
                         f"{mapping.local_system}|anchors.screening, gives the screening date)"])
    b = _Builder(mapping, source, screening)
    record: dict[str, Any] = {"format": "escalation-rules/patient-record/1", "id": pid,
                              "anchors": {"screening": screening.isoformat()}}
    provenance: dict[str, Any] = {"anchors.screening": f"Bundle/{bundle.get('id') or ''}".rstrip("/")}
    demographics: dict[str, Any] = {}
    if patient.get("gender") in ("female", "male"):
        demographics["sex"] = patient["gender"]
        provenance["demographics.sex"] = f"Patient/{pid}"
    birth = _day(patient.get("birthDate"))
    if birth is not None:
        demographics["birth_date"] = birth.isoformat()
        provenance["demographics.birth_date"] = f"Patient/{pid}"
    if demographics:
        record["demographics"] = demographics
    by_id: dict[str, dict[str, Any]] = {}  # Medications and Conditions a medication may refer to
    for i, r in resources:
        if r.get("resourceType") in ("Medication", "Condition"):
            if isinstance(r.get("id"), str):
                by_id[f"{r['resourceType']}/{r['id']}"] = r
            url = entries[i].get("fullUrl")
            if isinstance(url, str):
                by_id[url] = r
    for i, r in resources:
        kind = r.get("resourceType")
        if kind in ("Patient", "Medication"):
            continue
        if kind not in RESOURCES:
            b.ignored[_ref(r)] = "resource type not read for screening"
            continue
        where = f"entry[{i}] ({_ref(r)})"
        subject = r.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if ref is not None and ref not in patient_refs:
            b.problem(where, f"subject.reference: {ref!r} is not this Bundle's Patient "
                      f"({', '.join(sorted(patient_refs))})")
            continue
        if kind == "Observation":
            _observation(b, r, where)
        elif kind == "Condition":
            _condition(b, r, where)
        elif kind == "Procedure":
            _procedure(b, r, where)
        else:
            _medication(b, r, where, by_id)
    if b.problems:
        raise FhirError(b.problems)
    _daily_totals(b)
    for ref in b.reasons:  # a Condition read as a medication's reason gave a value
        if b.ignored.get(ref) == _NO_RULE:
            del b.ignored[ref]
    _assemble(b, record, provenance)
    if b.ignored:
        provenance["#ignored"] = b.ignored
    if b.unread:
        provenance["#unread"] = {ref: list(notes) for ref, notes in b.unread.items()}
    return record, provenance


def _rules(mapping: FhirMapping, resource: str, concept: Any) -> list[FhirRule]:
    codings = _codings(concept)
    return [rule for rule in mapping.rules if rule.resource == resource
            and any(rule.matches(system, code) for system, code, _ in codings)]


def _local(mapping: FhirMapping, concept: Any) -> str | None:
    for system, code, _ in _codings(concept):
        if system == mapping.local_system and code:
            return code
    return None


def _observation(b: _Builder, r: dict[str, Any], where: str) -> None:
    ref = _ref(r)
    if r.get("status") not in _OBS_STATUS:  # registered, preliminary, cancelled, entered-in-error, unknown
        b.ignored[ref] = f"status {r.get('status')}: not a result to screen on"
        return
    if "dataAbsentReason" in r and not any(k.startswith("value") for k in r):
        b.ignored[ref] = "no value (dataAbsentReason)"
        return
    day = _day(r.get("effectiveDateTime") or r.get("effectiveInstant")
               or (r.get("effectivePeriod") or {}).get("end") or (r.get("effectivePeriod") or {}).get("start")
               or r.get("issued"))
    local = _local(b.mapping, r.get("code"))
    if local is not None:
        _local_value(b, r, local, day, ref, where)
        return
    rules = _rules(b.mapping, "Observation", r.get("code"))
    if not rules:
        b.ignored[ref] = _NO_RULE
    for rule in rules:
        head, _, rest = rule.to.partition(".")
        if rule.to == "ecog":
            score = r.get("valueInteger")
            if score is None and isinstance(r.get("valueQuantity"), dict):
                score = r["valueQuantity"].get("value")
            if not (isinstance(score, int | float) and float(score).is_integer()):
                b.problem(where, f"value[x]: expected valueInteger for an ECOG score (got {show(score)})")
                continue
            b.keep("ecog", day, int(score), ref, where)
        elif head in ("serology", "pregnancy"):
            answer = _answer(b.mapping, r)
            if answer is None:
                b.problem(where, "value[x]: expected a positive or negative result (valueCodeableConcept with a "
                          "code of fhir.answers, or valueString 'positive'/'negative')")
                continue
            b.keep(rule.to, day, answer, ref, where)
        else:
            q = _quantity(b, r, where)
            if q is None:
                continue
            if head == "disease_assessments":
                if day is None:
                    b.problem(where, "effective[x]: missing (a disease assessment needs its date)")
                else:
                    b.add("disease_assessments", {"specimen": rest, "date": day.isoformat(),
                                                  "blasts_percent": q["value"]}, ref)
                continue
            value = {k: v for k, v in q.items() if k != "reference_range" or head == "measurements"}
            if day is not None:
                value["date"] = day.isoformat()
            b.keep(rule.to, day, value, ref, where)


def _quantity(b: _Builder, r: dict[str, Any], where: str) -> dict[str, Any] | None:
    """valueQuantity as ``{value, unit[, reference_range, lloq, detected]}``: the UCUM code when given."""
    q = r.get("valueQuantity")
    if not isinstance(q, dict) or q.get("value") is None:
        b.problem(where, f"valueQuantity: expected a quantity with a value (got {show(r.get('valueQuantity'))})")
        return None
    unit = q.get("code") if q.get("system") in (None, _UCUM) and q.get("code") else q.get("unit")
    if not isinstance(unit, str) or not unit:
        b.problem(where, "valueQuantity.code: missing (a UCUM code or a unit is needed)")
        return None
    comparator = q.get("comparator")
    out: dict[str, Any] = {"value": float(q["value"]), "unit": unit}
    if comparator in ("<", "<="):  # "< L": below the assay's limit L; whether detected comes from interpretation
        out["value"], out["lloq"] = 0.0, float(q["value"])
    elif comparator is not None:
        b.problem(where, f"valueQuantity.comparator: {comparator!r} gives no value to compare")
        return None
    for concept in r.get("interpretation") or ():  # detected or not (viral loads), as the answers table says
        for system, code, _ in _codings(concept):
            meaning = b.mapping.answers.get((system or "", code or ""))
            if meaning is not None:
                out["detected"] = meaning == "positive"
    ranges = r.get("referenceRange") or []
    if ranges and isinstance(ranges[0], dict):
        rng: dict[str, Any] = {}
        for key in ("low", "high"):
            bound = ranges[0].get(key)
            if isinstance(bound, dict) and bound.get("value") is not None:
                rng[key] = float(bound["value"])
                bound_unit = bound.get("code") or bound.get("unit")
                if isinstance(bound_unit, str) and bound_unit != unit:
                    rng["unit"] = bound_unit
        if rng:
            out["reference_range"] = rng
    return out


def _answer(mapping: FhirMapping, r: dict[str, Any]) -> str | None:
    for system, code, _ in _codings(r.get("valueCodeableConcept")):
        meaning = mapping.answers.get((system or "", code or ""))
        if meaning is not None:
            return meaning
    text = r.get("valueString")
    if isinstance(text, str) and text.strip().lower() in ("positive", "negative"):
        return text.strip().lower()
    return None


def _local_value(b: _Builder, r: dict[str, Any], place: str, day: dt.date | None, ref: str, where: str) -> None:
    """An Observation in the local code system: its code is the record place it fills."""
    head, _, rest = place.partition(".")
    value: Any
    if place == "anchors.screening":
        return  # read before the other resources
    if place in _LISTS:
        if r.get("valueBoolean") is not False:
            b.problem(where, f"valueBoolean: expected false (an Observation coded {place!r} in the local code "
                      "system says the list is empty)")
            return
        b.known_none[place] = ref
        return
    if head == "measurements" or place in ("weight", "life_expectancy"):
        q = _quantity(b, r, where)
        if q is None:
            return
        if head != "measurements":
            q.pop("reference_range", None)
        if day is not None and place != "life_expectancy":
            q["date"] = day.isoformat()
        b.keep(place, day, q, ref, where)
        return
    for key in ("valueBoolean", "valueInteger", "valueString", "valueDateTime"):
        if key in r:
            value = r[key]
            break
    else:
        concept = _codings(r.get("valueCodeableConcept"))
        if not concept:
            b.problem(where, "value[x]: expected valueBoolean, valueInteger, valueString, valueDateTime, "
                      "valueQuantity or valueCodeableConcept")
            return
        value = concept[0][1]
    if isinstance(value, str) and key == "valueDateTime":
        value = (_day(value) or dt.date.min).isoformat() if _day(value) else value
    if head == "anchors" or head == "attestations" or head == "ecog" or (
            head in SECTION_FIELDS and rest in SECTION_FIELDS[head]):
        b.field(place, value, ref, where)
        return
    b.problem(where, f"code: {place!r} of the local code system is not a record place (expected e.g. "
              "'attestations.understands_study', 'cns.history_requiring_treatment', 'measurements.cd7_flow')")


def _condition(b: _Builder, r: dict[str, Any], where: str) -> None:
    ref = _ref(r)
    verification = {c or "" for _, c, _ in _codings(r.get("verificationStatus"))}
    rules = _rules(b.mapping, "Condition", r.get("code"))
    if not rules or verification & _UNSURE:
        b.ignored[ref] = (_NO_RULE if not rules else
                          f"verificationStatus {'/'.join(sorted(verification & _UNSURE))}: not a diagnosis to "
                          "screen on")
        return
    refuted = "refuted" in verification
    clinical = {c for s, c, _ in _codings(r.get("clinicalStatus")) if s in (None, _CLINICAL)}
    active = None if refuted else True if clinical & _ACTIVE else False if clinical & _INACTIVE else None
    onset = _day(r.get("onsetDateTime") or (r.get("onsetPeriod") or {}).get("start") or r.get("recordedDate"))
    end = _day(r.get("abatementDateTime") or (r.get("abatementPeriod") or {}).get("end"))
    for rule in rules:
        if rule.to in _LISTS:
            if refuted:
                continue
            if onset is None:
                b.problem(where, "onset[x]: missing (an onsetDateTime or recordedDate dates the entry)")
                continue
            entry = {**rule.set, "start": onset.isoformat()}
            if end is not None:
                entry["end"] = end.isoformat()
            if rule.to == "infections":  # our reading: an active infection is uncontrolled and needs treatment
                entry.setdefault("controlled", active is False)
                entry.setdefault("requires_treatment", True)
            if rule.to == "malignancies":
                entry.setdefault("curatively_treated", active is False)
            b.add(rule.to, entry, ref)
        elif rule.value is not None:
            if not refuted:
                b.field(rule.to, rule.value, ref, where)
        else:
            value = False if refuted else active
            if value is None:
                b.problem(where, "clinicalStatus: missing (active or inactive/resolved says whether "
                          f"{rule.to} is true)")
                continue
            b.field(rule.to, value, ref, where)


def _period(r: dict[str, Any], prefix: str) -> tuple[dt.date | None, dt.date | None]:
    period = r.get(f"{prefix}Period") or {}
    start = _day(r.get(f"{prefix}DateTime") or period.get("start"))
    end = _day(period.get("end")) if period else start
    return start, end


def _procedure(b: _Builder, r: dict[str, Any], where: str) -> None:
    status = r.get("status")
    ref = _ref(r)
    rules = _rules(b.mapping, "Procedure", r.get("code"))
    if status in ("not-done", "entered-in-error") or not rules:
        b.ignored[ref] = f"status {status}" if rules else _NO_RULE
        return
    for rule in rules:
        if rule.none:
            b.known_none[rule.to] = ref
            continue
        start, end = _period(r, "performed")
        if start is None:
            b.problem(where, "performed[x]: missing (a procedure needs its date)")
            continue
        entry = {**rule.set, "start": start.isoformat()}
        if end is not None and status != "in-progress":
            entry["end"] = end.isoformat()
        b.add(rule.to, entry, ref)


def _medication(b: _Builder, r: dict[str, Any], where: str, by_id: Mapping[str, dict[str, Any]]) -> None:
    status = r.get("status")
    ref = _ref(r)
    if status in ("not-taken", "entered-in-error", "not-done"):
        b.ignored[ref] = f"status {status}"
        return
    concept = r.get("medicationCodeableConcept")
    reference = (r.get("medicationReference") or {}).get("reference")
    if concept is None and reference is not None:
        medication = by_id.get(reference)
        if medication is None or medication.get("resourceType") != "Medication":
            b.problem(where, f"medicationReference: {reference!r} is not a Medication in this Bundle")
            return
        concept = medication.get("code")
    rules = _rules(b.mapping, "Medication", concept)
    if not rules:
        b.ignored[ref] = _NO_RULE
        return
    start, end = _period(r, "effective")
    administration = r.get("resourceType") == "MedicationAdministration"
    if administration and "effectivePeriod" not in r:
        end = start
    dosage = r.get("dosage")
    dosage = dosage[0] if isinstance(dosage, list) and dosage else dosage if isinstance(dosage, dict) else {}
    route = None
    for system, code, _ in _codings(dosage.get("route")):
        route = b.mapping.routes.get((system or "", code or "")) or route
    codings = _codings(concept)
    name = next((d for _, _, d in codings if d), None) or (concept or {}).get("text")
    made = [rule for rule in rules if not rule.none and rule.to == "medications"]  # entries with a dose
    indication = _indication(b, r, ref, by_id) if made else None
    drug = next(((s or "", c or "") for s, c, _ in codings if (s or "", c or "") in b.mapping.prednisone), None)
    steroid = any(rule.set.get("category") == "corticosteroid" for rule in made)
    dose = (_dose(b, r, (where, ref), drug, administration, (start, end))
            if made and start is not None and (drug is not None or steroid) else None)
    for rule in rules:
        if rule.none:
            b.known_none[rule.to] = ref
            continue
        if start is None:
            b.problem(where, "effective[x]: missing (a medication needs its start date)")
            return
        entry: dict[str, Any] = {**rule.set, "start": start.isoformat()}
        if end is not None and status not in ("active", "in-progress", "intended"):
            entry["end"] = end.isoformat()
        if route is not None:
            entry["route"] = route
        if isinstance(name, str) and name:
            entry["name"] = name
        if rule.to == "medications":  # therapies entries have no indication or dose
            if indication is not None:
                entry["indication"] = indication
            if dose is not None:
                entry["prednisone_equivalent_mg_per_day"] = dose
            if where in b.administered:  # its dose is the day's total, set once all resources are read
                b.administered[where][3].append(entry)
        b.add(rule.to, entry, ref)


def _indication(b: _Builder, r: dict[str, Any], ref: str, by_id: Mapping[str, dict[str, Any]]) -> str | None:
    """The indication the reasons of a medication give (``None``: unspecified).

    A reason mapped to treatment makes it treatment; physiological replacement
    needs every reason mapped to it (an unknown reason may be a treatment).
    """
    concepts: list[tuple[str, Any]] = [("reasonCode", c) for c in r.get("reasonCode") or ()]
    for reason in r.get("reasonReference") or ():
        target = reason.get("reference") if isinstance(reason, dict) else None
        condition = by_id.get(target) if isinstance(target, str) else None
        if condition is None or condition.get("resourceType") != "Condition":
            b.unread_element(ref, f"reasonReference: {target!r} is not a Condition in this Bundle (only a "
                             "Condition's code gives an indication)")
            continue
        b.reasons.add(_ref(condition))
        concepts.append((f"reasonReference ({_ref(condition)})", condition.get("code")))
    found: set[str] = set()
    unknown: list[str] = []
    for element, concept in concepts:
        meanings = {b.mapping.indications.get((s or "", c or "")) for s, c, _ in _codings(concept)} - {None}
        if meanings:
            found |= {m for m in meanings if m is not None}
        else:
            shown = ", ".join(f"{s}|{c}" for s, c, _ in _codings(concept)) or (concept or {}).get("text") or "no code"
            unknown.append(f"{element}: {shown} is in no indications table entry")
    if "treatment" in found:
        return "treatment"
    for note in unknown:
        b.unread_element(ref, note + " (indication unspecified)")
    return "physiological_replacement" if found and not unknown else None


def _dose(b: _Builder, r: dict[str, Any], at: tuple[str, str], drug: tuple[str, str] | None, administration: bool,
          days: tuple[dt.date, dt.date | None]) -> float | None:
    """A MedicationStatement's prednisone-equivalent mg per day when the dosage gives it exactly, else None
    with the reason noted; a MedicationAdministration's dose is kept for :func:`_daily_totals`.

    ``at`` is the resource's place in the Bundle (``entry[3] (...)``) and its reference.
    """
    where, ref = at
    mg, why = _administered_mg(r, days) if administration else _daily_mg(r)
    if why is not None:
        b.unread_element(ref, why + " (prednisone equivalent not computed)")
    elif mg is None:
        return None  # no dose given: nothing to read
    if drug is None:
        if mg is not None:
            b.unread_element(ref, "medication: its code has no prednisone_equivalents entry (prednisone equivalent "
                             "not computed)")
        return None
    if administration:  # several administrations of a drug on one day add up (see _daily_totals)
        b.administered[where] = (drug, days[0], mg, [], ref)
        return None
    drug_mg, prednisone_mg = b.mapping.prednisone[drug]
    return None if mg is None else round(mg * prednisone_mg / drug_mg, 6)


def _mg(q: Any, where: str) -> tuple[float | None, str | None]:
    """A dose quantity in mg, or why it is not one."""
    if not isinstance(q, dict) or q.get("value") is None:
        return None, f"{where}: no value"
    if q.get("comparator") is not None:
        return None, f"{where}.comparator: {q['comparator']!r} gives no exact dose"
    unit = q.get("code") if q.get("system") in (None, _UCUM) and q.get("code") else q.get("unit")
    if not isinstance(unit, str) or not unit:
        return None, f"{where}: no unit"
    try:
        factor = lab_factor(unit, "mg")
    except EscalationRulesError:
        return None, f"{where}: {unit!r} is not a mass (mg, g, ug)"
    return float(q["value"]) * factor, None


def _daily_mg(r: dict[str, Any]) -> tuple[float | None, str | None]:
    """MedicationStatement: mg per day from ``dosage[0]`` (dose times frequency per period), or why not."""
    dosages = [d for d in r.get("dosage") or () if isinstance(d, dict)]
    if len(dosages) > 1:
        return None, f"dosage: {len(dosages)} dosage instructions (a taper or split doses) give no single daily dose"
    dose_and_rate = (dosages[0].get("doseAndRate") or [{}])[0] if dosages else {}
    if "doseRange" in dose_and_rate:
        return None, "dosage[0].doseAndRate[0].doseRange: a range gives no exact dose"
    if "doseQuantity" not in dose_and_rate:
        rate = any(k.startswith("rate") for k in dose_and_rate)
        return None, "dosage[0].doseAndRate[0].rate[x]: a rate is not read (give doseQuantity)" if rate else None
    mg, why = _mg(dose_and_rate["doseQuantity"], "dosage[0].doseAndRate[0].doseQuantity")
    if mg is None:
        return None, why
    timing = dosages[0].get("timing") or {}
    repeat = timing.get("repeat") or {}
    for key in ("frequencyMax", "periodMax"):
        if key in repeat:
            return None, f"dosage[0].timing.repeat.{key}: a range gives no exact daily dose"
    frequency, period, unit = repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit")
    if frequency is None or period is None or unit is None:
        missing = "/".join(k for k, v in (("frequency", frequency), ("period", period), ("periodUnit", unit))
                           if v is None)
        code = " (timing.code is not read)" if timing.get("code") else ""
        return None, f"dosage[0].timing.repeat.{missing}: missing, so how often is not known{code}"
    if unit not in _PERIOD_DAYS:
        return None, f"dosage[0].timing.repeat.periodUnit: {unit!r} has no fixed length in days"
    if not float(period) > 0:
        return None, f"dosage[0].timing.repeat.period: {period!r} is not a length of time"
    return mg * float(frequency) / (float(period) * _PERIOD_DAYS[unit]), None


def _administered_mg(r: dict[str, Any], days: tuple[dt.date, dt.date | None]) -> tuple[float | None, str | None]:
    """MedicationAdministration: the mg given (one administration on its day), or why not."""
    raw = r.get("dosage")
    dosage: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if "dose" not in dosage:
        rate = any(k.startswith("rate") for k in dosage)
        return None, "dosage.rate[x]: a rate is not read (give dosage.dose)" if rate else None
    if days[1] != days[0]:
        return None, "effectivePeriod: an administration over more than one day gives no daily dose"
    return _mg(dosage["dose"], "dosage.dose")


def _daily_totals(b: _Builder) -> None:
    """Each administration of a drug gets the prednisone equivalent of all that drug's doses on its day."""
    days: dict[tuple[tuple[str, str], dt.date], list[str]] = {}
    for where, (drug, day, _, _, _) in b.administered.items():
        days.setdefault((drug, day), []).append(where)
    for (drug, day), places in days.items():
        doses = [b.administered[where][2] for where in places]
        if any(mg is None for mg in doses):
            for where, mg in zip(places, doses, strict=True):
                if mg is not None:
                    ref = b.administered[where][4]
                    b.unread_element(ref, f"dosage.dose: another administration of this drug on {day} has no dose "
                                     "read, so the day's total is not known (prednisone equivalent not computed)")
            continue
        drug_mg, prednisone_mg = b.mapping.prednisone[drug]
        total = round(sum(mg for mg in doses if mg is not None) * prednisone_mg / drug_mg, 6)
        for where in places:
            for entry in b.administered[where][3]:
                entry["prednisone_equivalent_mg_per_day"] = total


def _assemble(b: _Builder, record: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Put the collected values into the record, in the record's own shape."""
    measurements = []
    for place, (_, value, ref) in sorted(b.latest.items()):
        head, _, rest = place.partition(".")
        if head == "measurements":
            measurements.append({"code": rest, **value})
        elif head in ("ecog", "weight", "life_expectancy"):
            record[head] = value
        else:  # serology.x, pregnancy.test_result
            record.setdefault(head, {})[rest] = value
            test_day = b.latest[place][0]
            if place == "pregnancy.test_result" and test_day is not None:
                record["pregnancy"]["test_date"] = test_day.isoformat()
                provenance["pregnancy.test_date"] = ref
        provenance[place] = ref
    if measurements:
        record["measurements"] = measurements
        provenance["measurements"] = [provenance[f"measurements.{m['code']}"] for m in measurements]
    for place, (value, ref) in b.fields.items():
        head, _, rest = place.partition(".")
        if head == "ecog":
            record["ecog"] = value
        else:
            record.setdefault(head, {})[rest] = value
        provenance[place] = ref
    for name in (*_LISTS, "disease_assessments"):
        items = b.lists.get(name)
        if items is None and name not in b.known_none:
            continue
        record[name] = [entry for entry, _ in items or []]
        provenance[name] = [ref for _, ref in items or []]
        if name in b.known_none:
            provenance[f"{name}#none"] = b.known_none[name]


def bundle_record(mapping: FhirMapping | None, bundle: Mapping[str, Any], source: str = "bundle") -> PatientRecord:
    """Read a Bundle as a :class:`PatientRecord` whose ``provenance`` names each value's resource.

    Raises
    ------
    FhirError
        For a malformed Bundle, or a protocol with no ``fhir`` mapping.
    RecordError
        For a record the Bundle gives that the record reader refuses (naming the resource).

    Examples
    --------
    >>> import json
    >>> from escalation_rules import load_protocol
    >>> from escalation_rules.eligibility import load_eligibility
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> record = bundle_record(spec.fhir, json.load(open("examples/fhir/male.json")), "male.json")
    >>> record.ecog, record.provenance["ecog"]
    (1, 'Observation/ecog')
    """
    if mapping is None:
        raise FhirError([f"{source}: this protocol has no FHIR mapping (a fhir.toml in its folder)"])
    record, provenance = bundle_to_record(mapping, bundle, source)
    try:
        checked = read_record(record, source)
    except RecordError as err:
        raise FhirError([blame(line, provenance) for line in err.problems]) from None
    return attrs.evolve(checked, provenance=provenance)


def blame(line: str, provenance: Mapping[str, Any]) -> str:
    """Name the resource behind a record problem (``measurements[0].unit`` → its Observation)."""
    _, _, rest = line.partition(": ")
    path = rest.partition(": ")[0]
    head = path.split("[")[0].split(".")[0]
    ref = provenance.get(path.rsplit(".", 1)[0] if "." in path else path) or provenance.get(head)
    if isinstance(ref, list):
        index = path.split("[", 1)[1].split("]")[0] if "[" in path else ""
        ref = ref[int(index)] if index.isdigit() and int(index) < len(ref) else None
    return f"{line} (from {ref})" if isinstance(ref, str) else line
