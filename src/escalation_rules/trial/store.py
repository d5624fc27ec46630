"""The embedded trial store: SQLite, append-only, one transaction per command, a hash chain, optionally signed.

A store file holds the protocol it was created with (its raw data, so the
file is self-contained) and the events, each with the SHA-256 hash of its
predecessor: the first event links to the hash of the store's metadata (its
format, creation time, protocol and protocol hash, and the signing key's
fingerprint), and the head (last sequence number and hash) is kept beside
them, so changing, removing or reordering any stored event, the protocol or
any other stored metadata is detected by :meth:`TrialStore.verify`.

A **signed** store (format ``escalation-rules-trial/3``, created with a key
from :mod:`.keys`) also keeps an Ed25519 signature of its head.  The key
lives outside the store file, so someone who can write the file but has no
key cannot rewrite the chain, append a forged event, swap the protocol or
downgrade the format without :meth:`TrialStore.verify` (given the key)
noticing.  Every append returns a :class:`Receipt` (sequence number and head
hash, signed): ``verify(expect=receipt)`` proves that nothing up to the
receipt was cut off.

Events dated more than :data:`CLOCK_SKEW` after the store's clock are
refused: the record says what has happened.  SQLite triggers refuse UPDATE
and DELETE on events, the database runs in WAL mode with full
synchronisation, and an append checks the new events outside the write
lock, against the trial as derived so far (kept between appends, so only
the new events are applied), then takes the lock only to see that nobody
appended meanwhile and to write: it commits, or changes nothing.

Examples
--------
>>> import tempfile, os
>>> from escalation_rules.trial.store import TrialStore
>>> folder = tempfile.mkdtemp()
>>> store = TrialStore.create(os.path.join(folder, "t.db"), "spec/nct07117175")
>>> store.record({"type": "screened", "at": "2025-01-02", "patient": "P01", "eligible": True}).events
(1,)
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
import time as _time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, TYPE_CHECKING, Any

import attrs

from .._attrs import value_repr
from .._limits import read_toml
from ..designs import DESIGNS, design_mapping
from ..errors import EscalationRulesError
from ..graph import explore_merged
from ..protocol import Protocol, protocol_from_mapping, read_protocol_data
from .dlt import dlt_definition
from .events import (
    EVENT_TYPES,
    Event,
    ProtocolAmended,
    TrialError,
    canonical_json,
    event_to_dict,
    format_time,
    parse_event,
)
from .status import Folded, TrialStatus, extend, fold, limit_problem, status_of

if TYPE_CHECKING:
    from .keys import StoreKey

__all__ = ["CLOCK_SKEW", "FORMAT", "Receipt", "StoredEvent", "TrialStore", "VerifyReport", "machine_now",
           "protocol_data"]

#: The format of a signed store: format 2 plus the key's fingerprint in ``meta`` and a signed head.
FORMAT = "escalation-rules-trial/3"

#: The unsigned format (a store created without a key): the first event links to the hash of all metadata.
FORMAT_2 = "escalation-rules-trial/2"

#: The earliest format, still read: there the first event links to the protocol's hash only.
FORMAT_1 = "escalation-rules-trial/1"

_FORMATS = (FORMAT, FORMAT_2, FORMAT_1)

#: How far after the store's clock an event may be dated (clocks of different machines disagree a little).
CLOCK_SKEW = timedelta(days=1)

#: The metadata keys a store holds (``key``: signed stores only).
_META_KEYS = frozenset({"format", "protocol", "protocol_hash", "head", "created_at", "key"})

#: The first line of an export: the store's protocol, so that ``import`` can create the store it imports into.
EXPORT_HEADER = "trial_store"

_TRIGGERS = {
    "events_append_only_update": "CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events\n"
                                 "    BEGIN SELECT RAISE(ABORT, 'trial events are append-only'); END",
    "events_append_only_delete": "CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events\n"
                                 "    BEGIN SELECT RAISE(ABORT, 'trial events are append-only'); END",
}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
""" + "".join(sql + ";\n" for sql in _TRIGGERS.values())

#: A stored row: sequence number, recording time, body, predecessor hash, hash.
_Row = tuple[int, str, str, str, str]


def _sha(text: str) -> str:
    # surrogateescape: text read from a damaged file hashes as the bytes stored
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


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


def head_message(key_id: str, seq: int, digest: str) -> bytes:
    """What a signed store's key signs: the format, the key's fingerprint, and the head (sequence number, hash)."""
    return f"{FORMAT}\n{key_id}\n{seq}\n{digest}".encode()


def _decode(value: bytes) -> str:
    """SQLite text as Python text; bytes that are not UTF-8 are kept (as surrogates) and reported by the checks."""
    return value.decode("utf-8", "surrogateescape")


