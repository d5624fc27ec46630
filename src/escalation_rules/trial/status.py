"""From trial events to a status: a pure function of the events, the protocol and a moment.

The events are applied in time order (events with the same ``at`` in a
fixed order that does not depend on how they were given: repeatedly the
first, in canonical-JSON order, that the state accepts).  Each event is
checked against the trial as it stands at its own time, and refused with a
one-line :class:`~escalation_rules.trial.events.TrialError` when it is
impossible: an unknown patient, an adverse event before the infusion, an
enrolment the current decision does not permit, a signature from a role the
decision does not need, and so on.

The cohort history handed to the decision engine is derived from the
events: each patient counts ``T`` (a DLT), ``N`` (observation window over
with no DLT and nothing pending) or not yet (pending); the evaluated
patients of the current cohort go in as a partial cohort, so the engine
decides early when the rest cannot change the decision, and the answer is to
wait otherwise.

Examples
--------
>>> from escalation_rules import load_protocol
>>> nct = load_protocol("spec/nct07117175")
>>> events = [
...     {"type": "screened", "at": "2025-01-02", "patient": "P01", "eligible": True},
...     {"type": "enrolled", "at": "2025-01-03", "patient": "P01", "dose": 1},
...     {"type": "infused", "at": "2025-01-05", "patient": "P01", "date": "2025-01-05"},
... ]
>>> s = trial_status(nct, events, as_of="2025-01-10")
>>> s.next.action, s.next.until.date().isoformat()
('wait', '2025-02-02')
>>> s = trial_status(nct, events, as_of="2025-02-02")
>>> s.history, s.next.action, s.next.options
('1N', 'sign', ('escalate', 'terminate'))
>>> trial_status(nct, [*events, {"type": "enrolled", "at": "2025-01-06", "patient": "P02", "dose": 1}])
Traceback (most recent call last):
...
escalation_rules.trial.events.TrialError: event 4 (enrolled P02, 2025-01-06T00:00:00Z): P02 was never screened eligible
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs

from .._attrs import value_repr
from ..engine import Decision, decide
from ..errors import EscalationRulesError, HistoryError
from ..graph import as_protocol, explore_merged
from ..history import Choice, Cohort, Entry, format_history
from ..protocol import Dose, Protocol
from .dlt import (
    DltDefinition,
    Episode,
    EpisodeVerdict,
    GradePoint,
    dlt_definition,
    evaluate_episode,
    grade_from_components,
)
from .events import (
    AdverseEventReported,
    AdverseEventUpdated,
    DecisionSigned,
    DltAdjudicated,
    Enrolled,
    Event,
    Infused,
    NotEvaluable,
    PatientScreened,
    ProtocolAmended,
    TrialError,
    canonical_json,
    format_time,
    parse_event,
    parse_time,
    person_key,
)

__all__ = ["CohortStatus", "EpisodeStatus", "NextStep", "PatientStatus", "TrialStatus", "check_events",
           "trial_status"]


# ---------------------------------------------------------------- results


@attrs.frozen
class EpisodeStatus:
    """An adverse-event episode as of the status time."""

    __repr__ = value_repr

    ae: str
    term: str
    category: str
    grade: int
    worst: int
    attribution: str | None
    outcome: str
    rule: str | None
    until: datetime | None
    adjudicated: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ae": self.ae, "term": self.term, "category": self.category, "grade": self.grade,
                "worst": self.worst, "attribution": self.attribution, "outcome": self.outcome, "rule": self.rule,
                "until": format_time(self.until) if self.until else None, "adjudicated": self.adjudicated}


@attrs.frozen
class PatientStatus:
    """One enrolled patient.

    ``outcome`` is ``"dlt"``, ``"no-dlt"``, ``"pending"`` or
    ``"not-evaluable"``; ``until`` is when a pending outcome becomes known
    (``None`` when it waits on something to be recorded: the infusion, an
    attribution).
    """

    __repr__ = value_repr

    patient: str
    dose: int
    cohort: int
    enrolled: datetime
    infused: date | None
    window_days: tuple[int, int]
    window_closes: datetime | None
    outcome: str
    until: datetime | None
    reason: str
    episodes: tuple[EpisodeStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"patient": self.patient, "dose": self.dose, "cohort": self.cohort,
                "enrolled": format_time(self.enrolled),
                "infused": self.infused.isoformat() if self.infused else None,
                "window_days": list(self.window_days),
                "window_closes": format_time(self.window_closes) if self.window_closes else None,
                "outcome": self.outcome, "until": format_time(self.until) if self.until else None,
                "reason": self.reason, "episodes": [e.to_dict() for e in self.episodes]}


@attrs.frozen
class CohortStatus:
    """A cohort: its dose, its size, its patients and their outcomes so far (``N``, ``T``, ``.`` pending)."""

    __repr__ = value_repr

    index: int
    dose: int
    size: int
    patients: tuple[str, ...]
    outcomes: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"cohort": self.index, "dose": self.dose, "size": self.size, "patients": list(self.patients),
                "outcomes": self.outcomes}


@attrs.frozen
class NextStep:
    """What the trial waits for now.

    Attributes
    ----------
    action : str
        ``"enrol"`` (``places`` patients at ``dose``, into ``cohort``),
        ``"wait"`` (for the observation of ``waiting`` until ``until``),
        ``"sign"`` (``roles`` must sign one of ``options``) or ``"stop"``.
    point : str or None
        For ``sign``: the decision point the signatures belong to.
    """

    __repr__ = value_repr

    action: str
    reason: str
    dose: int | None = None
    places: int = 0
    cohort: int | None = None
    until: datetime | None = None
    waiting: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    signed: Mapping[str, str] = attrs.field(factory=dict)
    point: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"action": self.action, "reason": self.reason, "dose": self.dose, "places": self.places,
                "cohort": self.cohort, "until": format_time(self.until) if self.until else None,
                "waiting": list(self.waiting), "options": list(self.options), "roles": list(self.roles),
                "signed": dict(self.signed), "point": self.point}


@attrs.frozen
class TrialStatus:
    """The state of a trial at a moment: cohorts, patients, the engine's decision and the next step.

    Attributes
    ----------
    decision : Decision
        What the decision engine says after the derived history (the
        partial current cohort included).
    next : NextStep
        What the trial waits for, sign-offs and observation windows included.
    history : str
        The derived history as an outcome string, decisions in brackets.
    observing : tuple of str
        Patients still under observation (pending), in any cohort.
    """

    __repr__ = value_repr

    protocol: str
    as_of: datetime
    events: int
    cohorts: tuple[CohortStatus, ...]
    patients: tuple[PatientStatus, ...]
    decision: Decision
    next: NextStep
    history: str
    observing: tuple[str, ...]
    amendments: tuple[str, ...]
    dlt_template: bool
    cap: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``escalation-rules trial status --json``."""
        return {"protocol": self.protocol, "as_of": format_time(self.as_of), "events": self.events,
                "history": self.history, "next": self.next.to_dict(), "decision": self.decision.to_dict(),
                "cohorts": [c.to_dict() for c in self.cohorts], "patients": [p.to_dict() for p in self.patients],
                "observing": list(self.observing), "amendments": list(self.amendments),
                "dlt_template": self.dlt_template, "cap": self.cap}

    def text(self) -> str:
        """The status for a person, a few lines."""
        lines = [f"{self.protocol} as of {format_time(self.as_of)} ({self.events} events)",
                 f"history: {self.history or '(none)'}"]
        for c in self.cohorts:
            active = len(c.outcomes.replace("x", ""))
            lines.append(f"cohort {c.index}: dose {c.dose}, {active}/{c.size} [{c.outcomes}] {' '.join(c.patients)}"
                         + (" (x: not evaluable, replaced)" if "x" in c.outcomes else ""))
        for p in self.patients:
            if p.outcome == "pending":
                until = format_time(p.until) if p.until else "more is recorded"
                lines.append(f"  {p.patient} pending until {until}: {p.reason}")
        n = self.next
        if n.action == "enrol":
            lines.append(f"next: enrol {n.places} patient(s) at dose {n.dose} (cohort {n.cohort})")
        elif n.action == "wait":
            lines.append(f"next: wait until {format_time(n.until) if n.until else 'more is recorded'} "
                         f"for {', '.join(n.waiting)}")
        elif n.action == "sign":
            signed = "; signed: " + ", ".join(f"{r} ({o})" for r, o in n.signed.items()) if n.signed else ""
            lines.append(f"next: sign-off by {', '.join(n.roles)} on one of: {', '.join(n.options)}{signed}")
        else:
            d = self.decision
            mtd = f"dose {d.mtd} ({d.mtd_label})" if d.mtd is not None else "not determined"
            lines.append(f"next: stop; MTD {mtd}")
        lines.append(f"reason: {n.reason}")
        lines.append(f"rule: {self.decision.rule} [{self.decision.clause}]")
        if self.observing and n.action != "wait":
            lines.append(f"still under observation: {', '.join(self.observing)}")
        if self.dlt_template:
            lines.append("note: the DLT definition is a template (dlt.template = true)")
        return "\n".join(lines)


