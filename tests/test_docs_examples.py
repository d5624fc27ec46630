"""Every command example in README.md and docs/ runs as written, and prints what the page shows.

The test collects the shell blocks of README.md and every page under docs/:
fenced blocks marked ``console``, ``sh``, ``shell`` or ``bash``, and bare
fenced blocks whose lines are all ``escalation-rules`` commands.  It runs
their commands in order, one working folder per page (with copies of
``spec/``, ``examples/`` and ``docs/examples/``, and the installed
``escalation-rules`` on PATH), and

- in a ``console`` block, compares what each ``$ command`` prints (stdout and
  stderr, as a terminal shows them) with the lines shown under it; a shown
  line ``...`` stands for any number of lines, and ``...`` inside a line for
  any text (long output, absolute paths);
- elsewhere, and for a ``$ command`` with no lines under it, requires exit
  status 0 (``screen`` may also answer 3 or 4, its documented outcomes);
- ``echo $?`` prints the previous command's exit status.

Commands of the development workflow (installing, running pytest, the
linters, the docs build, CI itself) are not run here: .ci/run runs each of
them on a clean clone (see ``RUN_BY_CI``).  A block that cannot run (a
synopsis with placeholders, a file the reader writes first) is preceded by
the marker ``<!-- docs-examples: not run: REASON -->``; any other command this
test cannot run is a failure, so no example is left unchecked by accident.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
MARKER = re.compile(r"<!--\s*docs-examples:\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

#: Commands of the development workflow, by how they start: not run here, because .ci/run runs them.
RUN_BY_CI: dict[str, str] = {
    "python3 -m venv": ".ci/run makes a fresh virtual environment",
    ". .venv/bin/activate": ".ci/run activates it",
    "pip install": ".ci/run installs as the README says",
    "apt-get install": ".ci/run installs the system packages the tests need",
    ".venv/bin/python -m pytest": ".ci/run runs the test suite",
    "python -m pytest": ".ci/run runs the test suite",
    "ruff": ".ci/run runs the linters",
    "mypy": ".ci/run runs the type checks",
    "bash .ci/run": "CI itself",
    "scripts/build_docs.sh": ".ci/run builds the docs",
    "python benchmarks/": ".ci/run runs the benchmarks' --quick forms",
}


#: Examples that fail on this branch until another change lands, with that change.  An entry whose example
#: then runs fails the test, so the entry is removed when it is no longer needed.
PENDING: dict[tuple[str, str], str] = {
}


@attrs.frozen
class Command:
    """One command of a page: where it is, what it runs, what the page shows it printing (``None``: not shown)."""

    page: str
    line: int
    text: str
    shown: tuple[str, ...] | None


@attrs.frozen
class Block:
    page: str
    line: int
    commands: tuple[Command, ...]
    skip: str | None


def _join_continued(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for number, text in lines:
        if out and out[-1][1].endswith("\\"):
            out[-1] = (out[-1][0], out[-1][1][:-1].rstrip() + " " + text.strip())
        else:
            out.append((number, text))
    return out


def page_blocks(path: Path) -> list[Block]:
    """The shell blocks of a page, with their commands and what each is shown printing."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(ROOT))
    blocks = []
    for match in FENCE.finditer(text):
        lang, body = match["lang"].strip().lower(), match["body"]
        first_line = text.count("\n", 0, match.start()) + 1
        lines = [(first_line + 1 + i, ln) for i, ln in enumerate(body.splitlines())]
        content = [ln for _, ln in lines if ln.strip()]
        if lang not in ("console", "sh", "shell", "bash") and not (
                lang == "" and content and all(ln.startswith(("escalation-rules ", "$ escalation-rules ")) or
                                               ln.startswith(" ") for ln in content)):
            continue
        before = text[:match.start()].rstrip().splitlines()
        marker = MARKER.search(before[-1]) if before else None
        commands: list[Command] = []
        if lang == "console":
            current: list[tuple[int, str]] = []
            shown: list[str] = []
            for number, ln in _join_continued(lines):
                if ln.startswith("$ "):
                    if current:
                        commands.append(Command(name, current[0][0], current[0][1], tuple(shown) if shown else None))
                    current, shown = [(number, ln[2:])], []
                elif current:
                    shown.append(ln)
            if current:
                commands.append(Command(name, current[0][0], current[0][1], tuple(shown) if shown else None))
        else:
            for number, ln in _join_continued(lines):
                if ln.strip() and not ln.lstrip().startswith("#"):
                    commands.append(Command(name, number, ln.removeprefix("$ "), None))
        blocks.append(Block(name, first_line, tuple(commands), marker["reason"] if marker else None))
    return blocks


