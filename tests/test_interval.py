"""Model-assisted designs: published boundary tables, decisions, selection, exact OC against simulation."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import _interval as iv
from escalation_rules import builtin_design, decide, operating_characteristics, verify
from escalation_rules.cli import main
from escalation_rules.errors import ProtocolError

VECTORS = json.loads((Path(__file__).parent.parent / "spec/designs/boundary-tables.json").read_text())
TABLES = {"boin": iv.boin_boundaries, "keyboard": iv.keyboard_boundaries, "i3+3": iv.i3_boundaries}


@pytest.mark.parametrize("case", VECTORS["boundaries"], ids=lambda c: f"{c['design']}-{c['params']['target']}")
def test_published_boundary_table(case: dict) -> None:
    rows = {b.n: b for b in builtin_design(case["design"], 5, **case["params"]).boundaries}
    for i, n in enumerate(case["n"]):
        assert (rows[n].escalate, rows[n].deescalate, rows[n].eliminate) == (
            case["escalate"][i], case["deescalate"][i], case["eliminate"][i]), f"n = {n}"


@pytest.mark.parametrize("case", VECTORS["decisions"], ids=lambda c: f"{c['design']}-{c['history']}")
def test_decision_vector(case: dict) -> None:
    d = decide(builtin_design(case["design"], 5, **case["params"]), case["history"])
    assert (d.action, d.dose, d.mtd, d.rule) == (case["action"], case["dose"], case["mtd"], case["rule"])


def test_boin_lambdas_as_published() -> None:
    assert [round(x, 3) for x in iv.boin_lambdas(0.3, 0.18, 0.42)] == [0.236, 0.359]
    assert [round(x, 3) for x in iv.boin_lambdas(0.25, 0.15, 0.35)] == [0.197, 0.298]


def test_posterior_tail_is_the_beta_tail() -> None:
    """Pr(Beta(y+1, n-y+1) > t) by the binomial identity equals a direct numerical integral."""
    t, y, n = 0.3, 2, 5
    steps = 20000
    h = (1 - t) / steps
    dens = [((t + (i + 0.5) * h) ** y) * ((1 - t - (i + 0.5) * h) ** (n - y)) for i in range(steps)]
    norm = math.factorial(n + 1) / (math.factorial(y) * math.factorial(n - y))
    assert abs(norm * h * sum(dens) - iv.posterior_above(t, y, n)) < 1e-6


def test_isotonic_selection_follows_select_mtd() -> None:
    sel = iv.Selection(0.3)
    # the worked example of R BOIN's select.mtd help page
    assert iv.select_isotonic(sel, ((3, 0), (3, 0), (15, 4), (9, 4), (0, 0))) == 2
    # an excluded lowest dose: no MTD; an untried dose is never selected
    assert iv.select_isotonic(sel, ((3, 3), (0, 0))) is None
    assert iv.select_isotonic(sel, ((6, 1), (0, 0), (0, 0))) == 0
    # a dose closed in the trial is left out with every dose above it
    assert iv.select_isotonic(sel, ((6, 1), (6, 2), (3, 1)), closed_from=1) == 0


@pytest.mark.parametrize("design", ["boin", "keyboard", "mtpi2", "i3+3"])
def test_design_verifies_and_never_escalates_at_deescalation_boundary(design: str) -> None:
    report = verify(builtin_design(design, 4, target=0.3, max_n=12))
    assert report.ok, report.text()
    checked = {r.id: r.checked for r in report.results}
    assert checked["interval-boundaries"] > 0


def test_unsafe_boundary_table_is_flagged() -> None:
    """A table that escalates at its own de-escalation boundary is caught by the design's invariant."""
    from escalation_rules.designs import design_mapping
    from escalation_rules.protocol import protocol_from_mapping

    data = design_mapping("boin", 3, {"target": 0.3, "max_n": 6})
    for rule in data["stages"][0]["rules"]:
        if rule["id"] == "iv-escalate":
            rule["when"] = "tox <= deescalate_min and has_next and not next_closed"
    report = verify(protocol_from_mapping(data, "unsafe"))
    bad = {r.id: r for r in report.results}["interval-boundaries"]
    assert not bad.ok and bad.counterexample