# ---------------------------------------------------------------- the fold


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@attrs.define
class _Episode:
    __repr__ = value_repr

    ae: str
    term: str
    category: str
    points: list[GradePoint]
    attribution: str | None
    adjudicated: bool | None = None


@attrs.define
class _Patient:
    __repr__ = value_repr

    id: str
    dose: int
    cohort: int
    enrolled: datetime
    window: tuple[int, int]
    infused: date | None = None
    not_evaluable: str | None = None
    assessed: datetime | None = None
    episodes: dict[str, _Episode] = attrs.field(factory=dict)


@attrs.define
class _Cohort:
    __repr__ = value_repr

    index: int
    dose: int
    size: int
    window: tuple[int, int]
    patients: list[str] = attrs.field(factory=list)


@attrs.define
class _Trial:
    __repr__ = value_repr

    protocol: Protocol
    dlt: DltDefinition
    screened: dict[str, PatientScreened] = attrs.field(factory=dict)
    patients: dict[str, _Patient] = attrs.field(factory=dict)
    cohorts: list[_Cohort] = attrs.field(factory=list)
    choices: list[tuple[int, Choice]] = attrs.field(factory=list)
    # decision point -> role -> (person, option, who: the person id, else the normalised name)
    signatures: dict[str, dict[str, tuple[str, str, str]]] = attrs.field(factory=dict)
    # for each early-termination signature (by role): the decision point open when it was signed, if any
    terminate_points: dict[str, str | None] = attrs.field(factory=dict)
    gates: set[str] = attrs.field(factory=set)
    terminated: datetime | None = None
    amendments: list[str] = attrs.field(factory=list)
    count: int = 0

    def clone(self) -> _Trial:
        """An independent copy, made field by field (cheap: the screened set is copied, not deep-copied)."""
        return attrs.evolve(
            self, screened=dict(self.screened),
            patients={pid: _clone_patient(pat) for pid, pat in self.patients.items()},
            cohorts=[attrs.evolve(c, patients=list(c.patients)) for c in self.cohorts],
            choices=list(self.choices), signatures={k: dict(v) for k, v in self.signatures.items()},
            terminate_points=dict(self.terminate_points), gates=set(self.gates), amendments=list(self.amendments))


def _clone_patient(pat: _Patient) -> _Patient:
    return attrs.evolve(pat, episodes={k: attrs.evolve(e, points=list(e.points)) for k, e in pat.episodes.items()})


