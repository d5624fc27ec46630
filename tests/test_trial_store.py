"""The SQLite trial store and the ``trial`` CLI: chain verification, refusals, export and replay."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.cli import main
from escalation_rules.trial.events import TrialError, canonical_json
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


def test_an_undetermined_screening_is_stored_as_undetermined(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `--screen` of a record missing an item stores eligible null (not false) with what it needs.

    Enrolment is then refused saying the screening was undetermined and what to do; a new screening with the
    missing data lets the patient in.
    """
    pytest.importorskip("escalation_rules.eligibility")
    db = tmp_path / "t.db"
    assert cli("init", "--spec", SPEC, db) == 0
    assert cli("record", db, "--screen", "spec/patients/undetermined.json", "--patient", "P01",
               "--at", "2026-03-02T09:00Z") == 0
    with TrialStore(db) as store:
        (stored,) = store.events()
    assert stored.event.eligible is None and any(r.startswith("needs ") for r in stored.event.reasons)
    assert '"eligible":null' in canonical_json(stored.event)
    capsys.readouterr()
    assert cli("record", db, "--type", "enrolled", "--patient", "P01", "--dose", "1", "--at", "2026-03-02T10:00Z") == 2
    err = capsys.readouterr().err
    assert "screening on 2026-03-02T09:00:00Z was undetermined (needs " in err and "new screening" in err
    assert cli("record", db, "--type", "screened", "--patient", "P01", "--eligible", "yes",
               "--at", "2026-03-03T09:00Z") == 0
    assert cli("record", db, "--type", "enrolled", "--patient", "P01", "--dose", "1", "--at", "2026-03-03T10:00Z") == 0
    assert cli("record", db, "--type", "screened", "--patient", "P02", "--eligible", "undetermined",
               "--at", "2026-03-03T11:00Z") == 0
    assert cli("verify", db) == 0


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


# ---------------------------------------------------------------- signed stores: tampering that needs no secret


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str, Any]:
    """A signed store holding START (closed), its private key file, and the receipt of the last append."""
    from escalation_rules.trial.keys import generate_key

    key = str(tmp_path / "trial.key")
    generate_key(key)
    path = tmp_path / "signed.db"
    with TrialStore.create(path, SPEC, key=key) as s:
        s.record(START[:6])
        receipt = s.record(START[6:])
    return path, key, receipt


def rechain(path: Path, *statements: str, head: dict[str, Any] | None = None) -> None:
    """Tamper as a forger without the key would: run the statements, then recompute every hash and the head."""
    from escalation_rules.trial.store import link_hash, meta_hash

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("DROP TRIGGER events_append_only_delete")
    for statement in statements:
        conn.execute(statement)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    if "protocol" in meta:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'protocol_hash'",
                     (hashlib.sha256(meta["protocol"].encode()).hexdigest(),))
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    prev = meta_hash(meta)
    seq = 0
    for seq, recorded, body in list(conn.execute("SELECT seq, recorded_at, body FROM events ORDER BY seq")):
        digest = link_hash(prev, seq, recorded, body)
        conn.execute("UPDATE events SET prev = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest
    old = json.loads(meta["head"])
    new_head = head if head is not None else {**old, "seq": seq, "hash": prev}
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (json.dumps(new_head),))
    for sql in _TRIGGERS.values():
        conn.execute(sql)
    conn.close()


def raw_sql(path: str | Path, statement: str) -> None:
    """One statement on the file, as anyone with write access could run it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(statement)
    conn.close()


def verify_cli(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    status = cli("verify", path, *args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out + captured.err


def test_a_signed_store_verifies_with_its_key_and_receipt(signed: tuple[Path, str, Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The private or the public key verifies a signed store; the receipt's head is found; the JSON says signed."""
    path, key, receipt = signed
    assert receipt.seq == len(START) and receipt.signature
    for k in (key, key + ".pub"):
        status, out = verify_cli(capsys, path, "--key", k, "--expect-head", receipt.head)
        assert status == 0 and "signature valid" in out
    assert cli("verify", path, "--key", key + ".pub", "--json") == 0
    assert json.loads(capsys.readouterr().out)["signed"] is True
    status, out = verify_cli(capsys, path)
    assert status == 0 and "signature was not checked" in out


