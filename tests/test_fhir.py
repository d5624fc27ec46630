"""FHIR input (eligibility/_fhir.py): the mapping file, Bundles read into records, provenance, refusals, CLI."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from escalation_rules import load_protocol
from escalation_rules.cli import main
from escalation_rules.eligibility import data_dictionary, load_eligibility, load_site, screen
from escalation_rules.eligibility._fhir import FhirError, bundle_record, bundle_to_record, is_bundle, load_mapping
from escalation_rules.errors import ProtocolError

pytest.importorskip("fhir.resources")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "fhir"
SPEC = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
LOINC, SCT, ATC, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://www.whocc.no/atc", "http://unitsofmeasure.org"
MEASURED = frozenset(i.source.split(".", 1)[1] for i in SPEC.items.values() if i.source.startswith("measurements."))


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def resources(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}


def add(bundle: dict[str, Any], *new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    out["entry"] += [{"resource": r} for r in new]
    return out


def drop(bundle: dict[str, Any], *ids: str) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    out["entry"] = [e for e in out["entry"] if e["resource"]["id"] not in ids]
    return out


def lab(rid: str, code: str, day: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": day, "valueQuantity": {"value": value, "system": UCUM, "code": unit}, **extra}


def record_of(bundle: dict[str, Any]) -> Any:
    return bundle_record(SPEC.fhir, bundle, "b.json")


# ------------------------------------------------------------------ the shipped examples


@pytest.mark.parametrize(("name", "outcome"), [
    ("eligible", "eligible"), ("not-eligible", "not eligible"), ("undetermined", "undetermined"), ("male", "eligible"),
    ("steroid-replacement", "eligible"),
])
def test_shipped_bundles_screen_to_their_outcome(name: str, outcome: str) -> None:
    """Each example Bundle gives the outcome its name says (the male one without pregnancy data is decided)."""
    assert screen(SPEC, example(name)).outcome == outcome


def test_undetermined_bundle_names_what_is_missing() -> None:
    """The stale echocardiogram and the absent liver tests are what the undetermined Bundle needs."""
    result = screen(SPEC, example("undetermined"))
    assert result.needed == ("lvef", "alt", "alt.uln", "ast", "ast.uln")
    assert "more than 28 days before screening" in result.result("inc_lvef").reason


def test_male_bundle_needs_no_pregnancy_data() -> None:
    """Pregnancy and lactation do not apply to a man whose Patient.gender is male."""
    result = screen(SPEC, example("male"))
    assert result.result("exc_pregnant").value is False
    assert result.result("exc_pregnant").sources["sex"] == "Patient/p1"


# ------------------------------------------------------------------ the mapping file


def test_every_shipped_rule_names_codes_and_a_record_place() -> None:
    """The shipped mapping loads, and each measurement it fills is one this protocol reads."""
    measured = {i.source for i in SPEC.items.values() if i.source.startswith("measurements.")}
    for rule in SPEC.fhir.rules:
        assert rule.codes
        if rule.to.startswith("measurements."):
            assert rule.to in measured, rule.to


@pytest.mark.parametrize(("raw", "message"), [
    ({"map": [{"resource": "Encounter", "to": "ecog", "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].resource: expected one of Observation, Condition, Procedure, Medication (got 'Encounter')"),
    ({"map": [{"resource": "Observation", "to": "cns.history_requiring_treatment",
               "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].to: an Observation fills ecog, weight, measurements.CODE"),
    ({"map": [{"resource": "Medication", "to": "medications", "set": {"category": "vitamin"},
               "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].set.category: expected one of corticosteroid"),
    ({"map": [{"resource": "Medication", "to": "medications", "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].set: missing category (required in every medications entry)"),
    ({"map": [{"resource": "Condition", "to": "diagnosis.who2022", "value": "cml",
               "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].value: expected the code the Condition gives"),
    ({"map": [{"resource": "Observation", "to": "ecog", "codes": [{"system": "s"}]}]},
     "f.toml: fhir.map[0].codes[0].code: expected a code (got None)"),
    ({"answers": [{"value": "maybe", "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.answers[0].value: expected one of positive, negative (got 'maybe')"),
    ({"mapping": []},
     "f.toml: fhir.mapping: unknown key (expected one of: answers, description, indications, local_system"),
    ({"map": [{"resource": "Observation", "to": "ecog", "none": True, "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.map[0].none: only a list"),
    ({"map": [{"resource": "Observation", "to": "measurements.anc", "codes": [{"system": LOINC, "code": "751-8"}]}]},
     "f.toml: fhir.map[0].to: this protocol reads no measurement 'anc' (it reads: alt, ast"),
    ({"indications": [{"value": "unspecified", "codes": [{"system": "s", "code": "c"}]}]},
     "f.toml: fhir.indications[0].value: expected one of treatment, physiological_replacement (got 'unspecified')"),
    ({"prednisone_equivalents": [{"drug_mg": 0, "prednisone_mg": 5, "codes": [{"system": ATC, "code": "H02AB02"}]}]},
     "f.toml: fhir.prednisone_equivalents[0].drug_mg: expected a number of mg above 0 and at most 1000 (got 0)"),
    ({"prednisone_equivalents": [{"drug_mg": 4, "prednisone_mg": "5", "codes": [{"system": ATC, "code": "H02AB04"}]}]},
     "f.toml: fhir.prednisone_equivalents[0].prednisone_mg: expected a number of mg above 0 and at most 1000"),
    ({"prednisone_equivalents": [{"drug_mg": 4, "prednisone_mg": 5}]},
     "f.toml: fhir.prednisone_equivalents[0].codes: expected a non-empty list of codes"),
    ({"prednisone_equivalents": [{"drug_mg": 4, "prednisone_mg": 5, "factor": 1.25,
                                  "codes": [{"system": ATC, "code": "H02AB04"}]}]},
     "f.toml: fhir.prednisone_equivalents[0].factor: unknown key (expected one of: codes, drug_mg, prednisone_mg)"),
    ({"prednisone_equivalents": [{"drug_mg": 4, "prednisone_mg": 5, "codes": [{"system": ATC, "code": "H02AB04"}]},
                                 {"drug_mg": 5, "prednisone_mg": 5, "codes": [{"system": ATC, "code": "H02AB04"}]}]},
     "f.toml: fhir.prednisone_equivalents[1].codes: http://www.whocc.no/atc|H02AB04 already has 4 mg = 5 mg"),
    ({"prednisone_equivalents": {"drug_mg": 4}},
     "f.toml: fhir.prednisone_equivalents: expected an array of tables (got {'drug_mg': 4})"),
])
def test_a_bad_mapping_is_refused_naming_the_key_path(raw: dict[str, Any], message: str) -> None:
    """Each problem is one line naming the file and the key path."""
    with pytest.raises(ProtocolError) as err:
        load_mapping(raw, "f.toml", MEASURED)
    assert str(err.value).splitlines()[0].startswith(message), str(err.value)


def test_a_bad_mapping_in_a_protocol_folder_is_refused_when_the_protocol_loads(tmp_path: Path) -> None:
    """The folder's fhir.toml is checked with the eligibility criteria, naming that file."""
    folder = tmp_path / "p"
    shutil.copytree(ROOT / "spec" / "nct07117175", folder)
    text = (folder / "fhir.toml").read_text().replace('to = "measurements.alt"', 'to = "measurements.ALT"', 1)
    (folder / "fhir.toml").write_text(text)
    with pytest.raises(ProtocolError, match=r"fhir\.toml: fhir\.map\[\d+\]\.to: an Observation fills"):
        load_eligibility(load_protocol(folder))