def _patient_view(trial: _Trial, pat: _Patient, t: datetime) -> PatientStatus:
    episodes: list[EpisodeStatus] = []
    close = None
    if pat.not_evaluable is not None:
        outcome, until, reason = "not-evaluable", None, pat.not_evaluable
    elif pat.infused is None:
        outcome, until, reason = "pending", None, "enrolled, not yet infused"
    else:
        infusion = _midnight(pat.infused)
        close = pat.assessed or infusion + timedelta(days=pat.window[1])
        verdicts: list[tuple[_Episode, EpisodeVerdict]] = []
        for ep in pat.episodes.values():
            if ep.adjudicated is not None:
                verdict = EpisodeVerdict("dlt" if ep.adjudicated else "no-dlt", "adjudicated", at=ep.points[0].at)
            elif ep.points[0].at >= close:
                verdict = EpisodeVerdict("no-dlt", None, reason="onset after the observation window")
            else:
                verdict = evaluate_episode(trial.dlt, Episode(pat.id, ep.ae, ep.term, ep.category,
                                                              tuple(ep.points), ep.attribution),
                                           infusion=infusion, close=close, as_of=t)
            verdicts.append((ep, verdict))
            current = Episode(pat.id, ep.ae, ep.term, ep.category, tuple(ep.points), ep.attribution)
            episodes.append(EpisodeStatus(ep.ae, ep.term, ep.category, current.grade_at(t), current.worst,
                                          ep.attribution, verdict.outcome, verdict.rule, verdict.until,
                                          ep.adjudicated is not None))
        dlts = [(ep, v) for ep, v in verdicts if v.outcome == "dlt"]
        pending = [(ep, v) for ep, v in verdicts if v.outcome == "pending"]
        if dlts:
            ep, v = dlts[0]
            outcome, until = "dlt", None
            reason = f"DLT: {ep.term} ({ep.ae}), " + (
                "adjudicated" if v.rule == "adjudicated" else f"rule {v.rule!r}: {v.reason}")
        elif t < close or pending:
            outcome = "pending"
            undated = any(v.until is None for _, v in pending)
            until = None if undated else max([close, *[v.until for _, v in pending if v.until is not None]])
            if pending:
                ep, v = pending[0]
                reason = f"{ep.term} ({ep.ae}): {v.reason}"
            else:
                reason = f"observation window closes {format_time(close)}"
        else:
            outcome, until = "no-dlt", None
            reason = "observation " + ("ended by safety assessment" if pat.assessed else "window over") + \
                     " with no DLT"
    return PatientStatus(pat.id, pat.dose, pat.cohort, pat.enrolled, pat.infused, pat.window, close, outcome,
                         until, reason, tuple(episodes))


def _window_of(trial: _Trial, decision: Decision) -> tuple[int, int]:
    if decision.window_days:
        return (decision.window_days[0], decision.window_days[1])
    if trial.dlt.default_window_days is not None:
        return (trial.dlt.default_window_days, trial.dlt.default_window_days)
    raise TrialError(f"{trial.protocol.source}: no DLT observation window for stage {decision.stage!r}: "
                     f"give the stage window_days or dlt.default_window_days")


def _evaluate(trial: _Trial, t: datetime) -> TrialStatus:
    """The status of the trial as it stands, at moment ``t``."""
    p = trial.protocol
    views = {pid: _patient_view(trial, pat, t) for pid, pat in trial.patients.items()}
    entries: list[Entry] = [c for after, c in trial.choices if after == 0]
    cohorts: list[CohortStatus] = []
    for coh in trial.cohorts:
        symbols = ""
        outs = ""
        for pid in coh.patients:
            o = views[pid].outcome
            symbols += {"dlt": "T", "no-dlt": "N", "pending": ".", "not-evaluable": "x"}[o]
            if o in ("dlt", "no-dlt"):
                outs += "T" if o == "dlt" else "N"
        cohorts.append(CohortStatus(coh.index, coh.dose, coh.size, tuple(coh.patients), symbols))
        if outs:
            entries.append(Cohort(coh.dose, outs))
        entries.extend(c for after, c in trial.choices if after == coh.index)
    try:
        decision = decide(p, entries)
    except HistoryError as err:
        raise TrialError(f"the derived history {format_history(entries)!r} is impossible under the protocol: "
                         f"{err}") from None
    except EscalationRulesError as err:  # e.g. a rule that cannot apply after an amendment
        raise TrialError(f"the protocol cannot decide after {format_history(entries)!r}: "
                         f"{str(err).splitlines()[0]}") from None
    observing = tuple(pid for pid, v in views.items() if v.outcome == "pending")
    current = trial.cohorts[-1] if trial.cohorts else None
    evaluated = sum(1 for pid in current.patients if views[pid].outcome in ("dlt", "no-dlt")) if current else 0
    # a cohort with nobody evaluated yet has no entry: determined_early then speaks of an earlier cohort
    undetermined = current is not None and evaluated < current.size and not (evaluated and decision.determined_early)
    nxt: NextStep
    if trial.terminated is not None:
        et = p.early_termination
        decision = attrs.evolve(decision, action="stop", dose=None, cohort_size=None, mtd=None, mtd_label=None,
                                options=(), signoff=et.signoff if et else (), rule="early-termination",
                                clause=et.clause if et else "", early_termination=None,
                                reason=f"trial terminated early by decision signed {format_time(trial.terminated)}")
        nxt = NextStep("stop", decision.reason)
    elif current is not None and undetermined:
        pending = [pid for pid in current.patients if views[pid].outcome == "pending"]
        places = current.size - evaluated - len(pending)
        if places > 0:
            nxt = NextStep("enrol", f"cohort {current.index} at dose {current.dose} has {places} open place(s) "
                                    f"({evaluated} evaluated, {len(pending)} under observation)",
                           current.dose, places, current.index)
        else:
            untils = [views[pid].until for pid in pending]
            until = None if any(u is None for u in untils) else max(u for u in untils if u is not None)
            nxt = NextStep("wait", f"cohort {current.index} at dose {current.dose}: {evaluated} of {current.size} "
                                   f"evaluated; the decision depends on {', '.join(pending)}",
                           current.dose, 0, current.index, until, tuple(pending))
    else:
        nxt = _decision_step(trial, decision, current, evaluated)
    history = format_history(entries)
    return TrialStatus(p.id, t, trial.count, tuple(cohorts), tuple(views.values()), decision, nxt, history,
                       observing, tuple(trial.amendments), trial.dlt.template, p.cap)


