"""Screening: a record against a protocol's criteria, with an explanation per criterion.

The outcome is ``"eligible"`` when every inclusion criterion is true and
every exclusion criterion false, ``"not eligible"`` when some inclusion is
false or some exclusion true (whatever is still unknown), and
``"undetermined"`` otherwise; then :attr:`ScreeningResult.needed` lists the
data items still missing.

Examples
--------
>>> import json
>>> from escalation_rules import load_protocol
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> data = json.load(open("spec/patients/eligible.json"))
>>> result = screen(spec, data)
>>> result.outcome, result.exit_status
('eligible', 0)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs

from .._attrs import value_repr
from ..guards import QuantityType
from ._record import PatientRecord, RecordError, read_record
from ._site import SiteRanges, load_site  # noqa: F401 (doctests)
from ._spec import FORMULAS, Criterion, EligibilitySpec, load_eligibility

__all__ = ["EXIT_STATUS", "OUTCOMES", "CriterionResult", "ScreeningResult", "data_dictionary", "screen",
           "screen_summary"]

OUTCOMES = ("eligible", "not eligible", "undetermined")
#: Exit status of ``escalation-rules screen`` per outcome (2 means the input was refused).
EXIT_STATUS = {"eligible": 0, "not eligible": 3, "undetermined": 4}

_STATUS = {
    "inclusion": {True: "met", False: "not met", None: "unknown"},
    "exclusion": {True: "excludes", False: "does not apply", None: "unknown"},
    "definition": {True: "true", False: "false", None: "unknown"},
}


@attrs.frozen
class _Context:
    __repr__ = value_repr

    spec: EligibilitySpec
    record: PatientRecord
    env: Mapping[str, Any]


@attrs.frozen
class CriterionResult:
    """The result of one criterion for one record.

    Attributes
    ----------
    criterion : Criterion
    value : bool or None
        ``None`` when it cannot be decided from the data.
    missing : tuple of str
        For an unknown result, the data items it still needs.
    """

    __repr__ = value_repr

    criterion: Criterion
    value: bool | None
    missing: tuple[str, ...]
    _context: _Context = attrs.field(eq=False, repr=False)

    @property
    def status(self) -> str:
        """``met``/``not met``/``unknown`` (inclusion), ``excludes``/``does not apply``/``unknown`` (exclusion)."""
        return _STATUS[self.criterion.kind][self.value]

    @property
    def values(self) -> dict[str, Any]:
        """The values the criterion read, as JSON-ready data (``None`` where missing)."""
        return {name: _show(self._context, name)[0] for name in _direct_reads(self.criterion)}

    @property
    def reason(self) -> str:
        """One line: the status, the expression and the values it used, or what is missing."""
        c = self.criterion
        if self.value is None:
            env = self._context.env
            notes = [f"{name}: {env[key]}" for name in (*_direct_reads(c), *self.missing)
                     if (key := f"{name}#why") in env]
            return (f"{self.status}: {c.when.text}; missing {', '.join(self.missing)}"
                    + "".join(f" ({note})" for note in dict.fromkeys(notes)))
        shown = "; ".join(f"{name} = {_show(self._context, name)[1]}" for name in _direct_reads(c))
        return f"{self.status}: {c.when.text}" + (f" with {shown}" if shown else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        c = self.criterion
        out = {"id": c.id, "kind": c.kind, "clause": c.clause, "paraphrase": c.paraphrase, "when": c.when.text,
               "result": self.value, "status": self.status, "reason": self.reason, "values": self.values,
               "missing": list(self.missing)}
        sources = self.sources
        if sources:
            out["sources"] = sources
        return out

    @property
    def sources(self) -> dict[str, Any]:
        """For a record read from a FHIR Bundle: each item read to the resource(s) it came from (else empty)."""
        return _sources(self._context, _direct_reads(self.criterion))


@attrs.frozen
class ScreeningResult:
    """The outcome of screening one record.

    Attributes
    ----------
    record_id, protocol_id : str
    outcome : str
        ``"eligible"``, ``"not eligible"`` or ``"undetermined"``.
    needed : tuple of str
        For ``"undetermined"``: every data item still missing, in data-dictionary order.
    criteria : tuple of CriterionResult
        Every criterion in protocol order (definitions included), built when asked for.
    """

    __repr__ = value_repr

    record_id: str
    protocol_id: str
    outcome: str
    needed: tuple[str, ...]
    _values: tuple[bool | None, ...] = attrs.field(repr=False)
    _missing: Mapping[str, tuple[str, ...]] = attrs.field(repr=False)
    _context: _Context = attrs.field(eq=False, repr=False)

    @property
    def criteria(self) -> tuple[CriterionResult, ...]:
        """One :class:`CriterionResult` per criterion, in protocol order."""
        context = self._context
        return tuple(CriterionResult(c, v, self._missing.get(c.id, ()), context)
                     for c, v in zip(context.spec.criteria, self._values, strict=True))

    def result(self, criterion_id: str) -> CriterionResult:
        """The result of one criterion, by id."""
        for r in self.criteria:
            if r.criterion.id == criterion_id:
                return r
        raise KeyError(criterion_id)

    @property
    def exit_status(self) -> int:
        """0 eligible, 3 not eligible, 4 undetermined."""
        return EXIT_STATUS[self.outcome]

    @property
    def failed(self) -> tuple[CriterionResult, ...]:
        """The inclusion criteria that are false and the exclusion criteria that are true."""
        return tuple(r for r in self.criteria if (r.criterion.kind, r.value) in (("inclusion", False),
                                                                                  ("exclusion", True)))

    def summary(self) -> dict[str, Any]:
        """The compact JSON form of ``screen --batch --json``: outcome, failed criteria and needed items only.

        Examples
        --------
        >>> from escalation_rules import load_protocol
        >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
        >>> screen(spec, {"id": "P7", "anchors": {"screening": "2026-03-02"}, "ecog": 3}).summary()
        {'record': 'P7', 'outcome': 'not eligible', 'failed': ['inc_ecog'], 'needed': []}
        """
        return {"record": self.record_id, "outcome": self.outcome,
                "failed": [c.id for c, v in zip(self._context.spec.criteria, self._values, strict=True)
                           if v is (c.kind == "exclusion") and c.kind != "definition"],
                "needed": list(self.needed)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the contract of ``screen --json``)."""
        out = {"record": self.record_id, "protocol": self.protocol_id, "outcome": self.outcome,
               "exit_status": self.exit_status, "failed": [r.criterion.id for r in self.failed],
               "needed": list(self.needed), "needed_sources": self.needed_sources,
               "criteria": [r.to_dict() for r in self.criteria]}
        provenance = self._context.record.provenance
        if provenance:
            out["input"] = "fhir"
            if provenance.get("#ignored"):
                out["ignored_resources"] = dict(provenance["#ignored"])
            if provenance.get("#unread"):
                out["unread_elements"] = {ref: list(notes) for ref, notes in provenance["#unread"].items()}
        return out

    @property
    def needed_sources(self) -> dict[str, str]:
        """Where each needed item goes in the record (``"creatinine.uln"`` → its reference range)."""
        spec = self._context.spec
        out = {}
        for name in self.needed:
            base, _, limit = name.partition(".")
            source = spec.items[base].source
            out[name] = source + (f".reference_range.{'high' if limit == 'uln' else 'low'}" if limit else "")
        return out

    def text(self) -> str:
        """A person's summary: outcome, then one line per criterion."""
        lines = [f"{self.protocol_id}: record {self.record_id}: {self.outcome.upper()}"]
        results = self.criteria
        width = max(len(r.criterion.id) for r in results)
        for r in results:
            lines.append(f"  {r.status:14} {r.criterion.id:{width}}  [{r.criterion.clause}] {r.reason}"
                         + _from(r.sources))
        failed = self.failed
        if failed:
            lines.append(f"fails: {', '.join(r.criterion.id for r in failed)}")
        if self.needed:
            lines.append(f"needed: {', '.join(self.needed)}")
        ignored = self._context.record.provenance.get("#ignored")
        if ignored:
            lines.append("ignored: " + "; ".join(f"{ref} ({why})" for ref, why in ignored.items()))
        unread = self._context.record.provenance.get("#unread")
        if unread:
            lines.append("not read: " + "; ".join(f"{ref} ({'; '.join(notes)})" for ref, notes in unread.items()))
        return "\n".join(lines)