def test_recording_in_a_signed_store_needs_its_private_key(signed: tuple[Path, str, Any], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """No key, the public key or another key: refused with one line; the private key records and prints a receipt."""
    from escalation_rules.trial.keys import generate_key

    path, key, _ = signed
    other = str(tmp_path / "other.key")
    generate_key(other)
    args = ["record", path, "--type", "screened", "--patient", "P77", "--eligible", "no", "--at", "2025-03-01"]
    for extra, message in (([], "give its private key"), (["--key", key + ".pub"], "public key cannot sign"),
                           (["--key", other], "not the store's key")):
        assert cli(*args, *extra) == 2
        assert message in capsys.readouterr().err
    assert cli(*args, "--key", key, "--json") == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["seq"] == len(START) + 1 and receipt["head"] == f"{receipt['seq']}:{receipt['hash']}"
    status, _ = verify_cli(capsys, path, "--key", key, "--expect-head", receipt["head"])
    assert status == 0


@pytest.mark.parametrize(("case", "message"), [
    ("truncated, head copied", "signature of event 6's head does not verify"),
    ("forged event appended", "does not verify"),
    ("chain rewritten", "does not verify"),
    ("protocol swapped", "does not verify"),
    ("downgraded to format 2", "a signed store never goes back to an unsigned format"),
])
def test_tampering_without_the_key_is_detected(signed: tuple[Path, str, Any], capsys: pytest.CaptureFixture[str],
                                               case: str, message: str) -> None:
    """Regression (issue 13): tamperings that recompute every hash pass an unsigned check but fail the signature."""
    from escalation_rules.trial.store import FORMAT_2, link_hash

    path, key, _ = signed
    conn = sqlite3.connect(path)
    rows = list(conn.execute("SELECT seq, recorded_at, body, prev, hash FROM events ORDER BY seq"))
    conn.close()
    if case == "truncated, head copied":
        rechain(path, "DELETE FROM events WHERE seq > 6", head={"seq": 6, "hash": rows[5][4]})
    elif case == "forged event appended":
        body = json.dumps({"at": "2025-02-03T00:00:00Z", "eligible": True, "patient": "P66", "type": "screened"},
                          separators=(",", ":"), sort_keys=True)
        digest = link_hash(rows[-1][4], 9, "2025-02-03T00:00:00Z", body)
        rechain(path, f"INSERT INTO events VALUES (9, '2025-02-03T00:00:00Z', '{body}', '{rows[-1][4]}', "
                      f"'{digest}')")
    elif case == "chain rewritten":
        rechain(path, "UPDATE events SET body = replace(body, 'Dr A', 'Dr Z') WHERE seq = 5")
    elif case == "protocol swapped":
        rechain(path, "UPDATE meta SET value = replace(value, '\"cap\":18', '\"cap\":30') WHERE key = 'protocol'")
    else:
        rechain(path, f"UPDATE meta SET value = '{FORMAT_2}' WHERE key = 'format'",
                "DELETE FROM meta WHERE key = 'key'")
    status, out = verify_cli(capsys, path)  # without the key, only the store's own consistency is checked
    assert status == 0
    status, out = verify_cli(capsys, path, "--key", key + ".pub")
    assert status == 1 and message in out
    assert cli("verify", path, "--key", key + ".pub", "--json") == 1
    assert json.loads(capsys.readouterr().out)["signed"] is False
    assert cli("status", path, "--key", key + ".pub") == 1
    assert "fails verification" in capsys.readouterr().err
    assert cli("record", path, "--key", key, "--type", "screened", "--patient", "P77", "--eligible", "no",
               "--at", "2025-03-01") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_truncation_back_to_an_older_signed_head_is_caught_by_the_receipt(
        signed: tuple[Path, str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A forger holding an old copy of the file can restore it (a valid signature); the receipt kept since says so."""
    path, key, receipt = signed
    old = tmp_path / "old.db"
    with TrialStore(path, key=key) as s:
        early = s.events()[5]
    shutil.copy(path, old)
    with TrialStore(path, key=key) as s:
        newer = s.record(ev("screened", "2025-03-01", patient="P77", eligible=False))
    shutil.copy(old, path)  # rolled back to the copy: every signature valid, the latest event gone
    status, _ = verify_cli(capsys, path, "--key", key)
    assert status == 0
    status, out = verify_cli(capsys, path, "--key", key, "--expect-head", newer.head)
    assert status == 1 and f"receipt: event {newer.seq} is missing" in out
    assert verify_cli(capsys, path, "--key", key, "--expect-head", receipt.hash)[0] == 0
    assert verify_cli(capsys, path, "--expect-head", f"6:{early.hash}")[0] == 0
    assert verify_cli(capsys, path, "--expect-head", "6:" + "0" * 64)[0] == 1
    assert cli("verify", path, "--expect-head", "6:xyz") == 2


def test_dropped_triggers_are_reported_and_block_appends(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 13): dropping the append-only triggers is itself detected (no key needed)."""
    store.close()
    raw_sql(store.path, "DROP TRIGGER events_append_only_update")
    status, out = verify_cli(capsys, Path(store.path))
    assert status == 1 and "append-only trigger events_append_only_update is missing" in out
    with TrialStore(store.path) as reopened, pytest.raises(TrialError, match="trigger"):
        reopened.record(ev("screened", "2025-03-01", patient="P77", eligible=True))


def test_a_key_on_an_unsigned_store_is_refused(store: TrialStore, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An unsigned store cannot take a key (no silent upgrade); verify with a key says the store is unsigned."""
    from escalation_rules.trial.keys import generate_key

    store.close()
    key = str(tmp_path / "k")
    generate_key(key)
    assert cli("record", store.path, "--key", key, "--type", "screened", "--patient", "P9", "--eligible", "no",
               "--at", "2025-03-01") == 2
    assert "a key cannot be added" in capsys.readouterr().err
    status, out = verify_cli(capsys, Path(store.path), "--key", key)
    assert status == 1 and "unsigned" in out


# ---------------------------------------------------------------- damage is reported, never a traceback


def test_a_body_that_is_not_utf8_is_reported(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 13): a stored body with bytes that are not UTF-8, hash recomputed over them, is reported."""
    from escalation_rules.trial.store import link_hash

    store.close()
    conn = sqlite3.connect(store.path)
    seq, recorded, body, prev, _ = conn.execute("SELECT * FROM events WHERE seq = 8").fetchone()
    conn.close()
    raw = body.encode().replace(b"P02", b"P\xff2")
    digest = link_hash(prev, seq, recorded, raw.decode("utf-8", "surrogateescape"))
    tamper(Path(store.path), f"UPDATE events SET body = CAST(X'{raw.hex()}' AS TEXT), hash = '{digest}' WHERE seq = 8",
           f"UPDATE meta SET value = '{{\"seq\": 8, \"hash\": \"{digest}\"}}' WHERE key = 'head'")
    status, out = verify_cli(capsys, Path(store.path))
    assert status == 1 and "event 8: holds bytes that are not UTF-8" in out
    for command in ("status", "log", "export"):
        assert cli(command, store.path) in (1, 2)
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_dropped_events_table_is_reported(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 13): a dropped events table: verify reports it (exit 1), other commands refuse in one line."""
    store.close()
    raw_sql(store.path, "DROP TABLE events")
    status, out = verify_cli(capsys, Path(store.path))
    assert status == 1 and "events table cannot be read" in out
    assert cli("status", store.path) == 1
    assert "events table cannot be read" in capsys.readouterr().err
    for command in ("log", "export"):
        assert cli(command, store.path) == 2
        err = capsys.readouterr().err
        assert "events table cannot be read" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- read-only stores


def test_read_only_store_through_an_immutable_uri(store: TrialStore, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A store whose file and folder cannot be written (as the store sees it) is verified, shown, logged, exported.

    The store opens it with ``mode=ro&immutable=1``: the file is not changed and no lock files appear; recording
    is refused with one line.  (The chmod test below covers a real read-only file when not running as root.)
    """
    from escalation_rules.trial import store as store_module

    store.close()
    folder = Path(store.path).parent
    with sqlite3.connect(store.path) as conn:  # fold the WAL into the file, as an archived copy would be
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(store.path + suffix).unlink(missing_ok=True)
    before = Path(store.path).read_bytes()
    monkeypatch.setattr(store_module.os, "access", lambda *_: False)
    for command in (["verify"], ["status", "--as-of", "2025-03-01"], ["log"], ["export"]):
        assert cli(command[0], store.path, *command[1:]) == 0
    capsys.readouterr()
    assert Path(store.path).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("t.db")) == ["t.db"]
    with TrialStore(store.path, readonly=True) as ro, pytest.raises(TrialError, match="read-only"):
        ro.record(ev("screened", "2025-03-01", patient="P77", eligible=True))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the immutable-URI test covers this")
def test_read_only_file_and_folder(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """verify, status, log and export work on a store in a read-only folder (an archive, a read-only mount)."""
    store.close()
    folder = Path(store.path).parent
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(store.path + suffix).unlink(missing_ok=True)
    os.chmod(store.path, 0o444)
    os.chmod(folder, 0o555)
    try:
        for command in (["verify"], ["status", "--as-of", "2025-03-01"], ["log"], ["export"]):
            assert cli(command[0], store.path, *command[1:]) == 0, capsys.readouterr().err
    finally:
        os.chmod(folder, 0o755)
        os.chmod(store.path, 0o644)


def test_import_creates_the_store_from_an_export(store: TrialStore, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 12: `trial export DB > events.jsonl && trial import other.db events.jsonl` works as the README says.

    The export's first line carries the protocol; import into a missing store creates it (signed with --key); an
    export without that line, or one from another protocol, is refused and no file is left behind.
    """
    store.close()
    out = tmp_path / "events.jsonl"
    assert cli("export", store.path, "-o", out) == 0
    other = tmp_path / "other.db"
    assert cli("import", other, out) == 0
    assert capsys.readouterr().out.startswith(f"created {other}; imported {len(START)} events")
    assert cli("verify", other) == 0
    bare = tmp_path / "bare.jsonl"
    assert cli("export", store.path, "--events-only", "-o", bare) == 0
    assert cli("import", tmp_path / "none.db", bare) == 2
    assert "no export header" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    header = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    header["protocol"]["data"]["cap"] = 30
    lines = out.read_text(encoding="utf-8").splitlines()
    (tmp_path / "cap30.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8")
    assert cli("import", other, tmp_path / "cap30.jsonl") == 2
    assert "another protocol" in capsys.readouterr().err
    lines[2] = lines[2].replace('"dose":1', '"dose":3')  # an event the protocol refuses: nothing is left behind
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert cli("import", tmp_path / "new.db", tmp_path / "bad.jsonl") == 2
    capsys.readouterr()
    assert not any(p.name.startswith("new.db") for p in tmp_path.iterdir())


# ---------------------------------------------------------------- amendments: limits, and no lock while checking


def test_an_amendment_past_the_limits_is_refused(store: TrialStore) -> None:
    """Regression (issue 13): `change-cap 100000` is refused at once (it used to hang holding the write lock)."""
    with pytest.raises(TrialError, match="cap: at most 1,000"):
        store.record(ev("protocol_amended", "2025-03-01", reference="A9", change="change-cap", cap=100_000))
    assert store.verify().ok and len(store.events()) == len(START)


def test_a_long_amendment_check_holds_no_lock(store: TrialStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 13): while one writer checks an amendment, another appends (it used to wait 31 s, then fail).

    The amended protocol's build checks are held until the second writer has committed: if the first held the
    write lock meanwhile, the second (2 s timeout) would fail.  The first then checks again against the second's
    event and commits after it.
    """
    from escalation_rules.trial import status as status_module

    real = status_module.explore_merged
    entered, second_done = threading.Event(), threading.Event()

    def slow(protocol: Any) -> Any:
        if protocol.cap == 30:
            entered.set()
            assert second_done.wait(30)
        return real(protocol)

    monkeypatch.setattr(status_module, "explore_merged", slow)
    store.close()
    result: dict[str, Any] = {}

    def amend() -> None:
        with TrialStore(store.path, timeout=60) as first:
            result["receipt"] = first.record(ev("protocol_amended", "2025-03-01", reference="A2",
                                                change="change-cap", cap=30))

    thread = threading.Thread(target=amend)
    thread.start()
    try:
        assert entered.wait(30)
        with TrialStore(store.path, timeout=2) as second:
            assert second.record(ev("screened", "2025-03-01T01:00Z", patient="P50", eligible=False)).seq == 9
    finally:
        second_done.set()
        thread.join(60)
    assert result["receipt"].seq == 10
    with TrialStore(store.path) as reopened:
        assert reopened.verify().ok and reopened.status("2025-03-02").cap == 30


def test_a_stored_protocol_past_the_limits_is_reported_not_built(store: TrialStore,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 13): cap 10^18 swapped in with a recomputed chain made verify and status hang.

    The limits are checked where the stored protocol is read: verify reports it (exit 1), status refuses.
    """
    store.close()
    rechain(Path(store.path), "UPDATE meta SET value = replace(value, '\"cap\":18', '\"cap\":1000000000000000000') "
                              "WHERE key = 'protocol'")
    status, out = verify_cli(capsys, Path(store.path))
    # the protocol loader's documented limit refuses it before the store's own check could
    assert status == 1 and "protocol.cap: expected at most 1000, the documented limit" in out
    assert cli("status", store.path) == 1
    assert "protocol.cap: expected at most 1000, the documented limit" in capsys.readouterr().err