def _point(trial: _Trial, decision: Decision) -> str:
    return f"{len(trial.cohorts)}:{decision.rule}:{decision.action}"


def _decision_step(trial: _Trial, decision: Decision, current: _Cohort | None, evaluated: int) -> NextStep:
    point = _point(trial, decision)
    signed = {role: option for role, (_, option, _) in trial.signatures.get(point, {}).items()}
    if decision.action == "decide":
        return NextStep("sign", decision.reason, options=tuple(o.id for o in decision.options),
                        roles=decision.signoff, signed=signed, point=point)
    if decision.signoff and point not in trial.gates:
        return NextStep("sign", f"{decision.reason} (needs sign-off: {', '.join(decision.signoff)})",
                        options=(decision.action,), roles=decision.signoff, signed=signed, point=point)
    if decision.action == "stop":
        if current is not None and evaluated < current.size and decision.mtd == current.dose:
            # the rest of the cohort is treated at the recommended dose (e.g. a fill stage)
            open_places = current.size - len(current.patients) + sum(
                1 for pid in current.patients if trial.patients[pid].not_evaluable is not None)
            if open_places > 0:
                return NextStep("enrol", f"{decision.reason}; {open_places} place(s) of cohort {current.index} "
                                         f"remain at the recommended dose", current.dose, open_places, current.index)
        return NextStep("stop", decision.reason)
    assert decision.dose is not None and decision.cohort_size is not None
    return NextStep("enrol", decision.reason, decision.dose, decision.cohort_size, len(trial.cohorts) + 1)


# ---------------------------------------------------------------- applying events


def _refuse(message: str) -> TrialError:
    return TrialError(message)


def _patient(trial: _Trial, pid: str) -> _Patient:
    if pid not in trial.patients:
        raise _refuse(f"unknown patient {pid!r} (not enrolled)")
    return trial.patients[pid]


def _infused(pat: _Patient) -> date:
    if pat.infused is None:
        raise _refuse(f"{pat.id} has not been infused")
    return pat.infused


def _grade(trial: _Trial, category: str, grade: int | None, components: Mapping[str, Any] | None) -> int:
    scale = trial.dlt.scale(category)
    if components is None:
        assert grade is not None
        return grade
    if scale == "ctcae":
        raise _refuse(f"components: category {category!r} is graded by CTCAE: give a grade")
    try:
        computed = grade_from_components(scale, components)
    except EscalationRulesError as err:
        raise _refuse(str(err)) from None
    if grade is not None and grade != computed:
        raise _refuse(f"grade: {grade} does not match the ASTCT grade {computed} of the components given")
    return computed


