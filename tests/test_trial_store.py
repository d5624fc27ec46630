"""The SQLite trial store and the ``trial`` CLI: chain verification, refusals, export and replay."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.cli import main
from escalation_rules.trial.events import TrialError
from escalation_rules.trial.status import trial_status
from escalation_rules.trial.store import _TRIGGERS, TrialStore

SPEC = "spec/nct07117175"


def ev(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **fields}


START = [ev("screened", "2025-01-01T08:00Z", patient="P01", eligible=True),
         ev("enrolled", "2025-01-01T09:00Z", patient="P01", dose=1),
         ev("infused", "2025-01-02T10:00Z", patient="P01", date="2025-01-02"),
         ev("ae_reported", "2025-01-03T10:00Z", patient="P01", ae="c1", term="Cytokine release syndrome",
            category="crs", components={"fever": True}, onset="2025-01-03T08:00Z", attribution="possible"),
         ev("decision_signed", "2025-02-01T09:00Z", option="escalate", role="investigator", person="Dr A"),
         ev("decision_signed", "2025-02-01T10:00Z", option="escalate", role="sponsor", person="Ms B"),
         ev("screened", "2025-02-02T08:00Z", patient="P02", eligible=True),
         ev("enrolled", "2025-02-02T09:00Z", patient="P02", dose=2)]


@pytest.fixture
def store(tmp_path: Path) -> TrialStore:
    s = TrialStore.create(tmp_path / "t.db", SPEC)
    s.record(START)
    yield s
    s.close()


def cli(*args: str) -> int:
    return main(["trial", *[str(a) for a in args]])


def snapshot(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return [*conn.execute("SELECT * FROM events ORDER BY seq"), *conn.execute("SELECT * FROM meta ORDER BY key")]


def tamper(path: Path, *statements: str) -> None:
    """Change the database behind the store's back (dropping the append-only triggers first)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("DROP TRIGGER events_append_only_delete")
    for statement in statements:
        conn.execute(statement)
    for sql in _TRIGGERS.values():  # put the triggers back: the tampering under test is the change itself
        conn.execute(sql)
    conn.close()


def test_record_and_verify(store: TrialStore) -> None:
    """Recorded events come back in order and the chain verifies."""
    assert [s.seq for s in store.events()] == list(range(1, len(START) + 1))
    report = store.verify()
    assert report.ok and report.events == len(START)
    assert store.status("2025-02-03").history == "1N [escalate]"


def test_store_keeps_its_protocol(tmp_path: Path) -> None:
    """A store reads its protocol from the file, not from the spec folder it was created from."""
    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    TrialStore.create(tmp_path / "t.db", str(spec)).close()
    shutil.rmtree(spec)
    with TrialStore(tmp_path / "t.db") as s:
        assert s.protocol.id == "NCT07117175"
        assert s.record(START[:1]).events == (1,)


def test_events_are_append_only_inside_sqlite(store: TrialStore) -> None:
    """SQLite triggers refuse updates and deletes of stored events."""
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE events SET body = '{}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM events WHERE seq = 1")
    conn.close()


@pytest.mark.parametrize(("statements", "broken", "message"), [
    (["UPDATE events SET body = replace(body, 'P01', 'P99') WHERE seq = 3"], 3, "content does not match its hash"),
    (["DELETE FROM events WHERE seq = 4"], 5, "event 4 is missing"),
    (["DELETE FROM events WHERE seq = 8"], 8, "events removed from the end"),
    (["UPDATE events SET recorded_at = '2030-01-01T00:00:00Z' WHERE seq = 6"], 6, "does not match its hash"),
    (["UPDATE meta SET value = replace(value, '\"cap\":18', '\"cap\":30') WHERE key = 'protocol'"], None,
     "stored protocol does not match"),
])
def test_tampering_is_detected_naming_the_first_broken_link(store: TrialStore, capsys: pytest.CaptureFixture[str],
                                                            statements: list[str], broken: int | None,
                                                            message: str) -> None:
    """A stored event changed or removed behind the store's back fails `trial verify` with exit 1, naming it."""
    store.close()
    tamper(Path(store.path), *statements)
    assert cli("verify", store.path) == 1
    err = capsys.readouterr().err
    assert message in err
    if broken is not None:
        assert err.startswith(f"event {broken}: broken link")
    with TrialStore(store.path) as reopened:
        assert reopened.verify().first_broken == broken
        with pytest.raises(TrialError, match="fails verification"):
            reopened.record(ev("screened", "2025-03-01", patient="P77", eligible=True))


