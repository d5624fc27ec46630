"""The embedded trial store: SQLite, append-only, one transaction per command, a hash chain.

A store file holds the protocol it was created with (its raw data, so the
file is self-contained) and the events, each with the SHA-256 hash of its
predecessor: the first event links to the hash of the store's metadata (its
format, creation time, protocol and protocol hash), and the head (last
sequence number and hash) is kept beside them, so changing, removing or
reordering any stored event, the protocol or any other stored metadata is
detected by :meth:`TrialStore.verify`.  Events dated more than
:data:`CLOCK_SKEW` after the store's clock are refused: the record says what
has happened.
SQLite triggers refuse UPDATE and DELETE on events, the database runs in WAL
mode with full synchronisation, and every command is one ``BEGIN IMMEDIATE``
transaction: it re-reads the events, checks the new ones against all of them
(:func:`~escalation_rules.trial.status.fold`) and commits, or changes nothing.

Examples
--------
>>> import tempfile, os
>>> from escalation_rules.trial.store import TrialStore
>>> folder = tempfile.mkdtemp()
>>> store = TrialStore.create(os.path.join(folder, "t.db"), "spec/nct07117175")
>>> store.record({"type": "screened", "at": "2025-01-02", "patient": "P01", "eligible": True})
[1]
>>> store.record({"type": "infused", "at": "2025-01-03", "patient": "P01", "date": "2025-01-03"})
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
escalation_rules.trial.events.TrialError: new event 1 (infused P01, ...): unknown patient 'P01' (not enrolled)
>>> store.verify().ok, len(store.events())
(True, 1)
>>> store.close()
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Any

import attrs

from ..designs import DESIGNS, design_mapping
from ..errors import EscalationRulesError
from ..graph import explore_merged
from ..protocol import Protocol, protocol_from_mapping, read_protocol_data
from .dlt import dlt_definition
from .events import EVENT_TYPES, Event, TrialError, canonical_json, event_to_dict, format_time, parse_event
from .status import TrialStatus, fold, trial_status

__all__ = ["CLOCK_SKEW", "FORMAT", "StoredEvent", "TrialStore", "VerifyReport", "machine_now", "protocol_data"]

#: The store format written in ``meta``: the first event links to the hash of all metadata.
FORMAT = "escalation-rules-trial/2"

#: The earlier format, still read: there the first event links to the protocol's hash only.
FORMAT_1 = "escalation-rules-trial/1"

#: How far after the store's clock an event may be dated (clocks of different machines disagree a little).
CLOCK_SKEW = timedelta(days=1)

#: The metadata keys a store holds.
_META_KEYS = frozenset({"format", "protocol", "protocol_hash", "head", "created_at"})

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'trial events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'trial events are append-only'); END;
"""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def machine_now() -> datetime:
    """The machine's clock in UTC: a store's default clock (tests replace ``_utc_now`` behind it)."""
    return _utc_now()


def meta_hash(meta: Mapping[str, str]) -> str:
    """The hash the chain starts from: every metadata entry except the head (for format 1, the protocol's hash)."""
    if meta.get("format") == FORMAT_1:
        return meta.get("protocol_hash", "")
    return _sha(json.dumps({k: v for k, v in meta.items() if k != "head"}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False))


def link_hash(prev: str, seq: int, recorded_at: str, body: str) -> str:
    """The hash of one stored event: its predecessor's hash, sequence number, recording time and body."""
    return _sha(f"{prev}\n{seq}\n{recorded_at}\n{body}")


