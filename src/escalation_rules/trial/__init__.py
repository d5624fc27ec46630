"""The trial record: patient-level events, DLT rules, sign-offs and an append-only audit log.

Events (:mod:`.events`) describe what happened; the DLT definition
(:mod:`.dlt`) turns adverse-event episodes into DLT / no DLT / pending; the
status (:mod:`.status`) derives the cohort history from the events and asks
the decision engine; the store (:mod:`.store`) keeps the events in SQLite as
a hash chain.

Examples
--------
>>> from escalation_rules import load_protocol
>>> from escalation_rules.trial import trial_status
>>> s = trial_status(load_protocol("spec/nct07117175"), [])
>>> s.next.action, s.next.dose, s.next.places
('enrol', 1, 1)
"""

from .dlt import DltDefinition, DltRule, crs_grade, dlt_definition, icans_grade, parse_dlt
from .events import EVENT_TYPES, Event, TrialError, canonical_json, event_to_dict, parse_event
from .status import CohortStatus, EpisodeStatus, NextStep, PatientStatus, TrialStatus, check_events, trial_status
from .store import StoredEvent, TrialStore, VerifyReport

__all__ = [
    "EVENT_TYPES",
    "CohortStatus",
    "DltDefinition",
    "DltRule",
    "EpisodeStatus",
    "Event",
    "NextStep",
    "PatientStatus",
    "StoredEvent",
    "TrialError",
    "TrialStatus",
    "TrialStore",
    "VerifyReport",
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
