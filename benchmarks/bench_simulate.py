"""Benchmark Monte Carlo operating characteristics (escalation_rules.analysis.simulation).

Run from the repository root::

    python benchmarks/bench_simulate.py            # 1,000,000 trials and the engine comparison
    python benchmarks/bench_simulate.py --quick    # 200,000 trials

Prints a Markdown table.  numpy runs on one core here (the walk is
vectorised, not threaded); the target is 1,000,000 trials of 3+3-deescalate
with 5 doses in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from escalation_rules import builtin_design, load_protocol
from escalation_rules.analysis import operating_characteristics, simulate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    args = parser.parse_args()
    trials = 200_000 if args.quick else 1_000_000
    truth5 = [0.05, 0.1, 0.2, 0.3, 0.5]
    rows = ["| case | trials | time | trials/s | largest deviation from exact (in SE) | target |",
            "|---|---|---|---|---|---|"]
    cases = [
        ("3+3-deescalate, 5 doses, graph walk", builtin_design("3+3-deescalate", 5), truth5, trials, "graph"),
        ("3+3-deescalate, 10 doses, graph walk", builtin_design("3+3-deescalate", 10),
         [0.02 + 0.05 * d for d in range(10)], trials, "graph"),
        ("NCT07117175, default policy, graph walk", load_protocol("spec/nct07117175"), [0.05, 0.1, 0.2, 0.35],
         trials, "graph"),
        ("3+3-deescalate, 5 doses, decision engine", builtin_design("3+3-deescalate", 5), truth5, 2_000, "engine"),
    ]
    for name, protocol, truth, n, engine in cases:
        start = time.perf_counter()
        sim = simulate(protocol, truth, trials=n, seed=1, engine=engine, progress=False)
        seconds = time.perf_counter() - start
        exact = operating_characteristics(protocol, truth, bounds=False)
        worst = max(abs(float(e) - s) / se for e, s, se in zip(exact.mtd, sim.mtd, sim.se["mtd"], strict=True) if se)
        target = ""
        if name.startswith("3+3-deescalate, 5 doses, graph") and n == 1_000_000:
            target = "< 10 s: " + ("ok" if seconds < 10 else "MISSED")
        rows.append(f"| {name} | {n:,} | {seconds:.2f} s | {n / seconds:,.0f} | {worst:.2f} | {target} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
