"""``escalation-rules trial ...``: the trial record on the command line, thin over :mod:`.store`.

Subcommands: ``keygen FILE``, ``init --spec SPEC [--key KEY] DB``,
``record DB [EVENT.json | --type ...] [--key KEY]``, ``status DB``, ``log DB``,
``verify DB [--key KEY] [--expect-head SEQ:HASH]``, ``export DB``,
``import DB FILE [--key KEY]``.  ``status``, ``log``, ``verify`` and
``export`` open the store read-only.
Exit status as everywhere: 0 success, 1 a check failed (``verify``), 2 the
input was refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .events import TrialError, event_to_dict, format_time, load_json, parse_time
from .store import Receipt, TrialStore, machine_now, read_export_header

__all__ = ["register"]

_FLAG_FIELDS: tuple[tuple[str, Any, str], ...] = (
    ("at", str, "when it happened (ISO 8601 date or date-time; default: now)"),
    ("patient", str, "patient id"),
    ("dose", int, "dose level (1-based)"),
    ("cohort", int, "cohort number (1-based)"),
    ("date", str, "infusion date; for ae_updated the moment a new grade took effect"),
    ("ae", str, "adverse-event episode id (unique per patient)"),
    ("term", str, "adverse-event term (e.g. CTCAE term)"),
    ("category", str, "adverse-event category declared by the DLT definition (e.g. crs, icans)"),
    ("grade", int, "CTCAE (or ASTCT) grade 1-5"),
    ("onset", str, "adverse-event onset (date or date-time)"),
    ("resolved", str, "adverse-event resolution (date or date-time)"),
    ("attribution", str, "unrelated, unlikely, possible, probable or definite"),
    ("option", str, "option signed (an option id, treat, stop or terminate)"),
    ("role", str, "role of the person signing or adjudicating"),
    ("person", str, "the person signing or adjudicating"),
    ("person_id", str, "a stable id of that person (e.g. the user id of the host system); compared before names"),
    ("rule", str, "rule of the decision signed (checked)"),
    ("reason", str, "why a patient is not evaluable"),
    ("reference", str, "protocol amendment reference"),
    ("change", str, "amendment: add-dose, change-dose, remove-dose or change-cap"),
    ("level", int, "amendment: dose level changed or removed"),
    ("cap", int, "amendment: new enrolment cap"),
    ("stage", str, "amendment: stage governing an added dose"),
    ("note", str, "free text"),
)


def _store(args: argparse.Namespace, readonly: bool = False) -> TrialStore:
    return TrialStore(args.db, key=getattr(args, "key", None), readonly=readonly)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .keys import generate_key

    key = generate_key(args.file)
    print(f"wrote private key {args.file} (keep it outside the store, readable by its owner only) and public key "
          f"{args.file}.pub; key id {key.id}")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    store = TrialStore.create(args.db, args.spec, args.doses, args.dlt, key=args.key)
    with store:
        signed = f", signed with key {store.key.id[:16]}..." if store.key is not None else ""
        print(f"created {args.db} for {store.protocol.id} ({store.protocol.source}){signed}")
    return 0


def _print_receipt(receipt: Receipt, as_json: bool) -> None:
    if as_json:
        print(json.dumps(receipt.to_dict()))
    else:
        print(f"receipt: {receipt.head}" + (" (signed)" if receipt.signature else ""))


def _read_text(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise TrialError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise TrialError(f"{path}: cannot read: not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                         f"{err.start})") from None


def _flag_event(args: argparse.Namespace) -> dict[str, Any]:
    event: dict[str, Any] = {"type": args.type}
    for name, _, _ in _FLAG_FIELDS:
        value = getattr(args, f"f_{name}")
        if value is not None:
            event[name] = value
    for name in ("eligible", "dlt"):
        value = getattr(args, f"f_{name}")
        if value is not None:
            event[name] = None if value == "undetermined" else value == "yes"
    if args.f_dose_id or args.f_dose_label or args.f_amount is not None or args.f_unit:
        dose = {"id": args.f_dose_id, "label": args.f_dose_label, "amount": args.f_amount, "unit": args.f_unit}
        event["dose"] = {k: v for k, v in dose.items() if v is not None}
    if "at" not in event:
        event["at"] = format_time(machine_now())
    return event


def _screening(store: TrialStore, path: str, event: dict[str, Any]) -> dict[str, Any]:
    """Screen a patient record with eligibility screening, when that feature is installed, into a screened event."""
    try:
        from ..eligibility import load_eligibility, screen
    except ImportError:
        raise TrialError("--screen: eligibility screening (escalation_rules.eligibility) is not available; "
                         "record the result with --eligible") from None
    data = load_json(_read_text(path), path)
    result = screen(load_eligibility(store.protocol), data, path)
    failed = [r.criterion.id for r in result.failed]
    needed = [f"needs {item}" for item in result.needed]
    # undetermined (an item the criteria need is missing) is stored as undetermined: eligible null
    eligible = {"eligible": True, "undetermined": None}.get(result.outcome, False)
    return {**event, "type": "screened", "patient": event.get("patient") or result.record_id,
            "eligible": eligible, "reasons": [*failed, *needed], "result": result.to_dict()}


def _cmd_record(args: argparse.Namespace) -> int:
    if args.f_screen and args.type not in (None, "screened"):
        raise TrialError(f"--screen makes a 'screened' event (got --type {args.type})")
    if args.f_screen and args.f_eligible is not None:
        raise TrialError("give --screen (the record is screened) or --eligible, not both")
    if args.f_screen:
        args.type = "screened"
    if args.event and args.type:
        raise TrialError("give an EVENT file or --type with flags, not both")
    if args.event:
        name = "stdin" if args.event == "-" else args.event
        data = load_json(_read_text(args.event), name)
        if not isinstance(data, dict) and not (isinstance(data, list) and data):
            raise TrialError(f"{name}: expected an event object or a non-empty list of them "
                             f"(got {json.dumps(data)[:40]})")
        batch = data if isinstance(data, list) else [data]
        labels = [name if len(batch) == 1 else f"{name}[{i}]" for i in range(len(batch))]
    elif args.type:
        batch, labels = [_flag_event(args)], ["event"]
    else:
        raise TrialError("give an EVENT file (JSON object or list) or --type with flags")
    with _store(args) as store:
        if args.f_screen:
            batch = [_screening(store, args.f_screen, batch[0])]
        receipt = store.record(batch, labels)
        if not args.json:
            for stored in store.events(receipt.events[0] - 1)[:len(receipt.events)]:
                ev = event_to_dict(stored.event)
                what = ev.get("patient") or ev.get("option") or ev.get("reference") or ""
                print(f"recorded event {stored.seq}: {ev['type']} {what} at {ev['at']}".rstrip())
        _print_receipt(receipt, args.json)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    with _store(args, readonly=True) as store:
        problems = store.chain_problems()
        if problems:
            print(f"escalation-rules trial: {args.db}: the store fails verification, so no status is given: "
                  f"{problems[0]} (see: escalation-rules trial verify {args.db})", file=sys.stderr)
            return 1
        status = store.status(parse_time(args.as_of, "--as-of") if args.as_of else None)
    if args.json:
        print(json.dumps(status.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(status.text())
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    with _store(args, readonly=True) as store:
        events = store.events()
    if args.json:
        for s in events:
            print(json.dumps(s.to_dict(), ensure_ascii=False, sort_keys=True))
        return 0
    for s in events:
        ev = event_to_dict(s.event)
        detail = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in ev.items() if k not in ("type", "at"))
        print(f"{s.seq:4d} {ev['at']} {ev['type']:16} {detail}  [{s.hash[:12]}]")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    with _store(args, readonly=True) as store:
        report = store.verify(expect=args.expect_head)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(report.text(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    with _store(args, readonly=True) as store:
        if args.output and args.output != "-":
            try:
                with open(args.output, "w", encoding="utf-8") as out:
                    store.export(out, header=not args.events_only)
            except OSError as err:
                raise TrialError(f"{args.output}: cannot write: {err.strerror}") from None
        else:
            store.export(sys.stdout, header=not args.events_only)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    text = _read_text(args.file)
    lines = text.splitlines()
    created = False
    if not os.path.exists(args.db):
        # a store exported with its header carries its protocol: create the store it is imported into
        first = next((line for line in lines if line.strip()), "")
        header = read_export_header(first, f"{args.file}:{lines.index(first) + 1 if first else 1}")
        if header is None:
            raise TrialError(f"{args.db}: no such trial store, and {args.file} has no export header naming the "
                             f"protocol (create the store first: escalation-rules trial init --spec SPEC {args.db})")
        TrialStore.create(args.db, header["protocol"], key=args.key).close()
        created = True
    try:
        with _store(args) as store:
            receipt = store.import_lines(lines, args.file)
    except BaseException:
        if created:  # nothing half-written: the store made for this import goes with it
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(args.db + suffix):
                    os.remove(args.db + suffix)
        raise
    made = f"created {args.db}; " if created else ""
    span = f" (events {receipt.events[0]}-{receipt.events[-1]})" if receipt.events else ""
    count = len(receipt.events)
    print(f"{made}imported {count} event{'' if count == 1 else 's'}{span}")
    _print_receipt(receipt, args.json)
    return 0


def register(subparsers: Any) -> None:
    """Add ``trial`` and its subcommands to the CLI."""
    trial = subparsers.add_parser("trial", help="the trial record: patient events, sign-offs, audit log")
    sub = trial.add_subparsers(dest="trial_command", required=True, metavar="TRIAL_COMMAND")
    key_help = "the store's Ed25519 key file (private key to record; the public key is enough to verify)"

    p = sub.add_parser("keygen", help="write a new Ed25519 signing key (FILE) and its public key (FILE.pub)")
    p.add_argument("file", metavar="FILE", help="the private key file to create (never overwritten)")
    p.set_defaults(handler=_cmd_keygen)

    p = sub.add_parser("init", help="create a trial store for a protocol")
    p.add_argument("--spec", required=True, metavar="SPEC", help="protocol file or folder, or a built-in design")
    p.add_argument("--doses", type=int, default=None, metavar="N", help="number of doses for a built-in design")
    p.add_argument("--dlt", default=None, metavar="FILE", help="a TOML file with a 'dlt' table (DLT definition)")
    p.add_argument("--key", default=None, metavar="KEY", help="sign the store with this private key (trial keygen)")
    p.add_argument("db", metavar="DB", help="the store file to create (SQLite)")
    p.set_defaults(handler=_cmd_init)

    p = sub.add_parser("record", help="check and append events (a JSON file, or --type and flags)")
    p.add_argument("db", metavar="DB")
    p.add_argument("event", nargs="?", metavar="EVENT.json",
                   help="a JSON event object or a list of them ('-' for stdin); a list is one transaction")
    p.add_argument("--type", default=None, help="event type, with the flags below for its fields")
    for name, kind, text in _FLAG_FIELDS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"f_{name}", type=kind, default=None, help=text)
    p.add_argument("--eligible", dest="f_eligible", choices=("yes", "no", "undetermined"), default=None,
                   help="screening result (undetermined: an item the criteria need is missing)")
    p.add_argument("--dlt", dest="f_dlt", choices=("yes", "no"), default=None, help="adjudication: DLT or not")
    p.add_argument("--screen", dest="f_screen", default=None, metavar="RECORD.json",
                   help="screen this patient record with the protocol's eligibility criteria (when eligibility "
                        "screening is installed) and record the result as a 'screened' event")
    p.add_argument("--dose-id", dest="f_dose_id", default=None, help="amendment: dose id")
    p.add_argument("--dose-label", dest="f_dose_label", default=None, help="amendment: dose label")
    p.add_argument("--amount", dest="f_amount", type=float, default=None, help="amendment: dose amount")
    p.add_argument("--unit", dest="f_unit", default=None, help="amendment: dose unit")
    p.add_argument("--key", default=None, metavar="KEY", help=key_help)
    p.add_argument("--json", action="store_true", help="print only the receipt, as JSON")
    p.set_defaults(handler=_cmd_record)

    p = sub.add_parser("status", help="cohorts, pending patients and until when, the current decision")
    p.add_argument("db", metavar="DB")
    p.add_argument("--as-of", default=None, metavar="TIME", help="evaluate at this moment (default: now)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--key", default=None, metavar="KEY", help="also check the head's signature with this key "
                                                              "(the public key is enough)")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("log", help="every stored event, in the order recorded, with its hash")
    p.add_argument("db", metavar="DB")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_cmd_log)

    p = sub.add_parser("verify", help="check the hash chain (and, with --key, its signature) and every event; "
                                        "exit 1 naming the first broken link")
    p.add_argument("db", metavar="DB")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--key", default=None, metavar="KEY", help=key_help)
    p.add_argument("--expect-head", default=None, metavar="SEQ:HASH",
                   help="a receipt kept from an append: the store must still hold that event with that hash")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("export", help="the store's protocol (a header line) and every event as JSON lines")
    p.add_argument("db", metavar="DB")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default stdout)")
    p.add_argument("--events-only", action="store_true",
                   help="leave out the first line (the store's protocol, which lets import create a store)")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("import", help="record events from JSON lines, in one transaction (creating DB from an "
                                        "export's header if it does not exist)")
    p.add_argument("db", metavar="DB")
    p.add_argument("file", metavar="FILE", help="JSON lines ('-' for stdin)")
    p.add_argument("--key", default=None, metavar="KEY", help=key_help + "; signs a store the import creates")
    p.add_argument("--json", action="store_true", help="print the receipt as JSON")
    p.set_defaults(handler=_cmd_import)