def _from(sources: dict[str, Any]) -> str:
    """`` (from Observation/a, Patient/p)`` for a FHIR record's line; nothing otherwise."""
    refs = [r for v in sources.values() for r in (v if isinstance(v, list) else [v])]
    return f" (from {', '.join(dict.fromkeys(refs))})" if refs else ""


_INCLUSION, _EXCLUSION, _DEFINITION = 0, 1, 2


def screen(spec: EligibilitySpec, record: PatientRecord | Mapping[str, Any], source: str = "record",
           site: SiteRanges | None = None) -> ScreeningResult:
    """Screen one record (a :class:`PatientRecord` or decoded JSON) against ``spec``.

    ``site`` (:func:`load_site`) supplies the laboratory's reference ranges
    for measurements whose record carries none; a record's own range wins.

    Raises
    ------
    RecordError
        If the record is refused (nothing is screened then).

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> r = screen(spec, {"id": "P7", "anchors": {"screening": "2026-03-02"}, "ecog": 3})
    >>> r.outcome, [c.criterion.id for c in r.failed]
    ('not eligible', ['inc_ecog'])
    >>> r.result("inc_ecog").reason
    'not met: ecog <= 2 with ecog = 3'
    """
    if not isinstance(spec, EligibilitySpec):
        from ..graph import as_protocol

        try:
            spec = load_eligibility(as_protocol(spec, "spec"))
        except TypeError:
            raise TypeError(f"spec: expected an EligibilitySpec, a Protocol, a CompiledProtocol or a protocol "
                            f"mapping (got {type(spec).__name__})") from None
    if not isinstance(record, PatientRecord):
        record = _read(spec, record, source)
    env = _environment(spec, record, site)
    values, failing, unknown, gaps = _evaluate(spec, env)
    missing: dict[str, tuple[str, ...]] = {}
    if gaps:
        for (cid, _, _), value in zip(spec.plan, values, strict=True):
            if value is None:
                missing[cid] = _missing(spec, env, spec.criterion(cid))
    outcome = "not eligible" if failing else "undetermined" if unknown else "eligible"
    needed: tuple[str, ...] = ()
    if outcome == "undetermined":
        kinds = {c.id: c.kind for c in spec.criteria}
        wanted = {m for cid, names in missing.items() if kinds[cid] != "definition" for m in names}
        needed = tuple(name for name in _dictionary_order(spec) if name in wanted)
    return ScreeningResult(record.id, spec.protocol_id, outcome, needed, values, missing,
                           _Context(spec, record, env))


