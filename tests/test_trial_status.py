"""The status of a trial as a pure function of its events: windows, early decisions, sign-offs, refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.trial.events import TrialError, parse_event
from escalation_rules.trial.status import check_events, trial_status

NCT = load_protocol("spec/nct07117175")
INV = {"role": "investigator", "person": "Dr A"}
SPO = {"role": "sponsor", "person": "Ms B"}


def ev(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **fields}


def patient(pid: str, day: str, dose: int, infused: str | None = None) -> list[dict[str, Any]]:
    """Screening, enrolment and (optionally) infusion of one patient."""
    out = [ev("screened", f"{day}T08:00Z", patient=pid, eligible=True),
           ev("enrolled", f"{day}T09:00Z", patient=pid, dose=dose)]
    if infused:
        out.append(ev("infused", f"{infused}T10:00Z", patient=pid, date=infused))
    return out


def signed(option: str, at: str) -> list[dict[str, Any]]:
    return [ev("decision_signed", at, option=option, **INV), ev("decision_signed", at, option=option, **SPO)]


def first_patient_passed() -> list[dict[str, Any]]:
    """P01 at dose 1, infused 2025-01-02, window over with no DLT, escalation signed on 2025-02-01."""
    return [*patient("P01", "2025-01-01", 1, "2025-01-02"), *signed("escalate", "2025-02-01T12:00Z")]


def status(events: list[dict[str, Any]], as_of: str | None = None) -> Any:
    return trial_status(NCT, events, as_of)


def refused(events: list[dict[str, Any]], message: str) -> str:
    with pytest.raises(TrialError) as err:
        check_events(NCT, events)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text
    return text


def test_first_patient_is_pending_until_day_28_of_the_14_to_28_day_window() -> None:
    """While the first patient is inside the window, the answer is to wait, with the date the window closes."""
    s = status(patient("P01", "2025-01-01", 1, "2025-01-02"), "2025-01-20")
    assert s.next.action == "wait"
    assert s.next.until is not None and s.next.until.date().isoformat() == "2025-01-30"
    assert s.next.waiting == ("P01",)
    assert s.patients[0].window_days == (14, 28)


def test_safety_assessment_may_close_the_first_window_from_day_14_only() -> None:
    """A patient-level 'no DLT' assessment is refused before day 14 and closes the window from then on."""
    base = patient("P01", "2025-01-01", 1, "2025-01-02")
    refused([*base, ev("dlt_adjudicated", "2025-01-10", patient="P01", dlt=False, **INV)], "before day 14")
    s = status([*base, ev("dlt_adjudicated", "2025-01-16T09:00Z", patient="P01", dlt=False, **INV)])
    assert s.history == "1N" and s.next.action == "sign"


def test_signoffs_are_required_and_checked() -> None:
    """Decision points need every named role; unknown roles, one person in two roles, unoffered options are refused."""
    base = patient("P01", "2025-01-01", 1, "2025-01-02")
    one = [*base, ev("decision_signed", "2025-02-01T09:00Z", option="escalate", **INV)]
    s = status(one)
    assert s.next.action == "sign" and s.next.signed == {"investigator": "escalate"}
    assert s.next.roles == ("investigator", "sponsor")
    refused([*one, ev("decision_signed", "2025-02-01T10:00Z", option="escalate", role="sponsor", person="Dr A")],
            "one person cannot sign in two roles")
    refused([*one, ev("decision_signed", "2025-02-01T10:00Z", option="escalate", role="monitor", person="C")],
            "role 'monitor' is not named")
    refused([*base, ev("decision_signed", "2025-02-01T10:00Z", option="fill", **INV)], "option 'fill' is not offered")
    refused([*one, ev("decision_signed", "2025-02-01T10:00Z", option="escalate", **INV)], "investigator already signed")
    refused([*one, ev("decision_signed", "2025-02-01T10:00Z", option="terminate", **SPO)],
            "must be for the same option")
    refused([*base, ev("decision_signed", "2025-02-01T10:00Z", option="escalate", rule="pass-to-next", **INV)],
            "the open decision is rule 'at-pass-one'")
    s = status(first_patient_passed())
    assert s.history == "1N [escalate]"
    assert (s.next.action, s.next.dose, s.next.places, s.next.cohort) == ("enrol", 2, 3, 2)


def test_no_enrolment_the_current_decision_does_not_permit() -> None:
    """Enrolments before sign-off, at another dose, unscreened, ineligible or duplicated are refused."""
    base = patient("P01", "2025-01-01", 1, "2025-01-02")
    refused([*base, *patient("P02", "2025-02-02", 2)], "not permitted now: next step is sign")
    refused([*first_patient_passed(), *patient("P02", "2025-02-02", 3)], "the current decision treats at dose 2")
    refused([*first_patient_passed(), ev("enrolled", "2025-02-02", patient="P09", dose=2)], "never screened eligible")
    refused([*first_patient_passed(), ev("screened", "2025-02-02", patient="P09", eligible=False),
             ev("enrolled", "2025-02-03", patient="P09", dose=2)], "screened not eligible")
    refused([*first_patient_passed(), ev("enrolled", "2025-02-02", patient="P01", dose=2)], "duplicate enrolment")
    refused([*first_patient_passed(), *patient("P02", "2025-02-02", 2),
             ev("screened", "2025-02-02T10:00Z", patient="P03", eligible=True),
             ev("enrolled", "2025-02-02T11:00Z", patient="P03", dose=2, cohort=3)], "the next place is in cohort 2")


def test_a_full_cohort_under_observation_refuses_further_enrolment() -> None:
    """Once a cohort's places are taken, more patients wait for the decision."""
    events = [*first_patient_passed()]
    for pid in ("P02", "P03", "P04"):
        events += patient(pid, "2025-02-03", 2, "2025-02-04")
    s = status(events, "2025-02-10")
    assert s.next.action == "wait" and s.next.waiting == ("P02", "P03", "P04")
    refused([*events, *patient("P05", "2025-02-10", 2)], "next step is wait")


