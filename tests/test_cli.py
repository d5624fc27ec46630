"""Tests of the command line: next, verify, paths, show and names, in text and JSON, with their exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from escalation_rules.cli import main
from escalation_rules.protocol import GUARD_NAMES

Capture = pytest.CaptureFixture[str]
NCT = "spec/nct07117175"


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    """Run the CLI and return (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(err: str, command: str) -> list[str]:
    """Every stderr line is a one-line message of the command, with no traceback."""
    lines = err.splitlines()
    assert lines
    assert "Traceback" not in err
    assert all(line.startswith(f"escalation-rules {command}: ") for line in lines), lines
    return lines


# ------------------------------------------------------------------ next


def test_next_text(capsys: Capture, in_repo: Path) -> None:
    """``next`` prints the history, what to do, the rule with its clause and the reason."""
    status, out, err = run(capsys, "next", NCT, "1N 2N")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "history: 1N [escalate] 2N"
    assert lines[1] == "treat 2 patient(s) at dose 2 (2×10^7 CAR-NK cells/kg)"
    assert any(line.startswith("rule: at-pass-one/escalate [Full description ¶1]") for line in lines)
    assert any(line.startswith("reason: ") for line in lines)


def test_next_text_decision_point(capsys: Capture, in_repo: Path) -> None:
    """At a decision point ``next`` lists the options and the sign-off required."""
    status, out, _ = run(capsys, "next", NCT, "1N")
    assert status == 0
    assert "decide: escalate = escalate to 2×10^7 cells/kg (dose 2, 3 patients); terminate = end the study" in out
    assert "sign-off: investigator, sponsor" in out


def test_next_text_stop(capsys: Capture) -> None:
    """After a stop ``next`` names the MTD."""
    status, out, _ = run(capsys, "next", "3+3-escalate-only", "--doses", "2", "1NNN 2TTN")
    assert status == 0
    assert "stop: MTD dose 1 (dose 1)" in out
    status, out, _ = run(capsys, "next", "3+3-escalate-only", "--doses", "2", "1TTN")
    assert "stop: MTD not determined" in out


def test_next_json_contract(capsys: Capture, in_repo: Path) -> None:
    """``next --json`` prints the decision's JSON contract."""
    status, out, err = run(capsys, "next", NCT, "1N", "--json")
    assert status == 0 and err == ""
    data = json.loads(out)
    for key in ("action", "dose", "dose_label", "cohort_size", "mtd", "mtd_label", "options", "signoff", "rule",
                "clause", "reason", "stage", "determined_early", "history"):
        assert key in data
    assert data["action"] == "decide"
    assert [o["id"] for o in data["options"]] == ["escalate", "terminate"]
    assert data["options"][0]["dose"] == 2 and data["options"][0]["cohort_size"] == 3
    assert data["signoff"] == ["investigator", "sponsor"]


def test_next_json_early_decision(capsys: Capture) -> None:
    """An early-determined decision says so in JSON."""
    status, out, _ = run(capsys, "next", "3+3-deescalate", "--doses", "3", "--json", "1NNN 2TT")
    data = json.loads(out)
    assert status == 0
    assert (data["action"], data["dose"], data["cohort_size"], data["determined_early"]) == ("treat", 1, 3, True)


def test_next_history_after_options(capsys: Capture) -> None:
    """A history given after ``--doses`` is taken as the history."""
    status, out, _ = run(capsys, "next", "3+3-deescalate", "--doses", "3", "1NNN")
    assert status == 0
    assert "treat 3 patient(s) at dose 2" in out


def test_next_empty_history(capsys: Capture) -> None:
    """Without a history ``next`` gives the first cohort."""
    status, out, _ = run(capsys, "next", "accelerated-titration")
    assert status == 0
    assert "history: (none)" in out and "treat 1 patient(s) at dose 1" in out


def test_next_history_json_file(capsys: Capture, in_repo: Path, tmp_path: Path) -> None:
    """``--history-json FILE`` reads the JSON form, with sign-offs."""
    path = tmp_path / "history.json"
    path.write_text(json.dumps([{"dose": 1, "outcomes": "N"},
                                {"decision": "escalate", "signoff": ["investigator", "sponsor"]},
                                {"dose": 2, "outcomes": "NNN"}]), encoding="utf-8")
    status, out, _ = run(capsys, "next", NCT, "--history-json", str(path), "--json")
    assert status == 0
    assert json.loads(out)["rule"] == "pass-to-next"


def test_next_history_json_stdin(capsys: Capture, in_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--history-json -`` reads the JSON history from standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO('{"history": "1T 1NN"}'))
    status, out, _ = run(capsys, "next", NCT, "--history-json", "-", "--json")
    assert status == 0
    assert json.loads(out)["rule"] == "at-pass-three"


def test_next_missing_signoff_is_refused(capsys: Capture, in_repo: Path, tmp_path: Path) -> None:
    """A JSON decision lacking a required sign-off exits 2 with one line naming the cohort."""
    path = tmp_path / "history.json"
    path.write_text('[{"dose": 1, "outcomes": "N"}, {"decision": "escalate", "signoff": ["sponsor"]}]',
                    encoding="utf-8")
    status, out, err = run(capsys, "next", NCT, "--history-json", str(path))
    assert status == 2 and out == ""
    lines = assert_refused(err, "next")
    assert lines == ["escalation-rules next: cohort 2 ([escalate]): missing sign-off by investigator "
                     "(required: investigator, sponsor)"]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("1NNN 3NNN", "cohort 2 ('3NNN'): skips dose 2"),
        ("1NXN", "cohort 1 ('1NXN'): unknown symbol 'X'"),
        ("1TTN 2NNN", "cohort 2 ('2NNN'): the trial stopped after cohort 1"),
        ("1NNN 2N 3NNN", "cohort 3 ('3NNN'): cohort 2 at dose 2 is incomplete"),
    ],
)
def test_next_impossible_history_exits_2(capsys: Capture, history: str, message: str) -> None:
    """An impossible history exits 2 with one line on stderr naming the cohort, and nothing on stdout."""
    status, out, err = run(capsys, "next", "3+3-deescalate", "--doses", "3", history)
    assert status == 2 and out == ""
    lines = assert_refused(err, "next")
    assert len(lines) == 1 and message in lines[0]


