"""Tests of escalation_rules.designs: the built-in designs behave as the field defines them."""

from __future__ import annotations

import pytest

from escalation_rules import DESIGNS, ProtocolError, builtin_design, compile_protocol, decide, verify


@pytest.mark.parametrize("name", sorted(DESIGNS))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_every_builtin_design_compiles_and_verifies(name, k):
    """Every built-in design passes every invariant for short and longer ladders."""
    assert verify(compile_protocol(builtin_design(name, k))).ok


@pytest.mark.parametrize(("history", "action", "dose", "mtd"), [
    ("1NNN", "treat", 2, None),
    ("1NNT", "treat", 1, None),
    ("1NNT 1NNN", "treat", 2, None),
    ("1NNT 1NNT", "stop", None, None),
    ("1NNN 2NTT", "stop", None, 1),
    ("1NNN 2NNN 3NNN", "stop", None, 3),
    ("1NNN 2NNN 3NNT 3NNN", "stop", None, 3),
])
def test_escalate_only(history, action, dose, mtd):
    """3+3-escalate-only: 0/3 up, 1/3 expand, ≤1/6 up, ≥2 stops with the dose below."""
    d = decide(builtin_design("3+3-escalate-only", 3), history)
    assert (d.action, d.dose, d.mtd) == (action, dose, mtd)


@pytest.mark.parametrize(("history", "action", "dose", "mtd"), [
    ("1NNN 2NTT", "treat", 1, None),
    ("1NNN 2NTT 1NNN", "stop", None, 1),
    ("1NNN 2NTT 1NTT", "stop", None, None),
    ("1NNT 1NNN 2TT", "stop", None, 1),
    ("1NNN 2NNN 3TTT 2NNT", "stop", None, 2),
    ("1NNN 2NNN 3TTT 2NTT 1NNN", "stop", None, 1),
])
def test_deescalate(history, action, dose, mtd):
    """3+3-deescalate (Korn et al. 1994): the dose below gets 6; ≤1/6 there is the MTD, else step lower."""
    d = decide(builtin_design("3+3-deescalate", 3), history)
    assert (d.action, d.dose, d.mtd) == (action, dose, mtd)


def test_six_at_top_demands_six():
    """3+3-six-at-top treats 3 more at the top dose after 0/3 before declaring it."""
    design = builtin_design("3+3-six-at-top", 2)
    assert decide(design, "1NNN 2NNN").action == "treat"
    assert decide(design, "1NNN 2NNN 2NNN").mtd == 2


def test_accelerated_titration_single_patients_until_first_dlt():
    """Accelerated titration: one patient per dose until a DLT, then 2 more and 3+3 with de-escalation."""
    design = builtin_design("accelerated-titration", 4)
    assert (decide(design, "1N").dose, decide(design, "1N").cohort_size) == (2, 1)
    assert (decide(design, "1N 2N 3T").dose, decide(design, "1N 2N 3T").cohort_size) == (3, 2)
    assert (decide(design, "1N 2N 3T 3NN").dose, decide(design, "1N 2N 3T 3NN").cohort_size) == (3, 3)
    assert decide(design, "1N 2N 3T 3NN 3NNN").dose == 4
    d = decide(design, "1N 2N 3T 3TN")
    assert (d.dose, d.cohort_size) == (2, 5)  # the dose below holds one patient: fill it to 6


@pytest.mark.parametrize("bad", [0, 41, -1])
def test_doses_out_of_range_are_refused(bad):
    """--doses outside 1..40 is refused with a one-line error naming the design."""
    with pytest.raises(ProtocolError, match="--doses: expected an integer from 1 to 40"):
        builtin_design("3+3-deescalate", bad)


def test_unknown_design_is_refused():
    """An unknown design name lists the known ones."""
    with pytest.raises(ProtocolError, match="unknown design"):
        builtin_design("bion", 3)
