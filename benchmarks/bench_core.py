"""Benchmark the decision engine and exhaustive verification.

Run from the repository root::

    python benchmarks/bench_core.py            # all rows
    python benchmarks/bench_core.py --quick    # skip the largest ladders
    python benchmarks/bench_core.py --only verify   # one group of rows: startup, next or verify

Prints a Markdown table (the README quotes it).  Times are wall-clock on
this machine, best of several repeats for ``next``.  The start-up rows run
the installed ``escalation-rules`` command as a whole process, as trial
software calling the CLI once per decision does (median of several runs,
with a bare ``python -c pass`` for comparison); the target is under 0.1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from escalation_rules import Protocol, builtin_design, compile_protocol, decide, load_protocol, verify
from escalation_rules._limits import MAX_DOSES


def best_of(fn: Callable[[], object], repeat: int, number: int) -> float:
    """Best mean seconds per call over ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def bench_next() -> list[tuple[str, str, str]]:
    rows = []
    nct = load_protocol("spec/nct07117175")
    dee = builtin_design("3+3-deescalate", doses=5)
    cases = [
        ("NCT07117175", nct, "1N 2NNN 3NTN 3NNN"),
        ("NCT07117175 (partial, determined)", nct, "1N 2NNN 3TT"),
        ("3+3-deescalate, 5 doses", dee, "1NNN 2NNN 3NTN 3NNN 4TT"),
        ("3+3-deescalate, 5 doses", dee, "1NNN 2NNN 3NNN 4NNN 5NNN"),
    ]
    for name, protocol, history in cases:
        seconds = best_of(lambda p=protocol, h=history: decide(p, h), repeat=5, number=500)
        rows.append((f"next: {name}", f"`{history}`", f"{seconds * 1e6:.0f} µs"))
    return rows


def bench_startup(quick: bool) -> list[tuple[str, str, str]]:
    """Whole-process wall time of the commands trial software calls per decision (median of several runs)."""
    command = shutil.which("escalation-rules", path=str(Path(sys.executable).parent)) or shutil.which(
        "escalation-rules")
    if command is None:
        return [("start-up", "escalation-rules is not installed", "-")]
    runs = 5 if quick else 21
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "trial.db")
        subprocess.run([command, "trial", "init", "--spec", "nct07117175", db], check=True, capture_output=True)
        # the example record is the installed copy, so this runs from any folder
        from escalation_rules.spec import shipped_dir

        record = str((shipped_dir() or Path("spec")) / "patients" / "eligible.json")
        cases = [
            ("python -c pass (interpreter alone)", [sys.executable, "-c", "pass"]),
            ("escalation-rules next nct07117175 '1N 2NNN'", [command, "next", "nct07117175", "1N 2NNN"]),
            ("escalation-rules screen nct07117175 spec/patients/eligible.json",
             [command, "screen", "nct07117175", record]),
            ("escalation-rules trial status DB (new store)", [command, "trial", "status", db]),
        ]
        # as installed: bytecode written and used (pip compiles it; an environment may have turned it off)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        rows = []
        for name, argv in cases:
            subprocess.run(argv, check=False, capture_output=True, env=env)  # warm-up: writes the bytecode
            times, cpu = [], []
            for _ in range(runs):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                times.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            rows.append((f"start-up: {name}", f"whole process, median of {runs}",
                         f"{statistics.median(times) * 1000:.0f} ms (CPU {statistics.median(cpu) * 1000:.0f} ms)"))
    return rows


def bench_verify(quick: bool) -> list[tuple[str, str, str]]:
    """``verify`` as the CLI runs it (merged states), and on the full compiled graph (``--full``)."""
    rows = []
    specs: list[tuple[str, Callable[[], Protocol], bool]] = [
        ("NCT07117175", lambda: load_protocol("spec/nct07117175"), True),
        ("accelerated-titration, 5 doses", lambda: builtin_design("accelerated-titration", 5), True),
        ("3+3-escalate-only, 5 doses", lambda: builtin_design("3+3-escalate-only", 5), True),
    ]
    for k in (5, 10, 15) if quick else (5, 10, 15, 20, 30, MAX_DOSES):
        specs.append((f"3+3-deescalate, {k} doses", lambda k=k: builtin_design("3+3-deescalate", k), k <= 10))
    for name, make, full_too in specs:
        for full in (False, True) if full_too else (False,):
            best, cpu = float("inf"), float("inf")
            for _ in range(1 if full else 3):  # merged: best of 3 (wall and CPU), the machine being shared
                start, start_cpu = time.perf_counter(), time.process_time()
                protocol = make()
                report = verify(compile_protocol(protocol) if full else protocol)
                best = min(best, time.perf_counter() - start)
                cpu = min(cpu, time.process_time() - start_cpu)
            status = "ok" if report.ok else "FAIL"
            kind = "full graph" if full else "merged"
            per_state = f" (CPU {cpu * 1000:.0f} ms, {cpu / report.states * 1e6:.0f} µs per state)"
            paths = f"{report.paths:,}" if report.paths < 10**11 else _sci(report.paths)
            rows.append((f"verify ({kind}): {name}", f"{report.states:,} states, {paths} paths, {status}",
                         (f"{best * 1000:.0f} ms" if best < 1 else f"{best:.2f} s") + per_state))
    return rows


def _sci(value: int) -> str:
    """A large count as the README writes it: ``2.3 × 10^11``."""
    exponent = len(str(value)) - 1
    return f"{value / 10 ** exponent:.1f} × 10^{exponent}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the largest ladder")
    parser.add_argument("--only", choices=("startup", "next", "verify"), help="run one group of rows")
    args = parser.parse_args()
    groups = {"startup": lambda: bench_startup(args.quick), "next": bench_next,
              "verify": lambda: bench_verify(args.quick)}
    rows = [row for name, group in groups.items() if args.only in (None, name) for row in group()]
    print("| benchmark | input | result |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
