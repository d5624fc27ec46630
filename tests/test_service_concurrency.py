"""Many clients appending to one trial at once through a real server: nothing lost, nothing duplicated."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import Server, running_server

CLIENTS, APPENDS = 12, 15


@pytest.fixture(scope="module", params=[1, 2], ids=["one process", "two worker processes"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server with one process, and one with ``--workers 2`` (each request a new connection, so the two
    processes share the appends, the retries and the reads)."""
    with running_server(tmp_path_factory.mktemp("load"), extra=("--workers", str(request.param))) as running:
        assert running.call("POST", "/v1/trials", {"id": "load", "protocol": "nct07117175"}, who="admin")[0] == 201
        yield running


def test_concurrent_appends_lose_nothing_and_duplicate_nothing_and_status_is_a_prefix(server: Server) -> None:
    """Every acknowledged event is stored exactly once (retries with the same Idempotency-Key included), the chain
    verifies, and every status read while appends run counts a number of events between the previous read's and
    the final count."""
    acknowledged: list[int] = []
    failures: list[str] = []
    seen_counts: list[list[int]] = [[] for _ in range(CLIENTS)]
    lock = threading.Lock()

    def client(number: int) -> None:
        for i in range(APPENDS):
            moment = number * APPENDS + i
            event = {"type": "screened", "at": f"2025-01-02T{moment // 3600:02d}:{moment // 60 % 60:02d}:"
                                               f"{moment % 60:02d}Z", "patient": f"C{number:02d}-{i:03d}",
                     "eligible": True}
            key = {"Idempotency-Key": f"client-{number}-{i}"}
            status, body = server.call("POST", "/v1/trials/load/events", event, who="investigator", headers=key)
            if i % 5 == 0:  # a client that did not hear the answer retries with the same key
                retry = server.call("POST", "/v1/trials/load/events", event, who="investigator", headers=key)
                if retry[0] != 201 or retry[1]["recorded"] != body.get("recorded"):
                    with lock:
                        failures.append(f"retry {number}/{i}: {retry}")
            if status != 201:
                with lock:
                    failures.append(f"{number}/{i}: {status} {body}")
                continue
            with lock:
                acknowledged.extend(body["recorded"])
            if i % 3 == 0:
                st = server.call("GET", "/v1/trials/load/status", who="monitor")
                if st[0] != 200:
                    with lock:
                        failures.append(f"status {number}/{i}: {st}")
                    continue
                seen_counts[number].append(st[1]["events"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    log = server.call("GET", "/v1/trials/load/log", who="monitor")[1]["events"]
    stored = [e["seq"] for e in log]
    assert sorted(acknowledged) == stored == list(range(1, CLIENTS * APPENDS + 1))
    patients = [e["event"]["patient"] for e in log]
    assert len(set(patients)) == len(patients) == CLIENTS * APPENDS
    for counts in seen_counts:
        assert counts == sorted(counts) and all(c <= len(stored) for c in counts)
    assert server.call("GET", "/v1/trials/load/verify", who="monitor")[1]["ok"] is True


def test_the_same_idempotency_key_sent_twice_at_once_records_one_event(server: Server) -> None:
    """Two connections send the same key and body at the same moment (with two worker processes, often to both):
    both answers name the same event, and the store holds it once."""
    assert server.call("POST", "/v1/trials", {"id": "twice", "protocol": "nct07117175"}, who="admin")[0] in (201, 409)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()
    pairs = 20

    def send(i: int, gate: threading.Barrier) -> None:
        event = {"type": "screened", "at": f"2025-01-03T00:00:{i:02d}Z", "patient": f"T{i:02d}", "eligible": True}
        gate.wait()
        answer = server.call("POST", "/v1/trials/twice/events", event, who="admin",
                             headers={"Idempotency-Key": f"twice-{i}"})
        with lock:
            answers.append((i, answer))

    for i in range(pairs):
        gate = threading.Barrier(2)
        both = [threading.Thread(target=send, args=(i, gate)) for _ in range(2)]
        for t in both:
            t.start()
        for t in both:
            t.join()
    recorded: dict[int, list[Any]] = {}
    for i, (status, body) in answers:
        assert status == 201, body
        recorded.setdefault(i, []).append(body["recorded"])
    assert all(a == b for a, b in recorded.values())
    patients = [e["event"]["patient"] for e in server.call("GET", "/v1/trials/twice/log", who="admin")[1]["events"]]
    assert sorted(patients) == [f"T{i:02d}" for i in range(pairs)]