# ------------------------------------------------------------------ Observations: units, dates, ranges


def test_the_ucum_code_of_the_latest_observation_before_screening_is_used() -> None:
    """Two creatinine results: the later (in µmol/L, by LOINC 14682-9) wins and converts to mg/dL."""
    rec = record_of(example("eligible"))
    m = rec.measurements["creatinine"]
    assert (m.value, m.unit, m.date.isoformat()) == (68.0, "umol/L", "2026-03-01")
    assert rec.provenance["measurements.creatinine"] == "Observation/creatinine"
    renal = screen(SPEC, example("eligible")).result("inc_renal")
    assert renal.value is True and renal.sources["creatinine"] == "Observation/creatinine"


def test_an_observation_after_the_screening_date_is_left_out() -> None:
    """A result dated after the screening date is not part of the baseline."""
    later = lab("alt-later", "1742-6", "2026-03-05", 400, "U/L")
    rec = record_of(add(example("eligible"), later))
    assert rec.measurements["alt"].value == 35.0


def test_two_values_of_one_code_on_one_day_are_refused_naming_both_resources() -> None:
    """The same day may not give two different results."""
    twin = lab("alt-twin", "1742-6", "2026-03-01", 90, "U/L")
    with pytest.raises(FhirError) as err:
        record_of(add(example("eligible"), twin))
    assert "measurements.alt on 2026-03-01 is 90 U/L but Observation/alt gives 35 U/L" in str(err.value)
    assert "entry[" in str(err.value) and "(Observation/alt-twin)" in str(err.value)


def test_the_observation_reference_range_is_the_records_and_the_site_file_applies_without_it() -> None:
    """referenceRange gives the record's own range; without one, the site's range applies."""
    rec = record_of(example("eligible"))
    assert (rec.measurements["ast"].low, rec.measurements["ast"].high) == (13.0, 35.0)
    bare = copy.deepcopy(example("eligible"))
    del resources(bare)["ast"]["referenceRange"]
    assert screen(SPEC, bare).result("inc_ast").value is None
    site = load_site(ROOT / "examples" / "site-ranges.toml")
    assert screen(SPEC, bare, site=site).result("inc_ast").value is True


def test_a_unit_of_the_wrong_dimension_is_refused_naming_the_observation() -> None:
    """A creatinine in kg is refused by the record's unit check, naming the Observation it came from."""
    bad = copy.deepcopy(example("eligible"))
    resources(bad)["creatinine"]["valueQuantity"]["code"] = "kg"
    with pytest.raises(FhirError, match=r"unit.*\(from Observation/creatinine\)"):
        screen(SPEC, bad)


def test_an_unknown_ucum_code_is_refused_with_close_matches() -> None:
    """The existing unit handling reads the UCUM code and suggests close matches."""
    bad = copy.deepcopy(example("eligible"))
    resources(bad)["alt"]["valueQuantity"]["code"] = "U/LL"
    with pytest.raises(FhirError, match=r"Observation/alt"):
        screen(SPEC, bad)


def test_a_viral_load_below_the_limit_reads_the_interpretation() -> None:
    """'< 20 IU/mL' with interpretation NEG is below the LLOQ and not detected."""
    rec = record_of(example("eligible"))
    m = rec.measurements["hbv_dna"]
    assert (m.value, m.lloq, m.detected) == (0.0, 20.0, False)
    assert screen(SPEC, example("eligible")).result("exc_hbv").value is False


