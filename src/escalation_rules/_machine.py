"""The step semantics shared by the compiler, the engine and verification.

A :class:`State` says what happens next in a trial: a cohort is about to be
treated (``phase == "treat"``), people must decide (``"decide"``), or the
trial has stopped (``"stop"``).  :func:`after_cohort` consults the decision
table of the current stage once a cohort's outcomes are known, and
:func:`apply_outcome` turns the row (or the option people chose) into the next
state.  Nothing here knows about graphs or histories.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._attrs import value_repr
from ._interval import select_isotonic
from .protocol import Option, Outcome, Protocol, Rule, Stage

__all__ = ["State", "StepError", "after_cohort", "apply_outcome", "boundary_env", "choose", "env_of", "initial_state",
           "selected_mtd"]

Counts = tuple[tuple[int, int], ...]


class StepError(Exception):
    """A rule cannot be applied at a state (internal: callers add where it happened)."""

    def __init__(self, message: str, rules: tuple[str, ...] = ()) -> None:
        self.rules = rules
        self.step = ""
        super().__init__(message)


@attrs.frozen(cache_hash=True)
class State:
    """What happens next in a trial, with everything the rules can read.

    Attributes
    ----------
    phase : str
        ``"treat"``, ``"decide"`` or ``"stop"``.
    stage : str
        Id of the stage whose table governs the current dose.
    dose : int
        0-based index of the current dose (the one to treat, or where the
        decision or stop arose).
    cohort : int
        Size of the cohort to treat (``phase == "treat"``), else 0.
    counts : tuple of (int, int)
        Patients evaluated and patients with a DLT, per dose.
    enrolled : int
        Patients enrolled so far (equals the evaluated total except while an
        early-decided cohort still has patients under observation).
    closed : int
        Bit mask of doses closed for toxicity.
    passed : int
        Bit mask of doses escalated from.
    rule : str or None
        The rule (and, after a choice, ``rule/option``) that produced the state.
    mtd : int or None
        For ``stop``: the 0-based MTD, or None when none was determined.
    """

    __repr__ = value_repr

    phase: str
    stage: str
    dose: int
    cohort: int
    counts: Counts
    enrolled: int
    closed: int
    passed: int
    rule: str | None = None
    mtd: int | None = None


def initial_state(protocol: Protocol) -> State:
    """The state before the first patient: treat the start stage's first cohort at the start dose."""
    stage = protocol.stage(protocol.start_stage)
    counts = tuple((0, 0) for _ in protocol.doses)
    cohort = min(stage.cohort, protocol.cap)
    return State("treat", stage.id, protocol.dose_index(protocol.start_dose), cohort, counts, 0, 0, 0, "start")


def env_of(protocol: Protocol, dose: int, counts: Counts, enrolled: int, closed: int,
           last: tuple[int, int] | None = None) -> dict[str, Any]:
    """The values of every guard name at a dose, given the counts."""
    k = len(counts)
    n, tox = counts[dose]
    n_prev, tox_prev = counts[dose - 1] if dose > 0 else (0, 0)
    n_next, tox_next = counts[dose + 1] if dose + 1 < k else (0, 0)
    env = {
        "n": n,
        "tox": tox,
        "n_prev": n_prev,
        "tox_prev": tox_prev,
        "n_next": n_next,
        "tox_next": tox_next,
        "has_prev": dose > 0,
        "has_next": dose + 1 < k,
        "next_closed": dose + 1 < k and bool(closed >> (dose + 1) & 1),
        "next_provisional": dose + 1 < k and protocol.doses[dose + 1].provisional,
        "dose": dose + 1,
        "doses": k,
        "enrolled": enrolled,
        "remaining": protocol.cap - enrolled,
        "cap": protocol.cap,
    }
    if protocol.boundaries:
        env.update(boundary_env(protocol, n))
    if protocol.model is not None:
        env.update(model_env(protocol, dose, counts, last))
    return env


def model_env(protocol: Protocol, dose: int, counts: Counts, last: tuple[int, int] | None) -> dict[str, Any]:
    """The model's names: where it sends the next cohort (``last``: the cohort just completed, size and DLTs)."""
    model = protocol.model
    assert model is not None
    cohort, dlts = last if last is not None else (0, 0)
    return {"model_dose": model.next_dose(counts, dose, cohort, dlts), "model_too_toxic": model.too_toxic(counts)}


def boundary_env(protocol: Protocol, n: int) -> dict[str, int]:
    """The boundary names for ``n`` patients at the current dose (beyond the table: never escalate or act)."""
    table = protocol.boundaries
    if 1 <= n <= len(table):
        row = table[n - 1]
        return {"escalate_max": row.escalate, "deescalate_min": row.deescalate,
                "eliminate_min": row.eliminate, "stop_min": row.stop}
    return {"escalate_max": -1, "deescalate_min": n + 1, "eliminate_min": n + 1, "stop_min": n + 1}


