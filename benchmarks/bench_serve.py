"""Benchmark the HTTP service: a real ``escalation-rules serve`` process and N concurrent clients.

Run from the repository root::

    python benchmarks/bench_serve.py                 # 50 clients x 200 requests
    python benchmarks/bench_serve.py --clients 20 --requests 100
    python benchmarks/bench_serve.py --workers 2     # two server processes
    python benchmarks/bench_serve.py --quick         # 10 clients x 20 requests (a smoke test for CI)

The server runs in its own process (``--workers N``: N processes, as
``serve --workers``); the clients are asyncio tasks in this process, each
with one keep-alive HTTP/1.1 connection, so that the load generator costs a
few per cent of a core rather than competing with the server (it prints its
own CPU share).  Each client sends a mix: 60% decide (a history drawn from a
fixed set of nine, NCT07117175: after the first time, a kept answer), 20%
trial status and 20% event appends (a ``screened`` event for a new patient,
each at its own moment, with an Idempotency-Key), the clients spread over
``--trials`` trials (default 10: five clients on each trial at 50 clients),
authenticated with a token from a users file.  Before the clock starts each
client sends one request of each kind, untimed (the first request a server
process gets for a trial opens the store: tens of milliseconds); the slowest
client's warm-up is printed.

Prints requests/s, p50/p99/max latency per kind of request, and the count of
events in the store against the count acknowledged; exits 1 if they differ
or any answer was unexpected.  Targets: decide p99 under 20 ms at 50
clients; no lost or duplicated event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
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


def start(tmp: Path, workers: int) -> contextlib.AbstractContextManager[Server]:
    """The server the tests use (tests/_service_server.py), with one user holding every role the clients need."""
    users = tmp / "users.toml"
    users.write_text(f'[[users]]\nperson = "Bench"\ntoken_hash = "{hash_token(TOKEN)}"\nroles = {{ "*" = ["admin", '
                     f'"investigator"] }}\n', encoding="utf-8")
    return running_server(tmp, users=False, extra=("--users", str(users), "--workers", str(workers)))


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a client that costs little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}",
                 f"Content-Length: {len(data)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if body is not None:
            lines.append("Content-Type: application/json")
        self.writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        if "content-length" not in fields:
            raise SystemExit(f"bench_serve: an answer without Content-Length: {head[0]}")
        payload = await self.reader.readexactly(int(fields["content-length"]))
        return int(head[0].split()[1]), json.loads(payload) if payload else None

    def close(self) -> None:
        self.writer.close()


async def _once(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = await Connection.open(port)
    try:
        return await conn.call(method, path, body)
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--requests", type=int, default=200, help="requests per client (default 200)")
    parser.add_argument("--trials", type=int, default=10, help="trials the clients share (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (serve --workers; default 1)")
    parser.add_argument("--quick", action="store_true", help="10 clients x 20 requests (a smoke test for CI)")
    args = parser.parse_args()
    clients, per_client = (10, 20) if args.quick else (args.clients, args.requests)
    trials = max(1, min(args.trials, clients))
    with tempfile.TemporaryDirectory() as folder, start(Path(folder), args.workers) as server:
        return asyncio.run(run(int(server.url.rsplit(":", 1)[1]), clients, per_client, trials))


async def run(port: int, clients: int, per_client: int, trials: int) -> int:
    for t in range(trials):
        assert (await _once(port, "POST", "/v1/trials", {"id": f"bench-{t}", "protocol": "nct07117175"}))[0] == 201
    latencies: dict[str, list[float]] = {"decide": [], "status": [], "append": []}
    acknowledged: list[tuple[str, int]] = []
    problems: list[str] = []
    connections = [await Connection.open(port) for _ in range(clients)]
    go = asyncio.Event()

    async def one(conn: Connection, kind: str, number: int, i: int, rng: random.Random) -> None:
        trial = f"bench-{number % trials}"
        if kind == "decide":
            status, body = await conn.call("POST", "/v1/protocols/nct07117175/decide",
                                           {"history": rng.choice(HISTORIES)})
            ok = status == 200
        elif kind == "status":
            status, body = await conn.call("GET", f"/v1/trials/{trial}/status")
            ok = status == 200
        else:
            moment = number * (per_client + 1) + i  # seconds after 2025-01-02: every event at its own moment
            event = {"type": "screened", "at": f"2025-01-02T{moment // 3600:02d}:{moment // 60 % 60:02d}:"
                                               f"{moment % 60:02d}Z", "patient": f"B{number:03d}-{i:04d}",
                     "eligible": True}
            status, body = await conn.call("POST", f"/v1/trials/{trial}/events", event,
                                           {"Idempotency-Key": f"{number}-{i}"})
            ok = status == 201
            if ok:
                acknowledged.extend((trial, seq) for seq in body["recorded"])
        if not ok:
            problems.append(f"{kind}: {status} {body}")

    async def client(number: int, conn: Connection) -> None:
        rng = random.Random(number)
        t0 = time.perf_counter()
        for kind in ("decide", "status", "append"):  # the warm-up: untimed (its event is counted below)
            await one(conn, kind, number, per_client, rng)
        warm_up.append(time.perf_counter() - t0)
        await go.wait()
        for i in range(per_client):
            roll = rng.random()
            kind = "decide" if roll < 0.6 else "status" if roll < 0.8 else "append"
            t0 = time.perf_counter()
            await one(conn, kind, number, i, rng)
            latencies[kind].append(time.perf_counter() - t0)
        conn.close()

    warm_up: list[float] = []
    tasks = [asyncio.create_task(client(n, c)) for n, c in enumerate(connections)]
    while len(warm_up) < clients and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    cpu0, t0 = time.process_time(), time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stored: list[tuple[str, int]] = []
    for t in range(trials):
        stored.extend((f"bench-{t}", e["seq"])
                      for e in (await _once(port, "GET", f"/v1/trials/bench-{t}/log"))[1]["events"])
    total = sum(len(v) for v in latencies.values())
    print(f"| {clients} clients x {per_client} requests, {trials} trial(s) | {total / elapsed:,.0f} requests/s "
          f"| {elapsed:.1f} s | load generator CPU {cpu / elapsed:.0%} of one core |")
    print(f"warm-up (untimed, before the clock starts): one decide, status and append per client, the slowest "
          f"client's three in {max(warm_up, default=0) * 1000:.0f} ms")
    print("| request | count | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for kind, values in [*latencies.items(), ("all", [v for vs in latencies.values() for v in vs])]:
        if values:
            cut = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
            print(f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} | {cut[98] * 1000:.1f} "
                  f"| {max(values) * 1000:.1f} |")
    same = sorted(acknowledged) == sorted(stored) and len(set(stored)) == len(stored)
    print(f"events acknowledged: {len(acknowledged)}; stored: {len(stored)}; "
          f"{'equal, no duplicates' if same else 'DIFFERENT'}")
    for line in problems[:5]:
        print(f"unexpected answer: {line}", file=sys.stderr)
    return 0 if same and not problems else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