def test_adverse_events_need_an_infused_known_patient_and_a_known_category() -> None:
    """Adverse events of unknown patients, before the infusion, or of undeclared categories are refused."""
    base = patient("P01", "2025-01-01", 1)
    ae = {"ae": "a1", "term": "Nausea", "category": "non-hematologic", "grade": 2, "onset": "2025-01-03"}
    refused([*base, ev("ae_reported", "2025-01-03", patient="P02", **ae)], "unknown patient 'P02'")
    refused([*base, ev("ae_reported", "2025-01-03", patient="P01", **ae)], "adverse event before infusion")
    infused = [*base, ev("infused", "2025-01-05", patient="P01", date="2025-01-05")]
    refused([*infused, ev("ae_reported", "2025-01-06", patient="P01", **ae)], "adverse event before infusion: onset")
    refused([*infused, ev("ae_reported", "2025-01-06", patient="P01", **{**ae, "onset": "2025-01-06",
                                                                       "category": "renal"})], "category: unknown")
    refused([*infused, ev("ae_reported", "2025-01-06", patient="P01", **{**ae, "onset": "2025-01-06",
                                                                       "category": "crs", "grade": 3,
                                                                       "components": {"fever": True}})],
            "does not match the ASTCT grade 1")


def test_a_dlt_decides_the_titration_patient_at_once_and_its_signoff_gates_enrolment() -> None:
    """A grade 4 CRS in the first patient is known at once; the two more patients need joint sign-off first."""
    events = [*patient("P01", "2025-01-01", 1, "2025-01-02"),
              ev("ae_reported", "2025-01-04", patient="P01", ae="crs", term="Cytokine release syndrome",
                 category="crs", components={"fever": True, "hypoxia": "positive-pressure"},
                 onset="2025-01-04", attribution="probable")]
    s = status(events)
    assert s.history == "1T"
    assert (s.next.action, s.next.options, s.next.roles) == ("sign", ("treat",), ("investigator", "sponsor"))
    refused([*events, *patient("P02", "2025-01-05", 1)], "next step is sign")
    events += signed("treat", "2025-01-05T08:00Z")
    s = status(events)
    assert (s.next.action, s.next.dose, s.next.places) == ("enrol", 1, 2)
    assert s.decision.window_days == (28, 28)
    events += patient("P02", "2025-01-06", 1, "2025-01-07")
    s = status(events)
    assert s.patients[-1].window_days == (28, 28)
    assert (s.next.action, s.next.places, s.next.cohort) == ("enrol", 1, 2)


