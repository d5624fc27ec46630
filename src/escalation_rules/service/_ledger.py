"""The service's own records beside the trial stores: idempotency keys and who recorded which event.

One SQLite file per trial, ``DIR/.service/<trial>.sqlite`` (so that appends
to different trials never wait for each other's commits).  A key is kept with the hash of
the request it came with and the answer given; the same key with another
request is refused.  The key is written (with the trial's last sequence
number and the events as sent) before the events are appended, and the
answer after: a key found without an answer marks an attempt that stopped in
between, and the events after that sequence number say whether it was stored.
The attribution table says which authenticated person recorded each event
(the trial store keeps the events themselves; a signature or adjudication
also names its person inside the event).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["Ledger"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS idempotency (trial TEXT NOT NULL, key TEXT NOT NULL, person TEXT NOT NULL, "
    "request TEXT NOT NULL, response TEXT, head INTEGER NOT NULL, batch TEXT NOT NULL, "
    "PRIMARY KEY (trial, key, person))",
    "CREATE TABLE IF NOT EXISTS attribution (trial TEXT NOT NULL, seq INTEGER NOT NULL, person TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL, PRIMARY KEY (trial, seq))",
)


class Ledger:
    """Idempotency keys and attribution; a connection per thread and trial (a trial's appends run in one thread)."""

    def __init__(self, data: Path) -> None:
        self.folder = data / ".service"
        self.folder.mkdir(exist_ok=True)
        self._local = threading.local()

    def _path(self, trial: str) -> str:
        return str(self.folder / f"{trial}.sqlite")

    def _conn(self, trial: str) -> sqlite3.Connection:
        conns: dict[str, sqlite3.Connection] = getattr(self._local, "conns", None) or {}
        self._local.conns = conns
        conn = conns.get(trial)
        if conn is None:
            conn = sqlite3.connect(self._path(trial), isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                conn.execute(statement)
            conns[trial] = conn
        return conn

    def answered(self, trial: str, key: str, person: str) -> tuple[str, dict[str, Any] | None, int, list[Any]] | None:
        """What is kept for a key: the request hash, the answer (None: the attempt stopped before answering), the
        trial's last sequence number before that attempt and the events it sent."""
        row = self._conn(trial).execute("SELECT request, response, head, batch FROM idempotency WHERE trial = ? "
                                        "AND key = ? AND person = ?", (trial, key, person)).fetchone()
        if row is None:
            return None
        return row[0], None if row[1] is None else json.loads(row[1]), row[2], json.loads(row[3])

    def begin(self, trial: str, key: str, person: str, request: str, head: int, batch: list[Any]) -> None:
        """Write a key before its events are appended."""
        self._conn(trial).execute("INSERT OR REPLACE INTO idempotency (trial, key, person, request, response, head, "
                                  "batch) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                                  (trial, key, person, request, head, json.dumps(batch, default=str)))

    def forget(self, trial: str, key: str, person: str) -> None:
        """Remove a key whose events were not stored (refused, or never appended)."""
        self._conn(trial).execute("DELETE FROM idempotency WHERE trial = ? AND key = ? AND person = ?",
                                  (trial, key, person))

    def keep(self, trial: str, key: str | None, person: str, response: dict[str, Any], seqs: list[int],
             recorded_at: str) -> None:
        """Keep the answer to a key and who recorded the events, in one transaction."""
        conn = self._conn(trial)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if key is not None:
                conn.execute("UPDATE idempotency SET response = ? WHERE trial = ? AND key = ? AND person = ?",
                             (json.dumps(response), trial, key, person))
            conn.executemany("INSERT OR REPLACE INTO attribution (trial, seq, person, recorded_at) VALUES (?, ?, ?, ?)",
                             [(trial, s, person, recorded_at) for s in seqs])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def people(self, trial: str) -> dict[int, str]:
        """Sequence number to the person who recorded it through the service."""
        if not Path(self._path(trial)).is_file():
            return {}
        conn = sqlite3.connect(self._path(trial), timeout=30)  # a read now and then (the log): not kept open
        try:
            return dict(conn.execute("SELECT seq, person FROM attribution WHERE trial = ?", (trial,)).fetchall())
        except sqlite3.OperationalError:  # made but its tables not yet: nothing recorded through the service
            return {}
        finally:
            conn.close()
