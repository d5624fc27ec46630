"""Example-based tests of the decision engine (escalation_rules.decide)."""

from __future__ import annotations

import json

import pytest

from escalation_rules import (
    Choice,
    Cohort,
    Decision,
    HistoryError,
    builtin_design,
    compile_protocol,
    decide,
    load_protocol,
    parse_history_json,
)
from escalation_rules.graph import describe_path

NCT = load_protocol("spec/nct07117175")
D3 = builtin_design("3+3-deescalate", doses=3)
E3 = builtin_design("3+3-escalate-only", doses=3)
BOTH = ["investigator", "sponsor"]

#: The keys of ``next --json`` that callers rely on; more may follow them.
CONTRACT = ("action", "dose", "cohort_size", "mtd", "options", "signoff", "rule", "reason")
#: Keys of one option in ``options``.
OPTION_KEYS = {"id", "label", "action", "dose", "cohort_size", "mtd", "signoff"}


# ---------------------------------------------------------------- the Decision and its JSON form


def test_decision_fields_after_one_dlt_in_three() -> None:
    """One DLT in three at dose 2 treats three more there, naming the rule, clause and counts."""
    d = decide(D3, "1NNN 2NTN")
    assert isinstance(d, Decision)
    assert (d.action, d.dose, d.cohort_size, d.mtd, d.options, d.signoff) == ("treat", 2, 3, None, (), ())
    assert (d.rule, d.stage, d.determined_early, d.history) == ("esc-one-of-three", "escalation", False, "1NNN 2NTN")
    assert d.clause == "Storer (1989); Korn et al. (1994)"
    assert d.reason.startswith("1 DLT in 3 at dose 2: ")
    assert d.dose_label == "dose 2"


def test_json_dict_holds_the_contract_keys_with_their_types() -> None:
    """to_dict holds action, dose, cohort_size, mtd, options, signoff, rule and reason, and is JSON."""
    for history in ("", "1NNN 2NTN", "1NNN 2TTN"):
        data = decide(E3, history).to_dict()
        assert set(CONTRACT) <= set(data)
        assert list(data)[:2] == ["action", "dose"]
        assert json.loads(json.dumps(data)) == data
        assert isinstance(data["options"], list) and isinstance(data["signoff"], list)
        assert isinstance(data["rule"], str) and isinstance(data["reason"], str)
    data = decide(NCT, "1N").to_dict()
    assert data["action"] == "decide" and data["dose"] is None and data["cohort_size"] is None
    assert [set(o) for o in data["options"]] == [OPTION_KEYS, OPTION_KEYS]
    assert data["signoff"] == BOTH


def test_extras_of_the_json_dict() -> None:
    """The JSON dict also carries clause, stage, determined_early, history and the dose labels."""
    data = decide(NCT, "1N 2N").to_dict()
    for key in ("clause", "stage", "determined_early", "history", "dose_label", "mtd_label"):
        assert key in data
    assert data["dose_label"] == "2×10^7 CAR-NK cells/kg"
    assert data["history"] == "1N [escalate] 2N"


def test_start_treats_the_first_cohort_at_the_start_dose() -> None:
    """With no history the decision is the protocol's start."""
    d = decide(D3)
    assert (d.action, d.dose, d.cohort_size, d.rule) == ("treat", 1, 3, "start")
    assert d.reason == "start: treat 3 at dose 1"
    n = decide(NCT, "")
    assert (n.action, n.dose, n.cohort_size, n.stage) == ("treat", 1, 1, "titration")


@pytest.mark.parametrize(("history", "mtd", "rule", "reason"), [
    ("1NNN 2TTN", 1, "esc-too-toxic", "2 DLTs in 3 at dose 2: "),
    ("1TTN", None, "esc-too-toxic", "2 DLTs in 3 at dose 1: "),
    ("1NNN 2NNN 3NNN", 3, "esc-zero-of-three-top", "0 DLTs in 3 at dose 3: "),
    ("1NNN 2NTN 2NNN 3NTN 3NNN", 3, "esc-pass-six-top", "1 DLT in 6 at dose 3: "),
    ("1NNN 2NTN 2NTN", 1, "esc-too-toxic", "2 DLTs in 6 at dose 2: "),
])
def test_escalate_only_stops(history: str, mtd: int | None, rule: str, reason: str) -> None:
    """The escalate-only 3+3 stops with the MTD its docstring states, and the reason names counts and dose."""
    d = decide(E3, history)
    assert (d.action, d.dose, d.cohort_size, d.mtd, d.rule) == ("stop", None, None, mtd, rule)
    assert d.reason.startswith(reason)
    assert d.mtd_label == (f"dose {mtd}" if mtd else None)


