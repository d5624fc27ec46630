"""Fixes from a new-user review of ``escalation-rules trial``: refusals, signatures, amendments, tampering, clocks."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules.cli import main
from escalation_rules.trial import store as store_module
from escalation_rules.trial.events import YEARS, TrialError, canonical_json, load_json, parse_event, parse_time
from escalation_rules.trial.store import CLOCK_SKEW, FORMAT_1, TrialStore, link_hash

SPEC = "spec/nct07117175"
CLOCK = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def ev(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **fields}


START = [ev("screened", "2025-03-01", patient="P1", eligible=True),
         ev("enrolled", "2025-03-02", patient="P1", dose=1),
         ev("infused", "2025-03-03", patient="P1", date="2025-03-03"),
         ev("ae_reported", "2025-03-05", patient="P1", ae="a1", term="Neutropenia", category="hematologic", grade=5,
            onset="2025-03-04", attribution="definite")]


def fixed_clock() -> datetime:
    return CLOCK


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TrialStore]:
    s = TrialStore.create(tmp_path / "t.db", SPEC, clock=fixed_clock)
    s.record(START)
    yield s
    s.close()


def cli(*args: Any) -> int:
    return main(["trial", *[str(a) for a in args]])


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def tamper(path: str, *statements: str) -> None:
    """Change the database behind the store's back."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


# ---------------------------------------------------------------- 1. one-line refusals


@pytest.mark.parametrize("command", ["record", "import"])
def test_a_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        command: str) -> None:
    """`trial record` and `trial import` refuse a file that is not UTF-8 with one line naming it, exit 2."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"type": "screened", "patient": "P\xe9"}')
    assert cli(command, db, bad) == 2
    assert f"{bad}: cannot read: not UTF-8 text" in one_line_error(capsys)


def test_a_dlt_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`trial init --dlt FILE` with a file that is not UTF-8 names the file, exit 2."""
    bad = tmp_path / "dlt.toml"
    bad.write_bytes(b'[dlt]\nx = "\xff"\n')
    assert cli("init", "--spec", "3+3-deescalate", "--dlt", bad, tmp_path / "t.db") == 2
    assert f"{bad}: cannot read: not UTF-8 text" in one_line_error(capsys)


@pytest.mark.parametrize(("text", "shown"), [("null", "null"), ("42", "42"), ("[]", "[]"), ('"x"', '"x"')])
def test_record_refuses_a_file_that_holds_no_event(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                   shown: str) -> None:
    """A record file holding null, a number, a string or an empty list is refused (exit 2), nothing stored."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    path = tmp_path / "ev.json"
    path.write_text(text, encoding="utf-8")
    assert cli("record", db, path) == 2
    err = one_line_error(capsys)
    assert "expected an event object or a non-empty list" in err and f"(got {shown})" in err
    with TrialStore(db) as s:
        assert s.events() == []


def test_record_refuses_non_objects_given_in_python(tmp_path: Path) -> None:
    """`TrialStore.record` refuses None or a number in place of an event with a TrialError, not AttributeError."""
    with TrialStore.create(tmp_path / "t.db", SPEC) as s:
        for value in (None, 42, [None]):
            with pytest.raises(TrialError, match="expected a JSON object"):
                s.record(value)  # type: ignore[arg-type]


def test_init_in_a_missing_folder_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`trial init` into a folder that does not exist exits 2 naming the folder, no traceback."""
    target = tmp_path / "nonexist" / "dir" / "x.db"
    assert cli("init", "--spec", SPEC, target) == 2
    assert "cannot create the store: no such directory" in one_line_error(capsys)
    assert not target.parent.exists()


