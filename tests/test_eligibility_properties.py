"""Property tests of screening: unit invariance, monotonicity in data, and honest lists of missing items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.eligibility import EligibilitySpec, load_eligibility, read_record, screen
from escalation_rules.guards import unit_factor
from test_eligibility import BASE, edit

ROOT = Path(__file__).resolve().parent.parent
SPEC: EligibilitySpec = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DELETABLE = (
    "ecog", "weight", "life_expectancy", "demographics.birth_date", "demographics.sex",
    "measurements[code=creatinine]", "measurements[code=creatinine].reference_range", "measurements[code=alt]",
    "measurements[code=spo2]", "measurements[code=lvef]", "measurements[code=cd7_flow]", "serology.hbsag",
    "serology.hbv_dna", "serology.hcv_ab", "anchors.cell_collection", "anchors.enrolment", "medications", "events",
    "infections", "cardiac", "cns", "attestations.venous_access_for_apheresis",
    "attestations.investigator_deems_unsuitable", "diagnosis.relapsed", "transplant", "pregnancy.pregnant", "consent",
)


@st.composite
def changed(draw: st.DrawFn) -> dict[str, Any]:
    """Edits that move criteria either way: performance status, serology, labs, a steroid course, a GI bleed."""
    edits: dict[str, Any] = {
        "ecog": draw(st.integers(0, 5)),
        "serology.hbsag": draw(st.sampled_from(["positive", "negative"])),
        "measurements[code=alt].value": draw(st.integers(5, 200)),
        "measurements[code=spo2].value": draw(st.integers(85, 100)),
        "measurements[code=creatinine].value": draw(st.integers(40, 400)),
    }
    if draw(st.booleans()):
        end = draw(st.integers(1, 28))
        edits["medications[+]"] = {"category": "corticosteroid", "route": "oral", "start": "2026-02-01",
                                   "end": f"2026-02-{end:02d}"}
    if draw(st.booleans()):
        edits["events[+]"] = {"type": "gi_bleeding", "start": f"2025-{draw(st.integers(9, 12)):02d}-15"}
    return edits


@given(changed(), st.sets(st.sampled_from(DELETABLE), max_size=8))
@SETTINGS
def test_filling_missing_items_never_turns_not_eligible_into_eligible(edits: dict[str, Any], gone: set[str]) -> None:
    """Monotonicity: with items removed, every definite criterion result and a 'not eligible' stay when refilled."""
    full = edit(BASE, edits)
    partial = edit(full, {path: None for path in sorted(gone, key=len, reverse=True)})
    before, after = screen(SPEC, partial), screen(SPEC, full)
    if before.outcome == "not eligible":
        assert after.outcome == "not eligible"
    if before.outcome == "eligible":
        assert after.outcome == "eligible"
    for b, a in zip(before.criteria, after.criteria, strict=True):
        if b.value is not None:
            assert a.value is b.value, (b.criterion.id, b.reason, a.reason)


@given(changed(), st.sets(st.sampled_from(DELETABLE), min_size=1, max_size=8))
@SETTINGS
def test_undetermined_names_only_items_that_are_missing(edits: dict[str, Any], gone: set[str]) -> None:
    """Every item an undetermined result asks for is in fact unknown, and every unknown criterion says why."""
    record = edit(edit(BASE, edits), {path: None for path in sorted(gone, key=len, reverse=True)})
    result = screen(SPEC, record)
    env = SPEC.environment(read_record(record))
    for name in result.needed:
        assert env[name] is None, name
    for r in result.criteria:
        if r.value is None:
            assert r.missing and all(env[name] is None for name in r.missing), r.criterion.id
        else:
            assert r.missing == ()
    if result.outcome == "undetermined":
        assert result.needed


@given(st.floats(0.3, 6.0), st.floats(0.5, 1.5), st.floats(35.0, 160.0), st.sampled_from(["female", "male"]),
       st.integers(1950, 2007))
@SETTINGS
def test_same_patient_in_other_units_gets_the_same_result(creat: float, uln: float, kg: float, sex: str,
                                                          born: int) -> None:
    """Creatinine in mg/dL or µmol/L and weight in kg or lb give the same criterion results and outcome."""
    per_mgdl = unit_factor("mg/dL", "µmol/L", "113.12 g/mol")
    common = {"demographics.sex": sex, "demographics.birth_date": f"{born}-05-05"}
    metric = edit(BASE, {**common, "weight": {"value": kg, "unit": "kg"},
                         "measurements[code=creatinine]": {"code": "creatinine", "value": creat, "unit": "mg/dL",
                                                           "date": "2026-03-01",
                                                           "reference_range": {"high": uln, "unit": "mg/dL"}}})
    other = edit(BASE, {**common, "weight": {"value": kg / 0.45359237, "unit": "lb"},
                        "measurements[code=creatinine]": {"code": "creatinine", "value": creat * per_mgdl,
                                                          "date": "2026-03-01",
                                                          "unit": "µmol/L",
                                                          "reference_range": {"high": uln * per_mgdl}}})
    a, b = screen(SPEC, metric), screen(SPEC, other)
    assert a.outcome == b.outcome
    assert [r.value for r in a.criteria] == [r.value for r in b.criteria]
    crcl_a = a.result("inc_renal").values["crcl"]["value"]
    crcl_b = b.result("inc_renal").values["crcl"]["value"]
    assert crcl_a == pytest.approx(crcl_b, rel=1e-9)


@given(changed(), st.sets(st.sampled_from(DELETABLE), max_size=8))
@SETTINGS
def test_invariant_batch_fast_path_equals_record_by_record_evaluator(edits: dict[str, Any], gone: set[str]) -> None:
    """Invariant: the compact batch path gives every criterion the same three-valued value (true, false or
    unknown) and the same outcome, failed criteria and needed items as screening the record on its own."""
    from escalation_rules.eligibility import screen_summary

    record = edit(edit(BASE, edits), {path: None for path in sorted(gone, key=len, reverse=True)})
    full = screen(SPEC, record)
    summary, values = screen_summary(SPEC, record)
    assert values == tuple(r.value for r in full.criteria)
    assert summary == full.summary()
