"""Benchmark exact operating characteristics (escalation_rules.analysis.oc).

Run from the repository root::

    python benchmarks/bench_oc.py            # all rows
    python benchmarks/bench_oc.py --quick    # up to 20 doses, no compiled-graph comparison past 8

Prints Markdown tables (docs/oc.md and the README quote them).  "cold" is a
fresh protocol object: explore its merged state graph, then the dynamic
programme; "warm" reuses the merged graph (another truth for the same
design).  Times are best of several repeats, in-process, one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from fractions import Fraction

from escalation_rules import builtin_design, compile_protocol, load_protocol
from escalation_rules.analysis import merged_graph, operating_characteristics, reduce_protocol, resolve_policy

TARGETS = {5: 0.005, 10: 0.100}


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall-clock seconds of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def truth_for(k: int) -> list[float]:
    """A rising truth crossing 0.3 about two thirds of the way up."""
    return [0.02 + 0.45 * d / max(k - 1, 1) for d in range(k)]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ladder(quick: bool) -> list[str]:
    rows = ["| doses | merged classes | states visited | compiled-graph states | cold (explore + DP) | "
            "warm (DP, default policy) | warm + bounds | target |",
            "|---|---|---|---|---|---|---|---|"]
    sizes = (3, 5, 8, 10, 12, 15, 20) if quick else (3, 5, 8, 10, 12, 15, 20, 25, 30, 40)
    for k in sizes:
        truth = truth_for(k)
        graph = reduce_protocol(builtin_design("3+3-deescalate", k))
        repeat = 20 if k <= 10 else 3
        cold = best_of(lambda k=k, truth=truth: operating_characteristics(builtin_design("3+3-deescalate", k), truth,
                                                                           bounds=False), repeat)
        warm = best_of(lambda g=graph, truth=truth: operating_characteristics(g, truth, bounds=False), repeat)
        both = best_of(lambda g=graph, truth=truth: operating_characteristics(g, truth), repeat)
        compiled = "—"
        if k <= (8 if quick else 10):
            compiled = str(compile_protocol(builtin_design("3+3-deescalate", k)).stats["states"])
        target = TARGETS.get(k)
        verdict = "" if target is None else (f"< {ms(target)}: " + ("ok" if cold < target else "MISSED"))
        if k == 20:
            verdict = "seconds: " + ("ok" if cold < 10 else "MISSED")
        rows.append(f"| {k} | {graph.stats['nodes']} | {graph.stats['visits']} | {compiled} | {ms(cold)} | "
                    f"{ms(warm)} | {ms(both)} | {verdict} |")
    return rows


def others() -> list[str]:
    rows = ["| case | result | time | target |", "|---|---|---|---|"]
    nct_truth = [0.05, 0.1, 0.2, 0.35]

    def nct_default() -> object:
        return operating_characteristics(load_protocol("spec/nct07117175"), nct_truth, bounds=False)

    def nct_bounds() -> object:
        return operating_characteristics(load_protocol("spec/nct07117175"), nct_truth)

    nct = load_protocol("spec/nct07117175")
    graph = merged_graph(nct, resolve_policy(nct).guards())  # the classes the default policy's figures use
    t1 = best_of(nct_default, 10)
    t2 = best_of(nct_bounds, 10)
    rows.append(f"| NCT07117175, default policy (load + explore + DP) | {graph.stats['nodes']} classes | {ms(t1)} | "
                f"< 1 s: {'ok' if t1 < 1 else 'MISSED'} |")
    rows.append(f"| NCT07117175, default policy and min/max over every policy | {graph.stats['nodes']} classes | "
                f"{ms(t2)} | < 1 s: {'ok' if t2 < 1 else 'MISSED'} |")
    exact_truth = [Fraction(1, 20), Fraction(1, 10), Fraction(1, 5), Fraction(3, 10), Fraction(1, 2)]
    t3 = best_of(lambda: operating_characteristics(builtin_design("3+3-deescalate", 5), exact_truth), 5)
    rows.append(f"| 3+3-deescalate, 5 doses, exact fractions with bounds | — | {ms(t3)} | |")
    t4 = best_of(lambda: compile_protocol(builtin_design("3+3-deescalate", 10)), 1)
    rows.append(f"| for comparison: compile_protocol of 3+3-deescalate, 10 doses (full states) | — | {ms(t4)} | |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ladders only")
    args = parser.parse_args()
    print("3+3-deescalate: exact operating characteristics by ladder length\n")
    print("\n".join(ladder(args.quick)))
    print()
    print("\n".join(others()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