def test_two_dlts_in_three_decide_before_the_third_window_closes() -> None:
    """Two DLTs among three at dose 2 open the decision while the third patient is still observed."""
    events = [*first_patient_passed()]
    for pid in ("P02", "P03", "P04"):
        events += patient(pid, "2025-02-03", 2, "2025-02-04")
    for pid in ("P02", "P03"):
        events.append(ev("ae_reported", "2025-02-06", patient=pid, ae="x", term="Hepatic failure",
                         category="non-hematologic", grade=4, onset="2025-02-06", attribution="possible"))
    s = status(events)
    assert s.history.endswith("2TT")
    assert s.decision.determined_early and s.next.action == "sign"
    assert s.next.options == ("reduce", "terminate")
    assert s.observing == ("P04",)


def test_not_evaluable_patients_are_replaced_in_the_same_cohort() -> None:
    """A patient who drops out before being evaluable frees a place in the cohort."""
    events = [*first_patient_passed(), *patient("P02", "2025-02-03", 2), *patient("P03", "2025-02-03", 2),
              *patient("P04", "2025-02-03", 2),
              ev("not_evaluable", "2025-02-04", patient="P03", reason="withdrew before infusion")]
    s = status(events)
    assert (s.next.action, s.next.places, s.next.cohort) == ("enrol", 1, 2)
    events += patient("P05", "2025-02-05", 2)
    s = status(events)
    assert s.cohorts[1].patients == ("P02", "P03", "P04", "P05")
    refused([*events, ev("not_evaluable", "2025-02-06", patient="P03", reason="again")], "already not evaluable")


def test_a_patient_with_a_dlt_cannot_be_declared_not_evaluable() -> None:
    """A DLT makes a patient evaluable."""
    events = [*patient("P01", "2025-01-01", 1, "2025-01-02"),
              ev("ae_reported", "2025-01-04", patient="P01", ae="d", term="Death", category="non-hematologic",
                 grade=5, onset="2025-01-04", attribution="possible")]
    refused([*events, ev("not_evaluable", "2025-01-05", patient="P01", reason="x")], "already evaluated (dlt)")


def test_early_termination_by_joint_signature() -> None:
    """Investigator and sponsor may end the study at any time; then nothing more is enrolled."""
    events = [*patient("P01", "2025-01-01", 1, "2025-01-02"), *signed("terminate", "2025-01-10T09:00Z")]
    s = status(events)
    assert s.next.action == "stop" and s.decision.rule == "early-termination"
    refused([*events, *patient("P02", "2025-01-11", 1)], "next step is stop")