def _apply(trial: _Trial, ev: Event) -> None:
    """Check ``ev`` against the trial at its time and apply it (refuses with TrialError)."""
    t = ev.at
    if isinstance(ev, PatientScreened):
        if ev.patient in trial.patients:
            raise _refuse(f"{ev.patient} is already enrolled")
        trial.screened[ev.patient] = ev
    elif isinstance(ev, Enrolled):
        _enrol(trial, ev)
    elif isinstance(ev, Infused):
        pat = _patient(trial, ev.patient)
        if pat.infused is not None:
            raise _refuse(f"{pat.id} was already infused on {pat.infused.isoformat()}")
        if pat.not_evaluable is not None:
            raise _refuse(f"{pat.id} is not evaluable ({pat.not_evaluable})")
        if ev.date < pat.enrolled.date():
            raise _refuse(f"infusion date {ev.date.isoformat()} is before the enrolment ({format_time(pat.enrolled)})")
        if _midnight(ev.date) > t:
            raise _refuse(f"infusion date {ev.date.isoformat()} is after the event's time {format_time(t)}")
        pat.infused = ev.date
    elif isinstance(ev, AdverseEventReported):
        pat = _patient(trial, ev.patient)
        infused = _infused(pat) if pat.infused is not None else None
        if infused is None:
            raise _refuse(f"adverse event before infusion: {pat.id} has not been infused")
        if ev.onset < _midnight(infused):
            raise _refuse(f"adverse event before infusion: onset {format_time(ev.onset)} is before the infusion "
                          f"on {infused.isoformat()}")
        if ev.onset > t:
            raise _refuse(f"onset {format_time(ev.onset)} is after the event's time {format_time(t)}")
        if ev.ae in pat.episodes:
            raise _refuse(f"{pat.id} already has an adverse event {ev.ae!r} (use ae_updated)")
        if ev.category not in trial.dlt.categories:
            raise _refuse(f"category: unknown {ev.category!r} (the DLT definition declares "
                          f"{', '.join(trial.dlt.categories)})")
        grade = _grade(trial, ev.category, ev.grade, ev.components)
        pat.episodes[ev.ae] = _Episode(ev.ae, ev.term, ev.category, [GradePoint(ev.onset, grade)], ev.attribution)
    elif isinstance(ev, AdverseEventUpdated):
        pat = _patient(trial, ev.patient)
        if ev.ae not in pat.episodes:
            raise _refuse(f"{pat.id} has no adverse event {ev.ae!r} (report it first)")
        ep = pat.episodes[ev.ae]
        last = ep.points[-1].at
        if ev.date is not None:
            if ev.date < last or ev.date > t:
                raise _refuse(f"date {format_time(ev.date)}: expected between the episode's last change "
                              f"{format_time(last)} and the event's time {format_time(t)}")
            ep.points.append(GradePoint(ev.date, _grade(trial, ep.category, ev.grade, ev.components)))
        if ev.resolved is not None:
            if ev.resolved < ep.points[-1].at or ev.resolved > t:
                raise _refuse(f"resolved {format_time(ev.resolved)}: expected between the episode's last change "
                              f"{format_time(ep.points[-1].at)} and the event's time {format_time(t)}")
            ep.points.append(GradePoint(ev.resolved, 0))
        if ev.attribution is not None:
            ep.attribution = ev.attribution
    elif isinstance(ev, DltAdjudicated):
        pat = _patient(trial, ev.patient)
        _role(trial, ev.role)
        if ev.ae is not None:
            if ev.ae not in pat.episodes:
                raise _refuse(f"{pat.id} has no adverse event {ev.ae!r}")
            pat.episodes[ev.ae].adjudicated = ev.dlt
        else:
            infused = _infused(pat)
            earliest = _midnight(infused) + timedelta(days=pat.window[0])
            if t < earliest:
                raise _refuse(f"safety assessment of {pat.id} before day {pat.window[0]} of its "
                              f"{pat.window[0]}-{pat.window[1]} day window (earliest {format_time(earliest)})")
            if pat.assessed is not None:
                raise _refuse(f"{pat.id}'s safety assessment was already recorded ({format_time(pat.assessed)})")
            if t < _midnight(infused) + timedelta(days=pat.window[1]):
                pat.assessed = t
    elif isinstance(ev, NotEvaluable):
        pat = _patient(trial, ev.patient)
        if pat.not_evaluable is not None:
            raise _refuse(f"{pat.id} is already not evaluable")
        view = _patient_view(trial, pat, t)
        if view.outcome in ("dlt", "no-dlt"):
            raise _refuse(f"{pat.id} is already evaluated ({view.outcome}): {view.reason}")
        pat.not_evaluable = ev.reason
    elif isinstance(ev, DecisionSigned):
        _sign(trial, ev)
    elif isinstance(ev, ProtocolAmended):
        _amend(trial, ev)
    trial.count += 1
    if not isinstance(ev, PatientScreened):  # a screening cannot change the history
        _evaluate(trial, t)  # the trial must still make sense


def _role(trial: _Trial, role: str) -> None:
    if role not in trial.protocol.roles:
        raise _refuse(f"role {role!r} is not named by the protocol (roles: {', '.join(trial.protocol.roles)})")


def _enrol(trial: _Trial, ev: Enrolled) -> None:
    if ev.patient in trial.patients:
        other = trial.patients[ev.patient]
        raise _refuse(f"duplicate enrolment: {ev.patient} was enrolled at dose {other.dose} "
                      f"on {format_time(other.enrolled)}")
    screening = trial.screened.get(ev.patient)
    if screening is None:
        raise _refuse(f"{ev.patient} was never screened eligible")
    if screening.eligible is None:
        needs = f" ({', '.join(screening.reasons)})" if screening.reasons else ""
        raise _refuse(f"{ev.patient}'s screening on {format_time(screening.at)} was undetermined{needs}: record a "
                      f"new screening once the missing data is in")
    if not screening.eligible:
        raise _refuse(f"{ev.patient} was screened not eligible")
    status = _evaluate(trial, ev.at)
    step = status.next
    if step.action != "enrol":
        raise _refuse(f"enrolment at dose {ev.dose} is not permitted now: next step is {step.action} ({step.reason})")
    if ev.dose != step.dose:
        raise _refuse(f"enrolment at dose {ev.dose} is not permitted: the current decision treats at dose "
                      f"{step.dose} ({step.reason})")
    assert step.cohort is not None
    if ev.cohort is not None and ev.cohort != step.cohort:
        raise _refuse(f"cohort {ev.cohort}: the next place is in cohort {step.cohort}")
    if step.cohort > len(trial.cohorts):
        window = _window_of(trial, status.decision)
        trial.cohorts.append(_Cohort(step.cohort, ev.dose, step.places, window))
    cohort = trial.cohorts[step.cohort - 1]
    cohort.patients.append(ev.patient)
    trial.patients[ev.patient] = _Patient(ev.patient, ev.dose, cohort.index, ev.at, cohort.window)


