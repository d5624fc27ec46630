"""Benchmark eligibility screening against NCT07117175.

Run from the repository root::

    python benchmarks/bench_screen.py              # 100,000 synthetic records
    python benchmarks/bench_screen.py --records 20000
    python benchmarks/bench_screen.py --quick      # 5,000 records, one run

Builds synthetic records from ``spec/patients/eligible.json`` with varied
ages, weights (kg or lb), creatinine (mg/dL or µmol/L), ECOG, serologies,
medications and missing fields, writes them to a JSON Lines file, and
screens the file end to end into compact JSON Lines (one result per record):
from this process (map the file, ``screen_compact``, write the lines) and
through ``escalation-rules screen --batch FILE --json`` (process start and
protocol loading included), each with one process per core (the targets'
rows) and on one core.  Prints a Markdown table with records per second
against the targets: 50,000/s in-process and 20,000/s through the CLI; the
target is judged on wall-clock time; the CPU column adds up every process's
CPU time, so on one core it shows what the machine's other load took away.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import mmap
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from escalation_rules import load_protocol
from escalation_rules.eligibility import load_eligibility, screen_compact, screen_summary

ROOT = Path(__file__).resolve().parent.parent


def synthetic(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` varied records; roughly a third each eligible, not eligible and undetermined."""
    rng = random.Random(seed)
    base = json.loads((ROOT / "spec" / "patients" / "eligible.json").read_text(encoding="utf-8"))
    out = []
    for i in range(count):
        rec = copy.deepcopy(base)
        rec["id"] = f"S{i:06d}"
        born = f"{rng.randint(1950, 2009)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rec["demographics"]["birth_date"] = born
        rec["demographics"]["sex"] = rng.choice(("female", "male"))
        kg = rng.uniform(40, 110)
        rec["weight"] = ({"value": round(kg, 1), "unit": "kg"} if rng.random() < 0.5
                         else {"value": round(kg / 0.45359237, 1), "unit": "lb"})
        rec["ecog"] = rng.choice((0, 1, 1, 2, 2, 3))
        creat_mgdl = rng.uniform(0.5, 2.5)
        for m in rec["measurements"]:
            if m["code"] == "creatinine":
                if rng.random() < 0.5:
                    m.update(value=round(creat_mgdl, 2), unit="mg/dL",
                             reference_range={"low": 0.5, "high": 1.1, "unit": "mg/dL"})
                else:
                    m.update(value=round(creat_mgdl * 88.4, 1), unit="µmol/L",
                             reference_range={"low": 45, "high": 97, "unit": "µmol/L"})
            elif m["code"] == "spo2":
                m["value"] = rng.randint(88, 100)
            elif m["code"] == "alt":
                m["value"] = rng.randint(10, 150)
        if rng.random() < 0.1:
            rec["serology"]["hbsag"] = "positive"
            if rng.random() < 0.5:
                del rec["serology"]["hbv_dna"]
        if rng.random() < 0.2:
            rec["medications"].append({"category": "corticosteroid", "route": rng.choice(("oral", "inhaled")),
                                       "start": "2026-02-01", "end": f"2026-02-{rng.randint(2, 28):02d}"})
        if rng.random() < 0.15:
            del rec["anchors"]["cell_collection"]
        if rng.random() < 0.1:
            del rec["attestations"]["investigator_deems_unsuitable"]
        out.append(rec)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is shown (default 3)")
    parser.add_argument("--quick", action="store_true", help="5,000 records, one run (a smoke test for CI)")
    parser.add_argument("--stages", action="store_true",
                        help="also print where the in-process CPU time goes, per record (best of --repeat)")
    parser.add_argument("--write-to", metavar="FILE", help=argparse.SUPPRESS)  # the file, written by a child
    args = parser.parse_args()
    if args.quick:
        args.records, args.repeat = 5_000, 1
    if args.write_to:
        Path(args.write_to).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                               for r in synthetic(args.records)), encoding="utf-8")
        return
    spec = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
    n = args.records
    outcomes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "records.jsonl", Path(tmp) / "results.jsonl"
        # written by another process: this one then holds no millions of objects of its own, freed or not,
        # for the screening's collections to walk or its forked copies to copy (a caller's process would not)
        subprocess.run([sys.executable, __file__, "--records", str(n), "--write-to", str(source)], check=True)
        with source.open("rb") as file:
            sample = b"".join(itertools.islice(file, 1000))
        screen_summary(spec, json.loads(sample.splitlines()[0]))  # warm the unit-conversion cache
        list(screen_compact(spec, sample))  # compile the column engine once, as a long-lived caller would

        def in_process(jobs: int) -> Callable[[], None]:
            def run() -> None:
                """File to file from this process: map the file, decode, check, screen, write the compact lines."""
                with source.open("rb") as file, target.open("w", encoding="utf-8") as out:
                    data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
                    out.writelines([text + "\n" if text is not None else
                                    json.dumps({"line": number, "error": problems}) + "\n"
                                    for number, text, problems in screen_compact(spec, data, jobs=jobs)])
            return run

        def count() -> None:
            """The outcomes in the result file (not timed)."""
            outcomes.clear()
            with target.open(encoding="utf-8") as lines:
                for line in lines:
                    outcomes[json.loads(line).get("outcome", "refused")] += 1

        # The CLI runs as from an installed wheel: with Python's bytecode cache (pip compiles at install; a
        # PYTHONDONTWRITEBYTECODE left in the environment would have every run compile the package again).
        cli_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

        def through_cli(*options: str) -> Callable[[], None]:
            def run() -> None:
                """The same through ``escalation-rules screen SPEC --batch FILE --json`` (process start included)."""
                with target.open("w", encoding="utf-8") as out:
                    subprocess.run([sys.executable, "-c",
                                    "from escalation_rules.cli import main; raise SystemExit(main())", "screen",
                                    str(ROOT / "spec" / "nct07117175"), "--batch", str(source), "--json", *options],
                                   stdout=out, check=True, env=cli_env)
            return run

        through_cli()()  # writes the bytecode cache if there is none yet

        def decoded() -> None:
            """The record-by-record evaluator on already decoded objects (no file, no JSON), for comparison."""
            for record in objects:
                screen_summary(spec, record)

        cores = os.cpu_count() or 1
        print(f"NCT07117175 eligibility, {n:,} synthetic records ({source.stat().st_size / n / 1024:.1f} KB each), "
              f"{len(spec.criteria)} criteria and definitions, {cores} cores, best of {args.repeat}\n")
        print("| path | wall s | records/s (wall) | CPU s | records/s (CPU) | target |")
        print("|---|---:|---:|---:|---:|---|")
        for label, run, goal in ((f"in-process, `screen_compact(jobs={cores})`", in_process(cores), 50_000),
                                 ("in-process, `screen_compact(jobs=1)` (one core)", in_process(1), None),
                                 ("through the CLI, `screen --batch FILE --json` (one process per core)",
                                  through_cli(), 20_000),
                                 ("through the CLI with `--jobs 1` (one core)", through_cli("--jobs", "1"), None),
                                 ("decoded objects, record by record (no I/O)", decoded, None)):
            if run is decoded:  # decoded only now: the rows above run in a process without them
                objects = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
            wall, cpu = best(run, args.repeat)
            met = "" if goal is None else f"≥ {goal:,}: {'met' if n / wall >= goal else 'NOT met'}"
            print(f"| {label} | {wall:.2f} | {n / wall:,.0f} | {cpu:.2f} | {n / cpu:,.0f} | {met} |")
        objects.clear()
        count()
        if args.stages:
            print()
            stages(spec, source, args.repeat)
    print("\noutcomes: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(outcomes.items())))
    print("(CPU time counts this process and its children: forked workers and the CLI; wall time also counts "
          "other processes sharing the machine)")


def stages(spec: Any, source: Path, repeat: int) -> None:
    """Print the CPU microseconds per record of each stage of ``screen_compact`` on one core (internals).

    Reading, decoding and gathering are timed as the pipeline runs them, batch by batch, by timing the
    pipeline cut after each and subtracting the cut before (so that each sees the processor's cache as in a
    real run); the criteria are timed over the gathered columns.
    """
    from escalation_rules.eligibility._batch import BATCH, _odd_utf8, _views
    from escalation_rules.eligibility._columns import engine

    column_engine = engine(spec, None)
    assert column_engine is not None
    with source.open("rb") as file:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        lines = _views(data)
        n = len(lines)
        chunks = [lines[i:i + BATCH] for i in range(0, n, BATCH)]

        def read() -> None:
            _odd_utf8(data)
            _views(data)

        def decoded() -> None:
            for chunk in chunks:
                list(map(column_engine.decode, chunk))

        def gathered() -> None:
            for chunk in chunks:
                column_engine.columns(list(map(column_engine.decode, chunk)))

        gc.disable()  # as screen_compact does while it screens
        cuts = [best(run, repeat)[1] for run in (read, decoded, gathered)]
        columns = [column_engine.columns(list(map(column_engine.decode, chunk))) for chunk in chunks]
        criteria = best(lambda: [column_engine.evaluate(c) for c in columns], repeat)[1]
        gc.enable()
        total = best(lambda: list(screen_compact(spec, data)), repeat)[1]
    rows = [("mapping the file, checking UTF-8, finding the lines", cuts[0]),
            ("decoding with msgspec into typed structures", cuts[1]),
            ("gathering the values into columns", cuts[2] - cuts[1]),
            ("every criterion and definition over the columns", criteria),
            ("the rest (outcomes, needed items, compact lines)", total - cuts[0] - cuts[2] - criteria)]
    print(f"| stage of `screen_compact` (in-process, one core, {n:,} records) | CPU µs per record |")
    print("|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds / n * 1e6:.1f} |")
    print(f"| total | {total / n * 1e6:.1f} |")


def best(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    return min(walls), min(cpus)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the CLI run)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
