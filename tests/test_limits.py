"""The documented limits (docs/reference/limits.md) are the constants the readers check."""

from __future__ import annotations

import re

from conftest import ROOT
from escalation_rules import _limits

ROWS = {
    "doses on a ladder": "MAX_DOSES",
    "enrolment cap": "MAX_CAP",
    "patients in one cohort": "MAX_COHORT",
    "stages in a protocol": "MAX_STAGES",
    "rules in a protocol": "MAX_RULES",
    "options at one decision point": "MAX_OPTIONS",
    "characters in a guard, cohort expression or criterion": "MAX_GUARD_CHARS",
    "digits in an integer": "MAX_INT_DIGITS",
    "bytes in a protocol file": "MAX_FILE_BYTES",
    "characters in a patient record": "MAX_FILE_BYTES",
    "entries in a FHIR Bundle": "MAX_BUNDLE_ENTRIES",
    "characters in a history": "MAX_HISTORY_CHARS",
    "entries in a history": "MAX_HISTORY_ENTRIES",
    "states in the full state graph": "MAX_STATES",
    "classes of merged states": "MAX_MERGED_STATES",
}


def test_the_limits_table_matches_the_constants() -> None:
    """Each row of the reference table gives the value of the constant the code checks, and every limit has a row."""
    text = (ROOT / "docs" / "reference" / "limits.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| ([^|]+?) \| (\d+) \|", text, re.MULTILINE))
    assert set(table) == set(ROWS)
    for row, constant in ROWS.items():
        assert int(table[row]) == getattr(_limits, constant), row
    documented = set(ROWS.values())
    assert {name for name in _limits.__all__ if name.startswith("MAX_")} == documented


def test_the_index_links_the_limits_page() -> None:
    """The reference toctree lists the limits page."""
    assert "reference/limits" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")


def test_the_readme_quotes_the_limits_the_code_checks() -> None:
    """The README's sentence on limits gives the current constants."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"({_limits.MAX_DOSES} doses, an enrolment cap of {_limits.MAX_CAP}, cohorts of {_limits.MAX_COHORT}, "
            "...; see docs/reference/limits.md)") in text
