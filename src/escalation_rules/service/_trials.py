"""Every call the service makes to the trial store, in one place (so a change of the store's API is one edit here).

Stores are files ``DIR/<trial id>.db``.  An SQLite connection belongs to the
thread that opened it, so each worker thread keeps its own open store per
trial (opening one re-checks its protocol, which costs tens of milliseconds).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..protocol import Protocol
from ..trial.events import event_to_dict, parse_time
from ..trial.store import TrialStore, protocol_data

__all__ = ["create", "events", "exists", "export", "protocol", "raw_protocol", "record", "status", "store_file",
           "verify"]

_local = threading.local()


def store_file(data: Path, trial: str) -> Path:
    """The store file of a trial id (already checked against :data:`~.auth.TRIAL_ID`)."""
    return data / f"{trial}.db"


def exists(data: Path, trial: str) -> bool:
    """Whether the trial's store file exists."""
    return store_file(data, trial).is_file()


def _open(data: Path, trial: str) -> TrialStore:
    cache: dict[str, TrialStore] = getattr(_local, "stores", None) or {}
    _local.stores = cache
    path = str(store_file(data, trial))
    store = cache.get(path)
    if store is None:
        store = TrialStore(path)
        cache[path] = store
    return store


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


def protocol(data: Path, trial: str) -> Protocol:
    """The protocol a trial's store was created with."""
    return _open(data, trial).protocol


def record(data: Path, trial: str, batch: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[int]:
    """Check and append events in one transaction; their sequence numbers."""
    return _open(data, trial).record(list(batch), labels)


def status(data: Path, trial: str, as_of: str | None) -> dict[str, Any] | str:
    """The status as ``trial status --json`` prints it, or the first problem when the chain fails verification."""
    store = _open(data, trial)
    report = store.verify(events=False)
    if not report.ok:
        return report.problems[0]
    return store.status(parse_time(as_of, "as_of") if as_of else None).to_dict()


def events(data: Path, trial: str, after: int = 0) -> list[dict[str, Any]]:
    """The stored events after sequence number ``after``, as ``trial log --json`` prints them."""
    return [s.to_dict() for s in _open(data, trial).events() if s.seq > after]


def event_dict(event: Any) -> dict[str, Any]:
    """The JSON form of an event object."""
    return event_to_dict(event)


def export(data: Path, trial: str) -> str:
    """Every event as JSON lines (``trial export``)."""
    out = io.StringIO()
    _open(data, trial).export(out)
    return out.getvalue()


def verify(data: Path, trial: str) -> dict[str, Any]:
    """The chain verification report (``trial verify --json``)."""
    return _open(data, trial).verify().to_dict()
