"""Tests of the audit documentation: the condensed diagram, vectors and traceability, the Sphinx directives and
the ``docs`` command, including that a changed rule changes the generated page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from escalation_rules import DESIGNS, builtin_design, compile_protocol, load_protocol
from escalation_rules.auditdoc import (
    SECTIONS,
    AuditContext,
    audit_rst,
    condensed_diagram,
    diagram_dot,
    render_svg,
    run_vectors,
    scenarios_of,
    stage_diagram,
    traceability,
)
from escalation_rules.cli import main
from escalation_rules.errors import EscalationRulesError

ROOT = Path(__file__).resolve().parent.parent
NCT = ROOT / "spec" / "nct07117175"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed (apt-get install graphviz)")

# The drift tests edit a copy of the tutorial's protocol (docs/examples/tutorial-trial.toml), whose
# "too-toxic" rule reads as below.
TUTORIAL = ROOT / "docs" / "examples" / "tutorial-trial.toml"
OLD_GUARD = 'when = "tox >= 2"'
NEW_GUARD = 'when = "n >= 3 and tox >= 2"'


def _copy_nct(tmp_path: Path) -> Path:
    target = tmp_path / "nct"
    shutil.copytree(NCT, target)
    return target


def _copy_tutorial(tmp_path: Path) -> Path:
    target = tmp_path / "trial"
    target.mkdir()
    shutil.copy(TUTORIAL, target / "protocol.toml")
    return target


def _edit_rule(folder: Path, old: str = OLD_GUARD, new: str = NEW_GUARD) -> None:
    path = folder / "protocol.toml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the drift test's rule ({old}) is no longer in {TUTORIAL.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _parse(text: str) -> list[str]:
    pytest.importorskip("docutils")
    from escalation_rules.sphinx import parse_rst

    return parse_rst(text)[1]


# ------------------------------------------------------------------ the condensed diagram


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_condensed_diagram_accounts_for_every_state_and_transition(name: str) -> None:
    """Invariant: the boxes partition the states and the arrows partition the transitions of the full graph."""
    compiled = compile_protocol(builtin_design(name, doses=4))
    d = condensed_diagram(compiled)
    assert sum(n.states for n in d.nodes) == compiled.graph.number_of_nodes()
    assert sum(e.transitions for e in d.edges) == compiled.graph.number_of_edges()
    ids = {n.id for n in d.nodes}
    assert all(e.source in ids and e.target in ids for e in d.edges)


def test_nct_diagram_is_condensed_to_a_readable_size() -> None:
    """The ~500 states of NCT07117175 become a few dozen boxes with every decision point and option shown."""
    compiled = compile_protocol(load_protocol(NCT))
    d = condensed_diagram(compiled)
    assert compiled.stats["states"] > 400
    assert len(d.nodes) <= 40
    decide_rules = {r.id for s in compiled.protocol.stages for r in s.rules if r.action == "decide"}
    assert {n.rule for n in d.nodes if n.kind == "decide"} == decide_rules
    options = {(e.rule, e.option) for e in d.edges if e.kind == "option"}
    expected = {(r.id, o.id) for s in compiled.protocol.stages for r in s.rules for o in r.options}
    assert options == expected


def test_diagram_arrows_carry_rule_guard_and_direction() -> None:
    """An arrow's label names its rule and guard, and escalations are told apart from de-escalations."""
    d = condensed_diagram(compile_protocol(load_protocol(NCT)))
    higher = [e for e in d.edges if e.rule == "too-toxic-higher"]
    assert higher and all(e.move == "de-escalate" for e in higher)
    assert all("tox >= 2 and dose > 2" in e.label.replace("\n", " ") for e in higher)
    assert any(e.move == "escalate" and e.option == "escalate" for e in d.edges)


@needs_dot
def test_render_svg_draws_every_box() -> None:
    """Graphviz renders the DOT text to an inline SVG with one node group per box."""
    d = condensed_diagram(compile_protocol(load_protocol(NCT)))
    svg = render_svg(diagram_dot(d))
    assert svg.startswith("<svg")
    assert svg.count('class="node"') == len(d.nodes)


