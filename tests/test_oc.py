"""Tests of escalation_rules.analysis: the merged state graph and exact operating characteristics."""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import product
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import CompileError, builtin_design, compile_protocol, future_paths, load_protocol
from escalation_rules._machine import env_of
from escalation_rules.analysis import (
    BOUNDED_FIGURES,
    leaf_probabilities,
    merged_graph,
    operating_characteristics,
    parse_truth,
    path_probabilities,
    reduce_protocol,
    resolve_policy,
)
from escalation_rules.analysis.policy import Policy
from escalation_rules.cli import main
from escalation_rules.designs import DESIGNS, design_mapping
from escalation_rules.errors import EscalationRulesError
from escalation_rules.protocol import Protocol, protocol_from_mapping, read_protocol_data

F = Fraction
NCT = Path(__file__).resolve().parent.parent / "spec" / "nct07117175"


# ------------------------------------------------------------------ reference


def _reference(protocol: Protocol, truth: list[Any], policy: Policy | None, target: Any,
               m: int = 3, mode: str = "policy") -> dict[str, Any]:
    """Operating characteristics by brute force over the full compiled graph (no merging).

    Every figure is a function of the stop state (its counts, enrolment and
    MTD), so the expectation over the full graph is a plain backward pass:
    a weighted sum at treat states, the policy's option (or the least or
    greatest value) at decision states; an entry that depends on the data is
    evaluated on the full state (not on merged facts).
    """
    compiled = compile_protocol(protocol)
    graph = compiled.graph
    k = len(protocol.doses)
    first_over = next((d for d, p in enumerate(truth) if p > target), k)
    true_mtd = first_over - 1 if first_over else None

    def terminal(s: Any) -> dict[str, Any]:
        label = s.rule or ""
        rule_id, _, option_id = label.partition("/")
        rule = protocol.rule(rule_id)
        outcome = next(o.outcome for o in rule.options if o.id == option_id) if option_id else rule.outcome
        above = sum(n for n, _ in s.counts[first_over:])
        values = {
            "expected_patients": s.enrolled,
            "expected_dlts": sum(t for _, t in s.counts),
            "expected_patients_above_mtd": above,
            "p_any_above_mtd": int(above >= 1),
            "p_overdose": int(above >= m),
            "p_select_above_mtd": int(s.mtd is not None and s.mtd >= first_over),
            "p_correct_selection": int(s.mtd == true_mtd),
            "p_stop_toxicity": int(s.mtd is None and outcome.close),
            "p_no_mtd": int(s.mtd is None),
        }
        for d in range(k + 1):
            values[f"mtd{d}"] = int((s.mtd is None and d == 0) or (s.mtd is not None and s.mtd + 1 == d))
        for d in range(k):
            values[f"pat{d}"] = s.counts[d][0]
            values[f"dlt{d}"] = s.counts[d][1]
        for n in range(protocol.cap + 1):
            values[f"size{n}"] = int(s.enrolled == n)
        return values

    value: dict[Any, dict[str, Any]] = {}
    for s in reversed(list(nx.topological_sort(graph))):
        out = list(graph.out_edges(s, data=True))
        if not out:
            value[s] = terminal(s)
        elif s.phase == "treat":
            p = truth[s.dose]
            acc: dict[str, Any] = {}
            for _, child, data in out:
                x, c = data["dlts"], data["cohort"]
                w = __import__("math").comb(c, x) * p**x * (1 - p) ** (c - x)
                for key, v in value[child].items():
                    acc[key] = acc.get(key, 0) + w * v
            value[s] = acc
        else:
            kids = {data["option"]: value[child] for _, child, data in out}
            if mode == "policy":
                assert policy is not None
                env = env_of(protocol, s.dose, s.counts, s.enrolled, s.closed)
                option = policy.option(s.rule, env)
                assert option is not None
                value[s] = kids[option]
            else:
                pick = min if mode == "min" else max
                value[s] = {key: pick(v[key] for v in kids.values()) for key in next(iter(kids.values()))}
    return value[compiled.initial]