def test_deescalation_treats_below_and_declares_the_mtd() -> None:
    """Two DLTs at dose 3 send three more to dose 2, which becomes the MTD with at most one DLT in six."""
    d = decide(D3, "1NNN 2NNN 3TTN")
    assert (d.action, d.dose, d.cohort_size, d.stage) == ("treat", 2, 3, "deescalation")
    assert d.rule == "esc-too-toxic-expand-below"
    d = decide(D3, "1NNN 2NNN 3TTN 2NTN")
    assert (d.action, d.mtd, d.rule) == ("stop", 2, "deesc-pass")
    assert d.reason.startswith("1 DLT in 6 at dose 2: ")
    d = decide(D3, "1NNN 2NNN 3TTN 2TTN")
    assert (d.action, d.dose, d.cohort_size) == ("treat", 1, 3)


def test_a_dose_below_with_six_is_the_mtd() -> None:
    """When the dose below a too-toxic dose already has six, it is the MTD at once."""
    d = decide(D3, "1NTN 1NNN 2TTN")
    assert (d.action, d.mtd, d.rule) == ("stop", 1, "esc-too-toxic-mtd-below")


def test_decide_accepts_a_compiled_protocol_and_entries() -> None:
    """A CompiledProtocol and a sequence of entries give the same decision as a Protocol and a string."""
    by_text = decide(D3, "1NNN 2NTN")
    assert decide(compile_protocol(D3), "1NNN 2NTN") == by_text
    assert decide(D3, [Cohort(1, "NNN"), Cohort(2, "NTN")]) == by_text


# ---------------------------------------------------------------- incomplete cohorts


def test_early_determination_when_every_completion_agrees() -> None:
    """Two DLTs in the first two of three decide at once, flagged determined_early."""
    d = decide(D3, "1NNN 2TT")
    assert (d.action, d.dose, d.cohort_size, d.determined_early) == ("treat", 1, 3, True)
    assert d.reason.startswith("2 DLTs in 2 at dose 2 with 1 still under observation; whatever they show")
    assert decide(E3, "1TT").action == "stop" and decide(E3, "1TT").determined_early


def test_undetermined_incomplete_cohort_asks_for_the_rest() -> None:
    """Two of three without DLT: the decision depends on the third, so treat is 'complete the cohort'."""
    d = decide(D3, "1NN")
    assert (d.action, d.dose, d.cohort_size, d.determined_early) == ("treat", 1, 1, False)
    assert d.reason == "2 of 3 patients evaluated at dose 1; the decision depends on the other 1: complete the cohort"


def test_a_cohort_written_in_parts_equals_the_whole() -> None:
    """A cohort written as '1NN 1N' is decided like '1NNN'."""
    assert decide(D3, "1NN 1N") == decide(D3, "1NNN")
    assert decide(D3, "1N 1N 1N 2NN 2T") == decide(D3, "1NNN 2NNT")


def test_an_entry_after_an_open_incomplete_cohort_is_refused() -> None:
    """A cohort at another dose after an undetermined incomplete cohort is refused, naming both."""
    message = r"^cohort 2 \('2NNN'\): cohort 1 at dose 1 is incomplete \(2 of 3 patients\)"
    with pytest.raises(HistoryError, match=message):
        decide(D3, "1NN 2NNN")


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(("history", "message"), [
    ("2NNN", r"^cohort 1 \('2NNN'\): the first cohort must be at the starting dose 1"),
    ("1NNN 3NNN", r"^cohort 2 \('3NNN'\): skips dose 2; rule 'esc-zero-of-three' .* to dose 2$"),
    ("1NNN 1NNN", r"^cohort 2 \('1NNN'\): dose 1 is not permitted here; .* to dose 2$"),
    ("1NNNN", r"^cohort 1 \('1NNNN'\): more patients than the rules allow: after 3, rule 'esc-zero-of-three'"),
    ("1TTT 1N", r"^cohort 2 \('1N'\): the trial stopped after cohort 1 under rule 'esc-too-toxic-first'"),
    ("1NX", r"^cohort 1 \('1NX'\): unknown symbol 'X'"),
    ("1nnn", r"unknown symbol 'n' .*\(symbols are upper case\)"),
    ("1NNN 9NNN", r"^cohort 2 \('9NNN'\): unknown dose 9 \(the ladder has doses 1 to 3\)"),
    ("[terminate]", r"^cohort 1 \(\[terminate\]\): no decision is open here"),
])
def test_impossible_histories_are_refused_naming_the_cohort(history: str, message: str) -> None:
    """Each impossible 3+3 history is refused with one line naming the cohort and what was expected."""
    with pytest.raises(HistoryError, match=message) as info:
        decide(D3, history)
    assert "\n" not in str(info.value)


