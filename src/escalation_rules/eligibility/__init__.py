"""Eligibility screening: a protocol's inclusion and exclusion criteria as three-valued guards.

Criteria live in the protocol folder (``eligibility.toml``, top-level key
``eligibility``) and are written in the criteria dialect of the guard
language (:func:`escalation_rules.guards.parse_criterion`).  A patient record
(:func:`read_record`) is screened with :func:`screen`; the result says
eligible, not eligible or undetermined, and why, criterion by criterion.
A FHIR R4 Bundle is read through the protocol's ``fhir.toml`` mapping
(:func:`bundle_record`; :func:`screen` takes a Bundle directly).

Examples
--------
>>> from escalation_rules import load_protocol
>>> from escalation_rules.eligibility import load_eligibility, screen
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> r = screen(spec, {"id": "P0", "anchors": {"screening": "2026-03-02"}})
>>> r.outcome, "ecog" in r.needed
('undetermined', True)
"""

from ._batch import screen_compact, screen_jsonl, screen_lines
from ._fhir import FhirError, FhirMapping, bundle_record, bundle_to_record, is_bundle
from ._record import PLAUSIBLE, PatientRecord, RecordError, read_record, read_record_json, record_schema
from ._screen import EXIT_STATUS, OUTCOMES, CriterionResult, ScreeningResult, data_dictionary, screen, screen_summary
from ._site import SiteError, SiteRange, SiteRanges, load_site
from ._spec import FORMULAS, Criterion, DataItem, EligibilitySpec, Formula, load_eligibility

__all__ = [
    "EXIT_STATUS",
    "FORMULAS",
    "OUTCOMES",
    "PLAUSIBLE",
    "Criterion",
    "CriterionResult",
    "DataItem",
    "EligibilitySpec",
    "FhirError",
    "FhirMapping",
    "Formula",
    "PatientRecord",
    "RecordError",
    "ScreeningResult",
    "SiteError",
    "SiteRange",
    "SiteRanges",
    "bundle_record",
    "bundle_to_record",
    "data_dictionary",
    "is_bundle",
    "load_eligibility",
    "load_site",
    "read_record",
    "read_record_json",
    "record_schema",
    "screen",
    "screen_compact",
    "screen_jsonl",
    "screen_lines",
    "screen_summary",
]
