"""The decision engine: a pure function from a trial history to a decision.

Examples
--------
>>> from escalation_rules import builtin_design, decide
>>> design = builtin_design("3+3-deescalate", doses=3)
>>> d = decide(design, "1NNN 2NTN")
>>> d.action, d.dose, d.cohort_size, d.rule
('treat', 2, 3, 'esc-one-of-three')
>>> decide(design, "1NNN 2TT").mtd   # two DLTs close dose 2 whatever the third shows
>>> decide(design, "1NNN 2TT").dose, decide(design, "1NNN 2TT").determined_early
(1, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ._attrs import value_repr
from ._machine import State, StepError, after_cohort, choose, initial_state
from .errors import CompileError, HistoryError
from .graph import CompiledProtocol, as_protocol
from .history import Choice, Cohort, Entry, format_history
from .protocol import Option, Protocol, Rule

__all__ = ["Decision", "OptionView", "decide", "replay"]


@attrs.frozen
class OptionView:
    """One option open to people at a decision point, with where it leads."""

    __repr__ = value_repr

    id: str
    label: str
    action: str
    dose: int | None
    cohort_size: int | None
    mtd: int | None
    signoff: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"id": self.id, "label": self.label, "action": self.action, "dose": self.dose,
                "cohort_size": self.cohort_size, "mtd": self.mtd, "signoff": list(self.signoff)}


@attrs.frozen
class Decision:
    """What the protocol says to do next, and why.

    Attributes
    ----------
    action : str
        ``"treat"`` (the next patients), ``"decide"`` (people choose among
        ``options``) or ``"stop"`` (the trial has ended).
    dose : int or None
        1-based dose level for the next patients (``treat``).
    cohort_size : int or None
        How many patients to treat next (``treat``).
    mtd : int or None
        1-based MTD once determined.
    options : tuple of OptionView
        For ``decide``.
    signoff : tuple of str
        Roles whose agreement the decision requires.
    rule, clause : str
        The rule that fired and the protocol clause it encodes.
    reason : str
        One line, in words.
    stage : str
        The stage the trial is in.
    determined_early : bool
        True when the last cohort is incomplete but every outcome of its
        remaining patients leads to this same decision.
    history : str
        The history decided on, as a normalised outcome string.
    window_days : tuple of int or None
        For ``treat``: the DLT observation window (min, max days) of the
        stage the next patients are treated in, when the protocol declares one.
    early_termination : tuple of str or None
        While the trial runs and the protocol allows ending it at any time by
        decision (``[terminate]``): the roles that must sign that.
    """

    __repr__ = value_repr

    action: str
    dose: int | None
    cohort_size: int | None
    mtd: int | None
    options: tuple[OptionView, ...]
    signoff: tuple[str, ...]
    rule: str
    clause: str
    reason: str
    stage: str
    determined_early: bool
    history: str
    dose_label: str | None = None
    mtd_label: str | None = None
    window_days: tuple[int, int] | None = None
    early_termination: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``escalation-rules next --json``."""
        return {
            "action": self.action,
            "dose": self.dose,
            "dose_label": self.dose_label,
            "cohort_size": self.cohort_size,
            "mtd": self.mtd,
            "mtd_label": self.mtd_label,
            "options": [o.to_dict() for o in self.options],
            "signoff": list(self.signoff),
            "rule": self.rule,
            "clause": self.clause,
            "reason": self.reason,
            "stage": self.stage,
            "determined_early": self.determined_early,
            "history": self.history,
            "window_days": list(self.window_days) if self.window_days else None,
            "early_termination": list(self.early_termination) if self.early_termination is not None else None,
        }


def _protocol_of(protocol: Protocol | CompiledProtocol) -> Protocol:
    return protocol.protocol if isinstance(protocol, CompiledProtocol) else protocol


def _rule_of(protocol: Protocol, label: str | None) -> tuple[Rule | None, Option | None]:
    if label is None or label in ("start", "early-termination"):
        return None, None
    rule_id, _, option_id = label.partition("/")
    rule = protocol.rule(rule_id)
    option = next((o for o in rule.options if o.id == option_id), None) if option_id else None
    return rule, option


def option_level(state: State, option: Option) -> int | None:
    """The 1-based dose an option at a decision state treats at, or None if it stops."""
    target = option.outcome.treats_at(state.dose)
    return None if target is None else target + 1


