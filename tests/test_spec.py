"""Tests of escalation_rules.spec: what SPEC may name."""

from __future__ import annotations

import pytest

from escalation_rules import ProtocolError, resolve_spec


def test_toml_name_resolves_to_the_shipped_folder():
    """spec/nct07117175.toml names the folder spec/nct07117175."""
    assert resolve_spec("spec/nct07117175.toml").id == resolve_spec("spec/nct07117175").id == "NCT07117175"


def test_doses_with_a_file_is_refused():
    """--doses applies only to built-in designs."""
    with pytest.raises(ProtocolError, match="--doses applies to built-in designs only"):
        resolve_spec("spec/nct07117175", doses=3)


def test_unknown_spec_lists_designs():
    """A name that is neither a path nor a design is refused with the known designs."""
    with pytest.raises(ProtocolError, match="not a built-in design"):
        resolve_spec("no-such-thing")
