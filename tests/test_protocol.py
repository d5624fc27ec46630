"""Tests of the protocol model and its TOML loader: key paths, folder merge, refusals, fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, NCT
from escalation_rules import Protocol, builtin_design, compile_protocol, load_protocol, verify
from escalation_rules.errors import CompileError, EscalationRulesError, ProtocolError
from escalation_rules.guards import parse_guard
from escalation_rules.protocol import (
    GUARD_NAMES,
    ConditionalChoice,
    protocol_from_mapping,
    read_policy_entry,
    read_protocol_data,
)

WriteToml = Callable[..., Path]

HEAD = """
roles = ["investigator", "sponsor"]

[protocol]
id = "mini"
cap = 6

[[doses]]
id = "d1"
label = "one"

[[doses]]
id = "d2"
label = "two"
"""

STAGES = """
[[stages]]
id = "escalation"
cohort = 3
doses = ["d1", "d2"]

[[stages.rules]]
id = "go"
when = "tox == 0 and has_next"
action = "treat"
move = "next"
clause = "c1"
paraphrase = "escalate"

[[stages.rules]]
id = "top"
when = "tox == 0 and not has_next"
action = "stop"
mtd = "current"
clause = "c1"
paraphrase = "top passed"

[[stages.rules]]
id = "toxic"
when = "tox >= 1"
action = "stop"
mtd = "previous"
close = true
clause = "c2"
paraphrase = "too toxic"
"""

MINIMAL = HEAD + STAGES


def _problems(path: Path) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        load_protocol(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# ------------------------------------------------------------ the shipped protocol


def test_nct_ladder_and_cap(nct: Protocol) -> None:
    """The NCT07117175 protocol has three planned doses, one provisional, and 18 places."""
    assert [d.label for d in nct.doses[:3]] == [
        "1×10^7 CAR-NK cells/kg", "2×10^7 CAR-NK cells/kg", "5×10^7 CAR-NK cells/kg"]
    assert [d.provisional for d in nct.doses] == [False, False, False, True]
    assert nct.doses[1].amount == 2e7
    assert nct.cap == 18
    assert (nct.start_dose, nct.start_stage) == ("d1", "titration")


def test_nct_roles_signoff_and_early_termination(nct: Protocol) -> None:
    """Escalations and early termination need the investigator and the sponsor."""
    assert nct.roles == ("investigator", "sponsor")
    assert nct.escalation_signoff == ("investigator", "sponsor")
    assert nct.early_termination is not None
    assert nct.early_termination.signoff == ("investigator", "sponsor")
    assert nct.early_termination.clause == "Full description ¶4"


def test_nct_stages_and_rules(nct: Protocol) -> None:
    """Stages keep their kind, cohort, hit policy, window and rules in file order."""
    assert [(s.id, s.kind, s.cohort, s.hit_policy) for s in nct.stages] == [
        ("titration", "titration", 1, "unique"), ("three-plus-three", "escalation", 3, "first"),
        ("fill", "fill", 3, "first")]
    assert nct.stage("titration").window is not None
    rule = nct.rule("top-pass")
    assert rule.action == "decide"
    assert [o.id for o in rule.options] == ["add-group", "fill", "terminate"]
    cohort = rule.options[1].outcome.cohort
    assert cohort is not None and cohort.text == "min(3, remaining)"
    assert rule.options[0].signoff == ("investigator", "sponsor")  # inherited from the rule
    assert nct.default_policy["top-pass"] == "fill"


def test_nct_remaining_subjects_are_reviewed_cohort_by_cohort(nct: Protocol) -> None:
    """After each cohort of the remaining subjects a joint decision; above 1 DLT in 3 a safety rule offers stopping."""
    fill = nct.stage("fill")
    assert [r.id for r in fill.rules] == ["fill-complete", "fill-too-toxic", "fill-too-toxic-lowest", "fill-next",
                                          "fill-next-lowest"]
    assert all(r.action == "decide" and r.signoff == ("investigator", "sponsor") for r in fill.rules)
    assert fill.window is not None and (fill.window.min_days, fill.window.max_days) == (28, 28)
    assert [o.id for o in nct.rule("fill-too-toxic").options] == ["terminate", "reduce", "continue"]
    assert [o.id for o in nct.rule("fill-next").options] == ["continue", "reduce", "terminate"]
    assert [o.id for o in nct.rule("fill-next-lowest").options] == ["continue", "terminate"]
    assert nct.rule("fill-too-toxic").when.evaluate({"n": 4, "tox": 2, "has_prev": True})
    assert not nct.rule("fill-too-toxic").when.evaluate({"n": 6, "tox": 2, "has_prev": True})
    assert all("our reading" in r.paraphrase for r in fill.rules[1:])


def test_nct_default_declares_the_mtd_only_at_a_dlt_rate_of_at_most_one_in_three(nct: Protocol) -> None:
    """The default at fill-complete depends on the data: declare at most 1 DLT in 3, else no MTD."""
    entry = nct.default_policy["fill-complete"]
    assert isinstance(entry, ConditionalChoice)
    assert str(entry) == "declare when 3 * tox <= n, otherwise no-mtd"
    assert [entry.choose(lambda g, e=env: g.evaluate(e)) for env in (
        {"n": 9, "tox": 3}, {"n": 9, "tox": 4}, {"n": 17, "tox": 5}, {"n": 17, "tox": 6})] == [
        "declare", "no-mtd", "declare", "no-mtd"]


def test_lookups_raise_key_error_for_unknown_ids(nct: Protocol) -> None:
    """``stage``, ``rule`` and ``dose_index`` raise KeyError for an id the protocol lacks."""
    assert nct.dose_index("d3") == 2
    for lookup in (nct.stage, nct.rule, nct.dose_index):
        with pytest.raises(KeyError):
            lookup("nowhere")


def test_minimal_protocol_loads(write_toml: WriteToml) -> None:
    """A small complete protocol loads, with defaults for start dose, start stage and hit policy."""
    p = load_protocol(write_toml(MINIMAL))
    assert (p.start_dose, p.start_stage, p.stages[0].hit_policy, p.stages[0].kind) == (
        "d1", "escalation", "unique", "escalation")
    assert p.source.endswith("protocol.toml")
    assert compile_protocol(p).stats["stops"] > 0


def test_extra_sections_are_kept(write_toml: WriteToml) -> None:
    """``eligibility``, ``dlt``, ``scenarios`` and ``meta`` are accepted untouched and kept in ``extra``."""
    text = MINIMAL + '\n[meta]\nversion = "1"\n\n[dlt]\nwindow = 28\n\n[[scenarios]]\nname = "flat"\n'
    p = load_protocol(write_toml(text))
    assert p.extra == {"meta": {"version": "1"}, "dlt": {"window": 28}, "scenarios": [{"name": "flat"}]}


# ------------------------------------------------------------ folders


def test_folder_merges_its_files(write_toml: WriteToml) -> None:
    """A folder's TOML files merge by top-level key into one protocol equal to the single file."""
    single = load_protocol(write_toml(MINIMAL, "single.toml"))
    write_toml(HEAD, "folder/a-ladder.toml")
    folder = write_toml(STAGES, "folder/b-stages.toml").parent
    merged = load_protocol(folder)
    assert merged.source == str(folder)
    assert merged.doses == single.doses and merged.stages == single.stages and merged.cap == single.cap
    assert merged.key_source("stages").endswith("b-stages.toml")
    assert merged.key_source("doses").endswith("a-ladder.toml")


