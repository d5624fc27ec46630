"""Tests of escalation_rules.analysis.grid and .plot: scenario grids, executors, tables and figures."""

from __future__ import annotations

import csv
import io
import json
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pytest

from escalation_rules import builtin_design, load_protocol
from escalation_rules.analysis import (
    BOUNDED_FIGURES,
    GridResult,
    Scenario,
    load_scenarios,
    operating_characteristics,
    plot_grid,
    run_grid,
)
from escalation_rules.cli import main
from escalation_rules.errors import EscalationRulesError

SCENARIOS = (
    Scenario("rising", (0.05, 0.1, 0.2, 0.35)),
    Scenario("toxic", (0.3, 0.45, 0.6, 0.7)),
    Scenario("exact", (Fraction(1, 20), Fraction(1, 10), Fraction(1, 5), Fraction(1, 3))),
)
DESIGNS = ("3+3-escalate-only", "3+3-deescalate")
ROOT = Path(__file__).resolve().parent.parent


def _serial() -> GridResult:
    return run_grid(DESIGNS, SCENARIOS, jobs=1)


def test_grid_cells_equal_single_runs():
    """Each cell of a grid equals operating_characteristics of that design and scenario."""
    grid = _serial()
    for design in DESIGNS:
        for scenario in SCENARIOS:
            alone = operating_characteristics(builtin_design(design, 4), scenario.truth)
            assert grid.result(design, scenario.name).mtd == alone.mtd


def test_thread_pool_executor_gives_the_serial_result():
    """A ThreadPoolExecutor passed by the caller gives the same grid as a serial run."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        grid = run_grid(DESIGNS, SCENARIOS, executor=pool)
    assert [oc.mtd for oc in grid.results] == [oc.mtd for oc in _serial().results]


def test_process_pool_executor_gives_the_serial_result(in_repo):
    """A ProcessPoolExecutor (also with a protocol folder) gives the same grid as a serial run."""
    designs = (*DESIGNS, "spec/nct07117175")
    with ProcessPoolExecutor(max_workers=2) as pool:
        grid = run_grid(designs, SCENARIOS, executor=pool)
    serial = run_grid(designs, SCENARIOS, jobs=1)
    assert [oc.to_dict() for oc in grid.results] == [oc.to_dict() for oc in serial.results]


def test_default_process_pool_runs_the_grid():
    """Without an executor, a process pool of ``jobs`` workers runs the grid."""
    grid = run_grid(DESIGNS, SCENARIOS[:2], jobs=2)
    assert len(grid.results) == 4


def test_bare_vectors_become_numbered_scenarios():
    """Scenarios given as plain probability vectors are named 'scenario 1', 'scenario 2', ..."""
    grid = run_grid(["3+3-deescalate"], [[0.1, 0.2], [0.2, 0.4, 0.5]], jobs=1)
    assert [s.name for s in grid.scenarios] == ["scenario 1", "scenario 2"]
    assert [len(oc.truth) for oc in grid.results] == [2, 3]


def test_a_failing_cell_names_design_and_scenario(in_repo):
    """A scenario that does not fit a protocol's ladder is refused, naming the design and scenario."""
    with ThreadPoolExecutor(2) as pool, pytest.raises(EscalationRulesError, match=r"spec/nct07117175.*'short'"):
        run_grid(["spec/nct07117175"], [Scenario("short", (0.1, 0.2))], executor=pool)
    with ProcessPoolExecutor(1) as pool, pytest.raises(EscalationRulesError, match="expected 4 probabilities"):
        run_grid(["spec/nct07117175"], [Scenario("short", (0.1, 0.2))], executor=pool)


def test_csv_table_has_a_row_per_design_and_scenario():
    """The CSV has one row per (design, scenario), per-dose columns and the bounds of each figure."""
    rows = list(csv.DictReader(io.StringIO(_serial().to_csv())))
    assert len(rows) == 6
    assert {"design", "scenario", "p_no_mtd", "p_mtd_4", "patients_1", "dlts_4", "p_overdose_max"} <= set(rows[0])
    assert rows[2]["p_no_mtd"].count("/") == 1  # the exact scenario keeps fractions


def test_json_table_holds_each_cell_document():
    """The JSON grid lists designs, scenarios and each cell's oc document."""
    data = json.loads(json.dumps(_serial().to_json()))
    assert data["designs"] == list(DESIGNS)
    assert len(data["results"]) == 6 and {"design", "scenario", "mtd", "patients_at_dose"} <= set(data["results"][0])


