"""Built-in designs of the field, generated as protocol data.

Each design is a function of the number of doses that returns the same kind
of mapping a protocol TOML file holds; :func:`builtin_design` passes it
through the protocol loader, so built-in designs get exactly the checks files
get and nothing is hard-coded in the engine.

Designs
-------
``3+3-escalate-only``
    Cohorts of 3 from dose 1; 0/3 escalates; 1/3 adds 3 at the same dose;
    ≤1/6 escalates; ≥2/3 or ≥2/6 stops with MTD = the dose below (none below
    dose 1); passing the top dose stops with MTD = top dose.
``3+3-deescalate``
    As above, but a too-toxic dose sends the next cohort to the dose below
    when only 3 were treated there (Korn et al. 1994): ≤1/6 there makes it the
    MTD, ≥2/6 repeats the step lower; never re-escalates; a dose below that
    already has 6 is the MTD.
``3+3-six-at-top``
    ``3+3-deescalate`` that also demands 6 patients at the top dose before
    declaring it the MTD.
``accelerated-titration``
    Simon et al. (1997) design 2 start: single patients per dose until the
    first DLT, which adds 2 at that dose; then the standard 3+3 with
    de-escalation from the dose where the DLT occurred.

Examples
--------
>>> p = builtin_design("3+3-deescalate", doses=4)
>>> len(p.doses), p.cap
(4, 24)
>>> sorted(DESIGNS)
['3+3-deescalate', '3+3-escalate-only', '3+3-six-at-top', 'accelerated-titration']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._limits import show
from .errors import ProtocolError
from .protocol import Protocol, protocol_from_mapping

__all__ = ["DESIGNS", "builtin_design", "design_mapping"]

_STORER = "Storer (1989); Korn et al. (1994)"
_KORN = "Korn et al. (1994), 3+3 with de-escalation"
_SIMON = "Simon et al. (1997), accelerated titration design 2"


def _rule(rid: str, when: str, action: str, clause: str, paraphrase: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "when": when, "action": action, "clause": clause, "paraphrase": paraphrase, **extra}


def _escalation_rules(deescalate: bool, six_at_top: bool, prefix: str = "esc",
                      up: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The 3+3 table; ``up`` adds keys to the escalating rows (e.g. the stage they enter)."""
    up = {"move": "next", **(up or {})}
    rules = [
        _rule(f"{prefix}-zero-of-three", "n == 3 and tox == 0 and has_next", "treat", _STORER,
              "no DLT in 3: escalate to the next dose", **up),
    ]
    if six_at_top:
        rules.append(_rule(f"{prefix}-zero-of-three-top", "n == 3 and tox == 0 and not has_next", "treat", _STORER,
                           "no DLT in 3 at the top dose: treat 3 more there before declaring it", cohort=3))
    else:
        rules.append(_rule(f"{prefix}-zero-of-three-top", "n == 3 and tox == 0 and not has_next", "stop", _STORER,
                           "no DLT in 3 at the top dose: the top dose is the MTD", mtd="current"))
    rules += [
        _rule(f"{prefix}-one-of-three", "n == 3 and tox == 1", "treat", _STORER,
              "one DLT in 3: treat 3 more at the same dose", cohort=3),
        _rule(f"{prefix}-pass-six", "n == 6 and tox <= 1 and has_next", "treat", _STORER,
              "at most one DLT in 6: escalate to the next dose", **up),
        _rule(f"{prefix}-pass-six-top", "n == 6 and tox <= 1 and not has_next", "stop", _STORER,
              "at most one DLT in 6 at the top dose: the top dose is the MTD", mtd="current"),
    ]
    if not deescalate:
        rules.append(_rule(f"{prefix}-too-toxic", "tox >= 2", "stop", _STORER,
                           "two or more DLTs: the dose is too toxic and the dose below is the MTD (none below dose 1)",
                           mtd="previous", close=True))
        return rules
    rules += [
        _rule(f"{prefix}-too-toxic-first", "tox >= 2 and not has_prev", "stop", _KORN,
              "two or more DLTs at the lowest dose: no dose is tolerated", mtd="none", close=True),
        _rule(f"{prefix}-too-toxic-expand-below", "tox >= 2 and has_prev and n_prev < 6", "treat", _KORN,
              "two or more DLTs: the dose is too toxic; treat 3 more at the dose below, which has only 3",
              move="previous", cohort="6 - n_prev", stage="deescalation", close=True),
        _rule(f"{prefix}-too-toxic-mtd-below", "tox >= 2 and has_prev and n_prev >= 6", "stop", _KORN,
              "two or more DLTs: the dose is too toxic; the dose below already has 6 and is the MTD",
              mtd="previous", close=True),
    ]
    return rules


