"""The CRM: skeleton, posterior estimate, restriction, explanation, exact OC against an independent simulation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import builtin_design, decide, operating_characteristics, verify
from escalation_rules._crm import CrmModel, lee_cheung_skeleton
from escalation_rules.cli import main
from escalation_rules.errors import ProtocolError
from escalation_rules.protocol import protocol_from_mapping

SKELETON = (0.05, 0.12, 0.25, 0.4, 0.55)


def _posterior_mean(skeleton: tuple[float, ...], counts: tuple[tuple[int, int], ...], sd: float) -> float:
    """E[a | data] by the midpoint rule on [-12 sd, 12 sd] (written here, independently of the package)."""
    steps = 20000
    h = 24 * sd / steps
    num = den = 0.0
    for i in range(steps):
        a = -12 * sd + (i + 0.5) * h
        like = math.exp(-a * a / (2 * sd * sd))
        for s, (n, y) in zip(skeleton, counts, strict=True):
            p = s ** math.exp(a)
            like *= p**y * (1 - p) ** (n - y)
        num += a * like
        den += like
    return num / den


def test_posterior_rates_match_an_independent_integration() -> None:
    counts = ((3, 0), (3, 1), (3, 2), (0, 0), (0, 0))
    model = CrmModel(SKELETON, 0.25)
    a = _posterior_mean(SKELETON, counts, math.sqrt(1.34))
    assert model.estimate(counts) == pytest.approx(a, abs=1e-6)
    assert model.rates(counts) == pytest.approx(tuple(s ** math.exp(a) for s in SKELETON), abs=1e-6)


@pytest.mark.parametrize("model", ["empiric", "logistic"])
def test_lee_cheung_skeleton_places_neighbours_at_the_interval_edges(model: str) -> None:
    """getprior's defining property: where dose k's curve passes target - h, dose k+1's passes target + h."""
    target, h = 0.25, 0.06
    skel = lee_cheung_skeleton(target, h, 3, 6, model)
    assert skel[2] == pytest.approx(target)
    for k in range(5):
        if model == "empiric":
            power = math.log(target - h) / math.log(skel[k])  # skel[k] ** power == target - h
            assert skel[k + 1] ** power == pytest.approx(target + h)
        else:
            def logit(p: float) -> float:
                return math.log(p / (1 - p))
            scale = (logit(target - h) - 3) / (logit(skel[k]) - 3)
            assert 1 / (1 + math.exp(-3 - scale * (logit(skel[k + 1]) - 3))) == pytest.approx(target + h)


def test_restriction_no_skipping_and_no_escalation_after_a_toxic_cohort() -> None:
    model = CrmModel(SKELETON, 0.25)
    none_toxic = ((3, 0), (0, 0), (0, 0), (0, 0), (0, 0))
    assert model.recommend(none_toxic) == 4
    assert model.next_dose(none_toxic, current=0, cohort=3, cohort_tox=0) == 2  # one step up at most
    unrestricted = CrmModel(SKELETON, 0.25, restrict=False)
    assert unrestricted.next_dose(none_toxic, current=0, cohort=3, cohort_tox=0) == 4
    # a cohort at or above the target rate: never above the current dose, whatever the estimate
    mild = ((6, 0), (3, 1), (0, 0), (0, 0), (0, 0))
    assert model.next_dose(mild, current=1, cohort=3, cohort_tox=1) <= 2
    assert "restricted to dose 2 (no skipping a dose when escalating)" in model.explain(none_toxic, 0, 3, 0)


def test_decision_explains_the_model() -> None:
    d = decide(builtin_design("crm", 5, target=0.25, max_n=12), "1NNN")
    assert d.dose == 2 and "estimated DLT rates" in d.reason and "restricted to dose 2" in d.reason


def test_safety_stop() -> None:
    design = builtin_design("crm", 5, target=0.25, max_n=12, stop_p=0.9)
    d = decide(design, "1TTT")
    assert (d.action, d.mtd, d.rule) == ("stop", None, "crm-too-toxic")
    assert design.model is not None and design.model.p_first_too_toxic(((3, 3), (0, 0), (0, 0), (0, 0), (0, 0))) > 0.9


