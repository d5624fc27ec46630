"""Example-based tests of exhaustive verification (escalation_rules.verify)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from escalation_rules import DESIGNS, builtin_design, compile_protocol, decide, load_protocol, verify
from escalation_rules.designs import design_mapping
from escalation_rules.paths import count_leaves, future_paths
from escalation_rules.protocol import protocol_from_mapping
from escalation_rules.verify import INVARIANTS


def broken(rules: list[dict[str, Any]]) -> Any:
    """The escalate-only 3+3 with three doses, with ``rules`` put first under hit policy 'first'."""
    mapping = design_mapping("3+3-escalate-only", 3)
    stage = mapping["stages"][0]
    stage["hit_policy"] = "first"
    stage["rules"] = [*rules, *stage["rules"]]
    return protocol_from_mapping(mapping, "broken")


@pytest.mark.parametrize("doses", range(1, 7))
@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_builtin_design_passes(name: str, doses: int) -> None:
    """Every built-in design over 1 to 6 doses satisfies every invariant."""
    report = verify(compile_protocol(builtin_design(name, doses)))
    assert report.ok, report.text()
    assert report.text().endswith("all invariants hold")


def test_nct07117175_passes() -> None:
    """The shipped NCT07117175 protocol satisfies every invariant, escalation sign-off included."""
    compiled = compile_protocol(load_protocol("spec/nct07117175"))
    report = verify(compiled)
    assert report.ok, report.text()
    by_id = {r.id: r for r in report.results}
    assert by_id["escalation-signoff"].checked > 0
    assert by_id["no-escalation-under-three"].checked > 0
    assert compiled.stats["decisions"] > 0


def test_report_counts_match_the_compiled_graph() -> None:
    """The report counts the graph's states, edges and paths and runs every invariant once, in order."""
    compiled = compile_protocol(builtin_design("3+3-deescalate", doses=4))
    report = verify(compiled)
    assert (report.states, report.edges, report.paths) == (
        compiled.stats["states"], compiled.stats["edges"], compiled.stats["paths"])
    expected = [key for key in INVARIANTS if key != "interval-boundaries"]  # no model-assisted stage here
    assert [r.id for r in report.results] == expected
    assert [r.statement for r in report.results] == [INVARIANTS[key] for key in expected]
    assert all(r.checked > 0 and r.counterexample is None for r in report.results)
    by_id = {r.id: r for r in report.results}
    assert by_id["within-cap"].checked == compiled.stats["states"]
    assert report.protocol == "3+3-deescalate (--doses 4)"


def test_report_as_json() -> None:
    """to_dict is JSON with ok, the counts and one entry per invariant."""
    data = verify(compile_protocol(builtin_design("3+3-escalate-only", doses=2))).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is True and data["paths"] == 19
    assert {r["id"] for r in data["results"]} == set(INVARIANTS) - {"interval-boundaries"}  # no interval stage
    assert set(data["results"][0]) == {"id", "statement", "ok", "checked", "counterexample", "detail"}


@pytest.mark.parametrize("doses", range(1, 7))
def test_escalate_only_terminal_paths_follow_the_closed_form(doses: int) -> None:
    """3+3 escalate-only with K doses has 3·2^(K+1) − 5 terminal paths."""
    compiled = compile_protocol(builtin_design("3+3-escalate-only", doses))
    expected = 3 * 2 ** (doses + 1) - 5
    assert verify(compiled).paths == expected
    assert compiled.stats["stops"] == expected  # the graph is a tree: one stop per path
    if doses <= 3:
        assert count_leaves(future_paths(compiled, "")) == expected


