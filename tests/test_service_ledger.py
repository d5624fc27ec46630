"""Idempotency across a stop: a key written before its events were appended, with no answer kept (the server
stopped in between), is answered from the store on retry: replayed when the events are there, recorded when not."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import Server, running_server

SCREEN = {"type": "screened", "at": "2025-01-02T09:00:00Z", "patient": "P1", "eligible": True}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("ledger")) as running:
        assert running.call("POST", "/v1/trials", {"id": "demo", "protocol": "nct07117175"}, who="admin")[0] == 201
        yield running


def stopped_attempt(server: Server, key: str, body: Any, head: int) -> None:
    """What a server that stopped after writing the key (and maybe appending) leaves in its ledger."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    with sqlite3.connect(server.data / ".service" / "demo.sqlite") as conn:
        conn.execute("INSERT INTO idempotency (trial, key, person, request, response, head, batch) "
                     "VALUES (?, ?, ?, ?, NULL, ?, ?)", ("demo", key, "A. Admin", digest, head, json.dumps([body])))


def count(server: Server) -> int:
    return len(server.call("GET", "/v1/trials/demo/log", who="admin")[1]["events"])


def test_a_retry_after_a_stop_between_append_and_answer_records_nothing(server: Server) -> None:
    status, body = server.call("POST", "/v1/trials/demo/events", SCREEN, who="admin")  # the append that happened
    assert status == 201 and body["recorded"] == [1]
    stopped_attempt(server, "stopped-1", SCREEN, head=0)
    status, body = server.call("POST", "/v1/trials/demo/events", SCREEN, who="admin",
                               headers={"Idempotency-Key": "stopped-1"})
    assert (status, body["recorded"], body["replayed"]) == (201, [1], True)
    assert count(server) == 1
    again = server.call("POST", "/v1/trials/demo/events", SCREEN, who="admin", headers={"Idempotency-Key": "stopped-1"})
    assert again[1]["recorded"] == [1] and again[1]["replayed"] is True


def test_a_retry_after_a_stop_before_the_append_records_the_events(server: Server) -> None:
    other = {**SCREEN, "patient": "P2", "at": "2025-01-02T10:00:00Z"}
    stopped_attempt(server, "stopped-2", other, head=count(server))
    status, body = server.call("POST", "/v1/trials/demo/events", other, who="admin",
                               headers={"Idempotency-Key": "stopped-2"})
    assert (status, body["replayed"]) == (201, False) and body["recorded"] == [count(server)]


def test_a_refused_request_leaves_no_key_behind(server: Server) -> None:
    bad = {"type": "enrolled", "at": "2025-01-03T09:00:00Z", "patient": "P9", "dose": 1}  # never screened
    for _ in range(2):
        status, body = server.call("POST", "/v1/trials/demo/events", bad, who="admin",
                                   headers={"Idempotency-Key": "refused-1"})
        assert status == 422 and "Idempotency-Key" not in body["error"]
    with sqlite3.connect(server.data / ".service" / "demo.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM idempotency WHERE key = 'refused-1'").fetchone() == (0,)
