"""Benchmark the decision engine and exhaustive verification.

Run from the repository root::

    python benchmarks/bench_core.py            # all rows
    python benchmarks/bench_core.py --quick    # skip the largest ladder

Prints a Markdown table (the README quotes it).  Times are wall-clock on
this machine, best of several repeats for ``next``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from escalation_rules import builtin_design, compile_protocol, decide, load_protocol, verify


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


def bench_verify(quick: bool) -> list[tuple[str, str, str]]:
    rows = []
    specs: list[tuple[str, Callable[[], object]]] = [
        ("NCT07117175", lambda: load_protocol("spec/nct07117175")),
        ("accelerated-titration, 5 doses", lambda: builtin_design("accelerated-titration", 5)),
        ("3+3-escalate-only, 5 doses", lambda: builtin_design("3+3-escalate-only", 5)),
    ]
    for k in (5, 10) if quick else (5, 10, 12):
        specs.append((f"3+3-deescalate, {k} doses", lambda k=k: builtin_design("3+3-deescalate", k)))
    for name, make in specs:
        start = time.perf_counter()
        report = verify(compile_protocol(make()))  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        status = "ok" if report.ok else "FAIL"
        rows.append((f"verify: {name}", f"{report.states} states, {report.paths} paths, {status}",
                     f"{seconds:.2f} s (compile + check)"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the largest ladder")
    args = parser.parse_args()
    rows = bench_next() + bench_verify(args.quick)
    print("| benchmark | input | result |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