def _deescalation_stage() -> dict[str, Any]:
    return {
        "id": "deescalation",
        "label": "De-escalation (never re-escalate)",
        "kind": "deescalation",
        "cohort": 3,
        "clause": _KORN,
        "rules": [
            _rule("deesc-pass", "n >= 6 and tox <= 1", "stop", _KORN,
                  "at most one DLT in 6 at the dose below a too-toxic dose: it is the MTD", mtd="current"),
            _rule("deesc-too-toxic-first", "tox >= 2 and not has_prev", "stop", _KORN,
                  "two or more DLTs in 6 at the lowest dose: no dose is tolerated", mtd="none", close=True),
            _rule("deesc-too-toxic-expand-below", "tox >= 2 and has_prev and n_prev < 6", "treat", _KORN,
                  "two or more DLTs in 6: too toxic too; treat 3 more at the next dose down",
                  move="previous", cohort="6 - n_prev", stage="deescalation", close=True),
            _rule("deesc-too-toxic-mtd-below", "tox >= 2 and has_prev and n_prev >= 6", "stop", _KORN,
                  "two or more DLTs in 6: too toxic too; the dose below already has 6 and is the MTD",
                  mtd="previous", close=True),
        ],
    }


def _ladder(doses: int) -> list[dict[str, Any]]:
    return [{"id": f"d{i}", "label": f"dose {i}"} for i in range(1, doses + 1)]


def _three_plus_three(doses: int, *, deescalate: bool, six_at_top: bool, name: str) -> dict[str, Any]:
    stages = [{
        "id": "escalation",
        "label": "Standard 3+3 escalation",
        "kind": "escalation",
        "cohort": 3,
        "doses": [f"d{i}" for i in range(1, doses + 1)],
        "clause": _KORN if deescalate else _STORER,
        "rules": _escalation_rules(deescalate, six_at_top),
    }]
    if deescalate:
        stages.append(_deescalation_stage())
    return {
        "protocol": {"id": name, "title": f"{name} with {doses} doses", "cap": 6 * doses},
        "doses": _ladder(doses),
        "stages": stages,
    }


def _accelerated(doses: int) -> dict[str, Any]:
    titration = {
        "id": "titration",
        "label": "Accelerated titration: one patient per dose until the first DLT",
        "kind": "titration",
        "cohort": 1,
        "doses": [f"d{i}" for i in range(1, doses + 1)],
        "clause": _SIMON,
        "rules": [
            _rule("at-pass", "n == 1 and tox == 0 and has_next", "treat", _SIMON,
                  "no DLT in the single patient: escalate with one patient", move="next"),
            _rule("at-pass-top", "n == 1 and tox == 0 and not has_next", "treat", _SIMON,
                  "no DLT in the single patient at the top dose: complete a cohort of 3 there",
                  cohort=2, stage="escalation"),
            _rule("at-first-dlt", "n == 1 and tox == 1", "treat", _SIMON,
                  "first DLT: treat 2 more at the same dose and continue with the standard 3+3",
                  cohort=2, stage="escalation"),
        ],
    }
    escalation = {
        "id": "escalation",
        "label": "Standard 3+3 after the first DLT",
        "kind": "escalation",
        "cohort": 3,
        "doses": [],
        "clause": _SIMON,
        "rules": [
            # after the first DLT every escalation stays in the 3+3 stage
            *_escalation_rules(True, False, up={"stage": "escalation"}),
        ],
    }
    # Doses passed during titration hold one patient each; the de-escalation
    # rules fill the dose below up to 6 ("6 - n_prev"), which covers them.
    return {
        "protocol": {"id": "accelerated-titration", "title": f"accelerated titration with {doses} doses",
                     "cap": 6 * doses, "start_stage": "titration"},
        "doses": _ladder(doses),
        "stages": [titration, escalation, _deescalation_stage()],
    }


DESIGNS: dict[str, Callable[[int], dict[str, Any]]] = {
    "3+3-escalate-only": lambda k: _three_plus_three(k, deescalate=False, six_at_top=False, name="3+3-escalate-only"),
    "3+3-deescalate": lambda k: _three_plus_three(k, deescalate=True, six_at_top=False, name="3+3-deescalate"),
    "3+3-six-at-top": lambda k: _three_plus_three(k, deescalate=True, six_at_top=True, name="3+3-six-at-top"),
    "accelerated-titration": _accelerated,
}


def design_mapping(name: str, doses: int) -> dict[str, Any]:
    """The protocol data (as a TOML file would hold it) of a built-in design."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected the name of a built-in design (got {type(name).__name__})")
    if name not in DESIGNS:
        raise ProtocolError([f"{show(name)}: unknown design (known: {', '.join(sorted(DESIGNS))})"])
    if not isinstance(doses, int) or isinstance(doses, bool) or not 1 <= doses <= 40:
        raise ProtocolError([f"{name}: --doses: expected an integer from 1 to 40 (got {show(doses)})"])
    return DESIGNS[name](doses)


def builtin_design(name: str, doses: int = 5) -> Protocol:
    """A built-in design as a :class:`Protocol` (checked like a file).

    Raises
    ------
    ProtocolError
        For an unknown name or a number of doses outside 1 to 40.
    """
    mapping = design_mapping(name, doses)
    return protocol_from_mapping(mapping, f"{name} (--doses {doses})")
