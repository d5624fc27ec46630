"""The input files under examples/ that the README and docs use: valid, and in step with spec/."""

from __future__ import annotations

import json
from pathlib import Path

from escalation_rules.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_records_jsonl_holds_the_shipped_example_records_one_per_line():
    """examples/records.jsonl is spec/patients' eligible, not-eligible and undetermined records, one a line."""
    lines = (EXAMPLES / "records.jsonl").read_text(encoding="utf-8").splitlines()
    shipped = [json.loads((ROOT / "spec" / "patients" / f"{name}.json").read_text(encoding="utf-8"))
               for name in ("eligible", "not-eligible", "undetermined")]
    assert [json.loads(line) for line in lines] == shipped


def test_screen_batch_reads_the_example_records(capsys):
    """screen --batch examples/records.jsonl screens each record, one outcome of each kind."""
    assert main(["screen", "nct07117175", "--batch", str(EXAMPLES / "records.jsonl")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "screened 3 record(s): 1 eligible, 1 not eligible, 1 undetermined; 0 refused")


def test_the_example_event_is_recorded_in_a_new_store(tmp_path, capsys):
    """trial record DB examples/event.json is accepted by a store just created."""
    db = str(tmp_path / "trial.db")
    assert main(["trial", "init", "--spec", "nct07117175", db]) == 0
    assert main(["trial", "record", db, str(EXAMPLES / "event.json")]) == 0
    assert "recorded event 1: screened P01" in capsys.readouterr().out


def test_the_example_policy_changes_the_choices_it_names(capsys):
    """oc --policy examples/my-choices.toml is read, and its choices differ from the default's figures."""
    truth = ["--truth", "0.05,0.1,0.2,0.35", "--no-bounds", "--json"]
    assert main(["oc", "nct07117175", *truth, "--policy", str(EXAMPLES / "my-choices.toml")]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert main(["oc", "nct07117175", *truth]) == 0
    default = json.loads(capsys.readouterr().out)
    assert mine["mtd"] != default["mtd"]


def test_the_example_scenarios_drive_a_grid_of_builtin_designs(capsys):
    """grid --scenarios examples/scenarios.csv gives one row per design and scenario."""
    assert main(["grid", "3+3-deescalate", "--also", "3+3-escalate-only", "--scenarios",
                 str(EXAMPLES / "scenarios.csv"), "--jobs", "1", "--no-bounds"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 2 * 4


def test_the_example_history_json_is_the_outcome_string_of_the_docs(capsys):
    """next --history-json examples/history.json decides as the outcome string '1N [escalate] 2NNN'."""
    assert main(["next", "nct07117175", "--history-json", str(EXAMPLES / "history.json"), "--json"]) == 0
    from_json = json.loads(capsys.readouterr().out)
    assert main(["next", "nct07117175", "1N [escalate] 2NNN", "--json"]) == 0
    assert from_json == json.loads(capsys.readouterr().out)