def protocol_data(spec: str, doses: int | None = None, dlt_file: str | None = None) -> dict[str, Any]:
    """The raw protocol a store keeps: ``{"source", "data", "owners"}`` for a spec path or design name.

    ``dlt_file`` adds a TOML file's ``dlt`` table (for a built-in design, or
    to try another DLT definition).  The result is checked: the protocol must
    load and compile and carry a valid DLT definition.
    """
    owners: Mapping[str, str]
    if spec in DESIGNS:
        data, source, owners = design_mapping(spec, 5 if doses is None else doses), spec, {}
    else:
        if doses is not None:
            raise TrialError(f"{spec}: --doses applies to built-in designs only")
        from ..spec import spec_path

        data, source, owners = read_protocol_data(spec_path(spec))
    data = dict(data)
    if dlt_file is not None:
        try:
            with open(dlt_file, "rb") as handle:
                extra = tomllib.load(handle)
        except OSError as err:
            raise TrialError(f"{dlt_file}: cannot read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise TrialError(f"{dlt_file}: not valid TOML: {err}") from None
        except UnicodeDecodeError as err:
            raise TrialError(f"{dlt_file}: cannot read: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                             f"offset {err.start})") from None
        if set(extra) != {"dlt"}:
            raise TrialError(f"{dlt_file}: expected only a top-level 'dlt' table (got {', '.join(sorted(extra))})")
        if "dlt" in data:
            raise TrialError(f"{dlt_file}: dlt: the protocol {source} already has a DLT definition")
        data["dlt"] = extra["dlt"]
        owners = {**owners, "dlt": dlt_file}
    raw = {"source": source, "data": data, "owners": dict(owners)}
    _build(raw)
    return raw


def _build(raw: Mapping[str, Any]) -> Protocol:
    protocol = protocol_from_mapping(raw["data"], raw["source"], raw.get("owners") or {})
    explore_merged(protocol)  # the build checks, on merged states (no full graph, no networkx)
    dlt_definition(protocol)
    return protocol


@attrs.frozen
class StoredEvent:
    """An event as stored: sequence number, recording time (UTC), the event, and the chain hashes."""

    seq: int
    recorded_at: str
    event: Event
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the event under ``"event"``)."""
        return {"seq": self.seq, "recorded_at": self.recorded_at, "event": event_to_dict(self.event),
                "prev": self.prev, "hash": self.hash}


@attrs.frozen
class VerifyReport:
    """The result of :meth:`TrialStore.verify`: ``ok``, and one line per problem (the first broken link first)."""

    ok: bool
    events: int
    problems: tuple[str, ...]
    first_broken: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ok": self.ok, "events": self.events, "problems": list(self.problems),
                "first_broken": self.first_broken}

    def text(self) -> str:
        """One line when all is well, else one line per problem."""
        if self.ok:
            return f"ok: {self.events} events, hash chain intact, every event valid"
        return "\n".join(self.problems)


class TrialStore:
    """A trial's events in an SQLite file.

    Use :meth:`create` for a new store and the constructor to open one.
    ``clock`` (default: the machine's clock, UTC) gives the current moment:
    the recording time of events, the default moment of :meth:`status`, and
    the limit for event dates (:data:`CLOCK_SKEW` after it).

    Raises
    ------
    TrialError
        If the file is missing, is not a trial store, or a command is refused.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.path = str(path)
        self.clock: Callable[[], datetime] = clock if clock is not None else machine_now
        if not os.path.isfile(self.path):
            raise TrialError(f"{self.path}: no such trial store (create it with: escalation-rules trial init)")
        try:
            self._conn = self._connect(timeout)
        except sqlite3.DatabaseError as err:
            raise TrialError(f"{self.path}: not a trial store ({err})") from None
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise TrialError(f"{self.path}: not a trial store ({err})") from None
        if meta.get("format") not in (FORMAT, FORMAT_1):
            self._conn.close()
            raise TrialError(f"{self.path}: not a trial store (format {meta.get('format')!r}, expected {FORMAT!r})")
        self._protocol: Protocol | None = None
        self._protocol_problem: str | None = None
        try:
            self._protocol = _build(json.loads(meta.get("protocol", ""), object_hook=_untag))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            # reported by verify (exit 1); every command that needs the protocol refuses
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._protocol_problem = (f"protocol: the stored protocol cannot be read ({detail}; "
                                      f"changed behind the store's back?)")

    @property
    def protocol(self) -> Protocol:
        """The protocol the store was created with.

        Raises
        ------
        TrialError
            If the stored protocol cannot be read (see :meth:`verify`).
        """
        if self._protocol is None:
            raise TrialError(f"{self.path}: {self._protocol_problem}")
        return self._protocol

    def _connect(self, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        return conn

    @classmethod
    def create(cls, path: str | os.PathLike[str], spec: str | Mapping[str, Any], doses: int | None = None,
               dlt_file: str | None = None, *, clock: Callable[[], datetime] | None = None) -> TrialStore:
        """Create a new store for a protocol (a spec path or design name, or data from :func:`protocol_data`)."""
        target = str(path)
        if os.path.exists(target) and os.path.getsize(target) > 0:
            raise TrialError(f"{target}: already exists; a trial store is created once")
        raw = protocol_data(spec, doses, dlt_file) if isinstance(spec, str) else dict(spec)
        _build(raw)
        # key order is kept: some sections (eligibility items) depend on the order written
        try:
            text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=_tag, allow_nan=False)
        except ValueError:
            raise TrialError(f"{target}: the protocol holds NaN or Infinity, which a store cannot keep") from None
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            raise TrialError(f"{target}: cannot create the store: no such directory {folder}")
        try:
            conn = sqlite3.connect(target, isolation_level=None)
        except sqlite3.Error as err:
            raise TrialError(f"{target}: cannot create the store ({err})") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            meta = {"format": FORMAT, "protocol": text, "protocol_hash": _sha(text),
                    "created_at": format_time((clock or machine_now)())}
            meta["head"] = json.dumps({"seq": 0, "hash": meta_hash(meta)})
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise TrialError(f"{target}: cannot create the store ({err})") from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return cls(target, clock=clock)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading

    def _rows(self) -> list[tuple[int, str, str, str, str]]:
        return list(self._conn.execute("SELECT seq, recorded_at, body, prev, hash FROM events ORDER BY seq"))

    def events(self) -> list[StoredEvent]:
        """Every stored event, in the order recorded."""
        return [StoredEvent(seq, at, parse_event(body, f"{self.path}: event {seq}"), prev, digest)
                for seq, at, body, prev, digest in self._rows()]

    def status(self, as_of: datetime | str | None = None) -> TrialStatus:
        """The trial's status (default: now, or the latest event's time if that is later)."""
        events = [s.event for s in self.events()]
        if as_of is None:
            now = self.clock().replace(microsecond=0)
            as_of = max([now, *(e.at for e in events)])
        return trial_status(self.protocol, events, as_of)

    # -- writing

    def record(self, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
               labels: Sequence[str] | None = None) -> list[int]:
        """Check and append events in one transaction; return their sequence numbers.

        Raises
        ------
        TrialError
            The first event refused (nothing is stored then), or a store that fails its chain check.
        """
        batch = [events] if isinstance(events, Mapping) or not isinstance(events, Sequence) else list(events)
        names = list(labels) if labels is not None else [f"new event {i + 1}" for i in range(len(batch))]
        parsed: list[Event] = [_event(e, names[i]) for i, e in enumerate(batch)]
        if not parsed:
            return []
        limit = self.clock() + CLOCK_SKEW
        for name, event in zip(names, parsed, strict=True):
            if event.at > limit:
                raise TrialError(f"{name} ({event.TYPE}): at: {format_time(event.at)} is in the future (the clock "
                                 f"reads {format_time(self.clock())}; events record what has happened, at most "
                                 f"{CLOCK_SKEW.days} day ahead of the clock)")
        try:
            return self._append(parsed, names)
        except sqlite3.Error as err:
            raise TrialError(f"{self.path}: SQLite refused the write ({err}); nothing was stored") from None

    def _append(self, parsed: Sequence[Event], names: Sequence[str]) -> list[int]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = self._rows()
            broken = self._chain_problems(rows)
            if broken:
                raise TrialError(f"{self.path}: refusing to append to a store that fails verification: {broken[0]}")
            stored = [parse_event(body, f"event {seq}") for seq, _, body, _, _ in rows]
            fold(self.protocol, [*stored, *parsed], [*(f"stored event {r[0]}" for r in rows), *names])
            prev = rows[-1][4] if rows else meta_hash(self._meta())
            seq = rows[-1][0] if rows else 0
            added = []
            for event in parsed:
                seq += 1
                recorded = format_time(self.clock())
                body = canonical_json(event)
                digest = link_hash(prev, seq, recorded, body)
                conn.execute("INSERT INTO events (seq, recorded_at, body, prev, hash) VALUES (?, ?, ?, ?, ?)",
                             (seq, recorded, body, prev, digest))
                prev = digest
                added.append(seq)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (json.dumps({"seq": seq, "hash": prev}),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return added

    def import_lines(self, lines: Iterable[str], source: str = "import") -> list[int]:
        """Record events given as JSON lines (blank lines skipped), all in one transaction."""
        events: list[Event] = []
        labels: list[str] = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                events.append(parse_event(line, f"{source}:{number}"))
                labels.append(f"{source}:{number}")
        return self.record(events, labels)

    def export(self, out: IO[str]) -> int:
        """Write every event as one line of canonical JSON, in the order recorded; return the count.

        Each line is re-encoded as strict JSON: an event holding NaN or
        Infinity (which no check lets in) is refused rather than written.
        """
        count = 0
        for seq, _, body, _, _ in self._rows():
            try:
                line = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False)
            except (ValueError, RecursionError):
                raise TrialError(f"{self.path}: event {seq}: not strict JSON (NaN or Infinity?); "
                                 f"run: escalation-rules trial verify") from None
            out.write(line + "\n")
            count += 1
        return count

    # -- verification

    def _meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _chain_problems(self, rows: Sequence[tuple[int, str, str, str, str]]) -> list[str]:
        problems: list[str] = []
        meta = self._meta()
        if _sha(meta.get("protocol", "")) != meta.get("protocol_hash"):
            problems.append("protocol: the stored protocol does not match its hash (changed behind the store's back)")
        elif self._protocol_problem is not None:
            problems.append(self._protocol_problem)
        unknown = sorted(set(meta) - _META_KEYS)
        if unknown:
            problems.append(f"meta: unexpected entry {unknown[0]!r} (added behind the store's back?)")
        prev, expected = meta_hash(meta), 1
        if rows and rows[0][0] == 1 and rows[0][3] != prev:
            # the metadata changed after the first event was stored: say so once, then check the rest of the chain
            if not problems:
                problems.append("meta: the store's metadata (format, creation time, protocol) does not match the "
                                "hash the first event links to (changed behind the store's back)")
            prev = rows[0][3]
        meta_problems = len(problems)
        for seq, recorded, body, link, digest in rows:
            if seq != expected:
                what = f"event {expected} is missing" if seq > expected else f"event {seq} is out of order"
                problems.append(f"event {seq}: broken link: {what} (removed behind the store's back?)")
                break
            if link != prev:
                problems.append(f"event {seq}: broken link: its predecessor hash does not match event {seq - 1}"
                                if seq > 1 else "event 1: broken link: it does not link to the store's metadata")
                break
            if link_hash(link, seq, recorded, body) != digest:
                problems.append(f"event {seq}: broken link: its content does not match its hash "
                                f"(changed behind the store's back)")
                break
            prev, expected = digest, expected + 1
        if len(problems) == meta_problems:
            head = self._head_problems(meta, rows[-1][0] if rows else 0, prev)
            if not (meta_problems and not rows):  # with no events, a changed metadata also changes the head's hash
                problems += head
        return problems

    @staticmethod
    def _head_problems(meta: Mapping[str, str], last: int, prev: str) -> list[str]:
        """The head record against the chain that ends at event ``last`` with hash ``prev``."""
        if "head" not in meta:
            return ["head: the head record is missing (removed behind the store's back?)"]
        try:
            head = json.loads(meta["head"])
        except ValueError:
            head = None
        if not isinstance(head, dict) or not isinstance(head.get("seq"), int) or isinstance(head.get("seq"), bool) \
                or not isinstance(head.get("hash"), str):
            return ["head: the head record cannot be read (expected a sequence number and a hash; "
                    "changed behind the store's back?)"]
        seq = head["seq"]
        if seq > last:
            return [f"event {last + 1}: broken link: the head record names event {seq} but the chain ends at "
                    f"event {last} (events removed from the end?)"]
        if seq < last:
            return [f"head: the head record names event {seq} but the chain runs to event {last} "
                    f"(the head record changed behind the store's back?)"]
        if head["hash"] != prev:
            what = f"event {last}" if last else "the store's metadata"
            return [f"head: the head record's hash does not match {what} (the head record or the store's "
                    f"metadata changed behind the store's back)"]
        return []

    def verify(self, *, events: bool = True) -> VerifyReport:
        """Check the hash chain, the head, the metadata, the protocol and every event; name the first broken link.

        ``events=False`` checks the chain only (not each event against the
        trial; :meth:`status` and :meth:`record` do that as they fold).
        """
        rows = self._rows()
        problems: list[str] = []
        if events:
            check = self._conn.execute("PRAGMA quick_check").fetchone()
            if check and check[0] != "ok":
                problems.append(f"{self.path}: SQLite quick_check: {check[0]}")
        problems += self._chain_problems(rows)
        first = None
        if problems:
            for line in problems:
                if line.startswith("event "):
                    first = int(line.split()[1].rstrip(":"))
                    break
        elif events:
            try:
                parsed = [parse_event(body, f"event {seq}") for seq, _, body, _, _ in rows]
                fold(self.protocol, parsed, [f"event {r[0]}" for r in rows])
            except EscalationRulesError as err:
                problems.append(str(err))
                first = getattr(err, "index", None)
                first = rows[first][0] if isinstance(first, int) and first < len(rows) else first
        return VerifyReport(not problems, len(rows), tuple(problems), first)


#: The event classes (an event given as an object, not as its JSON form).
EVENT_CLASSES: tuple[type, ...] = tuple(EVENT_TYPES.values())


def _event(value: Any, name: str) -> Event:
    """An event object as given, or one parsed from its JSON form (anything else is refused by the parser)."""
    if isinstance(value, EVENT_CLASSES):
        event: Event = value  # type: ignore[assignment]
        return event
    return parse_event(dict(value) if isinstance(value, Mapping) else value, name)


def _tag(value: Any) -> Any:
    """JSON for the TOML values JSON lacks (dates and times), tagged so they come back as the same type."""
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    raise TrialError(f"the protocol holds a value JSON cannot keep: {value!r}")


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        (key, value), = obj.items()
        if isinstance(value, str):
            if key == "$datetime":
                return datetime.fromisoformat(value)
            if key == "$date":
                return date.fromisoformat(value)
            if key == "$time":
                return time.fromisoformat(value)
    return obj


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers hold semicolons inside BEGIN ... END)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        stripped = current.strip()
        if stripped.endswith(";") and (not stripped.upper().startswith("CREATE TRIGGER")
                                       or stripped.upper().endswith("END;")):
            out.append(stripped)
            current = ""
    return out
