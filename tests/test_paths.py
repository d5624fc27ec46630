"""Tests of escalation_rules.paths: the tree of future decisions."""

from __future__ import annotations

import pytest

from escalation_rules import EscalationRulesError, HistoryError, builtin_design, compile_protocol, load_protocol
from escalation_rules.paths import count_leaves, future_paths, paths_text


@pytest.mark.parametrize("k", [1, 2, 3])
def test_leaves_match_graph_paths(k):
    """From the start, the tree has as many leaves as the compiled graph has paths."""
    design = builtin_design("3+3-escalate-only", k)
    assert count_leaves(future_paths(design, "")) == compile_protocol(design).stats["paths"]


def test_tree_from_a_history_and_depth_limit():
    """From '1NNN' with depth 1 the tree has one child per DLT count of the next cohort."""
    tree = future_paths(builtin_design("3+3-deescalate", 3), "1NNN", max_depth=1)
    assert [c["step"] for c in tree["children"]] == ["2NNN", "2NNT", "2NTT", "2TTT"]
    assert all(not c["node"]["children"] for c in tree["children"])


def test_decision_points_branch_on_options():
    """At an NCT07117175 decision point the children are the options, in brackets."""
    tree = future_paths(load_protocol("spec/nct07117175"), "1N", max_depth=1)
    assert [c["step"] for c in tree["children"]] == ["[escalate]", "[terminate]"]


def test_incomplete_cohort_branches_on_the_rest():
    """An incomplete cohort branches on the outcomes of its remaining patients."""
    tree = future_paths(builtin_design("3+3-deescalate", 3), "1N", max_depth=1)
    assert [c["step"] for c in tree["children"]] == ["1NN", "1NT", "1TT"]


def test_text_rendering_names_decisions():
    """The text form shows each step and the decision it leads to."""
    text = paths_text(future_paths(builtin_design("3+3-escalate-only", 1), ""))
    assert text.splitlines()[0] == "(start) -> treat 3 at dose 1"
    assert "1NNN -> stop, MTD dose 1" in text


def test_size_limit_is_an_error_not_a_hang():
    """A tree larger than max_nodes is refused with advice."""
    with pytest.raises(EscalationRulesError, match="smaller --depth"):
        future_paths(builtin_design("3+3-deescalate", 5), "", max_nodes=50)


def test_impossible_history_is_refused():
    """paths refuses an impossible history like next does."""
    with pytest.raises(HistoryError):
        future_paths(builtin_design("3+3-deescalate", 3), "2NNN")


def test_cli_paths_with_truth_attaches_exact_probabilities(capsys):
    """paths --truth gives each node its probability; with fractions they stay exact and leaves sum to 1."""
    import json
    from fractions import Fraction

    from escalation_rules.cli import main

    assert main(["paths", "3+3-escalate-only", "--doses", "1", "--truth", "1/5", "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)

    def leaves(node):
        return [node] if not node["children"] else [x for c in node["children"] for x in leaves(c["node"])]

    assert sum(Fraction(leaf["probability"]) for leaf in leaves(tree)) == 1
    assert tree["children"][0]["node"]["probability"] == "64/125"  # (4/5)^3: no DLT in 3
