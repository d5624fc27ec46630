"""Tests of escalation_rules.spec: what SPEC may name."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalation_rules import ProtocolError, resolve_spec
from escalation_rules.spec import shipped_dir, shipped_protocols, spec_path

ROOT = Path(__file__).resolve().parent.parent


def test_toml_name_resolves_to_the_shipped_folder():
    """spec/nct07117175.toml names the folder spec/nct07117175."""
    assert resolve_spec("spec/nct07117175.toml").id == resolve_spec("spec/nct07117175").id == "NCT07117175"


def test_doses_with_a_file_is_refused():
    """--doses applies only to built-in designs."""
    with pytest.raises(ProtocolError, match="--doses applies to built-in designs only"):
        resolve_spec("spec/nct07117175", doses=3)


def test_unknown_spec_lists_designs():
    """A name that is neither a path nor a design is refused with the known designs."""
    with pytest.raises(ProtocolError, match="not a shipped protocol or a built-in design") as caught:
        resolve_spec("no-such-thing")
    assert str(caught.value).count("\n") == 0
    assert "shipped protocols: nct07117175; built-in designs: 3+3-deescalate" in str(caught.value)


@pytest.mark.parametrize("name", ["nct07117175", "NCT07117175", "nct07117175.toml"])
def test_shipped_protocol_resolves_by_name_from_any_folder(name, tmp_path, monkeypatch):
    """A shipped protocol's name works outside the clone, in any case, with or without .toml."""
    monkeypatch.chdir(tmp_path)
    assert resolve_spec(name).id == "NCT07117175"
    assert spec_path(name) == shipped_protocols()["nct07117175"]


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    """A folder in the working directory with a shipped protocol's name is read, not the shipped one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nct07117175").mkdir()
    assert spec_path("nct07117175") == Path("nct07117175")
    with pytest.raises(ProtocolError, match="nct07117175"):
        resolve_spec("nct07117175")


def test_a_path_is_never_taken_for_a_shipped_name(tmp_path, monkeypatch):
    """A missing path such as elsewhere/nct07117175 is refused, not replaced by the shipped protocol."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProtocolError, match="no such protocol file or folder"):
        spec_path("elsewhere/nct07117175")


def test_the_editable_install_reads_the_clone_spec_folder():
    """In the development install the shipped folder is the repository's spec/ (one copy, no duplicate)."""
    assert shipped_dir() == ROOT / "spec"