def _check_against_reference(protocol: Protocol, truth: list[Any], policy: Any = "default") -> None:
    target = F(3, 10) if isinstance(truth[0], Fraction) else 0.3
    oc = operating_characteristics(protocol, truth, policy=policy, target=target)
    ref = _reference(protocol, truth, resolve_policy(protocol, policy), target)
    k = len(protocol.doses)
    assert list(oc.mtd) == [ref[f"mtd{d}"] for d in range(k + 1)]
    assert list(oc.patients_at_dose) == [ref[f"pat{d}"] for d in range(k)]
    assert list(oc.dlts_at_dose) == [ref[f"dlt{d}"] for d in range(k)]
    assert dict(oc.sample_size) == {n: ref[f"size{n}"] for n in range(protocol.cap + 1) if ref[f"size{n}"]}
    for name in BOUNDED_FIGURES:
        assert oc.figure(name) == ref[name], name
    low = _reference(protocol, truth, None, target, mode="min")
    high = _reference(protocol, truth, None, target, mode="max")
    for name in BOUNDED_FIGURES:
        assert oc.bounds[name] == (low[name], high[name]), name


# ------------------------------------------------------------------ exactness


@pytest.mark.parametrize("p", [F(0), F(1, 10), F(1, 4), F(1, 3), F(1, 2), F(9, 10), F(1)])
@pytest.mark.parametrize("design", ["3+3-escalate-only", "3+3-deescalate"])
def test_one_dose_pass_probability_is_exact(design, p):
    """With one dose, P(3+3 passes the dose) = (1−p)^3 + 3p(1−p)^5, exactly."""
    oc = operating_characteristics(builtin_design(design, 1), [p])
    assert oc.exact
    assert oc.mtd[1] == (1 - p) ** 3 + 3 * p * (1 - p) ** 5
    assert oc.mtd[0] == 1 - oc.mtd[1]


@pytest.mark.parametrize("k", range(1, 9))
def test_escalate_only_terminal_paths_follow_closed_form(k):
    """The merged graph of 3+3-escalate-only with K doses has 3·2^(K+1) − 5 root-to-stop paths."""
    assert reduce_protocol(builtin_design("3+3-escalate-only", k)).count_paths() == 3 * 2 ** (k + 1) - 5


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_merging_keeps_every_path_of_the_compiled_graph(design, k):
    """Merging states with identical futures keeps the compiled graph's number of paths (built-in designs)."""
    protocol = builtin_design(design, k)
    assert reduce_protocol(protocol).count_paths() == compile_protocol(protocol).stats["paths"]


def test_merging_keeps_every_path_of_nct07117175(nct):
    """The merged graph of NCT07117175 has as many paths as its compiled graph, with far fewer nodes."""
    merged = reduce_protocol(nct)
    compiled = compile_protocol(nct)
    assert merged.count_paths() == compiled.stats["paths"]
    assert merged.stats["nodes"] < compiled.stats["states"]
    assert set(merged.decision_rules()) == {r for s in compiled.graph if s.phase == "decide" for r in [s.rule]}


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exact_figures_equal_brute_force_over_the_compiled_graph(design, k):
    """Every figure and bound equals, as a fraction, a brute-force pass over the full compiled graph."""
    truth = [F(1, 20), F(1, 5), F(1, 3), F(1, 2)][:k]
    _check_against_reference(builtin_design(design, k), truth)


@pytest.mark.parametrize("policy", ["default", "most-aggressive", "most-cautious"])
def test_nct07117175_figures_equal_brute_force_under_each_policy(nct, policy):
    """NCT07117175's figures (and bounds over every policy) equal a brute-force pass, under each built-in policy."""
    _check_against_reference(nct, [F(1, 20), F(1, 10), F(1, 4), F(2, 5)], policy)