def test_crm_verifies_with_its_restriction() -> None:
    report = verify(builtin_design("crm", 4, target=0.25, max_n=12))
    assert report.ok, report.text()
    assert {r.id for r in report.results} >= {"no-skipped-dose", "coherence", "within-cap"}


def test_unrestricted_crm_skips_doses_and_verify_says_so() -> None:
    report = verify(builtin_design("crm", 5, target=0.25, max_n=9, restrict=False))
    skip = {r.id: r for r in report.results}["no-skipped-dose"]
    assert not skip.ok and skip.counterexample is not None


@pytest.mark.parametrize(("params", "message"), [
    ({"skeleton": "0.1,0.2"}, "expected one prior DLT rate per dose"),
    ({"skeleton": "0.3,0.2,0.4,0.5,0.6"}, "rising with the dose"),
    ({"model": "probit"}, "expected empiric or logistic"),
    ({"max_n": "10"}, "a multiple"),
    ({"stop_p": "1.5"}, "stop_p"),
    ({"prior_mtd": "9"}, "prior_mtd"),
])
def test_bad_crm_parameters_refused(params: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        builtin_design("crm", 5, **params)


def test_model_names_need_a_model_table() -> None:
    with pytest.raises(ProtocolError, match=r"needs a \[model\] table|need a \[model\] table"):
        protocol_from_mapping({
            "protocol": {"id": "x", "cap": 6},
            "doses": [{"id": "d1"}, {"id": "d2"}],
            "stages": [{"id": "s", "cohort": 3, "doses": ["d1", "d2"], "hit_policy": "first", "rules": [
                {"id": "r", "when": "model_dose > 0", "action": "treat", "move": "model", "clause": "c",
                 "paraphrase": "p"}]}],
        }, "x.toml")


def test_cli_show_and_oc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "crm", "--doses", "4", "--set", "target=0.25", "--set", "max_n=6",
                 "--set", "skeleton=0.1,0.2,0.3,0.45"]) == 0
    assert "skeleton=[0.1, 0.2, 0.3, 0.45]" in capsys.readouterr().out
    assert main(["oc", "crm", "--set", "target=0.25", "--set", "max_n=9", "--truth", "0.05,0.1,0.2,0.35,0.5",
                 "--json"]) == 0
    assert '"protocol": "crm"' in capsys.readouterr().out


def _independent_crm(truth: list[float], target: float, max_n: int, rng: random.Random) -> int:
    """A small group CRM written from dfcrm's crmsim (cohorts of 3, restricted): the final recommendation."""
    skel = lee_cheung_skeleton(target, 0.05, 2, len(truth))
    sd = math.sqrt(1.34)
    counts = [[0, 0] for _ in truth]
    dose = 0

    def recommend() -> int:
        a = _posterior_mean(skel, tuple((n, y) for n, y in counts), sd)
        rates = [s ** math.exp(a) for s in skel]
        if all(p <= target for p in rates):
            return len(rates) - 1
        if all(p >= target for p in rates):
            return 0
        return min(range(len(rates)), key=lambda d: (abs(rates[d] - target), d))

    for _ in range(max_n // 3):
        dlts = sum(rng.random() < truth[dose] for _ in range(3))
        counts[dose][0] += 3
        counts[dose][1] += dlts
        best = recommend()
        dose = min(best, dose) if dlts / 3 >= target else min(best, dose + 1)
    return recommend()


@settings(max_examples=3, deadline=None)
@given(st.lists(st.floats(0.02, 0.6), min_size=3, max_size=3).map(sorted))
def test_exact_oc_of_crm_matches_independent_simulation_within_4_se(truth: list[float]) -> None:
    """Invariant: exact P(MTD = dose) of the CRM lies within 4 standard errors of an independent simulation."""
    trials = 400
    rng = random.Random(11)
    picks = [_independent_crm(truth, 0.25, 9, rng) for _ in range(trials)]
    oc = operating_characteristics(builtin_design("crm", 3, target=0.25, max_n=9), truth)
    for dose in range(3):
        exact = oc.mtd[dose + 1]
        share = sum(p == dose for p in picks) / trials
        se = math.sqrt(max(exact * (1 - exact), 1e-3) / trials)
        assert abs(share - exact) <= 4 * se, (dose, share, exact)