def test_a_dose_no_option_treats_is_refused_at_a_decision_point() -> None:
    """At an NCT decision point a cohort at a dose no option treats is refused, listing the options."""
    with pytest.raises(HistoryError, match=r"the options are escalate \(dose 2\), terminate \(stop\); none treats"):
        decide(NCT, "1N 3NNN")
    with pytest.raises(HistoryError, match=r"rule 'at-pass-one' offers escalate, terminate \(got 'foo'\)"):
        decide(NCT, "1N [foo]")


# ---------------------------------------------------------------- decisions and sign-off (NCT07117175)


def test_nct_decision_point_lists_its_options() -> None:
    """After one patient without DLT, NCT asks investigator and sponsor to escalate or end."""
    d = decide(NCT, "1N")
    assert (d.action, d.rule, d.signoff) == ("decide", "at-pass-one", ("investigator", "sponsor"))
    views = {o.id: (o.action, o.dose, o.cohort_size, o.mtd) for o in d.options}
    assert views == {"escalate": ("treat", 2, 3, None), "terminate": ("stop", None, None, None)}


def test_next_dose_implies_the_decision_in_an_outcome_string() -> None:
    """'1N 2NNN' and '1N [escalate] 2NNN' are the same history."""
    implied = decide(NCT, "1N 2NNN")
    assert implied == decide(NCT, "1N [escalate] 2NNN")
    assert implied.history == "1N [escalate] 2NNN"


def test_json_history_with_decisions_and_signoff() -> None:
    """A JSON history with a signed decision is decided like its outcome string."""
    data = [{"dose": 1, "outcomes": "N"}, {"decision": "escalate", "signoff": BOTH},
            {"dose": 2, "outcomes": "NNN"}]
    d = decide(NCT, parse_history_json(data))
    assert d == decide(NCT, "1N [escalate] 2NNN")
    assert (d.action, d.rule) == ("decide", "pass-to-next")
    assert decide(NCT, parse_history_json(json.dumps({"history": data}))) == d


def test_missing_signoff_is_refused() -> None:
    """A decision signed by the investigator alone is refused, naming the missing role."""
    data = [{"dose": 1, "outcomes": "N"}, {"decision": "escalate", "signoff": ["investigator"]}]
    with pytest.raises(HistoryError, match=r"^cohort 2 \(\[escalate\]\): missing sign-off by sponsor"):
        decide(NCT, parse_history_json(data))


def test_unknown_role_is_refused() -> None:
    """A sign-off by a role the protocol does not know is refused, listing the known roles."""
    data = [{"dose": 1, "outcomes": "N"}, {"decision": "escalate", "signoff": ["nurse", *BOTH]}]
    with pytest.raises(HistoryError, match=r"unknown role 'nurse' \(known: investigator, sponsor\)"):
        decide(NCT, parse_history_json(data))


def test_unsigned_decision_in_an_outcome_string_is_accepted() -> None:
    """An outcome string carries no sign-off, so none is checked."""
    assert decide(NCT, [Cohort(1, "N"), Choice("escalate")]).action == "treat"


def test_choice_that_stops_carries_the_mtd() -> None:
    """Ending NCT after two DLTs at dose 2 declares no MTD; reducing fills dose 1 cohort by cohort, whose end
    is a joint decision."""
    assert decide(NCT, "1N 2TTN [terminate]").mtd is None
    d = decide(NCT, "1N 2TTN [reduce]")
    assert (d.action, d.dose, d.cohort_size, d.stage, d.window_days) == ("treat", 1, 3, "fill", (28, 28))
    d = decide(NCT, "1N 2TTN 1NNN 1NNN 1NNN 1NNN")
    assert (d.action, d.rule, [o.id for o in d.options]) == ("decide", "fill-next-lowest", ["continue", "terminate"])
    assert [(o.dose, o.cohort_size) for o in d.options] == [(1, 2), (None, None)]  # the last 2 places
    d = decide(NCT, "1N 2TTN 1NNN 1NNN 1NNN 1NNN 1NN")
    assert (d.action, d.rule, [o.id for o in d.options]) == ("decide", "fill-complete", ["declare", "no-mtd"])
    d = decide(NCT, "1N 2TTN 1NNN 1NNN 1NNN 1NNN 1NN [declare]")
    assert (d.action, d.mtd, d.rule, d.mtd_label) == ("stop", 1, "fill-complete/declare", "1×10^7 CAR-NK cells/kg")


# ---------------------------------------------------------------- early termination (NCT07117175)


def test_early_termination_at_the_start() -> None:
    """'[terminate]' before the first patient ends NCT with no MTD, signed by both roles."""
    d = decide(NCT, "[terminate]")
    assert (d.action, d.mtd, d.rule, d.signoff) == ("stop", None, "early-termination", ("investigator", "sponsor"))
    assert d.clause == "Full description ¶4"
    assert d.reason.startswith("trial terminated early by decision")


