"""Eligibility screening: conformance vectors, example records, outcomes and explanations."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from escalation_rules import load_protocol
from escalation_rules.eligibility import (
    EXIT_STATUS,
    EligibilitySpec,
    RecordError,
    data_dictionary,
    load_eligibility,
    read_record,
    screen,
)

ROOT = Path(__file__).resolve().parent.parent
PATIENTS = ROOT / "spec" / "patients"
VECTORS = json.loads((PATIENTS / "vectors" / "nct07117175-criteria.json").read_text(encoding="utf-8"))
BASE = json.loads((PATIENTS / "eligible.json").read_text(encoding="utf-8"))
_SELECT = re.compile(r"^(?P<list>[a-z_]+)\[(?:(?P<key>[a-z_]+)=(?P<value>[^\]]+)|(?P<plus>\+))\]$")


@pytest.fixture(scope="module")
def spec() -> EligibilitySpec:
    return load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))


def edit(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply a vector's edits to a copy of ``record`` (see the ``paths`` note in the vector file)."""
    out = copy.deepcopy(record)
    for path, value in changes.items():
        parts = path.split(".")
        target: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            match = _SELECT.match(part)
            if match:
                entries = target.setdefault(match["list"], [])
                if match["plus"]:
                    assert last
                    entries.append(copy.deepcopy(value))
                    break
                index = next(j for j, e in enumerate(entries) if str(e.get(match["key"])) == match["value"])
                if last:
                    if value is None:
                        del entries[index]
                    else:
                        entries[index] = copy.deepcopy(value)
                    break
                target = entries[index]
            elif last:
                if value is None:
                    target.pop(part, None)
                else:
                    target[part] = copy.deepcopy(value)
            else:
                target = target.setdefault(part, {})
    return out


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['criterion']}: {c['description']}")
def test_conformance_vector(spec: EligibilitySpec, case: dict[str, Any]) -> None:
    """Each vector gives its criterion's three-valued result and, when unknown, exactly the missing items."""
    result = screen(spec, edit(BASE, case["set"]))
    by_id = {r.criterion.id: r for r in result.criteria}
    got = by_id[case["criterion"]]
    assert got.value is case["result"], got.reason
    if case["result"] is None:
        assert sorted(got.missing) == sorted(case["missing"])
    if "outcome" in case:
        assert result.outcome == case["outcome"]


def test_vectors_cover_every_criterion(spec: EligibilitySpec) -> None:
    """Every inclusion and exclusion criterion has a true, a false and an unknown vector."""
    seen: dict[str, set[Any]] = {}
    for case in VECTORS["cases"]:
        seen.setdefault(case["criterion"], set()).add(case["result"])
    for criterion in spec.criteria:
        if criterion.kind != "definition":
            assert seen.get(criterion.id) == {True, False, None}, criterion.id


def test_vectors_cover_every_definition_branch(spec: EligibilitySpec) -> None:
    """Every definition (the parts of Inclusion 4) has a true and a false vector; reading them is what 4 rests on."""
    seen: dict[str, set[Any]] = {}
    for case in VECTORS["cases"]:
        seen.setdefault(case["criterion"], set()).add(case["result"])
    for criterion in spec.criteria:
        if criterion.kind == "definition":
            assert {True, False} <= seen.get(criterion.id, set()), criterion.id


@pytest.mark.parametrize(("name", "outcome"), [("eligible", "eligible"), ("not-eligible", "not eligible"),
                                               ("undetermined", "undetermined")])
def test_example_records(spec: EligibilitySpec, name: str, outcome: str) -> None:
    """The three example records under spec/patients give the outcome their names say."""
    data = json.loads((PATIENTS / f"{name}.json").read_text(encoding="utf-8"))
    result = screen(spec, data)
    assert result.outcome == outcome
    assert result.exit_status == EXIT_STATUS[outcome]
    if outcome == "undetermined":
        assert result.needed
    else:
        assert not result.needed


