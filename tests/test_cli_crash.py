"""An unexpected error is never mistaken for a verdict: exit status 70, one line, the traceback kept (issue 13)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from escalation_rules import cli


def _explode(*_: object) -> None:
    raise KeyError("simulated bug")


def test_a_bug_exits_70_with_one_line_naming_the_details_file(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The line says it is a bug and names a file holding the traceback; nothing else on stderr."""
    monkeypatch.delenv("ESCALATION_RULES_DEBUG", raising=False)
    monkeypatch.setattr(importlib.import_module("escalation_rules.verify"), "verify", _explode)
    assert cli.main(["verify", "3+3-deescalate", "--doses", "3"]) == cli.EXIT_BUG == 70
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "internal error (a bug in escalation-rules, not a verdict on the input)" in err
    details = Path(err.rsplit("details: ", 1)[1].strip())
    assert "simulated bug" in details.read_text(encoding="utf-8") and "Traceback" in details.read_text(encoding="utf-8")
    details.unlink()


def test_debug_environment_prints_the_traceback(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """With ESCALATION_RULES_DEBUG set the traceback goes to stderr instead of a file."""
    monkeypatch.setenv("ESCALATION_RULES_DEBUG", "1")
    monkeypatch.setattr(importlib.import_module("escalation_rules.verify"), "verify", _explode)
    assert cli.main(["verify", "3+3-deescalate", "--doses", "3"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "details: the traceback above" in err


def test_the_cli_reference_documents_status_70() -> None:
    """docs/reference/cli.md lists 70 beside 0, 1 and 2."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    assert "Exit status 70 means an unexpected error" in text
