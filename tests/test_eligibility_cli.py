"""The screen and data-items subcommands: outputs, exit statuses and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escalation_rules.cli import main
from test_eligibility import BASE, edit

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "spec" / "nct07117175")
PATIENTS = ROOT / "spec" / "patients"


@pytest.mark.parametrize(("name", "status"), [("eligible", 0), ("not-eligible", 3), ("undetermined", 4)])
def test_screen_exit_status_tells_outcomes_apart(name: str, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status is 0 eligible, 3 not eligible, 4 undetermined."""
    assert main(["screen", SPEC, str(PATIENTS / f"{name}.json")]) == status
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(name.replace("-", " ").upper())


def test_screen_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the result contract with the needed items for an undetermined record."""
    assert main(["screen", SPEC, str(PATIENTS / "undetermined.json"), "--json"]) == 4
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "undetermined" and data["exit_status"] == 4
    assert "creatinine.uln" in data["needed"]
    assert {c["id"] for c in data["criteria"]} >= {"inc_age", "exc_hbv"}


def test_screen_refuses_bad_record_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record with an impossible value is refused (status 2), the field named, and no result printed."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(edit(BASE, {"measurements[code=spo2].value": 104})), encoding="utf-8")
    assert main(["screen", SPEC, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "measurements[8].value: expected at most 100%" in captured.err


def test_screen_refuses_malformed_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed JSON is refused with its line and column."""
    path = tmp_path / "p.json"
    path.write_text('{"id": "x",\n "anchors": }', encoding="utf-8")
    assert main(["screen", SPEC, str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_screen_needs_a_protocol_with_criteria(capsys: pytest.CaptureFixture[str]) -> None:
    """A built-in design has no eligibility section: refused with status 2."""
    assert main(["screen", "3+3-deescalate", str(PATIENTS / "eligible.json")]) == 2
    assert "declares no eligibility criteria" in capsys.readouterr().err


def test_batch_screens_every_line_and_reports_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--batch screens each line; a refused line is reported by line number and the status is 2."""
    lines = [json.dumps(BASE), json.dumps(edit(BASE, {"ecog": 4})), "{not json", json.dumps(edit(BASE, {"ecog": None}))]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["screen", SPEC, "--batch", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r.get("outcome") for r in rows] == ["eligible", "not eligible", None, "undetermined"]
    assert rows[2]["line"] == 3 and "not valid JSON" in rows[2]["error"][0]
    assert f"{path}:3: not valid JSON" in captured.err


def test_batch_json_is_compact_and_explain_adds_the_explanation(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--batch --json gives one compact line per record; --explain adds every criterion, at many times the size."""
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps(edit(BASE, {"id": f"P{i}", "ecog": i % 5})) for i in range(20)),
                    encoding="utf-8")
    assert main(["screen", SPEC, "--batch", str(path), "--json"]) == 0
    compact = capsys.readouterr().out
    assert main(["screen", SPEC, "--batch", str(path), "--json", "--explain"]) == 0
    explained = capsys.readouterr().out
    first = json.loads(compact.splitlines()[3])
    assert first == {"line": 4, "record": "P3", "outcome": "not eligible", "failed": ["inc_ecog"], "needed": []}
    full = json.loads(explained.splitlines()[3])
    assert {k: full[k] for k in first} == first and len(full["criteria"]) > 50
    assert len(explained) > 40 * len(compact)


def test_batch_text_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--batch --explain without --json prints each record's criterion-by-criterion text."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(BASE), encoding="utf-8")
    assert main(["screen", SPEC, "--batch", str(path), "--explain"]) == 0
    out = capsys.readouterr().out
    assert f"{path}:1: NCT07117175: record EX-ELIGIBLE: ELIGIBLE" in out and "inc_renal" in out


def test_batch_text_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json, --batch prints one line per record and a tally; all screened gives status 0."""
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join([json.dumps(BASE), json.dumps(edit(BASE, {"ecog": 4}))]), encoding="utf-8")
    assert main(["screen", SPEC, "--batch", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not eligible (fails: inc_ecog)" in out
    assert "screened 2 record(s): 1 eligible, 1 not eligible, 0 undetermined; 0 refused" in out


def test_screen_needs_a_record(capsys: pytest.CaptureFixture[str]) -> None:
    """Giving no record is refused with status 2 (an argument error)."""
    with pytest.raises(SystemExit) as exit_:
        main(["screen", SPEC])
    assert exit_.value.code == 2
    assert "PATIENT.json" in capsys.readouterr().err


def test_options_may_come_before_the_record(capsys: pytest.CaptureFixture[str]) -> None:
    """'screen SPEC --json PATIENT.json' works as well as 'screen SPEC PATIENT.json --json'."""
    assert main(["screen", SPEC, "--json", str(PATIENTS / "eligible.json")]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "eligible"


def test_missing_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A record file that does not exist is refused with status 2 and its name."""
    assert main(["screen", SPEC, "no/such.json"]) == 2
    assert "no/such.json: cannot read" in capsys.readouterr().err


