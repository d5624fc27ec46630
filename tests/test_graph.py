"""Tests of escalation_rules.graph: compilation and the build-time checks."""

from __future__ import annotations

import networkx as nx
import pytest

from escalation_rules import CompileError, builtin_design, compile_protocol, load_protocol
from escalation_rules.designs import design_mapping
from escalation_rules.protocol import protocol_from_mapping


def _variant(edit) -> dict:
    data = design_mapping("3+3-escalate-only", 3)
    edit(data)
    return data


def test_graph_is_frozen():
    """A compiled graph refuses mutation."""
    compiled = compile_protocol(builtin_design("3+3-escalate-only", 2))
    with pytest.raises(nx.NetworkXError):
        compiled.graph.add_node("x")


@pytest.mark.parametrize("k", range(1, 7))
def test_escalate_only_path_count_matches_closed_form(k):
    """3+3-escalate-only with K doses has 3·2^(K+1) − 5 terminal paths."""
    assert compile_protocol(builtin_design("3+3-escalate-only", k)).stats["paths"] == 3 * 2 ** (k + 1) - 5


def test_every_state_is_reachable_and_every_sink_is_a_stop():
    """Every node descends from the initial state; only stop states have no successor."""
    compiled = compile_protocol(load_protocol("spec/nct07117175"))
    graph = compiled.graph
    assert nx.descendants(graph, compiled.initial) | {compiled.initial} == set(graph)
    assert all((graph.out_degree(s) == 0) == (s.phase == "stop") for s in graph)
    assert nx.is_directed_acyclic_graph(graph)


def test_edges_carry_rule_guard_and_action():
    """Outcome edges name the DLT count, rule, guard and action; option edges the option and sign-off."""
    compiled = compile_protocol(load_protocol("spec/nct07117175"))
    kinds = {d["kind"] for _, _, d in compiled.graph.edges(data=True)}
    assert kinds == {"outcome", "option"}
    for _, _, data in compiled.graph.edges(data=True):
        assert data["rule"] and data["guard"] and data["action"] in ("treat", "stop", "decide")
        if data["kind"] == "option":
            assert set(data["signoff"]) == {"investigator", "sponsor"}


def test_incomplete_table_is_refused_with_rule_stage_and_history():
    """Dropping the 1/3 row leaves the table incomplete at a reachable state, named by a history."""
    def edit(data):
        data["stages"][0]["rules"] = [r for r in data["stages"][0]["rules"] if r["id"] != "esc-one-of-three"]

    with pytest.raises(CompileError) as err:
        compile_protocol(protocol_from_mapping(_variant(edit), "broken"))
    message = str(err.value)
    assert "no rule of stage 'escalation' applies" in message
    assert "1NNT" in message


def test_overlap_under_unique_hit_policy_is_refused_naming_both_rules():
    """Two rows that both apply under hit policy 'unique' are refused with both ids."""
    def edit(data):
        data["stages"][0]["rules"].append(dict(data["stages"][0]["rules"][0], id="dup"))

    with pytest.raises(CompileError, match="rules esc-zero-of-three, dup of stage 'escalation' all apply"):
        compile_protocol(protocol_from_mapping(_variant(edit), "broken"))


def test_first_hit_policy_resolves_overlap_in_order():
    """Under hit policy 'first' the earlier row wins and the later one is reported as never firing."""
    def edit(data):
        data["stages"][0]["hit_policy"] = "first"
        data["stages"][0]["rules"].append(dict(data["stages"][0]["rules"][0], id="dup"))

    compiled = compile_protocol(protocol_from_mapping(_variant(edit), "ok"))
    assert any("'dup'" in w for w in compiled.warnings)


def test_move_above_top_dose_is_refused():
    """A rule that escalates from the top dose is refused at build time."""
    def edit(data):
        for rule in data["stages"][0]["rules"]:
            if rule["id"] == "esc-zero-of-three":
                rule["when"] = "n == 3 and tox == 0"
        data["stages"][0]["rules"] = [r for r in data["stages"][0]["rules"] if r["id"] != "esc-zero-of-three-top"]

    with pytest.raises(CompileError, match="moves above the top dose"):
        compile_protocol(protocol_from_mapping(_variant(edit), "broken"))


def test_cohort_past_the_cap_is_refused():
    """A cap below what the rules need is refused, naming the rule and the places left."""
    def edit(data):
        data["protocol"]["cap"] = 7

    with pytest.raises(CompileError, match=r"treats 3 more with 1 places left under the cap of 7"):
        compile_protocol(protocol_from_mapping(_variant(edit), "broken"))


def test_path_to_gives_a_shortest_history():
    """path_to returns edges from the initial state to the given state."""
    compiled = compile_protocol(builtin_design("3+3-escalate-only", 2))
    stop = next(s for s in compiled.graph if s.phase == "stop" and s.mtd == 1 and s.counts[1] == (3, 0))
    edges = compiled.path_to(stop)
    assert [d["dlts"] for _, _, d in edges] == [0, 0]
