"""Tests that verification on merged states says exactly what the full state graph says."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_rules import (
    DESIGNS,
    CompileError,
    ProtocolError,
    builtin_design,
    compile_protocol,
    decide,
    load_protocol,
    parse_outcomes,
    verify,
)
from escalation_rules.designs import design_mapping
from escalation_rules.protocol import protocol_from_mapping

FIXTURES = Path(__file__).parent / "fixtures"


def _summary(report):
    return {r.id: (r.ok, r.checked) for r in report.results}


def _steps(history: str) -> int:
    return 0 if history == "(start)" else len(parse_outcomes(history))


def _agree(protocol) -> None:
    full = verify(compile_protocol(protocol))
    merged = verify(protocol)
    assert merged.method == "merged states" and full.method == "full state graph"
    assert {k: ok for k, (ok, _) in _summary(merged).items()} == {k: ok for k, (ok, _) in _summary(full).items()}
    assert merged.paths == full.paths
    for a, b in zip(full.results, merged.results, strict=True):
        if not a.ok:
            # both shortest: same number of steps, and the merged one is a real history up to its last step
            assert _steps(a.counterexample) == _steps(b.counterexample), (a, b)
            decide(protocol, parse_outcomes(b.counterexample)[:-1])


@pytest.mark.parametrize("name", sorted(DESIGNS))
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_merged_verification_agrees_with_the_full_graph_on_builtin_designs(name, k):
    """On every built-in design, both walks give the same verdicts and path counts."""
    _agree(builtin_design(name, k))


def test_merged_verification_agrees_on_nct07117175_and_the_broken_fixture():
    """On the shipped protocol and the deliberately broken one, both walks agree, counterexamples included."""
    _agree(load_protocol("spec/nct07117175"))
    broken = load_protocol(FIXTURES / "broken_3plus3.toml")
    _agree(broken)
    assert not verify(broken).ok


def test_merged_verification_scales_to_long_ladders():
    """3+3 with de-escalation and 20 doses verifies on a few hundred merged states."""
    report = verify(builtin_design("3+3-deescalate", 20))
    assert report.ok and report.states < 1000 and report.paths > 10**8


def test_a_compile_problem_is_refused_with_the_compilers_shortest_history():
    """A protocol that fails the build checks is refused by the merged walk as the compiler words it."""
    data = design_mapping("3+3-escalate-only", 3)
    data["stages"][0]["rules"] = [r for r in data["stages"][0]["rules"] if r["id"] != "esc-one-of-three"]
    protocol = protocol_from_mapping(data, "broken")
    with pytest.raises(CompileError) as merged:
        verify(protocol)
    with pytest.raises(CompileError) as full:
        compile_protocol(protocol)
    assert str(merged.value) == str(full.value)


_MUTATIONS = {
    "move": ["stay", "next", "previous"],
    "mtd": ["current", "previous", "none"],
    "close": [True, False],
    "when": ["n == 3 and tox <= 1", "tox >= 1", "n == 6 and tox <= 2 and has_next", "tox >= 2 and has_next"],
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(DESIGNS)), k=st.integers(2, 4), data=st.data())
def test_merged_and_full_verification_agree_on_mutated_protocols(name, k, data):
    """Whatever one rule is changed to, the two walks refuse, pass or fail the protocol alike."""
    mapping = copy.deepcopy(design_mapping(name, k))
    stage = data.draw(st.sampled_from(mapping["stages"]))
    rule = data.draw(st.sampled_from(stage["rules"]))
    key = data.draw(st.sampled_from(sorted(_MUTATIONS)))
    rule[key] = data.draw(st.sampled_from(_MUTATIONS[key]))
    if rule.get("action") == "stop":
        for extra in ("move", "cohort", "stage"):
            rule.pop(extra, None)
    else:
        rule.pop("mtd", None)
    try:
        protocol = protocol_from_mapping(mapping, "mutant")
    except ProtocolError:
        return  # the loader refused the mutant: nothing to compare
    try:
        full = verify(compile_protocol(protocol))
    except CompileError:
        with pytest.raises(CompileError):
            verify(protocol)
        return
    merged = verify(protocol)
    assert [(r.id, r.ok) for r in merged.results] == [(r.id, r.ok) for r in full.results]
    for a, b in zip(full.results, merged.results, strict=True):
        if not a.ok:
            assert _steps(a.counterexample) == _steps(b.counterexample)


def test_a_treatment_above_a_closed_dose_is_flagged_by_both_walks():
    """Regression (issue 13, checks without a scan): closing dose 1 and escalating still fails the closed-dose check.

    The merged walk answers it from the lowest closed dose it carries; the counterexample is the full graph's.
    """
    mapping = copy.deepcopy(design_mapping("3+3-deescalate", 3))
    rule = next(r for r in mapping["stages"][0]["rules"] if r["id"] == "esc-too-toxic-first")
    rule.update(action="treat", move="next")
    rule.pop("mtd")
    protocol = protocol_from_mapping(mapping, "unsafe")
    _agree(protocol)
    result = {r.id: r for r in verify(protocol).results}["no-return-to-closed-dose"]
    assert not result.ok and result.counterexample == "1NTT"
    assert result.detail == "treats dose 2 after a dose at or below it was closed"


def test_a_skipped_dose_is_flagged_by_both_walks():
    """Regression (issue 13, checks without a scan): a CRM without its restriction jumps from dose 1 to dose 4.

    The merged walk answers it from the highest dose treated it carries; both walks give the same history.
    """
    protocol = builtin_design("crm", 4, restrict=False, max_n=6)
    _agree(protocol)
    result = {r.id: r for r in verify(protocol).results}["no-skipped-dose"]
    assert not result.ok and result.counterexample == "1NNN"
    assert result.detail == "treats dose 4 with dose 3 never treated"