def test_data_items(capsys: pytest.CaptureFixture[str]) -> None:
    """data-items lists every item with its type, unit dimension and users, as text or JSON."""
    assert main(["data-items", SPEC]) == 0
    text = capsys.readouterr().out
    assert "crcl" in text and "[length] ** 3 / [time]" in text and "attested by the investigator" in text
    assert main(["data-items", SPEC, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"creatinine", "creatinine.uln", "crcl", "age", "hbv_dna"}


def test_screen_refuses_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record file in another encoding is refused with status 2 and one line naming the file, no traceback."""
    path = tmp_path / "p.json"
    path.write_bytes(json.dumps(edit(BASE, {"id": "Zoë"}), ensure_ascii=False).encode("latin-1"))
    assert main(["screen", SPEC, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot read" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_screen_refuses_unknown_life_expectancy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NaN life expectancy is refused (status 2), not read as a criterion that is not met (status 3)."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(edit(BASE, {"life_expectancy.value": float("nan")})), encoding="utf-8")
    assert main(["screen", SPEC, str(path)]) == 2
    assert f"{path}: life_expectancy.value: expected a finite number (got NaN)" in capsys.readouterr().err


def test_unit_errors_name_the_file_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A unit of the wrong dimension is reported like every other record error: file name and indexed path."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(edit(BASE, {"measurements[code=creatinine].unit": "kg"})), encoding="utf-8")
    assert main(["screen", SPEC, str(path)]) == 2
    assert f"{path}: measurements[3].unit: expected a unit convertible" in capsys.readouterr().err


def test_batch_jobs_print_what_one_process_prints(tmp_path: Path) -> None:
    """``screen --batch FILE --json`` in a fresh process, by default (one process per core) and with --jobs 1 and
    --jobs 3, prints the same lines and messages and exits with the same status; --jobs out of range is one line."""
    import subprocess
    import sys

    from escalation_rules.eligibility._batch import SHARE as BATCH

    lines = [json.dumps(edit(BASE, {"id": f"Q{i}", "ecog": i % 5}), ensure_ascii=False) for i in range(2 * BATCH + 9)]
    lines[BATCH + 3] = "{broken"
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-c", "from escalation_rules.cli import main; raise SystemExit(main())",
               "screen", SPEC, "--batch", str(path), "--json"]
    runs = [subprocess.run(command + extra, capture_output=True, text=True, check=False)
            for extra in ([], ["--jobs", "1"], ["--jobs", "3"])]
    assert {(r.returncode, r.stdout, r.stderr) for r in runs} == {(runs[0].returncode, runs[0].stdout, runs[0].stderr)}
    assert runs[0].returncode == 2 and len(runs[0].stdout.splitlines()) == len(lines)
    assert runs[0].stderr == f"escalation-rules screen: {path}:{BATCH + 4}: not valid JSON: " \
                             "Expecting property name enclosed in double quotes at line 1 column 2\n"
    bad = subprocess.run([*command, "--jobs", "65"], capture_output=True, text=True, check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "escalation-rules screen: --jobs: expected a whole number from 1 to 64 (got 65)\n"


def test_batch_json_of_an_empty_file_or_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty file screens nothing and succeeds; a named pipe (not a regular file) is read, not mapped."""
    import os
    import threading

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["screen", SPEC, "--batch", str(empty), "--json"]) == 0
    assert capsys.readouterr().out == ""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(json.dumps(edit(BASE, {"id": "F1"})) + "\n",))
    writer.start()
    assert main(["screen", SPEC, "--batch", str(fifo), "--json"]) == 0
    writer.join()
    assert json.loads(capsys.readouterr().out)["record"] == "F1"


@pytest.mark.parametrize(("patient", "extra"), [("eligible.json", []), ("eligible.json", ["--batch"]),
                                                ("eligible.json", ["--batch", "--explain", "--json"]),
                                                ("", ["--batch", "--json"])])
def test_jobs_without_the_compact_batch_is_refused(patient: str, extra: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs only applies to ``--batch FILE --json``; anywhere else (one record, the text output, --explain, a
    folder) it is refused in one line, not ignored."""
    assert main(["screen", SPEC, str(PATIENTS / patient), *extra, "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("escalation-rules screen: --jobs: only with --batch FILE --json") and err.count("\n") == 1
