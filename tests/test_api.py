"""Tests of the public API surface in escalation_rules/__init__.py."""

from __future__ import annotations

import subprocess
import sys

import escalation_rules


def test_every_name_in_all_exists():
    """Every name in __all__ is importable from the package."""
    assert all(hasattr(escalation_rules, name) for name in escalation_rules.__all__)
    assert len(set(escalation_rules.__all__)) == len(escalation_rules.__all__)


def test_errors_share_one_base():
    """Every exception the API exports derives from EscalationRulesError and ValueError."""
    errors = [getattr(escalation_rules, n) for n in escalation_rules.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, escalation_rules.EscalationRulesError) for e in errors)
    assert issubclass(escalation_rules.EscalationRulesError, ValueError)


def test_import_does_not_load_numpy_until_simulation_is_used():
    """Importing the package (and so every CLI call) does not pay for numpy; simulate loads it."""
    code = ("import sys, escalation_rules as er; a = 'numpy' in sys.modules; er.simulate; "
            "print(a, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
