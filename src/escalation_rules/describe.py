"""Neutral descriptions of a compiled protocol: the dose ladder and decision tables.

``show`` prints them; the documentation generator renders the same data, so
what a reviewer reads is what the engine runs.

Examples
--------
>>> from escalation_rules import builtin_design, compile_protocol
>>> summary = protocol_summary(compile_protocol(builtin_design("3+3-escalate-only", doses=2)))
>>> summary["stages"][0]["rules"][0]["when"]
'n == 3 and tox == 0 and has_next'
"""

from __future__ import annotations

from typing import Any

import attrs

from ._limits import count_text
from .graph import CompiledProtocol
from .protocol import Outcome, Protocol, Rule, policy_entry_data

__all__ = ["model_decisions", "outcome_text", "protocol_summary", "protocol_text", "rule_text"]


def outcome_text(outcome: Outcome) -> str:
    """An outcome in words, e.g. ``"treat 3 at the next dose"``."""
    close = "close this dose; " if outcome.close else ""
    if outcome.action == "stop":
        mtd = {"current": "MTD = this dose", "previous": "MTD = the dose below", "none": "no MTD",
               "selected": "MTD selected by isotonic regression",
               "model": "MTD = the dose the model recommends"}[outcome.mtd]
        return f"{close}stop, {mtd}"
    where = {"stay": "this dose", "next": "the next dose", "previous": "the dose below",
             "model": "the dose the model chooses"}[outcome.move]
    size = outcome.cohort.text if outcome.cohort is not None else "the stage's first cohort"
    stage = f" (stage {outcome.stage})" if outcome.stage else ""
    return f"{close}treat {size} at {where}{stage}"


def rule_text(rule: Rule) -> str:
    """A rule's action in words; decision points list their options."""
    if rule.action == "decide":
        return "decide: " + " | ".join(f"{o.id}: {outcome_text(o.outcome)}" for o in rule.options)
    assert rule.outcome is not None
    return outcome_text(rule.outcome)


def model_decisions(protocol: Protocol, cohorts: int = 2) -> list[dict[str, str]]:
    """What the engine decides after every outcome of the first ``cohorts`` cohorts (for a model's table).

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> rows = model_decisions(builtin_design("crm", 3, target=0.25, max_n=6), cohorts=1)
    >>> [(r["history"], r["next"]) for r in rows]
    [('1NNN', 'treat 3 at dose 2'), ('1NNT', 'treat 3 at dose 1'), ('1NTT', 'treat 3 at dose 1'), \
('1TTT', 'treat 3 at dose 1')]
    """
    from .engine import decide

    rows: list[dict[str, str]] = []
    frontier = [""]
    for _ in range(cohorts):
        nxt = []
        for history in frontier:
            d = decide(protocol, history)
            if d.action != "treat" or d.dose is None or d.cohort_size is None:
                continue
            for dlts in range(d.cohort_size + 1):
                step = f"{history} {d.dose}{'N' * (d.cohort_size - dlts)}{'T' * dlts}".strip()
                after = decide(protocol, step)
                if after.action == "treat":
                    what = f"treat {after.cohort_size} at dose {after.dose}"
                elif after.action == "stop":
                    what = f"stop, MTD dose {after.mtd}" if after.mtd is not None else "stop, no MTD"
                else:
                    what = "decide"
                rows.append({"history": step, "next": what})
                nxt.append(step)
        frontier = nxt
    return rows


def protocol_summary(compiled: CompiledProtocol) -> dict[str, Any]:
    """The protocol as JSON-ready data: ladder, stages with their tables, statistics."""
    p = compiled.protocol
    return {
        "id": p.id,
        "title": p.title,
        "source": p.source,
        "cap": p.cap,
        "start": {"dose": p.dose_index(p.start_dose) + 1, "stage": p.start_stage},
        "roles": list(p.roles),
        "escalation_signoff": list(p.escalation_signoff),
        "doses": [{"level": i + 1, "id": d.id, "label": d.label, "amount": d.amount, "unit": d.unit,
                   "provisional": d.provisional} for i, d in enumerate(p.doses)],
        "stages": [{
            "id": s.id, "label": s.label, "kind": s.kind, "cohort": s.cohort, "doses": list(s.doses),
            "hit_policy": s.hit_policy, "clause": s.clause,
            "window_days": [s.window.min_days, s.window.max_days] if s.window else None,
            "rules": [{
                "id": r.id, "when": r.when.text, "action": r.action, "does": rule_text(r),
                "options": [{"id": o.id, "label": o.label, "does": outcome_text(o.outcome),
                             "signoff": list(o.signoff)} for o in r.options],
                "signoff": list(r.signoff), "clause": r.clause, "paraphrase": r.paraphrase,
                "window_days": [r.window.min_days, r.window.max_days] if r.window else None,
            } for r in s.rules],
        } for s in p.stages],
        "early_termination": None if p.early_termination is None else {
            "signoff": list(p.early_termination.signoff), "clause": p.early_termination.clause,
            "paraphrase": p.early_termination.paraphrase},
        "default_policy": {k: policy_entry_data(v) for k, v in p.default_policy.items()},
        "boundaries": [attrs.asdict(b) for b in p.boundaries],
        "selection": None if p.selection is None else attrs.asdict(p.selection),
        "design": dict(p.extra.get("meta", {}).get("design", {})),
        "model": None if p.model is None else {**attrs.asdict(p.model), "first_decisions": model_decisions(p)},
        "clauses": dict(p.clauses),
        "graph": dict(compiled.stats),
        "warnings": list(compiled.warnings),
    }