def test_early_termination_is_possible_wherever_nct_treats() -> None:
    """At every reachable NCT state where the rules treat, '[terminate]' stops the trial."""
    compiled = compile_protocol(NCT)
    treat_states = [s for s in compiled.graph if s.phase == "treat"]
    assert len(treat_states) > 50
    for state in treat_states:
        history = describe_path(compiled.path_to(state)).replace("(start)", "")
        d = decide(NCT, f"{history} [terminate]")
        assert (d.action, d.mtd, d.rule) == ("stop", None, "early-termination"), history


def test_early_termination_while_a_cohort_is_under_observation() -> None:
    """'[terminate]' after an incomplete cohort ends NCT early; nothing may follow it."""
    d = decide(NCT, "1N 2N [terminate]")
    assert (d.action, d.mtd, d.rule) == ("stop", None, "early-termination")
    with pytest.raises(HistoryError, match="the trial stopped after cohort 3 under early termination"):
        decide(NCT, "1N 2N [terminate] 2NN")


def test_terminate_after_a_cohort_decided_early_is_the_decision_points_option() -> None:
    """Two DLTs in the first two at dose 2 open too-toxic-second; '[terminate]' is its own option, not early stop."""
    assert decide(NCT, "1N 2TT").rule == "too-toxic-second"
    d = decide(NCT, "1N 2TT [terminate]")
    assert (d.action, d.mtd, d.rule) == ("stop", None, "too-toxic-second/terminate")


def test_early_termination_at_a_decision_point_is_the_option() -> None:
    """At a decision point '[terminate]' is the rule's own option, with its MTD."""
    assert decide(NCT, "1N [terminate]").rule == "at-pass-one/terminate"


def test_nothing_follows_early_termination() -> None:
    """A cohort after early termination is refused, naming early termination."""
    with pytest.raises(HistoryError, match=r"^cohort 3 \('2NNN'\): the trial stopped after cohort 2 under early term"):
        decide(NCT, "1T [terminate] 2NNN")


def test_early_termination_signoff_is_checked() -> None:
    """Early termination signed by one role only is refused."""
    data = [{"dose": 1, "outcomes": "T"}, {"decision": "terminate", "signoff": ["sponsor"]}]
    with pytest.raises(HistoryError, match="missing sign-off by investigator"):
        decide(NCT, parse_history_json(data))


@pytest.mark.parametrize(("history", "action", "dose", "size", "mtd", "rule"), [
    ("1N 2NTN 2NNN 3NTN 3NNN 4NTN", "stop", None, None, 3, "cap-no-room-to-expand"),
    ("1N 2NTN 2NNN 3NTN 3NNN 4NNN", "treat", 4, 2, None, "added-group-pass"),
    ("1T 1NN 2NTN 2NNN 3NTN 3NNN 4NNN", "stop", None, None, 4, "cap-full-after-pass"),
    ("1N 2NNN 3TTN", "treat", 2, 3, None, "too-toxic-higher"),
    ("1N 2NNN 3NNN [fill]", "treat", 3, 3, None, "top-pass/fill"),
    ("1N 2NNN 3NNN [fill] 3NNN 3NNN 3NNN", "decide", None, None, None, "fill-next"),
    ("1N 2NNN 3NNN [fill] 3NNN 3NNN 3NNN [continue]", "treat", 3, 2, None, "fill-next/continue"),
    ("1N 2NNN 3NNN [fill] 3TTT", "decide", None, None, None, "fill-too-toxic"),
])
def test_nct_enrolment_cap_and_fill(history: str, action: str, dose: int | None, size: int | None,
                                    mtd: int | None, rule: str) -> None:
    """Near the cap of 18, NCT stops or fills the remaining places as its Enrollment clause requires."""
    d = decide(NCT, history)
    assert (d.action, d.dose, d.cohort_size, d.mtd, d.rule) == (action, dose, size, mtd, rule)


# ---------------------------------------------------------------- entries built directly


@pytest.mark.parametrize("outcomes", ["NXN", "nnn"])
def test_cohort_entries_with_unknown_symbols_are_refused(outcomes: str) -> None:
    """A Cohort entry with a letter other than N or T is refused like the same outcome string."""
    with pytest.raises(HistoryError, match=r"^cohort 1 .*unknown symbol"):
        decide(D3, [Cohort(1, outcomes)])


def test_empty_cohort_entries_are_refused() -> None:
    """A Cohort entry with no outcomes is refused (the JSON parser refuses it too)."""
    with pytest.raises(HistoryError, match=r"^cohort 2 "):
        decide(D3, [Cohort(1, "NNN"), Cohort(2, "")])