def test_folder_duplicate_top_level_key_is_refused(write_toml: WriteToml) -> None:
    """Two files of a folder declaring the same top-level key are refused, naming both files."""
    write_toml(MINIMAL, "folder/a.toml")
    folder = write_toml('[protocol]\nid = "again"\ncap = 3\n', "folder/b.toml").parent
    problems = _problems(folder)
    assert problems == [f"{folder / 'b.toml'}: protocol: already declared in {folder / 'a.toml'}"]


def test_folder_problem_names_the_file_holding_the_key(write_toml: WriteToml) -> None:
    """In a folder, a problem is reported against the file that holds the offending key."""
    write_toml(HEAD, "folder/a.toml")
    folder = write_toml(STAGES.replace("tox >= 1", "dlts >= 1"), "folder/b.toml").parent
    problems = _problems(folder)
    assert len(problems) == 1
    assert problems[0].startswith(f"{folder / 'b.toml'}: stages[0].rules[2].when: unknown name 'dlts'")


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    """A folder without TOML files is refused."""
    assert _problems(tmp_path) == [f"{tmp_path}: no .toml files in this folder"]


def test_missing_path_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is refused in one line."""
    assert _problems(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: no such protocol file or folder"]


def test_read_protocol_data_returns_merged_mapping() -> None:
    """``read_protocol_data`` returns the raw data, the source name and the file of each top-level key."""
    data, source, owners = read_protocol_data(NCT)
    assert source == str(NCT)
    assert data["protocol"]["cap"] == 18
    assert owners["stages"] == str(NCT / "protocol.toml")


# ------------------------------------------------------------ refusals with key paths


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("cap = 6", 'cap = "six"'), "protocol.cap: expected an integer (got 'six')"),
        (("cap = 6", "cap = true"), "protocol.cap: expected an integer (got True)"),
        (("cap = 6", "cap = 0"), "protocol.cap: expected a positive integer (got 0)"),
        (('id = "mini"\n', ""), "protocol.id: missing"),
        (('id = "d2"', 'id = "d1"'), "doses[1].id: duplicate dose id 'd1'"),
        (('id = "toxic"', 'id = "go"'), "stages[0].rules[2].id: duplicate rule id 'go'"),
        (("cohort = 3", "cohort = 0"), "stages[0].cohort: expected a positive integer (got 0)"),
        (('move = "next"', 'move = "up"'),
         "stages[0].rules[0].move: expected one of stay, next, previous, model (got 'up')"),
        (('action = "stop"\nmtd = "current"', 'action = "halt"'),
         "stages[0].rules[1].action: expected one of treat, stop, decide (got 'halt')"),
        (('mtd = "current"', 'mtd = "current"\nmove = "next"'),
         "stages[0].rules[1].move: not allowed with action 'stop'"),
        (('move = "next"', 'move = "next"\nmtd = "current"'),
         "stages[0].rules[0].mtd: not allowed with action 'treat'"),
        (('paraphrase = "escalate"', 'paraphrase = "escalate"\nsignoff = ["dsmb"]'),
         "stages[0].rules[0].signoff[0]: unknown role 'dsmb' (known: investigator, sponsor)"),
        (('doses = ["d1", "d2"]', 'doses = ["d1"]'), "stages: no stage governs dose 'd2'"),
        (("[[stages]]", "[[stages]]\nwindow_days = [28, 14]"),
         "stages[0].window_days: expected [min, max] days with 0 < min <= max (got [28, 14])"),
        (("[[stages]]", '[[stages]]\nhit_policy = "any"'), "stages[0].hit_policy: expected one of unique, first"),
        (('label = "two"', 'label = "two"\nprovisional = true'), None),
    ],
)
def test_field_problems_name_file_and_key_path(write_toml: WriteToml, change: tuple[str, str],
                                               expected: str | None) -> None:
    """Each mistake in a field is one line naming the file and the key path."""
    old, new = change
    assert old in MINIMAL
    path = write_toml(MINIMAL.replace(old, new, 1))
    if expected is None:  # a valid variation
        load_protocol(path)
        return
    problems = _problems(path)
    assert any(line == f"{path}: {expected}" or line.startswith(f"{path}: {expected}") for line in problems), problems


def test_decide_rule_options_are_checked(write_toml: WriteToml) -> None:
    """Decision points need options; option keys, ids and the default policy are checked with key paths."""
    text = MINIMAL.replace('action = "treat"\nmove = "next"', '''action = "decide"
move = "next"
options = [
  { id = "up", action = "treat", move = "next" },
  { id = "up", action = "stop", mtd = "none", colour = "red" },
]''', 1) + '\n[policy.default]\ngo = "sideways"\ntoxic = "up"\n'
    path = write_toml(text)
    problems = _problems(path)
    for expected in ("stages[0].rules[0].move: not allowed with action 'decide': put it on an option",
                     "stages[0].rules[0].options[1].id: duplicate option id 'up'",
                     "stages[0].rules[0].options[1].colour: unknown key",
                     "policy.default.go: unknown option 'sideways' (offered: up, up)",
                     "policy.default.toxic: rule 'toxic' is not a decision point"):
        assert any(line.startswith(f"{path}: {expected}") for line in problems), (expected, problems)


def test_every_problem_is_reported_at_once(write_toml: WriteToml) -> None:
    """All problems of a file are reported together, one line each, not only the first."""
    text = MINIMAL.replace("cap = 6", "cap = -1").replace("tox >= 1", "tox >=").replace('"d2"]', '"d7"]')
    problems = _problems(write_toml(text))
    assert len(problems) >= 3
    assert all(": " in line and "\n" not in line for line in problems)


def test_builtin_designs_pass_the_same_checks() -> None:
    """A built-in design that would be malformed is refused by the same loader."""
    with pytest.raises(ProtocolError, match=r"^bad: protocol: missing"):
        protocol_from_mapping({"doses": [{"id": "d1"}], "stages": []}, "bad")
    assert builtin_design("3+3-deescalate", doses=2).source == "3+3-deescalate (--doses 2)"


# ------------------------------------------------------------ malformed fixtures

MALFORMED: dict[str, list[str]] = {
    "bad_toml.toml": ["not valid TOML: Invalid value (at line 5, column 6)"],
    "unknown_key.toml": [
        "protocl: unknown key (expected one of:",
        "stages[0].rules[1].mdt: unknown key (expected one of:",
        "stages[0].rules[4].mdt: unknown key (expected one of:",
    ],
    "unknown_name.toml": ["stages[0].rules[2].when: unknown name 'dlts' (known: cap, deescalate_min, dose,"],
    "guard_type_error.toml": [
        "stages[0].rules[2].when: 'and' expects booleans on both sides in 'n == 3 and tox'",
        "stages[0].rules[5].when: expected a bool expression (got a int) in 'tox + 2'",
    ],
    "unknown_references.toml": [
        "stages[0].doses[2]: unknown dose 'd3' (known: d1, d2)",
        "stages[0].rules[0].signoff[0]: unknown role 'dsmb'",
        "stages[0].rules[0].stage: unknown stage 'nowhere' (known: escalation)",
        "protocol.start_dose: unknown dose 'd9'",
    ],
}

UNCOMPILABLE: dict[str, list[str]] = {
    "incomplete_table.toml": ["no rule of stage 'escalation' applies (table incomplete) after history '1NNT'"],
    "overlap_unique.toml": [
        "rules one-of-three, too-toxic of stage 'escalation' all apply (overlap under hit policy 'unique') "
        "after history '1NNT'"],
    "passes_cap.toml": [
        "rule 'one-of-three' treats 3 more with 1 places left under the cap of 7 after history '1NNN 2NNT'",
        "rule 'pass-six' treats 3 more with 1 places left under the cap of 7 after history '1NNT 1NNN'",
    ],
    "move_above_top.toml": ["rule 'zero-of-three-top' moves above the top dose after history '1NNN 2NNN'"],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_is_refused_line_by_line(name: str) -> None:
    """Each malformed fixture is refused with exactly one line per problem, naming the file and key path."""
    path = FIXTURES / "malformed" / name
    problems = _problems(path)
    assert len(problems) == len(MALFORMED[name]), problems
    for line, expected in zip(sorted(problems), sorted(MALFORMED[name]), strict=True):
        assert line.startswith(f"{path}: {expected}"), (line, expected)


@pytest.mark.parametrize("name", sorted(UNCOMPILABLE))
def test_uncompilable_fixture_loads_but_fails_to_compile(name: str) -> None:
    """Each rule-level fixture loads, then compiling it is refused naming the rules and a history."""
    path = FIXTURES / "malformed" / name
    protocol = load_protocol(path)
    with pytest.raises(CompileError) as caught:
        compile_protocol(protocol)
    assert isinstance(caught.value, EscalationRulesError)
    assert sorted(caught.value.problems) == sorted(f"{path}: {line}" for line in UNCOMPILABLE[name])


def test_broken_fixture_loads_compiles_and_fails_verify() -> None:
    """The broken 3+3 compiles, and verify reports escalation on 2 DLTs in 6 with the shortest counterexample."""
    compiled = compile_protocol(load_protocol(FIXTURES / "broken_3plus3.toml"))
    assert compiled.warnings == ()
    report = verify(compiled)
    assert not report.ok
    failed = {r.id: r for r in report.results if not r.ok}
    assert "no-escalation-after-two-dlts" in failed
    result = failed["no-escalation-after-two-dlts"]
    assert result.counterexample == "1NNT 1NNT"
    assert result.detail == "escalated from dose 1 with 2 DLT in 6"
    assert failed["mtd-accepted"].counterexample == "1NNN 2NNT 2NNT"
    assert set(failed) == {"no-escalation-after-two-dlts", "mtd-accepted"}
    assert "INVARIANT VIOLATED" in report.text()


def test_ladder_amounts_must_be_positive_and_increasing(tmp_path) -> None:
    """A dose below the one before it, or a non-positive amount, is refused naming the dose."""
    import re

    from escalation_rules import ProtocolError, load_protocol

    text = Path("spec/nct07117175/protocol.toml").read_text(encoding="utf-8")
    for old, new, where in [("amount = 2e7", "amount = 9e9", "doses[2].amount: the ladder goes lowest first"),
                            ("amount = 2e7", "amount = -2e7", "doses[1].amount: expected a positive amount")]:
        folder = tmp_path / re.sub(r"\W", "", new)
        folder.mkdir()
        (folder / "protocol.toml").write_text(text.replace(old, new), encoding="utf-8")
        with pytest.raises(ProtocolError, match=re.escape(where)):
            load_protocol(folder)


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path) -> None:
    """Bytes that are not UTF-8 give a one-line refusal naming the file, not a traceback."""
    from escalation_rules import ProtocolError, load_protocol

    bad = tmp_path / "p.toml"
    bad.write_bytes(b"[protocol]\nid = '\xff'\n")
    with pytest.raises(ProtocolError, match=r"p\.toml: not UTF-8 text"):
        load_protocol(bad)


def test_a_refused_rule_is_not_reported_again_as_unknown_by_the_policy(tmp_path) -> None:
    """An unknown name in a decision rule's guard is one problem, not also 'unknown rule' in the policy."""
    from escalation_rules import ProtocolError, load_protocol

    text = Path("spec/nct07117175/protocol.toml").read_text(encoding="utf-8")
    (tmp_path / "protocol.toml").write_text(text.replace('when = "n == 1 and tox == 0"', 'when = "dlts == 0"'),
                                            encoding="utf-8")
    with pytest.raises(ProtocolError) as err:
        load_protocol(tmp_path)
    assert len(err.value.problems) == 1 and "unknown name 'dlts'" in err.value.problems[0]


