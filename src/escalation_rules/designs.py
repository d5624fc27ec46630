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
['3+3-deescalate', '3+3-escalate-only', '3+3-six-at-top', 'accelerated-titration', 'boin', 'crm', 'i3+3', \
'keyboard', 'mtpi2']
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from . import _interval as _iv
from ._crm import lee_cheung_skeleton
from ._limits import show
from .errors import ProtocolError
from .protocol import Protocol, protocol_from_mapping

__all__ = ["DESIGNS", "builtin_design", "design_mapping", "design_parameters", "settings_text"]

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


_LIU = "Liu and Yuan (2015), BOIN; R package BOIN get.boundary / get.oc / select.mtd"
_KEYBOARD = "Yan, Mandrekar and Yuan (2017), Keyboard design; R package Keyboard"
_MTPI2 = "Guo et al. (2017), mTPI-2"
_I3 = "Liu, Wang and Ji (2020), i3+3"
_ESCALATION_PKG = "R package escalation (Brock 2019), stop_when_n_at_dose"
_ELIM = "dose elimination as in R package BOIN: Pr(p > target | data) > cutoff_eli under Beta(1, 1), n >= 3"

#: Parameters of the model-assisted designs: name -> (type, default, meaning).  A default of
#: None is derived from ``target`` as the reference R package derives it.
_COMMON_PARAMS: dict[str, tuple[type, Any, str]] = {
    "target": (float, 0.3, "target DLT rate (our default; the R packages require it)"),
    "cohort": (int, 3, "cohort size"),
    "max_n": (int, 30, "sample size cap (a multiple of the cohort size)"),
    "start": (int, 1, "1-based start dose"),
    "cutoff_eli": (float, 0.95, "eliminate a dose (and all above) when Pr(p > target | data) exceeds this"),
    "extrasafe": (bool, False, "stop when Pr(p_1 > target | data) > cutoff_eli - offset at the lowest dose"),
    "offset": (float, 0.05, "see extrasafe"),
    "n_earlystop": (int, 100, "stop when this many were treated at the current dose and the decision is to stay "
                              "(keyboard: as soon as this many were treated there, as R Keyboard's get.oc.kb)"),
    "stop_n_at_dose": (int, 0, "stop when the dose the rules would treat next already has this many (0: off; "
                               "R escalation's stop_when_n_at_dose)"),
    "titration": (bool, False, "accelerated-titration start (Simon et al. 1997): one patient per dose until the "
                               "first DLT, then the cohort is completed at that dose and the table takes over"),
}
_DESIGN_PARAMS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "boin": {"phi1": (float, None, "highest rate deemed subtherapeutic (default 0.6 * target)"),
             "phi2": (float, None, "lowest rate deemed overly toxic (default 1.4 * target)")},
    "keyboard": {"margin_left": (float, 0.05, "target key from target - margin_left"),
                 "margin_right": (float, 0.05, "target key to target + margin_right")},
    "mtpi2": {"margin_left": (float, 0.05, "equivalence interval from target - margin_left"),
              "margin_right": (float, 0.05, "equivalence interval to target + margin_right")},
    "i3+3": {"eps1": (float, 0.05, "equivalence interval from target - eps1"),
             "eps2": (float, 0.05, "equivalence interval to target + eps2")},
}
_DEFAULTS_FROM = {"boin": "R package BOIN", "keyboard": "R package Keyboard", "mtpi2": "Guo et al. (2017)",
                  "i3+3": "Liu, Wang and Ji (2020)"}
_DESIGN_CLAUSE = {"boin": _LIU, "keyboard": _KEYBOARD, "mtpi2": _MTPI2, "i3+3": _I3}