def _sign(trial: _Trial, ev: DecisionSigned) -> None:
    p = trial.protocol
    _role(trial, ev.role)
    status = _evaluate(trial, ev.at)
    step, decision = status.next, status.decision
    if step.action == "sign" and ev.option in step.options:
        if ev.rule is not None and ev.rule != decision.rule:
            raise _refuse(f"rule: the open decision is rule {decision.rule!r} (got {ev.rule!r})")
        point = step.point or ""
        if decision.action == "decide":
            view = next(o for o in decision.options if o.id == ev.option)
            required = view.signoff or decision.signoff
        else:
            required = decision.signoff
        kind = "decide" if decision.action == "decide" else "gate"
    elif ev.option == "terminate":
        if p.early_termination is None:
            raise _refuse("option 'terminate': the protocol does not allow early termination by decision")
        if step.action == "stop":
            raise _refuse(f"option 'terminate': the trial has already stopped ({step.reason})")
        point, required, kind = "terminate", p.early_termination.signoff, "terminate"
    elif step.action == "sign":
        raise _refuse(f"option {ev.option!r} is not offered (offered: {', '.join(step.options)}"
                      f"{', terminate' if p.early_termination and 'terminate' not in step.options else ''})")
    else:
        raise _refuse(f"no decision awaits signatures now (next step: {step.action}: {step.reason})")
    if ev.role not in required:
        raise _refuse(f"role {ev.role!r} is not named for this decision (required: {', '.join(required)})")
    signatures = trial.signatures.setdefault(point, {})
    if ev.role in signatures:
        person, option, _ = signatures[ev.role]
        raise _refuse(f"{ev.role} already signed this decision ({option!r} by {person})")
    # at an open decision point, an early termination and the point's options are one choice: a role signs
    # once, and every signature is for the same option
    open_point = step.point if step.action == "sign" else None
    others = dict(signatures)
    if open_point is not None:
        others.update(_signed_at(trial, open_point))
    if ev.role in others:
        person, option, _ = others[ev.role]
        raise _refuse(f"{ev.role} already signed at this decision point ({option!r} by {person}); "
                      f"a role signs once")
    who = _who(ev)
    for role, (person, option, other) in others.items():
        # the same person id, or (unless both give ids, which then decide) the same normalised name
        both_ids = other.startswith("id:") and who.startswith("id:")
        if other == who or (not both_ids and person_key(person) == person_key(ev.person)):
            same = f" (as {person!r})" if person != ev.person else ""
            raise _refuse(f"{ev.person} already signed this decision as {role}{same}; one person cannot sign in "
                          f"two roles")
        if option != ev.option:
            raise _refuse(f"{role} signed {option!r} at this decision point; all signatures must be for the same "
                          f"option (got {ev.option!r})")
    signatures[ev.role] = (ev.person, ev.option, who)
    if kind == "terminate":
        trial.terminate_points[ev.role] = open_point
    if set(required) <= set(signatures):
        if kind == "decide":
            trial.choices.append((len(trial.cohorts), Choice(ev.option, tuple(required))))
        elif kind == "gate":
            trial.gates.add(point)
        else:
            trial.terminated = ev.at


def _who(ev: DecisionSigned) -> str:
    """Who signs: the stable person id when given, else the normalised name (:func:`.events.person_key`)."""
    return f"id:{person_key(ev.person_id)}" if ev.person_id is not None else f"name:{person_key(ev.person)}"


def _signed_at(trial: _Trial, point: str) -> dict[str, tuple[str, str, str]]:
    """Every signature given while decision point ``point`` was open: for its options and for early termination."""
    signed = dict(trial.signatures.get(point, {}))
    for role, sig in trial.signatures.get("terminate", {}).items():
        if trial.terminate_points.get(role) == point:
            signed.setdefault(role, sig)
    return signed


def _check_ladder(doses: Sequence[Dose], changed: int, spec: Mapping[str, Any]) -> None:
    """An amended dose (0-based ``changed``) keeps the ladder's unit and its increasing order of amounts."""
    dose = doses[changed]
    units = {d.unit for i, d in enumerate(doses) if i != changed and d.unit is not None}
    if "unit" in spec and units and dose.unit not in units:
        raise _refuse(f"dose.unit: expected the ladder's unit {' or '.join(sorted(units))!r} (got {dose.unit!r})")
    if dose.amount is None:
        return
    same = [(i, d.amount) for i, d in enumerate(doses) if i != changed and d.amount is not None
            and d.unit == dose.unit]
    below = [(i, a) for i, a in same if i < changed]
    above = [(i, a) for i, a in same if i > changed]
    unit = f" {dose.unit}" if dose.unit else ""
    if below and dose.amount <= below[-1][1]:
        raise _refuse(f"dose.amount: the ladder goes lowest first: expected more than {below[-1][1]:g}{unit} "
                      f"(dose {below[-1][0] + 1}) (got {dose.amount:g})")
    if above and dose.amount >= above[0][1]:
        raise _refuse(f"dose.amount: the ladder goes lowest first: expected less than {above[0][1]:g}{unit} "
                      f"(dose {above[0][0] + 1}) (got {dose.amount:g})")


#: The largest enrolment cap and the most doses of a protocol in the trial record (as created, and as amended):
#: an amended protocol is built and checked whenever the events are folded, and within these limits that takes
#: seconds at most.
TRIAL_CAP = 1000
TRIAL_DOSES = 100


def limit_problem(cap: int, doses: int) -> str | None:
    """What is wrong with a trial protocol's cap and number of doses under the limits, or None.

    Examples
    --------
    >>> limit_problem(18, 4) is None, limit_problem(100_000, 4)
    (True, 'cap: at most 1,000 in a trial record (a protocol within it is checked in seconds; got 100,000)')
    """
    if cap > TRIAL_CAP:
        return f"cap: at most {TRIAL_CAP:,} in a trial record (a protocol within it is checked in seconds; got {cap:,})"
    if doses > TRIAL_DOSES:
        return f"doses: at most {TRIAL_DOSES} in a trial record (got {doses})"
    return None


