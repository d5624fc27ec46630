"""The level-by-level programme of the interval designs gives the generic programme's figures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import builtin_design, operating_characteristics
from escalation_rules.analysis._interval_oc import interval_plan
from escalation_rules.analysis.oc import merged_graph
from escalation_rules.cli import main
from escalation_rules.designs import design_mapping
from escalation_rules.protocol import protocol_from_mapping


def _differences(fast: Any, generic: Any, path: str = "") -> list[str]:
    """Every place where two OC contracts differ by more than 1e-12 (or in shape, or in a non-number)."""
    if isinstance(fast, dict):
        assert fast.keys() == generic.keys(), path
        return [d for key in fast if key != "states" for d in _differences(fast[key], generic[key], f"{path}.{key}")]
    if isinstance(fast, list):
        assert len(fast) == len(generic), path
        pairs = enumerate(zip(fast, generic, strict=True))
        return [d for i, (a, b) in pairs for d in _differences(a, b, f"{path}[{i}]")]
    if isinstance(fast, float) and isinstance(generic, float):
        return [] if abs(fast - generic) <= 1e-12 else [f"{path}: {fast!r} != {generic!r}"]
    return [] if fast == generic and type(fast) is type(generic) else [f"{path}: {fast!r} != {generic!r}"]


@st.composite
def _designs(draw: st.DrawFn) -> tuple[str, int, dict[str, Any]]:
    name = draw(st.sampled_from(["boin", "keyboard", "mtpi2", "i3+3"]))
    doses = draw(st.integers(2, 5))
    cohort = draw(st.integers(1, 3))
    params: dict[str, Any] = {"target": draw(st.sampled_from([0.2, 0.25, 0.3, 0.35])), "cohort": cohort,
                              "max_n": cohort * draw(st.integers(4, 12 if cohort == 1 else 24 // cohort))}
    params.update(draw(st.fixed_dictionaries({}, optional={
        "n_earlystop": st.integers(3, 12), "extrasafe": st.booleans(), "start": st.integers(1, doses),
        "cutoff_eli": st.sampled_from([0.8, 0.9, 0.95])})))
    return name, doses, params


@settings(max_examples=60, deadline=None)
@given(_designs(), st.data())
def test_level_by_level_oc_equals_the_generic_programme(case: tuple[str, int, dict[str, Any]],
                                                        data: st.DataObject) -> None:
    """Invariant: for random designs, parameters and truths, every figure of the fast programme is the generic one."""
    name, doses, params = case
    protocol = builtin_design(name, doses, **params)
    assert interval_plan(protocol) is not None
    truth = data.draw(st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0])),
                               min_size=doses, max_size=doses))
    target = data.draw(st.sampled_from([0.2, 0.3, 0.5]))
    overdose = data.draw(st.integers(1, 7))
    fast = operating_characteristics(protocol, truth, target=target, overdose_patients=overdose)
    generic = operating_characteristics(merged_graph(protocol), truth, target=target, overdose_patients=overdose)
    assert _differences(fast.to_dict(), generic.to_dict()) == []
    assert abs(sum(fast.mtd) - 1) < 1e-9


@pytest.mark.parametrize("params", [{"titration": True}, {"stop_n_at_dose": 9}])
def test_modifiers_take_the_generic_programme(params: dict[str, Any]) -> None:
    """The titration start and stop_n_at_dose are not in the fast programme: the generic one answers."""
    protocol = builtin_design("boin", 3, max_n=12, **params)
    assert interval_plan(protocol) is None
    oc = operating_characteristics(protocol, [0.1, 0.3, 0.5])
    assert oc.states == merged_graph(protocol).stats["nodes"]


def test_an_edited_design_takes_the_generic_programme() -> None:
    """A protocol whose rules differ from the built-in design's (same metadata) is not mistaken for it."""
    data = design_mapping("boin", 3, {"target": 0.3, "max_n": 9})
    for rule in data["stages"][0]["rules"]:
        if rule["id"] == "iv-escalate":
            rule["when"] = "tox <= deescalate_min and has_next and not next_closed"
    assert interval_plan(protocol_from_mapping(data, "edited")) is None
    assert interval_plan(builtin_design("3+3-deescalate", 3)) is None


def test_exact_fractions_take_the_generic_programme() -> None:
    from fractions import Fraction

    oc = operating_characteristics(builtin_design("i3+3", 3, max_n=9), [Fraction(1, 10)] * 3)
    assert oc.exact and isinstance(oc.mtd[0], Fraction)


def test_cli_oc_json_contract_on_the_fast_programme(capsys: pytest.CaptureFixture[str]) -> None:
    """``oc --json`` prints the same contract (keys and values) on either programme."""
    args = ["oc", "boin", "--doses", "5", "--set", "target=0.3", "--set", "max_n=18",
            "--truth", "0.05,0.1,0.2,0.35,0.5", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    protocol = builtin_design("boin", 5, target=0.3, max_n=18)
    generic = operating_characteristics(merged_graph(protocol), [0.05, 0.1, 0.2, 0.35, 0.5]).to_dict()
    assert _differences(printed, json.loads(json.dumps(generic))) == []


@pytest.mark.parametrize(("doses", "largest"), [(5, 120), (6, 60), (7, 36), (8, 24)])
def test_packed_state_limits_as_documented(doses: int, largest: int) -> None:
    """docs/explanation/designs.md: with cohorts of 3 the packed state allows max_n up to 120, 60, 36, 24."""
    assert interval_plan(builtin_design("boin", doses, max_n=largest)) is not None
    if largest < 120:
        assert interval_plan(builtin_design("boin", doses, max_n=largest + 3)) is None