def _dose_text(protocol: Protocol, dose: int) -> str:
    label = protocol.doses[dose].label
    return f"dose {dose + 1}" if label == f"dose {dose + 1}" else f"dose {dose + 1} ({label})"


class _Run:
    """One pass over a history; keeps what error messages need."""

    def __init__(self, protocol: Protocol) -> None:
        self.p = protocol
        self.state = initial_state(protocol)
        self.partial = ""  # outcomes of an incomplete cohort at self.state
        self.partial_index = 0
        self.highest = self.state.dose
        self.entries: list[Entry] = []
        self.stopped_at = 0
        self.early_rules: tuple[str, ...] = ()  # rules the completions of an early-decided cohort fire
        self.early_pending = 0  # patients of that cohort still under observation

    def step(self, state: State, dlts: int, evaluated: int | None = None) -> tuple[Rule, State]:
        try:
            return after_cohort(self.p, state, dlts, evaluated)
        except StepError as err:
            raise self.refused(err) from None

    def refused(self, err: StepError) -> CompileError:
        """A rule that cannot be applied after this history: the protocol's fault, named with the history."""
        return CompileError([f"{self.p.source}: {err} after {format_history(self.entries)!r}"])

    def rule_text(self, label: str | None) -> str:
        rule, option = _rule_of(self.p, label)
        if rule is None:
            if label == "start":
                return f"the protocol's start ({_dose_text(self.p, self.p.dose_index(self.p.start_dose))})"
            return "early termination"
        text = f"rule {rule.id!r} ({rule.clause})"
        return f"{text}, option {option.id!r}" if option else text

    # -- entries

    def choice(self, entry: Choice, index: int) -> None:
        p, state = self.p, self.state
        if state.phase == "decide":
            rule = p.rule(state.rule or "")
            option = next((o for o in rule.options if o.id == entry.option), None)
            if option is None:
                offered = ", ".join(o.id for o in rule.options)
                raise HistoryError(
                    f"cohort {index} ([{entry.option}]): rule {rule.id!r} offers {offered} (got {entry.option!r})",
                    index)
            self.check_signoff(entry, option.signoff, index)
            self.state = self.apply(state, option, index)
            self.entries.append(entry)
            return
        if state.phase == "stop":
            raise HistoryError(f"cohort {index} ([{entry.option}]): the trial stopped after cohort {self.stopped_at} "
                               f"under {self.rule_text(state.rule)}", index)
        if entry.option == "terminate" and p.early_termination is not None:
            self.check_signoff(entry, p.early_termination.signoff, index)
            self.state = attrs.evolve(state, phase="stop", cohort=0, rule="early-termination", mtd=None)
            self.stopped_at = index
            self.entries.append(entry)
            return
        raise HistoryError(f"cohort {index} ([{entry.option}]): no decision is open here; "
                           f"{self.rule_text(state.rule)} treats the next patients at dose {state.dose + 1}", index)

    def check_signoff(self, entry: Choice, required: tuple[str, ...], index: int) -> None:
        if entry.signoff is None:
            return
        unknown = [r for r in entry.signoff if r not in self.p.roles]
        if unknown:
            raise HistoryError(f"cohort {index} ([{entry.option}]): unknown role {unknown[0]!r} "
                               f"(known: {', '.join(self.p.roles)})", index)
        missing = [r for r in required if r not in entry.signoff]
        if missing:
            raise HistoryError(f"cohort {index} ([{entry.option}]): missing sign-off by {', '.join(missing)} "
                               f"(required: {', '.join(required)})", index)

    def apply(self, state: State, option: Option, index: int) -> State:
        try:
            new = choose(self.p, state, option)
        except StepError as err:
            raise self.refused(err) from None
        if new.phase == "stop":
            self.stopped_at = index
        return new

    def cohort(self, entry: Cohort, index: int) -> None:
        p = self.p
        label = f"cohort {index} ({str(entry)!r})"
        if not entry.outcomes:
            raise HistoryError(f"{label}: expected at least one patient (N or T)", index)
        for symbol in entry.outcomes:
            if symbol not in "NT":
                raise HistoryError(f"{label}: unknown symbol {symbol!r} (expected N for no DLT or T for a DLT)", index)
        if not 1 <= entry.dose <= len(p.doses):
            raise HistoryError(f"{label}: unknown dose {entry.dose} (the ladder has doses 1 to {len(p.doses)})", index)
        if self.state.phase == "stop":
            raise HistoryError(f"{label}: the trial stopped after cohort {self.stopped_at} "
                               f"under {self.rule_text(self.state.rule)}", index)
        if self.state.phase == "decide":
            self.state = self.infer(entry, index, label)
        state = self.state
        wanted = state.dose + 1
        if entry.dose != wanted:
            if index == 1 or not self.entries:
                raise HistoryError(f"{label}: the first cohort must be at the starting dose {wanted} "
                                   f"({self.rule_text(state.rule)})", index)
            if entry.dose > self.highest + 2:
                raise HistoryError(f"{label}: skips dose {self.highest + 2}; {self.rule_text(state.rule)} "
                                   f"sends the next patients to dose {wanted}", index)
            raise HistoryError(f"{label}: dose {entry.dose} is not permitted here; {self.rule_text(state.rule)} "
                               f"sends the next patients to dose {wanted}", index)
        self.highest = max(self.highest, state.dose)
        symbols = entry.outcomes
        used = 0
        while used < len(symbols):
            take = symbols[used:used + state.cohort]
            if len(take) < state.cohort:
                self.partial, self.partial_index = take, index
                break
            used += len(take)
            rule, state = self.step(state, take.count("T"))
            self.entries.append(Cohort(entry.dose, take))
            if state.phase == "stop":
                self.stopped_at = index
            if used < len(symbols) and not (state.phase == "treat" and state.dose + 1 == entry.dose):
                after = {"stop": "stops the trial", "decide": "opens a decision"}.get(
                    state.phase, f"sends the next patients to dose {state.dose + 1}")
                raise HistoryError(
                    f"{label}: more patients than the rules allow: after {used}, rule {rule.id!r} "
                    f"({rule.clause}) {after}", index)
        self.state = state

    def infer(self, entry: Cohort, index: int, label: str) -> State:
        state = self.state
        rule = self.p.rule(state.rule or "")
        matches = [o for o in rule.options if option_level(state, o) == entry.dose]
        if len(matches) != 1:
            levels = {o.id: option_level(state, o) for o in rule.options}
            offered = ", ".join(f"{o.id} ({'dose ' + str(levels[o.id]) if levels[o.id] else 'stop'})"
                                for o in rule.options)
            why = "none treats" if not matches else "more than one treats"
            raise HistoryError(f"{label}: at the decision point of rule {rule.id!r} ({rule.clause}) the options are "
                               f"{offered}; {why} at dose {entry.dose}", index)
        self.entries.append(Choice(matches[0].id))
        return self.apply(state, matches[0], index)

    def close_partial(self) -> None:
        """Record an incomplete cohort as it stands (the trial is being terminated around it)."""
        state, seen = self.state, self.partial
        counts = list(state.counts)
        n, tox = counts[state.dose]
        counts[state.dose] = (n + len(seen), tox + seen.count("T"))
        self.entries.append(Cohort(state.dose + 1, seen))
        self.state = attrs.evolve(state, counts=tuple(counts), enrolled=state.enrolled + state.cohort)
        self.partial = ""

    def completions(self) -> list[tuple[Rule, State]]:
        """What the table says for every outcome of the incomplete cohort's remaining patients."""
        state, seen = self.state, self.partial
        t = seen.count("T")
        return [self.step(state, t + u) for u in range(state.cohort - len(seen) + 1)]

    def determined(self, outcomes: list[tuple[Rule, State]] | None = None) -> bool:
        """Whether every completion of the incomplete cohort leads to the same decision.

        More patients at the same dose is never decided early: the cohort in
        progress must be complete before others join it at that dose, or the
        next cohort's outcomes could not be told from the rest of this one.
        """
        views = {_signature(self.p, nxt) for _, nxt in (outcomes or self.completions())}
        if len(views) != 1:
            return False
        (view,) = views
        return not (view[0] == "treat" and view[1] == self.state.dose)

    def resolve_partial(self, next_entry: Entry | None, index: int) -> Decision | None:
        """Settle an incomplete cohort: decide early if determined, else ask for the rest."""
        state, seen = self.state, self.partial
        m, t = len(seen), seen.count("T")
        outcomes = self.completions()
        if self.determined(outcomes):
            _rule, nxt = outcomes[0]
            self.early_rules = tuple(dict.fromkeys(r.id for r, _ in outcomes))
            self.early_pending = state.cohort - m
            counts = list(nxt.counts)
            before = state.counts[state.dose]
            counts[state.dose] = (before[0] + m, before[1] + t)
            self.entries.append(Cohort(state.dose + 1, seen))
            self.state = attrs.evolve(nxt, counts=tuple(counts))
            if self.state.phase == "stop":
                self.stopped_at = self.partial_index
            self.partial = ""
            return None
        rest = state.cohort - m
        if next_entry is not None:
            raise HistoryError(
                f"cohort {index} ('{next_entry}'): cohort {self.partial_index} at dose {state.dose + 1} is incomplete "
                f"({m} of {state.cohort} patients) and its outcome is not yet determined", index)
        entries = [*self.entries, Cohort(state.dose + 1, seen)]
        return Decision(
            "treat", state.dose + 1, rest, None, (), (), state.rule or "start",
            self.clause_of(state.rule),
            f"{m} of {state.cohort} patients evaluated at {_dose_text(self.p, state.dose)}; "
            f"the decision depends on the other {rest}: complete the cohort",
            state.stage, False, format_history(entries), self.p.doses[state.dose].label, None)

    def clause_of(self, label: str | None) -> str:
        rule, _ = _rule_of(self.p, label)
        if rule is not None:
            return rule.clause
        if label == "early-termination" and self.p.early_termination:
            return self.p.early_termination.clause
        return self.p.stage(self.p.start_stage).clause

    def decision(self, determined_early: bool) -> Decision:
        p, state = self.p, self.state
        rule, option = _rule_of(p, state.rule)
        history = format_history(self.entries)
        fired = next((e.dose - 1 for e in reversed(self.entries) if isinstance(e, Cohort)), state.dose)
        n, tox = state.counts[fired]
        counts = f"{tox} DLT{'' if tox == 1 else 's'} in {n} at {_dose_text(p, fired)}"
        if determined_early:
            rules = ", ".join(self.early_rules)
            counts += (f" with {self.early_pending} still under observation; whatever they show, "
                       f"the decision is the same (rule{'s' if len(self.early_rules) > 1 else ''} {rules})")
        if state.phase == "treat":
            if rule is None:
                reason = f"start: treat {state.cohort} at {_dose_text(p, state.dose)}"
            elif option is not None:
                reason = f"people chose {option.label!r}: treat {state.cohort} at {_dose_text(p, state.dose)}"
            else:
                reason = f"{counts}: {rule.paraphrase}" + self.model_note(rule, state, fired)
            signoff = rule.signoff if rule is not None and option is None else ()
            return Decision("treat", state.dose + 1, state.cohort, None, (), signoff, state.rule or "start",
                            self.clause_of(state.rule), reason, state.stage, determined_early, history,
                            p.doses[state.dose].label, None)
        if state.phase == "decide":
            assert rule is not None
            views = tuple(self.option_view(state, o) for o in rule.options)
            return Decision("decide", None, None, None, views, rule.signoff, rule.id, rule.clause,
                            f"{counts}: {rule.paraphrase}", state.stage, determined_early, history)
        mtd = state.mtd + 1 if state.mtd is not None else None
        mtd_label = p.doses[state.mtd].label if state.mtd is not None else None
        if rule is None:
            et = p.early_termination
            reason = f"trial terminated early by decision: {et.paraphrase if et else ''}".rstrip(": ")
            signoff = et.signoff if et else ()
        elif option is not None:
            reason = f"{counts}: people chose {option.label!r}"
            signoff = ()
        else:
            reason = f"{counts}: {rule.paraphrase}" + self.model_note(rule, state, None)
            signoff = rule.signoff
        return Decision("stop", None, None, mtd, (), signoff, state.rule or "", self.clause_of(state.rule),
                        reason, state.stage, determined_early, history, None, mtd_label)

    def model_note(self, rule: Rule, state: State, fired: int | None) -> str:
        """For a rule that follows the protocol's model: the estimates and why the dose was chosen."""
        model = self.p.model
        if model is None or rule.outcome is None or "model" not in (rule.outcome.move, rule.outcome.mtd):
            return ""
        last = next((e for e in reversed(self.entries) if isinstance(e, Cohort)), None)
        if fired is None or last is None:
            return f" ({model.explain(state.counts)})"
        return f" ({model.explain(state.counts, fired, len(last.outcomes), last.dlts)})"

    def option_view(self, state: State, option: Option) -> OptionView:
        try:
            nxt = choose(self.p, state, option)
        except StepError as err:
            raise self.refused(err) from None
        if nxt.phase == "treat":
            return OptionView(option.id, option.label, "treat", nxt.dose + 1, nxt.cohort, None, option.signoff)
        return OptionView(option.id, option.label, "stop", None, None,
                          nxt.mtd + 1 if nxt.mtd is not None else None, option.signoff)