def _amend(trial: _Trial, ev: ProtocolAmended) -> None:
    p = trial.protocol
    used = {c.dose for c in trial.cohorts}
    doses = list(p.doses)
    stages = list(p.stages)
    cap = p.cap
    spec = dict(ev.dose or {})

    def make(base: Dose | None) -> Dose:
        values = attrs.asdict(base) if base else {"id": spec.get("id"), "label": spec.get("id"), "amount": None,
                                                  "unit": None, "provisional": False}
        values.update(spec)
        try:
            return Dose(str(values["id"]), str(values["label"]),
                        float(values["amount"]) if values["amount"] is not None else None,
                        str(values["unit"]) if values["unit"] is not None else None, bool(values["provisional"]))
        except (TypeError, ValueError):
            raise _refuse(f"dose: expected id and label strings, a numeric amount (got {spec!r})") from None

    if ev.change == "add-dose":
        dose = make(None)
        if any(d.id == dose.id for d in doses):
            raise _refuse(f"dose.id: dose {dose.id!r} already exists")
        owner = ev.stage or next(s.id for s in stages if doses[-1].id in s.doses)
        index = next((i for i, s in enumerate(stages) if s.id == owner), None)
        if index is None:
            raise _refuse(f"stage: unknown stage {owner!r} (known: {', '.join(s.id for s in stages)})")
        stages[index] = attrs.evolve(stages[index], doses=(*stages[index].doses, dose.id))
        doses.append(dose)
        _check_ladder(doses, len(doses) - 1, spec)
    elif ev.change in ("change-dose", "remove-dose"):
        assert ev.level is not None
        if not 1 <= ev.level <= len(doses):
            raise _refuse(f"level: unknown dose {ev.level} (the ladder has doses 1 to {len(doses)})")
        old = doses[ev.level - 1]
        if ev.change == "change-dose":
            if "id" in spec and spec["id"] != old.id:
                raise _refuse(f"dose.id: a dose keeps its id ({old.id!r}); change its label or amount")
            doses[ev.level - 1] = make(old)
            _check_ladder(doses, ev.level - 1, spec)
        else:
            if ev.level != len(doses):
                raise _refuse(f"level: only the top dose ({len(doses)}) may be removed (got {ev.level})")
            if ev.level in used:
                raise _refuse(f"level: dose {ev.level} has patients and cannot be removed")
            doses.pop()
            stages = [attrs.evolve(s, doses=tuple(d for d in s.doses if d != old.id)) for s in stages]
    else:
        assert ev.cap is not None
        enrolled = sum(1 for pat in trial.patients.values() if pat.not_evaluable is None)
        if ev.cap < enrolled:
            raise _refuse(f"cap: {ev.cap} is below the {enrolled} patients already enrolled")
        cap = ev.cap
    problem = limit_problem(cap, len(doses))
    if problem:
        raise _refuse(problem)
    amended = attrs.evolve(p, doses=tuple(doses), stages=tuple(stages), cap=cap)
    try:
        explore_merged(amended)  # the build checks, on merged states (no full graph, no networkx)
    except EscalationRulesError as err:
        raise _refuse(f"the amended protocol fails its checks: {str(err).splitlines()[0]}") from None
    trial.protocol = amended
    trial.amendments.append(f"{ev.reference}: {ev.change}")


# ---------------------------------------------------------------- public functions


def _coerce(events: Iterable[Event | Mapping[str, Any]]) -> list[Event]:
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
        raise TypeError(f"events: expected a list of events or their JSON objects (got {type(events).__name__})")
    result = []
    for i, ev in enumerate(events):
        if isinstance(ev, Mapping):
            result.append(parse_event(dict(ev), f"event {i + 1}"))
        elif isinstance(ev, typing.get_args(Event)):
            result.append(ev)
        else:
            raise TypeError(f"events[{i}]: expected an event or its JSON object (got {type(ev).__name__})")
    return result


def _describe(ev: Event) -> str:
    who = getattr(ev, "patient", None) or getattr(ev, "option", None) or getattr(ev, "reference", "")
    return f"{ev.TYPE} {who}, {format_time(ev.at)}"


def fold(protocol: Protocol, events: Sequence[Event], labels: Sequence[str] | None = None,
         until: datetime | None = None) -> _Trial:
    """Apply events in time order (ties in a canonical order); refuse the first that fails.

    ``labels`` name the events in error messages (default ``event N``).
    """
    labels = list(labels) if labels is not None else [f"event {i + 1}" for i in range(len(events))]
    return _fold_onto(_Trial(protocol, dlt_definition(protocol)), events, labels, until)


def _fold_onto(trial: _Trial, events: Sequence[Event], labels: Sequence[str], until: datetime | None = None) -> _Trial:
    """Apply ``events`` to ``trial`` (changed in place, also when an event is refused) in time order."""
    order = sorted(range(len(events)), key=lambda i: events[i].at)
    groups: list[list[int]] = []
    for i in order:
        if until is not None and events[i].at > until:
            continue
        if groups and events[groups[-1][0]].at == events[i].at:
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups:
        if len(group) == 1:
            i = group[0]
            try:
                _apply(trial, events[i])
            except TrialError as err:
                raise TrialError(f"{labels[i]} ({_describe(events[i])}): {err}", i) from None
            continue
        remaining = sorted(group, key=lambda i: (canonical_json(events[i]), i))
        while remaining:
            failure: tuple[int, TrialError] | None = None
            for i in remaining:
                # a screening is refused before it changes anything; other events may be refused after
                attempt = trial if isinstance(events[i], PatientScreened) else trial.clone()
                try:
                    _apply(attempt, events[i])
                except TrialError as problem:
                    failure = failure or (i, problem)
                    continue
                trial = attempt
                remaining.remove(i)
                failure = None
                break
            if failure is not None:
                index, refused = failure
                raise TrialError(f"{labels[index]} ({_describe(events[index])}): {refused}", index) from None
    return trial


def _key(event: Event) -> tuple[datetime, str]:
    """Where an event falls in the order of application: its time, then its canonical JSON."""
    return (event.at, canonical_json(event))


#: Extend keeps a checkpoint (the trial before a batch) at least this many events apart ...
CHECKPOINT_EVERY = 16
#: ... and this many checkpoints: an event dated before the latest ones is applied from the nearest checkpoint
#: before it, so only the events after that checkpoint are applied again.
CHECKPOINTS = 8


@attrs.frozen
class _Checkpoint:
    """The trial after ``events[:index]``, every one of them dated before ``at`` (every later one at or after)."""

    __repr__ = value_repr

    at: datetime
    index: int
    trial: _Trial