def test_next_unreadable_history_file(capsys: Capture, tmp_path: Path) -> None:
    """A history file that cannot be read exits 2 with one line."""
    status, _, err = run(capsys, "next", "3+3-deescalate", "--history-json", str(tmp_path / "none.json"))
    assert status == 2
    assert assert_refused(err, "next") == [f"escalation-rules next: {tmp_path / 'none.json'}: cannot read: "
                                           "No such file or directory"]


def test_next_invalid_json_history(capsys: Capture, tmp_path: Path) -> None:
    """A history file that is not JSON exits 2 naming the file, line and column."""
    path = tmp_path / "h.json"
    path.write_text("[{", encoding="utf-8")
    status, _, err = run(capsys, "next", "3+3-deescalate", "--history-json", str(path))
    assert status == 2
    assert f"{path}: not valid JSON:" in assert_refused(err, "next")[0]


# ------------------------------------------------------------------ specs


def test_unknown_spec_exits_2(capsys: Capture) -> None:
    """A SPEC that is neither a file nor a design exits 2 listing the designs."""
    status, _, err = run(capsys, "next", "no-such-design")
    assert status == 2
    assert "no such protocol file or folder, and not a shipped protocol or a built-in design (shipped protocols: " \
           "nct07117175; built-in designs: 3+3-deescalate" in err


def test_doses_with_a_protocol_path_exits_2(capsys: Capture, in_repo: Path) -> None:
    """``--doses`` with a protocol path is refused."""
    status, _, err = run(capsys, "show", NCT, "--doses", "3")
    assert status == 2
    assert "--doses applies to built-in designs only" in err


def test_doses_out_of_range_exits_2(capsys: Capture) -> None:
    """A number of doses outside 1 to 40 is refused."""
    status, _, err = run(capsys, "verify", "3+3-deescalate", "--doses", "0")
    assert status == 2
    assert "--doses: expected an integer from 1 to 40 (got 0)" in err


def test_toml_suffix_names_the_shipped_folder(capsys: Capture, in_repo: Path) -> None:
    """``spec/nct07117175.toml`` names the shipped protocol folder."""
    status, out, _ = run(capsys, "next", "spec/nct07117175.toml", "1T", "--json")
    assert status == 0
    assert json.loads(out)["rule"] == "at-first-dlt"


