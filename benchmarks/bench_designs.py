"""Benchmark the model-assisted designs: exact operating characteristics and simulation.

Run from the repository root::

    python benchmarks/bench_designs.py            # 5 doses, cohorts of 3, max_n 18 to 60 (CRM to 36)
    python benchmarks/bench_designs.py --quick    # max_n 18 only, fewer simulated trials

Prints a Markdown table per design: the states the exact programme went
through, the time of exact operating characteristics (cold: build the
design, explore, then the dynamic programme; best of a few runs, in-process,
one core; wall clock, and the process's CPU time, the steadier figure on a
shared machine) against the issue's targets, and the simulation speed (trials per
second through the merged graph).  The interval designs (BOIN, Keyboard,
mTPI-2, i3+3) take the level-by-level programme of
``escalation_rules.analysis._interval_oc`` and count the distinct states of
every level; the CRM takes the generic one and counts its merged classes.
The simulation needs the generic merged graph, which is not built beyond
``max_n`` 36 here (it takes minutes).  docs/explanation/designs.md and the
README quote it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from escalation_rules import _crm, _interval, builtin_design, operating_characteristics
from escalation_rules.analysis.simulation import simulate

TRUTH = [0.05, 0.1, 0.2, 0.35, 0.5]
DESIGNS = ("boin", "keyboard", "mtpi2", "i3+3", "crm")
#: Targets of exact OC time with 5 doses and cohorts of 3 (seconds): BOIN-type designs, and the CRM.
TARGETS = {30: 1.0, 60: 10.0}
CRM_TARGETS = {18: 5.0}


def clear_caches() -> None:
    """Forget every model and posterior computed so far, so that each timing is really cold."""
    _crm._recommend.cache_clear()
    _crm._curve.cache_clear()
    _interval._too_toxic.cache_clear()


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall-clock and CPU seconds of ``repeat`` calls, each from cold caches, and the last result."""
    best = cpu = float("inf")
    result = None
    for _ in range(repeat):
        clear_caches()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return best, cpu, result


def run(quick: bool) -> str:
    trials = 2000 if quick else 20000
    lines = ["| design | max_n | states | exact OC (cold) | CPU | target | simulated trials/s |",
             "|---|---|---|---|---|---|---|"]
    for name in DESIGNS:
        sizes = (18,) if quick else (18, 30, 36) if name == "crm" else (18, 30, 36, 48, 60)
        for max_n in sizes:
            cold, cpu, oc = best_of(lambda n=name, m=max_n: operating_characteristics(
                builtin_design(n, 5, target=0.3, max_n=m), TRUTH), 1 if max_n > 30 else 3)
            target = (CRM_TARGETS if name == "crm" else TARGETS).get(max_n)
            verdict = "—" if target is None else f"{target:g} s ({'met' if cold <= target else 'NOT met'})"
            speed = "—"
            if max_n <= 36:
                protocol = builtin_design(name, 5, target=0.3, max_n=max_n)
                sim, _, _ = best_of(lambda p=protocol: simulate(p, TRUTH, trials=trials, seed=1, progress=False), 1)
                speed = f"{trials / sim:,.0f}"
            lines.append(f"| {name} | {max_n} | {oc.states:,} | {cold:.3f} s | {cpu:.3f} s | {verdict} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="max_n 18 only, fewer simulated trials")
    args = parser.parse_args()
    print(f"truth {TRUTH}, target 0.3, 5 doses, cohorts of 3\n")
    print(run(args.quick))


if __name__ == "__main__":
    main()