def design_parameters(name: str) -> dict[str, tuple[type, Any, str]]:
    """The parameters a built-in design takes (``--set NAME=VALUE``), with type, default and meaning.

    Examples
    --------
    >>> sorted(design_parameters("boin"))[:4]
    ['cohort', 'cutoff_eli', 'extrasafe', 'max_n']
    >>> design_parameters("3+3-deescalate")
    {}
    """
    if name == "crm":
        return dict(_CRM_PARAMS)
    if name not in _DESIGN_PARAMS:
        return {}
    return {**_COMMON_PARAMS, **_DESIGN_PARAMS[name]}


def _coerce(design: str, key: str, kind: type, value: Any) -> Any:
    where = f"{design}: parameter {key}"
    if kind is list:  # rates: "0.05,0.1,0.2" or a list of numbers
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not 1 <= len(items) <= 40:
            raise ProtocolError([f"{where}: expected 1 to 40 numbers separated by commas (got {show(value)})"])
        return [_coerce(design, f"{key}[{i}]", float, item) for i, item in enumerate(items)]
    if kind is str:
        if not isinstance(value, str) or len(value) > 40:
            raise ProtocolError([f"{where}: expected a word (got {show(value)})"])
        return value.strip()
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ProtocolError([f"{where}: expected true or false (got {show(value)})"])
        if len(text) > 40:
            raise ProtocolError([f"{where}: expected a number of at most 40 characters (got {len(text)})"])
        try:
            value = int(text) if kind is int else float(text)
        except ValueError:
            raise ProtocolError([f"{where}: expected {'an integer' if kind is int else 'a number'} "
                                 f"(got {show(value)})"]) from None
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError([f"{where}: expected true or false (got {show(value)})"])
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ProtocolError([f"{where}: expected {'an integer' if kind is int else 'a number'} (got {show(value)})"])
    if isinstance(value, int) and abs(value) >= 10**15:  # far past any parameter, and past float's range
        raise ProtocolError([f"{where}: expected a number below 10^15 (got {show(value)})"])
    if not math.isfinite(value):
        raise ProtocolError([f"{where}: expected a finite number (got {show(value)})"])
    return kind(value)


def _read_params(name: str, doses: int, spec: Mapping[str, tuple[Any, ...]], params: Mapping[str, Any],
                 sizes: Callable[[dict[str, Any]], list[str]]) -> tuple[dict[str, Any], list[str]]:
    """A design's parameters with the defaults filled in, and the problems of those every design has.

    Unknown names are refused outright; the target and the start dose are
    checked here, the cohort and sample size by ``sizes`` (in that order, so
    each design's messages keep their order); the caller adds its own.
    """
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ProtocolError([f"{name}: unknown parameter {show(unknown[0])} (known: {', '.join(sorted(spec))})"])
    values = {key: _coerce(name, key, spec[key][0], params[key]) if key in params else spec[key][1] for key in spec}
    problems = []
    if not 0.05 <= values["target"] <= 0.6:
        problems.append(f"{name}: parameter target: expected a rate from 0.05 to 0.6 (got {values['target']})")
    problems += sizes(values)
    if not 1 <= values["start"] <= doses:
        problems.append(f"{name}: parameter start: expected a dose from 1 to {doses} (got {values['start']})")
    return values, problems


def _interval_sizes(name: str, values: dict[str, Any]) -> list[str]:
    problems = []
    if not 1 <= values["cohort"] <= 12:
        problems.append(f"{name}: parameter cohort: expected 1 to 12 patients (got {values['cohort']})")
    if not values["cohort"] <= values["max_n"] <= 120 or values["max_n"] % max(values["cohort"], 1):
        problems.append(f"{name}: parameter max_n: expected a multiple of the cohort size "
                        f"({values['cohort']}) up to 120 (got {values['max_n']})")
    return problems


