"""Reliability of the trial store with real processes and real files: concurrency and SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from escalation_rules.trial.store import TrialStore

SPEC = "spec/nct07117175"

# A writer process: waits for the start file, then records screening events one transaction at a time,
# printing "ok ID" after each record() returned.
WRITER = """
import os, sys, time
from escalation_rules.trial.store import TrialStore
db, prefix, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = TrialStore(db, key=sys.argv[5] if len(sys.argv) > 5 else None)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
for i in range(count):
    pid = f"{prefix}{i:03d}"
    at = f"2025-01-01T{i // 60:02d}:{i % 60:02d}:00Z"
    store.record({"type": "screened", "at": at, "patient": pid, "eligible": True})
    print("ok", pid, flush=True)
store.close()
"""


def writer(db: Path, prefix: str, count: int, go: Path, key: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), prefix, str(count), str(go),
                             *([key] if key else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")


def stored_patients(db: Path) -> list[str]:
    with TrialStore(db) as store:
        return [getattr(s.event, "patient", "") for s in store.events()]


@pytest.mark.parametrize("writers", ["AB", "ABCD"])
def test_processes_recording_at_once_store_every_event_once(tmp_path: Path, writers: str) -> None:
    """Processes appending concurrently: every event is stored exactly once and the chain verifies.

    With four writers the store is signed and the signature verifies at the end; their events share
    timestamps, so appends take the incremental paths for ties and events dated before the latest.
    """
    from escalation_rules.trial.keys import generate_key

    db, go = tmp_path / "t.db", tmp_path / "go"
    key = None
    if len(writers) > 2:
        key = str(tmp_path / "trial.key")
        generate_key(key)
    TrialStore.create(db, SPEC, key=key).close()
    count = 40
    procs = [writer(db, prefix, count, go, key) for prefix in writers]
    for proc in procs:
        wait_ready(proc)
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.count("ok ") == count
    patients = stored_patients(db)
    expected = sorted(f"{p}{i:03d}" for p in writers for i in range(count))
    assert sorted(patients) == expected
    with TrialStore(db, key=key) as store:
        report = store.verify()
        assert report.ok, report.problems
        assert report.signed is (True if key else None)
        assert [s.seq for s in store.events()] == list(range(1, len(writers) * count + 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_points_loses_no_acknowledged_event(tmp_path: Path, seed: int) -> None:
    """A writer killed with SIGKILL at a random moment: every acknowledged event is stored, the store verifies."""
    rng = random.Random(seed)
    db, go = tmp_path / "t.db", tmp_path / "go"
    TrialStore.create(db, SPEC).close()
    go.touch()
    acknowledged: list[str] = []
    for round_ in range(3):
        proc = writer(db, f"R{round_}-", 200, go)
        wait_ready(proc)
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0)  # 0: it finished before the kill (a very fast machine)
        acknowledged += [line.split()[1] for line in out.splitlines() if line.startswith("ok ")]
        patients = set(stored_patients(db))
        missing = [p for p in acknowledged if p not in patients]
        assert not missing, f"acknowledged but lost: {missing}"
        with TrialStore(db) as store:
            report = store.verify()
            assert report.ok, report.problems
    assert acknowledged, "the writer never got to record anything; raise the delays"
