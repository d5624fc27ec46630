"""Benchmark the trial store: appends per second with concurrent writers, status latency by store size.

Run from the repository root::

    python benchmarks/bench_trial.py             # 1 and 8 writers x 200 appends; status at 1,000 and 10,000 events
    python benchmarks/bench_trial.py --quick     # a smoke test for CI (fewer appends, status at 1,000 events)
    python benchmarks/bench_trial.py --unsigned  # the same on an unsigned store

Each store is NCT07117175 with a signed chain (Ed25519; ``--unsigned`` for
the unsigned format).  A store is first filled with the first patients'
events (screening, enrolment, infusion, an adverse event, signatures) and
then screenings, in transactions of 500.  *Appends*: ``W`` writer processes,
each with its own open store, append one event per transaction (a screening
dated by the machine's clock, as ``trial record`` does without ``--at``),
all at once; the row gives all appends over the wall time.  Every append is
a committed, fsync'ed, signed transaction.  *Status*: ``open + status`` opens
the store and derives the status (the whole chain checked and every event
folded, as ``trial status`` does once per process); ``status`` asks an open
store again (what host software holding the store open pays; new events by
other writers are checked and folded first).  Targets: 200 appends/s with 8
writers, status under 10 ms at 1,000 events.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from typing import Any

from escalation_rules.trial.keys import generate_key
from escalation_rules.trial.store import TrialStore, machine_now

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec", "nct07117175")

#: The first patients of the trial: every kind of event the fold checks against the protocol.
START: list[dict[str, Any]] = [
    {"type": "screened", "at": "2025-01-01T08:00Z", "patient": "P01", "eligible": True},
    {"type": "enrolled", "at": "2025-01-01T09:00Z", "patient": "P01", "dose": 1},
    {"type": "infused", "at": "2025-01-02T10:00Z", "patient": "P01", "date": "2025-01-02"},
    {"type": "ae_reported", "at": "2025-01-03T10:00Z", "patient": "P01", "ae": "c1",
     "term": "Cytokine release syndrome", "category": "crs", "components": {"fever": True},
     "onset": "2025-01-03T08:00Z", "attribution": "possible"},
    {"type": "decision_signed", "at": "2025-02-01T09:00Z", "option": "escalate", "role": "investigator",
     "person": "Dr A"},
    {"type": "decision_signed", "at": "2025-02-01T10:00Z", "option": "escalate", "role": "sponsor",
     "person": "Ms B"},
    {"type": "screened", "at": "2025-02-02T08:00Z", "patient": "P02", "eligible": True},
    {"type": "enrolled", "at": "2025-02-02T09:00Z", "patient": "P02", "dose": 2},
]


def make_store(folder: str, events: int, key: str | None) -> str:
    """A store holding ``events`` events: START, then screenings one minute apart."""
    path = os.path.join(folder, f"trial-{events}-{time.monotonic_ns()}.db")
    TrialStore.create(path, SPEC, key=key).close()
    base = datetime(2025, 3, 1, tzinfo=UTC)
    filler = [{"type": "screened", "at": (base + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "patient": f"S{i:06d}", "eligible": False} for i in range(max(0, events - len(START)))]
    batch = [*START, *filler][:events]
    with TrialStore(path, key=key) as store:
        for i in range(0, len(batch), 500):
            store.record(batch[i:i + 500])
    return path


def _writer(path: str, key: str | None, writer: int, count: int, barrier: Barrier) -> None:
    with TrialStore(path, key=key, timeout=120) as store:
        store.chain_problems()  # open and check the store before the clock starts
        barrier.wait()
        for i in range(count):
            now = machine_now().strftime("%Y-%m-%dT%H:%M:%SZ")
            store.record({"type": "screened", "at": now, "patient": f"W{writer}-{i}", "eligible": False})


def appends(path: str, key: str | None, writers: int, count: int) -> tuple[float, int]:
    """Wall seconds for ``writers`` processes to append ``count`` events each, and how many the store gained."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    procs = [context.Process(target=_writer, args=(path, key, w, count, barrier)) for w in range(writers)]
    with TrialStore(path) as store:
        before = len(store.events())
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - start
    if any(proc.exitcode != 0 for proc in procs):
        raise SystemExit("a writer failed")
    with TrialStore(path, key=key) as store:
        report = store.verify(events=False)
        gained = report.events - before
        if not report.ok:
            raise SystemExit(f"the store fails verification after the run: {report.problems[0]}")
    return wall, gained


def timed(run: Callable[[], object], repeat: int) -> float:
    """The median of ``repeat`` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200, help="appends per writer (default 200)")
    parser.add_argument("--prefill", type=int, default=1000, help="events in the store before the appends")
    parser.add_argument("--sizes", default="1000,10000", help="store sizes for the status latency")
    parser.add_argument("--unsigned", action="store_true", help="unsigned stores (default: signed)")
    parser.add_argument("--quick", action="store_true", help="20 appends per writer, status at 1,000 events")
    args = parser.parse_args()
    if args.quick:
        args.appends, args.sizes = 20, "1000"
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        key = None
        if not args.unsigned:
            key = os.path.join(folder, "trial.key")
            generate_key(key)
        kind = "unsigned" if args.unsigned else "signed (Ed25519)"
        print(f"NCT07117175 trial store, {kind}, WAL with synchronous=FULL, one event per transaction\n")
        print("| writers | appends | store before | wall s | appends/s |")
        print("|---:|---:|---:|---:|---:|")
        for writers in (1, 8):
            path = make_store(folder, args.prefill, key)
            wall, gained = appends(path, key, writers, args.appends)
            print(f"| {writers} | {gained:,} | {args.prefill:,} events | {wall:.2f} | {gained / wall:,.0f} |")
        print("\n| events in the store | open + status (ms) | status of an open store (ms) |")
        print("|---:|---:|---:|")
        for size in sizes:
            path = make_store(folder, size, key)

            def cold(path: str = path) -> None:
                with TrialStore(path, key=key, readonly=True) as store:
                    store.status()

            with TrialStore(path, key=key, readonly=True) as store:
                store.status()
                warm = timed(store.status, 50)
            print(f"| {size:,} | {timed(cold, 5):.1f} | {warm:.2f} |")
        print("\n(wall time on a machine shared with other processes; fsync cost depends on the disk)")


if __name__ == "__main__":
    main()