def test_a_violation_is_reported_with_a_shortest_counterexample() -> None:
    """Escalating with two DLTs in six fails no-escalation-after-two-dlts, with a history that does it."""
    lax = {"id": "lax-pass-six", "when": "n == 6 and tox == 2 and has_next", "action": "treat", "move": "next",
           "clause": "test", "paraphrase": "escalate with two DLTs in six (wrong on purpose)"}
    report = verify(compile_protocol(broken([lax])))
    assert not report.ok
    failed = [r for r in report.results if not r.ok]
    assert [r.id for r in failed] == ["no-escalation-after-two-dlts"]
    assert failed[0].counterexample == "1NNT 1NNT"
    assert failed[0].detail == "escalated from dose 1 with 2 DLT in 6"
    assert "FAIL no-escalation-after-two-dlts" in report.text()
    assert report.text().endswith("INVARIANT VIOLATED")
    d = decide(broken([lax]), failed[0].counterexample)
    assert (d.action, d.dose, d.rule) == ("treat", 2, "lax-pass-six")


def test_an_incoherent_table_fails_coherence() -> None:
    """Escalating on one DLT in three while staying on none fails coherence."""
    rules = [
        {"id": "stay-on-none", "when": "n == 3 and tox == 0 and dose == 1", "action": "treat", "cohort": 3,
         "clause": "test", "paraphrase": "no DLT in 3 at dose 1: three more (wrong on purpose)"},
        {"id": "up-on-one", "when": "n == 3 and tox == 1 and dose == 1", "action": "treat", "move": "next",
         "clause": "test", "paraphrase": "one DLT in 3 at dose 1: escalate (wrong on purpose)"},
    ]
    report = verify(compile_protocol(broken(rules)))
    by_id = {r.id: r for r in report.results}
    assert not by_id["coherence"].ok
    assert by_id["coherence"].counterexample == "1NNT"
    assert "1 DLT leads to level 2 but 0 DLT leads to level 1" in (by_id["coherence"].detail or "")


@pytest.mark.slow
def test_deescalate_with_ten_doses_passes() -> None:
    """3+3 with de-escalation over 10 doses (about 90 000 states) satisfies every invariant."""
    report = verify(compile_protocol(builtin_design("3+3-deescalate", doses=10)))
    assert report.ok, report.text()
    assert report.states > 50_000


def _fill_moves_down() -> Any:
    """A fill stage that moves to a lower dose no patient was treated at, then declares it the MTD."""
    return protocol_from_mapping({
        "protocol": {"id": "fill-down", "cap": 9, "start_dose": "d2"},
        "doses": [{"id": "d1"}, {"id": "d2"}],
        "stages": [
            {"id": "esc", "cohort": 3, "doses": ["d1", "d2"], "hit_policy": "first", "rules": [
                {"id": "pass", "when": "tox == 0", "action": "treat", "cohort": 3, "stage": "fill",
                 "clause": "c", "paraphrase": "fill the passed dose"},
                {"id": "bad", "when": "true", "action": "stop", "clause": "c", "paraphrase": "end"}]},
            {"id": "fill", "kind": "fill", "cohort": 3, "hit_policy": "first", "rules": [
                {"id": "down", "when": "remaining > 0 and dose == 2", "action": "treat", "move": "previous",
                 "cohort": 3, "stage": "fill", "clause": "c", "paraphrase": "go on one dose lower"},
                {"id": "done", "when": "true", "action": "stop", "mtd": "current", "clause": "c",
                 "paraphrase": "declare"}]},
        ],
    }, "fill-down")


@pytest.mark.parametrize("full", [False, True])
def test_a_fill_that_moves_to_a_lower_dose_is_checked_there(full: bool) -> None:
    """mtd-accepted: a fill moving to another dose (e.g. reducing further) must reach an accepted dose."""
    protocol = _fill_moves_down()
    report = verify(compile_protocol(protocol) if full else protocol)
    result = next(r for r in report.results if r.id == "mtd-accepted")
    assert not result.ok
    assert result.detail == "fill begins at dose 1 with 0 DLT in 0"
    assert result.counterexample is not None and result.counterexample.startswith("2NNN")