def test_init_under_a_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`trial init` at a path whose parent is a file, not a folder, exits 2 with one line."""
    parent = tmp_path / "a-file"
    parent.write_text("x", encoding="utf-8")
    assert cli("init", "--spec", SPEC, parent / "x.db") == 2
    assert "cannot create the store: no such directory" in one_line_error(capsys)


@pytest.mark.parametrize(("field", "value"), [
    ("date", "9999-12-22"), ("at", "9999-12-31T23:59:59+14:00"), ("at", "0001-01-01T00:00:00+05:00"),
    ("at", "1899-12-31T23:59:59Z"), ("at", "3000-01-01")])
def test_dates_outside_the_supported_years_are_refused_naming_the_field(field: str, value: str) -> None:
    """A date or moment outside the years 1900-2999 is refused with the field's name, never an OverflowError."""
    data = ev("infused", "2025-03-03", patient="P1", date="2025-03-03")
    data[field] = value
    with pytest.raises(TrialError, match=re.escape(f"{field}: expected a year from 1900 to 2999 (got '{value}')")):
        parse_event(data)


def test_an_infusion_dated_near_the_limit_is_refused_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Recording an infusion dated 9999-12-22 exits 2 naming `date` (it used to overflow the DLT window)."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC, clock=fixed_clock).record(START[:2])
    assert cli("record", db, "--type", "infused", "--patient", "P1", "--date", "9999-12-22", "--at", "2025-03-03") == 2
    assert "date: expected a year from 1900 to 2999" in one_line_error(capsys)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(YEARS[0], 1, 1), max_value=datetime(YEARS[1], 12, 31, 23, 59, 59)),
       st.integers(min_value=-14 * 60, max_value=14 * 60), st.integers(min_value=0, max_value=3650))
def test_every_accepted_moment_survives_window_arithmetic(moment: datetime, offset: int, days: int) -> None:
    """Invariant: any moment parse_time accepts, in any offset, plus or minus ten years of days does not overflow."""
    sign = "+" if offset >= 0 else "-"
    text = f"{moment.replace(microsecond=0).isoformat()}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    parsed = parse_time(text, "at")
    assert parsed + timedelta(days=days) >= parsed - timedelta(days=days)
    assert (parsed + timedelta(days=days)).astimezone(UTC).year <= YEARS[1] + 11