@attrs.frozen
class Folded:
    """Events already folded, kept so that later events are applied without re-deriving the trial.

    ``last`` is the greatest :func:`_key` among ``events``; ``trial`` is the
    state after all of them, ``checkpoints`` earlier states.  Nothing here is
    changed once made: :func:`extend` works on copies.
    """

    __repr__ = value_repr

    protocol: Protocol
    events: tuple[Event, ...]
    trial: _Trial
    last: tuple[datetime, str] | None
    checkpoints: tuple[_Checkpoint, ...] = ()
    #: for each patient, the latest time of an event about them
    mentions: Mapping[str, datetime] = attrs.field(factory=dict)


def _last(events: Sequence[Event]) -> tuple[datetime, str] | None:
    """The greatest :func:`_key` (the canonical JSON made only for the events at the latest time)."""
    if not events:
        return None
    latest = max(ev.at for ev in events)
    return max(_key(ev) for ev in events if ev.at == latest)


def _mentions(base: Mapping[str, datetime], events: Iterable[Event]) -> dict[str, datetime]:
    out = dict(base)
    for ev in events:
        pid = getattr(ev, "patient", None)
        if pid is not None and (pid not in out or out[pid] < ev.at):
            out[pid] = ev.at
    return out


def _commutes(folded: Folded, new: Sequence[Event]) -> bool:
    """True when ``new`` are screenings of patients no folded event at or after their time is about.

    Such a screening changes nothing any of those events is checked against
    (only the enrolment of its own patient reads it), so applying it after
    them gives the state a fold in time order gives.
    """
    return all(isinstance(ev, PatientScreened) and not (ev.patient in folded.mentions
                                                          and folded.mentions[ev.patient] >= ev.at) for ev in new)


def extend(folded: Folded | None, protocol: Protocol, new: Sequence[Event], labels: Sequence[str],
           stored: str = "stored event") -> Folded:
    """``folded`` with ``new`` applied after it, as :func:`fold` over all of them would give.

    When every new event comes after every folded one in the order of
    application (time, then canonical JSON; the usual case), only the new
    events are applied, to a copy of the folded trial.  Events with the same
    time as the latest ones are applied in the order a full fold gives: the
    folded ones come first in canonical order, and a full fold takes them
    first too.  An event dated before the latest ones is applied from the
    nearest checkpoint before it (the trial as it stood before a time all
    later events are at or after), with the events folded since; without
    such a checkpoint, everything is folded again.  ``stored`` names the
    folded events in errors (``"{stored} N"``, N from 1).

    Raises
    ------
    TrialError
        The first new event refused (``folded`` is unchanged).
    """
    new = list(new)
    if folded is None or folded.protocol is not protocol:
        events = tuple(new)
        trial = fold(protocol, events, labels)
        return Folded(protocol, events, trial, _last(events), (), _mentions({}, events))
    if not new:
        return folded
    keys = [_key(ev) for ev in new]
    first = min(keys)
    events = (*folded.events, *new)
    mentions = _mentions(folded.mentions, new)
    if folded.last is None or first > folded.last:
        trial = _fold_onto(folded.trial.clone(), new, labels)
        checkpoints = folded.checkpoints
        since = len(folded.events) - (checkpoints[-1].index if checkpoints else 0)
        if folded.last is not None and first[0] > folded.last[0] and since >= CHECKPOINT_EVERY:
            checkpoints = (*checkpoints, _Checkpoint(first[0], len(folded.events), folded.trial))[-CHECKPOINTS:]
        return Folded(protocol, events, trial, max(folded.last or first, max(keys)), checkpoints, mentions)
    usable = tuple(c for c in folded.checkpoints if c.at <= first[0])
    if _commutes(folded, new):  # e.g. screenings by concurrent writers within the same second
        trial = _fold_onto(folded.trial.clone(), new, labels)
        return Folded(protocol, events, trial, max(folded.last, max(keys)), usable, mentions)
    start = usable[-1] if usable else None
    index = start.index if start else 0
    names = [*(f"{stored} {i + 1}" for i in range(index, len(folded.events))), *labels]
    base = start.trial.clone() if start else _Trial(protocol, dlt_definition(protocol))
    trial = _fold_onto(base, events[index:], names)
    return Folded(protocol, events, trial, max(folded.last, max(keys)), usable, mentions)


def status_of(folded: Folded, as_of: datetime) -> TrialStatus:
    """The status at ``as_of`` from folded events (folding again only when ``as_of`` is before one of them)."""
    if folded.last is None or as_of >= folded.last[0]:
        return _evaluate(folded.trial, as_of)
    return _evaluate(fold(folded.protocol, folded.events, until=as_of), as_of)


def _moment(value: datetime | str | None, events: Sequence[Event]) -> datetime:
    if value is None:
        return max((ev.at for ev in events), default=datetime(1970, 1, 1, tzinfo=UTC))
    if isinstance(value, str):
        return parse_time(value, "as_of")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def trial_status(protocol: Protocol, events: Iterable[Event | Mapping[str, Any]],
                 as_of: datetime | str | None = None) -> TrialStatus:
    """The status of a trial from its events: a pure function (host software may keep events anywhere).

    Parameters
    ----------
    protocol : Protocol
        With a DLT definition (``Protocol.extra["dlt"]``).
    events : iterable of events or their JSON objects
    as_of : datetime or ISO text, optional
        The moment to evaluate at (default: the latest event's time); events
        after it are left out.

    Raises
    ------
    TrialError
        The first event that cannot be applied, named by its position.
    """
    protocol = as_protocol(protocol)
    evs = _coerce(events)
    moment = _moment(as_of, evs)
    trial = fold(protocol, evs, until=moment)
    return _evaluate(trial, moment)


def check_events(protocol: Protocol, events: Iterable[Event | Mapping[str, Any]]) -> None:
    """Refuse (with :class:`TrialError`) the first event that cannot be applied; return None if all can."""
    fold(protocol, _coerce(events))