def test_qualitative_results_and_the_pregnancy_test_date() -> None:
    """Coded answers map to positive/negative; the pregnancy test carries its Observation's date."""
    rec = record_of(example("eligible"))
    assert rec.sections["serology"]["hbcab"] == "positive"
    assert rec.sections["pregnancy"]["test_result"] == "negative"
    assert rec.sections["pregnancy"]["test_date"].isoformat() == "2026-03-01"


def test_bone_marrow_blasts_are_both_the_tumour_burden_and_dated_assessments() -> None:
    """77147-7: the latest is the tumour burden; every dated result is a disease assessment."""
    rec = record_of(example("eligible"))
    assert rec.measurements["tumour_burden"].value == 24.0
    assert [a.date.isoformat() for a in rec.lists["disease_assessments"]] == ["2025-06-30", "2026-02-26"]


# ------------------------------------------------------------------ Patient, Condition, Procedure, medications


def test_patient_gives_sex_and_birth_date() -> None:
    rec = record_of(example("not-eligible"))
    assert rec.sections["demographics"] == {"sex": "female", "birth_date": rec.sections["demographics"]["birth_date"]}
    assert rec.sections["demographics"]["birth_date"].isoformat() == "1968-02-03"
    assert rec.id == "p1"


def test_conditions_active_refuted_and_without_status() -> None:
    """Active is true, refuted is false, and a Condition without clinicalStatus is refused."""
    assert record_of(example("not-eligible")).sections["transplant"]["acute_gvhd_active"] is True
    assert record_of(example("eligible")).sections["transplant"]["acute_gvhd_active"] is False
    bare = copy.deepcopy(example("eligible"))
    del resources(bare)["agvhd"]["clinicalStatus"]
    del resources(bare)["agvhd"]["verificationStatus"]
    with pytest.raises(FhirError, match=r"\(Condition/agvhd\): clinicalStatus: missing"):
        record_of(bare)


def test_a_resolved_infection_is_controlled() -> None:
    """Our reading: a resolved infection Condition is a controlled infection that needed treatment."""
    (entry,) = record_of(example("eligible")).lists["infections"]
    assert entry.details == {"site": "other", "requires_treatment": True, "controlled": True}


def test_procedures_give_therapies_and_no_known_procedures_says_none() -> None:
    """A chemotherapy Procedure is a therapies entry; 'no known procedures' makes transplants known empty."""
    rec = record_of(example("eligible"))
    assert [(t.category, t.start.isoformat()) for t in rec.lists["therapies"]] == [("chemotherapy", "2024-09-25")]
    nothing = {"resourceType": "Procedure", "id": "none", "status": "completed",
               "code": {"coding": [{"system": SCT, "code": "787480003"}]}, "subject": {"reference": "Patient/p1"}}
    rec = record_of(add(drop(example("eligible"), "no-transplants"), nothing))
    assert rec.lists["transplants"] == ()
    assert record_of(drop(example("eligible"), "no-transplants")).lists["transplants"] is None


def test_medications_by_atc_prefix_route_and_reference() -> None:
    """H02AB02 is a corticosteroid (prefix H02AB), oral by SNOMED route; a MedicationAdministration may
    name its drug through a Medication in the Bundle."""
    rec = record_of(example("eligible"))
    dex = rec.lists["medications"][0]
    assert (dex.category, dex.route, dex.name, dex.end.isoformat()) == ("corticosteroid", "oral", "dexamethasone",
                                                                       "2026-01-20")
    drug = {"resourceType": "Medication", "id": "nivo", "code": {"coding": [{"system": ATC, "code": "L01FF01"}]}}
    given = {"resourceType": "MedicationAdministration", "id": "nivo-1", "status": "completed",
             "medicationReference": {"reference": "Medication/nivo"}, "subject": {"reference": "Patient/p1"},
             "effectiveDateTime": "2026-02-01"}
    result = screen(SPEC, add(example("eligible"), drug, given))
    assert result.outcome == "not eligible"
    sources = result.result("exc_checkpoint_antibody").sources
    assert sources["checkpoint_antibody"] == ["MedicationAdministration/nivo-1"]


# ------------------------------------------------------------------ provenance in the result


def test_each_value_names_its_resource_in_json_and_text() -> None:
    """to_dict() adds 'sources' per criterion and 'input': 'fhir'; the text names them after each line."""
    result = screen(SPEC, example("eligible"))
    data = result.to_dict()
    assert data["input"] == "fhir"
    renal = next(c for c in data["criteria"] if c["id"] == "inc_renal")
    ecog = next(c for c in data["criteria"] if c["id"] == "inc_ecog")
    assert ecog["sources"] == {"ecog": "Observation/ecog"}
    assert renal["sources"]["weight"] == "Observation/weight"  # through the Cockcroft-Gault formula's inputs
    assert "inc_ecog" in result.text() and "(from Observation/ecog)" in result.text()
    plain = screen(SPEC, json.loads((ROOT / "spec" / "patients" / "eligible.json").read_text())).to_dict()
    assert "input" not in plain and all("sources" not in c for c in plain["criteria"])


# ------------------------------------------------------------------ refusals