def _evaluate(spec: EligibilitySpec, env: dict[str, Any]) -> tuple[tuple[bool | None, ...], int, int, int]:
    """Run every criterion once, in protocol order: the values, and counts of failing, unknown and gaps."""
    values: list[bool | None] = []
    append = values.append
    failing = unknown = gaps = 0
    for cid, kind, run in spec.plan:
        value = run(env)
        env[cid] = value
        append(value)
        if value is None:
            gaps += 1
            if kind != _DEFINITION:
                unknown += 1
        elif value is (kind == _EXCLUSION) and kind != _DEFINITION:
            failing += 1
    return tuple(values), failing, unknown, gaps


def screen_summary(spec: EligibilitySpec, record: PatientRecord | Mapping[str, Any], source: str = "record",
                   site: SiteRanges | None = None) -> tuple[dict[str, Any], tuple[bool | None, ...]]:
    """The compact result of :meth:`ScreeningResult.summary` and every criterion's value, by the batch path.

    It evaluates each criterion once and works out missing items only for an
    undetermined record, building no explanation; ``screen(...).summary()``
    gives the same (a property test holds them equal).

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> screen_summary(spec, {"id": "P7", "anchors": {"screening": "2026-03-02"}, "ecog": 3})[0]
    {'record': 'P7', 'outcome': 'not eligible', 'failed': ['inc_ecog'], 'needed': []}
    """
    if not isinstance(record, PatientRecord):
        record = _read(spec, record, source)
    env = _environment(spec, record, site)
    values, failing, unknown, _ = _evaluate(spec, env)
    failed: list[str] = []
    needed: list[str] = []
    if failing:
        failed = [cid for (cid, kind, _), value in zip(spec.plan, values, strict=True)
                  if kind != _DEFINITION and value is (kind == _EXCLUSION)]
    elif unknown:
        wanted: set[str] = set()
        for (cid, kind, _), value in zip(spec.plan, values, strict=True):
            if value is None and kind != _DEFINITION:
                wanted.update(_missing(spec, env, spec.criterion(cid)))
        needed = [name for name in _dictionary_order(spec) if name in wanted]
    outcome = "not eligible" if failing else "undetermined" if unknown else "eligible"
    return {"record": record.id, "outcome": outcome, "failed": failed, "needed": needed}, values