def _interval_params(name: str, doses: int, params: Mapping[str, Any]) -> dict[str, Any]:
    values, problems = _read_params(name, doses, design_parameters(name), params,
                                    functools.partial(_interval_sizes, name))
    target = values["target"]
    for key in ("cutoff_eli", "offset", "phi1", "phi2", "margin_left", "margin_right", "eps1", "eps2"):
        v = values.get(key)
        if v is not None and not 0 < v < 1:
            problems.append(f"{name}: parameter {key}: expected a number between 0 and 1 (got {v})")
    if values["stop_n_at_dose"] < 0:
        problems.append(f"{name}: parameter stop_n_at_dose: expected 0 (off) or a positive integer "
                        f"(got {values['stop_n_at_dose']})")
    if values["titration"] and values["cohort"] < 2:
        problems.append(f"{name}: parameter titration: needs a cohort of 2 or more (got cohort {values['cohort']})")
    if values["n_earlystop"] < 1:
        problems.append(f"{name}: parameter n_earlystop: expected a positive integer (got {values['n_earlystop']})")
    if not problems and name == "boin":
        phi1 = values["phi1"] if values["phi1"] is not None else 0.6 * target
        phi2 = values["phi2"] if values["phi2"] is not None else 1.4 * target
        if target - phi1 < 0.1 * target or phi2 - target < 0.1 * target:
            problems.append(f"{name}: parameters phi1, phi2: expected phi1 <= 0.9 * target and phi2 >= 1.1 * target "
                            f"(got {phi1:g}, {phi2:g})")
    if not problems and name != "boin":
        lo, hi = ("eps1", "eps2") if name == "i3+3" else ("margin_left", "margin_right")
        if not target - values[lo] > 0 and target + values[hi] < 1:
            problems.append(f"{name}: parameters {lo}, {hi}: the interval must lie inside (0, 1)")
    if problems:
        raise ProtocolError(problems)
    return values