# ------------------------------------------------------------ policy entries that depend on the data

DECIDING = MINIMAL.replace('action = "treat"\nmove = "next"', '''action = "decide"
options = [
  { id = "up", action = "treat", move = "next" },
  { id = "end", action = "stop", mtd = "none" },
]''', 1)


def test_a_default_policy_entry_may_be_a_list_of_guarded_cases(write_toml: WriteToml) -> None:
    """``[policy.default]`` takes an option id or cases ``{when, option}``; first match wins, the last may omit when."""
    path = write_toml(DECIDING + '''
[policy.default]
go = [
  { when = "n >= 3 and tox == 0", option = "up" },
  { option = "end" },
]
''')
    entry = load_protocol(path).default_policy["go"]
    assert isinstance(entry, ConditionalChoice)
    assert entry.options == ("up", "end")
    assert entry.choose(lambda g: g.evaluate({"n": 3, "tox": 0})) == "up"
    assert entry.choose(lambda g: g.evaluate({"n": 2, "tox": 0})) == "end"


def test_guarded_cases_that_cover_every_state_need_no_otherwise(write_toml: WriteToml) -> None:
    """Cases whose guards together hold in every state are accepted without a last case."""
    path = write_toml(DECIDING + '''
[policy.default]
go = [{ when = "3 * tox <= n", option = "up" }, { when = "3 * tox > n", option = "end" }]
''')
    assert str(load_protocol(path).default_policy["go"]) == "up when 3 * tox <= n, end when 3 * tox > n"


