"""Hostile patient records and criteria: absurd numbers, deep nesting, long white space, bad batch lines (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escalation_rules.cli import main
from escalation_rules.eligibility import RecordError, read_record, read_record_json
from escalation_rules.errors import GuardSyntaxError
from escalation_rules.guards import parse_criterion
from test_eligibility_cli import SPEC

GOOD = {"id": "P4", "anchors": {"screening": "2026-03-02"}, "ecog": 3}


@pytest.mark.parametrize(("text", "message"), [
    ('{"id": "P2", "ecog": ' + "1" * 5000 + "}", "a number in the JSON is too large"),
    ("[" * 20_000 + "]" * 20_000, "JSON nested too deeply"),
    ('{"id": "P3", "x": ' + '{"a": ' * 20_000 + "1" + "}" * 20_000 + "}", "JSON nested too deeply"),
])
def test_absurd_record_text_is_refused(text: str, message: str) -> None:
    """Huge integers and deep nesting are RecordErrors naming the source."""
    with pytest.raises(RecordError, match=f"p.json: {message}"):
        read_record_json(text, "p.json")


def test_a_huge_integer_in_a_decoded_record_is_refused_naming_the_field() -> None:
    """A number past 15 digits given through the API names its field and is shown by size."""
    with pytest.raises(RecordError, match=r"ecog: .*an integer of 5001 digits"):
        read_record({**GOOD, "ecog": 10**5000})


def test_a_deeply_nested_decoded_record_is_refused() -> None:
    """A record nested past Python's recursion limit is our error, not RecursionError."""
    deep: dict[str, object] = {}
    node = deep
    for _ in range(20_000):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(RecordError):
        read_record({**GOOD, "id": deep})


def test_white_space_after_a_criterion_is_read_in_linear_time() -> None:
    """100,000 spaces after a criterion parse at once; an absurd literal is refused."""
    assert parse_criterion("ecog <= 2" + " " * 100_000, {"ecog": "number"}) is not None
    with pytest.raises(GuardSyntaxError, match="number too large"):
        parse_criterion("ecog <= " + "1" * 1000, {"ecog": "number"})


def test_batch_reports_a_bad_line_by_number_and_screens_the_rest(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A deeply nested line, a huge number and a non-object are reported by line; the good lines are screened."""
    lines = [json.dumps(GOOD), "[" * 20_000 + "]" * 20_000, '{"id": "P2", "ecog": ' + "1" * 5000 + "}",
             "5", json.dumps({**GOOD, "id": "P5"})]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["screen", SPEC, "--batch", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}:1: P4: not eligible" in captured.out and f"{path}:5: P5: not eligible" in captured.out
    assert "screened 2 record(s)" in captured.out and "3 refused" in captured.out
    errors = captured.err.splitlines()
    assert [line.split(": ")[1] for line in errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "Traceback" not in captured.err