def test_scenarios_load_from_csv_and_json(tmp_path):
    """Scenario files in CSV (name column, blank cells for shorter ladders) and JSON load alike."""
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("name,p1,p2,p3\nlow,0.05,0.1,0.2\nshort,0.1,0.3,\nexact,1/10,1/5,1/3\n", encoding="utf-8")
    json_path = tmp_path / "s.json"
    json_path.write_text(json.dumps({"scenarios": [{"name": "low", "truth": [0.05, 0.1, 0.2]},
                                                   [0.1, 0.3], {"name": "exact", "truth": ["1/10", "1/5", "1/3"]}]}),
                         encoding="utf-8")
    from_csv = load_scenarios(csv_path)
    from_json = load_scenarios(json_path)
    assert [s.truth for s in from_csv] == [s.truth for s in from_json]
    assert from_csv[1] == Scenario("short", (0.1, 0.3))
    assert from_json[1].name == "scenario 2"
    assert from_csv[2].truth == (Fraction(1, 10), Fraction(1, 5), Fraction(1, 3))


def test_scenarios_load_from_the_protocol_toml_and_a_toml_table(tmp_path):
    """The protocol's own scenarios.toml ([[scenarios]] tables) and a [scenarios] table of lists load as scenarios."""
    shipped = load_scenarios(ROOT / "spec" / "nct07117175" / "scenarios.toml")
    assert shipped[0] == Scenario("all planned doses tolerable",
                                  (Fraction(1, 20), Fraction(1, 10), Fraction(3, 20), Fraction(1, 4)))
    table = tmp_path / "s.toml"
    table.write_text('[scenarios]\nlow = [0.05, 0.1]\nexact = ["1/10", "1/5"]\n', encoding="utf-8")
    assert load_scenarios(table) == (Scenario("low", (0.05, 0.1)), Scenario("exact", (Fraction(1, 10), Fraction(1, 5))))


def test_cli_grid_reads_the_protocol_scenarios_toml(tmp_path, capsys, monkeypatch):
    """grid nct07117175 --scenarios spec/nct07117175/scenarios.toml gives a row per declared scenario."""
    monkeypatch.chdir(tmp_path)
    scenarios = str(ROOT / "spec" / "nct07117175" / "scenarios.toml")
    assert main(["grid", "nct07117175", "--scenarios", scenarios, "--jobs", "1", "--no-bounds"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["scenario"] for r in rows] == [s.name for s in load_scenarios(scenarios)] and err == ""


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", "name,p1\nx,2\n", "row 2: entry 1"),
    ("b.csv", "name,p1\n", "header row and at least one"),
    ("c.json", "{", "not valid JSON"),
    ("d.json", '[{"name": "x", "truth": 0.3}]', "expected a list of probabilities"),
    ("e.toml", "[[scenarios]\n", "e.toml: not valid TOML"),
    ("f.toml", "scenarios = 3\n", r"f.toml: expected a list of scenarios \(or \[\[scenarios\]\] tables"),
    ("g.toml", '[[scenarios]]\nname = "x"\ntruth = ["1/2", 3]\n', r"g.toml: scenarios\[0\].truth: entry 2"),
])
def test_bad_scenario_files_are_refused(tmp_path, name, text, message):
    """Scenario files with a bad entry or shape are refused, naming the file and the place."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EscalationRulesError, match=message):
        load_scenarios(path)


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plot_is_written_as_png_or_svg(tmp_path, suffix):
    """The grid plot is written in the format of the file's suffix."""
    pytest.importorskip("matplotlib")
    path = tmp_path / f"grid.{suffix}"
    plot_grid(_serial(), path)
    head = path.read_bytes()[:100]
    assert head.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in path.read_bytes()[:2000] or b"<?xml" in head


def test_plot_refuses_another_format(tmp_path):
    """Only .png and .svg are accepted."""
    with pytest.raises(EscalationRulesError, match=r"expected a \.png or \.svg"):
        plot_grid(_serial(), tmp_path / "grid.pdf")


def test_cli_grid_writes_csv_json_and_plot(tmp_path, capsys):
    """grid SPEC --also SPEC --scenarios FILE writes the table as CSV and JSON and draws the plot."""
    pytest.importorskip("matplotlib")
    scenarios = tmp_path / "s.csv"
    scenarios.write_text("name,p1,p2,p3\nlow,0.05,0.1,0.2\nhigh,0.2,0.35,0.5\n", encoding="utf-8")
    out_csv, out_json, out_png = tmp_path / "g.csv", tmp_path / "g.json", tmp_path / "g.png"
    assert main(["grid", "3+3-deescalate", "--also", "3+3-escalate-only", "--scenarios", str(scenarios),
                 "--csv", str(out_csv), "--json", str(out_json), "--plot", str(out_png), "--jobs", "1"]) == 0
    assert len(out_csv.read_text(encoding="utf-8").splitlines()) == 5
    assert len(json.loads(out_json.read_text(encoding="utf-8"))["results"]) == 4
    assert out_png.stat().st_size > 1000