def test_a_rehashed_change_is_caught_by_the_next_link(store: TrialStore) -> None:
    """Recomputing a changed event's own hash still breaks the link of the event after it."""
    from escalation_rules.trial.store import link_hash

    store.close()
    conn = sqlite3.connect(store.path)
    seq, recorded, body, prev, _ = conn.execute("SELECT * FROM events WHERE seq = 2").fetchone()
    conn.close()
    body = body.replace('"dose":1', '"dose":2')
    tamper(Path(store.path), f"UPDATE events SET body = '{body}', hash = '{link_hash(prev, seq, recorded, body)}' "
                             f"WHERE seq = 2")
    with TrialStore(store.path) as reopened:
        report = reopened.verify()
    assert not report.ok and report.first_broken == 3
    assert "predecessor hash does not match event 2" in report.problems[0]


BAD_EVENTS = [
    (ev("infused", "2025-02-03", patient="P42", date="2025-02-03"), "unknown patient 'P42'"),
    (ev("ae_reported", "2025-02-03", patient="P02", ae="a", term="Rash", category="non-hematologic", grade=2,
        onset="2025-02-03"), "adverse event before infusion"),
    (ev("enrolled", "2025-02-03", patient="P01", dose=2), "duplicate enrolment"),
    (ev("enrolled", "2025-02-03", patient="P03", dose=3), "never screened eligible"),
    (ev("enrolled", "2025-02-03", patient="P02", dose=2, arm="B"), "arm: unknown field"),
    (ev("infused", "2025-02-31", patient="P02", date="2025-02-03"), "at: expected an ISO 8601"),
    (ev("infused", "2025-02-03", patient="P02", date="03.02.2025"), "date: expected an ISO 8601 date"),
]


@pytest.mark.parametrize(("event", "message"), BAD_EVENTS, ids=[m for _, m in BAD_EVENTS])
def test_bad_events_are_refused_and_the_store_is_unchanged(store: TrialStore, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           event: dict[str, Any], message: str) -> None:
    """The CLI refuses a bad event with exit 2 and one clear line; nothing in the file changes."""
    store.close()
    before = snapshot(Path(store.path))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    assert cli("record", store.path, path) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(Path(store.path)) == before