def _interval_design(name: str, doses: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """A model-assisted design as protocol data: its boundary table and the rules that read it."""
    v = _interval_params(name, doses, params)
    target, n_max = v["target"], v["max_n"]
    elim = {"cutoff_eli": v["cutoff_eli"], "extrasafe": v["extrasafe"], "offset": v["offset"]}
    if name == "boin":
        table = _iv.boin_boundaries(target, n_max, phi1=v["phi1"], phi2=v["phi2"], **elim)
    elif name in ("keyboard", "mtpi2"):
        table = _iv.keyboard_boundaries(target, n_max, margin_left=v["margin_left"], margin_right=v["margin_right"],
                                        **elim)
    else:
        table = _iv.i3_boundaries(target, n_max, eps1=v["eps1"], eps2=v["eps2"], **elim)
    clause = _DESIGN_CLAUSE[name]
    stay = ("(tox > escalate_max and tox < deescalate_min) or (not has_prev and tox >= deescalate_min) "
            "or ((not has_next or next_closed) and tox <= escalate_max)")
    rules = [
        _rule("iv-sample-size", "remaining == 0", "stop", clause,
              f"{n_max} patients treated: stop and select the MTD by isotonic regression", mtd="selected"),
    ]
    if name == "keyboard" and v["n_earlystop"] < n_max:  # R Keyboard's get.oc.kb stops before anything else
        rules.append(_rule("iv-earlystop", f"n >= {v['n_earlystop']}", "stop", clause,
                           f"{v['n_earlystop']} patients at the current dose: stop and select the MTD",
                           mtd="selected"))
    if v["extrasafe"]:
        rules.append(_rule("iv-extrasafe", "not has_prev and tox >= stop_min", "stop", _ELIM,
                           "the lowest dose is too toxic by the stricter rule (cutoff_eli - offset): stop, no MTD",
                           mtd="none", close=True))
    rules += [
        _rule("iv-eliminate-lowest", "tox >= eliminate_min and not has_prev", "stop", _ELIM,
              "the lowest dose is eliminated: stop, no MTD", mtd="none", close=True),
        _rule("iv-eliminate", "tox >= eliminate_min", "treat", _ELIM,
              "eliminate the current dose and all above it; de-escalate", move="previous", close=True),
    ]
    if name != "keyboard" and v["n_earlystop"] < n_max:
        rules.append(_rule("iv-earlystop", f"n >= {v['n_earlystop']} and ({stay})", "stop", clause,
                           f"{v['n_earlystop']} patients at the current dose and the decision is to stay: "
                           "stop and select the MTD", mtd="selected"))
    m = v["stop_n_at_dose"]
    if m:
        rules += [
            _rule("iv-enough-next", f"tox <= escalate_max and has_next and not next_closed and n_next >= {m}",
                  "stop", _ESCALATION_PKG, f"the dose to escalate to already has {m} or more: stop and select the MTD",
                  mtd="selected"),
            _rule("iv-enough-prev", f"tox >= deescalate_min and has_prev and n_prev >= {m}", "stop", _ESCALATION_PKG,
                  f"the dose to de-escalate to already has {m} or more: stop and select the MTD", mtd="selected"),
            _rule("iv-enough-here", f"n >= {m} and ({stay})", "stop", _ESCALATION_PKG,
                  f"the current dose, where the next cohort would go, has {m} or more: stop and select the MTD",
                  mtd="selected"),
        ]
    rules += [
        _rule("iv-escalate", "tox <= escalate_max and has_next and not next_closed", "treat", clause,
              "DLTs at or below the escalation boundary: escalate", move="next"),
        _rule("iv-deescalate", "tox >= deescalate_min and has_prev", "treat", clause,
              "DLTs at or above the de-escalation boundary: de-escalate", move="previous"),
        _rule("iv-stay", "n >= 0", "treat", clause,
              "otherwise (or no dose to move to): treat the next cohort at the same dose"),
    ]
    label = {"boin": "BOIN", "keyboard": "Keyboard", "mtpi2": "mTPI-2", "i3+3": "i3+3"}[name]
    stages = [{"id": "interval", "label": f"{label} decision table", "kind": "interval", "cohort": v["cohort"],
               "doses": [f"d{i}" for i in range(1, doses + 1)], "hit_policy": "first", "clause": clause,
               "rules": rules}]
    head = {"id": name, "title": f"{label} with {doses} doses, target {target:g}", "cap": n_max,
            "start_dose": f"d{v['start']}"}
    if v["titration"]:
        # titrated patients leave a total that is no multiple of the cohort: the last cohort takes what is left
        for rule in rules:
            if rule["action"] == "treat":
                rule["cohort"] = f"min({v['cohort']}, remaining)"
        more = v["cohort"] - 1
        stages.insert(0, {"id": "titration", "label": "Accelerated titration: one patient per dose until the first DLT",
                          "kind": "titration", "cohort": 1, "doses": [], "hit_policy": "first", "clause": _SIMON,
                          "rules": [
            _rule("at-pass", "n == 1 and tox == 0 and has_next", "treat", _SIMON,
                  "no DLT in the single patient: escalate with one patient", move="next", stage="titration", cohort=1),
            _rule("at-pass-top", "n == 1 and tox == 0 and not has_next", "treat", _SIMON,
                  f"no DLT at the top dose: complete a cohort there ({more} more) and go on with the table",
                  cohort=more, stage="interval"),
            _rule("at-first-dlt", "n == 1 and tox == 1", "treat", _SIMON,
                  f"first DLT: complete a cohort at this dose ({more} more) and go on with the table",
                  cohort=more, stage="interval"),
        ]})
        head["start_stage"] = "titration"
    return {
        "protocol": head,
        "doses": _ladder(doses),
        "stages": stages,
        "boundaries": [attrs.asdict(row) for row in table],
        "meta": {"design": {"name": name, "parameters": {k: val for k, val in v.items() if val is not None},
                            "defaults": _DEFAULTS_FROM[name]}},
        "selection": {"method": "isotonic", "target": target, **elim},
    }


_DLD = "O'Quigley, Pepe and Fisher (1990), CRM; as R package dfcrm's crm and crmsim"
_CRM_PARAMS: dict[str, tuple[type, Any, str]] = {
    "target": (float, 0.3, "target DLT rate (our default; dfcrm requires it)"),
    "cohort": (int, 3, "cohort size"),
    "max_n": (int, 30, "sample size (a multiple of the cohort size)"),
    "start": (int, 1, "1-based start dose"),
    "skeleton": (list, None, "prior DLT rate of each dose (default: Lee and Cheung from halfwidth and prior_mtd)"),
    "halfwidth": (float, 0.05, "half-width of the indifference interval for the skeleton (our default)"),
    "prior_mtd": (int, 0, "1-based dose the skeleton puts at the target (0: the middle dose; our default)"),
    "prior_sd": (float, math.sqrt(1.34), "standard deviation of the normal prior on the model parameter"),
    "model": (str, "empiric", "empiric (power) or logistic (one parameter, intercept intcpt)"),
    "intcpt": (float, 3.0, "intercept of the logistic model"),
    "restrict": (bool, True, "no skipping when escalating; no escalation right after a cohort at or above the target"),
    "stop_p": (float, 0.0, "stop when Pr(DLT rate at dose 1 > target | data) exceeds this (0: off)"),
}


def _crm_sizes(v: dict[str, Any]) -> list[str]:
    if not 1 <= v["cohort"] <= 12 or not v["cohort"] <= v["max_n"] <= 120 or v["max_n"] % v["cohort"]:
        return [f"crm: parameters cohort, max_n: expected a cohort of 1 to 12 and max_n a multiple of it up "
                f"to 120 (got {v['cohort']}, {v['max_n']})"]
    return []


def _crm_design(doses: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The CRM as protocol data: a [model] table and three rules that read it."""
    v, problems = _read_params("crm", doses, _CRM_PARAMS, params, _crm_sizes)
    if v["model"] not in ("empiric", "logistic"):
        problems.append(f"crm: parameter model: expected empiric or logistic (got {show(v['model'])})")
    if not 0 <= v["stop_p"] < 1:
        problems.append(f"crm: parameter stop_p: expected 0 (off) or a probability below 1 (got {v['stop_p']})")
    prior_mtd = v["prior_mtd"] or (doses + 1) // 2
    if not 1 <= prior_mtd <= doses:
        problems.append(f"crm: parameter prior_mtd: expected a dose from 1 to {doses} (got {prior_mtd})")
    if not 0 < v["halfwidth"] < min(v["target"], 1 - v["target"]):
        problems.append(f"crm: parameter halfwidth: expected a number between 0 and {min(v['target'], 1 - v['target'])}"
                        f" (got {v['halfwidth']})")
    if problems:
        raise ProtocolError(problems)
    skeleton = v["skeleton"]
    if skeleton is None:
        skeleton = list(lee_cheung_skeleton(v["target"], v["halfwidth"], prior_mtd, doses, v["model"], v["intcpt"]))
    model = {"method": "crm", "skeleton": skeleton, "target": v["target"], "prior_sd": v["prior_sd"],
             "model": v["model"], "intcpt": v["intcpt"], "restrict": v["restrict"]}
    rules = [_rule("crm-sample-size", "remaining == 0", "stop", _DLD,
                   f"{v['max_n']} patients treated: the MTD is the dose the model recommends from all the data",
                   mtd="model")]
    if v["stop_p"]:
        model["stop_p"] = v["stop_p"]
        rules.append(_rule("crm-too-toxic", "model_too_toxic", "stop", _DLD,
                           f"Pr(DLT rate at dose 1 > target | data) > {v['stop_p']:g}: stop, no MTD",
                           mtd="none", close=True))
    rules.append(_rule("crm-next", "n >= 0", "treat", _DLD,
                       "the next cohort goes to the dose whose estimated DLT rate is closest to the target"
                       + (" (not skipping a dose upward, and not above the current dose after a cohort at or above "
                          "the target rate)" if v["restrict"] else ""), move="model"))
    shown_params = {k: val for k, val in v.items() if val is not None}
    shown_params["skeleton"] = [round(x, 4) for x in skeleton]
    return {
        "protocol": {"id": "crm", "title": f"CRM with {doses} doses, target {v['target']:g}", "cap": v["max_n"],
                     "start_dose": f"d{v['start']}"},
        "doses": _ladder(doses),
        "stages": [{"id": "crm", "label": "Continual reassessment method", "kind": "model", "cohort": v["cohort"],
                    "doses": [f"d{i}" for i in range(1, doses + 1)], "hit_policy": "first", "clause": _DLD,
                    "rules": rules}],
        "model": model,
        "meta": {"design": {"name": "crm", "parameters": shown_params, "defaults": "R package dfcrm"}},
    }


DESIGNS: dict[str, Callable[[int, Mapping[str, Any]], dict[str, Any]]] = {
    "3+3-escalate-only": lambda k, _: _three_plus_three(k, deescalate=False, six_at_top=False,
                                                        name="3+3-escalate-only"),
    "3+3-deescalate": lambda k, _: _three_plus_three(k, deescalate=True, six_at_top=False, name="3+3-deescalate"),
    "3+3-six-at-top": lambda k, _: _three_plus_three(k, deescalate=True, six_at_top=True, name="3+3-six-at-top"),
    "accelerated-titration": lambda k, _: _accelerated(k),
    **{name: functools.partial(_interval_design, name) for name in _DESIGN_PARAMS},
    "crm": _crm_design,
}


def design_mapping(name: str, doses: int, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The protocol data (as a TOML file would hold it) of a built-in design."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected the name of a built-in design (got {type(name).__name__})")
    if name not in DESIGNS:
        raise ProtocolError([f"{show(name)}: unknown design (known: {', '.join(sorted(DESIGNS))})"])
    if not isinstance(doses, int) or isinstance(doses, bool) or not 1 <= doses <= 40:
        raise ProtocolError([f"{name}: --doses: expected an integer from 1 to 40 (got {show(doses)})"])
    params = dict(params or {})
    if params and not design_parameters(name):
        raise ProtocolError([f"{name}: takes no parameters (got {', '.join(sorted(params))})"])
    return DESIGNS[name](doses, params)


def builtin_design(name: str, doses: int = 5, **params: Any) -> Protocol:
    """A built-in design as a :class:`Protocol` (checked like a file).

    Model-assisted designs (``boin``, ``keyboard``, ``mtpi2``, ``i3+3``)
    take their parameters as keyword arguments (see :func:`design_parameters`).

    Raises
    ------
    ProtocolError
        For an unknown name or parameter, or a number of doses outside 1 to 40.

    Examples
    --------
    >>> p = builtin_design("boin", doses=5, target=0.3, max_n=18)
    >>> p.cap, len(p.boundaries), p.selection.target
    (18, 18, 0.3)
    """
    mapping = design_mapping(name, doses, params)  # checks the name, the doses and the parameters first
    settings = settings_text(params, show)
    return protocol_from_mapping(mapping, f"{name} (--doses {doses}{' ' if settings else ''}{settings})")


def settings_text(params: Mapping[str, Any] | None, value: Callable[[Any], str] = str) -> str:
    """A design's parameters as the ``--set`` options that give them (empty for none).

    ``value`` writes each value (``show`` for values given through Python, which may be of any type).

    Examples
    --------
    >>> settings_text({"target": 0.3, "max_n": 12})
    '--set max_n=12 --set target=0.3'
    >>> settings_text({"target": "0.3"}, show)
    "--set target='0.3'"
    """
    return " ".join(f"--set {k}={value(v)}" for k, v in sorted((params or {}).items()))
