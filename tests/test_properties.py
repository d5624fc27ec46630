"""Property tests of the decision engine, on the built-in designs over 1 to 6 doses and on NCT07117175.

Each test states its invariant in its name and docstring, and checks it on
``decide`` itself, history by history (the verifier checks the same
invariants on the compiled graph; these tests do not read the graph).  Two
stateful tests treat cohorts one by one and compare ``decide`` with small
reference implementations written here in plain Python: the classic 3+3 as
the docstring of ``escalation_rules.designs`` states it, and NCT07117175 as
its protocol file states it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from escalation_rules import (
    DESIGNS,
    Choice,
    Cohort,
    CompiledProtocol,
    Decision,
    HistoryError,
    builtin_design,
    compile_protocol,
    decide,
    load_protocol,
)
from escalation_rules.designs import design_parameters
from escalation_rules.history import Entry, format_history
from escalation_rules.strategies import histories, partial_histories


class Case:
    """A compiled protocol with a short name for Hypothesis' reports."""

    def __init__(self, name: str, compiled: CompiledProtocol) -> None:
        self.name = name
        self.compiled = compiled
        self.kinds = {s.id: s.kind for s in compiled.protocol.stages}

    def __repr__(self) -> str:
        return self.name


# The rule-based designs, whose invariants these are; the model-assisted designs and the CRM break some of
# them by design and have their own invariants and tests (tests/test_interval.py, tests/test_crm.py).
CASES = [Case(f"{name} --doses {k}", compile_protocol(builtin_design(name, k)))
         for name in sorted(DESIGNS) if not design_parameters(name) for k in range(1, 7)]
CASES.append(Case("spec/nct07117175", compile_protocol(load_protocol("spec/nct07117175"))))
BY_NAME = {c.name: c for c in CASES}

PROPERTY = settings(max_examples=150, deadline=None)


def drawn(strategy: Any) -> st.SearchStrategy[tuple[Case, tuple[Entry, ...]]]:
    """A case, and an entries-form history drawn from ``strategy(case.compiled, form="entries")``."""
    return st.sampled_from(CASES).flatmap(
        lambda case: strategy(case.compiled, form="entries").map(lambda h: (case, h)))


class Walk:
    """A history replayed prefix by prefix: the decision after each prefix and who was treated where.

    The counts are kept here from the history itself, not from the engine.
    """

    def __init__(self, case: Case, entries: tuple[Entry, ...]) -> None:
        self.case = case
        self.entries = entries
        self.decisions = [decide(case.compiled, entries[:i]) for i in range(len(entries) + 1)]

    def prefixes(self) -> list[tuple[int, Decision, dict[str, Any]]]:
        """(length, decision after it, bookkeeping) for every prefix."""
        out = []
        k = len(self.case.compiled.protocol.doses)
        patients: list[list[tuple[str, str]]] = [[] for _ in range(k)]  # (symbol, stage kind) per dose
        committed = [0] * k  # whole cohorts, observed or not
        last: int | None = None  # 0-based dose of the last cohort
        last_kind = ""
        for i in range(len(self.entries) + 1):
            if i:
                entry = self.entries[i - 1]
                if isinstance(entry, Cohort):
                    before = self.decisions[i - 1]
                    kind = self.case.kinds[before.stage]
                    patients[entry.dose - 1] += [(s, kind) for s in entry.outcomes]
                    committed[entry.dose - 1] += before.cohort_size or 0
                    last, last_kind = entry.dose - 1, kind
            book = {"patients": [list(p) for p in patients], "committed": list(committed), "last": last,
                    "last_kind": last_kind}
            out.append((i, self.decisions[i], book))
        return out


def first_six_dlts(patients: list[tuple[str, str]]) -> int:
    """DLTs among the first six patients at a dose."""
    return sum(s == "T" for s, _ in patients[:6])


def closed_doses(book: dict[str, Any]) -> list[int]:
    """0-based doses with two or more DLTs among their first six patients."""
    return [d for d, p in enumerate(book["patients"]) if first_six_dlts(p) >= 2]


def treat_targets(decision: Decision) -> list[tuple[int, int | None]]:
    """(1-based dose, cohort size) of every treatment the decision makes or offers."""
    if decision.action == "treat":
        return [(decision.dose or 0, decision.cohort_size)]
    return [(o.dose or 0, o.cohort_size) for o in decision.options if o.action == "treat"]