def _damaged(text: str) -> bool:
    """True when text read from the file held bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
            extra = read_toml(dlt_file, "DLT file", "{path}: cannot read: not UTF-8 text (byte {byte:#04x} at offset "
                                                    "{offset})")
        except EscalationRulesError as err:
            raise TrialError(str(err)) from None
        if set(extra) != {"dlt"}:
            raise TrialError(f"{dlt_file}: expected only a top-level 'dlt' table (got {', '.join(sorted(extra))})")
        if "dlt" in data:
            raise TrialError(f"{dlt_file}: dlt: the protocol {source} already has a DLT definition")
        data["dlt"] = extra["dlt"]
        owners = {**owners, "dlt": dlt_file}
    raw = {"source": source, "data": data, "owners": dict(owners)}
    _build(raw)
    return raw


def _build(raw: Mapping[str, Any], check: bool = True) -> Protocol:
    """The protocol of raw data; ``check``: also its build checks (done when a store is made and verified)."""
    protocol = protocol_from_mapping(raw["data"], raw["source"], raw.get("owners") or {})
    problem = limit_problem(protocol.cap, len(protocol.doses))
    if problem:
        raise TrialError(f"{protocol.source}: {problem}")
    if check:
        explore_merged(protocol)  # the build checks, on merged states (no full graph, no networkx)
    dlt_definition(protocol)
    return protocol


@attrs.frozen
class StoredEvent:
    """An event as stored: sequence number, recording time (UTC), the event, and the chain hashes."""

    __repr__ = value_repr

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
class Receipt:
    """What an append gives the caller to keep: the head after it (sequence number and hash), signed if the store is.

    ``events`` are the sequence numbers just stored.  Keep the receipt
    outside the store: :meth:`TrialStore.verify` with ``expect`` (``trial
    verify --expect-head SEQ:HASH``) proves that the store still holds
    event ``seq`` with this hash, so nothing up to it was cut off or
    rewritten.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> with TrialStore.create(os.path.join(folder, "t.db"), "spec/nct07117175") as store:
    ...     receipt = store.record({"type": "screened", "at": "2025-01-02", "patient": "P01", "eligible": True})
    ...     report = store.verify(expect=receipt.head)
    >>> receipt.seq, receipt.events, len(receipt.hash), report.ok
    (1, (1,), 64, True)
    """

    __repr__ = value_repr

    seq: int
    hash: str
    events: tuple[int, ...] = ()
    signature: str | None = None
    key: str | None = None

    @property
    def head(self) -> str:
        """``SEQ:HASH``, the form ``trial verify --expect-head`` takes."""
        return f"{self.seq}:{self.hash}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"seq": self.seq, "hash": self.hash, "head": self.head, "events": list(self.events),
                "signature": self.signature, "key": self.key}


def parse_expected_head(text: str) -> tuple[int | None, str]:
    """``SEQ:HASH`` or ``HASH`` (64 hex digits) from ``--expect-head``.

    Raises
    ------
    TrialError
        If the text is neither.

    Examples
    --------
    >>> parse_expected_head("12:" + "ab" * 32)[0]
    12
    """
    seq_text, _, digest = text.strip().rpartition(":")
    digest = digest.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) \
            or (seq_text and not (seq_text.isdigit() and int(seq_text) <= 10**12)):
        raise TrialError(f"--expect-head: expected SEQ:HASH or HASH as a receipt gives it (64 hex digits), "
                         f"got {text[:80]!r}")
    return (int(seq_text) if seq_text else None), digest


@attrs.frozen
class VerifyReport:
    """The result of :meth:`TrialStore.verify`: ``ok``, and one line per problem (the first broken link first).

    ``signed`` says whether the head's signature was checked with a key
    (``None``: the store is unsigned or no key was given), ``head`` is the
    chain's head as ``SEQ:HASH``.
    """

    __repr__ = value_repr

    ok: bool
    events: int
    problems: tuple[str, ...]
    first_broken: int | None = None
    signed: bool | None = None
    head: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ok": self.ok, "events": self.events, "problems": list(self.problems),
                "first_broken": self.first_broken, "signed": self.signed, "head": self.head,
                "notes": list(self.notes)}

    def text(self) -> str:
        """One line when all is well (plus notes), else one line per problem."""
        if self.ok:
            signed = ", signature valid" if self.signed else ""
            return "\n".join([f"ok: {self.events} events, hash chain intact{signed}, every event valid",
                              *self.notes])
        return "\n".join(self.problems)


@attrs.define
class _Seen:
    """What this connection has checked of the store: the metadata, the chain up to ``seq``/``hash``, the fold."""

    __repr__ = value_repr

    meta: dict[str, str]
    seq: int
    hash: str
    folded: Folded | None
    signature: str | None = None


def _text(value: Any) -> str:
    """A cell that should hold text (a forged file may hold a number or bytes there)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return _decode(value)
    return str(value)