@pytest.mark.parametrize(("entry", "expected"), [
    ('[{ when = "dlts == 0", option = "up" }, { option = "end" }]',
     "policy.default.go[0].when: unknown name 'dlts' (known: "),
    ('[{ when = "tox == 0", option = "sideways" }, { option = "end" }]',
     "policy.default.go[0].option: unknown option 'sideways' (offered: up, end)"),
    ('[{ when = "tox == 0", option = "up" }, { when = "tox >= 2", option = "end" }]',
     "policy.default.go: the cases leave out some states (none applies when tox = 1): add a last case"),
    ('[{ option = "end" }, { when = "tox == 0", option = "up" }]',
     "policy.default.go[0]: only the last case may leave out 'when'"),
    ('[{ when = "tox", option = "up" }, { option = "end" }]', "policy.default.go[0].when: "),
    ('[{ when = "tox == 0", option = "up", note = "x" }, { option = "end" }]',
     "policy.default.go[0].note: unknown key (expected one of: option, when)"),
    ('[{ when = "tox == 0" }, { option = "end" }]', "policy.default.go[0].option: missing"),
    ("[]", "policy.default.go: expected an option id or a list of {when, option} cases (got [])"),
    ("3", "policy.default.go: expected an option id or a list of {when, option} cases (got 3)"),
    ('["up"]', "policy.default.go[0]: expected a table with 'when' and 'option' (got 'up')"),
    ('[{ when = "n + n_prev + n_next + enrolled + tox_prev >= 0", option = "up" }]',
     "policy.default.go: the cases read too many values to check"),
])
def test_bad_guarded_cases_are_refused_naming_file_and_key_path(write_toml: WriteToml, entry: str,
                                                                expected: str) -> None:
    """Unknown names or options, uncovered states and malformed cases: one line naming the file and the key path."""
    path = write_toml(DECIDING + f"\n[policy.default]\ngo = {entry}\n")
    problems = _problems(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: {expected}"), problems


def test_coverage_counts_only_consistent_states(write_toml: WriteToml) -> None:
    """States that cannot exist (more DLTs than patients, a dose below the first) need no case."""
    path = write_toml(DECIDING + '''
[policy.default]
go = [
  { when = "tox <= n and (has_prev or n_prev == 0)", option = "up" },
]
''')
    assert load_protocol(path).default_policy["go"].options == ("up",)  # type: ignore[union-attr]


_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@st.composite
def _rate_guards(draw: Any) -> list[str]:
    """One to three guards comparing multiples of ``tox`` and ``n``."""
    return [f"{draw(st.integers(0, 3))} * tox {draw(st.sampled_from(_COMPARISONS))} {draw(st.integers(0, 3))} * n"
            for _ in range(draw(st.integers(1, 3)))]


@settings(max_examples=60, deadline=None)
@given(guards=_rate_guards())
def test_coverage_check_accepts_exactly_the_case_lists_that_cover_every_state(guards: list[str]) -> None:
    """Invariant: cases without an otherwise are accepted iff in every state (0 <= tox <= n <= cap) a guard holds;
    a refusal names a state in which none does."""
    nct = load_protocol(NCT)
    rule = nct.rule("fill-complete")
    parsed = [parse_guard(g, GUARD_NAMES) for g in guards]
    holes = [(n, t) for n in range(nct.cap + 1) for t in range(n + 1)
             if not any(g.evaluate({"n": n, "tox": t}) for g in parsed)]
    problems: list[str] = []
    entry = read_policy_entry([{"when": g, "option": "declare"} for g in guards], rule, nct.cap, nct.doses,
                              lambda path, message: problems.append(message))
    assert (entry is not None) == (not holes)
    if holes:
        (message,) = problems
        values = dict(part.split(" = ") for part in message.split("none applies when ")[1].split(")")[0].split(", "))
        state = {"n": int(values.get("n", 0)), "tox": int(values.get("tox", 0))}
        assert not any(g.evaluate(state) for g in parsed)