def test_stage_parts_draw_every_box_and_arrow_of_the_diagram_exactly_once() -> None:
    """Drawn one stage at a time, or one dose of a stage at a time, the parts' own boxes and arrows are the whole
    diagram, each once; every arrow that leaves a part ends at an exit or end box drawn in that part."""
    d = condensed_diagram(compile_protocol(load_protocol(NCT)))
    for split_by_dose in (False, True):
        parts = []
        for stage, _label in d.stages:
            doses = sorted({n.dose for n in d.nodes if n.stage == stage and n.kind != "stop" and n.dose})
            if split_by_dose:
                parts.extend(stage_diagram(d, stage, dose) for dose in doses)
            else:
                parts.append(stage_diagram(d, stage))
        edges = [e for part in parts for e in part.edges]
        assert sorted(edges, key=repr) == sorted(d.edges, key=repr)
        for part in parts:
            drawn = {n.id for n in part.nodes}
            assert all(e.source in drawn and e.target in drawn for e in part.edges)
            assert {n.kind for n in part.nodes if n.stage != part.stages[0][0]} <= {"exit"}
    assert sum(stage_diagram(d, s).states for s, _ in d.stages) == d.states
    assert sum(stage_diagram(d, s).transitions for s, _ in d.stages) == d.transitions
    with pytest.raises(EscalationRulesError, match="not a stage of NCT07117175"):
        stage_diagram(d, "no-such-stage")