def test_a_malformed_bundle_is_one_line_per_problem_naming_entry_resource_and_field() -> None:
    """A value fhir.resources refuses is reported as ours: entry, resource, field, what arrived."""
    bad = copy.deepcopy(example("eligible"))
    resources(bad)["alt"]["valueQuantity"]["value"] = "abc"
    with pytest.raises(FhirError) as err:
        screen(SPEC, bad, "b.json")
    (line,) = str(err.value).splitlines()
    assert line.startswith("b.json: entry[") and "(Observation/alt): valueQuantity.value: " in line
    assert "pydantic" not in line and "(got 'abc')" in line


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: drop(b, "p1"), "b.json: entry: expected exactly one Patient (got 0)"),
    (lambda b: add(b, {"resourceType": "Patient", "id": "p2"}), "b.json: entry: expected exactly one Patient (got 2)"),
    (lambda b: {k: v for k, v in b.items() if k != "timestamp"}, "b.json: timestamp: missing"),
    (lambda b: add(b, {**lab("x", "1742-6", "2026-03-01", 35, "U/L"), "subject": {"reference": "Patient/other"}}),
     "(Observation/x): subject.reference: 'Patient/other' is not this Bundle's Patient"),
])
def test_bundles_that_cannot_be_screened_are_refused(change: Any, message: str) -> None:
    with pytest.raises(FhirError) as err:
        screen(SPEC, change(example("eligible")), "b.json")
    assert message in str(err.value)


def test_resources_that_give_no_value_are_listed_as_ignored() -> None:
    """Other resource types, unmapped codes, drafts and unconfirmed diagnoses are left out, and the result says so."""
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"}}
    haemoglobin = lab("hb", "718-7", "2026-03-01", 12.1, "g/dL")
    draft = lab("alt-draft", "1742-6", "2026-03-02", 400, "U/L", status="preliminary")
    maybe = {"resourceType": "Condition", "id": "maybe-cns", "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{"system": SCT, "code": "402355000"}]},
             "clinicalStatus": {"coding": [{"code": "active"}]},
             "verificationStatus": {"coding": [{"code": "provisional"}]}}
    result = screen(SPEC, add(example("eligible"), encounter, haemoglobin, draft, maybe))
    assert result.outcome == "eligible"
    assert result.to_dict()["ignored_resources"] == {
        "Encounter/e1": "resource type not read for screening", "Observation/hb": "no mapping rule for its code",
        "Observation/alt-draft": "status preliminary: not a result to screen on",
        "Condition/maybe-cns": "verificationStatus provisional: not a diagnosis to screen on"}
    assert result.text().splitlines()[-1].startswith("ignored: Encounter/e1 (resource type not read for screening); ")
    assert "ignored_resources" not in screen(SPEC, example("eligible")).to_dict()


def test_a_protocol_without_a_mapping_refuses_a_bundle() -> None:
    """A protocol folder with no fhir.toml says so."""
    with pytest.raises(FhirError, match="this protocol has no FHIR mapping"):
        bundle_record(None, example("eligible"), "b.json")


def test_is_bundle_and_bundle_to_record_shape() -> None:
    record, provenance = bundle_to_record(SPEC.fhir, example("male"), "m.json")
    assert is_bundle(example("male")) and not is_bundle(record)
    assert record["anchors"]["screening"] == "2026-03-02" and provenance["anchors.screening"] == "Bundle/fhir-male"


# ------------------------------------------------------------------ CLI


def test_cli_screens_a_bundle_with_sources_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", "nct07117175", str(EXAMPLES / "not-eligible.json"), "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["input"] == "fhir" and data["failed"] == ["inc_ecog"]
    assert next(c for c in data["criteria"] if c["id"] == "inc_ecog")["sources"] == {"ecog": "Observation/ecog"}