def test_bad_arguments_exit_2() -> None:
    """Unknown commands and options exit 2 (argparse), in one line."""
    for argv in (["bogus"], ["next"], ["verify", "3+3-deescalate", "--frobnicate"], ["next", "x", "a", "b"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2


# ------------------------------------------------------------------ verify


def test_verify_shipped_protocol_exits_0(capsys: Capture, in_repo: Path) -> None:
    """``verify`` on the shipped protocol prints every invariant as ok and exits 0."""
    status, out, err = run(capsys, "verify", NCT)
    assert status == 0 and err == ""
    assert out.splitlines()[0].startswith(f"verify {NCT}: ")
    assert out.rstrip().endswith("all invariants hold")
    assert "FAIL" not in out


def test_verify_json(capsys: Capture) -> None:
    """``verify --json`` prints the report with every invariant."""
    status, out, _ = run(capsys, "verify", "3+3-deescalate", "--doses", "3", "--json")
    data = json.loads(out)
    assert status == 0 and data["ok"] is True
    assert {r["id"] for r in data["results"]} >= {"no-escalation-after-two-dlts", "no-skipped-dose", "coherence"}
    assert all(r["counterexample"] is None for r in data["results"])


def test_verify_broken_fixture_exits_1(capsys: Capture) -> None:
    """``verify`` on the broken 3+3 exits 1 naming the invariant and a shortest counterexample."""
    path = str(FIXTURES / "broken_3plus3.toml")
    status, out, err = run(capsys, "verify", path)
    assert status == 1 and err == ""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if "FAIL no-escalation-after-two-dlts" in line)
    assert lines[i + 1].strip() == "counterexample: 1NNT 1NNT"
    assert lines[-1] == "INVARIANT VIOLATED"


def test_verify_broken_fixture_json(capsys: Capture) -> None:
    """``verify --json`` on the broken 3+3 exits 1 and carries the counterexample."""
    status, out, _ = run(capsys, "verify", str(FIXTURES / "broken_3plus3.toml"), "--json")
    data = json.loads(out)
    assert status == 1 and data["ok"] is False
    failed = {r["id"]: r for r in data["results"] if not r["ok"]}
    assert failed["no-escalation-after-two-dlts"]["counterexample"] == "1NNT 1NNT"


@pytest.mark.parametrize(
    ("name", "count", "fragment"),
    [
        ("bad_toml.toml", 1, "not valid TOML"),
        ("unknown_key.toml", 3, "stages[0].rules[1].mdt: unknown key"),
        ("unknown_name.toml", 1, "stages[0].rules[2].when: unknown name 'dlts'"),
        ("guard_type_error.toml", 2, "stages[0].rules[5].when: expected a bool expression"),
        ("unknown_references.toml", 4, "stages[0].rules[0].stage: unknown stage 'nowhere'"),
        ("incomplete_table.toml", 1, "no rule of stage 'escalation' applies (table incomplete) after history '1NNT'"),
        ("overlap_unique.toml", 1, "rules one-of-three, too-toxic of stage 'escalation' all apply"),
        ("passes_cap.toml", 2, "rule 'one-of-three' treats 3 more with 1 places left under the cap of 7"),
        ("move_above_top.toml", 1, "rule 'zero-of-three-top' moves above the top dose"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "show", "next", "paths"])
def test_malformed_protocol_exits_2(capsys: Capture, command: str, name: str, count: int, fragment: str) -> None:
    """A refused protocol prints one stderr line per problem, naming the file, and exits 2 without a traceback."""
    path = FIXTURES / "malformed" / name
    status, out, err = run(capsys, command, str(path))
    assert status == 2 and out == ""
    lines = assert_refused(err, command)
    assert len(lines) == count, lines
    assert all(f"{command}: {path}: " in line for line in lines)
    assert any(fragment in line for line in lines)


# ------------------------------------------------------------------ paths, show, names


def test_paths_text(capsys: Capture) -> None:
    """``paths`` prints the tree of every future decision, one line per node."""
    status, out, _ = run(capsys, "paths", "3+3-escalate-only", "--doses", "1")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "(start) -> treat 3 at dose 1"
    assert "  1NNN -> stop, MTD dose 1 (esc-zero-of-three-top)" in lines
    assert "    1NNT -> stop, MTD none (esc-too-toxic)" in lines
    assert len(lines) == 9


def test_paths_json_from_a_history(capsys: Capture, in_repo: Path) -> None:
    """``paths --json`` from a decision point branches on each option."""
    status, out, _ = run(capsys, "paths", NCT, "1N", "--depth", "1", "--json")
    tree = json.loads(out)
    assert status == 0
    assert tree["decision"]["action"] == "decide"
    assert [c["step"] for c in tree["children"]] == ["[escalate]", "[terminate]"]
    assert all(c["node"]["children"] == [] for c in tree["children"])


def test_paths_impossible_history_exits_2(capsys: Capture) -> None:
    """``paths`` refuses an impossible history like ``next``."""
    status, _, err = run(capsys, "paths", "3+3-deescalate", "2NNN")
    assert status == 2
    assert "the first cohort must be at the starting dose 1" in assert_refused(err, "paths")[0]


def test_show_text(capsys: Capture, in_repo: Path) -> None:
    """``show`` prints the ladder, each stage's table with clauses, and the graph size."""
    status, out, _ = run(capsys, "show", NCT)
    assert status == 0
    assert out.startswith("NCT07117175: ")
    assert "  2. 2×10^7 CAR-NK cells/kg" in out
    assert "  - top-pass: when " in out
    assert "early termination at any time [sign: investigator, sponsor]" in out
    assert "state graph: " in out


def test_show_json(capsys: Capture) -> None:
    """``show --json`` lists stages and rules as data."""
    status, out, _ = run(capsys, "show", "3+3-six-at-top", "--doses", "2", "--json")
    data = json.loads(out)
    assert status == 0
    assert data["id"] == "3+3-six-at-top" and len(data["doses"]) == 2
    assert [s["id"] for s in data["stages"]] == ["escalation", "deescalation"]
    assert data["stages"][0]["rules"][0]["when"] == "n == 3 and tox == 0 and has_next"


def test_names(capsys: Capture) -> None:
    """``names`` lists every name a guard may read, one per line, with its meaning."""
    status, out, _ = run(capsys, "names")
    assert status == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(GUARD_NAMES)
    assert lines[0].split(None, 1)[1] == "patients evaluated at the current dose"


# ------------------------------------------------------------------ as a process


def _process(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "escalation_rules.cli", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_process_verify_broken_fixture_exits_1() -> None:
    """``escalation-rules verify tests/fixtures/broken_3plus3.toml`` exits 1 with the counterexample."""
    done = _process("verify", "tests/fixtures/broken_3plus3.toml")
    assert done.returncode == 1
    assert "counterexample: 1NNT 1NNT" in done.stdout
    assert done.stderr == ""


def test_process_refused_protocol_exits_2_without_traceback() -> None:
    """A refused protocol exits 2 from the real process, with one line per problem and no traceback."""
    done = _process("verify", "tests/fixtures/malformed/unknown_references.toml")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 4


def test_empty_spec_is_refused_not_read_as_the_current_folder(capsys) -> None:
    """An empty SPEC is refused (it would otherwise read every .toml of the working folder)."""
    from escalation_rules.cli import main

    assert main(["next", "", "1N"]) == 2
    assert "expected a protocol file or folder" in capsys.readouterr().err


def test_paths_depth_zero_and_negative(capsys) -> None:
    """--depth 0 shows only the current decision; a negative depth is refused."""
    from escalation_rules.cli import main

    assert main(["paths", "3+3-deescalate", "--depth", "0"]) == 0
    assert capsys.readouterr().out.strip() == "(start) -> treat 3 at dose 1"
    assert main(["paths", "3+3-deescalate", "--depth", "-1"]) == 2
    assert "--depth: expected an integer of 0 or more" in capsys.readouterr().err


# ------------------------------------------------------------------ start-up: lazy imports


@pytest.mark.parametrize("argv", [
    ["next", "nct07117175", "1N 2NNN"],
    ["next", "3+3-deescalate", "--doses", "3", "1NNN 2TT", "--json"],
    ["screen", "nct07117175", "--batch", "examples/records.jsonl"],
    ["trial", "status", "{db}"],
])
def test_fast_commands_import_neither_networkx_nor_numpy_nor_pint(argv: list[str], tmp_path: Path) -> None:
    """next, screen and trial status run without importing networkx, numpy, pint or the analyses.

    Nor the smaller costs found by ``python -X importtime``: cryptography, a
    FHIR model, the pure-Python tomllib (tomli's compiled parser reads the
    protocol), shutil (argparse's terminal width), concurrent.futures and
    logging, calendar, random, mmap.

    Whole-process start-up is measured in benchmarks/bench_core.py; this
    checks, in a fresh interpreter, the imports that would cost it.
    """
    db = tmp_path / "trial.db"
    assert main(["trial", "init", "--spec", "nct07117175", str(db)]) == 0
    code = (
        "import sys, contextlib, io\n"
        "from escalation_rules.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = main({[a.format(db=db) for a in argv]!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('networkx', 'numpy', 'pint', 'matplotlib',"
        " 'sphinx', 'cryptography', 'fhir', 'tomllib', 'shutil', 'concurrent', 'logging', 'calendar', 'random',"
        " 'mmap')"
        " or m.startswith(('escalation_rules.analysis', 'escalation_rules.verify')))\n"
        "print(status, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split(" ", 1) in (["0", "[]\n"], ["3", "[]\n"], ["4", "[]\n"]), (
        done.stdout + done.stderr + " (pint: a shipped unit missing from the table? run python scripts/units_table.py)")


def test_top_level_help_still_lists_every_command(capsys: Capture) -> None:
    """Commands registered lazily still appear in the top-level help."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("next", "verify", "oc", "simulate", "grid", "screen", "data-items", "trial", "docs"):
        assert command in out
