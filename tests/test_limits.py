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
    "bytes in a users or DLT file": "MAX_FILE_BYTES",
    "characters in a patient record": "MAX_FILE_BYTES",
    "entries in a FHIR Bundle": "MAX_BUNDLE_ENTRIES",
    "processes screening one batch": "MAX_JOBS",
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


def test_one_toml_reader_refuses_each_failure_with_one_line(tmp_path) -> None:
    """The TOML reader of protocol, users and DLT files names the file, in one line, for each way it can fail."""
    import pytest

    from escalation_rules.errors import EscalationRulesError

    cases = {
        "big.toml": (b"x = 1\n" + b"#" * _limits.MAX_FILE_BYTES,
                     "larger than the limit of 1000000 bytes for a users file"),
        "latin.toml": (b"x = '\xe9'\n", "not UTF-8 text (byte 5): TOML files are UTF-8"),
        "bad.toml": (b"x = \n", "not valid TOML: Invalid value (at line 1, column 5)"),
        "deep.toml": (b"x = " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "nested too deeply to read"),
        "missing.toml": (None, "cannot read: No such file or directory"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(EscalationRulesError) as caught:
            _limits.read_toml(path, "users file")
        assert str(caught.value) == f"{path}: {message}"
    (tmp_path / "ok.toml").write_bytes(b"x = 1\n")
    assert _limits.read_toml(tmp_path / "ok.toml", "users file") == {"x": 1}
    worded = r"latin\.toml: cannot read: not UTF-8 text \(byte 0xe9 at offset 5\)$"
    with pytest.raises(EscalationRulesError, match=worded):
        _limits.read_toml(tmp_path / "latin.toml", "DLT file",
                          "{path}: cannot read: not UTF-8 text (byte {byte:#04x} at offset {offset})")


def test_a_users_file_past_the_size_limit_is_refused_before_parsing(tmp_path) -> None:
    """Regression: the service's users file goes through the same reader (size limit, deep nesting)."""
    import pytest

    from escalation_rules.errors import EscalationRulesError
    from escalation_rules.service.auth import load_users

    path = tmp_path / "users.toml"
    path.write_bytes(b"x = " + b"[" * 20_000 + b"]" * 20_000 + b"\n")
    with pytest.raises(EscalationRulesError, match=r"users\.toml: nested too deeply to read"):
        load_users(str(path))
    path.write_bytes(b"#" * (_limits.MAX_FILE_BYTES + 1))
    with pytest.raises(EscalationRulesError, match=r"users\.toml: larger than the limit of 1000000 bytes for a users "
                                                   r"file"):
        load_users(str(path))