def test_amendments_change_the_protocol_the_engine_reads() -> None:
    """A cap change and an added dose apply from their time on; removing a dose with patients is refused."""
    events = [*first_patient_passed(),
              ev("protocol_amended", "2025-02-02", reference="A1", change="change-cap", cap=24),
              ev("protocol_amended", "2025-02-02T01:00Z", reference="A2", change="add-dose",
                 dose={"id": "d5", "label": "2×10^8 CAR-NK cells/kg", "amount": 2e8, "provisional": True})]
    s = status(events)
    assert s.cap == 24 and s.amendments == ("A1: change-cap", "A2: add-dose")
    refused([*events, ev("protocol_amended", "2025-02-03", reference="A3", change="remove-dose", level=1)],
            "only the top dose")
    refused([*first_patient_passed(), ev("protocol_amended", "2025-02-03", reference="A3", change="change-cap",
                                         cap=2)], "the amended protocol fails its checks")
    refused([*first_patient_passed(), *patient("P02", "2025-02-04", 2),
             ev("protocol_amended", "2025-02-05", reference="A4", change="remove-dose", level=4),
             ev("protocol_amended", "2025-02-05T01:00Z", reference="A5", change="change-dose", level=2,
                dose={"id": "dX"})], "a dose keeps its id")


def test_events_as_objects_or_dicts_give_the_same_status() -> None:
    """Host software may pass parsed events or their JSON objects."""
    events = first_patient_passed()
    parsed = [parse_event(e) for e in events]
    assert trial_status(NCT, parsed).to_dict() == trial_status(NCT, events).to_dict()
    json.dumps(trial_status(NCT, events).to_dict())


def test_refusal_names_the_event_position() -> None:
    """check_events names the offending event by its 1-based position and keeps its 0-based index."""
    with pytest.raises(TrialError) as err:
        check_events(NCT, [*patient("P01", "2025-01-01", 1), ev("infused", "2025-01-02", patient="P9",
                                                                date="2025-01-02")])
    assert str(err.value).startswith("event 3 (infused P9")
    assert err.value.index == 2


def _day_events() -> list[dict[str, Any]]:
    """A trial whose events carry dates only, so many share a timestamp."""
    events = [ev("screened", "2025-01-01", patient="P01", eligible=True),
              ev("enrolled", "2025-01-01", patient="P01", dose=1),
              ev("infused", "2025-01-01", patient="P01", date="2025-01-01"),
              ev("decision_signed", "2025-02-01", option="escalate", **INV),
              ev("decision_signed", "2025-02-01", option="escalate", **SPO)]
    for pid in ("P02", "P03", "P04"):
        events += [ev("screened", "2025-02-01", patient=pid, eligible=True),
                   ev("enrolled", "2025-02-01", patient=pid, dose=2),
                   ev("infused", "2025-02-02", patient=pid, date="2025-02-02")]
    events += [ev("ae_reported", "2025-02-02", patient="P03", ae="c", term="Cytokine release syndrome",
                  category="crs", grade=3, onset="2025-02-02", attribution="probable"),
               ev("ae_updated", "2025-02-06", patient="P03", ae="c", date="2025-02-06", grade=2),
               ev("not_evaluable", "2025-02-02", patient="P04", reason="infusion reaction, treatment stopped"),
               ev("screened", "2025-02-06", patient="P05", eligible=True),
               ev("enrolled", "2025-02-06", patient="P05", dose=2)]
    return events


@settings(max_examples=30, deadline=None)
@given(st.permutations(_day_events()))
def test_same_timestamp_events_in_any_order_give_the_same_status(events: list[dict[str, Any]]) -> None:
    """Invariant: the status does not depend on the order in which same-time events are given."""
    expected = trial_status(NCT, _day_events(), "2025-03-20").to_dict()
    assert trial_status(NCT, events, "2025-03-20").to_dict() == expected
    assert expected["history"] == "1N [escalate] 2NT"


def _timed_events() -> list[dict[str, Any]]:
    """A trial with date-times, plus screenings that fail, so that extend's fast path and checkpoints both run."""
    events = [*first_patient_passed(), *patient("P02", "2025-02-02", 2, "2025-02-03"),
              *patient("P03", "2025-02-02", 2, "2025-02-04")]
    events += [ev("screened", f"2025-02-0{1 + i % 5}T0{i % 9}:00Z", patient=f"X{i}", eligible=False)
               for i in range(12)]
    return events


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([_day_events, _timed_events]).flatmap(
    lambda make: st.tuples(st.permutations(make()), st.lists(st.integers(1, 4), min_size=1, max_size=30))))