@pytest.mark.parametrize(("params", "message"), [
    ({"target": "0.9"}, "expected a rate from 0.05 to 0.6"),
    ({"target": "0.3", "max_n": "20"}, "expected a multiple of the cohort size"),
    ({"target": "0.3", "colour": "red"}, "unknown parameter 'colour'"),
    ({"target": "x"}, "parameter target: expected a number"),
    ({"target": "1" * 5000}, "at most 40 characters"),
    ({"target": 10**5000}, r"below 10\^15 \(got an integer of 5001 digits\)"),
    ({"max_n": -(10**20)}, r"below 10\^15"),
])
def test_bad_parameters_refused(params: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        builtin_design("boin", 5, **params)


def test_cli_set_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "boin", "--doses", "3", "--set", "target=0.3", "--set", "max_n=9"]) == 0
    out = capsys.readouterr().out
    assert "escalate if DLTs <=                   0    1    2" in out
    assert "defaults as R package BOIN" in out
    assert main(["next", "boin", "--set", "target"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["next", "3+3-deescalate", "--set", "target=0.3"]) == 2
    assert "takes no parameters" in capsys.readouterr().err


def _independent_boin(truth: list[float], target: float, max_n: int, rng: random.Random) -> tuple[int | None, int]:
    """A small BOIN written from the paper (not from the package): one simulated trial."""
    lam_e, lam_d = iv.boin_lambdas(target, 0.6 * target, 1.4 * target)
    k = len(truth)
    n, y = [0] * k, [0] * k
    d, top = 0, k  # doses from `top` up are eliminated
    while sum(n) < max_n:
        y[d] += sum(rng.random() < truth[d] for _ in range(3))
        n[d] += 3
        if sum(n) >= max_n:
            break
        if n[d] >= 3 and iv.posterior_above(target, y[d], n[d]) > 0.95:
            top = min(top, d)
            if d == 0:
                return None, sum(n)
        rate = y[d] / n[d]
        if rate <= lam_e and d + 1 < top:
            d += 1
        elif rate >= lam_d and d > 0:
            d -= 1
    return iv.select_isotonic(iv.Selection(target), tuple(zip(n, y, strict=True)), top if top < k else None), sum(n)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.floats(0.02, 0.7), min_size=3, max_size=3).map(sorted))
def test_exact_oc_matches_independent_simulation_within_4_se(truth: list[float]) -> None:
    """Invariant: the exact P(MTD = dose) of BOIN lies within 4 standard errors of an independent simulation."""
    trials = 3000
    rng = random.Random(7)
    picks = [_independent_boin(truth, 0.3, 12, rng)[0] for _ in range(trials)]
    oc = operating_characteristics(builtin_design("boin", 3, target=0.3, max_n=12), truth)
    for j, exact in enumerate(oc.mtd):
        dose = None if j == 0 else j - 1
        share = sum(p == dose for p in picks) / trials
        se = math.sqrt(max(exact * (1 - exact), 1e-4) / trials)
        assert abs(share - exact) <= 4 * se, (dose, share, exact)


@pytest.mark.parametrize(("design", "heading"), [("boin", "Decision boundaries"), ("crm", "Dose-toxicity model")])
def test_audit_page_shows_the_design_as_protocols_print_it(design: str, heading: str) -> None:
    """The audit page of a model-assisted design has its boundary table; of the CRM, its model and first decisions."""
    from escalation_rules.auditdoc import audit_rst, site_stamp
    from escalation_rules.sphinx import build_context

    ctx = build_context(design, Path("."), doses=3, render=False, params={"target": "0.25", "max_n": "9"})
    text = audit_rst(ctx)
    assert heading in text
    assert ("Escalate if DLTs <=" in text) == (design == "boin")
    assert ("1NNN" in text) == (design == "crm")
    assert "--set max_n=9" in site_stamp(ctx, built="x")["parameters"]