def _signature(protocol: Protocol, state: State) -> tuple[Any, ...]:
    """What a person sees of a state: equal signatures mean the same decision."""
    if state.phase == "decide":
        return ("decide", state.rule, state.dose)
    if state.phase == "stop":
        return ("stop", state.mtd)
    return ("treat", state.dose, state.cohort, state.stage)


def _with_context(protocol: Protocol, state: State, decision: Decision) -> Decision:
    """Add what the protocol says around a decision: DLT window, early termination."""
    window = None
    if decision.action == "treat":
        rule, _ = _rule_of(protocol, state.rule)
        chosen = rule.window if rule is not None and rule.window is not None else protocol.stage(state.stage).window
        window = (chosen.min_days, chosen.max_days) if chosen else None
    et = protocol.early_termination
    early = et.signoff if et is not None and decision.action != "stop" else None
    return attrs.evolve(decision, window_days=window, early_termination=early)


def replay(protocol: Protocol | CompiledProtocol, history: str | Sequence[Entry]) -> tuple[State, Decision]:
    """Walk a history; return the final state and the decision (used by ``paths``)."""
    from ._args import as_entries

    p = as_protocol(protocol)
    entries = as_entries(history)
    run = _Run(p)
    for index, entry in enumerate(entries, 1):
        if run.partial:
            if isinstance(entry, Cohort) and entry.dose == run.state.dose + 1 and run.state.phase == "treat":
                entry = Cohort(entry.dose, run.partial + entry.outcomes)
                run.partial = ""
            elif (isinstance(entry, Choice) and entry.option == "terminate" and p.early_termination is not None
                  and not run.determined()):
                run.close_partial()  # end the trial around patients still under observation
            else:
                run.resolve_partial(entry, index)
        if isinstance(entry, Choice):
            run.choice(entry, index)
        else:
            run.cohort(entry, index)
    determined_early = False
    if run.partial:
        pending = run.resolve_partial(None, len(entries))
        if pending is not None:
            return run.state, _with_context(p, run.state, pending)
        determined_early = True
    return run.state, _with_context(p, run.state, run.decision(determined_early))