def test_extending_a_fold_equals_folding_everything(case: tuple[list[dict[str, Any]], list[int]]) -> None:
    """Invariant: events appended in batches (in any order, refused ones dropped) give the status of one fold.

    extend (the store's incremental path: fast path, checkpoints, full refold) accepts and refuses exactly
    what a fold over all accepted events accepts and refuses, and ends with the same status.
    """
    from escalation_rules.trial import status as status_module

    events, sizes = case
    parsed = [parse_event(e) for e in events]
    folded = None
    accepted: list[Any] = []
    saved = status_module.CHECKPOINT_EVERY
    status_module.CHECKPOINT_EVERY = 1
    try:
        i = 0
        for size in sizes * len(parsed):
            batch = parsed[i:i + size]
            if not batch:
                break
            i += size
            try:
                trial_status(NCT, [*accepted, *batch])
                full_ok = True
            except TrialError:
                full_ok = False
            try:
                folded = status_module.extend(folded, NCT, batch, [f"new {j}" for j in range(len(batch))])
                ok = True
            except TrialError:
                ok = False
            assert ok == full_ok
            if ok:
                accepted += batch
    finally:
        status_module.CHECKPOINT_EVERY = saved
    if folded is not None:
        moment = max(e.at for e in accepted)
        assert status_module.status_of(folded, moment).to_dict() == trial_status(NCT, accepted, moment).to_dict()


@pytest.mark.parametrize("other", ["Dr A ", "Dr A\u200b", "dr a", "Dr  A", "\uff24r A", "Dr\u00a0A", "\u200eDr A"])
def test_one_person_cannot_sign_two_roles_under_a_variant_of_their_name(other: str) -> None:
    """Regression (issue 13): names are compared after NFKC, invisible characters, spaces and case are normalised."""
    events = [*patient("P01", "2025-01-01", 1, "2025-01-02"),
              ev("decision_signed", "2025-02-01T12:00Z", option="escalate", role="investigator", person="Dr A"),
              ev("decision_signed", "2025-02-01T13:00Z", option="escalate", role="sponsor", person=other)]
    with pytest.raises(TrialError, match="already signed this decision as investigator"):
        check_events(NCT, events)


def test_person_ids_decide_when_both_signatures_give_one() -> None:
    """Stable person ids are compared first: the same id under two names is one person; two ids are two people."""
    base = [*patient("P01", "2025-01-01", 1, "2025-01-02"),
            ev("decision_signed", "2025-02-01T12:00Z", option="escalate", role="investigator", person="Dr A",
               person_id="u-1")]
    with pytest.raises(TrialError, match="one person cannot sign in two roles"):
        check_events(NCT, [*base, ev("decision_signed", "2025-02-01T13:00Z", option="escalate", role="sponsor",
                                     person="Ms B", person_id="u-1")])
    check_events(NCT, [*base, ev("decision_signed", "2025-02-01T13:00Z", option="escalate", role="sponsor",
                                 person="Dr A", person_id="u-2")])
    with pytest.raises(TrialError, match="one person cannot sign in two roles"):  # no id on one side: names decide
        check_events(NCT, [*base, ev("decision_signed", "2025-02-01T13:00Z", option="escalate", role="sponsor",
                                     person="DR A")])


@pytest.mark.parametrize("name", ["\u200b", "\u200b\u200d", "\u2060 \ufeff"])
def test_a_person_made_of_invisible_characters_is_refused(name: str) -> None:
    """A name with nothing visible in it names nobody: refused where the event is read."""
    with pytest.raises(TrialError, match="person: expected visible characters"):
        parse_event(ev("decision_signed", "2025-02-01", option="escalate", role="sponsor", person=name))