def _split_chain(text: str) -> list[str]:
    """``a && b`` as its parts (the pages chain with ``&&`` only)."""
    return [part.strip() for part in re.split(r"\s&&\s", text)]


def _run_by_ci(part: str) -> str | None:
    """Why a development-workflow command is not run here (``None``: it is not one)."""
    command = " ".join(shlex.split(part, comments=True))
    return next((reason for start, reason in RUN_BY_CI.items()
                 if command == start or command.startswith(start if start.endswith("/") else start + " ")), None)


def _matches(shown: tuple[str, ...], printed: list[str]) -> bool:
    """Whether printed lines fit the shown ones (``...`` alone: any lines; inside a line: any text)."""
    pattern = "".join(r"(?:[^\n]*\n)*?" if ln.strip() == "..." else
                      ".*".join(map(re.escape, ln.rstrip().split("..."))) + r"[ \t]*\n" for ln in shown)
    return re.fullmatch(pattern, "".join(p.rstrip() + "\n" for p in printed)) is not None


def _workdir(tmp: Path) -> Path:
    for name in ("spec", "examples"):
        shutil.copytree(ROOT / name, tmp / name)
    shutil.copytree(ROOT / "docs" / "examples", tmp / "docs" / "examples")
    return tmp


def run_page(path: Path, tmp: Path) -> tuple[list[str], int]:
    """Run every command example of a page; returns the problems found and how many commands ran."""
    work = _workdir(tmp)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_COLOR": "1", "COLUMNS": "120"}
    problems: list[str] = []
    ran = 0
    status = 0
    for block in page_blocks(path):
        if block.skip is not None:
            continue
        for command in block.commands:
            where = f"{command.page}:{command.line}: $ {command.text}"
            parts = [p for p in _split_chain(command.text) if _run_by_ci(p) is None]
            runnable = [p for p in parts if shlex.split(p, comments=True)[:1] in (["escalation-rules"], ["echo"],
                                                                                    ["cat"], ["bash"])]
            if runnable != parts:
                problems.append(f"{where}: not runnable here and not marked (add a docs-examples marker)")
                continue
            if not parts:
                continue
            # "echo $?" on its own line reads the previous command's status; "cmd; echo $?" reads its own
            script = " && ".join(p if ";" in p else p.replace("$?", str(status)) for p in parts)
            done = subprocess.run(["bash", "-c", script], cwd=work, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
            ran += 1
            status = done.returncode
            printed = done.stdout.splitlines()
            if "Traceback (most recent call last)" in done.stdout:
                problems.append(f"{where}: printed a traceback")
            elif command.shown is not None:
                if not _matches(command.shown, printed):
                    problems.append(f"{where}: printed\n    " + "\n    ".join(printed[:40]) +
                                    "\n  but the page shows\n    " + "\n    ".join(command.shown))
            elif status != 0 and not (parts[-1].split()[1:2] == ["screen"] and status in (3, 4)):
                problems.append(f"{where}: exit status {status}: " + " | ".join(printed[-3:]))
    return problems, ran


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_example_runs_as_written(page: Path, tmp_path: Path) -> None:
    """Each command example of the page runs in order, and prints what the page shows (see the module notes)."""
    if shutil.which("escalation-rules", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("the escalation-rules console script is not installed beside this Python")
    problems, _ = run_page(page, tmp_path)
    pending = {text: reason for (name, text), reason in PENDING.items() if name == str(page.relative_to(ROOT))}
    waiting = {text for problem in problems for text in pending if text in problem.partition("\n")[0]}
    assert not [p for p in problems if not any(text in p.partition("\n")[0] for text in waiting)], \
        "\n".join(problems)
    assert waiting == set(pending), f"these examples run now, remove them from PENDING: {set(pending) - waiting}"
    if waiting:
        pytest.xfail("; ".join(pending[text] for text in sorted(waiting)))


def test_the_collector_finds_the_examples_it_should():
    """The collector sees the README's console example and its output, markers and dev-workflow commands."""
    readme = page_blocks(ROOT / "README.md")
    commands = [c for b in readme for c in b.commands]
    shown = [c for c in commands if c.shown]
    assert any(c.text.startswith("escalation-rules next 3+3-deescalate") for c in shown)
    assert any(b.skip for b in readme)  # the command synopsis
    assert _run_by_ci("pip install -e '.[docs]'  # comment") and _run_by_ci("python benchmarks/bench_core.py")
    assert _run_by_ci("escalation-rules next nct07117175") is None
    assert _matches(("a", "...", "z ... end"), ["a", "b", "c", "z middle end"])
    assert not _matches(("a", "z"), ["a", "b", "z"])


# ------------------------------------------------------------------ figures quoted in prose and tables


@functools.cache
def _merged(spec: str, doses: int | None = None) -> dict[str, int]:
    """Merged-state figures as ``verify`` (merged) and the exploration report them."""
    from escalation_rules import resolve_spec, verify
    from escalation_rules.graph import explore_merged

    protocol = resolve_spec(spec, doses)
    report = verify(protocol)
    stats = explore_merged(protocol).stats
    return {"states": report.states, "paths": report.paths, "edges": report.edges, "visits": stats["visits"]}


@functools.cache
def _full(spec: str, doses: int | None = None) -> dict[str, int]:
    """Figures of the full compiled state graph."""
    from escalation_rules import compile_protocol, resolve_spec

    return dict(compile_protocol(resolve_spec(spec, doses)).stats)


def _n(value: int) -> str:
    return f"{value:,}"


def _sci(value: int) -> str:
    """``2.3 × 10^11``: two significant figures."""
    exponent = len(str(value)) - 1
    return f"{value / 10 ** exponent:.1f} × 10^{exponent}"


def _boin_oc_states() -> str:
    from escalation_rules import operating_characteristics, resolve_spec

    return _n(operating_characteristics(resolve_spec("boin", 5, {"target": 0.3}), [0.05, 0.1, 0.2, 0.35, 0.5]).states)


def _nct_oc_states() -> str:
    from escalation_rules import operating_characteristics, resolve_spec

    return _n(operating_characteristics(resolve_spec("nct07117175"), [0.05, 0.1, 0.2, 0.35]).to_dict()["states"])


def _nct_criteria() -> str:
    from escalation_rules import load_eligibility, resolve_spec

    return str(len(load_eligibility(resolve_spec("nct07117175")).criteria))


def _oc_row(k: int) -> str:
    full = _n(_full("3+3-deescalate", k)["states"]) if k <= 10 else "—"
    merged = _merged("3+3-deescalate", k)
    return f"| {k} | {_n(merged['states'])} | {_n(merged['visits'])} | {full} |"


NCT, DEESC, TUTORIAL = "nct07117175", "3+3-deescalate", "docs/examples/tutorial-trial.toml"

#: Figures the pages quote, as (page, the text with ``{}`` where the figure goes, what computes the figure).
#: Timings are not figures here (the benchmarks print them); every count of states, paths, transitions and
#: criteria in prose or a table must be listed (``test_every_quoted_count_is_computed`` finds unlisted ones).
FIGURES: list[tuple[str, str, Callable[[], str]]] = [
    ("README.md", "10 doses: {} merged states", lambda: _n(_merged(DEESC, 10)["states"])),
    ("README.md", "merged states instead of {})", lambda: _n(_full(DEESC, 10)["states"])),
    ("README.md", "(Graphviz SVG: the {} states", lambda: _n(_full(NCT)["states"])),
    ("README.md", "| verify (merged): NCT07117175 | {} |",
     lambda: f"{_n(_merged(NCT)['states'])} states, {_n(_merged(NCT)['paths'])} paths, ok"),
    ("README.md", "| verify (full graph): NCT07117175 | {} |",
     lambda: f"{_n(_full(NCT)['states'])} states, {_n(_full(NCT)['paths'])} paths, ok"),
    *[("README.md", f"| verify (merged): 3+3-deescalate, {k} doses | {{}} |",
       lambda k=k: f"{_n(_merged(DEESC, k)['states'])} states, "
                   f"{(_sci if k >= 30 else _n)(_merged(DEESC, k)['paths'])} paths, ok")
      for k in (5, 10, 15, 20, 30, 40)],
    ("README.md", "| verify (full graph): 3+3-deescalate, 10 doses | {} |",
     lambda: f"{_n(_full(DEESC, 10)['states'])} states, {_n(_full(DEESC, 10)['paths'])} paths, ok"),
    *[("README.md", f"| {k} doses | {{}} |", lambda k=k: _n(_merged(DEESC, k)["states"])) for k in (5, 10, 20, 40)],
    ("README.md", "| NCT07117175, default policy | {} |", _nct_oc_states),
    ("README.md", "| NCT07117175, with min/max over every policy | {} |", _nct_oc_states),
    ("README.md", "criterion, {} in all", _nct_criteria),
    ("docs/eligibility.md", "NCT07117175's {} criteria", _nct_criteria),
    ("docs/tutorial/index.md", "prints its {} states", lambda: _n(_full(TUTORIAL)["states"])),
    ("docs/explanation/verification.md", "for NCT07117175, {} states and",
     lambda: _n(_full(NCT)["states"])),
    ("docs/explanation/verification.md", "states and {} complete paths", lambda: _n(_full(NCT)["paths"])),
    ("docs/explanation/verification.md", "(10 doses: {} states)", lambda: _n(_full(DEESC, 10)["states"])),
    ("docs/explanation/verification.md", "verifies in milliseconds at 20 doses ({} merged states",
     lambda: _n(_merged(DEESC, 20)["states"])),
    ("docs/explanation/verification.md", "merged states standing for {} paths",
     lambda: _sci(_merged(DEESC, 20)["paths"])),
    ("docs/oc.md", "3+3 with de-escalation has {} compiled states", lambda: _n(_full(DEESC, 10)["states"])),
    ("docs/oc.md", "doses but {} merged ones", lambda: _n(_merged(DEESC, 10)["states"])),
    *[("docs/oc.md", "{}", lambda k=k: _oc_row(k)) for k in (3, 5, 8, 10, 12, 15, 20, 30, 40)],
    ("docs/oc.md", "de-escalation, {} paths with 5 doses", lambda: _n(_merged(DEESC, 5)["paths"])),
    ("docs/oc.md", "{} million with 15", lambda: f"{_merged(DEESC, 15)['paths'] / 1e6:.1f}"),
    ("docs/oc.md", "and {} million", lambda: f"{_merged(DEESC, 20)['paths'] / 1e6:.0f}"),
    ("docs/oc.md", "against {} merged classes", lambda: ", ".join(_n(_merged(DEESC, k)["states"]) for k in (5, 15))
     + f" and {_n(_merged(DEESC, 20)['states'])}"),
    ("docs/explanation/designs.md", "cohorts of 3, {} states up to `max_n` 30", lambda: _boin_oc_states()),
]

#: A count a page quotes: a number followed by what it counts.
COUNT = re.compile(r"(?<![\w.,^])(\d[\d,]*(?:\.\d+)?(?: × 10\^\d+)?(?: million)?) (merged states|merged classes|"
                   r"merged ones|merged|compiled states|states|paths|complete paths|transitions|criteria)\b")


def _prose(text: str) -> str:
    """The page without its fenced blocks (the commands in them are run and compared above)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "template", "compute"), FIGURES, ids=lambda v: v if isinstance(v, str) else "")
def test_quoted_figure_is_what_the_code_computes(page: str, template: str, compute: Callable[[], str]) -> None:
    """The figure the page quotes in this phrase is the one the code computes now."""
    expected = " ".join(template.format(compute()).split())
    text = " ".join((ROOT / page).read_text(encoding="utf-8").split())  # a phrase may wrap across lines
    assert expected in text, f"{page}: expected the phrase {expected!r} (the code's figure); update the page"


def test_every_quoted_count_is_computed() -> None:
    """Every count of states, paths, transitions or criteria in prose or tables is one FIGURES checks."""
    unlisted = []
    for path in PAGES:
        page = str(path.relative_to(ROOT))
        text = " ".join(_prose(path.read_text(encoding="utf-8")).split())
        covered: list[tuple[int, int]] = []
        for name, template, _ in FIGURES:
            if name != page:
                continue
            head, _, tail = template.partition("{}")
            pattern = re.escape(head) + r"(.+?)" + re.escape(tail) if tail else re.escape(head) + r"(\S+)"
            if template == "{}":
                continue  # table rows: located by their own check
            covered += [m.span() for m in re.finditer(pattern, text)]
        rows = [m.span() for m in re.finditer(r"\| \d+ \| [^|]* \| [^|]* \| [^|]* \|", text)
                if any(t == "{}" for n, t, _ in FIGURES if n == page)]
        for match in COUNT.finditer(text):
            if not any(a <= match.start() < b for a, b in covered + rows):
                unlisted.append(f"{page}: '...{text[max(0, match.start() - 40):match.end()]}'")
    assert not unlisted, "counts no test computes (add them to FIGURES):\n" + "\n".join(unlisted)
