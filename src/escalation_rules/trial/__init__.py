"""The trial record: patient-level events, DLT rules, sign-offs and an append-only audit log.

Events (:mod:`.events`) describe what happened; the DLT definition
(:mod:`.dlt`) turns adverse-event episodes into DLT / no DLT / pending; the
status (:mod:`.status`) derives the cohort history from the events and asks
the decision engine; the store (:mod:`.store`) keeps the events in SQLite as
a hash chain.
"""

from .dlt import DltDefinition, DltRule, crs_grade, dlt_definition, icans_grade, parse_dlt
from .events import EVENT_TYPES, Event, TrialError, canonical_json, event_to_dict, parse_event
from .status import NextStep, PatientStatus, TrialStatus, check_events, trial_status

__all__ = [
    "EVENT_TYPES",
    "DltDefinition",
    "DltRule",
    "Event",
    "NextStep",
    "PatientStatus",
    "TrialError",
    "TrialStatus",
    "canonical_json",
    "check_events",
    "crs_grade",
    "dlt_definition",
    "event_to_dict",
    "icans_grade",
    "parse_dlt",
    "parse_event",
    "trial_status",
]