def decision_at(protocol: Protocol, state: State, entries: Sequence[Entry]) -> Decision:
    """The decision at a state reached by ``entries`` (complete cohorts only; used by ``paths``)."""
    run = _Run(protocol)
    run.state = state
    run.entries = list(entries)
    return _with_context(protocol, state, run.decision(False))


def decide(protocol: Protocol | CompiledProtocol, history: str | Sequence[Entry] = "") -> Decision:
    """Decide what happens next after ``history``.

    Parameters
    ----------
    protocol : Protocol or CompiledProtocol
    history : str or sequence of entries
        An outcome string such as ``"1NNN 2NTN"`` (decisions optionally in
        brackets), or entries from :func:`~escalation_rules.history.parse_history_json`.

    Returns
    -------
    Decision

    Raises
    ------
    HistoryError
        When the history is impossible under the protocol; the message names
        the cohort and the rule it breaks.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> nct = load_protocol("spec/nct07117175")
    >>> d = decide(nct, "1N")
    >>> d.action, [o.id for o in d.options], d.signoff
    ('decide', ['escalate', 'terminate'], ('investigator', 'sponsor'))
    >>> d = decide(nct, "1N 2N")
    >>> d.action, d.dose, d.cohort_size
    ('treat', 2, 2)
    >>> decide(nct, "1N 3NNN")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.errors.HistoryError: cohort 2 ('3NNN'): ... none treats at dose 3
    """
    return replay(protocol, history)[1]