def test_undetermined_lists_exact_needs(spec: EligibilitySpec) -> None:
    """The undetermined example names precisely the items its unknown criteria lack."""
    data = json.loads((PATIENTS / "undetermined.json").read_text(encoding="utf-8"))
    result = screen(spec, data)
    expected = json.loads((PATIENTS / "undetermined.expected.json").read_text(encoding="utf-8"))
    assert list(result.needed) == expected["needed"]


def test_result_json_contract(spec: EligibilitySpec) -> None:
    """The JSON form carries the outcome, per-criterion result, values, reason and clause."""
    data = screen(spec, edit(BASE, {"ecog": 3})).to_dict()
    assert data["outcome"] == "not eligible" and data["exit_status"] == 3
    assert data["failed"] == ["inc_ecog"]
    ecog = next(c for c in data["criteria"] if c["id"] == "inc_ecog")
    assert ecog == {**ecog, "result": False, "status": "not met", "clause": "Inclusion criteria, item 3",
                    "values": {"ecog": 3}}
    assert ecog["reason"] == "not met: ecog <= 2 with ecog = 3"
    json.dumps(data)


def test_cockcroft_gault_records_inputs_and_weight(spec: EligibilitySpec) -> None:
    """The derived clearance shows its formula, the inputs used and that actual body weight was used."""
    result = screen(spec, BASE)
    renal = next(r for r in result.criteria if r.criterion.id == "inc_renal")
    crcl = renal.values["crcl"]
    assert crcl["formula"] == "cockcroft_gault" and crcl["unit"] == "mL/min"
    assert abs(crcl["value"] - (140 - 46) * 62 * 0.85 / (72 * 68 / 88.4)) < 0.05
    assert "actual body weight" in crcl["inputs"]["weight"]


def test_male_clearance_has_no_female_factor(spec: EligibilitySpec) -> None:
    """For a man the Cockcroft-Gault result is the female one divided by 0.85."""
    female = screen(spec, BASE)
    male = screen(spec, edit(BASE, {"demographics.sex": "male"}))

    def crcl(r: Any) -> float:
        return float(next(c for c in r.criteria if c.criterion.id == "inc_renal").values["crcl"]["value"])

    assert abs(crcl(male) * 0.85 - crcl(female)) < 0.05


def test_not_eligible_wins_over_unknown(spec: EligibilitySpec) -> None:
    """A failed criterion makes the record not eligible even when other data are missing."""
    result = screen(spec, edit(BASE, {"ecog": 4, "serology": None, "weight": None}))
    assert result.outcome == "not eligible" and result.needed == ()


def test_empty_record_is_undetermined_and_needs_everything_basic(spec: EligibilitySpec) -> None:
    """A record with only an id and a screening date is undetermined and asks for the core items."""
    result = screen(spec, {"id": "X", "anchors": {"screening": "2026-03-02"}})
    assert result.outcome == "undetermined"
    for name in ("ecog", "birth_date", "creatinine", "hbsag", "venous_access"):
        assert name in result.needed


def test_data_dictionary_lists_every_item_with_users(spec: EligibilitySpec) -> None:
    """The data dictionary names every item, its dimension for quantities, and the criteria reading it."""
    rows = {r["name"]: r for r in data_dictionary(spec)}
    assert rows["crcl"]["dimension"] == "[length] ** 3 / [time]"
    assert rows["creatinine"]["molar_mass"] == "113.12 g/mol"
    assert rows["creatinine.uln"]["used_by"] == ["inc_renal"]
    assert rows["venous_access"]["attested"] is True
    assert "inc_age" in rows["age"]["used_by"] and "crcl" in rows["age"]["used_by"]
    assert set(spec.items) <= set(rows)