def selected_mtd(protocol: Protocol, counts: Counts, closed: int) -> int | None:
    """The MTD chosen by the protocol's selection rule from the counts (doses closed in the trial excluded)."""
    assert protocol.selection is not None  # the loader requires it for mtd = "selected"
    closed_from = (closed & -closed).bit_length() - 1 if closed else None
    return select_isotonic(protocol.selection, counts, closed_from)


def fire(protocol: Protocol, stage: Stage, env: dict[str, Any]) -> Rule:
    """The row of ``stage``'s table that applies to ``env`` (per its hit policy)."""
    if stage.hit_policy == "first":
        for rule in stage.rules:
            if rule.when.evaluate(env):
                return rule
        raise StepError(f"no rule of stage {stage.id!r} applies (table incomplete)")
    hits = [rule for rule in stage.rules if rule.when.evaluate(env)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise StepError(f"no rule of stage {stage.id!r} applies (table incomplete)")
    ids = tuple(r.id for r in hits)
    raise StepError(
        f"rules {', '.join(ids)} of stage {stage.id!r} all apply (overlap under hit policy 'unique')",
        ids,
    )


def after_cohort(protocol: Protocol, state: State, dlts: int, evaluated: int | None = None) -> tuple[Rule, State]:
    """Record a completed cohort at a treat state and consult the table.

    ``evaluated`` (default: the whole cohort) is how many of the cohort's
    patients count as evaluated; the engine passes fewer for a cohort whose
    decision was determined before all patients were observed.

    Returns the rule that fired and the next state.
    """
    seen = state.cohort if evaluated is None else evaluated
    counts = list(state.counts)
    n, tox = counts[state.dose]
    counts[state.dose] = (n + seen, tox + dlts)
    new_counts = tuple(counts)
    enrolled = state.enrolled + state.cohort
    stage = protocol.stage(state.stage)
    env = env_of(protocol, state.dose, new_counts, enrolled, state.closed, (seen, dlts))
    rule = fire(protocol, stage, env)
    base = attrs.evolve(state, counts=new_counts, enrolled=enrolled, cohort=0, rule=rule.id)
    if rule.action == "decide":
        return rule, attrs.evolve(base, phase="decide")
    assert rule.outcome is not None
    return rule, apply_outcome(protocol, base, rule.outcome, env, rule.id)


def apply_outcome(protocol: Protocol, state: State, outcome: Outcome, env: dict[str, Any], label: str) -> State:
    """Apply a row's (or an option's) outcome at ``state`` (whose counts are up to date)."""
    closed = state.closed | (1 << state.dose) if outcome.close else state.closed
    dose = state.dose
    if outcome.action == "stop":
        if outcome.mtd == "selected":
            mtd = selected_mtd(protocol, state.counts, closed)
        elif outcome.mtd == "model":
            assert protocol.model is not None  # the loader requires [model]
            mtd = protocol.model.recommend(state.counts) - 1
        else:
            mtd = outcome.mtd_dose(dose)
        return attrs.evolve(state, phase="stop", cohort=0, closed=closed, rule=label, mtd=mtd)
    target = env["model_dose"] - 1 if outcome.move == "model" else outcome.target(dose)
    if not 0 <= target < len(protocol.doses):
        where = "above the top dose" if target > dose else "below the lowest dose"
        raise StepError(f"rule {label!r} moves {where}", (label.split("/")[0],))
    passed = state.passed | (1 << dose) if target > dose else state.passed
    if outcome.stage is not None:
        stage_id = outcome.stage
    elif outcome.move == "stay":
        stage_id = state.stage
    else:
        stage_id = _governing(protocol, target)
    cohort = outcome.cohort.evaluate(env) if outcome.cohort is not None else protocol.stage(stage_id).cohort
    if cohort < 1:
        raise StepError(f"rule {label!r} treats a cohort of {cohort} (expected at least 1)", (label.split("/")[0],))
    if state.enrolled + cohort > protocol.cap:
        raise StepError(
            f"rule {label!r} treats {cohort} more with {protocol.cap - state.enrolled} places left "
            f"under the cap of {protocol.cap}",
            (label.split("/")[0],),
        )
    return attrs.evolve(state, phase="treat", stage=stage_id, dose=target, cohort=cohort, closed=closed,
                        passed=passed, rule=label, mtd=None)


def choose(protocol: Protocol, state: State, option: Option) -> State:
    """Apply an option people chose at a decide state."""
    env = env_of(protocol, state.dose, state.counts, state.enrolled, state.closed)
    return apply_outcome(protocol, state, option.outcome, env, f"{state.rule}/{option.id}")


def _governing(protocol: Protocol, dose: int) -> str:
    dose_id = protocol.doses[dose].id
    for stage in protocol.stages:
        if dose_id in stage.doses:
            return stage.id
    raise AssertionError(dose_id)  # the loader guarantees every dose is governed