def test_cli_refuses_a_bad_bundle_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(example("eligible"))
    resources(bad)["p1"]["birthDate"] = "15/06/1979"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["screen", "nct07117175", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(Patient/p1): birthDate: " in err and "Traceback" not in err


def test_cli_batch_over_a_folder(capsys: pytest.CaptureFixture[str]) -> None:
    """--batch FOLDER screens every *.json in name order; --json gives one compact line each."""
    assert main(["screen", "nct07117175", "--batch", str(EXAMPLES), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["file"], d["outcome"]) for d in lines] == [
        ("eligible.json", "eligible"), ("male.json", "eligible"), ("not-eligible.json", "not eligible"),
        ("steroid-replacement.json", "eligible"), ("undetermined.json", "undetermined")]


def test_cli_data_items_prints_the_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data-items", "nct07117175"]) == 0
    out = capsys.readouterr().out
    assert "from Observation http://loinc.org|1742-6 Alanine aminotransferase" in out
    assert main(["data-items", "nct07117175", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"system": SCT, "code": "402355000", "display": "Acute graft-versus-host disease",
            "resource": "Condition"} in rows["acute_gvhd_active"]["fhir_codes"]
    assert [c["code"] for c in rows["steroid_treatment"]["fhir_codes"]][:1] == ["H02AB"]
    assert data_dictionary(SPEC)[0]["fhir_codes"] == [{"resource": "Bundle", "element": "Bundle.timestamp"}]
    assert data_dictionary(SPEC)[1]["fhir_codes"] == []


def test_screen_start_up_does_not_import_the_fhir_models() -> None:
    """fhir.resources (and pydantic) are imported only when a Bundle arrives."""
    code = ("import sys, contextlib, io\nfrom escalation_rules.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['screen', 'nct07117175', 'spec/patients/eligible.json'])\n"
            "    main(['data-items', 'nct07117175'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fhir', 'pydantic')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n", done.stderr


# ------------------------------------------------------------------ the docs' mapping table


def mapping_table() -> str:
    """The mapping table of docs/howto/fhir.md, built from the shipped fhir.toml."""
    names = {"http://loinc.org": "LOINC", "http://snomed.info/sct": "SNOMED CT", "http://www.whocc.no/atc": "ATC",
             "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips": "IPS absent/unknown"}
    lines = ["| record place | resource | entry fields | codes |", "| --- | --- | --- | --- |"]
    for rule in SPEC.fhir.rules:
        fields = ", ".join(f"{k} = {v}" for k, v in rule.set.items()) or (f"value = {rule.value}" if rule.value else "")
        if rule.none:
            fields = "(known to be none)"
        codes = "; ".join(f"{names.get(c.system, c.system)} {c.code}{'*' if rule.prefix else ''} {c.display}"
                          for c in rule.codes)
        lines.append(f"| `{rule.to}` | {rule.resource} | {fields} | {codes} |")
    return "\n".join(lines)


def medication_tables() -> str:
    """The indications and prednisone-equivalents tables of docs/howto/fhir.md, built from the shipped fhir.toml."""
    import tomllib

    names = {SCT: "SNOMED CT", ATC: "ATC", "http://hl7.org/fhir/sid/icd-10": "ICD-10"}
    raw = tomllib.loads((ROOT / "spec" / "nct07117175" / "fhir.toml").read_text())["fhir"]

    def codes(entry: dict[str, Any]) -> str:
        return "; ".join(f"{names.get(c['system'], c['system'])} {c['code']} {c['display']}" for c in entry["codes"])

    lines = ["| indication | reason codes |", "| --- | --- |"]
    lines += [f"| `{e['value']}` | {codes(e)} |" for e in raw["indications"]]
    lines += ["", "| drug | mg of the drug | mg of prednisone |", "| --- | --- | --- |"]
    lines += [f"| {codes(e)} | {e['drug_mg']:g} | {e['prednisone_mg']:g} |" for e in raw["prednisone_equivalents"]]
    return "\n".join(lines)


def test_the_docs_mapping_table_is_the_shipped_mapping() -> None:
    """docs/howto/fhir.md shows the mapping exactly as fhir.toml declares it."""
    page = (ROOT / "docs" / "howto" / "fhir.md").read_text()
    assert mapping_table() in page, "regenerate the table: python -c 'from tests.test_fhir import mapping_table; ...'"
    assert medication_tables() in page, "regenerate: python -c 'from tests.test_fhir import medication_tables; ...'"


# ------------------------------------------------------------------ more rules and limits


def test_observations_not_final_and_medications_not_taken_are_left_out() -> None:
    """A preliminary result is not screened on; a MedicationStatement 'not-taken' adds no course."""
    draft = lab("alt-draft", "1742-6", "2026-03-02", 400, "U/L", status="preliminary")
    skipped = {"resourceType": "MedicationStatement", "id": "nivo", "status": "not-taken",
               "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "L01FF01"}]},
               "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-02-01"}
    result = screen(SPEC, add(example("eligible"), draft, skipped))
    assert result.outcome == "eligible"


def test_a_partial_birth_date_leaves_the_age_unknown() -> None:
    """Patient.birthDate of a year alone gives no completed years."""
    bundle = copy.deepcopy(example("eligible"))
    resources(bundle)["p1"]["birthDate"] = "1979"
    result = screen(SPEC, bundle)
    assert result.outcome == "undetermined" and "birth_date" in result.needed


@pytest.mark.parametrize(("resource", "message"), [
    ({"code": {"coding": [{"system": "https://escalation-rules.invalid/fhir/record-field", "code": "colour"}]},
      "valueString": "blue"}, "code: 'colour' of the local code system is not a record place"),
    ({"code": {"coding": [{"system": "https://escalation-rules.invalid/fhir/record-field", "code": "infections"}]},
      "valueBoolean": True}, "valueBoolean: expected false (an Observation coded 'infections'"),
    ({"code": {"coding": [{"system": LOINC, "code": "1742-6"}]}, "effectiveDateTime": "2026-03-02",
      "valueQuantity": {"value": 900, "comparator": ">", "code": "U/L"}}, "valueQuantity.comparator: '>' gives no"),
    ({"code": {"coding": [{"system": LOINC, "code": "89247-1"}]}, "effectiveDateTime": "2026-03-02",
      "valueString": "one"}, "value[x]: expected valueInteger for an ECOG score"),
    ({"code": {"coding": [{"system": LOINC, "code": "5196-1"}]}, "effectiveDateTime": "2026-03-02",
      "valueString": "reactive?"}, "value[x]: expected a positive or negative result"),
])
def test_observations_the_mapping_cannot_read_are_refused(resource: dict[str, Any], message: str) -> None:
    obs = {"resourceType": "Observation", "id": "x", "status": "final", "subject": {"reference": "Patient/p1"},
           **resource}
    with pytest.raises(FhirError) as err:
        screen(SPEC, add(example("eligible"), obs), "b.json")
    assert f"(Observation/x): {message}" in str(err.value)


def test_a_bundle_past_the_entry_limit_is_refused_before_validation() -> None:
    from escalation_rules._limits import MAX_BUNDLE_ENTRIES

    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{}] * (MAX_BUNDLE_ENTRIES + 1)}
    with pytest.raises(FhirError, match=f"past the limit of {MAX_BUNDLE_ENTRIES} for a Bundle"):
        screen(SPEC, bundle, "b.json")


def test_without_the_fhir_extra_a_bundle_is_refused_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fhir.resources.R4B.bundle", None)
    with pytest.raises(FhirError, match=r"needs the 'fhir' extra \(fhir.resources 8; in the clone: pip install -e"):
        screen(SPEC, example("eligible"), "b.json")


def test_a_bundle_in_a_jsonl_batch_is_refused_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON Lines batches hold records; a Bundle line says how to screen it."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(example("male")) + "\n")
    assert main(["screen", "nct07117175", "--batch", str(path)]) == 2
    assert "resourceType: a FHIR resource, not a patient record" in capsys.readouterr().err


def test_entry_order_never_changes_the_record_or_the_outcome() -> None:
    """Property: shuffling a Bundle's entries gives the same record, provenance and outcome."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    bundle = example("eligible")
    expected = bundle_to_record(SPEC.fhir, bundle, "b.json")

    @settings(max_examples=25, deadline=None)
    @given(st.permutations(bundle["entry"]))
    def check(entries: list[Any]) -> None:
        record, provenance = bundle_to_record(SPEC.fhir, {**bundle, "entry": entries}, "b.json")
        assert record == expected[0] or _same_lists(record, expected[0])
        assert provenance["measurements.creatinine"] == "Observation/creatinine"
        assert screen(SPEC, {**bundle, "entry": entries}).outcome == "eligible"

    check()


def _same_lists(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal up to the order of list entries (lists keep the Bundle's order)."""
    def norm(value: Any) -> Any:
        if isinstance(value, list):
            return sorted((norm(v) for v in value), key=json.dumps)
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return value
    return bool(norm(a) == norm(b))


# ------------------------------------------------------------------ medications: indication, prednisone-equivalent dose

ICD10 = "http://hl7.org/fhir/sid/icd-10"


def statement(rid: str, atc: str, dose: dict[str, Any] | None = None, timing: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    """An active MedicationStatement of an ATC drug, with dosage[0]'s doseAndRate and timing.repeat."""
    dosage: dict[str, Any] = {}
    if dose is not None:
        dosage["doseAndRate"] = [dose]
    if timing is not None:
        dosage["timing"] = {"repeat": timing}
    return {"resourceType": "MedicationStatement", "id": rid, "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc}]},
            "subject": {"reference": "Patient/p1"}, "effectivePeriod": {"start": "2026-02-01"},
            **({"dosage": [dosage]} if dosage else {}), **extra}


def mg(value: float, unit: str = "mg") -> dict[str, Any]:
    return {"doseQuantity": {"value": value, "system": UCUM, "code": unit}}


def given(rid: str, atc: str, day: str, dose: dict[str, Any] | None) -> dict[str, Any]:
    """A completed MedicationAdministration of an ATC drug on one day."""
    return {"resourceType": "MedicationAdministration", "id": rid, "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day,
            **({"dosage": {"dose": dose}} if dose is not None else {})}


def medication(bundle: dict[str, Any], ref: str) -> tuple[dict[str, Any], list[str]]:
    """The medications entry a resource gave, and the elements of it that were not read."""
    record, provenance = bundle_to_record(SPEC.fhir, bundle, "b.json")
    entry = record["medications"][provenance["medications"].index(ref)]
    return entry, provenance.get("#unread", {}).get(ref, [])


def daily(resource: dict[str, Any]) -> float | None:
    entry, _ = medication(add(example("eligible"), resource), f"{resource['resourceType']}/{resource['id']}")
    value = entry.get("prednisone_equivalent_mg_per_day")
    return None if value is None else float(value)


@pytest.mark.parametrize(("resource", "expected"), [
    (statement("dex", "H02AB02", mg(4), {"frequency": 2, "period": 1, "periodUnit": "d"}), 4 * 2 * 5 / 0.75),
    (statement("hc", "H02AB09", mg(10), {"frequency": 1, "period": 8, "periodUnit": "h"}), 30 / 4),
    (statement("pred", "H02AB06", mg(0.35, "g"), {"frequency": 1, "period": 1, "periodUnit": "wk"}), 50.0),
    (statement("mp", "H02AB04", mg(500, "ug"), {"frequency": 3, "period": 1, "periodUnit": "d"}), 1.5 * 5 / 4),
    (statement("dfz", "H02AB13", mg(6), {"frequency": 1, "period": 2, "periodUnit": "d"}), 2.5),
])
def test_the_prednisone_equivalent_is_dose_times_frequency_per_day_times_the_equivalence(
        resource: dict[str, Any], expected: float) -> None:
    """dose (in mg through the unit machinery) x frequency / period in days x prednisone_mg / drug_mg."""
    assert daily(resource) == pytest.approx(expected)


def test_the_prednisone_equivalent_scales_linearly_with_the_frequency_and_the_dose() -> None:
    """Property: n doses a day give n times the daily dose of one; k times the dose gives k times the daily dose."""
    from hypothesis import given as hypothesis_given
    from hypothesis import settings
    from hypothesis import strategies as st

    @settings(max_examples=20, deadline=None)
    @hypothesis_given(st.integers(1, 6), st.sampled_from([0.5, 1, 2.5, 4, 10, 20]), st.sampled_from(["h", "d", "wk"]))
    def check(frequency: int, dose: float, unit: str) -> None:
        once = daily(statement("s", "H02AB02", mg(dose), {"frequency": 1, "period": 1, "periodUnit": unit}))
        many = daily(statement("s", "H02AB02", mg(dose), {"frequency": frequency, "period": 1, "periodUnit": unit}))
        double = daily(statement("s", "H02AB02", mg(2 * dose), {"frequency": frequency, "period": 1,
                                                                "periodUnit": unit}))
        assert once is not None and many is not None and double is not None
        assert many == pytest.approx(frequency * once) and double == pytest.approx(2 * many)

    check()


@pytest.mark.parametrize(("resource", "note"), [
    (statement("s", "H02AB02", mg(4)), "dosage[0].timing.repeat.frequency/period/periodUnit: missing"),
    (statement("s", "H02AB02", mg(4), {"period": 1, "periodUnit": "d"}), "timing.repeat.frequency: missing"),
    (statement("s", "H02AB02", {"doseRange": {"low": {"value": 4, "code": "mg", "system": UCUM},
                                              "high": {"value": 8, "code": "mg", "system": UCUM}}},
               {"frequency": 1, "period": 1, "periodUnit": "d"}), "doseRange: a range gives no exact dose"),
    (statement("s", "H02AB02", mg(1, "mL"), {"frequency": 1, "period": 1, "periodUnit": "d"}),
     "doseQuantity: 'mL' is not a mass"),
    (statement("s", "H02AB02", mg(0.1, "mg/kg"), {"frequency": 1, "period": 1, "periodUnit": "d"}),
     "doseQuantity: 'mg/kg' is not a mass"),
    (statement("s", "H02AB02", mg(4), {"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "d"}),
     "timing.repeat.frequencyMax: a range gives no exact daily dose"),
    (statement("s", "H02AB02", mg(4), {"frequency": 1, "period": 1, "periodUnit": "mo"}),
     "periodUnit: 'mo' has no fixed length in days"),
    (statement("s", "H02AB02", dosage=[{"doseAndRate": [mg(8)]}, {"doseAndRate": [mg(4)]}]),
     "dosage: 2 dosage instructions (a taper or split doses) give no single daily dose"),
    (statement("s", "H02AB03", mg(20), {"frequency": 1, "period": 1, "periodUnit": "d"}),
     "medication: its code has no prednisone_equivalents entry"),
    (given("a", "H02AB02", "2026-02-01", None) | {"dosage": {"rateQuantity": {"value": 1, "code": "mg/h",
                                                                             "system": UCUM}}},
     "dosage.rate[x]: a rate is not read (give dosage.dose)"),
    ({**given("a", "H02AB02", "2026-02-01", {"value": 8, "code": "mg", "system": UCUM}),
      "effectivePeriod": {"start": "2026-02-01", "end": "2026-02-03"}} | {"effectiveDateTime": None},
     "effectivePeriod: an administration over more than one day gives no daily dose"),
])
def test_a_dose_that_cannot_be_computed_exactly_is_left_unset_and_reported(resource: dict[str, Any], note: str) -> None:
    """No frequency, a range, a unit that is not a mass, a month, a taper, no equivalence: no dose, and why."""
    resource = {k: v for k, v in resource.items() if v is not None}
    ref = f"{resource['resourceType']}/{resource['id']}"
    entry, notes = medication(add(example("eligible"), resource), ref)
    assert "prednisone_equivalent_mg_per_day" not in entry
    assert any(note in n and n.endswith("(prednisone equivalent not computed)") for n in notes), notes
    result = screen(SPEC, add(example("eligible"), resource))
    assert note in result.to_dict()["unread_elements"][ref][0]
    assert result.text().splitlines()[-1].startswith(f"not read: {ref} (")


def test_a_medication_without_a_dose_is_not_reported() -> None:
    """Nothing to read is not a problem: the shipped dexamethasone has a route only."""
    entry, notes = medication(example("eligible"), "MedicationStatement/dexamethasone")
    assert "prednisone_equivalent_mg_per_day" not in entry and notes == []
    assert "unread_elements" not in screen(SPEC, example("eligible")).to_dict()


def test_administrations_of_one_drug_on_one_day_add_up() -> None:
    """Each MedicationAdministration is one dose on its day; two of dexamethasone that day make the daily dose."""
    dose = {"value": 4, "code": "mg", "system": UCUM}
    bundle = add(example("eligible"), given("a1", "H02AB02", "2026-02-01", dose),
                 given("a2", "H02AB02", "2026-02-01T20:00:00Z", dose), given("a3", "H02AB02", "2026-02-02", dose))
    record, provenance = bundle_to_record(SPEC.fhir, bundle, "b.json")
    doses = {ref: m.get("prednisone_equivalent_mg_per_day")
             for ref, m in zip(provenance["medications"], record["medications"], strict=True)}
    assert doses["MedicationAdministration/a1"] == doses["MedicationAdministration/a2"] == pytest.approx(8 * 5 / 0.75)
    assert doses["MedicationAdministration/a3"] == pytest.approx(4 * 5 / 0.75)
    blank = add(example("eligible"), given("a1", "H02AB02", "2026-02-01", dose),
                given("a2", "H02AB02", "2026-02-01", {"value": 1, "code": "mL", "system": UCUM}))
    entry, notes = medication(blank, "MedicationAdministration/a1")
    assert "prednisone_equivalent_mg_per_day" not in entry
    assert "another administration of this drug on 2026-02-01 has no dose read" in notes[0]


def reasons(*codes: tuple[str, str]) -> dict[str, Any]:
    return {"reasonCode": [{"coding": [{"system": system, "code": code}]} for system, code in codes]}


@pytest.mark.parametrize(("extra", "indication", "note"), [
    (reasons((ICD10, "E27.1")), "physiological_replacement", None),
    (reasons((SCT, "363732003")), "physiological_replacement", None),
    (reasons((SCT, "402356004")), "treatment", None),
    (reasons((ICD10, "E27.1"), (SCT, "402355000")), "treatment", None),
    (reasons((ICD10, "E27.1"), (SCT, "195967001")), None,
     "reasonCode: http://snomed.info/sct|195967001 is in no indications table entry (indication unspecified)"),
    (reasons((SCT, "195967001")), None, "reasonCode: http://snomed.info/sct|195967001 is in no indications table"),
    ({"reasonReference": [{"reference": "Observation/ecog"}]}, None,
     "reasonReference: 'Observation/ecog' is not a Condition in this Bundle"),
    ({}, None, None),
])
def test_reason_codes_give_the_indication(extra: dict[str, Any], indication: str | None, note: str | None) -> None:
    """fhir.indications maps reasons; treatment wins; replacement needs every reason mapped to it; else unspecified."""
    resource = statement("hc", "H02AB09", mg(10), {"frequency": 2, "period": 1, "periodUnit": "d"}, **extra)
    entry, notes = medication(add(example("eligible"), resource), "MedicationStatement/hc")
    assert entry.get("indication") == indication
    assert entry["prednisone_equivalent_mg_per_day"] == 5.0
    if note is None:
        assert notes == []
    else:
        assert any(note in n for n in notes), notes


def test_a_reason_reference_to_a_condition_in_the_bundle_gives_the_indication() -> None:
    """The shipped Bundle: hydrocortisone for Addison's disease (a Condition it names) is replacement, and the
    Condition, read as the reason, is not listed as ignored."""
    bundle = example("steroid-replacement")
    entry, notes = medication(bundle, "MedicationStatement/hydrocortisone")
    assert (entry["indication"], entry["prednisone_equivalent_mg_per_day"], notes) == ("physiological_replacement",
                                                                                       5.0, [])
    assert "ignored_resources" not in screen(SPEC, bundle).to_dict()


def test_cli_exclusion_12_reads_the_indication_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After an allogeneic transplant, ongoing hydrocortisone for Addison's disease does not exclude (replacement);
    the same course given for GVHD, or with no reason, does (Exclusion 12)."""
    spec = str(ROOT / "spec" / "nct07117175")
    assert main(["screen", spec, str(EXAMPLES / "steroid-replacement.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    exc12 = next(c for c in data["criteria"] if c["id"] == "exc_allogeneic_transplant")
    assert (data["outcome"], exc12["result"]) == ("eligible", False)
    for change in ({"reasonCode": [{"coding": [{"system": SCT, "code": "402356004"}]}]}, {}):
        bundle = copy.deepcopy(example("steroid-replacement"))
        course = resources(bundle)["hydrocortisone"]
        del course["reasonReference"]
        course.update(change)
        path = tmp_path / "b.json"
        path.write_text(json.dumps(bundle))
        assert main(["screen", spec, str(path), "--json"]) == 3
        data = json.loads(capsys.readouterr().out)
        exc12 = next(c for c in data["criteria"] if c["id"] == "exc_allogeneic_transplant")
        assert exc12["result"] is True and "exc_allogeneic_transplant" in data["failed"]
        assert exc12["sources"]["steroid_treatment"] == ["MedicationStatement/dexamethasone",
                                                         "MedicationStatement/hydrocortisone"]


def test_a_drug_two_rules_map_gets_one_dose_in_each_entry() -> None:
    """A resource two rules turn into two entries is still one dose: the day's total counts it once."""
    steroid = [{"system": ATC, "code": "H02AB02"}]
    mapping = load_mapping({"map": [{"resource": "Medication", "to": "medications", "codes": steroid,
                                     "set": {"category": "corticosteroid"}},
                                    {"resource": "Medication", "to": "medications", "codes": steroid,
                                     "set": {"category": "other"}}],
                            "prednisone_equivalents": [{"drug_mg": 0.75, "prednisone_mg": 5, "codes": steroid}]},
                           "f.toml")
    dose = {"value": 4, "code": "mg", "system": UCUM}
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-02T09:00:00Z",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}},
                        {"resource": given("a1", "H02AB02", "2026-02-01", dose)},
                        {"resource": given("a2", "H02AB02", "2026-02-01", dose)}]}
    record, _ = bundle_to_record(mapping, bundle, "b.json")
    assert [m["prednisone_equivalent_mg_per_day"] for m in record["medications"]] == [pytest.approx(8 * 5 / 0.75)] * 4


def test_a_reason_reference_by_full_url_is_followed() -> None:
    """reasonReference may name the Condition by its entry's fullUrl."""
    bundle = copy.deepcopy(example("steroid-replacement"))
    url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["id"] == "addison")
    resources(bundle)["hydrocortisone"]["reasonReference"] = [{"reference": url}]
    entry, notes = medication(bundle, "MedicationStatement/hydrocortisone")
    assert (entry["indication"], notes) == ("physiological_replacement", [])


def test_a_medication_rule_filling_therapies_gets_no_indication_or_dose() -> None:
    """Indication and dose are fields of medications entries only; a therapies entry from the same drug has none."""
    steroid = [{"system": ATC, "code": "H02AB02"}]
    mapping = load_mapping({"map": [{"resource": "Medication", "to": "medications", "codes": steroid,
                                     "set": {"category": "corticosteroid"}},
                                    {"resource": "Medication", "to": "therapies", "codes": steroid,
                                     "set": {"category": "chemotherapy"}}],
                            "indications": [{"value": "treatment", "codes": [{"system": SCT, "code": "402356004"}]}],
                            "prednisone_equivalents": [{"drug_mg": 0.75, "prednisone_mg": 5, "codes": steroid}]},
                           "f.toml")
    course = statement("dex", "H02AB02", mg(4), {"frequency": 1, "period": 1, "periodUnit": "d"},
                       **reasons((SCT, "402356004")))
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": "2026-03-02T09:00:00Z",
              "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}, {"resource": course}]}
    record = bundle_record(mapping, bundle, "b.json")
    (steroid_course,), (therapy,) = record.lists["medications"], record.lists["therapies"]
    assert (steroid_course.indication, steroid_course.dose) == ("treatment", pytest.approx(4 * 5 / 0.75))
    assert (therapy.indication, therapy.dose) == ("unspecified", None)