def test_nct07117175_float_figures_agree_with_brute_force(nct):
    """With float truths the figures agree with the brute-force pass to 1e-12."""
    truth = [0.05, 0.12, 0.3, 0.45]
    oc = operating_characteristics(nct, truth)
    ref = _reference(nct, truth, resolve_policy(nct), 0.3)
    assert oc.mtd == pytest.approx([ref[f"mtd{d}"] for d in range(5)], abs=1e-12)
    assert oc.expected_patients == pytest.approx(ref["expected_patients"], abs=1e-12)


@pytest.mark.parametrize("k", [5, 8, 12])
def test_probabilities_sum_to_one(k):
    """Selection and sample-size probabilities sum to 1 within 1e-12; per-dose figures sum to the totals."""
    oc = operating_characteristics(builtin_design("3+3-deescalate", k), [0.02 + 0.45 * d / k for d in range(k)])
    assert abs(sum(oc.mtd) - 1) < 1e-12
    assert abs(sum(q for _, q in oc.sample_size) - 1) < 1e-12
    assert abs(sum(oc.patients_at_dose) - oc.expected_patients) < 1e-9
    assert abs(sum(oc.dlts_at_dose) - oc.expected_dlts) < 1e-9
    assert abs(sum(n * q for n, q in oc.sample_size) - oc.expected_patients) < 1e-9


def test_exact_probabilities_sum_to_exactly_one(nct):
    """With fractions, the selection probabilities of NCT07117175 sum to exactly 1 under every policy."""
    for policy in ("default", "most-aggressive", "most-cautious"):
        oc = operating_characteristics(nct, [F(1, 10), F(1, 5), F(1, 3), F(1, 2)], policy=policy)
        assert sum(oc.mtd) == 1
        assert sum(q for _, q in oc.sample_size) == 1


@pytest.mark.parametrize("policy", ["default", "most-aggressive", "most-cautious"])
def test_every_policy_lies_within_the_bounds(nct, policy):
    """Each figure under a built-in policy lies between its least and greatest value over every policy."""
    oc = operating_characteristics(nct, [0.05, 0.1, 0.25, 0.4], policy=policy)
    for name in BOUNDED_FIGURES:
        low, high = oc.bounds[name]
        assert low - 1e-12 <= oc.figure(name) <= high + 1e-12, name


def test_bounds_cover_every_stationary_policy(nct):
    """Every assignment of an option to each decision rule gives figures within the bounds."""
    rules = [r for s in nct.stages for r in s.rules if r.action == "decide"]
    truth = [F(1, 10), F(1, 5), F(3, 10), F(1, 2)]
    oc = operating_characteristics(nct, truth)
    for combo in product(*[[o.id for o in r.options] for r in rules]):
        other = operating_characteristics(nct, truth, policy=dict(zip([r.id for r in rules], combo, strict=True)),
                                          bounds=False)
        for name in BOUNDED_FIGURES:
            assert oc.bounds[name][0] <= other.figure(name) <= oc.bounds[name][1]


def test_designs_without_decisions_have_equal_bounds():
    """A design with no decision point has least = greatest = the value of each figure."""
    oc = operating_characteristics(builtin_design("3+3-six-at-top", 3), [F(1, 10), F(1, 5), F(3, 10)])
    assert all(oc.bounds[n] == (oc.figure(n), oc.figure(n)) for n in BOUNDED_FIGURES)


def test_true_mtd_and_overdose_follow_the_target():
    """The true MTD is the dose below the first above the target; nothing is above it when none exceeds."""
    design = builtin_design("3+3-deescalate", 3)
    assert operating_characteristics(design, [0.1, 0.2, 0.3], target=0.25).true_mtd == 2
    low = operating_characteristics(design, [0.1, 0.2, 0.3], target=0.3)
    assert low.true_mtd == 3 and low.p_any_above_mtd == 0 and low.p_select_above_mtd == 0
    high = operating_characteristics(design, [0.4, 0.5, 0.6], target=0.3)
    assert high.true_mtd is None and high.p_any_above_mtd == 1 and high.p_correct_selection == high.mtd[0]


