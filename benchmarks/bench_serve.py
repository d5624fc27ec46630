"""Benchmark the HTTP service: a real ``escalation-rules serve`` process and N concurrent clients.

Run from the repository root::

    python benchmarks/bench_serve.py                 # 50 clients x 200 requests
    python benchmarks/bench_serve.py --clients 20 --requests 100
    python benchmarks/bench_serve.py --quick         # 10 clients x 20 requests (a smoke test for CI)

Each client keeps one HTTP connection and sends a mix: 60% decide (a history
drawn from a fixed set, NCT07117175), 20% trial status and 20% event appends
(a ``screened`` event for a new patient, each at its own moment, with an
Idempotency-Key), the clients spread over ``--trials`` trials (default 10:
five clients on each trial at 50 clients), authenticated with a token from a
users file.
Prints requests/s, p50/p99 latency per kind of request, and the count of
events in the store against the count acknowledged; exits 1 if they differ
or any answer was unexpected.  Targets: decide p99 under 20 ms at 50
clients; no lost or duplicated event.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from escalation_rules.service.auth import hash_token

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # one way to start a server, shared with the service tests

from _service_server import Server, running_server  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
HISTORIES = ["", "1N", "1T", "1TNN", "1N [escalate] 2NNN", "1N [escalate] 2NTN", "1N [escalate] 2NTNNNN",
             "1N [escalate] 2NNN 3NTN", "1N [escalate] 2NNN 3NTNNNN"]


def start(tmp: Path) -> contextlib.AbstractContextManager[Server]:
    """The server the tests use (tests/_service_server.py), with one user holding every role the clients need."""
    users = tmp / "users.toml"
    users.write_text(f'[[users]]\nperson = "Bench"\ntoken_hash = "{hash_token(TOKEN)}"\nroles = {{ "*" = ["admin", '
                     f'"investigator"] }}\n', encoding="utf-8")
    return running_server(tmp, users=False, extra=("--users", str(users)))


def request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    payload = response.read()
    return response.status, json.loads(payload) if payload else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--requests", type=int, default=200, help="requests per client (default 200)")
    parser.add_argument("--trials", type=int, default=10, help="trials the clients share (default 10)")
    parser.add_argument("--quick", action="store_true", help="10 clients x 20 requests (a smoke test for CI)")
    args = parser.parse_args()
    clients, per_client = (10, 20) if args.quick else (args.clients, args.requests)
    trials = max(1, min(args.trials, clients))
    with tempfile.TemporaryDirectory() as folder, start(Path(folder)) as server:
        return run(int(server.url.rsplit(":", 1)[1]), clients, per_client, trials)


def run(port: int, clients: int, per_client: int, trials: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for t in range(trials):
        assert request(conn, "POST", "/v1/trials", {"id": f"bench-{t}", "protocol": "nct07117175"})[0] == 201
    latencies: dict[str, list[float]] = {"decide": [], "status": [], "append": []}
    acknowledged: list[tuple[str, int]] = []
    problems: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        rng = random.Random(number)
        trial = f"bench-{number % trials}"
        own = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine: dict[str, list[float]] = {k: [] for k in latencies}
        acks: list[tuple[str, int]] = []
        barrier.wait()
        for i in range(per_client):
            roll = rng.random()
            t0 = time.perf_counter()
            if roll < 0.6:
                kind, (status, body) = "decide", request(own, "POST", "/v1/protocols/nct07117175/decide",
                                                         {"history": rng.choice(HISTORIES)})
                ok = status == 200
            elif roll < 0.8:
                kind, (status, body) = "status", request(own, "GET", f"/v1/trials/{trial}/status")
                ok = status == 200
            else:
                moment = number * per_client + i  # seconds after 2025-01-02: every event at its own moment
                event = {"type": "screened", "at": f"2025-01-02T{moment // 3600:02d}:{moment // 60 % 60:02d}:"
                                                   f"{moment % 60:02d}Z", "patient": f"B{number:03d}-{i:04d}",
                         "eligible": True}
                kind, (status, body) = "append", request(own, "POST", f"/v1/trials/{trial}/events", event,
                                                         {"Idempotency-Key": f"{number}-{i}"})
                ok = status == 201
                if ok:
                    acks.extend((trial, seq) for seq in body["recorded"])
            mine[kind].append(time.perf_counter() - t0)
            if not ok:
                with lock:
                    problems.append(f"{kind}: {status} {body}")
        with lock:
            for k, values in mine.items():
                latencies[k].extend(values)
            acknowledged.extend(acks)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # the first one idled past keep-alive
    stored = [(f"bench-{t}", e["seq"]) for t in range(trials)
              for e in request(conn, "GET", f"/v1/trials/bench-{t}/log")[1]["events"]]
    total = sum(len(v) for v in latencies.values())
    print(f"| {clients} clients x {per_client} requests, {trials} trial(s) | {total / elapsed:,.0f} requests/s "
          f"| {elapsed:.1f} s |")
    print("| request | count | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|")
    for kind, values in [*latencies.items(), ("all", [v for vs in latencies.values() for v in vs])]:
        if values:
            cut = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
            print(f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} | {cut[98] * 1000:.1f} |")
    same = sorted(acknowledged) == sorted(stored) and len(set(stored)) == len(stored)
    print(f"events acknowledged: {len(acknowledged)}; stored: {len(stored)}; "
          f"{'equal, no duplicates' if same else 'DIFFERENT'}")
    for line in problems[:5]:
        print(f"unexpected answer: {line}", file=sys.stderr)
    return 0 if same and not problems else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