@pytest.mark.parametrize(("spec", "doses"), [("spec/nct07117175", None), ("3+3-deescalate", 3)])
def test_verification_section_and_the_commands_it_prints_agree(
        spec: str, doses: int | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each verify command the page prints, when run, reports the counts the page states: the full graph's with
    --full, the merged states' without."""
    monkeypatch.chdir(ROOT)
    protocol = load_protocol(spec) if doses is None else builtin_design(spec, doses=doses)
    ctx = AuditContext.build(compile_protocol(protocol), spec)
    page = " ".join(audit_rst(ctx, ["verification"]).split()).replace("**", "")
    commands = [ln.strip() for ln in audit_rst(ctx, ["verification"]).splitlines()
                if ln.strip().startswith("escalation-rules verify") and "--json" not in ln]
    assert len(commands) == 2
    for command in commands:
        assert main(command.split()[1:]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        states, edges, paths = (int(x) for x in re.findall(r"(\d+) (?:states|merged|transitions|paths)", first))
        if "--full" in command:
            assert f"{states} states" in page and f"{edges} transitions" in page
            assert states == ctx.report.states
        else:
            assert f"{states} merged states and {edges} transitions" in page
            assert ctx.merged is not None and states == ctx.merged.states < ctx.report.states
        assert f"{paths} complete paths" in page


def test_render_svg_without_graphviz_says_how_to_install_it() -> None:
    """A missing Graphviz program is refused with one line naming the package to install."""
    with pytest.raises(EscalationRulesError, match="install Graphviz"):
        render_svg("digraph { a }", program="no-such-graphviz-program")


# ------------------------------------------------------------------ drift: the page follows the file


def test_changing_a_rule_changes_the_tables_and_the_diagram(tmp_path: Path) -> None:
    """Editing one rule's guard in the protocol file changes the generated decision table and the DOT diagram."""
    from escalation_rules.auditdoc import audit_rst

    folder = _copy_tutorial(tmp_path)
    before = AuditContext.build(compile_protocol(load_protocol(folder)))
    _edit_rule(folder)
    after = AuditContext.build(compile_protocol(load_protocol(folder)))
    old_tables, new_tables = audit_rst(before, ["tables"]), audit_rst(after, ["tables"])
    assert "``tox >= 2``" in old_tables and "``n >= 3 and tox >= 2``" in new_tables
    assert "n >= 3 and tox >= 2" not in old_tables
    old_dot, new_dot = diagram_dot(before.diagram), diagram_dot(after.diagram)
    assert old_dot != new_dot
    assert "n >= 3 and tox >= 2" in new_dot and "n >= 3 and tox >= 2" not in old_dot


def test_changing_an_action_changes_the_diagram_edges(tmp_path: Path) -> None:
    """Declaring the dose below the MTD instead of the top dose moves the diagram's arrow to another stop box."""
    folder = _copy_tutorial(tmp_path)
    before = condensed_diagram(compile_protocol(load_protocol(folder)))
    _edit_rule(folder, 'action = "stop"\nmtd = "current"', 'action = "stop"\nmtd = "previous"')
    after = condensed_diagram(compile_protocol(load_protocol(folder)))
    assert {e.target for e in before.edges if e.rule == "top-passes"} == {"stop:escalation:3"}
    assert {e.target for e in after.edges if e.rule == "top-passes"} == {"stop:escalation:2"}
    assert diagram_dot(before) != diagram_dot(after)


# ------------------------------------------------------------------ vectors and traceability


def _vector_file(folder: Path, tests: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.json"
    path.write_text(json.dumps({"description": "t", "design": "3+3-deescalate", "doses": 3, "tests": tests}),
                    encoding="utf-8")
    return folder


def test_vectors_pass_fail_and_refusals_are_reported(tmp_path: Path) -> None:
    """A vector that pins the right decision passes, a wrong pin fails with what differed, a refusal is matched."""
    folder = _vector_file(tmp_path / "spec" / "vectors", [
        {"description": "right", "clause": "Storer (1989); Korn et al. (1994)", "history": "1NNN",
         "expected": {"action": "treat", "dose": 2, "rule": "esc-zero-of-three"}},
        {"description": "wrong", "history": "1NNN", "expected": {"dose": 3}},
        {"description": "refused", "history": "1NNN 3NNN", "error": {"cohort": 2, "contains": "skips dose"}},
        {"description": "json history", "history": [{"dose": 1, "outcomes": "NTN"}],
         "expected": {"cohort_size": 3}},
    ])
    results = run_vectors(builtin_design("3+3-deescalate", doses=3), folder)
    by = {r.description: r for r in results}
    assert by["right"].ok and by["right"].rule == "esc-zero-of-three"
    assert not by["wrong"].ok and "dose = 2 (expected 3)" in by["wrong"].detail
    assert by["refused"].ok and by["refused"].rule is None
    assert by["json history"].ok


def test_vectors_of_other_designs_are_ignored(tmp_path: Path) -> None:
    """Only vector files whose design (and number of doses) is the protocol's are run."""
    folder = _vector_file(tmp_path / "spec" / "vectors", [{"description": "x", "history": "", "expected": {}}])
    assert run_vectors(builtin_design("3+3-deescalate", doses=4), folder) == []
    assert run_vectors(builtin_design("3+3-escalate-only", doses=3), folder) == []


def test_shipped_nct_vectors_are_found_through_the_design_path() -> None:
    """The vectors in spec/vectors that name spec/nct07117175 are run against it, and all pass."""
    if not (ROOT / "spec" / "vectors" / "nct07117175.json").exists():
        pytest.skip("spec/vectors/nct07117175.json is not in this checkout")
    results = run_vectors(load_protocol(NCT), ROOT / "spec" / "vectors", NCT)
    assert results
    assert [r.description for r in results if not r.ok] == []


def test_traceability_flags_clauses_without_rules_and_rules_without_vectors(tmp_path: Path) -> None:
    """A clause nothing encodes is flagged 'no rule'; rules no vector exercises are listed."""
    folder = _copy_nct(tmp_path)
    path = folder / "protocol.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[clauses]\n", '[clauses]\n"Section 9" = "A clause with no rule."\n'),
                    encoding="utf-8")
    protocol = load_protocol(folder)
    rows, untested = traceability(protocol, [])
    by = {r.clause: r for r in rows}
    assert by["Section 9"].flags == ("no rule",)
    assert "at-first-dlt" in by["Full description ¶1"].rules
    assert "no vector for at-first-dlt" in by["Full description ¶1"].flags
    assert "stage:titration" in by["Full description ¶1"].other
    assert set(untested) == {r.id for s in protocol.stages for r in s.rules}


def test_traceability_links_vectors_to_the_rules_that_decided() -> None:
    """A vector counts for the clause of the rule the engine decided by."""
    protocol = builtin_design("3+3-deescalate", doses=3)
    results = run_vectors(protocol, None)
    assert results == []
    from escalation_rules.auditdoc import VectorResult

    rows, untested = traceability(protocol, [VectorResult("f.json", "v1", None, "1NNN", "esc-zero-of-three",
                                                          True, "")])
    assert "esc-zero-of-three" not in untested
    assert any("v1" in r.vectors for r in rows if "esc-zero-of-three" in r.rules)


# ------------------------------------------------------------------ sections


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_section_of_every_design_is_valid_restructuredtext(name: str) -> None:
    """The generated text parses without a single docutils warning, for every built-in design."""
    from escalation_rules.auditdoc import audit_rst

    ctx = AuditContext.build(compile_protocol(builtin_design(name, doses=3)))
    text = audit_rst(ctx)
    assert _parse(text) == []
    for title in SECTIONS.values():
        assert title in text


def test_nct_page_is_valid_restructuredtext_with_its_declared_data() -> None:
    """The NCT07117175 page parses cleanly and shows its DLT definition (declared in dlt.toml)."""
    from escalation_rules.auditdoc import audit_rst

    protocol = load_protocol(NCT)
    text = audit_rst(AuditContext.build(compile_protocol(protocol), "spec/nct07117175"))
    assert _parse(text) == []
    assert "escalation-rules verify spec/nct07117175" in text
    if protocol.extra.get("dlt"):
        dlt = text.split("Definition of a dose-limiting toxicity")[1].split("Verification report")[0]
        assert "Not available" not in dlt


def test_absent_data_is_said_plainly() -> None:
    """A protocol without eligibility, DLT definition or scenarios says 'not available' for each."""
    from escalation_rules.auditdoc import audit_rst

    ctx = AuditContext.build(compile_protocol(builtin_design("3+3-deescalate", doses=3)))
    for section in ("eligibility", "dlt", "oc"):
        assert "Not available for this protocol" in audit_rst(ctx, [section])


def test_declared_scenarios_get_exact_operating_characteristics(tmp_path: Path) -> None:
    """Scenarios declared in the protocol folder give an OC table row each and an SVG chart."""
    pytest.importorskip("escalation_rules.analysis")
    from escalation_rules.auditdoc import audit_rst

    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text(
        '[[scenarios]]\nname = "safe"\ntruth = [0.05, 0.1, 0.15, 0.2]\n'
        '[[scenarios]]\nname = "toxic"\ntruth = [0.05, "1/5", 0.5, 0.6]\n', encoding="utf-8")
    protocol = load_protocol(folder)
    assert [name for name, _ in scenarios_of(protocol)] == ["safe", "toxic"]
    text = audit_rst(AuditContext.build(compile_protocol(protocol)), ["oc"])
    assert "escalation-oc-chart" in text and "* - safe" in text and "* - toxic" in text
    assert _parse(text) == []


def test_oc_section_gives_every_safety_figure_with_its_range_over_every_policy() -> None:
    """For each declared scenario the OC section lists every bounded safety figure with its value under the
    default options and its least and greatest value over every policy, the numbers `oc` computes, and a command
    per scenario that prints them."""
    pytest.importorskip("escalation_rules.analysis")
    from escalation_rules.analysis import BOUNDED_FIGURES, operating_characteristics, parse_probability
    from escalation_rules.analysis.oc import figure_label

    protocol = load_protocol(NCT)
    text = audit_rst(AuditContext.build(compile_protocol(protocol), "spec/nct07117175"), ["oc"])
    assert _parse(text) == []
    scenarios = scenarios_of(protocol)
    assert text.count(":class: escalation-oc-bounds") == len(scenarios)
    for name, truth in scenarios:
        assert f"escalation-rules oc spec/nct07117175 --truth {','.join(truth)}" in text
        oc = operating_characteristics(protocol, [parse_probability(t) for t in truth])
        block = text.split(f"**{name}**", 1)[1].split(":class: escalation-oc-bounds\n\n", 1)[1].split("\n\n")[0]
        rows = block.split("   * - ")[1:]
        assert len(rows) == len(BOUNDED_FIGURES) + 1  # the header row, then one row per figure
        for figure, row in zip(BOUNDED_FIGURES, rows[1:], strict=True):
            cells = [c.strip() for c in row.split("     - ")]
            lo, hi = oc.bounds[figure]
            assert cells == [figure_label(figure, 3), f"{float(oc.figure(figure)):.3f}",
                             f"{float(lo):.3f}", f"{float(hi):.3f}"]


def test_oc_section_explains_a_true_mtd_at_a_provisional_dose_the_default_never_opens(tmp_path: Path) -> None:
    """When a scenario's true MTD is the provisional dose and the default options never open it, the page says
    so, naming the option and decision point that would; other scenarios get no such note."""
    pytest.importorskip("escalation_rules.analysis")
    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text(
        '[[scenarios]]\nname = "added dose tolerable"\ntruth = ["1/20", "1/10", "3/20", "1/4"]\n'
        '[[scenarios]]\nname = "second dose is the MTD"\ntruth = ["1/20", "1/10", "2/5", "3/5"]\n',
        encoding="utf-8")
    protocol = load_protocol(folder)
    text = " ".join(audit_rst(AuditContext.build(compile_protocol(protocol)), ["oc"]).split())
    assert text.count(".. note::") == 1
    assert "In the scenario *added dose tolerable* the true MTD is dose 4" in text
    assert "option ``add-group`` at decision point ``top-pass``" in text
    assert f"the default is ``{protocol.default_policy['top-pass']}``" in text
    assert "P(MTD = 4) is 0" in text and "scenario *second dose is the MTD*" not in text


def test_oc_chart_legend_is_below_the_bars_and_inside_the_drawing() -> None:
    """The chart's legend lists every scenario on its own line below the bars, inside the SVG's view box."""
    from escalation_rules.auditdoc import _bar_chart

    names = ["a scenario with a rather long name that used to be cut off at the right edge", "short"]
    svg = _bar_chart([(names[0], [0.1, 0.9]), (names[1], [0.5, 0.5])], ["none", "1"])
    width, height = (float(x) for x in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())  # type: ignore[union-attr]
    legend = re.findall(r'<text class="legend" x="([\d.]+)" y="([\d.]+)">([^<]*)</text>', svg)
    assert [t for _x, _y, t in legend] == names
    bars_bottom = max(float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle"', svg))
    for x, y, text in legend:
        assert float(y) > bars_bottom and float(y) <= height
        assert float(x) + 6.5 * len(text) <= width  # 11 px sans-serif: at most 6.5 px a character


def test_malformed_scenarios_are_refused_naming_the_scenario(tmp_path: Path) -> None:
    """A scenario with the wrong number of probabilities is refused with its name and what was expected."""
    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text('[[scenarios]]\nname = "short"\ntruth = [0.1]\n', encoding="utf-8")
    with pytest.raises(EscalationRulesError, match="'short': expected truth as a list of 4 probabilities"):
        scenarios_of(load_protocol(folder))


def test_scenario_errors_name_the_file_and_key_path(tmp_path: Path) -> None:
    """Every malformed scenario is refused with the scenarios file, its key path and JSON words."""
    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text(
        '[[scenarios]]\nname = "a"\ntruth = [0.1, 0.2, 0.3]\n'
        '[[scenarios]]\nname = "b"\ntruth = [0.1, 0.2, 1.5, true]\n', encoding="utf-8")
    with pytest.raises(EscalationRulesError) as err:
        scenarios_of(load_protocol(folder))
    lines = str(err.value).splitlines()
    source = str(folder / "scenarios.toml")
    assert lines[0].startswith(f"{source}: scenarios[0].truth: scenario 'a': expected truth as a list of 4")
    assert lines[1] == (f"{source}: scenarios[1].truth[2]: "
                        'expected a probability from 0 to 1 such as 0.25 or "1/4" (got 1.5)')
    assert lines[2].endswith("(got true)") and len(lines) == 3


def test_docs_command_refuses_invalid_scenarios_before_writing(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """docs with a scenario of the wrong length exits 2 with plain one-line errors and writes no site."""
    pytest.importorskip("sphinx")
    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text('[[scenarios]]\nname = "a"\ntruth = [0.1, 0.2, 0.3]\n', encoding="utf-8")
    out = tmp_path / "site"
    assert main(["docs", str(folder), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "audit site written" not in captured.out and not out.exists()
    assert "scenarios.toml: scenarios[0].truth:" in captured.err and "\x1b[" not in captured.err


def test_docs_command_refuses_a_missing_vectors_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs --vectors with a folder that does not exist exits 2 before building anything."""
    pytest.importorskip("sphinx")
    out = tmp_path / "site"
    assert main(["docs", "3+3-deescalate", "--doses", "2", "--out", str(out), "--vectors",
                 str(tmp_path / "nonexist")]) == 2
    assert "--vectors" in capsys.readouterr().err and not out.exists()


def test_directive_error_does_not_repeat_the_path(tmp_path: Path) -> None:
    """A directive on a protocol with broken scenarios reports the file once, not 'spec: spec:'."""
    pytest.importorskip("sphinx")
    import io

    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    folder = _copy_nct(tmp_path)
    (folder / "scenarios.toml").write_text('[[scenarios]]\nname = "a"\ntruth = [0.1]\n', encoding="utf-8")
    src = _project(tmp_path, ".. escalation-oc:: nct\n")
    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "dt"), "html", status=None,
                     warning=warnings, freshenv=True)
        app.build()
    text = warnings.getvalue()
    assert "scenarios[0].truth" in text and "nct: " not in text.replace(str(folder), "")


def test_unknown_section_is_refused() -> None:
    """Asking for a section that does not exist names the known ones."""
    from escalation_rules.auditdoc import audit_rst

    ctx = AuditContext.build(compile_protocol(builtin_design("3+3-deescalate", doses=2)))
    with pytest.raises(EscalationRulesError, match="unknown audit section 'nope'"):
        audit_rst(ctx, ["nope"])


# ------------------------------------------------------------------ Sphinx


def _project(tmp_path: Path, body: str) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    conf = f"extensions = ['escalation_rules.sphinx']\nescalation_rules_root = {str(tmp_path)!r}\n"
    (src / "conf.py").write_text(conf, encoding="utf-8")
    (src / "index.rst").write_text("Audit\n=====\n\n" + body, encoding="utf-8")
    return src


def _text(html: str) -> str:
    """The visible text of a page's body, tags dropped and white space collapsed."""
    import html as html_module
    import re

    body = html.split("<body", 1)[-1]
    body = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", body, flags=re.S)
    return " ".join(html_module.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _build(src: Path, out: Path, fresh: bool = False) -> str:
    import io

    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(out), str(out / ".doctrees"), "html", status=None, warning=warnings,
                     freshenv=fresh)
        app.build()
    assert warnings.getvalue() == ""
    return (out / "index.html").read_text(encoding="utf-8")


@needs_dot
def test_sphinx_directive_renders_diagram_and_tables(tmp_path: Path) -> None:
    """On NCT07117175 the directive renders the SVG, the three stages' tables and the verify command."""
    pytest.importorskip("sphinx")
    _copy_nct(tmp_path)
    src = _project(tmp_path, ".. escalation-protocol:: nct\n   :command: spec/nct07117175\n")
    out = tmp_path / "out"
    html = _build(src, out, fresh=True)
    assert '<div class="escalation-diagram' in html and "<svg" in html
    # drawn one stage (or one dose of a wide stage) at a time, the whole diagram linked
    assert "Diagram of stage titration" in html and "Diagram of stage three-plus-three" in html
    assert html.count('class="escalation-diagram escalation-stage-diagram"') >= 3
    assert 'class="escalation-diagram-full"' in html
    assert html.count("escalation-decision-table") == 3
    assert "escalation-rules verify spec/nct07117175" in html
    assert list((out / "_escalation").glob("NCT07117175-*.svg"))


@needs_dot
def test_sphinx_incremental_build_follows_an_edited_rule(tmp_path: Path) -> None:
    """After a rule is edited in the protocol file, an incremental build (no fresh environment) shows the new
    rule in the table and a different diagram: the page cannot drift from the file."""
    pytest.importorskip("sphinx")
    _copy_tutorial(tmp_path)
    src = _project(tmp_path, ".. escalation-protocol:: trial\n   :sections: tables, diagram\n")
    out = tmp_path / "out"
    first = _build(src, out, fresh=True)
    assert "too-toxic tox >= 2 " in _text(first) and "n >= 3 and tox >= 2" not in _text(first)
    _edit_rule(tmp_path / "trial")
    second = _build(src, out)
    assert "too-toxic n >= 3 and tox >= 2 " in _text(second)
    assert second.split('<div class="escalation-diagram')[1] != first.split('<div class="escalation-diagram')[1]


def test_sphinx_single_section_directive_and_bad_spec(tmp_path: Path) -> None:
    """A one-section directive renders only that section; a bad protocol is an error naming the directive."""
    pytest.importorskip("sphinx")
    src = _project(tmp_path, ".. escalation-verification:: 3+3-deescalate\n   :doses: 3\n\n"
                             ".. escalation-tables:: no/such/protocol\n")
    import io

    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "dt"), "html", status=None,
                     warning=warnings, freshenv=True)
        app.build()
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "escalation-verification" in html and "escalation-decision-table" not in html
    text = warnings.getvalue()
    assert "escalation-tables: " in text and text.count("no/such/protocol: ") == 1


# ------------------------------------------------------------------ the docs command


@needs_dot
def test_docs_command_builds_the_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """'escalation-rules docs spec/nct07117175 --out DIR' writes index.html with the diagram, tables and report."""
    pytest.importorskip("sphinx")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "site"
    assert main(["docs", "spec/nct07117175", "--out", str(out), "--strict"]) == 0
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "NCT07117175: audit of the dose-escalation rules" in html
    assert "<svg" in html and "escalation-decision-table" in html and "escalation-traceability" in html
    assert "escalation-rules verify spec/nct07117175" in html
    assert "audit site written" in capsys.readouterr().out


@needs_dot
def test_docs_site_is_stamped_and_check_says_whether_it_still_matches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The site carries the SHA-256 of every protocol and vector file it was built from, the version and the date
    (SOURCE_DATE_EPOCH when set); 'docs --check SITE SPEC' exits 0 while the files match and 1 naming each file
    that changed, was added or went away."""
    pytest.importorskip("sphinx")
    import hashlib

    from escalation_rules import __version__
    from escalation_rules.auditdoc import read_stamps

    shutil.copytree(ROOT / "spec", tmp_path / "spec")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    assert main(["docs", "spec/nct07117175", "--out", "site"]) == 0
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    [stamp] = read_stamps(html)
    assert stamp["built"] == "2026-01-01T00:00:00Z" and stamp["version"] == __version__
    files = {f["name"]: f["sha256"] for f in stamp["files"]}
    protocol = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "spec/nct07117175").glob("*")}
    assert {n: h for n, h in files.items() if "/" not in n} == protocol
    assert files["vectors/nct07117175.json"] == hashlib.sha256(
        (tmp_path / "spec/vectors/nct07117175.json").read_bytes()).hexdigest()
    assert all(h in html for h in files.values()) and "2026-01-01T00:00:00Z" in html
    capsys.readouterr()

    assert main(["docs", "--check", "site", "spec/nct07117175"]) == 0
    out = capsys.readouterr().out
    assert "site/index.html matches spec/nct07117175: 5 protocol file(s) and 1 vector file(s)" in out
    assert main(["docs", "--check", "site/index.html", "spec/nct07117175"]) == 0
    capsys.readouterr()

    dlt = tmp_path / "spec/nct07117175/dlt.toml"
    dlt.write_text(dlt.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    (tmp_path / "spec/nct07117175/scenarios.toml").unlink()
    (tmp_path / "spec/nct07117175/extra.toml").write_text("", encoding="utf-8")
    assert main(["docs", "--check", "site", "spec/nct07117175"]) == 1
    out = capsys.readouterr().out
    assert "does NOT match" in out and "changed: dlt.toml" in out
    assert "removed: scenarios.toml" in out and "added: extra.toml" in out
    assert "protocol.toml" not in out and "eligibility.toml" not in out


@needs_dot
def test_docs_site_of_a_built_in_design_shows_and_stamps_its_vectors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Built from the repository, a built-in design's site runs the vectors of spec/vectors that target it and
    stamps them, so 'docs --check' run from the same place matches."""
    pytest.importorskip("sphinx")
    monkeypatch.chdir(ROOT)
    site = tmp_path / "site"
    assert main(["docs", "3+3-deescalate", "--doses", "3", "--out", str(site)]) == 0
    assert "vectors/3+3-deescalate.json" in (site / "index.html").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["docs", "--check", str(site), "3+3-deescalate", "--doses", "3"]) == 0
    assert "built-in design 3+3-deescalate with 3 doses and 2 vector file(s)" in capsys.readouterr().out


def test_docs_check_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A site that does not exist or has no stamped page, a missing SPEC, and neither --out nor --check are usage
    errors: exit 2 with one line."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "index.html").write_text("<html><body>no stamp</body></html>", encoding="utf-8")
    cases = [(["docs", "--check", str(tmp_path / "nothing"), "3+3-deescalate"], "no such site"),
             (["docs", "--check", str(tmp_path / "plain"), "3+3-deescalate"], "no stamped audit page"),
             (["docs", "3+3-deescalate"], "give --out DIR"),
             (["docs", "--check", str(tmp_path / "plain"), "3+3-deescalate", "--out", "x"], "without --out")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_check_site_compares_a_built_in_design_by_name_and_doses(tmp_path: Path) -> None:
    """For a built-in design (no protocol file) the stamp names the design and its doses; another number of doses
    is a mismatch."""
    from escalation_rules.auditdoc import site_stamp
    from escalation_rules.auditsite import check_site

    ctx = AuditContext.build(compile_protocol(builtin_design("3+3-deescalate", doses=3)), "3+3-deescalate")
    page = tmp_path / "index.html"
    page.write_text(audit_rst(ctx, ["provenance"], stamp=site_stamp(ctx)).replace(".. raw:: html", ""),
                    encoding="utf-8")
    assert check_site(page, "3+3-deescalate", 3, vectors=str(tmp_path))[0]
    ok, report = check_site(page, "3+3-deescalate", 4, vectors=str(tmp_path))
    assert not ok and "built-in design 3+3-deescalate with 3 doses" in report


def test_docs_command_refuses_a_bad_spec_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SPEC that is neither a file nor a design exits 2 with one line on stderr and no traceback."""
    pytest.importorskip("sphinx")
    assert main(["docs", str(tmp_path / "missing"), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such protocol file or folder" in err[0]


def test_without_graphviz_the_build_warns_and_keeps_the_transition_table(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With no 'dot' on PATH the directive warns (an error under -W) and the page still lists every transition."""
    pytest.importorskip("sphinx")
    import io

    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    _copy_tutorial(tmp_path)
    src = _project(tmp_path, ".. escalation-diagram:: trial\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    warnings = io.StringIO()
    with docutils_namespace():
        app = Sphinx(str(src), str(src), str(tmp_path / "out"), str(tmp_path / "dt"), "html", status=None,
                     warning=warnings, freshenv=True)
        app.build()
    assert "install Graphviz" in warnings.getvalue()
    text = _text((tmp_path / "out" / "index.html").read_text(encoding="utf-8"))
    assert "The diagram could not be drawn" in text and "Transitions" in text and "top-passes" in text


def test_eligibility_criteria_table_cites_clauses() -> None:
    """When the protocol declares eligibility criteria, each is a row with its kind, condition and clause."""
    protocol = load_protocol(NCT)
    if not protocol.extra.get("eligibility"):
        pytest.skip("spec/nct07117175 declares no eligibility criteria in this checkout")
    eligibility = pytest.importorskip("escalation_rules.eligibility")
    from escalation_rules.auditdoc import audit_rst

    text = audit_rst(AuditContext.build(compile_protocol(protocol)), ["eligibility"])
    assert ":class: escalation-eligibility" in text and _parse(text) == []
    for criterion in eligibility.load_eligibility(protocol).criteria:
        assert f"``{criterion.id}``" in text
        assert criterion.clause in text


def test_data_dictionary_is_followed_by_the_fhir_codes_of_each_item() -> None:
    """With a fhir.toml, the eligibility section lists the FHIR codes each data item is read from."""
    from escalation_rules.auditdoc import audit_rst

    text = audit_rst(AuditContext.build(compile_protocol(load_protocol(NCT))), ["eligibility"])
    assert ":class: escalation-fhir-codes" in text and _parse(text) == []
    codes = text.split("FHIR codes each item is read from")[1]
    assert "Observation http://loinc.org 1742-6: Alanine aminotransferase" in codes
    assert "Medication http://www.whocc.no/atc H02AB\\*: Glucocorticoids" in codes
    assert "Patient Patient.gender" in codes


# ------------------------------------------------------------------ console examples in the docs


def _console_blocks(path: Path) -> list[list[tuple[str, list[str]]]]:
    """Each ```console block of a Markdown page as (command, shown output lines) pairs."""
    import re

    blocks = []
    for body in re.findall(r"```console\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def _matches(shown: list[str], actual: list[str]) -> bool:
    """Do the actual lines fit the shown ones (a line '...' stands for any lines; a trailing ' ...' for any end)?"""
    if not shown:
        return not actual
    head, rest = shown[0], shown[1:]
    if head == "...":
        return any(_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    line = actual[0]
    fits = line.startswith(head[:-3]) if head.endswith(" ...") else line == head
    return fits and _matches(rest, actual[1:])


@pytest.mark.parametrize("page", ["tutorial/index.md", "eligibility.md"])
def test_console_examples_print_what_the_page_shows(page: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Every command in the page's console blocks prints the lines shown (docs builds are left to other tests)."""
    import shlex

    monkeypatch.chdir(ROOT)
    ran = 0
    for block in _console_blocks(ROOT / "docs" / page):
        status = 0
        for command, shown in block:
            if command == "echo $?":
                assert shown == [str(status)], (page, command)
                continue
            argv = shlex.split(command)
            assert argv[0] == "escalation-rules", command
            if argv[1] == "docs":
                continue  # builds a whole site: covered by test_docs_command_builds_the_site
            status = main(argv[1:])
            out = capsys.readouterr().out.splitlines()
            ran += 1
            if shown:
                assert _matches(shown, out), f"{page}: {command}: shows\n" + "\n".join(shown) + "\nprints\n" + \
                    "\n".join(out)
            if block[-1][0] != "echo $?":
                assert status == 0, (page, command)
    assert ran
