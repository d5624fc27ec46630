"""Loading the eligibility section: every mistake refused at load with the file and key path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from escalation_rules import load_protocol
from escalation_rules.eligibility import load_eligibility
from escalation_rules.errors import ProtocolError

ROOT = Path(__file__).resolve().parent.parent

GOOD_ITEMS = '''
[eligibility.items.ecog]
source = "ecog"

[eligibility.items.crcl_in]
source = "measurements.creatinine"
unit = "mg/dL"
'''


def folder(tmp_path: Path, body: str) -> Path:
    """A protocol folder: the NCT07117175 rules plus the given eligibility file."""
    target = tmp_path / "proto"
    target.mkdir()
    shutil.copy(ROOT / "spec" / "nct07117175" / "protocol.toml", target / "protocol.toml")
    (target / "eligibility.toml").write_text(body, encoding="utf-8")
    return target


def problems(tmp_path: Path, body: str) -> list[str]:
    path = folder(tmp_path, body)
    with pytest.raises(ProtocolError) as err:
        load_eligibility(load_protocol(path))
    return [line.split(": ", 1)[1] for line in err.value.problems]


def criterion(when: str, kind: str = "inclusion") -> str:
    return f'''
[[eligibility.criteria]]
id = "c1"
kind = "{kind}"
clause = "Inclusion criteria, item 1"
paraphrase = "test"
when = "{when}"
'''


def test_shipped_protocol_loads() -> None:
    """The NCT07117175 eligibility section loads: every inclusion and exclusion item is there."""
    spec = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
    clauses = {c.clause for c in spec.criteria}
    for item in range(1, 8):
        assert any(c.startswith(f"Inclusion criteria, item {item}") for c in clauses), item
    for item in range(1, 16):
        assert any(c.startswith(f"Exclusion criteria, item {item}") for c in clauses), item
    assert len({c.id for c in spec.criteria}) == len(spec.criteria)


def test_error_names_file_and_key_path(tmp_path: Path) -> None:
    """A criterion comparing different dimensions is refused naming the file and eligibility.criteria[i].when."""
    path = folder(tmp_path, GOOD_ITEMS + criterion("crcl_in > 60 'mL/min' and ecog <= 2"))
    with pytest.raises(ProtocolError) as err:
        load_eligibility(load_protocol(path))
    assert str(err.value).startswith(f"{path / 'eligibility.toml'}: eligibility.criteria[0].when: '>' compares mg/dL")


def test_broken_criterion_does_not_report_its_items_as_unread(tmp_path: Path) -> None:
    """When a criterion fails to parse, the items it meant to read are not also reported as never read."""
    found = problems(tmp_path, GOOD_ITEMS + criterion("crcl_in > 60 'mL/min' and ecog <= 2"))
    assert len(found) == 1 and found[0].startswith("eligibility.criteria[0].when:"), found


def test_loader_messages_use_toml_words(tmp_path: Path) -> None:
    """A wrong value is shown as written in TOML (true, not Python's True)."""
    found = problems(tmp_path, GOOD_ITEMS + criterion("ecog <= 2 and crcl_in > 1 'mg/dL'").replace(
        'kind = "inclusion"', "kind = true"))
    assert any("got true" in line for line in found) and not any("True" in line for line in found), found


@pytest.mark.parametrize(("body", "expected"), [
    (GOOD_ITEMS + criterion("ecog <= 2", kind="maybe"), "eligibility.criteria[0].kind: expected one of inclusion"),
    (GOOD_ITEMS + criterion("ecog <= 2 and crcl_in > 1 'mg/dL'") + criterion("ecog <= 1"),
     "eligibility.criteria[1].id: 'c1' is already used"),
    (GOOD_ITEMS + criterion("nope"), "eligibility.criteria[0].when: unknown name 'nope'"),
    ('[eligibility.items.x]\nsource = "cardiac.nope"\n' + criterion("x"),
     "eligibility.items.x.source: unknown record field 'cardiac.nope'"),
    ('[eligibility.items.x]\nsource = "measurements.alt"\n' + criterion("ratio_to_uln(x) < 3"),
     "eligibility.items.x.unit: missing"),
    ('[eligibility.items.x]\nsource = "measurements.alt"\nunit = "U/LL"\n' + criterion("ratio_to_uln(x) < 3"),
     "eligibility.items.x.unit: unknown unit 'U/LL'"),
    ('[eligibility.items.x]\nsource = "weight"\nunit = "mL"\n' + criterion("x > 1 'mL'"),
     "eligibility.items.x.unit: expected a unit of [mass]"),
    ('[eligibility.items.x]\nsource = "events"\nwhere = { type = ["stroke"] }\n' + criterion("exists(x)"),
     "eligibility.items.x.where.type: unknown value(s) [\"stroke\"]"),
    (GOOD_ITEMS + '[eligibility.items.unused]\nsource = "ecog"\n' + criterion("ecog <= 2 and crcl_in > 1 'mg/dL'"),
     "eligibility.items.unused: declared but no criterion or formula reads it"),
    ('[eligibility.items.f]\nformula = "cockcroft_gault"\ninputs = { age = "a" }\n' + criterion("f > 1 'mL/min'"),
     "eligibility.items.f.inputs.sex: missing"),
    ('[eligibility.items.f]\nformula = "magic"\n' + criterion("true"), "eligibility.items.f.formula: unknown formula"),
    (GOOD_ITEMS + criterion("ecog <= 2 and crcl_in > 1 'mg/dL'") + "\n[eligibility.extra]\nx = 1\n",
     "eligibility.extra: unknown key"),
])
def test_mistakes_are_refused_with_key_paths(tmp_path: Path, body: str, expected: str) -> None:
    """Each mistake in the eligibility section is refused with the key path and what was expected."""
    found = problems(tmp_path, body)
    assert any(line.startswith(expected) for line in found), found


def test_bad_measurement_age_windows_are_refused(tmp_path: Path) -> None:
    """A window that is not 'N days/weeks/months/years', or max_age on a non-measurement, names its key path."""
    body = ('[eligibility.measurement_age]\ndefault = "two weeks"\nanchor = "birthday"\n' + GOOD_ITEMS
            + 'max_age = 14\n[eligibility.items.ecog2]\nsource = "ecog"\nmax_age = "3 days"\n'
            + criterion("ecog <= 2 and ecog2 <= 2 and crcl_in > 1 'mg/dL'"))
    found = problems(tmp_path, body)
    assert "eligibility.measurement_age.default: expected a window such as '14 days' or '1 month' (got 'two weeks')" \
        in found
    assert any(p.startswith("eligibility.measurement_age.anchor: expected one of screening") for p in found)
    assert "eligibility.items.crcl_in.max_age: expected a window such as '14 days' or '1 month' (got 14)" in found
    assert "eligibility.items.ecog2.max_age: only measurements (measurements.CODE) have a maximum age" in found
