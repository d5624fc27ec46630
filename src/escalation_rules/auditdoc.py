"""The audit document of a protocol, generated from the same data the engine runs.

Everything here is neutral of Sphinx: it turns a compiled protocol into

* a condensed state diagram (:func:`condensed_diagram`), one node per
  (stage, dose, kind of state) and per decision point, with edges labelled by
  the rule and guard (or the option and who signs), rendered to Graphviz DOT
  (:func:`diagram_dot`) and SVG (:func:`render_svg`);
* the results of the conformance vectors that target the protocol
  (:func:`run_vectors`) and a traceability matrix from clauses to rules to
  vectors (:func:`traceability`);
* reStructuredText for each section of the audit page (:func:`audit_rst`),
  written for a reader who does not know Python.

The Sphinx extension :mod:`escalation_rules.sphinx` parses that text into the
page, so a change to a rule in a protocol file changes the page.

Examples
--------
>>> from escalation_rules import builtin_design, compile_protocol
>>> compiled = compile_protocol(builtin_design("3+3-escalate-only", doses=2))
>>> diagram = condensed_diagram(compiled)
>>> [n.label.splitlines()[0] for n in diagram.nodes][:2]
['Treat at dose 1, stage escalation', 'Treat at dose 2, stage escalation']
>>> "esc-one-of-three" in diagram_dot(diagram)
True
>>> print(audit_rst(AuditContext.build(compiled), ["overview"]).splitlines()[0])
Overview
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

from . import __version__
from ._attrs import value_repr
from ._machine import State
from .describe import outcome_text, rule_text
from .designs import DESIGNS, builtin_design, settings_text
from .engine import decide
from .errors import EscalationRulesError, ProtocolError
from .graph import CompiledProtocol
from .history import parse_history_json
from .protocol import ConditionalChoice, Protocol
from .verify import VerificationReport, verify

__all__ = [
    "SECTIONS",
    "AuditContext",
    "DiagramEdge",
    "DiagramNode",
    "RenderError",
    "StateDiagram",
    "TraceRow",
    "VectorResult",
    "audit_rst",
    "build_date",
    "condensed_diagram",
    "diagram_dot",
    "find_vectors_dir",
    "protocol_files",
    "read_stamps",
    "render_svg",
    "run_vectors",
    "scenarios_of",
    "sha256_of",
    "site_stamp",
    "stage_diagram",
    "stamp_differences",
    "stamp_files",
    "traceability",
]

#: The sections of an audit page, in order, with their headings.
SECTIONS: dict[str, str] = {
    "overview": "Overview",
    "provenance": "Provenance of this page",
    "tables": "Decision tables",
    "diagram": "State graph",
    "decisions": "Decision points and sign-off",
    "eligibility": "Eligibility criteria",
    "dlt": "Definition of a dose-limiting toxicity",
    "verification": "Verification report",
    "traceability": "Traceability matrix",
    "oc": "Operating characteristics",
}


class RenderError(EscalationRulesError):
    """A diagram could not be rendered (Graphviz missing or failing)."""


# ------------------------------------------------------------------ diagram


@attrs.frozen
class DiagramNode:
    """One box of the condensed diagram: many concrete states of the graph.

    Attributes
    ----------
    id : str
        ``treat:STAGE:DOSE``, ``decide:STAGE:DOSE:RULE`` or ``stop:MTD``.
    kind : str
        ``"treat"``, ``"decide"`` or ``"stop"``.
    label : str
        Text shown in the box (lines separated by newlines).
    stage : str or None
        Stage id (None for stops, which are shared by all stages).
    dose : int or None
        1-based dose level (for a stop: the MTD, or None for none).
    rule : str or None
        The decision point's rule id.
    states : int
        How many states of the full graph the box stands for.
    """

    __repr__ = value_repr

    id: str
    kind: str
    label: str
    stage: str | None
    dose: int | None
    rule: str | None
    states: int


@attrs.frozen
class DiagramEdge:
    """One arrow of the condensed diagram: every transition with the same rule (or option) between two boxes.

    Attributes
    ----------
    move : str
        ``"escalate"`` (to a higher dose), ``"de-escalate"``, ``"same"``
        (same dose) or ``"stop"``.
    transitions : int
        How many transitions of the full graph the arrow stands for.
    label : str
        The text written on the arrow: the rule and its condition, or the
        option chosen (with who signs it when that differs from the decision
        point's own sign-off).
    """

    __repr__ = value_repr

    source: str
    target: str
    kind: str
    rule: str
    option: str | None
    guard: str
    signoff: tuple[str, ...]
    move: str
    transitions: int

    label: str


@attrs.frozen
class StateDiagram:
    """The condensed state diagram of a compiled protocol."""

    __repr__ = value_repr

    protocol: str
    title: str
    nodes: tuple[DiagramNode, ...]
    edges: tuple[DiagramEdge, ...]
    stages: tuple[tuple[str, str], ...]
    states: int
    transitions: int


def _node_key(state: State) -> tuple[str, str | None, int | None, str | None]:
    if state.phase == "stop":
        return "stop", state.stage, None if state.mtd is None else state.mtd + 1, None
    if state.phase == "decide":
        return "decide", state.stage, state.dose + 1, state.rule
    return "treat", state.stage, state.dose + 1, None


def _node_id(key: tuple[str, str | None, int | None, str | None]) -> str:
    kind, stage, dose, rule = key
    if kind == "stop":
        return f"stop:{stage}:{'none' if dose is None else dose}"
    if kind == "decide":
        return f"decide:{stage}:{dose}:{rule}"
    return f"treat:{stage}:{dose}"


def condensed_diagram(compiled: CompiledProtocol) -> StateDiagram:
    """Condense the state graph into one box per (stage, dose, kind) and per decision point.

    Treat states merge by stage and dose, decide states by stage, dose and
    rule, stops by the MTD they declare.  Arrows merge transitions between
    the same boxes by the same rule (outcomes) or option (decisions).

    Examples
    --------
    >>> from escalation_rules import compile_protocol, load_protocol
    >>> d = condensed_diagram(compile_protocol(load_protocol("spec/nct07117175")))
    >>> sum(n.states for n in d.nodes) == d.states
    True
    >>> sorted(e.option for e in d.edges if e.rule == "top-pass" and e.kind == "option")
    ['add-group', 'fill', 'terminate']
    """
    p = compiled.protocol
    g = compiled.graph
    node_states: Counter[tuple[str, str | None, int | None, str | None]] = Counter()
    cohorts: dict[tuple[str, str | None, int | None, str | None], set[int]] = defaultdict(set)
    for state in g:
        key = _node_key(state)
        node_states[key] += 1
        if state.phase == "treat":
            cohorts[key].add(state.cohort)
    edge_count: Counter[tuple[Any, ...]] = Counter()
    edge_data: dict[tuple[Any, ...], dict[str, Any]] = {}
    for a, b, data in g.edges(data=True):
        ka, kb = _node_key(a), _node_key(b)
        if b.phase == "stop":
            move = "stop"
        elif b.dose > a.dose:
            move = "escalate"
        elif b.dose < a.dose:
            move = "de-escalate"
        else:
            move = "same"
        ekey = (ka, kb, data["kind"], data["rule"], data.get("option"), move)
        edge_count[ekey] += 1
        edge_data[ekey] = data
    stage_order = {s.id: i for i, s in enumerate(p.stages)}

    def order(key: tuple[str, str | None, int | None, str | None]) -> tuple[Any, ...]:
        kind, stage, dose, rule = key
        rank = {"treat": 0, "decide": 1, "stop": 2}[kind]
        if kind == "stop":
            return (stage_order[stage or ""], len(p.doses) + 1, rank, -1 if dose is None else dose)
        return (stage_order[stage or ""], dose or 0, rank, _rule_order(p, rule))

    nodes = []
    for key in sorted(node_states, key=order):
        kind, stage, dose, rule = key
        if kind == "stop":
            label = "Stop: no MTD declared" if dose is None else f"Stop: MTD = dose {dose}\n{p.doses[dose - 1].label}"
        elif kind == "decide":
            r = p.rule(rule or "")
            sign = f"\nsigned by {' + '.join(r.signoff)}" if r.signoff else ""
            label = f"Decision point\n{rule} (dose {dose}){sign}"
        else:
            sizes = ", ".join(str(c) for c in sorted(cohorts[key]))
            label = f"Treat at dose {dose}, stage {stage}\n{p.doses[(dose or 1) - 1].label}\ncohort size {sizes}"
        nodes.append(DiagramNode(_node_id(key), kind, label, stage, dose, rule, node_states[key]))
    edges = []
    for ekey in sorted(edge_count, key=lambda k: (order(k[0]), order(k[1]), k[2], k[3], str(k[4]))):
        ka, kb, kind, rule, option, move = ekey
        data = edge_data[ekey]
        rule_signoff = tuple(p.rule(rule).signoff) if rule in _rule_ids(p) else ()
        if kind == "option":
            signoff = tuple(data.get("signoff", ())) or rule_signoff
            extra = f"\nsigned by {' + '.join(signoff)}" if signoff and set(signoff) != set(rule_signoff) else ""
            label = f"[{option}]{extra}"
        else:
            signoff = rule_signoff
            label = f"{rule}\n" + "\n".join(textwrap.wrap(data["guard"], 28))
        edges.append(DiagramEdge(_node_id(ka), _node_id(kb), kind, str(rule), option, data["guard"], signoff, move,
                                 edge_count[ekey], label))
    return StateDiagram(p.id, p.title, tuple(nodes), tuple(edges),
                        tuple((s.id, s.label) for s in p.stages),
                        g.number_of_nodes(), g.number_of_edges())


def stage_diagram(diagram: StateDiagram, stage: str, dose: int | None = None) -> StateDiagram:
    """The part of a condensed diagram that one stage draws (or, with ``dose``, one dose of a stage).

    The part has the stage's boxes (with ``dose``: its treatment and decision boxes at that dose) and the arrows
    leaving them; an arrow into another part ends at a copy of its target of kind ``"exit"``, labelled with where
    the trial continues; ends of the trial are drawn in every part that reaches them.  The counts (``states``,
    ``transitions``) are those of the part's own boxes and arrows.

    Raises
    ------
    EscalationRulesError
        For a stage the diagram does not have.

    Examples
    --------
    >>> from escalation_rules import compile_protocol, load_protocol
    >>> d = condensed_diagram(compile_protocol(load_protocol("spec/nct07117175")))
    >>> part = stage_diagram(d, "titration")
    >>> sorted({n.kind for n in part.nodes})
    ['decide', 'exit', 'stop', 'treat']
    >>> [n.label.splitlines()[0] for n in part.nodes if n.kind == "exit"]
    ['Continues in stage three-plus-three']
    >>> [n.label.splitlines()[0] for n in stage_diagram(d, "three-plus-three", 2).nodes if n.kind == "exit"]
    ['Continues at dose 3 (same stage)', 'Continues in stage fill']
    """
    labels = dict(diagram.stages)
    if stage not in labels:
        raise EscalationRulesError(f"stage {stage!r}: not a stage of {diagram.protocol} "
                                   f"(stages: {', '.join(labels)})")
    own = {n.id: n for n in diagram.nodes
           if n.stage == stage and (dose is None or (n.kind != "stop" and n.dose == dose))}
    edges = tuple(e for e in diagram.edges if e.source in own)
    others = {n.id: n for n in diagram.nodes if n.id not in own}
    extra = []
    for target in dict.fromkeys(e.target for e in edges if e.target not in own):
        node = others[target]
        if node.kind == "stop":
            extra.append(node)
            continue
        where = f"stage {node.stage}" if node.stage != stage else f"dose {node.dose} (same stage)"
        extra.append(attrs.evolve(node, kind="exit", label=f"Continues {'in' if node.stage != stage else 'at'} "
                                                            f"{where}\n{node.label}"))
    title = f"{diagram.title}: stage {stage}" + ("" if dose is None else f", dose {dose}")
    return StateDiagram(diagram.protocol, title, (*own.values(), *extra), edges, ((stage, labels[stage]),),
                        sum(n.states for n in own.values()), sum(e.transitions for e in edges))


def _rule_ids(p: Protocol) -> set[str]:
    return {r.id for s in p.stages for r in s.rules}


def _rule_order(p: Protocol, rule: str | None) -> int:
    for i, r in enumerate(r for s in p.stages for r in s.rules):
        if r.id == rule:
            return i
    return -1


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_FILL = {"treat": "#dbe9f6", "decide": "#fff2c2", "stop": "#e6e6e6", "exit": "#ffffff"}
_STAGE_FILL = ("#dbe9f6", "#e0efd8", "#eadff2", "#fde3cc", "#d7efee")
_SHAPE = {"treat": "box", "decide": "box, peripheries=2", "stop": "box", "exit": "box, style=\"rounded,dashed\""}
_COLOUR = {"escalate": "#1b7837", "de-escalate": "#b2182b", "same": "#2b2b2b", "stop": "#6b6b6b"}


def diagram_dot(diagram: StateDiagram) -> str:
    """The diagram as Graphviz DOT text, top to bottom; treatment boxes are coloured by stage.

    Arrows are green when they escalate, red when they de-escalate, grey
    when they stop; choices people make are dashed.

    Examples
    --------
    >>> from escalation_rules import builtin_design, compile_protocol
    >>> dot = diagram_dot(condensed_diagram(compile_protocol(builtin_design("3+3-escalate-only", doses=1))))
    >>> dot.splitlines()[0]
    'digraph protocol {'
    """
    lines = [
        "digraph protocol {",
        '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.35, ranksep=0.55, '
        f"tooltip={_dot_string(diagram.title)}];",
        '  node [fontname="Helvetica", fontsize=10, style="rounded,filled", penwidth=1.2];',
        '  edge [fontname="Helvetica", fontsize=8, arrowsize=0.7];',
    ]
    palette = {stage_id: _STAGE_FILL[i % len(_STAGE_FILL)] for i, (stage_id, _label) in enumerate(diagram.stages)}
    for node in diagram.nodes:
        fill = palette.get(node.stage or "", _FILL["treat"]) if node.kind == "treat" else _FILL[node.kind]
        tip = f"{node.states} state(s) of the full graph"
        lines.append(f"  {_dot_string(node.id)} [label={_dot_string(node.label)}, shape={_SHAPE[node.kind]}, "
                     f"fillcolor={_dot_string(fill)}, tooltip={_dot_string(tip)}];")
    for e in diagram.edges:
        style = "dashed" if e.kind == "option" else "solid"
        tip = f"{e.rule}: {e.guard} ({e.transitions} transition(s))"
        lines.append(f"  {_dot_string(e.source)} -> {_dot_string(e.target)} [label={_dot_string(e.label)}, "
                     f"color={_dot_string(_COLOUR[e.move])}, fontcolor={_dot_string(_COLOUR[e.move])}, "
                     f"style={style}, tooltip={_dot_string(tip)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot: str, program: str = "dot") -> str:
    """Render DOT text to an SVG element with Graphviz (no network; the ``dot`` program must be installed).

    The XML prologue is dropped so the SVG can be inlined in a page.

    Raises
    ------
    RenderError
        When Graphviz is not installed or refuses the input.
    """
    exe = shutil.which(program)
    if exe is None:
        raise RenderError(f"graphviz: the {program!r} program was not found; install Graphviz "
                          "(Debian: apt-get install graphviz)")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True, timeout=60,
                              check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"graphviz: {program} took longer than 60 s") from None
    if done.returncode != 0:
        first = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"graphviz: {program} failed: {first[0] if first else 'no message'}")
    svg = done.stdout.decode("utf-8")
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


# ------------------------------------------------------------------ vectors


@attrs.frozen
class VectorResult:
    """One conformance vector run against the protocol.

    Attributes
    ----------
    file : str
        The vector file's name.
    description : str
        The test's description.
    clause : str or None
        The clause the test cites.
    history : str
        The history, as written in the file (JSON lists are shown as JSON).
    rule : str or None
        The rule that decided (the part before ``/`` for a choice); None for
        an error vector.
    ok : bool
        True when the engine gives what the vector pins.
    detail : str
        What differed, or what was checked.
    """

    __repr__ = value_repr

    file: str
    description: str
    clause: str | None
    history: str
    rule: str | None
    ok: bool
    detail: str


def find_vectors_dir(spec_path: Path) -> Path | None:
    """The ``vectors`` folder beside a protocol file or folder, if there is one.

    Examples
    --------
    >>> find_vectors_dir(Path("spec/nct07117175")) in (None, Path("spec/vectors"))
    True
    """
    for candidate in (spec_path.parent / "vectors", spec_path.parent.parent / "spec" / "vectors"):
        if candidate.is_dir():
            return candidate
    return None


def _design_key(protocol: Protocol) -> tuple[Any, ...]:
    return protocol.cap, protocol.start_dose, protocol.stages, protocol.boundaries, protocol.selection


def _targets(vector: Mapping[str, Any], protocol: Protocol, spec_path: Path | None, root: Path) -> bool:
    design = vector.get("design")
    if not isinstance(design, str):
        return False
    if design in DESIGNS:
        if spec_path is not None or protocol.id != design or vector.get("doses") != len(protocol.doses):
            return False
        params = vector.get("params") or {}
        if not params and not protocol.boundaries:
            return True
        try:  # a model-assisted design: the vector's parameters must give this very table
            other = builtin_design(design, len(protocol.doses), **params)
        except EscalationRulesError:
            return False
        return _design_key(other) == _design_key(protocol)
    if spec_path is None:
        return False
    target = root / design
    if not target.exists() and target.suffix == ".toml":
        target = target.with_suffix("")
    mine = spec_path
    if not mine.exists() and mine.suffix == ".toml":
        mine = mine.with_suffix("")
    try:
        return target.resolve() == mine.resolve()
    except OSError:  # pragma: no cover - unreadable path
        return False


def run_vectors(protocol: Protocol, vectors_dir: Path | None, spec_path: Path | None = None) -> list[VectorResult]:
    """Run every vector of ``vectors_dir/*.json`` whose ``design`` is this protocol.

    A vector's ``design`` path is read relative to the folder that holds
    ``spec/`` (two levels above ``spec/vectors``).  Files that are not valid
    vector files are reported as failed results rather than raised, so the
    page shows them.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> run_vectors(builtin_design("3+3-deescalate", doses=3), None)
    []
    """
    if vectors_dir is None or not vectors_dir.is_dir():
        return []
    root = vectors_dir.parent.parent
    results: list[VectorResult] = []
    for path in sorted(vectors_dir.glob("*.json")):
        if path.name == "schema.json":
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            results.append(VectorResult(path.name, "(unreadable file)", None, "", None, False, str(err)))
            continue
        if not isinstance(data, dict) or not _targets(data, protocol, spec_path, root):
            continue
        for test in data.get("tests", []):
            if isinstance(test, dict) and "history" in test:  # other kinds of vector (records, events) are not ours
                results.append(_run_one(protocol, path.name, test))
    return results


def _run_one(protocol: Protocol, file: str, test: Mapping[str, Any]) -> VectorResult:
    description = str(test.get("description", ""))
    clause = test.get("clause") if isinstance(test.get("clause"), str) else None
    raw = test.get("history", "")
    shown = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
    try:
        history: Any = raw if isinstance(raw, str) else parse_history_json(json.dumps(raw), file)
        decision = decide(protocol, history)
    except EscalationRulesError as err:
        want = test.get("error")
        if not isinstance(want, dict):
            return VectorResult(file, description, clause, shown, None, False, f"refused: {err}")
        cohort = getattr(err, "cohort", None)
        problems = []
        if "cohort" in want and want["cohort"] != cohort:
            problems.append(f"cohort {cohort} (expected {want['cohort']})")
        if "contains" in want and str(want["contains"]) not in str(err):
            problems.append(f"message lacks {want['contains']!r}")
        ok = not problems
        return VectorResult(file, description, clause, shown, None, ok,
                            "refused as expected" if ok else "refused, but " + "; ".join(problems))
    rule = decision.rule.split("/")[0]
    if "error" in test:
        return VectorResult(file, description, clause, shown, rule, False, "expected a refusal; got a decision")
    got = decision.to_dict() | {"options": [o.id for o in decision.options]}
    expected = test.get("expected", {})
    problems = [f"{key} = {got.get(key)!r} (expected {value!r})"
                for key, value in (expected.items() if isinstance(expected, dict) else ())
                if (list(got.get(key) or []) if key in ("options", "signoff") else got.get(key)) != value]
    return VectorResult(file, description, clause, shown, rule, not problems,
                        "; ".join(problems) if problems else "decision as pinned")


# ------------------------------------------------------------------ traceability


@attrs.frozen
class TraceRow:
    """One clause of the protocol, what encodes it and what tests it.

    Attributes
    ----------
    clause, summary : str
        The clause reference and its summary from the protocol's ``[clauses]``.
    rules : tuple of str
        The decision rules that cite the clause.
    other : tuple of str
        Other elements citing it, as ``kind:id``: ``stage:ID``, ``early
        termination:``, ``eligibility:ID``, ``dlt:ID``.
    vectors : tuple of str
        Descriptions of the conformance vectors that cite the clause or are
        decided by one of its rules.
    untested : tuple of str
        Its rules that no vector exercises.
    """

    __repr__ = value_repr

    clause: str
    summary: str
    rules: tuple[str, ...]
    other: tuple[str, ...]
    vectors: tuple[str, ...]
    untested: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        """``"no rule"`` when nothing encodes the clause; ``"no vector for RULE"`` per untested rule."""
        flags = []
        if not self.rules and not self.other:
            flags.append("no rule")
        flags.extend(f"no vector for {rule}" for rule in self.untested)
        return tuple(flags)


def _clauses_in(data: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(data, Mapping):
        clause = data.get("clause")
        if isinstance(clause, str):
            yield clause, f"{where}:{data.get('id', '')}"
        for value in data.values():
            if isinstance(value, Mapping | list):
                yield from _clauses_in(value, where)
    elif isinstance(data, list):
        for item in data:
            yield from _clauses_in(item, where)


def traceability(protocol: Protocol, results: Sequence[VectorResult]) -> tuple[list[TraceRow], list[str]]:
    """Clause → rules → vectors; and the rules no vector exercises.

    A vector tests a rule when the engine decides by that rule on the vector's
    history; it tests a clause when it cites the clause or tests one of the
    clause's rules.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> rows, untested = traceability(load_protocol("spec/nct07117175"), [])
    >>> rows[0].clause, rows[0].rules
    ('Full description ¶1', ('at-pass-one', 'at-first-dlt', 'at-pass-three', 'at-too-toxic'))
    >>> rows[0].flags[0]
    'no vector for at-pass-one'
    >>> rows, untested = traceability(load_protocol("spec/nct07117175"), run_vectors(
    ...     load_protocol("spec/nct07117175"), Path("spec/vectors"), Path("spec/nct07117175")))
    >>> untested
    []
    """
    rules_of: dict[str, list[str]] = defaultdict(list)
    other_of: dict[str, list[str]] = defaultdict(list)
    for stage in protocol.stages:
        other_of[stage.clause].append(f"stage:{stage.id}")
        for rule in stage.rules:
            rules_of[rule.clause].append(rule.id)
    if protocol.early_termination is not None:
        other_of[protocol.early_termination.clause].append("early termination:")
    for key in ("eligibility", "dlt"):
        for clause, what in _clauses_in(protocol.extra.get(key), key):
            other_of[clause].append(what)
    clauses = list(protocol.clauses)
    for clause in [*rules_of, *other_of]:
        if clause not in clauses:
            clauses.append(clause)
    tested_rules: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.rule is not None:
            tested_rules[r.rule].append(r.description)
    rows = []
    for clause in clauses:
        rules = tuple(dict.fromkeys(rules_of.get(clause, ())))
        vectors = [r.description for r in results if r.clause == clause]
        for rule_id in rules:
            vectors.extend(tested_rules.get(rule_id, ()))
        rows.append(TraceRow(clause, protocol.clauses.get(clause, ""), rules,
                             tuple(dict.fromkeys(other_of.get(clause, ()))), tuple(dict.fromkeys(vectors)),
                             tuple(r for r in rules if r not in tested_rules)))
    untested = [rule.id for stage in protocol.stages for rule in stage.rules if rule.id not in tested_rules]
    return rows, untested


# ------------------------------------------------------------------ context


@attrs.frozen
class AuditContext:
    """Everything an audit page shows, computed once from a compiled protocol.

    Attributes
    ----------
    compiled : CompiledProtocol
    spec : str
        How the protocol is named in the commands the page prints.
    report : VerificationReport
    vectors : tuple of VectorResult
    vectors_dir : str or None
        Where the vectors were looked for.
    svg : str or None
        The rendered diagram, or None when it could not be rendered.
    svg_error : str or None
        Why it could not.
    spec_path : Path or None
        The protocol file or folder read (None for a built-in design).
    merged : VerificationReport or None
        The same checks run on merged states (what ``escalation-rules verify`` runs by default); ``report`` is
        the full state graph's (``verify --full``).
    stage_svgs : tuple of (str, int or None, str)
        The diagram drawn in parts, for a protocol of several stages: (stage, dose or None, SVG), one part per
        stage, or per dose of a stage whose whole part would be wider than :data:`PART_WIDTH_PT`.
    """

    __repr__ = value_repr

    compiled: CompiledProtocol
    spec: str
    report: VerificationReport
    vectors: tuple[VectorResult, ...]
    vectors_dir: str | None
    diagram: StateDiagram
    svg: str | None
    svg_error: str | None
    stage_svgs: tuple[tuple[str, int | None, str], ...] = ()
    merged: VerificationReport | None = None
    spec_path: Path | None = None

    @classmethod
    def build(cls, compiled: CompiledProtocol, spec: str | None = None, spec_path: Path | None = None,
              vectors_dir: Path | None = None, render: bool = False) -> AuditContext:
        """Verify, run the vectors, condense the diagram and (with ``render``) draw it."""
        diagram = condensed_diagram(compiled)
        svg: str | None = None
        error: str | None = None
        stages: list[tuple[str, int | None, str]] = []
        if render:
            try:
                svg = render_svg(diagram_dot(diagram))
                if len(diagram.stages) > 1:
                    stages = _parts(diagram)
            except RenderError as err:
                error = str(err)
        results = run_vectors(compiled.protocol, vectors_dir, spec_path)
        return cls(compiled, spec or compiled.protocol.source, verify(compiled), tuple(results),
                   None if vectors_dir is None else str(vectors_dir), diagram, svg, error, tuple(stages),
                   verify(compiled.protocol), spec_path)


#: A diagram part wider than this (points, as Graphviz measures) is drawn one dose at a time instead.
PART_WIDTH_PT = 720.0


def _svg_width(svg: str) -> float:
    """The natural width of a Graphviz SVG in points (0 when it does not say)."""
    found = re.search(r'<svg[^>]*?\swidth="([\d.]+)pt"', svg)
    return float(found.group(1)) if found else 0.0


def _parts(diagram: StateDiagram) -> list[tuple[str, int | None, str]]:
    """Render the diagram one stage at a time, and a too-wide stage one dose at a time."""
    out: list[tuple[str, int | None, str]] = []
    for stage, _label in diagram.stages:
        svg = render_svg(diagram_dot(stage_diagram(diagram, stage)))
        doses = sorted({n.dose for n in diagram.nodes if n.stage == stage and n.kind != "stop" and n.dose})
        if _svg_width(svg) <= PART_WIDTH_PT or len(doses) < 2:
            out.append((stage, None, svg))
            continue
        out.extend((stage, dose, render_svg(diagram_dot(stage_diagram(diagram, stage, dose)))) for dose in doses)
    return out


# ------------------------------------------------------------------ stamp

#: The version of the stamp's JSON layout.
STAMP_FORMAT = 1


def protocol_files(path: Path) -> list[Path]:
    """The files a protocol path reads: every ``*.toml`` of a folder, or the file itself (``.toml`` optional).

    Examples
    --------
    >>> [p.name for p in protocol_files(Path("spec/nct07117175"))]
    ['dlt.toml', 'eligibility.toml', 'fhir.toml', 'protocol.toml', 'scenarios.toml']
    >>> protocol_files(Path("no/such/protocol"))
    []
    """
    if not path.exists() and path.suffix == ".toml":
        path = path.with_suffix("")
    if path.is_dir():
        return sorted(path.glob("*.toml"))
    return [path] if path.is_file() else []


def stamp_files(spec_path: Path | None, vectors_dir: Path | None,
                vectors: Sequence[VectorResult]) -> list[tuple[str, Path]]:
    """The files a page is built from, each with the name the stamp gives it: the protocol's files by their own
    name, the conformance vector files that target it as ``vectors/NAME``.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> results = run_vectors(load_protocol("spec/nct07117175"), Path("spec/vectors"), Path("spec/nct07117175"))
    >>> [name for name, _path in stamp_files(Path("spec/nct07117175"), Path("spec/vectors"), results)]
    ['dlt.toml', 'eligibility.toml', 'fhir.toml', 'protocol.toml', 'scenarios.toml', 'vectors/nct07117175.json']
    """
    files = [(f.name, f) for f in protocol_files(spec_path)] if spec_path is not None else []
    if vectors_dir is not None:
        files += [(f"vectors/{name}", vectors_dir / name) for name in sorted({v.file for v in vectors})]
    return files


def build_date() -> str:
    """Now in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, or the time ``SOURCE_DATE_EPOCH`` names (reproducible builds).

    Examples
    --------
    >>> import os
    >>> os.environ["SOURCE_DATE_EPOCH"] = "0"
    >>> build_date()
    '1970-01-01T00:00:00Z'
    >>> del os.environ["SOURCE_DATE_EPOCH"]
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     empty = Path(folder) / "empty"
    ...     _ = empty.write_bytes(b"")
    ...     sha256_of(empty)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def design_settings(protocol: Protocol) -> str:
    """A built-in design's parameters as the ``--set`` options that give them (empty for designs without)."""
    parameters = protocol.extra.get("meta", {}).get("design", {}).get("parameters", {})
    return settings_text(parameters) if isinstance(parameters, dict) else ""


def site_stamp(ctx: AuditContext, built: str | None = None) -> dict[str, Any]:
    """The stamp of an audit page: the SHA-256 of every file it was built from, the package version and the date.

    Examples
    --------
    >>> from escalation_rules import builtin_design, compile_protocol
    >>> stamp = site_stamp(AuditContext.build(compile_protocol(builtin_design("3+3-deescalate", doses=3))),
    ...                    built="2026-01-01T00:00:00Z")
    >>> stamp["design"], stamp["doses"], stamp["files"], stamp["built"]
    ('3+3-deescalate', 3, [], '2026-01-01T00:00:00Z')
    """
    vectors_dir = None if ctx.vectors_dir is None else Path(ctx.vectors_dir)
    files = stamp_files(ctx.spec_path, vectors_dir, ctx.vectors)
    p = ctx.compiled.protocol
    stamp: dict[str, Any] = {"stamp": STAMP_FORMAT, "protocol": p.id, "spec": ctx.spec,
                             "design": p.id if ctx.spec_path is None else None, "doses": len(p.doses)}
    if ctx.spec_path is None and design_settings(p):
        stamp["parameters"] = design_settings(p)
    return {**stamp,
            "package": "escalation_rules", "version": __version__, "built": built or build_date(),
            "files": [{"name": name, "sha256": sha256_of(path)} for name, path in files]}


_STAMP_RE = re.compile(r'<script type="application/json" class="escalation-stamp">(.*?)</script>', re.S)


def read_stamps(html: str) -> list[dict[str, Any]]:
    """The stamps an HTML page carries (one per audit directive on it); unreadable ones are skipped.

    Examples
    --------
    >>> read_stamps('<p>x</p><script type="application/json" class="escalation-stamp">{"stamp": 1}</script>')
    [{'stamp': 1}]
    """
    found = []
    for match in _STAMP_RE.finditer(html):
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


def stamp_differences(stamp: Mapping[str, Any], current: Mapping[str, Any],
                      protocol_only: bool = False) -> list[str]:
    """How the files now differ from a stamp, one line each (empty when they match).

    With ``protocol_only`` the conformance vector files (``vectors/...``) are
    left out of the comparison.

    Examples
    --------
    >>> old = {"design": None, "files": [{"name": "a.toml", "sha256": "1" * 64}, {"name": "b.toml", "sha256": "2"}]}
    >>> new = {"design": None, "files": [{"name": "a.toml", "sha256": "3" * 64}, {"name": "c.toml", "sha256": "4"}]}
    >>> for line in stamp_differences(old, new):
    ...     print(line)
    changed: a.toml (SHA-256 stamped 11111111..., now 33333333...)
    removed: b.toml (stamped; now missing, or no longer for this protocol)
    added: c.toml (not in the stamp)
    """
    out = []
    if stamp.get("design") != current.get("design") or (stamp.get("design") and (
            stamp.get("doses") != current.get("doses") or stamp.get("parameters") != current.get("parameters"))):
        def what(s: Mapping[str, Any]) -> str:
            if not s.get("design"):
                return "protocol files"
            settings = f" ({s['parameters']})" if s.get("parameters") else ""
            return f"built-in design {s['design']} with {s.get('doses')} doses{settings}"
        out.append(f"different protocol: the page was built from {what(stamp)}, not {what(current)}")

    def files(s: Mapping[str, Any]) -> dict[str, str]:
        entries = s.get("files")
        if not isinstance(entries, list):
            return {}
        return {str(f.get("name")): str(f.get("sha256")) for f in entries if isinstance(f, Mapping)
                if not protocol_only or not str(f.get("name")).startswith("vectors/")}

    old, new = files(stamp), files(current)
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            out.append(f"changed: {name} (SHA-256 stamped {old[name][:8]}..., now {new[name][:8]}...)")
    out.extend(f"removed: {name} (stamped; now missing, or no longer for this protocol)"
               for name in sorted(old.keys() - new.keys()))
    out.extend(f"added: {name} (not in the stamp)" for name in sorted(new.keys() - old.keys()))
    return out


# ------------------------------------------------------------------ reStructuredText


def _esc(text: Any) -> str:
    """Escape text for reStructuredText inline content."""
    out = str(text).replace("\\", "\\\\")
    for ch in "*`|_[]<>":
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def _lit(text: Any) -> str:
    text = " ".join(str(text).split())
    return f"``{text}``" if text else ""


def _heading(title: str, char: str) -> str:
    return f"{title}\n{char * max(len(title), 4)}\n\n"


#: Tables with this many columns or more are marked ``escalation-wide``: printed on landscape pages.
WIDE_COLUMNS = 5


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None,
           css: str = "", caption: str = "") -> str:
    out = [f".. list-table:: {caption}".rstrip(), f"   :header-rows: {0 if header is None else 1}"]
    if widths:
        out.append(f"   :widths: {' '.join(str(w) for w in widths)}")
    if header is not None and len(header) >= WIDE_COLUMNS:
        css = f"{css} escalation-wide".strip()
    if css:
        out.append(f"   :class: {css}")
    out.append("")
    for row in ([] if header is None else [header]) + [list(r) for r in rows]:
        for i, cell in enumerate(row):
            cell = cell if cell.strip() else "\\-"
            lines = cell.splitlines() or ["\\-"]
            lead = "   * - " if i == 0 else "     - "
            out.append(lead + lines[0])
            out.extend("       " + ln if ln else "" for ln in lines[1:])
    return "\n".join(out) + "\n\n"


def _not_available(what: str) -> str:
    return f".. note::\n\n   {what}\n\n"


def _signers(roles: Sequence[str]) -> str:
    return ", ".join(_esc(r) for r in roles) if roles else "nobody (applied by the rules)"


def _overview(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    stats = ctx.compiled.stats
    start_stage = p.stage(p.start_stage)
    out = [
        f"This page is generated from the protocol file ``{ctx.spec}`` that the decision engine runs; "
        "it is rebuilt from that file, so it cannot say something the engine does not do.\n\n",
    ]
    facts = [
        ("Protocol", _esc(p.id)),
        ("Title", _esc(p.title)),
        ("Protocol file", f"``{ctx.spec}``"),
        ("Enrolment cap", f"{p.cap} patients"),
        ("First cohort", f"{start_stage.cohort} patient(s) at dose {p.dose_index(p.start_dose) + 1}, "
                         f"stage {_esc(start_stage.id)}"),
        ("Roles", _signers(p.roles)),
    ]
    if p.escalation_signoff:
        facts.append(("Every escalation signed by", _signers(p.escalation_signoff)))
    if p.early_termination is not None:
        et = p.early_termination
        facts.append(("Early termination", f"{_esc(et.paraphrase)} (signed by {_signers(et.signoff)}; "
                                            f"{_esc(et.clause)})"))
    facts.append(("State graph", f"{stats['states']} states, {stats['edges']} transitions, {stats['paths']} "
                                 f"complete paths, {stats['decisions']} decision points, {stats['stops']} end states"))
    facts.append(("Generated by", f"escalation_rules {__version__}"))
    out.append(_table(None, [list(f) for f in facts], [25, 75], "escalation-overview"))
    out.append(_heading("Dose ladder", "-"))
    governed = {d: s.id for s in p.stages for d in s.doses}
    rows = [[str(i + 1), _esc(d.label), "" if d.amount is None else f"{d.amount:g}", _esc(d.unit or ""),
             "yes: exists only if people decide to add it" if d.provisional else "no",
             _esc(governed.get(d.id, ""))] for i, d in enumerate(p.doses)]
    out.append(_table(["Level", "Dose", "Amount", "Unit", "Provisional", "Stage governing it"], rows,
                      [6, 30, 10, 14, 20, 20], "escalation-dose-ladder"))
    return "".join(out)


def _tables(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    out = ["When every patient of a cohort has been observed, the table of the stage the trial is in is read. "
           "Each row has a condition on the counts at the current dose (see *Names in conditions* below) and "
           "what then happens.\n\n"]
    for stage in p.stages:
        out.append(_heading(f"Stage {stage.id}: {stage.label}", "-"))
        policy = ("the first row whose condition holds applies (rows are read top to bottom)"
                  if stage.hit_policy == "first" else "exactly one row may apply at any time (checked on every "
                  "reachable state)")
        window = (f"; DLT observation window {stage.window.min_days}-{stage.window.max_days} days"
                  if stage.window else "")
        doses = ", ".join(str(p.dose_index(d) + 1) for d in stage.doses) or "the dose it is entered at"
        out.append(f"Kind: {_esc(stage.kind)}; doses: {doses}; first cohort: {stage.cohort} patient(s){window}; "
                   f"{policy}. Clause: {_esc(stage.clause)}.\n\n")
        rows = []
        for i, rule in enumerate(stage.rules, 1):
            rows.append([str(i), _lit(rule.id), _lit(rule.when.text), _esc(rule_text(rule)),
                         _signers(rule.signoff) if rule.signoff else "\\-",
                         f"{_esc(rule.paraphrase)} ({_esc(rule.clause)})"])
        out.append(_table(["#", "Rule", "Condition", "Then", "Signed by", "What the protocol says (clause)"],
                          rows, [3, 14, 24, 24, 10, 25], "escalation-decision-table"))
    out.append(_design_tables(p))
    from .protocol import GUARD_NAME_DOCS

    out.append(_heading("Names in conditions", "-"))
    used = sorted({name for s in p.stages for r in s.rules for name in r.when.names})
    out.append(_table(["Name", "Meaning"], [[_lit(n), _esc(GUARD_NAME_DOCS.get(n, ""))] for n in used], [20, 80]))
    return "".join(out)


def _design_tables(p: Protocol) -> str:
    """A model-assisted design's boundary table, or a model's skeleton and first decisions, as protocols print them."""
    out = []
    if p.boundaries:
        step = p.stage(p.start_stage).cohort if p.start_stage else 1
        rows = [b for b in p.boundaries if b.n % max(step, 1) == 0] or list(p.boundaries)

        def cell(value: int, n: int, low: bool = False) -> str:
            return "\\-" if (low and value < 0) or (not low and value > n) else str(value)

        out.append(_heading("Decision boundaries", "-"))
        out.append("For each number of patients treated at the current dose: escalate when the DLTs there are at "
                   "most the first value, de-escalate when they are at least the second, and close the dose with "
                   "every dose above it when they are at least the third (\\- : never).\n\n")
        out.append(_table(["Patients treated", "Escalate if DLTs <=", "De-escalate if DLTs >=",
                           "Eliminate if DLTs >="],
                          [[str(b.n), cell(b.escalate, b.n, True), cell(b.deescalate, b.n), cell(b.eliminate, b.n)]
                           for b in rows], [25, 25, 25, 25]))
        if p.selection is not None:
            out.append(f"At the end the MTD is selected by isotonic regression of the observed DLT rates, the dose "
                       f"closest to the target {p.selection.target:g}; doses with Pr(rate > target | data) > "
                       f"{p.selection.cutoff_eli:g} (and all above) are left out.\n\n")
    if p.model is not None:
        from .describe import model_decisions

        m = p.model
        out.append(_heading("Dose-toxicity model", "-"))
        out.append(f"CRM, {_esc(m.model)} curve; skeleton {_esc(', '.join(f'{x:.4g}' for x in m.skeleton))}; "
                   f"Normal(0, {m.prior_sd:.4g}²) prior on the model parameter; target {m.target:g}"
                   + ("; restricted (no skipping upward, no escalation right after a cohort at or above the "
                      "target rate)" if m.restrict else "")
                   + (f"; safety stop when Pr(rate at dose 1 > target | data) > {m.stop_p:g}" if m.stop_p else "")
                   + ". What the engine decides after every outcome of the first two cohorts:\n\n")
        out.append(_table(["History", "Next"], [[_lit(r["history"]), _esc(r["next"])] for r in model_decisions(p)],
                          [40, 60]))
    return "".join(out)


def _responsive(svg: str) -> str:
    """Let the SVG scale to its container between 80% and 100% of its natural size (its text stays legible; a
    narrower frame scrolls sideways), and to any size in print: the root element's fixed size becomes limits."""
    end = svg.find(">")
    width = _svg_width(svg)
    head = re.sub(r'\s(width|height)="[^"]*"', "", svg[:end])
    limit = f' style="max-width:{width:g}pt;min-width:{0.8 * width:.0f}pt"' if width else ""
    return head + limit + ' preserveAspectRatio="xMidYMin meet"' + svg[end:]


_DIAGRAM_STYLE = ("<style>.escalation-diagram{overflow-x:auto}"
                  ".escalation-diagram svg{width:100%;height:auto;display:block;margin:auto}"
                  ".escalation-diagram a{text-decoration:none}"
                  "@media print{.escalation-diagram{break-inside:avoid;overflow:visible}"
                  ".escalation-diagram svg{min-width:0!important;max-height:180mm}}</style>")

def _svg_html(svg: str, label: str, css: str = "escalation-diagram") -> str:
    """A raw-HTML block holding an inline SVG diagram."""
    body = "\n".join("      " + ln for ln in _responsive(svg).splitlines())
    return (".. raw:: html\n\n"
            f'   <div class="{css}" role="img" aria-label="{_attr(label)}" style="margin:1em 0">\n'
            f"{body}\n   </div>\n\n")


def _diagram(ctx: AuditContext, href: str | None = None) -> str:
    d = ctx.diagram
    per_stage = bool(ctx.stage_svgs)
    out = [f"The full state graph has {d.states} states and {d.transitions} transitions. "
           f"The diagram condenses it into {len(d.nodes)} boxes: rounded boxes are treatments at a dose (coloured by "
           "the stage, which the box names), yellow double-framed boxes are decision points where people choose, "
           "grey boxes are the ends of the trial. Each solid arrow is labelled with the rule and its condition; "
           "each dashed arrow is a choice people make (signed as the decision point says). "
           "Green arrows escalate, red arrows de-escalate, grey arrows stop. "
           + ("So that every label can be read at page width, the diagram is drawn one stage at a time: a white "
              "box with a dashed frame is where the trial continues in another stage (that stage's diagram "
              "follows). " if per_stage else "")
           + "The table after the diagram lists the same arrows in words.\n\n"]
    if ctx.svg is not None:
        link = (f'   <p><a class="escalation-diagram-full" href="{_attr(href)}" target="_blank">'
                + ("Open the whole diagram, all stages at once, at full size" if per_stage
                   else "Open the diagram at full size (every label readable)") + "</a></p>\n") if href else ""
        out.append(f".. raw:: html\n\n   {_DIAGRAM_STYLE}\n{link}\n")
        if per_stage:
            labels = dict(d.stages)
            for stage, dose, svg in ctx.stage_svgs:
                part = stage_diagram(d, stage, dose)
                name = f"stage {stage}" + ("" if dose is None else f", dose {dose}")
                out.append(_heading(f"Diagram of {name}", "-"))
                out.append(f"{_esc(labels[stage])}"
                           + ("" if dose is None else f" (the stage is drawn one dose at a time; this is dose {dose})")
                           + f". Its boxes stand for {part.states} states and its arrows for {part.transitions} "
                           "transitions of the full graph.\n\n")
                out.append(_svg_html(svg, f"State diagram of {name} of {d.protocol}",
                                     "escalation-diagram escalation-stage-diagram"))
        else:
            out.append(_svg_html(ctx.svg, f"State diagram of {d.protocol}"))
        if link:
            out.append(f".. raw:: html\n\n{link}\n")
    else:
        out.append(_not_available(f"The diagram could not be drawn: {_esc(ctx.svg_error or 'not rendered')}. "
                                  "The table below lists the same transitions."))
    out.append(_heading("Transitions", "-"))
    names = {n.id: n.label.splitlines()[0] + (f" ({n.label.splitlines()[1]})" if n.kind == "decide" else "")
             for n in d.nodes}
    rows = []
    for e in d.edges:
        when = (f"people choose {_lit(e.option)}" if e.kind == "option"
                else f"{_lit(e.rule)}: {_lit(e.guard)}")
        rows.append([_esc(names[e.source]), when, _esc(names[e.target]), _esc(e.move),
                     _signers(e.signoff) if e.signoff else "\\-", str(e.transitions)])
    out.append(_table(["From", "When", "To", "Move", "Signed by", "Transitions"], rows,
                      [22, 34, 22, 8, 10, 4], "escalation-transitions"))
    return "".join(out)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _default_mark(entry: Any, option: str) -> str:
    """The Default column: ``yes``, or the cases of a data-dependent entry in which the option is taken."""
    if not isinstance(entry, ConditionalChoice):
        return "yes" if entry == option else ""
    cases = [case for case in entry.cases if case.option == option]
    return "; ".join("otherwise" if c.when is None else f"when {_lit(c.when.text)}" for c in cases)


def _decisions(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    out = ["At a decision point the rules do not choose: the people named must agree on one of the options. "
           "The engine then follows the option recorded with its sign-off. The *default* option is the one the "
           "operating characteristics assume.\n\n"]
    any_point = False
    for stage in p.stages:
        for rule in stage.rules:
            if rule.action != "decide":
                continue
            any_point = True
            out.append(_heading(f"Decision point {rule.id}", "-"))
            out.append(f"Arises in stage {_esc(stage.id)} when {_lit(rule.when.text)}, that is: "
                       f"{_esc(rule.paraphrase)} ({_esc(rule.clause)}).\n\n"
                       f"Must be signed by: {_signers(rule.signoff)}.\n\n")
            default = p.default_policy.get(rule.id)
            rows = [[_lit(o.id), _esc(o.label), _esc(outcome_text(o.outcome)),
                     _signers(o.signoff) if o.signoff else "\\-", _default_mark(default, o.id)]
                    for o in rule.options]
            out.append(_table(["Option", "Label", "What happens", "Signed by", "Default"], rows,
                              [14, 30, 30, 16, 10], "escalation-decision-options"))
    if p.early_termination is not None:
        any_point = True
        et = p.early_termination
        out.append(_heading("Early termination", "-"))
        out.append(f"At any time: {_esc(et.paraphrase)} ({_esc(et.clause)}). Must be signed by: "
                   f"{_signers(et.signoff)}.\n\n")
    if not any_point:
        out.append(_not_available("This protocol has no decision points: every step is decided by its rules."))
    return "".join(out)


_PREFERRED = ("id", "kind", "type", "label", "name", "paraphrase", "text", "description", "when", "rule",
              "condition", "grade", "window_days", "signoff", "clause")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{_esc(k)}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _esc(value)


def _generic(data: Any, level: int = 0) -> str:
    """Render declared data (eligibility, DLT definition): scalars as fields, lists of tables as tables."""
    out: list[str] = []
    if isinstance(data, Mapping):
        scalars = {k: v for k, v in data.items() if not _is_table_list(v) and not isinstance(v, Mapping)}
        if scalars:
            rows = [[_esc(str(k).replace("_", " ")), _cell(v)] for k, v in scalars.items()]
            out.append(_table(["Setting", "Value"], rows, [30, 70], "escalation-data-table"))
        for key, value in data.items():
            if _is_table_list(value) or isinstance(value, Mapping):
                title = str(key).replace("_", " ").capitalize()
                out.append(f"**{_esc(title)}**\n\n" + _generic(value, level + 1))
    elif _is_table_list(data):
        keys: list[str] = []
        for item in data:
            for k in item:
                if k not in keys:
                    keys.append(k)
        first_seen = {k: i for i, k in enumerate(keys)}
        keys.sort(key=lambda k: (_PREFERRED.index(k) if k in _PREFERRED else len(_PREFERRED), first_seen[k]))
        rows = [[_cell(item.get(k, "")) for k in keys] for item in data]
        out.append(_table([_esc(k.replace("_", " ").capitalize()) for k in keys], rows, css="escalation-data-table"))
    elif data is not None:
        out.append(_cell(data) + "\n\n")
    return "".join(out)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _declared(ctx: AuditContext, key: str, what: str) -> str:
    data = ctx.compiled.protocol.extra.get(key)
    if not data:
        return _not_available(f"Not available for this protocol: its file declares no {what}.")
    out = []
    if isinstance(data, Mapping) and (data.get("template") or data.get("status")):
        status = data.get("status") or "a template"
        out.append(f".. warning::\n\n   Status of this {what}: {_esc(status)}\n\n")
    out.append(f"As declared in the protocol file (the ``{key}`` table):\n\n")
    out.append(_generic(data))
    return "".join(out)


def _eligibility(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    if not p.extra.get("eligibility"):
        return _not_available("Not available for this protocol: its file declares no eligibility criteria.")
    try:
        module = importlib.import_module("escalation_rules.eligibility")
    except ImportError:
        return _declared(ctx, "eligibility", "eligibility criteria")
    try:
        spec = module.load_eligibility(p)
    except EscalationRulesError as err:
        return (f".. warning::\n\n   The eligibility criteria were refused: {_esc(str(err).splitlines()[0])}\n\n"
                + _declared(ctx, "eligibility", "eligibility criteria"))
    out = ["Each criterion is a condition on the patient's record. A missing value makes a criterion *unknown* "
           "rather than true or false, so screening says *eligible*, *not eligible* or *undetermined* (with the "
           "data still needed). Inclusion criteria must all hold; no exclusion criterion may hold.\n\n"]
    rows = [[_lit(c.id), _esc(c.kind), _esc(c.paraphrase), _lit(c.when.text), _esc(c.clause)]
            for c in spec.criteria]
    out.append(_table(["Criterion", "Kind", "What it requires", "Condition", "Clause"], rows,
                      [14, 10, 34, 28, 14], "escalation-eligibility"))
    dictionary = getattr(module, "data_dictionary", None)
    if dictionary is not None:
        out.append(_heading("Data the criteria read", "-"))
        out.append("Each item of the patient record the criteria read, where it comes from, and which criteria "
                   "use it.\n\n")
        rows = [[_lit(r.get("name", "")), _cell(r.get("description")),
                 _cell(r.get("type")) + (f" ({_cell(r.get('unit'))})" if r.get("unit") else ""),
                 _cell(r.get("source")), _cell(r.get("used_by"))] for r in dictionary(spec)]
        out.append(_table(["Item", "Description", "Type", "Source in the record", "Used by"], rows,
                          [16, 30, 12, 22, 20], "escalation-data-items"))
        out.append(_fhir_codes(spec, dictionary(spec)))
    return "".join(out)


def _fhir_codes(spec: Any, dictionary: Sequence[Mapping[str, Any]]) -> str:
    """The codes of a FHIR Bundle each data item is read from (the protocol's ``fhir.toml``), if it has one."""
    rows = []
    for r in dictionary:
        codes = r.get("fhir_codes") or []
        if not codes:
            continue
        shown = [f"{c['resource']} {c['element']}" if "element" in c else
                 f"{c['resource']} {c['system']} {c['code']}" + ("*" if c.get("match") else "")
                 + (" (none)" if c.get("means") else "") + (f": {c['display']}" if c.get("display") else "")
                 for c in codes]
        rows.append([_lit(r.get("name", "")), "\n\n".join(_esc(x) for x in shown)])
    if not rows:
        return ""
    source = getattr(spec.fhir, "source", "the FHIR mapping")
    return (_heading("FHIR codes each item is read from", "-")
            + f"A FHIR R4 Bundle is read through {_lit(source)}: each item below is filled from these codes "
              "(``*``: an ATC group matched as a prefix; *(none)*: the code says the list is empty).\n\n"
            + _table(["Item", "Codes"], rows, [20, 80], "escalation-fhir-codes"))


def _provenance(ctx: AuditContext, stamp: Mapping[str, Any] | None = None) -> str:
    stamp = stamp or site_stamp(ctx)
    source = (f"the built-in design ``{stamp['design']}`` with {stamp['doses']} doses (no protocol file; its rules "
              "come with the package version below)" if stamp.get("design") else f"the protocol ``{ctx.spec}``")
    out = [f"This page was built on {stamp['built']} (UTC) by {stamp['package']} {stamp['version']} from "
           f"{source}. The SHA-256 of every file it was built from is below: anyone can recompute them "
           "(``sha256sum FILE``), and this command says whether the page still matches the files (exit status 0 "
           "when it does, 1 when a file changed, naming it)::\n\n"
           f"   escalation-rules docs --check SITE {_command_target(ctx)}\n\n"
           "where SITE is the folder of this page (or the page itself).\n\n"]
    rows = [[_lit(f["name"]), "conformance vectors" if f["name"].startswith("vectors/") else "protocol",
             _lit(f["sha256"])] for f in stamp["files"]]
    if rows:
        out.append(_table(["File", "Role", "SHA-256"], rows, [26, 14, 60], "escalation-stamp"))
    payload = json.dumps(stamp, sort_keys=True, ensure_ascii=True).replace("<", "\\u003c")
    out.append('.. raw:: html\n\n   <script type="application/json" class="escalation-stamp">'
               f"{payload}</script>\n\n")
    return "".join(out)


def _command_target(ctx: AuditContext) -> str:
    """How the printed commands name the protocol: its path, or a built-in design with its number of doses."""
    if ctx.spec in DESIGNS:
        return f"{ctx.spec} --doses {len(ctx.compiled.protocol.doses)}"
    return ctx.spec


def _verification(ctx: AuditContext) -> str:
    r, m = ctx.report, ctx.merged
    verdict = "every invariant holds" if r.ok else "AT LEAST ONE INVARIANT IS VIOLATED"
    out = [f"The verifier walked every possible course of the trial: every number of DLTs in every cohort and "
           f"every option at every decision point, up to the enrolment cap, and checked each invariant on every "
           f"state or transition it concerns. It walked the **full state graph**: **{r.states} states** (one per "
           f"distinct history of the trial so far: the counts at each dose, the stage, the dose, what is closed), "
           f"**{r.edges} transitions** and **{r.paths} complete paths** from the first patient to the end of the "
           f"trial; the *Checked* column below counts its states and transitions. Result: **{verdict}**.\n\n"]
    if m is not None:
        same = "the same result" if m.ok == r.ok else ("a DIFFERENT result: " + (
            "every invariant holds" if m.ok else "at least one invariant is violated"))
        out.append(f"The same checks were also run on **merged states**, the command's default walk: states whose "
                   f"futures are identical for every rule and every check are one merged state, which leaves "
                   f"**{m.states} merged states** and {m.edges} transitions for the same {m.paths} complete paths, "
                   f"with {same}. Merging is what lets long dose ladders be verified quickly; the full graph is "
                   f"what this page counts.\n\n")
    spec = _command_target(ctx)
    out.append("To reproduce (exit status 0 when every invariant holds, 1 otherwise), the first command prints "
               "this page's numbers, the second the merged count::\n\n"
               f"   escalation-rules verify {spec} --full\n   escalation-rules verify {spec}\n"
               f"   escalation-rules verify {spec} --full --json\n\n")
    rows = []
    for res in r.results:
        result = "holds" if res.ok else f"VIOLATED; counterexample {_lit(res.counterexample)}: {_esc(res.detail)}"
        rows.append([_lit(res.id), _esc(res.statement), str(res.checked), result])
    out.append(_table(["Invariant", "Statement", "Checked", "Result"], rows, [22, 48, 10, 20],
                      "escalation-verification"))
    if r.warnings:
        out.append("Notes from the build:\n\n" + "".join(f"* {_esc(w)}\n" for w in r.warnings) + "\n")
    return "".join(out)


def _traceability(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    rows, untested = traceability(p, ctx.vectors)
    out = ["Each clause of the protocol, the rules that encode it, and the conformance vectors that test those "
           "rules (a vector tests a rule when the engine decides by that rule on the vector's history). "
           "**no rule** flags a clause that nothing encodes; **no vector for** names a rule of the clause that no "
           "vector exercises.\n\n"]
    table_rows = []
    for row in rows:
        groups: dict[str, list[str]] = defaultdict(list)
        for item in row.other:
            head, _, rest = item.partition(":")
            groups[head].append(rest)
        other = [f"{_esc(head)} {', '.join(_lit(x) for x in items if x)}".strip() for head, items in groups.items()]
        encoded = "; ".join(([", ".join(_lit(r) for r in row.rules)] if row.rules else []) + other)
        vectors = "; ".join(_esc(v) for v in row.vectors[:5])
        if len(row.vectors) > 5:
            vectors += f"; and {len(row.vectors) - 5} more"
        table_rows.append([_esc(row.clause), ", ".join(f"**{_esc(f)}**" for f in row.flags) or "ok",
                           _esc(row.summary), encoded or "\\-", vectors or "\\-"])
    out.append(_table(["Clause", "Flags", "What it says (summary)", "Encoded by", "Tested by vectors"],
                      table_rows, [14, 10, 28, 24, 24], "escalation-traceability"))
    out.append(_heading("Rules without a conformance vector", "-"))
    if untested:
        out.append("These rules are not exercised by any vector: " + ", ".join(_lit(u) for u in untested) + ".\n\n")
    else:
        out.append("Every rule is exercised by at least one vector.\n\n")
    out.append(_heading("Conformance vectors", "-"))
    if not ctx.vectors:
        where = f" in ``{ctx.vectors_dir}``" if ctx.vectors_dir else ""
        out.append(_not_available(f"Not available for this protocol: no conformance vector targets it{where}."))
        return "".join(out)
    failed = sum(not v.ok for v in ctx.vectors)
    out.append(f"{len(ctx.vectors)} vectors target this protocol; {len(ctx.vectors) - failed} pass and {failed} "
               f"fail against the rules shown on this page.\n\n")
    vrows = [[_esc(v.file), _esc(v.description), _lit(v.history) or "(empty)", _lit(v.rule or ""),
              ("pass" if v.ok else "**FAIL**") + f": {_esc(v.detail)}"] for v in ctx.vectors]
    out.append(_table(["File", "Vector", "History", "Rule", "Result"], vrows, [12, 30, 20, 14, 24],
                      "escalation-vectors"))
    return "".join(out)


def scenarios_of(protocol: Protocol) -> list[tuple[str, list[Any]]]:
    """The scenarios a protocol declares: ``[[scenarios]]`` tables with ``name`` and ``truth``, or a table of lists.

    Each truth is one true DLT probability per dose (a number from 0 to 1, or
    a string such as ``"1/10"``).  Everything is checked: the error has one
    line per problem, naming the file that declared ``scenarios`` and the key
    path (``scenarios[2].truth``).

    Raises
    ------
    ProtocolError
        Naming the file, the scenario's key path and what was expected.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> scenarios_of(builtin_design("3+3-deescalate", doses=3))
    []
    """
    raw = protocol.extra.get("scenarios")
    if raw is None:
        return []
    source = protocol.key_source("scenarios")
    k = len(protocol.doses)
    problems: list[str] = []
    items: list[tuple[str, str, Any]] = []  # key path, name, truth
    if isinstance(raw, Mapping):
        items = [(f"scenarios.{key}", str(key), value) for key, value in raw.items()]
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            path = f"scenarios[{i}]"
            if not isinstance(entry, Mapping):
                items.append((path, f"scenario {i + 1}", entry))
                continue
            for key in entry:
                if key not in ("name", "truth"):
                    problems.append(f"{source}: {path}.{key}: unknown key (expected name and truth)")
            name = entry.get("name", f"scenario {i + 1}")
            if not isinstance(name, str) or not name.strip():
                problems.append(f"{source}: {path}.name: expected a non-empty string (got {_toml(name)})")
            items.append((f"{path}.truth", str(name), entry.get("truth")))
    else:
        raise ProtocolError([f"{source}: scenarios: expected a list of tables with name and truth "
                             f"(got {_toml(raw)})"])
    out = []
    for path, name, truth in items:
        if not isinstance(truth, list):
            problems.append(f"{source}: {path}: expected a list of {k} probabilities, one per dose "
                            f"(got {_toml(truth)})")
            continue
        if len(truth) != k:
            problems.append(f"{source}: {path}: scenario {name!r}: expected truth as a list of {k} probabilities, "
                            f"one per dose of {protocol.id} (got {len(truth)})")
            continue
        bad = [f"{path}[{j}]: expected a probability from 0 to 1 such as 0.25 or \"1/4\" (got {_toml(t)})"
               for j, t in enumerate(truth) if not _probability(t)]
        problems.extend(f"{source}: {line}" for line in bad)
        if not bad:
            out.append((name, truth))
    if problems:
        raise ProtocolError(problems)
    return out


def _probability(value: Any) -> bool:
    """Is ``value`` a probability as a scenario may write it (a number, or a string such as ``"1/10"``)?"""
    if isinstance(value, str):
        try:
            value = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            return False
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        return False
    return 0 <= value <= 1  # False for NaN


def _toml(value: Any) -> str:
    """A value as TOML or JSON writes it (``true``, ``[0.1, 0.2]``), shortened."""
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _oc(ctx: AuditContext) -> str:
    p = ctx.compiled.protocol
    scenarios = scenarios_of(p)
    if not scenarios:
        return _not_available("Not available for this protocol: its file declares no scenarios.")
    try:
        analysis = importlib.import_module("escalation_rules.analysis")
    except ImportError as err:
        rows = [[_esc(name), ", ".join(_esc(t) for t in truth)] for name, truth in scenarios]
        return ("The scenarios the protocol declares (true DLT probability at each dose):\n\n"
                + _table(["Scenario", "True P(DLT) per dose"], rows, [30, 70])
                + _not_available(f"Computed operating characteristics are not available in this build ({_esc(err)})."))
    return _oc_results(analysis, ctx, scenarios)


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}"


def _oc_results(analysis: Any, ctx: AuditContext, scenarios: list[tuple[str, list[Any]]]) -> str:
    from .analysis.oc import BOUNDED_FIGURES, figure_label

    p = ctx.compiled.protocol
    results = []
    for name, truth in scenarios:
        values = [analysis.parse_probability(t, f"scenario {name!r}") if isinstance(t, str) else t for t in truth]
        results.append((name, analysis.operating_characteristics(p, values)))
    policy = ", ".join(f"{_lit(k)} → {_lit(v)}" for k, v in p.default_policy.items()) or "none needed"
    out = ["Exact operating characteristics (every outcome of every cohort weighed by its probability; no "
           "simulation) under each scenario the protocol declares. At decision points people are assumed to take "
           f"the protocol's default options: {policy}. The true MTD is the highest dose whose true DLT probability "
           "is at most the target of 0.3.\n\n",
           "To reproduce (each command prints one scenario's figures and their least and greatest values)::\n\n",
           *(f"   escalation-rules oc {_command_target(ctx)} --truth {','.join(str(t) for t in truth)}\n"
             for _name, truth in scenarios), "\n"]
    header = ["Scenario", "True P(DLT) per dose", "True MTD", "P(no MTD)",
              *[f"P(MTD = {i + 1})" for i in range(len(p.doses))], "Expected patients", "Expected DLTs"]
    rows = []
    for name, oc in results:
        rows.append([_esc(name), ", ".join(_num(t, 2) for t in oc.truth),
                     "none" if oc.true_mtd is None else str(oc.true_mtd), _num(oc.mtd[0]),
                     *[_num(x) for x in oc.mtd[1:]], _num(oc.expected_patients, 1), _num(oc.expected_dlts, 2)])
    widths = [15, 12, 7, 8, *[8] * len(p.doses), 9, 9]
    out.append(_table(header, rows, widths, css="escalation-oc"))
    notes = [note for name, oc in results if (note := _provisional_note(ctx, name, oc))]
    out.extend(f".. note::\n\n   {note}\n\n" for note in notes)
    out.append(_heading("Safety figures over every policy", "-"))
    out.append("Each figure under the default options, and its least and greatest value over *every* way people "
               "could decide at the decision points (each decision point may be decided differently each time it "
               "arises, knowing the whole history): the range is what holds whatever people decide. The CLI's "
               "``oc`` command prints the same table.\n\n")
    for name, oc in results:
        mtd = "none" if oc.true_mtd is None else f"dose {oc.true_mtd}"
        out.append(f"**{_esc(name)}** (true P(DLT) {', '.join(_num(t, 2) for t in oc.truth)}; true MTD {mtd})\n\n")
        frows = [[_esc(figure_label(f, oc.overdose_patients)), _num(oc.figure(f)),
                  _num(oc.bounds[f][0]), _num(oc.bounds[f][1])] for f in BOUNDED_FIGURES]
        out.append(_table(["Figure", "Default options", "Least over every policy", "Greatest over every policy"],
                          frows, [46, 18, 18, 18], "escalation-oc-bounds"))
    out.append(_heading("Probability of each dose being declared the MTD", "-"))
    svg = _bar_chart([(name, [float(x) for x in oc.mtd]) for name, oc in results],
                     ["none", *[str(i + 1) for i in range(len(p.doses))]])
    body = "\n".join("   " + ln for ln in svg.splitlines())
    out.append(".. raw:: html\n\n" + body + "\n\n")
    return "".join(out)


def _provisional_note(ctx: AuditContext, name: str, oc: Any) -> str:
    """Why a scenario's true MTD is never selected: it is a provisional dose the default options never open."""
    p = ctx.compiled.protocol
    t = oc.true_mtd
    if t is None or not p.doses[t - 1].provisional or oc.mtd[t] != 0:
        return ""
    nodes = {n.id: n for n in ctx.diagram.nodes}
    openers = sorted({(e.rule, str(e.option)) for e in ctx.diagram.edges
                      if e.kind == "option" and nodes[e.target].kind == "treat" and nodes[e.target].dose == t
                      and nodes[e.source].dose != t})
    how = " or ".join(f"option ``{o}`` at decision point ``{r}``" for r, o in openers) or "a decision people take"
    defaults = "; ".join(f"at ``{r}`` the default is ``{p.default_policy[r]}``" for r in dict.fromkeys(
        r for r, _o in openers) if r in p.default_policy)
    lo, hi = oc.bounds["p_correct_selection"]
    return (f"In the scenario *{_esc(name)}* the true MTD is dose {t} ({_esc(p.doses[t - 1].label)}), a provisional "
            f"dose: it exists only if people decide to open it ({how}). The default options never do "
            f"({defaults or 'no default opens it'}), so under them dose {t} is never given and P(MTD = {t}) is 0: "
            f"the trial can at best select the dose below it. Over every policy, P(the true MTD selected) ranges "
            f"from {_num(lo)} to {_num(hi)}; the greatest is reached only when people open the added dose.")


_BAR_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def _bar_chart(series: Sequence[tuple[str, Sequence[float]]], categories: Sequence[str]) -> str:
    """A grouped bar chart as inline SVG: one group per category, one bar per series (values 0..1).

    The legend is below the bars, one series per line across the whole width, so no name is cut off.
    """
    width, plot_h, left, top, line = 640, 204, 44, 16, 16
    plot_w = width - left - 10
    legend_top = top + plot_h + 30
    height = legend_top + line * len(series) + 6
    group = plot_w / max(len(categories), 1)
    bar = group * 0.8 / max(len(series), 1)
    parts = [f'<svg class="escalation-oc-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="probability of each dose being declared the MTD" '
             f'style="max-width:{width}px;width:100%;height:auto;font-family:sans-serif;font-size:11px">']
    for tick in range(0, 11, 2):
        y = top + plot_h * (1 - tick / 10)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick / 10:.1f}</text>')
    for c, category in enumerate(categories):
        x0 = left + c * group + group * 0.1
        for s, (_name, values) in enumerate(series):
            v = max(0.0, min(1.0, values[c]))
            h = plot_h * v
            colour = _BAR_COLOURS[s % len(_BAR_COLOURS)]
            parts.append(f'<rect x="{x0 + s * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar * 0.9:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{_attr(_name)}: {v:.3f}</title></rect>')
        label = "no MTD" if category == "none" else f"dose {category}"
        parts.append(f'<text x="{left + c * group + group / 2:.1f}" y="{top + plot_h + 16}" '
                     f'text-anchor="middle">{_attr(label)}</text>')
    for s, (name, _values) in enumerate(series):
        y = legend_top + line * s
        colour = _BAR_COLOURS[s % len(_BAR_COLOURS)]
        parts.append(f'<rect class="legend-key" x="{left}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text class="legend" x="{left + 16}" y="{y + 9}">{_attr(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


_RENDER = {
    "overview": _overview,
    "provenance": _provenance,
    "tables": _tables,
    "diagram": _diagram,
    "decisions": _decisions,
    "eligibility": _eligibility,
    "dlt": lambda ctx: _declared(ctx, "dlt", "DLT definition"),
    "verification": _verification,
    "traceability": _traceability,
    "oc": _oc,
}


def audit_rst(ctx: AuditContext, sections: Iterable[str] = tuple(SECTIONS), diagram_href: str | None = None,
              stamp: Mapping[str, Any] | None = None) -> str:
    """The audit page's sections as reStructuredText (headings underlined with ``=`` and ``-``).

    ``diagram_href`` is where the full-size SVG of the diagram is published,
    if anywhere; the page links to it.  ``stamp`` is what the provenance
    section shows and embeds (default: :func:`site_stamp` of ``ctx`` now).

    Raises
    ------
    EscalationRulesError
        For an unknown section name.
    """
    out = []
    for name in sections:
        if name not in _RENDER:
            raise EscalationRulesError(f"unknown audit section {name!r} (known: {', '.join(SECTIONS)})")
        body = (_diagram(ctx, diagram_href) if name == "diagram" else _provenance(ctx, stamp)
                if name == "provenance" else _RENDER[name](ctx))
        if name == "diagram":  # the section of diagrams is printed on landscape pages (see the stylesheet)
            body = '.. raw:: html\n\n   <div class="escalation-landscape-section"></div>\n\n' + body
        out.append(_heading(SECTIONS[name], "=") + body)
    return "".join(out)