@pytest.mark.parametrize(("changes", "field"), [
    ({"weight": {"value": -70, "unit": "kg"}}, "weight.value"),
    ({"weight": {"value": 70, "unit": "mL"}}, "weight.unit"),
    ({"measurements[code=spo2].value": 101}, "measurements[8].value"),
    ({"measurements[code=creatinine].unit": "mg/dLL"}, "measurements[3].unit"),
    ({"ecog": "1"}, "ecog"),
    ({"events[+]": {"type": "gi_bleeding", "start": "2026-04-01"}}, "events[0].start"),
    ({"demographics.birth_date": "2026-13-01"}, "demographics.birth_date"),
    ({"serology.hbsag": "pos"}, "serology.hbsag"),
    ({"cardiac.ejection": 60}, "cardiac.ejection"),
    ({"favourite_colour": "blue"}, "favourite_colour"),
])
def test_bad_records_name_the_field(spec: EligibilitySpec, changes: dict[str, Any], field: str) -> None:
    """Impossible values, unknown units, wrong types, future dates and unknown fields are refused by field."""
    with pytest.raises(RecordError) as err:
        screen(spec, edit(BASE, changes), "p.json")
    assert f"p.json: {field}: " in str(err.value)


@pytest.mark.parametrize(("changes", "text"), [
    ({"measurements[code=creatinine].unit": "kg"}, "p.json: measurements[3].unit: expected a unit convertible"),
    ({"measurements[+]": {"code": "creatinin", "value": 1, "unit": "mg/dL"}},
     "p.json: measurements[9].code: unknown data item 'creatinin'"),
    ({"attestations.venous_acess": True}, "p.json: attestations.venous_acess: unknown data item"),
])
def test_protocol_dependent_refusals(spec: EligibilitySpec, changes: dict[str, Any], text: str) -> None:
    """Wrong-dimension units and unknown data items are refused with the file name and the indexed JSON path."""
    with pytest.raises(RecordError, match=re.escape(text)):
        screen(spec, edit(BASE, changes), "p.json")


def test_record_reader_reports_every_problem() -> None:
    """A record with several mistakes is refused with one line for each."""
    with pytest.raises(RecordError) as err:
        read_record({"id": "", "anchors": {}, "ecog": 9}, "p.json")
    assert len(err.value.problems) == 3


