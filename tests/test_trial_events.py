"""Trial events: the JSON form, its schema, and the parser agreeing with the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from escalation_rules.errors import EscalationRulesError
from escalation_rules.trial.events import (
    EVENT_TYPES,
    TrialError,
    canonical_json,
    event_to_dict,
    format_time,
    parse_event,
    parse_time,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "spec/trial/event.schema.json").read_text(encoding="utf-8"))
EXAMPLES = sorted((ROOT / "spec/trial/examples").glob("*.json"))
VECTORS = json.loads((ROOT / "spec/trial/vectors.json").read_text(encoding="utf-8"))
CASES = [(group["description"], case) for group in VECTORS for case in group["tests"]]


def _valid_by_schema(data: Any) -> bool:
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return validator.is_valid(data)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The shipped event schema is itself a valid JSON Schema."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_event_type_has_an_example_file() -> None:
    """spec/trial/examples holds one example per event type."""
    assert sorted(p.stem for p in EXAMPLES) == sorted(EVENT_TYPES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_events_pass_schema_and_parser_and_round_trip(path: Path) -> None:
    """Each example file is valid for the schema and the parser, and survives a round trip unchanged."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert _valid_by_schema(data)
    event = parse_event(data, path.name)
    assert event_to_dict(event) == data
    assert parse_event(canonical_json(event)) == event


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[f"{g}: {c['description']}" for g, c in CASES])
def test_parser_and_schema_agree_on_every_vector(case: dict[str, Any]) -> None:
    """The JSON Schema and parse_event accept and refuse the same vectors; refusals name the field."""
    assert _valid_by_schema(case["data"]) is case["valid"]
    if case["valid"]:
        parse_event(case["data"])
    else:
        with pytest.raises(TrialError) as err:
            parse_event(case["data"])
        assert case["error"] in str(err.value)
        assert "\n" not in str(err.value)


def test_trial_errors_are_escalation_rules_errors() -> None:
    """Refused events raise an EscalationRulesError (a ValueError), never something else."""
    with pytest.raises(EscalationRulesError):
        parse_event("{not json")
    assert issubclass(TrialError, ValueError)


def test_non_object_json_is_refused() -> None:
    """A JSON list or number is not an event."""
    with pytest.raises(TrialError, match="expected a JSON object"):
        parse_event("[1, 2]")


def test_times_normalise_to_seconds_and_keep_their_offset() -> None:
    """Times lose sub-second digits, keep their offset, and UTC prints as Z."""
    assert format_time(parse_time("2025-01-06T10:30:15.999+08:00", "at")) == "2025-01-06T10:30:15+08:00"
    assert format_time(parse_time("2025-01-06T10:30", "at")) == "2025-01-06T10:30:00Z"
    with pytest.raises(TrialError, match="ISO 8601"):
        parse_time("2025-01-06 10:30", "at")


def test_null_optional_fields_are_left_out() -> None:
    """An optional field given as null is as if absent."""
    event = parse_event({"type": "enrolled", "at": "2025-01-01", "patient": "P1", "dose": 2, "cohort": None})
    assert event_to_dict(event) == {"type": "enrolled", "at": "2025-01-01T00:00:00Z", "patient": "P1", "dose": 2}