def test_cli_grid_prints_csv_by_default_and_refuses_unknown_designs(tmp_path, capsys):
    """Without output files, grid prints CSV; an unknown design exits 2 with one line."""
    scenarios = tmp_path / "s.json"
    scenarios.write_text("[[0.1, 0.2]]", encoding="utf-8")
    assert main(["grid", "3+3-deescalate", "--scenarios", str(scenarios), "--jobs", "1", "--no-bounds"]) == 0
    assert capsys.readouterr().out.startswith("design,scenario,")
    assert main(["grid", "no-such-design", "--scenarios", str(scenarios)]) == 2
    assert "no-such-design" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", [0, -3])
def test_jobs_below_one_are_refused(tmp_path, capsys, jobs):
    """--jobs 0 or negative is refused with one line (API and CLI), never a ValueError traceback."""
    with pytest.raises(EscalationRulesError, match=r"^jobs: expected a whole number of 1 or more"):
        run_grid(DESIGNS, SCENARIOS[:1], jobs=jobs)
    scenarios = tmp_path / "s.csv"
    scenarios.write_text("name,p1,p2\na,0.1,0.2\n", encoding="utf-8")
    assert main(["grid", "3+3-deescalate", "--scenarios", str(scenarios), "--jobs", str(jobs)]) == 2
    assert "--jobs: expected a whole number of 1 or more" in capsys.readouterr().err


def test_scenarios_file_that_is_not_utf8_is_refused(tmp_path, capsys):
    """A scenarios file in another encoding is refused with one line naming the file."""
    scenarios = tmp_path / "s.csv"
    scenarios.write_bytes("name,p1,p2\nzoë,0.1,0.2\n".encode("latin-1"))
    with pytest.raises(EscalationRulesError, match=r"s\.csv: cannot read: not UTF-8"):
        load_scenarios(scenarios)
    assert main(["grid", "3+3-deescalate", "--scenarios", str(scenarios), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot read: not UTF-8" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("option", ["--plot", "--csv", "--json"])
def test_every_output_in_a_missing_folder_is_refused_and_nothing_is_written(tmp_path, capsys, option):
    """An output whose folder does not exist is refused for --plot, --csv and --json alike; nothing appears."""
    scenarios = tmp_path / "s.csv"
    scenarios.write_text("name,p1,p2\na,0.1,0.2\n", encoding="utf-8")
    missing = tmp_path / "nonexist" / ("g.png" if option == "--plot" else "x.out")
    others = {"--plot": tmp_path / "g.svg", "--csv": tmp_path / "x.csv", "--json": tmp_path / "x.json"}
    argv = ["grid", "3+3-deescalate", "--scenarios", str(scenarios), "--jobs", "1", option, str(missing)]
    for other, path in others.items():
        if other != option and (other != "--plot" or _has_matplotlib()):
            argv += [other, str(path)]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_a_failing_grid_writes_nothing(tmp_path, capsys):
    """When a cell fails (a scenario of the wrong length for a protocol), no output file is written."""
    scenarios = tmp_path / "s.csv"
    scenarios.write_text("name,p1,p2\na,0.1,0.2\n", encoding="utf-8")
    argv = ["grid", "spec/nct07117175", "--scenarios", str(scenarios), "--jobs", "1",
            "--csv", str(tmp_path / "x.csv"), "--json", str(tmp_path / "x.json")]
    assert main(argv) == 2
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_every_figure_lies_within_its_own_bounds_in_the_csv():
    """Invariant: in every grid row, figure_min <= figure <= figure_max, to the last digit."""
    import random

    rnd = random.Random(4)
    scenarios = [Scenario(f"s{i}", tuple(sorted(round(rnd.random(), 3) for _ in range(4)))) for i in range(12)]
    grid = run_grid(["3+3-deescalate", "3+3-escalate-only", "spec/nct07117175"], scenarios, jobs=1)
    for row in csv.DictReader(io.StringIO(grid.to_csv())):
        for name in BOUNDED_FIGURES:
            assert float(row[f"{name}_min"]) <= float(row[name]) <= float(row[f"{name}_max"]), (row["scenario"], name)


def test_grid_honours_a_policy_that_depends_on_the_data(in_repo):
    """A guarded policy given to the grid gives each cell the figures of a single run under it."""
    policy = {"fill-complete": [{"when": "tox == 0", "option": "declare"}, {"option": "no-mtd"}]}
    scenario = Scenario("toxic start", (Fraction(2, 5), Fraction(11, 20), Fraction(7, 10), Fraction(4, 5)))
    grid = run_grid(["spec/nct07117175"], [scenario], policy=policy, jobs=1)
    alone = operating_characteristics(load_protocol("spec/nct07117175"), scenario.truth, policy=policy)
    assert grid.result("spec/nct07117175", "toxic start").mtd == alone.mtd
    assert alone.mtd != operating_characteristics(load_protocol("spec/nct07117175"), scenario.truth).mtd
