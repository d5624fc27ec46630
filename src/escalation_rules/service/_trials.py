"""Every call the service makes to the trial store, in one place (so a change of the store's API is one edit here).

Stores are files ``DIR/<trial id>.db``.  An SQLite connection belongs to the
thread that opened it, and opening a store re-checks its protocol (tens of
milliseconds), so each trial has a writer thread that opens its store once and
runs every append on it, one at a time (serialised in this process; the
store's transactions still guard against other processes), and a reader
thread with its own connection for status, log, verify and export, so reads
do not queue behind appends waiting for their fsync.  Reads see a whole
number of committed appends.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import EscalationRulesError
from ..protocol import Protocol
from ..trial.events import canonical_json, parse_event, parse_time
from ..trial.store import TrialStore, protocol_data

__all__ = [
    "create",
    "events",
    "exists",
    "export",
    "last_seq",
    "on_trial",
    "open_connections",
    "protocol",
    "raw_protocol",
    "record",
    "same_events",
    "status",
    "store_file",
    "verify",
]

_workers: dict[tuple[str, bool], ThreadPoolExecutor] = {}
_workers_lock = threading.Lock()
_local = threading.local()

T = TypeVar("T")


def store_file(data: Path, trial: str) -> Path:
    """The store file of a trial id (already checked against :data:`~.auth.TRIAL_ID`)."""
    return data / f"{trial}.db"


def exists(data: Path, trial: str) -> bool:
    """Whether the trial's store file exists."""
    return store_file(data, trial).is_file()


def _worker(path: str, trial: str, read: bool) -> ThreadPoolExecutor:
    """The trial's writer thread, or its reader thread (``read``); each keeps its own connection to the store."""
    lane = (path, read)
    with _workers_lock:
        worker = _workers.get(lane)
        if worker is None:
            name = f"trial-{trial}-{'read' if read else 'write'}"
            worker = _workers[lane] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        return worker


#: Two trial threads compute at a time in this process (Python runs one thread at a time anyway; the second
#: overlaps the first's fsync): the fewer threads contend for the interpreter lock, the sooner the event loop,
#: which answers decisions, takes it.  Reads hold a turn for their whole call, appends once they hold the
#: trial's lock (never while waiting for it, so a turn is never held waiting for another process).
_computing = threading.Semaphore(2)


def computing() -> threading.Semaphore:
    """The turn to compute: held by a trial thread while it works (see :data:`_computing`)."""
    return _computing


def _inside(path: str, work: Callable[[], T], read: bool) -> T:
    """Run ``work`` as a trial's worker thread runs it: calls on the same trial from inside run directly; a read
    waits for its turn to compute (an append takes it itself, after the trial's lock)."""
    outer = getattr(_local, "current", None)
    _local.current = path
    try:
        if not read:
            return work()
        with _computing:
            return work()
    finally:
        _local.current = outer


def _open(path: str) -> TrialStore:
    """This thread's connection to a store."""
    stores: dict[str, TrialStore] = getattr(_local, "stores", None) or {}
    _local.stores = stores
    store = stores.get(path)
    if store is None:
        store = stores[path] = TrialStore(path)
    return store


def _on_store(data: Path, trial: str, work: Callable[[TrialStore], T], *, read: bool = False) -> T:
    """Run ``work`` on the trial's open store in the trial's writer thread (reader thread: ``read``); its result.

    Inside a trial's worker (see :func:`on_trial`) it runs there directly.
    """
    path = str(store_file(data, trial))
    if getattr(_local, "current", None) == path:
        return work(_open(path))
    return _worker(path, trial, read).submit(_inside, path, lambda: work(_open(path)), read).result()


def on_trial(data: Path, trial: str, work: Callable[[], T], *, read: bool = False) -> asyncio.Future[T]:
    """Run ``work`` in the trial's writer thread (reader thread: ``read``), after the calls before it there; await
    its result from the event loop.

    The calls of this module that ``work`` makes on the same trial run
    directly in that thread, so a whole request (an append with its
    idempotency records) is one step in the trial's queue and the event
    loop stays free meanwhile.  Reads go through the reader thread's own
    connection: a status does not wait for the appends queued before it
    (SQLite's WAL gives it the events committed when it starts: a prefix).
    """
    path = str(store_file(data, trial))
    return asyncio.wrap_future(_worker(path, trial, read).submit(_inside, path, work, read))


def raw_protocol(spec: str, doses: int | None) -> dict[str, Any]:
    """The raw protocol a store keeps, for a protocol folder or a built-in design (checked)."""
    return protocol_data(spec, doses)


def create(data: Path, trial: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Create a trial store for a protocol's raw data (:func:`~escalation_rules.trial.store.protocol_data`)."""
    store = TrialStore.create(store_file(data, trial), raw)
    try:
        return {"trial": trial, "protocol": store.protocol.id, "source": store.protocol.source}
    finally:
        store.close()


def open_connections(data: Path, trial: str) -> None:
    """Open a trial's writer and reader connections now (each re-reads the protocol and fills the engine's tables on
    its first status: tens of milliseconds), so that its first appends and reads do not pay for that.

    Call it without holding the trial's lock: it waits for the calls queued before it.
    """
    path = str(store_file(data, trial))
    for opening in [_worker(path, trial, read).submit(_inside, path, lambda: _open(path).status(), read)
                    for read in (False, True)]:
        opening.result()


def protocol(data: Path, trial: str) -> Protocol:
    """The protocol a trial's store was created with."""
    return _on_store(data, trial, lambda store: store.protocol, read=True)


def record(data: Path, trial: str, batch: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[int]:
    """Check and append events in one transaction; their sequence numbers."""
    return _on_store(data, trial, lambda store: list(store.record(list(batch), labels).events))


def status(data: Path, trial: str, as_of: str | None) -> dict[str, Any] | str:
    """The status as ``trial status --json`` prints it, or the first problem when the chain fails verification."""
    moment = parse_time(as_of, "as_of") if as_of else None

    def work(store: TrialStore) -> dict[str, Any] | str:
        problems = store.chain_problems()
        if problems:
            return problems[0]
        return store.status(moment).to_dict()

    return _on_store(data, trial, work, read=True)


def last_seq(data: Path, trial: str) -> int:
    """The sequence number of the trial's last stored event (0 for none)."""
    return _on_store(data, trial, lambda store: store.record([]).seq)  # the head, checked as far as new


def same_events(stored: Sequence[Mapping[str, Any]], sent: Sequence[Any]) -> bool:
    """Whether stored events (``"event"`` of :func:`events`) are the events sent, in their canonical form."""
    if len(stored) < len(sent):
        return False
    try:
        return all(canonical_json(parse_event(s["event"])) == canonical_json(parse_event(e))
                   for s, e in zip(stored, sent, strict=False))
    except EscalationRulesError:
        return False


def events(data: Path, trial: str, after: int = 0) -> list[dict[str, Any]]:
    """The stored events after sequence number ``after``, as ``trial log --json`` prints them."""
    return _on_store(data, trial, lambda store: [s.to_dict() for s in store.events(after)], read=True)


def export(data: Path, trial: str) -> str:
    """Every event as JSON lines (``trial export``)."""
    def work(store: TrialStore) -> str:
        out = io.StringIO()
        store.export(out)  # as `trial export` writes it: a header with the protocol, then the events
        return out.getvalue()

    return _on_store(data, trial, work, read=True)


def verify(data: Path, trial: str) -> dict[str, Any]:
    """The chain verification report (``trial verify --json``)."""
    return _on_store(data, trial, lambda store: store.verify().to_dict(), read=True)