def mtds(decision: Decision) -> list[int]:
    """1-based MTDs the decision declares or offers."""
    if decision.action == "stop":
        return [decision.mtd] if decision.mtd is not None else []
    return [o.mtd for o in decision.options if o.action == "stop" and o.mtd is not None]


def level(decision: Decision) -> int:
    """How aggressive a decision is: the dose it treats or declares, the highest an option offers, 0 for none."""
    if decision.action == "treat":
        return decision.dose or 0
    if decision.action == "stop":
        return decision.mtd or 0
    return max((o.dose if o.action == "treat" else o.mtd) or 0 for o in decision.options)


# ---------------------------------------------------------------- safety invariants, history by history


@PROPERTY
@given(drawn(partial_histories))
def test_never_escalate_from_a_dose_with_two_dlts_among_its_first_six(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """No decision treats, or offers to treat, above a dose whose first six patients include two DLTs."""
    for _, decision, book in Walk(*pair).prefixes():
        if book["last"] is None:
            continue
        d = book["last"]
        for dose, _ in treat_targets(decision):
            if dose - 1 > d:
                assert first_six_dlts(book["patients"][d]) < 2, (pair, decision)


@PROPERTY
@given(drawn(partial_histories))
def test_never_escalate_with_fewer_than_three_evaluated_except_one_titration_patient(
        pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """Escalation needs three evaluated at the dose, or a single patient without DLT in a titration stage."""
    for _, decision, book in Walk(*pair).prefixes():
        if book["last"] is None:
            continue
        d = book["last"]
        seen = book["patients"][d]
        for dose, _ in treat_targets(decision):
            if dose - 1 > d:
                titration = len(seen) == 1 and seen[0] == ("N", "titration")
                assert len(seen) >= 3 or titration, (pair, decision)


@PROPERTY
@given(drawn(partial_histories))
def test_never_skip_a_dose(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """Every treatment is at most one dose above the highest dose treated so far (the start dose at first)."""
    start = pair[0].compiled.initial.dose + 1
    for _, decision, book in Walk(*pair).prefixes():
        treated = [d + 1 for d, p in enumerate(book["patients"]) if p]
        ceiling = max(treated) + 1 if treated else start
        for dose, _ in treat_targets(decision):
            assert 1 <= dose <= ceiling, (pair, decision)


@PROPERTY
@given(drawn(partial_histories))
def test_never_return_to_a_closed_dose_or_above(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """Once a dose has two DLTs among its first six, nothing is treated at it or above it again."""
    for _, decision, book in Walk(*pair).prefixes():
        closed = closed_doses(book)
        for dose, _ in treat_targets(decision):
            assert not closed or dose - 1 < min(closed), (pair, decision)


@PROPERTY
@given(drawn(partial_histories))
def test_never_more_than_six_at_a_dose_outside_a_fill_stage(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """A treatment outside a fill stage never brings a dose beyond six patients."""
    case = pair[0]
    for _, decision, book in Walk(*pair).prefixes():
        if decision.action == "treat" and case.kinds[decision.stage] != "fill":
            dose, size = decision.dose or 0, decision.cohort_size or 0
            written = len(book["patients"][dose - 1])
            pending = "complete the cohort" in decision.reason
            total = written + size if pending else book["committed"][dose - 1] + size
            assert total <= 6, (pair, decision)


@PROPERTY
@given(drawn(partial_histories))
def test_never_enrol_beyond_the_cap(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """Patients enrolled, plus any cohort the decision treats or offers, never exceed the cap."""
    cap = pair[0].compiled.protocol.cap
    for _, decision, book in Walk(*pair).prefixes():
        enrolled = sum(book["committed"])
        assert enrolled <= cap
        if "complete the cohort" in decision.reason:
            continue  # the rest of a cohort already counted as enrolled
        for _, size in treat_targets(decision):
            assert enrolled + (size or 0) <= cap, (pair, decision)


@PROPERTY
@given(drawn(histories))
def test_mtd_is_a_dose_the_rules_accepted(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """A declared (or offered) MTD is not closed, and was escalated from or holds 0/3 or at most 1/6 before any fill."""
    for _, decision, book in Walk(*pair).prefixes():
        for mtd in mtds(decision):
            m = mtd - 1
            before_fill = [(s, k) for s, k in book["patients"][m] if k != "fill"]
            assert first_six_dlts(before_fill) < 2, (pair, decision)
            escalated_from = any(book["patients"][d] for d in range(m + 1, len(book["patients"])))
            n, tox = len(before_fill), sum(s == "T" for s, _ in before_fill)
            assert escalated_from or (n >= 3 and tox <= 1 and (tox == 0 or n >= 6)), (pair, decision)


@PROPERTY
@given(drawn(partial_histories), st.data())
def test_coherence_one_more_dlt_in_the_last_cohort_is_never_more_aggressive(
        pair: tuple[Case, tuple[Entry, ...]], data: st.DataObject) -> None:
    """Replacing an N by a T in the last cohort never yields a higher dose, option or MTD."""
    case, entries = pair
    cohorts = [i for i, e in enumerate(entries) if isinstance(e, Cohort)]
    assume(cohorts)
    j = cohorts[-1]
    last = entries[j]
    assert isinstance(last, Cohort)
    assume("N" in last.outcomes)
    position = data.draw(st.sampled_from([i for i, s in enumerate(last.outcomes) if s == "N"]))
    worse = Cohort(last.dose, last.outcomes[:position] + "T" + last.outcomes[position + 1:])
    before = decide(case.compiled, entries[:j + 1])
    after = decide(case.compiled, (*entries[:j], worse))
    assert level(after) <= level(before), (before.history, before.to_dict(), after.to_dict())


def key(decision: Decision) -> tuple[Any, ...]:
    """What a decision tells people to do (its wording aside)."""
    options = tuple((o.id, o.action, o.dose, o.cohort_size, o.mtd, o.signoff) for o in decision.options)
    return (decision.action, decision.dose, decision.cohort_size, decision.mtd, decision.rule, decision.stage,
            decision.signoff, options)


@PROPERTY
@given(st.sampled_from(CASES).flatmap(
    lambda case: histories(case.compiled, complete=False, form="entries").map(lambda h: (case, h))), st.data())
def test_early_decision_equals_the_decision_for_every_completion(
        pair: tuple[Case, tuple[Entry, ...]], data: st.DataObject) -> None:
    """An incomplete cohort is decided early exactly when every completion of it gets that same decision,
    unless that decision is more patients at the same dose (the cohort in progress must finish first)."""
    case, entries = pair
    now = decide(case.compiled, entries)
    assume(now.action == "treat" and (now.cohort_size or 0) >= 2)
    size, dose = now.cohort_size or 0, now.dose or 0
    seen = data.draw(st.text(st.sampled_from("NT"), min_size=1, max_size=size - 1))
    history = (*entries, Cohort(dose, seen))
    early = decide(case.compiled, history)
    rest = size - len(seen)
    completions = [decide(case.compiled, (*entries, Cohort(dose, seen + "N" * (rest - u) + "T" * u)))
                   for u in range(rest + 1)]
    assert not any(c.determined_early for c in completions)
    if early.determined_early:
        assert all(key(c) == key(early) for c in completions), (history, early.to_dict())
    else:
        same_dose_more = all((c.action, c.dose) == ("treat", dose) for c in completions)
        assert same_dose_more or len({key(c) for c in completions}) > 1, history
        assert (early.action, early.dose, early.cohort_size) == ("treat", dose, rest)


def test_six_at_top_two_of_three_without_dlt_is_not_decided_early() -> None:
    """Two of three without DLT at the top dose of 3+3-six-at-top: the third decides between rules, so wait."""
    case = BY_NAME["3+3-six-at-top --doses 2"]
    completions = {decide(case.compiled, f"1NNN 2NN{last}").rule for last in "NT"}
    assert completions == {"esc-zero-of-three-top", "esc-one-of-three"}
    early = decide(case.compiled, "1NNN 2NN")
    assert not early.determined_early
    assert (early.action, early.dose, early.cohort_size) == ("treat", 2, 1)


@PROPERTY
@given(drawn(partial_histories))
def test_decide_is_deterministic_and_pure(pair: tuple[Case, tuple[Entry, ...]]) -> None:
    """The same history gives equal decisions, whatever its form, the protocol form, or what was decided before."""
    case, entries = pair
    kept = copy.deepcopy(entries)
    first = decide(case.compiled, entries)
    decide(case.compiled, entries[: len(entries) // 2])  # something else in between
    assert decide(case.compiled, entries) == first
    assert decide(case.compiled.protocol, entries) == first
    assert decide(case.compiled, format_history(entries)) == first
    assert decide(case.compiled, list(entries)) == first
    assert entries == kept


# ---------------------------------------------------------------- reference implementations


class Classic33:
    """The classic 3+3 in plain Python, as the docstring of escalation_rules.designs states it.

    Escalate-only: cohorts of 3 from dose 1; 0/3 escalates; 1/3 adds 3 at
    the same dose; at most 1/6 escalates; 2 or more DLTs (of 3 or of 6) stop
    with the dose below as MTD (none below dose 1); passing the top dose
    stops with it as MTD.  With de-escalation, a too-toxic dose instead sends
    3 more to the dose below when it has only 3 there (at most 1 DLT in 6
    makes it the MTD, 2 or more repeat the step lower, never re-escalating),
    and the dose below is the MTD at once when it already has 6.
    """

    def __init__(self, doses: int, deescalate: bool) -> None:
        self.doses = doses
        self.deescalate = deescalate
        self.n = [0] * doses
        self.tox = [0] * doses
        self.phase = "treat"
        self.dose = 0
        self.size = 3
        self.stage = "escalation"
        self.mtd: int | None = None

    def expected(self) -> tuple[Any, ...]:
        if self.phase == "treat":
            return ("treat", self.dose + 1, self.size, self.stage)
        return ("stop", None if self.mtd is None else self.mtd + 1)

    def _stop(self, mtd: int | None) -> None:
        self.phase, self.mtd = "stop", mtd

    def record(self, dlts: int, seen: int) -> None:
        d = self.dose
        self.n[d] += seen
        self.tox[d] += dlts
        n, tox = self.n[d], self.tox[d]
        if tox >= 2:
            self._too_toxic(d)
        elif self.stage == "deescalation":
            self._stop(d)  # six treated with at most one DLT
        elif tox == 1 and n == 3:
            self.size = 3
        elif d + 1 < self.doses:
            self.dose, self.size = d + 1, 3
        else:
            self._stop(d)

    def _too_toxic(self, d: int) -> None:
        if not self.deescalate:
            self._stop(d - 1 if d > 0 else None)
        elif d == 0:
            self._stop(None)
        elif self.n[d - 1] >= 6:
            self._stop(d - 1)
        else:
            self.dose, self.size, self.stage = d - 1, 6 - self.n[d - 1], "deescalation"

    def options(self) -> list[str]:
        return []

    def choose(self, option: str) -> None:  # pragma: no cover - the classic 3+3 has no decision points
        raise AssertionError(option)

    def terminate(self) -> None:  # pragma: no cover - the classic 3+3 has no early termination
        raise AssertionError("terminate")


class Nct07117175:
    """NCT07117175 in plain Python, read from spec/nct07117175/protocol.toml clause by clause.

    Titration at dose 1 with one patient (two more after a DLT), then a
    joint decision; 3+3 at doses 2, 3 and an added dose 4, with a joint
    decision before each escalation; a too-toxic dose sends the remaining
    places to the dose below (at dose 2, by joint decision), in cohorts of 3
    with a joint decision after each (go on, reduce further, stop; the
    safety variant when more than one in three at the dose had a DLT); the enrolment
    cap of 18 ends the trial; people may end it at any time.
    """

    CAP = 18

    def __init__(self) -> None:
        self.n = [0] * 4
        self.tox = [0] * 4
        self.enrolled = 0
        self.phase = "treat"
        self.dose = 0
        self.size = 1
        self.stage = "titration"
        self.mtd: int | None = None
        self.rule = ""
        self.offers: dict[str, tuple[Any, ...]] = {}

    def expected(self) -> tuple[Any, ...]:
        if self.phase == "treat":
            return ("treat", self.dose + 1, self.size, self.stage)
        if self.phase == "stop":
            return ("stop", None if self.mtd is None else self.mtd + 1)
        views = []
        for option, effect in self.offers.items():
            if effect[0] == "treat":
                views.append((option, "treat", effect[1] + 1, effect[2], None))
            else:
                views.append((option, "stop", None, None, None if effect[1] is None else effect[1] + 1))
        return ("decide", self.rule, tuple(views))

    def _decide(self, rule: str, **offers: tuple[Any, ...]) -> None:
        self.phase, self.rule = "decide", rule
        self.offers = {k.rstrip("_").replace("_", "-"): v for k, v in offers.items()}

    def _treat(self, dose: int, size: int, stage: str) -> None:
        self.phase, self.dose, self.size, self.stage = "treat", dose, size, stage

    def _stop(self, mtd: int | None) -> None:
        self.phase, self.mtd = "stop", mtd

    def record(self, dlts: int, seen: int) -> None:
        d = self.dose
        self.enrolled += self.size
        self.n[d] += seen
        self.tox[d] += dlts
        n, tox = self.n[d], self.tox[d]
        remaining = self.CAP - self.enrolled
        escalate = ("treat", d + 1, 3, "three-plus-three")
        end = ("stop", None)
        if self.stage == "titration":
            if n == 1:
                if tox == 0:
                    self._decide("at-pass-one", escalate=escalate, terminate=end)
                else:
                    self._treat(d, 2, "titration")
            elif tox <= 1:
                self._decide("at-pass-three", escalate=escalate, terminate=end)
            else:
                self._decide("at-too-toxic", terminate=end, amend=end)
            return
        next_cohort = ("treat", d, min(3, remaining), "fill")
        if self.stage == "fill":
            reduce = ("treat", d - 1, min(3, remaining), "fill")
            if remaining == 0:
                self._decide("fill-complete", declare=("stop", d), no_mtd=end)
            elif 3 * tox > n and d > 0:
                self._decide("fill-too-toxic", terminate=end, reduce=reduce, continue_=next_cohort)
            elif 3 * tox > n:
                self._decide("fill-too-toxic-lowest", terminate=end, continue_=next_cohort)
            elif d > 0:
                self._decide("fill-next", continue_=next_cohort, reduce=reduce, terminate=end)
            else:
                self._decide("fill-next-lowest", continue_=next_cohort, terminate=end)
            return
        passed = (n == 3 and tox == 0) or (n == 6 and tox <= 1)
        if remaining == 0 and passed:
            self._stop(d)
        elif (remaining == 0 and tox >= 2) or (remaining < 3 and n == 3 and tox == 1):
            self._stop(d - 1)
        elif n == 3 and tox == 1:
            self._treat(d, 3, "three-plus-three")
        elif passed and d == 1:
            self._decide("pass-to-next", escalate=escalate, terminate=end)
        elif passed and d == 2:
            self._decide("top-pass", add_group=escalate, fill=next_cohort, terminate=end)
        elif passed:
            self._treat(d, min(3, remaining), "fill")
        elif d == 1:
            self._decide("too-toxic-second", reduce=("treat", d - 1, min(3, remaining), "fill"), terminate=end)
        else:
            self._treat(d - 1, min(3, remaining), "fill")

    def options(self) -> list[str]:
        return list(self.offers) if self.phase == "decide" else []

    def choose(self, option: str) -> None:
        effect = self.offers[option]
        if effect[0] == "treat":
            self._treat(*effect[1:])
        else:
            self._stop(effect[1])

    def terminate(self) -> None:
        self._stop(None)


def view(decision: Decision) -> tuple[Any, ...]:
    """The engine's decision in the shape the reference implementations give."""
    if decision.action == "treat":
        return ("treat", decision.dose, decision.cohort_size, decision.stage)
    if decision.action == "stop":
        return ("stop", decision.mtd)
    return ("decide", decision.rule, tuple((o.id, o.action, o.dose, o.cohort_size, o.mtd) for o in decision.options))


class CohortByCohort(RuleBasedStateMachine):
    """Treat cohorts one by one (whole, or in parts), take options and sometimes end early; compare with a reference."""

    def __init__(self) -> None:
        super().__init__()
        self.case: Case | None = None
        self.model: Any = None
        self.entries: list[Entry] = []
        self.seen = ""  # outcomes written so far of a cohort still incomplete
        self.early = False  # the last entry was an incomplete cohort decided early
        self.toxicity = 0

    @initialize(design=st.sampled_from(["3+3-escalate-only", "3+3-deescalate", "spec/nct07117175"] * 2
                                       + ["spec/nct07117175"]),
                doses=st.integers(1, 6), toxicity=st.integers(0, 8))
    def start(self, design: str, doses: int, toxicity: int) -> None:
        self.toxicity = toxicity  # each patient has a DLT with chance about toxicity/16
        if design.startswith("spec/"):
            self.case, self.model = BY_NAME[design], Nct07117175()
        else:
            self.case = BY_NAME[f"{design} --doses {doses}"]
            self.model = Classic33(doses, deescalate=design == "3+3-deescalate")

    def symbols(self, data: st.DataObject, size: int) -> str:
        """``size`` outcomes, each a DLT with chance about toxicity/16."""
        return "".join("T" if data.draw(st.integers(0, 15)) < self.toxicity else "N" for _ in range(size))

    def treating(self) -> bool:
        return self.model is not None and self.model.phase == "treat"

    def write(self, outcomes: str) -> None:
        """Write patients of the current cohort; settle the model once the cohort is whole or decided."""
        self.entries.append(Cohort(self.model.dose + 1, outcomes))
        self.seen += outcomes
        self.early = False
        size, dlts = self.model.size, self.seen.count("T")
        if len(self.seen) == size:
            self.model.record(dlts, size)
            self.seen = ""
            return
        rest = size - len(self.seen)
        outcomes_of = set()
        for u in range(rest + 1):
            trial = copy.deepcopy(self.model)
            trial.record(dlts + u, size)
            outcomes_of.add(trial.expected())
        if len(outcomes_of) == 1:
            self.model.record(dlts, len(self.seen))
            self.seen, self.early = "", True

    @precondition(lambda self: self.treating())
    @rule(data=st.data())
    def treat_the_rest_of_the_cohort(self, data: st.DataObject) -> None:
        rest = self.model.size - len(self.seen)
        self.write(self.symbols(data, rest))

    @precondition(lambda self: self.treating() and self.model.size - len(self.seen) >= 2)
    @rule(data=st.data())
    def write_part_of_the_cohort(self, data: st.DataObject) -> None:
        rest = self.model.size - len(self.seen)
        self.write(self.symbols(data, data.draw(st.integers(1, rest - 1))))

    @precondition(lambda self: self.model is not None and self.model.phase == "decide")
    @rule(data=st.data())
    def take_an_option(self, data: st.DataObject) -> None:
        options = self.model.options()
        option = data.draw(st.sampled_from([options[0]] * 3 + options))  # the first option (go on) more often
        self.entries.append(Choice(option))
        self.model.choose(option)
        self.early = False

    @precondition(lambda self: self.treating() and self.case is not None
                  and self.case.compiled.protocol.early_termination is not None)
    @rule(roll=st.integers(0, 9))
    def end_the_trial_early(self, roll: int) -> None:
        if roll < 9:
            return  # rarely: most trials run their course
        self.entries.append(Choice("terminate"))  # also while a cohort is under observation
        self.model.terminate()
        self.seen, self.early = "", False

    @precondition(lambda self: self.model is not None and self.model.phase == "stop")
    @rule(dose=st.integers(1, 6), outcomes=st.text(st.sampled_from("NT"), min_size=1, max_size=3))
    def write_a_cohort_after_the_stop(self, dose: int, outcomes: str) -> None:
        assert self.case is not None
        last = self.entries[-1] if self.entries else None
        if self.early and isinstance(last, Cohort) and last.dose == dose:
            return  # the rest of a cohort decided early may still be written: it joins that cohort
        with pytest.raises(HistoryError, match=r"the trial stopped after cohort|unknown dose"):
            decide(self.case.compiled, [*self.entries, Cohort(dose, outcomes)])

    @invariant()
    def engine_agrees_with_the_reference(self) -> None:
        if self.case is None:
            return
        decision = decide(self.case.compiled, self.entries)
        if self.seen:
            rest = self.model.size - len(self.seen)
            expected = ("treat", self.model.dose + 1, rest, self.model.stage)
        else:
            expected = self.model.expected()
        assert view(decision) == expected, (format_history(self.entries), decision.to_dict())
        assert decision.determined_early == self.early, format_history(self.entries)


CohortByCohort.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestCohortByCohortAgreesWithTheReferenceImplementations = CohortByCohort.TestCase