def boundary_table_text(rows: list[dict[str, Any]], step: int) -> list[str]:
    """The boundary table as people print it in protocols: one column per number treated.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> p = builtin_design("boin", doses=3, target=0.3, max_n=6)
    >>> print("\\n".join(boundary_table_text([attrs.asdict(b) for b in p.boundaries], 3)))
    decision table (DLTs among the patients treated at the current dose):
      patients treated at the dose          3    6
      escalate if DLTs <=                   0    1
      de-escalate if DLTs >=                2    3
      eliminate the dose if DLTs >=         3    4
    """
    shown = [r for r in rows if r["n"] % step == 0] or rows
    never = "-"

    def cells(key: str) -> str:
        out = []
        for r in shown:
            v = r[key]
            out.append(never if (key == "escalate" and v < 0) or (key != "escalate" and v > r["n"]) else str(v))
        return "".join(f"{c:>5}" for c in out)

    lines = ["decision table (DLTs among the patients treated at the current dose):",
             f"  {'patients treated at the dose':<34}" + "".join(f"{r['n']:>5}" for r in shown),
             f"  {'escalate if DLTs <=':<34}" + cells("escalate"),
             f"  {'de-escalate if DLTs >=':<34}" + cells("deescalate"),
             f"  {'eliminate the dose if DLTs >=':<34}" + cells("eliminate")]
    if any(r["stop"] <= r["n"] for r in shown):
        lines.append(f"  {'stop (lowest dose) if DLTs >=':<34}" + cells("stop"))
    return lines


def protocol_text(compiled: CompiledProtocol) -> str:
    """The summary as plain text, one table per stage."""
    s = protocol_summary(compiled)
    lines = [f"{s['id']}: {s['title']}", f"source: {s['source']}",
             f"cap: {s['cap']} patients; start: dose {s['start']['dose']} in stage {s['start']['stage']}"]
    if s["escalation_signoff"]:
        lines.append(f"every escalation signed by: {', '.join(s['escalation_signoff'])}")
    lines.append("doses:")
    for d in s["doses"]:
        lines.append(f"  {d['level']}. {d['label']}{' (provisional)' if d['provisional'] else ''}")
    for st in s["stages"]:
        window = ""
        if st["window_days"]:
            low, high = st["window_days"]
            window = f", DLT window {low} days" if low == high else f", DLT window {low}-{high} days"
        lines.append("")
        lines.append(f"stage {st['id']} ({st['kind']}): {st['label']}")
        lines.append(f"  first cohort {st['cohort']}, hit policy {st['hit_policy']}{window}")
        for r in st["rules"]:
            sign = f" [sign: {', '.join(r['signoff'])}]" if r["signoff"] else ""
            lines.append(f"  - {r['id']}: when {r['when']}")
            lines.append(f"      then {r['does']}{sign}")
            lines.append(f"      {r['clause']}: {r['paraphrase']}")
    if s["boundaries"]:
        lines.append("")
        lines += boundary_table_text(s["boundaries"], s["stages"][0]["cohort"] if s["stages"] else 1)
    if s["selection"]:
        sel = s["selection"]
        lines.append(f"MTD selection: isotonic regression of the observed DLT rates, closest to target "
                     f"{sel['target']:g}; doses with Pr(p > target | data) > {sel['cutoff_eli']:g} (and all above) "
                     "excluded" + (f"; all doses when the lowest passes {sel['cutoff_eli'] - sel['offset']:g}"
                                   if sel["extrasafe"] else ""))
    if s["design"]:
        d = s["design"]
        lines.append("parameters: " + ", ".join(f"{k}={v}" for k, v in d.get("parameters", {}).items())
                     + f" (defaults as {d.get('defaults', 'the reference package')})")
    if s["model"]:
        m = s["model"]
        lines.append(f"model: CRM, {m['model']} curve, skeleton {', '.join(f'{x:g}' for x in m['skeleton'])}, "
                     f"Normal(0, {m['prior_sd']:.4g}^2) prior, target {m['target']:g}"
                     + (", restricted" if m["restrict"] else "")
                     + (f", safety stop above {m['stop_p']:g}" if m["stop_p"] is not None else ""))
        lines.append("decisions after the first cohorts (every number of DLTs):")
        lines += [f"  {row['history']:<24} -> {row['next']}" for row in m["first_decisions"]]
    if s["early_termination"]:
        et = s["early_termination"]
        lines.append("")
        lines.append(f"early termination at any time [sign: {', '.join(et['signoff'])}] {et['clause']}: "
                     f"{et['paraphrase']}")
    g = s["graph"]
    lines.append("")
    lines.append(f"state graph: {g['states']} states, {g['edges']} transitions, {count_text(g['paths'])} paths, "
                 f"{g['decisions']} decision points")
    for w in s["warnings"]:
        lines.append(f"note: {w}")
    return "\n".join(lines)