def test_vector_file_and_examples_match_their_schemas() -> None:
    """The vector file obeys its schema; the example records and the schema file obey the record format."""
    jsonschema = pytest.importorskip("jsonschema")
    from escalation_rules.eligibility import record_schema

    vectors_schema = json.loads((PATIENTS / "vectors" / "criteria-vectors.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(vectors_schema).validate(VECTORS)
    shipped = json.loads((PATIENTS / "patient-record.schema.json").read_text(encoding="utf-8"))
    assert shipped == record_schema(), "regenerate spec/patients/patient-record.schema.json from record_schema()"
    validator = jsonschema.Draft202012Validator(shipped)
    for name in ("eligible", "not-eligible", "undetermined"):
        validator.validate(json.loads((PATIENTS / f"{name}.json").read_text(encoding="utf-8")))


def test_schema_rejects_what_the_reader_rejects() -> None:
    """A record with an unknown field or a bad code fails both the schema and the reader."""
    jsonschema = pytest.importorskip("jsonschema")
    from escalation_rules.eligibility import record_schema

    validator = jsonschema.Draft202012Validator(record_schema())
    for changes in ({"favourite_colour": "blue"}, {"serology.hbsag": "pos"}, {"ecog": 6}):
        bad = edit(BASE, changes)
        assert not validator.is_valid(bad), changes
        with pytest.raises(RecordError):
            read_record(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("path", ["weight.value", "life_expectancy.value", "measurements[code=alt].value",
                                  "measurements[code=alt].reference_range.high"])
def test_non_finite_numbers_are_refused_in_every_numeric_field(spec: EligibilitySpec, bad: float, path: str) -> None:
    """NaN and infinities are refused wherever a number may stand, naming the indexed field."""
    changes = ({"measurements[code=alt]": {"code": "alt", "value": 20, "unit": "U/L",
                                           "reference_range": {"high": bad}}} if path.endswith("high") else
               {path: bad})
    field = path.replace("[code=alt]", "[5]")
    with pytest.raises(RecordError, match=re.escape(f"p.json: {field}: expected a finite number")):
        screen(spec, edit(BASE, changes), "p.json")


def test_non_finite_weight_is_refused_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN weight (Python's json writes it) exits 2 instead of screening the patient with crcl = nan."""
    from escalation_rules.cli import main

    path = tmp_path / "p.json"
    path.write_text(json.dumps(edit(BASE, {"weight.value": float("nan")})), encoding="utf-8")
    assert main(["screen", str(ROOT / "spec" / "nct07117175"), str(path)]) == 2
    assert "weight.value: expected a finite number (got NaN)" in capsys.readouterr().err


@pytest.mark.parametrize(("changes", "field"), [
    ({"weight": {"value": 6200, "unit": "kg"}}, "weight.value"),
    ({"weight": {"value": 2000, "unit": "lb"}}, "weight.value"),
    ({"weight": {"value": 5, "unit": "g"}}, "weight.value"),
    ({"life_expectancy": {"value": 200, "unit": "years"}}, "life_expectancy.value"),
    ({"measurements[code=spo2].value": 0.5, "measurements[code=spo2].unit": "mg/dL"}, None),
    ({"measurements[code=lvef]": {"code": "lvef", "value": 1.5, "unit": "1"}}, "measurements[7].value"),
    ({"demographics.birth_date": "1850-01-01"}, "demographics.birth_date"),
])
def test_implausible_physical_quantities_are_refused(spec: EligibilitySpec, changes: dict[str, Any],
                                                     field: str | None) -> None:
    """A weight, life expectancy, percentage or age no patient can have is refused, naming the field."""
    if field is None:  # a wrong dimension is a unit error, not a plausibility one
        with pytest.raises(RecordError, match="expected a unit convertible"):
            screen(spec, edit(BASE, changes), "p.json")
        return
    with pytest.raises(RecordError) as err:
        screen(spec, edit(BASE, changes), "p.json")
    assert f"p.json: {field}: " in str(err.value)
    assert "plausible" in str(err.value) or "age over" in str(err.value)


def test_plausible_extremes_are_accepted(spec: EligibilitySpec) -> None:
    """Heavy but possible weights and SpO2 of exactly 100% are still screened."""
    record = edit(BASE, {"weight.value": 250, "measurements[code=spo2].value": 100})
    assert screen(spec, record).outcome in ("eligible", "not eligible", "undetermined")


def test_conflicting_measurements_on_one_date_are_refused(spec: EligibilitySpec) -> None:
    """Two different values for one code on one date are refused, naming both entries."""
    creat = next(m for m in BASE["measurements"] if m["code"] == "creatinine")
    other = {**creat, "value": creat["value"] * 2}
    with pytest.raises(RecordError, match=re.escape("p.json: measurements[9]: creatinine on ")) as err:
        screen(spec, edit(BASE, {"measurements[+]": other}), "p.json")
    assert "but measurements[3] gives" in str(err.value)


def test_repeated_identical_or_differently_dated_measurements_are_accepted(spec: EligibilitySpec) -> None:
    """The same value twice on one date is not a conflict, and a later date still replaces an earlier one."""
    creat = next(m for m in BASE["measurements"] if m["code"] == "creatinine")
    assert screen(spec, edit(BASE, {"measurements[+]": dict(creat)})).outcome == "eligible"
    earlier = {**creat, "value": 99, "date": "2026-01-01"}
    assert screen(spec, edit(BASE, {"measurements[+]": earlier})).outcome == "eligible"


@pytest.mark.parametrize(("anchors", "field"), [
    ({"enrolment": "2025-03-10"}, "anchors.enrolment"),
    ({"cell_collection": "2026-03-01"}, "anchors.cell_collection"),
    ({"planned_infusion": "2026-03-11"}, "anchors.planned_infusion"),
])
def test_anchors_out_of_order_are_refused(spec: EligibilitySpec, anchors: dict[str, str], field: str) -> None:
    """Enrolment or cell collection before screening, or an infusion planned before them, is refused."""
    changes = {f"anchors.{k}": v for k, v in anchors.items()}
    with pytest.raises(RecordError, match=re.escape(f"p.json: {field}: ")):
        screen(spec, edit(BASE, changes), "p.json")


def test_record_messages_use_json_words() -> None:
    """Refusals show JSON values (null, true), never Python type names or reprs."""
    with pytest.raises(RecordError) as err:
        read_record({"id": None, "anchors": {"screening": True}, "ecog": False}, "p.json")
    text = str(err.value)
    assert "got null" in text and "got true" in text and "got false" in text
    assert "NoneType" not in text and "True" not in text and "False" not in text


def test_docs_list_every_plausible_range() -> None:
    """docs/eligibility.md shows the range of every entry of PLAUSIBLE, so the page cannot drift from the code."""
    from escalation_rules.eligibility import PLAUSIBLE

    text = (ROOT / "docs" / "eligibility.md").read_text(encoding="utf-8").split("**Plausible ranges.**")[1]
    for place, (unit, low, high) in PLAUSIBLE.items():
        name = place.rpartition(".")[2]
        shown = f"{low:g} to {high:g} " + {"year": "years"}.get(unit, unit)
        row = next((line for line in text.splitlines() if line.startswith("| `") and f"`{name}`" in line), "")
        assert shown in row, (place, shown, row)


def _leaf_paths(data: Any, path: str = "") -> list[tuple[str, list[Any]]]:
    """Every leaf of decoded JSON as (JSON path, key path)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else None
    if items is None:
        return [(path, [])]
    out = []
    for key, value in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        out.extend((p, [key, *keys]) for p, keys in _leaf_paths(value, sub))
    return out


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_invariant_nan_in_any_field_of_a_record_is_refused_naming_it(spec: EligibilitySpec, bad: float) -> None:
    """Invariant: putting NaN or infinity in any field of a valid record makes it refused, naming that field."""
    for path, keys in _leaf_paths(BASE):
        record = copy.deepcopy(BASE)
        target: Any = record
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = bad
        with pytest.raises(RecordError) as err:
            screen(spec, record, "p.json")
        assert f"p.json: {path}: " in str(err.value), path


def test_relapse_evidence_says_whether_data_or_attestation_was_used(spec: EligibilitySpec) -> None:
    """The relapse evidence names its source: dated results when recorded, else the site's attested code."""
    attested = screen(spec, BASE).result("rel_shown").values["relapse_shown_by"]
    assert attested["used"] == "attestation" and "no dated disease assessments" in attested["why"]
    marrow = {"specimen": "bone_marrow", "date": "2025-07-01", "blasts_percent": 18}
    data = screen(spec, edit(BASE, {"disease_assessments": [marrow]})).result("rel_shown")
    assert data.values["relapse_shown_by"]["used"] == "dated results"
    assert "bone marrow 18% blasts on 2025-07-01" in data.reason


def test_disease_assessments_are_checked() -> None:
    """A blast share outside 0-100, a lesion on a marrow sample or a missing date is refused, naming the entry."""
    bad = [{"specimen": "bone_marrow", "date": "2025-07-01", "blasts_percent": 140},
           {"specimen": "bone_marrow", "date": "2025-07-01", "lesion_present": True},
           {"specimen": "peripheral_blood", "blasts_percent": 3}]
    with pytest.raises(RecordError) as err:
        read_record(edit(BASE, {"disease_assessments": bad}))
    text = str(err.value)
    assert "disease_assessments[0].blasts_percent: expected 0 to 100 (got 140)" in text
    assert "disease_assessments[1].lesion_present" in text
    assert "disease_assessments[2].date: missing" in text


def test_pregnancy_true_for_a_man_or_a_test_without_date_is_refused() -> None:
    """A man recorded pregnant, or a pregnancy test result without its date, is refused naming the field."""
    with pytest.raises(RecordError) as err:
        read_record(edit(BASE, {"demographics.sex": "male", "pregnancy.lactating": True,
                                "pregnancy.test_result": "negative"}))
    assert "pregnancy.lactating: true for a man" in str(err.value)
    assert "pregnancy.test_date: missing" in str(err.value)


def test_male_pregnancy_reason_says_not_applicable(spec: EligibilitySpec) -> None:
    """For a man the pregnancy exclusion does not apply, and the reason says why."""
    result = screen(spec, edit(BASE, {"demographics.sex": "male", "pregnancy": {"planning_pregnancy": False}}))
    assert result.result("exc_pregnant").reason == ("does not apply: pregnant with pregnant = false "
                                                    "(not applicable to a man)")


@pytest.mark.parametrize(("code", "unit", "value", "high"), [
    ("alt", "IU/L", 35, 40), ("alt", "[IU]/L", 35, 40), ("bilirubin", "mg/dl", 0.8, 1.2),
    ("creatinine", "umol/L", 68, 84), ("creatinine", "mmol/L", 0.068, 0.084),
])
def test_laboratory_unit_spellings_give_the_same_result(spec: EligibilitySpec, code: str, unit: str, value: float,
                                                        high: float) -> None:
    """IU/L is U/L for enzymes; lower-case dl and UCUM spellings convert like their usual forms."""
    changed = edit(BASE, {f"measurements[code={code}]": {"code": code, "value": value, "unit": unit,
                                                           "date": "2026-03-01", "reference_range": {"high": high}}})
    got, want = screen(spec, changed), screen(spec, BASE)
    assert [r.value for r in got.criteria] == [r.value for r in want.criteria]
    assert (f"35 {unit}" in got.result("inc_alt").reason) is (code == "alt")  # shown as the record wrote it


def test_unknown_unit_lists_close_matches() -> None:
    """A unit neither pint nor UCUM knows is refused with the closest known spellings."""
    with pytest.raises(RecordError) as err:
        read_record(edit(BASE, {"measurements[code=alt].unit": "UI/L"}))
    assert "measurements[5].unit: unknown unit 'UI/L' (close matches: U/L" in str(err.value)


def test_too_old_measurement_names_the_window(spec: EligibilitySpec) -> None:
    """A value older than its declared window is unknown, and the reason names the window and the dates."""
    result = screen(spec, edit(BASE, {"measurements[code=alt].date": "2024-03-01"}))
    assert result.outcome == "undetermined" and "alt" in result.needed
    assert result.result("inc_alt").reason == (
        "unknown: ratio_to_uln(alt) <= 3; missing alt (alt: measured 2024-03-01, more than 14 days before "
        "screening 2026-03-02 (the protocol's window))")
    assert spec.items["lvef"].max_age == (28, "day") and spec.items["alt"].max_age == (14, "day")


def test_viral_load_and_transplant_list_contradictions_are_refused() -> None:
    """'Not detected' at or above the LLOQ, or a transplant flag the list contradicts, is refused."""
    record = edit(BASE, {"measurements[+]": {"code": "hbv_dna", "value": 40, "unit": "IU/mL", "lloq": 20,
                                             "detected": False, "date": "2026-02-25"},
                         "transplants": [{"type": "allogeneic", "start": "2025-01-10"}]})
    with pytest.raises(RecordError) as err:
        read_record(record)
    text = str(err.value)
    assert "measurements[9].detected: false, but the value 40 is at or above the LLOQ 20" in text
    assert "transplant.allogeneic: false, but the transplants list has an allogeneic transplant" in text