@pytest.mark.parametrize("command", ["record", "import"])
def test_json_nested_too_deeply_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       command: str) -> None:
    """A file of 100,000 nested `[` is refused as too deeply nested (exit 2), not a RecursionError."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    assert cli(command, db, deep) == 2
    assert "not valid JSON: too deeply nested" in one_line_error(capsys)


def test_the_cli_refuses_bad_input_in_a_real_process(tmp_path: Path) -> None:
    """Run as a real process, a non-UTF-8 event file gives exit 2 and one line on stderr, no traceback."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe\x00")
    run = subprocess.run([str(Path(sys.executable).parent / "escalation-rules"), "trial", "record", str(db), str(bad)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "not UTF-8 text" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------- 2. signatures


def test_one_person_cannot_sign_terminate_and_an_option_at_one_decision_point(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """After a first-patient DLT, signing `terminate` then `treat` in the same role is refused (the doc's rule)."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC, clock=fixed_clock).record(START)
    sign = ["record", db, "--type", "decision_signed", "--role", "investigator", "--person", "A"]
    assert cli(*sign, "--option", "terminate", "--at", "2025-03-09") == 0
    capsys.readouterr()
    assert cli(*sign, "--option", "treat", "--at", "2025-03-10") == 2
    assert "investigator already signed at this decision point ('terminate' by A)" in one_line_error(capsys)
    with TrialStore(db) as s:
        assert len(s.events()) == len(START) + 1


def test_signatures_for_different_options_at_one_decision_point_are_refused(store: TrialStore) -> None:
    """Once the investigator signed `terminate` at a decision point, the sponsor cannot sign `treat` there."""
    store.record(ev("decision_signed", "2025-03-09", option="terminate", role="investigator", person="A"))
    with pytest.raises(TrialError, match="investigator signed 'terminate' at this decision point; all signatures "
                                         "must be for the same option"):
        store.record(ev("decision_signed", "2025-03-10", option="treat", role="sponsor", person="B"))
    store.record(ev("decision_signed", "2025-03-10", option="terminate", role="sponsor", person="B"))
    assert store.status().next.action == "stop"


def test_an_option_signed_first_blocks_terminate_at_that_point(store: TrialStore) -> None:
    """The other order: `treat` signed first, then `terminate` by the same role at that point is refused."""
    store.record(ev("decision_signed", "2025-03-09", option="treat", role="investigator", person="A"))
    with pytest.raises(TrialError, match=re.escape("investigator already signed at this decision point "
                                                   "('treat' by A)")):
        store.record(ev("decision_signed", "2025-03-10", option="terminate", role="investigator", person="A"))
    with pytest.raises(TrialError, match="all signatures must be for the same option"):
        store.record(ev("decision_signed", "2025-03-10", option="terminate", role="sponsor", person="B"))


# ---------------------------------------------------------------- 3. amendments


def amend(at: str = "2025-03-11", level: int = 2, **dose: Any) -> dict[str, Any]:
    return ev("protocol_amended", at, reference="A1", change="change-dose", level=level, dose=dose)


@pytest.mark.parametrize(("dose", "message"), [
    ({"amount": -5}, "dose.amount: expected a finite positive number"),
    ({"amount": 0}, "dose.amount: expected a finite positive number"),
    ({"amount": math.nan}, "dose.amount: expected a finite positive number"),
    ({"amount": math.inf}, "dose.amount: expected a finite positive number"),
    ({"amount": "2e7"}, "dose.amount: expected a finite positive number"),
    ({"amount": True}, "dose.amount: expected a finite positive number"),
    ({"amount": 1e9, "unit": "CAR-NK cells/kg"},
     re.escape("dose.amount: the ladder goes lowest first: expected less than 5e+07 CAR-NK cells/kg (dose 3)")),
    ({"amount": 5e6},
     re.escape("dose.amount: the ladder goes lowest first: expected more than 1e+07 CAR-NK cells/kg (dose 1)")),
    ({"amount": 3e7, "unit": "mg"}, "dose.unit: expected the ladder's unit 'CAR-NK cells/kg' \\(got 'mg'\\)"),
    ({"unit": ""}, "dose.unit: expected a non-empty string"),
    ({"provisional": "yes"}, "dose.provisional: expected true or false"),
])
def test_impossible_amended_doses_are_refused(store: TrialStore, dose: dict[str, Any], message: str) -> None:
    """An amendment with a non-finite, non-positive, out-of-order or wrong-unit dose is refused, nothing stored."""
    with pytest.raises(TrialError, match=message):
        store.record(amend(**dose))
    assert len(store.events()) == len(START)


def test_a_sensible_amended_dose_is_kept(store: TrialStore) -> None:
    """An amount between its neighbours in the ladder's unit is accepted and shows in the status."""
    store.record(amend(amount=3e7, unit="CAR-NK cells/kg"))
    assert store.status().amendments == ("A1: change-dose",)


@pytest.mark.parametrize("amount", ["1e9", "-5", "nan", "inf"])
def test_the_cli_refuses_impossible_amounts(store: TrialStore, capsys: pytest.CaptureFixture[str],
                                            amount: str) -> None:
    """`--amount 1e9`, `-5`, `nan`, `inf` with the ladder's unit are refused on the command line (exit 2)."""
    assert cli("record", store.path, "--type", "protocol_amended", "--reference", "A1", "--change", "change-dose",
               "--level", 2, "--amount", amount, "--unit", "CAR-NK cells/kg", "--at", "2025-03-11") == 2
    assert "dose.amount" in one_line_error(capsys)


def test_nan_in_a_json_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON text with NaN or Infinity (which Python's json would accept) is refused when read."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    path = tmp_path / "ev.json"
    path.write_text('{"type": "screened", "at": "2025-01-01", "patient": "P1", "eligible": true, '
                    '"result": {"score": NaN}}', encoding="utf-8")
    assert cli("record", db, path) == 2
    assert "NaN is not a number JSON allows" in one_line_error(capsys)
    with pytest.raises(TrialError, match="-Infinity is not a number"):
        load_json("[-Infinity]", "x")


def test_export_is_strict_json(store: TrialStore, tmp_path: Path) -> None:
    """Every exported line parses as strict JSON (no NaN or Infinity), and equals the stored canonical body."""
    store.record(amend(amount=3e7))
    out = tmp_path / "out.jsonl"
    assert cli("export", store.path, "-o", out) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(START) + 2  # the header (the store's protocol), then the events
    assert load_json(lines[0], "export")["type"] == "trial_store"
    for line, stored in zip(lines[1:], store.events(), strict=True):
        assert line == canonical_json(stored.event)


def test_export_refuses_rather_than_writes_nan(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """A stored body holding NaN (only possible behind the store's back) makes export refuse, never print NaN."""
    store.close()
    tamper(store.path, "DROP TRIGGER events_append_only_update",
           "UPDATE events SET body = replace(body, '\"grade\":5', '\"grade\":NaN') WHERE seq = 4")
    assert cli("export", store.path) == 2
    captured = capsys.readouterr()
    assert "NaN" not in captured.out and "event 4: not strict JSON" in captured.err


# ---------------------------------------------------------------- 4. tampered stores


@pytest.mark.parametrize(("statements", "message", "first"), [
    (["UPDATE meta SET value = '{\"seq\": 3, \"hash\": \"x\"}' WHERE key = 'head'"],
     "head: the head record names event 3 but the chain runs to event 4", None),
    (["DELETE FROM meta WHERE key = 'head'"], "head: the head record is missing", None),
    (["UPDATE meta SET value = 'not json' WHERE key = 'head'"], "head: the head record cannot be read", None),
    (["UPDATE meta SET value = '[4]' WHERE key = 'head'"], "head: the head record cannot be read", None),
    (["UPDATE meta SET value = replace(value, '\"hash\": \"', '\"hash\": \"0') WHERE key = 'head'"],
     "head: the head record's hash does not match event 4", None),
    (["UPDATE meta SET value = '{}' WHERE key = 'protocol'"], "protocol: the stored protocol does not match", None),
    (["UPDATE meta SET value = '2020-01-01T00:00:00Z' WHERE key = 'created_at'"],
     "meta: the store's metadata (format, creation time, protocol) does not match", None),
    (["INSERT INTO meta (key, value) VALUES ('extra', 'x')"], "meta: unexpected entry 'extra'", None),
])
def test_tampered_metadata_and_head_fail_verify_with_a_true_message(
        store: TrialStore, capsys: pytest.CaptureFixture[str], statements: list[str], message: str,
        first: int | None) -> None:
    """A changed head record, protocol or other metadata fails `trial verify` (exit 1) with a message naming it."""
    store.close()
    tamper(store.path, *statements)
    assert cli("verify", store.path) == 1
    err = capsys.readouterr().err
    assert message in err, err
    assert "event 5" not in err and "None" not in err
    with TrialStore(store.path) as reopened:
        assert reopened.verify().first_broken == first


def test_a_protocol_replaced_with_its_hash_is_detected(store: TrialStore, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol replaced by `{}` with a matching protocol_hash is still caught: unreadable, and off the chain."""
    import hashlib

    store.close()
    tamper(store.path, "UPDATE meta SET value = '{}' WHERE key = 'protocol'",
           f"UPDATE meta SET value = '{hashlib.sha256(b'{}').hexdigest()}' WHERE key = 'protocol_hash'")
    assert cli("verify", store.path) == 1
    err = capsys.readouterr().err
    assert "protocol: the stored protocol cannot be read" in err
    assert cli("status", store.path) == 1
    assert "fails verification" in one_line_error(capsys)


def test_tampered_metadata_of_an_empty_store_is_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no events yet, a changed creation time is caught through the head's hash."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    tamper(str(db), "UPDATE meta SET value = '2020-01-01T00:00:00Z' WHERE key = 'created_at'")
    assert cli("verify", db) == 1
    assert "head: the head record's hash does not match the store's metadata" in capsys.readouterr().err


@pytest.mark.parametrize(("statements", "first"), [
    (["DROP TRIGGER events_append_only_update",
      "UPDATE events SET body = replace(body, '\"grade\":5', '\"grade\":2') WHERE seq = 4"], "event 4: broken link"),
    (["UPDATE meta SET value = '2020-01-01T00:00:00Z' WHERE key = 'created_at'"], "meta: the store's metadata"),
    (["DELETE FROM meta WHERE key = 'head'"], "head: the head record is missing"),
])
def test_status_refuses_a_store_that_fails_verification(store: TrialStore, capsys: pytest.CaptureFixture[str],
                                                        statements: list[str], first: str) -> None:
    """`trial status` on a tampered store exits 1 naming the first broken link, and prints no status."""
    store.close()
    tamper(store.path, *statements)
    assert cli("status", store.path, "--as-of", "2025-03-08") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the store fails verification, so no status is given: " + first in one_line_error_text(captured.err)


def one_line_error_text(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_format_1_store_is_still_read_and_verified(tmp_path: Path) -> None:
    """A store written by the first format (chain starting at the protocol's hash) opens, records and verifies."""
    db = tmp_path / "t.db"
    TrialStore.create(db, SPEC).close()
    conn = sqlite3.connect(db, isolation_level=None)
    digest = conn.execute("SELECT value FROM meta WHERE key = 'protocol_hash'").fetchone()[0]
    conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT_1,))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (json.dumps({"seq": 0, "hash": digest}),))
    conn.close()
    with TrialStore(db, clock=fixed_clock) as s:
        s.record(START[:2])
        assert s.verify().ok
        first = s.events()[0]
        assert first.prev == digest
        assert first.hash == link_hash(digest, 1, first.recorded_at, json.dumps(
            json.loads(sqlite3.connect(db).execute("SELECT body FROM events WHERE seq = 1").fetchone()[0]),
            sort_keys=True, separators=(",", ":")))


# ---------------------------------------------------------------- 5. the clock


def test_events_more_than_a_day_ahead_of_the_clock_are_refused(tmp_path: Path) -> None:
    """With the clock injected, an event at clock + 1 day is accepted and one a second later is refused."""
    with TrialStore.create(tmp_path / "t.db", SPEC, clock=fixed_clock) as s:
        edge = CLOCK + CLOCK_SKEW
        s.record(ev("screened", edge.isoformat(), patient="P1", eligible=True))
        late = (edge + timedelta(seconds=1)).isoformat()
        with pytest.raises(TrialError, match=r"at: 2025-06-02T12:00:01Z is in the future \(the clock reads "
                                             r"2025-06-01T12:00:00Z"):
            s.record(ev("screened", late, patient="P2", eligible=True))
        assert [e.seq for e in s.events()] == [1]
        assert s.events()[0].recorded_at == "2025-06-01T12:00:00Z"
        assert s.status().as_of == edge


def test_the_cli_refuses_a_future_event_and_status_stays_in_the_present(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`trial record --at` a future date exits 2; `trial status` then reports as of the (injected) clock."""
    monkeypatch.setattr(store_module, "_utc_now", fixed_clock)
    db = tmp_path / "t.db"
    assert cli("init", "--spec", SPEC, db) == 0
    assert cli("record", db, "--type", "screened", "--patient", "P1", "--eligible", "yes", "--at", "2031-01-01") == 2
    assert "is in the future" in one_line_error(capsys)
    assert cli("record", db, "--type", "screened", "--patient", "P1", "--eligible", "yes") == 0
    assert cli("status", db, "--json") == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["as_of"] == "2025-06-01T12:00:00Z"