def test_overdose_threshold_changes_only_the_tail():
    """Raising the overdose threshold lowers p_overdose but leaves P(any above) unchanged."""
    design = builtin_design("3+3-deescalate", 4)
    truth = [0.1, 0.2, 0.45, 0.6]
    three = operating_characteristics(design, truth, target=0.3, overdose_patients=3)
    six = operating_characteristics(design, truth, target=0.3, overdose_patients=6)
    assert six.p_overdose < three.p_overdose == three.p_any_above_mtd == six.p_any_above_mtd


def test_twenty_doses_are_explored_in_polynomially_many_classes():
    """3+3-deescalate with 20 doses has a few hundred classes of states (the compiled graph would have millions)."""
    graph = reduce_protocol(builtin_design("3+3-deescalate", 20))
    assert graph.stats["nodes"] < 1000
    oc = operating_characteristics(graph, [0.01 * (d + 1) for d in range(20)])
    assert abs(sum(oc.mtd) - 1) < 1e-12


def test_merged_graph_is_kept_per_protocol_object():
    """The merged graph of a protocol object is built once and reused."""
    design = builtin_design("3+3-deescalate", 3)
    assert merged_graph(design) is merged_graph(design)


# ------------------------------------------------------------------ build checks


def _variant(edit: Any, name: str = "3+3-escalate-only", k: int = 3) -> Protocol:
    data = design_mapping(name, k)
    edit(data)
    return protocol_from_mapping(data, "broken")


def _drop_one_of_three(data: dict[str, Any]) -> None:
    data["stages"][0]["rules"] = [r for r in data["stages"][0]["rules"] if r["id"] != "esc-one-of-three"]


def _duplicate_first_row(data: dict[str, Any]) -> None:
    data["stages"][0]["rules"].append(dict(data["stages"][0]["rules"][0], id="dup"))


def _escalate_from_top(data: dict[str, Any]) -> None:
    for rule in data["stages"][0]["rules"]:
        if rule["id"] == "esc-zero-of-three":
            rule["when"] = "n == 3 and tox == 0"
    data["stages"][0]["rules"] = [r for r in data["stages"][0]["rules"] if r["id"] != "esc-zero-of-three-top"]