def _read_head(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The head record (``seq``, ``hash``, and ``sig`` in a signed store), or None when it cannot be read."""
    try:
        head = json.loads(meta["head"])
    except (KeyError, ValueError):
        return None
    if not isinstance(head, dict) or not isinstance(head.get("seq"), int) or isinstance(head.get("seq"), bool) \
            or not isinstance(head.get("hash"), str):
        return None
    return head


def _body(meta: Mapping[str, str]) -> dict[str, str]:
    """The metadata that must not change between appends: all but the head (and the protocol text, under its hash)."""
    return {k: v for k, v in meta.items() if k not in ("head", "protocol")}


def _key_arg(key: StoreKey | str | os.PathLike[str] | None) -> StoreKey | None:
    if key is None or not isinstance(key, str | os.PathLike):
        return key
    from .keys import load_key  # cryptography is imported only when a key is used

    return load_key(key)


class TrialStore:
    """A trial's events in an SQLite file.

    Use :meth:`create` for a new store and the constructor to open one.
    ``clock`` (default: the machine's clock, UTC) gives the current moment:
    the recording time of events, the default moment of :meth:`status`, and
    the limit for event dates (:data:`CLOCK_SKEW` after it).  ``key`` (a
    :class:`~escalation_rules.trial.keys.StoreKey` or a key file) is needed to
    record in a signed store and lets :meth:`verify` check the signature.
    ``readonly`` opens the file read-only (``mode=ro``; also ``immutable``
    when the file or its folder cannot be written): reading, status and
    verification work on archived files and read-only mounts.

    Raises
    ------
    TrialError
        If the file is missing, is not a trial store, or a command is refused.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 clock: Callable[[], datetime] | None = None, key: StoreKey | str | os.PathLike[str] | None = None,
                 readonly: bool = False) -> None:
        self.path = str(path)
        self.clock: Callable[[], datetime] = clock if clock is not None else machine_now
        self.timeout = timeout
        self.readonly = readonly
        self.key = _key_arg(key)
        if not os.path.isfile(self.path):
            raise TrialError(f"{self.path}: no such trial store (create it with: escalation-rules trial init)")
        try:
            self._conn = self._connect(timeout)
        except sqlite3.DatabaseError as err:
            raise TrialError(f"{self.path}: not a trial store ({err})") from None
        try:
            meta = self._meta()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise TrialError(f"{self.path}: not a trial store ({err})") from None
        self.format = meta.get("format", "")
        if self.format not in _FORMATS:
            self._conn.close()
            raise TrialError(f"{self.path}: not a trial store this version reads (format {self.format!r}, expected "
                             f"{' or '.join(repr(f) for f in _FORMATS)})")
        self._signed_by = meta.get("key")
        self._seen: _Seen | None = None
        self._protocol: Protocol | None = None
        self._protocol_problem: str | None = None
        try:
            # the build checks ran when the store was made; verify runs them again
            self._protocol = _build(json.loads(meta.get("protocol", ""), object_hook=_untag), check=False)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
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

    @property
    def signed(self) -> bool:
        """True for a signed store (format 3)."""
        return self.format == FORMAT

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if self.readonly:
            absolute = os.path.abspath(self.path)
            uri = f"file:{urllib.parse.quote(absolute)}?mode=ro"
            if not os.access(absolute, os.W_OK) or not os.access(os.path.dirname(absolute), os.W_OK):
                wal = absolute + "-wal"
                if os.path.exists(wal) and os.path.getsize(wal) > 0:
                    raise TrialError(f"{self.path}: read-only, and recent commits are still in {wal}, which SQLite "
                                     f"cannot read without write access; copy the store with "
                                     f"sqlite3 {self.path} \".backup copy.db\" where it is writable")
                uri += "&immutable=1"  # no lock or shared-memory file can be made: nobody writes here
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        conn.text_factory = _decode
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        return conn

    @classmethod
    def create(cls, path: str | os.PathLike[str], spec: str | Mapping[str, Any], doses: int | None = None,
               dlt_file: str | None = None, *, clock: Callable[[], datetime] | None = None,
               key: StoreKey | str | os.PathLike[str] | None = None) -> TrialStore:
        """Create a new store for a protocol (a spec path or design name, or data from :func:`protocol_data`).

        With ``key`` (a private key, or its file) the store is signed (format 3).
        """
        target = str(path)
        if os.path.exists(target) and os.path.getsize(target) > 0:
            raise TrialError(f"{target}: already exists; a trial store is created once")
        signer = _key_arg(key)
        if signer is not None and not signer.can_sign:
            raise TrialError(f"{signer.source}: a public key cannot sign; give the private key file")
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
            meta = {"format": FORMAT if signer else FORMAT_2, "protocol": text, "protocol_hash": _sha(text),
                    "created_at": format_time((clock or machine_now)())}
            if signer is not None:
                meta["key"] = signer.id
            start = meta_hash(meta)
            head: dict[str, Any] = {"seq": 0, "hash": start}
            if signer is not None:
                head["sig"] = signer.sign(head_message(signer.id, 0, start))
            meta["head"] = json.dumps(head)
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
        return cls(target, clock=clock, key=signer)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading

    def _meta(self, light: bool = False) -> dict[str, str]:
        """The metadata; ``light``: without the protocol's text (its hash is there), for the checks between appends."""
        query = "SELECT key, value FROM meta" + (" WHERE key <> 'protocol'" if light else "")
        return {_text(k): _text(v) for k, v in self._conn.execute(query).fetchall()}

    def _rows(self, after: int = 0) -> list[_Row]:
        try:
            cursor = self._conn.execute("SELECT seq, recorded_at, body, prev, hash FROM events WHERE seq > ? "
                                        "ORDER BY seq", (after,))
            return [(seq, _text(at), _text(body), _text(prev), _text(digest)) for seq, at, body, prev, digest in cursor]
        except sqlite3.DatabaseError as err:
            raise TrialError(f"{self.path}: events: the events table cannot be read ({err}; dropped or damaged "
                             f"behind the store's back?); run: escalation-rules trial verify") from None

    def events(self, after: int = 0) -> list[StoredEvent]:
        """Every stored event (or those after sequence number ``after``), in the order recorded.

        Raises
        ------
        TrialError
            For a stored event that cannot be read (see :meth:`verify`).
        """
        out = []
        for seq, at, body, prev, digest in self._rows(after):
            if any(_damaged(text) for text in (at, body, prev, digest)):
                raise TrialError(f"{self.path}: event {seq}: holds bytes that are not UTF-8 text (damaged); "
                                 f"run: escalation-rules trial verify")
            out.append(StoredEvent(seq, at, parse_event(body, f"{self.path}: event {seq}"), prev, digest))
        return out

    def chain_problems(self) -> list[str]:
        """Check the chain (and signature, with a key) as far as this connection has not yet; one line per problem.

        The first call checks the whole chain; later calls check only what
        was appended since (and the metadata, the head and the triggers).
        The events are folded into the trial as they are checked.
        """
        return self._sync()

    def status(self, as_of: datetime | str | None = None) -> TrialStatus:
        """The trial's status (default: now, or the latest event's time if that is later).

        Raises
        ------
        TrialError
            If the store fails its chain check (see :meth:`verify`) or an event cannot be applied.
        """
        problems = self._sync()
        if problems:
            raise TrialError(f"{self.path}: the store fails verification, so no status is given: {problems[0]}")
        assert self._seen is not None and self._seen.folded is not None
        folded = self._seen.folded
        if as_of is None:
            moment = self.clock().replace(microsecond=0)
            if folded.last is not None:
                moment = max(moment, folded.last[0])
        elif isinstance(as_of, str):
            from .events import parse_time

            moment = parse_time(as_of, "as_of")
        else:
            moment = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
        return status_of(folded, moment)

    def _sync(self) -> list[str]:
        """Bring this connection's view up to the store's head: check what is new, fold it; return problems."""
        conn = self._conn
        try:
            conn.execute("BEGIN")  # one snapshot: metadata, head and events agree
            try:
                look = self._look()
            finally:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            return [f"{self.path}: cannot be read ({err}; damaged behind the store's back?)"]
        except TrialError as err:
            return [str(err)]
        return self._take(*look)

    def _look(self) -> tuple[list[str], dict[str, str], list[_Row], Folded | None]:
        """Inside a transaction: what is new since this connection last looked, checked (problems, meta, rows, base).

        ``base`` is the fold the rows extend (None: the rows are the whole chain).
        """
        seen = self._seen
        meta = self._meta(light=seen is not None)
        base: Folded | None = None
        if seen is None or _body(meta) != seen.meta:
            meta = self._meta() if seen is not None else meta
            rows = self._rows()
            problems = self._chain_problems(meta, rows)
        else:
            rows = self._rows(seen.seq)
            links, prev = self._link_problems(rows, seen.hash, seen.seq + 1)
            problems = links or self._head_problems(meta, rows[-1][0] if rows else seen.seq, prev)
            base = seen.folded
        return problems + self._trigger_problems(), meta, rows, base

    def _take(self, problems: list[str], meta: dict[str, str], rows: list[_Row], base: Folded | None) -> list[str]:
        """Fold checked rows into this connection's view (or return the problems that prevent it)."""
        if problems:
            return problems
        seen = self._seen
        new = [parse_event(text, f"stored event {seq}") for seq, _, text, _, _ in rows]
        folded = extend(base, self.protocol, new, [f"stored event {r[0]}" for r in rows])
        head = _read_head(meta) or {}
        if rows:
            seq, digest = rows[-1][0], rows[-1][4]
        elif base is not None and seen is not None:
            seq, digest = seen.seq, seen.hash
        else:
            seq, digest = 0, meta_hash(meta)
        self._seen = _Seen(_body(meta), seq, digest, folded, head.get("sig"))
        return []

    # -- writing

    def _check_writable(self) -> StoreKey | None:
        """The key that signs this store's appends (None for an unsigned store); refuse what cannot write."""
        if self.readonly:
            raise TrialError(f"{self.path}: opened read-only; nothing can be recorded")
        if self.signed:
            if self.key is None:
                raise TrialError(f"{self.path}: the store is signed (key {str(self._signed_by)[:16]}...): give its "
                                 f"private key to record (--key FILE)")
            if not self.key.can_sign:
                raise TrialError(f"{self.key.source}: a public key cannot sign; give the private key file")
            if self.key.id != self._signed_by:
                raise TrialError(f"{self.key.source}: not the store's key (the store is signed with key "
                                 f"{str(self._signed_by)[:16]}..., this is {self.key.id[:16]}...)")
            return self.key
        if self.key is not None:
            raise TrialError(f"{self.path}: the store is unsigned ({self.format}); a key cannot be added to it "
                             f"(move its events into a signed store: trial export, then trial import --key)")
        return None

    def record(self, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
               labels: Sequence[str] | None = None) -> Receipt:
        """Check and append events in one transaction; return the :class:`Receipt` (``.events``: their numbers).

        The new events are checked outside the write lock against the trial
        as derived so far (only what other writers appended since this
        connection last looked is applied first); the lock is held only to
        see that nobody appended meanwhile and to write.  When someone did,
        the check runs again on their events.

        Raises
        ------
        TrialError
            The first event refused (nothing is stored then), a store that
            fails its chain check, or a missing or wrong key for a signed store.
        """
        batch = [events] if isinstance(events, Mapping) or not isinstance(events, Sequence) else list(events)
        names = list(labels) if labels is not None else [f"new event {i + 1}" for i in range(len(batch))]
        parsed: list[Event] = [_event(e, names[i]) for i, e in enumerate(batch)]
        signer = self._check_writable()
        if not parsed:  # nothing to append: the receipt of the head as it stands
            problems = self._sync()
            if problems:
                raise TrialError(f"{self.path}: the store fails verification: {problems[0]}")
            assert self._seen is not None
            return Receipt(self._seen.seq, self._seen.hash, (), self._seen.signature,
                           signer.id if signer is not None else None)
        limit = self.clock() + CLOCK_SKEW
        for name, event in zip(names, parsed, strict=True):
            if event.at > limit:
                raise TrialError(f"{name} ({event.TYPE}): at: {format_time(event.at)} is in the future (the clock "
                                 f"reads {format_time(self.clock())}; events record what has happened, at most "
                                 f"{CLOCK_SKEW.days} day ahead of the clock)")
        try:
            return self._append(parsed, names, signer)
        except sqlite3.Error as err:
            raise TrialError(f"{self.path}: SQLite refused the write ({err}); nothing was stored") from None

    def _append(self, parsed: Sequence[Event], names: Sequence[str], signer: StoreKey | None) -> Receipt:
        conn = self._conn
        deadline = _time.monotonic() + self.timeout
        amending = any(isinstance(event, ProtocolAmended) for event in parsed)
        problems = self._sync()
        while True:
            if problems:
                raise TrialError(f"{self.path}: refusing to append to a store that fails verification: {problems[0]}")
            seen = self._seen
            assert seen is not None
            # the long part (checking the events against the trial, an amendment's build checks) holds no lock
            after = extend(seen.folded, self.protocol, parsed, names)
            self._lock(deadline)
            try:
                if self._head_now() != (seen.seq, seen.hash):
                    # another writer appended meanwhile: take in its events and check ours against them; under
                    # the lock only when that is quick (no amendment on either side), else outside it again
                    problems, _, rows, base = self._look()
                    quick = not amending and not any('"type":"protocol_amended"' in row[2] for row in rows)
                    if problems or not quick:
                        conn.execute("ROLLBACK")
                        problems = problems or self._sync()
                        continue
                    # one fold for their events and ours (stored ones first when both share a time: as a full
                    # fold orders them); the view is updated only once ours are stored
                    stored = [parse_event(row[2], f"stored event {row[0]}") for row in rows]
                    after = extend(base, self.protocol, [*stored, *parsed],
                                   [*(f"stored event {row[0]}" for row in rows), *names])
                    if rows:
                        seen = attrs.evolve(seen, seq=rows[-1][0], hash=rows[-1][4])
                receipt, head, rows = self._rows_for(seen, parsed, signer)
                conn.executemany("INSERT INTO events (seq, recorded_at, body, prev, hash) VALUES (?, ?, ?, ?, ?)",
                                 rows)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (json.dumps(head),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._seen = attrs.evolve(seen, seq=receipt.seq, hash=receipt.hash, folded=after,
                                      signature=receipt.signature)
            return receipt

    def _rows_for(self, seen: _Seen, parsed: Sequence[Event], signer: StoreKey | None
                  ) -> tuple[Receipt, dict[str, Any], list[_Row]]:
        """The rows that append ``parsed`` after ``seen``, the new head record and the receipt."""
        rows: list[_Row] = []
        prev, seq = seen.hash, seen.seq
        for event in parsed:
            seq += 1
            recorded = format_time(self.clock())
            body = canonical_json(event)
            digest = link_hash(prev, seq, recorded, body)
            rows.append((seq, recorded, body, prev, digest))
            prev = digest
        head: dict[str, Any] = {"seq": seq, "hash": prev}
        if signer is not None:
            head["sig"] = signer.sign(head_message(signer.id, seq, prev))
        receipt = Receipt(seq, prev, tuple(r[0] for r in rows), head.get("sig"),
                          signer.id if signer is not None else None)
        return receipt, head, rows

    def _lock(self, deadline: float) -> None:
        """``BEGIN IMMEDIATE``, retried every millisecond or so (SQLite's own busy wait sleeps far longer)."""
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            delay = 0.0005
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        raise
                if _time.monotonic() > deadline:
                    raise TrialError(f"{self.path}: another writer held the store for {self.timeout:g} s; "
                                     f"nothing was stored (try again)")
                import random  # only when the store is busy (start-up time)

                _time.sleep(random.uniform(0.0001, delay))
                delay = min(delay * 2, 0.001)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")

    def _head_now(self) -> tuple[int, str] | None:
        """The head as stored now (inside the write transaction), if it agrees with the last event."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
        head = _read_head({"head": _text(row[0])}) if row else None
        top = self._conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0
        if head is None or head["seq"] != top:
            return None
        return head["seq"], head["hash"]

    def import_lines(self, lines: Iterable[str], source: str = "import") -> Receipt:
        """Record events given as JSON lines (blank lines skipped), all in one transaction.

        A first line that is an export header (``{"type": "trial_store", ...}``,
        as :meth:`export` writes) is checked: the events must come from a
        store of the same protocol.
        """
        events: list[Event] = []
        labels: list[str] = []
        first = True
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if first:
                first = False
                header = read_export_header(line, f"{source}:{number}")
                if header is not None:
                    self._check_header(header, f"{source}:{number}")
                    continue
            events.append(parse_event(line, f"{source}:{number}"))
            labels.append(f"{source}:{number}")
        return self.record(events, labels)

    def _check_header(self, header: Mapping[str, Any], where: str) -> None:
        ours = json.loads(self._meta().get("protocol", "{}"))
        if not isinstance(ours, dict) or header["protocol"].get("data") != ours.get("data"):
            raise TrialError(f"{where}: the events were exported from a store of another protocol "
                             f"({header['protocol'].get('source')}); this store holds "
                             f"{ours.get('source') if isinstance(ours, dict) else 'another'}: replayed under "
                             f"another protocol they would make another trial (remove this line to try anyway)")

    def export(self, out: IO[str], *, header: bool = True) -> int:
        """Write the export header (the store's protocol) and every event as one line of canonical JSON.

        Returns the number of events.  ``header=False`` writes the events
        only.  Each line is re-encoded as strict JSON: an event holding NaN
        or Infinity (which no check lets in) is refused rather than written.
        """
        rows = self._rows()
        if header:
            meta = self._meta()
            try:
                protocol = json.loads(meta.get("protocol", ""))
            except ValueError:
                raise TrialError(f"{self.path}: protocol: the stored protocol cannot be read; "
                                 f"run: escalation-rules trial verify") from None
            out.write(json.dumps({"type": EXPORT_HEADER, "format": self.format, "created_at": meta.get("created_at"),
                                  "protocol_hash": meta.get("protocol_hash"), "protocol": protocol},
                                 separators=(",", ":"), ensure_ascii=False) + "\n")
        count = 0
        for seq, _, body, _, _ in rows:
            try:
                line = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                  allow_nan=False)
                line.encode("utf-8")
            except (ValueError, RecursionError):
                raise TrialError(f"{self.path}: event {seq}: not strict JSON in UTF-8 (NaN, Infinity, or damaged "
                                 f"bytes?); run: escalation-rules trial verify") from None
            out.write(line + "\n")
            count += 1
        return count

    # -- verification

    def _trigger_problems(self) -> list[str]:
        found = {_text(name): _text(sql) for name, sql in
                 self._conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
        problems = []
        for name, sql in _TRIGGERS.items():
            if name not in found:
                problems.append(f"triggers: the append-only trigger {name} is missing (dropped behind the store's "
                                f"back: stored events could have been changed)")
            elif " ".join(found[name].split()).rstrip(";") != " ".join(sql.split()):
                problems.append(f"triggers: the append-only trigger {name} was changed behind the store's back")
        return problems

    def _meta_problems(self, meta: Mapping[str, str]) -> list[str]:
        problems: list[str] = []
        if any(_damaged(v) for v in meta.values()):
            problems.append("meta: holds bytes that are not UTF-8 text (damaged or changed behind the store's back)")
        if _sha(meta.get("protocol", "")) != meta.get("protocol_hash"):
            problems.append("protocol: the stored protocol does not match its hash (changed behind the store's back)")
        elif self._protocol_problem is not None:
            problems.append(self._protocol_problem)
        unknown = sorted(set(meta) - _META_KEYS)
        if unknown:
            problems.append(f"meta: unexpected entry {unknown[0]!r} (added behind the store's back?)")
        if (meta.get("format") == FORMAT) != ("key" in meta):
            problems.append("meta: the format and the signing key disagree (a signed store names its key, an "
                            "unsigned one none; changed behind the store's back)")
        return problems

    def _link_problems(self, rows: Sequence[_Row], prev: str, expected: int) -> tuple[list[str], str]:
        """Walk the chain from hash ``prev`` and sequence number ``expected``; the first break, and the last hash."""
        for seq, recorded, body, link, digest in rows:
            if seq != expected:
                what = f"event {expected} is missing" if seq > expected else f"event {seq} is out of order"
                return [f"event {seq}: broken link: {what} (removed behind the store's back?)"], prev
            if link != prev:
                return [f"event {seq}: broken link: its predecessor hash does not match event {seq - 1}"
                        if seq > 1 else "event 1: broken link: it does not link to the store's metadata"], prev
            if link_hash(link, seq, recorded, body) != digest:
                return [f"event {seq}: broken link: its content does not match its hash "
                        f"(changed behind the store's back)"], prev
            if any(_damaged(text) for text in (recorded, body, link, digest)):
                return [f"event {seq}: holds bytes that are not UTF-8 text (damaged, or forged with a recomputed "
                        f"hash)"], prev
            prev, expected = digest, expected + 1
        return [], prev

    def _chain_problems(self, meta: Mapping[str, str], rows: Sequence[_Row]) -> list[str]:
        problems = self._meta_problems(meta)
        prev = meta_hash(meta)
        if rows and rows[0][0] == 1 and rows[0][3] != prev:
            # the metadata changed after the first event was stored: say so once, then check the rest of the chain
            if not problems:
                problems.append("meta: the store's metadata (format, creation time, protocol) does not match the "
                                "hash the first event links to (changed behind the store's back)")
            prev = rows[0][3]
        meta_problems = len(problems)
        links, prev = self._link_problems(rows, prev, 1)
        problems += links
        if len(problems) == meta_problems:
            head = self._head_problems(meta, rows[-1][0] if rows else 0, prev)
            if not (meta_problems and not rows):  # with no events, a changed metadata also changes the head's hash
                problems += head
        return problems

    def _head_problems(self, meta: Mapping[str, str], last: int, prev: str) -> list[str]:
        """The head record against the chain that ends at event ``last`` with hash ``prev``; its signature."""
        if "head" not in meta:
            return ["head: the head record is missing (removed behind the store's back?)"]
        head = _read_head(meta)
        if head is None:
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
        return self._signature_problems(meta, head)

    def _signature_problems(self, meta: Mapping[str, str], head: Mapping[str, Any]) -> list[str]:
        """With a key: the store must be signed, by this key, and the head's signature must verify."""
        key = self.key
        if key is None:
            return []
        if meta.get("format") != FORMAT:
            return [f"format: the store is unsigned ({meta.get('format')}) but a key was given: a signed store never "
                    f"goes back to an unsigned format (downgraded, or the chain rewritten, behind the store's back?)"]
        if meta.get("key") != key.id:
            return [f"key: the store names key {str(meta.get('key'))[:16]}..., not {key.source} "
                    f"({key.id[:16]}...): signed with another key, or its metadata rewritten"]
        signature = head.get("sig")
        if not isinstance(signature, str) or not key.verify(signature, head_message(key.id, head["seq"],
                                                                                    head["hash"])):
            return [f"head: the signature of event {head['seq']}'s head does not verify with {key.source} (the "
                    f"chain was rewritten, or events appended, without the key)"]
        return []

    def verify(self, *, events: bool = True, expect: Receipt | str | None = None) -> VerifyReport:
        """Check the hash chain, the head, the metadata, the protocol and every event; name the first broken link.

        With a key (given when the store was opened), also that the store is
        signed with it and that the head's signature verifies.  ``expect``, a
        receipt (or ``SEQ:HASH`` / ``HASH``), must still be in the chain:
        nothing up to it was cut off or rewritten.  ``events=False`` checks
        the chain only (not each event against the trial).  Damage (a table
        dropped, text that is not UTF-8) is reported as a problem, never raised.
        """
        conn = self._conn
        problems: list[str] = []
        rows: list[_Row] = []
        meta: dict[str, str] = {}
        triggers: list[str] = []
        try:
            conn.execute("BEGIN")
            try:
                if events:
                    check = conn.execute("PRAGMA quick_check").fetchone()
                    if check and check[0] != "ok":
                        problems.append(f"{self.path}: SQLite quick_check: {check[0]}")
                meta = self._meta()
                triggers = self._trigger_problems()
                rows = self._rows()
            finally:
                conn.execute("COMMIT")
        except TrialError as err:
            problems.append(str(err).removeprefix(f"{self.path}: ").split("; run:")[0])
        except sqlite3.DatabaseError as err:
            problems.append(f"{self.path}: cannot be read ({err}; damaged behind the store's back?)")
        if problems and not rows:
            return VerifyReport(False, 0, tuple(problems))
        problems += self._chain_problems(meta, rows) + triggers
        # with a key: the chain is intact and its head's signature verifies (it is checked only on an intact chain)
        signed = not problems if self.key is not None else None
        if expect is not None:
            problems += self._receipt_problems(meta, rows, expect)
        first = None
        for line in problems:
            if line.startswith("event "):
                first = int(line.split()[1].rstrip(":"))
                break
        if not problems and events:
            try:
                explore_merged(self.protocol)
            except EscalationRulesError as err:
                problems.append(f"protocol: the stored protocol fails its build checks ({str(err).splitlines()[0]})")
        if not problems and events:
            try:
                parsed = [parse_event(body, f"event {seq}") for seq, _, body, _, _ in rows]
                fold(self.protocol, parsed, [f"event {r[0]}" for r in rows])
            except EscalationRulesError as err:
                problems.append(str(err))
                first = getattr(err, "index", None)
                first = rows[first][0] if isinstance(first, int) and first < len(rows) else first
        notes: list[str] = []
        if self.key is None and self.signed:
            notes.append("note: the head's signature was not checked: give the store's key (--key FILE, the public "
                         "key is enough) to prove the chain was not rewritten")
        elif self.key is None:
            notes.append("note: an unsigned store: verification finds damage and edits that leave the hashes "
                         "stale, not a chain rewritten with recomputed hashes (sign stores: trial init --key)")
        head = f"{rows[-1][0]}:{rows[-1][4]}" if rows else f"0:{meta_hash(meta)}"
        return VerifyReport(not problems, len(rows), tuple(problems), first, signed, head, tuple(notes))

    def _receipt_problems(self, meta: Mapping[str, str], rows: Sequence[_Row], expect: Receipt | str) -> list[str]:
        seq, digest = (expect.seq, expect.hash) if isinstance(expect, Receipt) else parse_expected_head(expect)
        hashes = {0: meta_hash(meta), **{r[0]: r[4] for r in rows}}
        if seq is None:
            if digest in hashes.values():
                return []
            return [f"receipt: no event in the store has hash {digest[:16]}... (events cut off after the receipt, "
                    f"or the chain rewritten)"]
        if hashes.get(seq) == digest:
            return []
        what = "has another hash" if seq in hashes else f"is missing (the chain ends at event {max(hashes)})"
        return [f"receipt: event {seq} {what}: events were cut off after the receipt, or the chain rewritten"]


def read_export_header(line: str, where: str) -> dict[str, Any] | None:
    """The export header of a JSON line (the store's protocol, tagged dates restored), or None for an event line.

    Raises
    ------
    TrialError
        A header that lacks its protocol.

    Examples
    --------
    >>> read_export_header('{"type": "screened", "at": "2025-01-02", "patient": "P1", "eligible": true}', "x:1")
    >>> read_export_header('{"type": "trial_store", "protocol": {}}', "x:1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    escalation_rules.trial.events.TrialError: x:1: protocol: expected the store's protocol (source and data) ...
    """
    if f'"{EXPORT_HEADER}"' not in line:
        return None
    data = json.loads(line, object_hook=_untag) if line.lstrip().startswith("{") else None
    if not isinstance(data, dict) or data.get("type") != EXPORT_HEADER:
        return None
    protocol = data.get("protocol")
    if not isinstance(protocol, dict) or not isinstance(protocol.get("data"), dict) \
            or not isinstance(protocol.get("source"), str):
        raise TrialError(f"{where}: protocol: expected the store's protocol (source and data) in the export header")
    return data


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