def test_enrolment_at_a_dose_not_permitted_is_refused_via_flags(store: TrialStore,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Flags build the same events as JSON files and meet the same checks."""
    store.close()
    assert cli("record", store.path, "--type", "screened", "--at", "2025-02-03", "--patient", "P03",
               "--eligible", "yes") == 0
    assert cli("record", store.path, "--type", "enrolled", "--at", "2025-02-04", "--patient", "P03",
               "--dose", "3") == 2
    assert "the current decision treats at dose 2" in capsys.readouterr().err


def test_a_batch_is_one_transaction(store: TrialStore) -> None:
    """If one event of a batch is refused, none of the batch is stored."""
    before = len(store.events())
    with pytest.raises(TrialError, match="new event 2"):
        store.record([ev("screened", "2025-02-03", patient="P03", eligible=True),
                      ev("enrolled", "2025-02-03T01:00Z", patient="P03", dose=3)])
    assert len(store.events()) == before


def test_export_replays_to_the_same_status_in_a_fresh_store(store: TrialStore, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Exported JSON lines imported into a fresh store give the same status; importing twice is refused."""
    store.close()
    out = tmp_path / "events.jsonl"
    assert cli("export", store.path, "-o", out) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(START) + 1  # a header, then the events
    fresh = tmp_path / "fresh.db"
    assert cli("init", "--spec", SPEC, fresh) == 0
    assert cli("import", fresh, out) == 0
    capsys.readouterr()
    statuses = []
    for db in (store.path, fresh):
        assert cli("status", db, "--as-of", "2025-03-01", "--json") == 0
        statuses.append(json.loads(capsys.readouterr().out))
    assert statuses[0] == statuses[1]
    assert cli("import", fresh, out) == 2
    assert "duplicate enrolment" in capsys.readouterr().err
    assert cli("verify", fresh) == 0


def test_status_log_and_text_output(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """`trial status` shows cohorts, who is pending until when, and the next step; `trial log` every event."""
    store.close()
    assert cli("status", store.path, "--as-of", "2025-02-03") == 0
    out = capsys.readouterr().out
    assert "history: 1N [escalate]" in out
    assert "next: enrol 2 patient(s) at dose 2 (cohort 2)" in out
    assert "P02 pending until more is recorded: enrolled, not yet infused" in out
    assert cli("log", store.path) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(START)
    assert cli("log", store.path, "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["seq"] == 1 and rows[1]["prev"] == rows[0]["hash"]


def test_cli_refuses_missing_stores_and_second_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Opening a missing store or creating one twice is refused in one line."""
    assert cli("status", tmp_path / "none.db") == 2
    assert "no such trial store" in capsys.readouterr().err
    assert cli("init", "--spec", SPEC, tmp_path / "a.db") == 0
    assert cli("init", "--spec", SPEC, tmp_path / "a.db") == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "junk.db").write_text("not sqlite", encoding="utf-8")
    assert cli("status", tmp_path / "junk.db") == 2
    assert "not a trial store" in capsys.readouterr().err


def test_builtin_design_with_a_separate_dlt_file(tmp_path: Path) -> None:
    """A built-in design takes its DLT definition from --dlt; without one, init is refused."""
    dlt = tmp_path / "dlt.toml"
    dlt.write_text(Path(SPEC, "dlt.toml").read_text(encoding="utf-8"), encoding="utf-8")
    assert cli("init", "--spec", "3+3-escalate-only", "--doses", "3", "--dlt", dlt, tmp_path / "a.db") == 0
    assert cli("init", "--spec", "3+3-escalate-only", "--doses", "3", tmp_path / "b.db") == 2


SCENARIO = [*START,
            ev("infused", "2025-02-03T10:00Z", patient="P02", date="2025-02-03"),
            ev("screened", "2025-02-03T11:00Z", patient="P03", eligible=True),
            ev("enrolled", "2025-02-03T12:00Z", patient="P03", dose=2),
            ev("infused", "2025-02-04T10:00Z", patient="P03", date="2025-02-04"),
            ev("ae_reported", "2025-02-05T10:00Z", patient="P02", ae="n1", term="Hepatic failure",
               category="non-hematologic", grade=4, onset="2025-02-05T09:00Z", attribution="possible"),
            ev("screened", "2025-02-05T11:00Z", patient="P04", eligible=True),
            ev("enrolled", "2025-02-05T12:00Z", patient="P04", dose=2),
            ev("not_evaluable", "2025-02-06T10:00Z", patient="P04", reason="withdrew before infusion"),
            ev("screened", "2025-02-07T11:00Z", patient="P05", eligible=True),
            ev("enrolled", "2025-02-07T12:00Z", patient="P05", dose=2),
            ev("infused", "2025-02-08T10:00Z", patient="P05", date="2025-02-08")]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, len(SCENARIO)), st.randoms(use_true_random=False), st.sampled_from(
    ["2025-02-06", "2025-03-04", "2025-03-20"]))
def test_store_status_equals_pure_status_and_replay_in_a_fresh_store(tmp_path_factory: pytest.TempPathFactory,
                                                                     k: int, rng: Any, as_of: str) -> None:
    """Invariant: store status == pure-function status == status after export and import into a fresh store."""
    events = SCENARIO[:k]
    shuffled = events[:]
    rng.shuffle(shuffled)
    folder = tmp_path_factory.mktemp("replay")
    with TrialStore.create(folder / "a.db", SPEC) as a:
        a.record(shuffled)
        expected = a.status(as_of).to_dict()
        lines = io.StringIO()
        a.export(lines)
    assert trial_status(load_protocol(SPEC), events, as_of).to_dict() == expected
    with TrialStore.create(folder / "b.db", SPEC) as b:
        b.import_lines(lines.getvalue().splitlines())
        assert b.status(as_of).to_dict() == expected
        assert b.verify().ok


def test_screen_flag_records_the_eligibility_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With eligibility screening installed, --screen records the screening outcome and its result as data."""
    pytest.importorskip("escalation_rules.eligibility")
    records = [Path("spec/patients/eligible.json"), Path("spec/patients/not-eligible.json")]
    if not all(p.is_file() for p in records):
        pytest.skip("example patient records are not shipped")
    db = tmp_path / "t.db"
    assert cli("init", "--spec", SPEC, db) == 0
    for record in records:
        assert cli("record", db, "--screen", record, "--at", "2026-03-02") == 0
    with TrialStore(db) as store:
        screened = [s.event for s in store.events()]
    assert [getattr(e, "eligible", None) for e in screened] == [True, False]
    assert all(getattr(e, "result", None) for e in screened)
    assert cli("record", db, "--screen", records[0], "--eligible", "yes") == 2
    assert "not both" in capsys.readouterr().err


def test_toml_dates_in_the_protocol_survive_the_store(tmp_path: Path) -> None:
    """Dates and times in protocol TOML come back from the store as the same values and types."""
    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    (spec / "meta.toml").write_text("[meta]\nissued = 2025-01-02\nat = 2025-01-02T03:04:05Z\nclock = 07:30:00\n",
                                    encoding="utf-8")
    TrialStore.create(tmp_path / "t.db", str(spec)).close()
    with TrialStore(tmp_path / "t.db") as store:
        meta = store.protocol.extra["meta"]
    from escalation_rules import load_protocol as load

    assert meta == load(spec).extra["meta"]
    assert [type(v).__name__ for v in meta.values()] == ["date", "datetime", "time"]