def _cap(cap: int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["protocol"]["cap"] = cap

    return edit


@pytest.mark.parametrize(("edit", "design", "message"), [
    (_drop_one_of_three, "3+3-escalate-only", "no rule of stage 'escalation' applies"),
    (_duplicate_first_row, "3+3-escalate-only", "rules esc-zero-of-three, dup of stage 'escalation' all apply"),
    (_escalate_from_top, "3+3-escalate-only", "moves above the top dose"),
    (_cap(7), "3+3-escalate-only", "treats 3 more with 1 places left under the cap of 7"),
    (_cap(17), "3+3-deescalate", "under the cap of 17"),
])
def test_merged_exploration_refuses_what_the_compiler_refuses(edit, design, message):
    """The merged exploration refuses a broken protocol with the compiler's message (incl. a cap passed only later)."""
    protocol = _variant(edit, design)
    with pytest.raises(CompileError, match=message):
        compile_protocol(protocol)
    with pytest.raises(CompileError, match=message) as err:
        reduce_protocol(protocol)
    assert "after history '" in str(err.value)


# ------------------------------------------------------------------ inputs and policies


def test_truth_of_the_wrong_length_is_refused(nct):
    """A truth vector must give one probability per dose, provisional doses included."""
    with pytest.raises(EscalationRulesError, match=r"has 4 doses .* expected 4 probabilities \(got 3\)"):
        operating_characteristics(nct, [0.1, 0.2, 0.3])


def test_truth_outside_zero_one_is_refused():
    """Probabilities outside [0, 1] are refused, naming the entry."""
    with pytest.raises(EscalationRulesError, match=r"truth\[1\]: expected a probability"):
        operating_characteristics(builtin_design("3+3-deescalate", 2), [0.1, 1.5])


def test_parse_truth_reads_decimals_and_fractions():
    """--truth reads decimals as floats and, when any entry is a fraction, every entry exactly."""
    assert parse_truth("0.1, 0.2") == (0.1, 0.2)
    assert parse_truth("1/10,0.2,1") == (F(1, 10), F(1, 5), F(1))
    for bad in ("", "0.1,,0.2", "a", "1/0", "-0.1"):
        with pytest.raises(EscalationRulesError, match="--truth"):
            parse_truth(bad)


def test_policy_without_an_option_for_a_reachable_decision_is_refused(nct):
    """A protocol whose default policy leaves a reachable decision open is refused, naming the rule."""
    data = read_protocol_data(NCT)[0]
    del data["policy"]["default"]["top-pass"]
    protocol = protocol_from_mapping(data, "no-default")
    with pytest.raises(EscalationRulesError, match="no option for decision rule 'top-pass'"):
        operating_characteristics(protocol, [0.05, 0.1, 0.2, 0.35])


def test_policy_files_in_toml_and_json_are_read(nct, tmp_path):
    """A TOML or JSON policy file maps rule ids to option ids; unlisted rules keep the default."""
    toml = tmp_path / "policy.toml"
    toml.write_text('top-pass = "add-group"\n', encoding="utf-8")
    js = tmp_path / "policy.json"
    js.write_text(json.dumps({"top-pass": "add-group"}), encoding="utf-8")
    for path in (toml, js):
        policy = resolve_policy(nct, str(path))
        assert policy.choices["top-pass"] == "add-group"
        assert policy.choices["at-pass-one"] == nct.default_policy["at-pass-one"]


@pytest.mark.parametrize(("mapping", "message"), [
    ({"no-such-rule": "x"}, "not a decision rule"),
    ({"one-of-three": "x"}, "not a decision rule"),
    ({"top-pass": "grow"}, "unknown option 'grow'"),
])
def test_bad_policies_are_refused(nct, mapping, message):
    """A policy naming a rule that is not a decision point, or an option not offered, is refused."""
    with pytest.raises(EscalationRulesError, match=message):
        resolve_policy(nct, mapping)


def test_builtin_policies_rank_options_by_aggressiveness(nct):
    """most-aggressive escalates wherever it can; most-cautious stops wherever it can."""
    aggressive = resolve_policy(nct, "most-aggressive").choices
    cautious = resolve_policy(nct, "most-cautious").choices
    assert aggressive["pass-to-next"] == "escalate" and aggressive["top-pass"] == "add-group"
    assert cautious["pass-to-next"] == "terminate" and cautious["too-toxic-second"] == "terminate"


# ------------------------------------------------------------------ path probabilities


def test_path_probabilities_of_leaves_sum_to_one():
    """Without decision points, the leaves of the tree of futures have probabilities summing to exactly 1."""
    tree = path_probabilities(future_paths(builtin_design("3+3-deescalate", 2)), [F(1, 10), F(1, 3)])
    leaves = leaf_probabilities(tree)
    assert len(leaves) == 34
    assert sum(leaves.values()) == 1


def test_path_probabilities_match_the_selection_probabilities():
    """Summing leaf probabilities by selected MTD gives the exact selection probabilities."""
    design = builtin_design("3+3-escalate-only", 2)
    truth = [F(1, 6), F(2, 5)]
    tree = path_probabilities(future_paths(design), truth)
    by_mtd: dict[Any, Fraction] = {}

    def walk(node: dict[str, Any]) -> None:
        if not node["children"]:
            mtd = node["decision"]["mtd"] or 0
            by_mtd[mtd] = by_mtd.get(mtd, F(0)) + node["probability"]
        for child in node["children"]:
            walk(child["node"])

    walk(tree)
    assert [by_mtd.get(d, 0) for d in range(3)] == list(operating_characteristics(design, truth).mtd)


def test_path_probabilities_after_a_history_and_as_json(nct):
    """From a partial history with decisions, probabilities are conditional and print as fraction strings."""
    tree = path_probabilities(future_paths(nct, "1N", max_depth=2), [F(1, 10)] * 4, as_json=True)
    assert tree["probability"] == "1"
    assert {c["step"] for c in tree["children"]} == {"[escalate]", "[terminate]"}
    assert all(c["step_probability"] == "1" for c in tree["children"])
    json.dumps(tree)


def test_path_probabilities_refuse_a_short_truth():
    """A truth covering fewer doses than the tree treats at is refused."""
    with pytest.raises(EscalationRulesError, match="truth: gives 1 doses"):
        path_probabilities(future_paths(builtin_design("3+3-escalate-only", 2)), [0.1])


# ------------------------------------------------------------------ command line


def test_cli_oc_json_has_the_contract_fields(capsys):
    """oc --json prints mtd (K+1), expected patients and DLTs, and per-dose lists of K."""
    assert main(["oc", "3+3-deescalate", "--truth", "0.05,0.1,0.2,0.3,0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["mtd"]) == 6 and len(data["patients_at_dose"]) == 5 and len(data["dlts_at_dose"]) == 5
    assert isinstance(data["expected_patients"], float) and isinstance(data["expected_dlts"], float)
    assert abs(sum(data["mtd"]) - 1) < 1e-12
    assert set(data["bounds"]) == set(BOUNDED_FIGURES)


def test_cli_oc_prints_exact_fractions_for_fraction_truths(capsys):
    """oc --truth 1/10,1/5,1/3 prints every figure as an exact fraction string."""
    assert main(["oc", "3+3-escalate-only", "--truth", "1/10,1/5,1/3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exact"] is True
    assert sum(Fraction(x) for x in data["mtd"]) == 1


def test_cli_oc_text_and_policy_for_nct(capsys, in_repo):
    """oc on the shipped protocol prints a table with the range of each figure over every policy."""
    assert main(["oc", "spec/nct07117175", "--truth", "0.05,0.1,0.2,0.35", "--policy", "most-aggressive"]) == 0
    out = capsys.readouterr().out
    assert "policy most-aggressive" in out and "greatest" in out and "P(3 or more patients" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["oc", "3+3-deescalate", "--truth", "0.1,0.2", "--doses", "3"], "--doses 3 but --truth gives 2"),
    (["oc", "spec/nct07117175", "--truth", "0.1,0.2"], "expected 4 probabilities"),
    (["oc", "spec/nct07117175", "--truth", "0.1,0.2,0.3,0.4", "--policy", "nope"], "neither a built-in policy"),
    (["oc", "3+3-deescalate", "--truth", "0.1,x"], "entry 2"),
    (["oc", "3+3-deescalate", "--truth", "0.1", "--target", "2"], "--target"),
])
def test_cli_oc_refuses_bad_input_with_one_line(capsys, in_repo, argv, message):
    """Bad input exits 2 with a one-line message on stderr and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ properties

_probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(design=st.sampled_from(sorted(DESIGNS)), truth=st.lists(_probabilities, min_size=1, max_size=6),
       target=st.floats(min_value=0.05, max_value=0.6))
def test_property_probabilities_sum_to_one_and_values_lie_within_bounds(design, truth, target):
    """For any truth and target, selection and sample-size probabilities sum to 1; every figure lies in its bounds."""
    oc = operating_characteristics(builtin_design(design, len(truth)), truth, target=target)
    assert abs(sum(oc.mtd) - 1) < 1e-12
    assert abs(sum(q for _, q in oc.sample_size) - 1) < 1e-12
    for name in BOUNDED_FIGURES:
        low, high = oc.bounds[name]
        assert low - 1e-12 <= oc.figure(name) <= high + 1e-12


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(st.fractions(min_value=0, max_value=1, max_denominator=20), min_size=4, max_size=4),
       policy=st.sampled_from(["default", "most-aggressive", "most-cautious"]))
def test_property_nct07117175_exact_probabilities_sum_to_exactly_one(nct, truth, policy):
    """For any fractional truth and built-in policy, NCT07117175's selection probabilities sum to exactly 1."""
    oc = operating_characteristics(nct, truth, policy=policy)
    assert oc.exact and sum(oc.mtd) == 1
    assert oc.bounds["p_overdose"][0] <= oc.p_overdose <= oc.bounds["p_overdose"][1]


def test_cli_oc_negative_truth_says_probabilities_are_from_0_to_1(capsys):
    """--truth -0.1,0.2 is refused with the probability range, not argparse's 'expected one argument'."""
    assert main(["oc", "3+3-deescalate", "--truth", "-0.1,0.2"]) == 2
    err = capsys.readouterr().err
    assert "expected a probability from 0 to 1 (got '-0.1')" in err and "expected one argument" not in err


def test_cli_oc_warns_once_when_truth_is_not_monotone(capsys):
    """A decreasing truth is allowed, with one warning line on stderr."""
    assert main(["oc", "3+3-deescalate", "--truth", "0.1,0.3,0.2"]) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--truth is not increasing (dose 3: 0.2 after 0.3)" in err
    assert main(["oc", "3+3-deescalate", "--truth", "0.1,0.2,0.3"]) == 0
    assert capsys.readouterr().err == ""


def test_paths_text_rounds_probabilities_and_json_keeps_them(capsys):
    """paths --truth prints probabilities to 6 significant digits; --json keeps full precision."""
    assert main(["paths", "3+3-deescalate", "--doses", "2", "--truth", "0.1,0.3"]) == 0
    out = capsys.readouterr().out
    assert "[p = 0.729]" in out and "0.7290000000000001" not in out
    assert main(["paths", "3+3-deescalate", "--doses", "2", "--truth", "0.1,0.3", "--json"]) == 0
    assert "0.7290000000000001" in capsys.readouterr().out


# ------------------------------------------------------------------ policies that depend on the data

GUARDED_TOML = """
fill-complete = [
  { when = "tox <= 1", option = "declare" },
  { option = "no-mtd" },
]
top-pass = [{ when = "n == 3", option = "add-group" }, { when = "n == 6", option = "fill" }, { option = "terminate" }]
"""


def test_policy_files_may_hold_guarded_cases(nct, tmp_path):
    """A TOML or JSON policy file may give a rule a list of {when, option} cases; OC follow them exactly."""
    toml = tmp_path / "guarded.toml"
    toml.write_text(GUARDED_TOML, encoding="utf-8")
    js = tmp_path / "guarded.json"
    js.write_text(json.dumps({"fill-complete": [{"when": "tox <= 1", "option": "declare"}, {"option": "no-mtd"}],
                              "top-pass": [{"when": "n == 3", "option": "add-group"},
                                           {"when": "n == 6", "option": "fill"}, {"option": "terminate"}]}),
                  encoding="utf-8")
    truth = [F(1, 20), F(1, 10), F(1, 4), F(2, 5)]
    figures = []
    for path in (toml, js):
        policy = resolve_policy(nct, str(path))
        assert str(policy.choices["fill-complete"]) == "declare when tox <= 1, otherwise no-mtd"
        assert policy.choices["at-pass-one"] == "escalate"
        figures.append(operating_characteristics(nct, truth, policy=str(path), bounds=False).mtd)
    assert figures[0] == figures[1]
    ref = _reference(nct, truth, resolve_policy(nct, str(toml)), F(3, 10))
    assert list(figures[0]) == [ref[f"mtd{d}"] for d in range(5)]


@pytest.mark.parametrize(("text", "expected"), [
    ('fill-complete = [{ when = "dlts <= 1", option = "declare" }, { option = "no-mtd" }]\n',
     "fill-complete[0].when: unknown name 'dlts'"),
    ('fill-complete = [{ when = "tox <= 1", option = "accept" }, { option = "no-mtd" }]\n',
     "fill-complete[0].option: unknown option 'accept' (offered: declare, no-mtd)"),
    ('fill-complete = [{ when = "tox <= 1", option = "declare" }]\n',
     "fill-complete: the cases leave out some states (none applies when tox = 2)"),
])
def test_bad_guarded_cases_in_a_policy_file_name_the_file_and_key_path(nct, tmp_path, capsys, text, expected):
    """A policy file's cases are checked when it is read: one line naming the file and the key path."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EscalationRulesError) as err:
        resolve_policy(nct, str(path))
    assert str(err.value).startswith(f"{path}: {expected}")
    assert main(["oc", str(NCT), "--truth", "0.1,0.2,0.3,0.4", "--policy", str(path)]) == 2
    assert capsys.readouterr().err.strip().endswith(str(err.value))


def test_merged_graph_records_the_guards_a_policy_reads(nct):
    """Decide nodes of a rule whose entry depends on the data record each guard's truth; others record none."""
    policy = resolve_policy(nct)
    graph = merged_graph(nct, policy.guards())
    fill_complete = [n for n in graph.nodes if n.kind == 1 and n.rule == "fill-complete"]
    assert {n.facts for n in fill_complete} == {(("3 * tox <= n", True),), (("3 * tox <= n", False),)}
    assert all(not n.facts for n in graph.nodes if n.rule != "fill-complete")
    plain = merged_graph(nct)
    assert merged_graph(plain, policy.guards()) is graph  # a graph that does not watch them is explored again
    assert operating_characteristics(plain, [0.1] * 4).mtd == operating_characteristics(graph, [0.1] * 4).mtd


def test_first_dose_already_toxic_rarely_declares_dose_1(nct):
    """Scenario 'first dose already toxic' (0.40 at dose 1): dose 1 is declared the MTD with P = 0.2399, not 0.65."""
    scenario = next(s for s in nct.extra["scenarios"] if s["name"] == "first dose already toxic")
    truth = [F(t) for t in scenario["truth"]]
    assert truth[0] == F(2, 5)
    oc = operating_characteristics(nct, truth)
    assert oc.mtd[1] == F(95959649606188203, 400000000000000000)
    assert oc.mtd[1] < F(35, 100)
    always = operating_characteristics(nct, truth, policy={"fill-complete": "declare"})
    assert oc.mtd[1] < always.mtd[1]


_GUARDED_RULES = ("fill-complete", "fill-next", "fill-too-toxic", "fill-next-lowest", "top-pass", "pass-to-next")


@st.composite
def _guarded_policies(draw: Any) -> dict[str, Any]:
    """Policies whose entries switch option at a random DLT-rate threshold (``b * tox <= a * n``)."""
    protocol = _NCT_FOR_PROPERTIES
    policy: dict[str, Any] = {}
    for rule_id in draw(st.sets(st.sampled_from(_GUARDED_RULES), min_size=1)):
        offered = [o.id for o in protocol.rule(rule_id).options]
        a, b = draw(st.integers(0, 3)), draw(st.integers(1, 4))
        low, high = draw(st.sampled_from(offered)), draw(st.sampled_from(offered))
        policy[rule_id] = [{"when": f"{b} * tox <= {a} * n", "option": low}, {"option": high}]
    return policy


_NCT_FOR_PROPERTIES = load_protocol(NCT)


@settings(max_examples=8, deadline=None)
@given(policy=_guarded_policies())
def test_guarded_policy_figures_equal_brute_force_on_the_full_graph(policy):
    """Invariant: under any guarded policy, the merged-graph OC equal a brute-force pass that evaluates the
    guards on every full state (merging never mixes states in which the policy chooses differently)."""
    nct = _NCT_FOR_PROPERTIES
    truth = [F(1, 10), F(1, 5), F(3, 10), F(2, 5)]
    oc = operating_characteristics(nct, truth, policy=policy, bounds=False)
    ref = _reference(nct, truth, resolve_policy(nct, policy), F(3, 10))
    assert list(oc.mtd) == [ref[f"mtd{d}"] for d in range(5)]
    assert list(oc.patients_at_dose) == [ref[f"pat{d}"] for d in range(4)]
    for name in BOUNDED_FIGURES:
        assert oc.figure(name) == ref[name], name