def _read(spec: EligibilitySpec, data: Any, source: str) -> PatientRecord:
    """A record from decoded JSON: a patient record, or a FHIR Bundle read through the protocol's mapping."""
    if type(data) is dict and data.get("resourceType") == "Bundle":
        from ._fhir import bundle_record

        return bundle_record(spec.fhir, data, source)
    return read_record(data, source)


def _environment(spec: EligibilitySpec, record: PatientRecord, site: SiteRanges | None) -> dict[str, Any]:
    """The record's environment; for a FHIR record, a refusal names the resource the value came from."""
    if not record.provenance:
        return spec.environment(record, site)
    from ._fhir import FhirError, blame

    try:
        return spec.environment(record, site)
    except RecordError as err:
        raise FhirError([blame(line, record.provenance) for line in err.problems]) from None


def _sources(context: _Context, names: tuple[str, ...]) -> dict[str, Any]:
    """For a record read from FHIR: the resource(s) behind each name read (through formulas' inputs)."""
    provenance = context.record.provenance
    out: dict[str, Any] = {}
    if not provenance:
        return out
    spec = context.spec

    def visit(name: str) -> None:
        base = name.partition(".")[0] if name not in spec.items else name
        item = spec.items.get(base)
        if item is None:  # a definition: it has its own line
            return
        if item.formula is not None:
            for inner in item.inputs.values():
                visit(inner)
            return
        found = _provenance(context, item)
        if found:
            out[base] = found
    for name in names:
        visit(name)
    return out


def _provenance(context: _Context, item: Any) -> Any:
    """The resource(s) an item's value came from: one reference, or a list for a list item's entries."""
    provenance, source = context.record.provenance, item.source
    found = provenance.get(source)
    if not isinstance(found, list):
        return found
    entries = context.record.lists.get(source) or ()
    if item.where or item.where_not:
        from ._spec import _getter, _matches

        where = tuple((_getter(source, k), frozenset(v)) for k, v in item.where.items())
        where_not = tuple((_getter(source, k), frozenset(v)) for k, v in item.where_not.items())
        found = [ref for ref, entry in zip(found, entries, strict=False)
                 if _matches(entry, where) is not False and not (where_not and _matches(entry, where_not))]
    none = provenance.get(f"{source}#none")
    return found or ([none] if none else [])


def _dictionary_order(spec: EligibilitySpec) -> tuple[str, ...]:
    return spec.item_names


def _direct_reads(criterion: Criterion) -> tuple[str, ...]:
    return criterion.reads


def _missing(spec: EligibilitySpec, env: Mapping[str, Any], criterion: Criterion) -> tuple[str, ...]:
    """The missing data items behind an unknown criterion (through definitions and formulas)."""
    out: list[str] = []
    for name in _direct_reads(criterion):
        _visit(spec, env, name, out)
    return tuple(out)


def _visit(spec: EligibilitySpec, env: Mapping[str, Any], name: str, out: list[str]) -> None:
    """Add to ``out`` the raw items that leave ``name`` unknown (a plain recursive function: no reference cycle)."""
    if env.get(name) is not None:
        return
    base, dot, _ = name.partition(".")
    if dot and f"{base}#why" in env:  # a stale or undated value: its range is not what is missing
        name = base
    definition = spec.definition(name)
    if definition is not None:
        for inner in _direct_reads(definition):
            _visit(spec, env, inner, out)
        return
    item = spec.items.get(name)
    if item is not None and item.formula is not None:
        for inner in item.inputs.values():
            _visit(spec, env, inner, out)
        return
    if name not in out:
        out.append(name)


def _date(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _show(context: _Context, name: str) -> tuple[Any, str]:
    """JSON value and a short text for one name a criterion read."""
    spec, record, env = context.spec, context.record, context.env
    value = env.get(name)
    if name in {c.id for c in spec.criteria}:
        return {"criterion": name, "result": value}, {True: "true", False: "false", None: "unknown"}[value]
    if value is None:
        return None, "missing"
    base, _, limit = name.partition(".")
    item = spec.items[base]
    source = item.source
    if limit:
        rng = env.get(f"{base}#range")
        if rng is not None:
            bound = rng.high if limit == "uln" else rng.low
            return ({"value": bound, "unit": rng.unit, "from": f"site file {rng.code}: {rng.describe()}"},
                    f"{bound:g} {rng.unit} (site file: {rng.describe()})")
        m = record.measurements[source.split(".", 1)[1]]  # type: ignore[index]
        bound = m.high if limit == "uln" else m.low
        return {"value": bound, "unit": m.range_unit}, f"{bound:g} {m.range_unit}"
    if item.formula == "relapse_evidence":
        why = env.get(f"{name}#why", "")
        used = "attestation" if why.startswith("attested") else "dated results"
        return {"value": value, "formula": item.formula, "used": used, "why": why}, f"{value} ({why})"
    if item.formula is not None and f"{name}#why" in env:  # a formula that explains itself
        return ({"value": value, "formula": item.formula, "why": env[f"{name}#why"]},
                f"{'true' if value is True else 'false' if value is False else value} ({env[f'{name}#why']})")
    if isinstance(value, tuple) and value and not isinstance(value[0], tuple):  # disease assessments
        entries = [attrs.asdict(a) for a in value]
        for entry in entries:
            entry["date"] = _date(entry["date"])
        return entries, f"{len(value)} assessment(s)"
    if item.formula is not None:
        inputs = {role: _show(context, inner)[1] for role, inner in item.inputs.items()}
        if item.formula == "cockcroft_gault":
            inputs["weight"] += " (actual body weight)"
        unit = f" {item.unit}" if item.unit else ""
        shown = f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"
        return ({"value": round(value, 2) if isinstance(value, float) else value, "unit": item.unit,
                 "formula": item.formula, "formula_text": FORMULAS[item.formula].text, "inputs": inputs},
                f"{shown} ({item.formula}: " + ", ".join(f"{k} {v}" for k, v in inputs.items()) + ")")
    head, _, rest = source.partition(".")
    if head == "measurements":
        m = record.measurements[rest]  # type: ignore[index]
        data = {"value": m.value, "unit": m.unit, "date": _date(m.date),
                "reference_range": {"low": m.low, "high": m.high, "unit": m.range_unit}}
        text = f"{m.value:g} {m.unit}" + (f" on {m.date}" if m.date else "")
        if m.high is not None or m.low is not None:
            low = "" if m.low is None else f"{m.low:g}"
            high = "" if m.high is None else f"{m.high:g}"
            text += f" (range {low}-{high} {m.range_unit})"
        return data, text
    if source in ("weight", "life_expectancy"):
        q = getattr(record, source)
        return ({"value": q.value, "unit": q.unit, "date": _date(q.date)},
                f"{q.value:g} {q.unit}" + (f" on {q.date}" if q.date else ""))
    if isinstance(value, tuple):
        spans = [{"start": _date(s), "end": _date(e)} for s, e in value]
        text = "none" if not value else "; ".join(f"{s} to {e or 'ongoing'}" if e != s else f"{s}" for s, e in value)
        return spans, text
    if isinstance(value, dt.date):
        return value.isoformat(), value.isoformat()
    if isinstance(value, bool):
        return value, "true" if value else "false"
    return value, str(value)


def data_dictionary(spec: EligibilitySpec) -> list[dict[str, Any]]:
    """Every data item the criteria read: name, source, type, unit, dimension and users.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> rows = data_dictionary(load_eligibility(load_protocol("spec/nct07117175")))
    >>> [r for r in rows if r["name"] == "spo2"][0]["dimension"]
    'dimensionless'
    """
    rows = []
    for name in _dictionary_order(spec):
        base, _, limit = name.partition(".")
        item = spec.items[base]
        users = spec.used_by.get(name, ())
        if limit and not users:
            continue
        kind = item.type
        row: dict[str, Any] = {
            "name": name,
            "source": item.source + (f".reference_range.{'high' if limit == 'uln' else 'low'}" if limit else ""),
            "type": "quantity" if limit else item.type_name,
            "unit": item.unit if isinstance(kind, QuantityType) else None,
            "dimension": item.dimension,
            "codes": sorted(kind.values) if hasattr(kind, "values") and not limit else None,
            "attested": item.attested,
            "formula": item.formula,
            "inputs": dict(item.inputs) or None,
            "molar_mass": item.molar_mass,
            "max_age": None if item.max_age is None or limit else
            f"{item.max_age[0]} {item.max_age[1]}{'s' if item.max_age[0] != 1 else ''} before {item.age_anchor}",
            "where": {k: list(v) for k, v in item.where.items()} or None,
            "where_not": {k: list(v) for k, v in item.where_not.items()} or None,
            "description": item.description if not limit else
            f"{'upper' if limit == 'uln' else 'lower'} limit of normal of {base}, from its reference range",
            "used_by": list(users),
        }
        if spec.fhir is not None and not limit:
            row["fhir_codes"] = spec.fhir.codes_for(item.source, item.where, item.where_not)
        rows.append(row)
    return rows

