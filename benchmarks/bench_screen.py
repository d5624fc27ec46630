"""Benchmark eligibility screening against NCT07117175.

Run from the repository root::

    python benchmarks/bench_screen.py              # 100,000 synthetic records
    python benchmarks/bench_screen.py --records 20000
    python benchmarks/bench_screen.py --quick      # 5,000 records, one run

Builds synthetic records from ``spec/patients/eligible.json`` with varied
ages, weights (kg or lb), creatinine (mg/dL or µmol/L), ECOG, serologies,
medications and missing fields, then screens them all on one core.  Prints a
Markdown table: records per second for screening decoded records (read,
check, convert units once, evaluate every criterion), and for the same from
JSON text.  Target: at least 10,000 records/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from escalation_rules import load_protocol
from escalation_rules.eligibility import load_eligibility, read_record_json, screen

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
    args = parser.parse_args()
    if args.quick:
        args.records, args.repeat = 5_000, 1
    spec = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
    records = synthetic(args.records)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    screen(spec, records[0])  # warm the unit-conversion cache

    outcomes: Counter[str] = Counter()

    def decoded() -> None:
        outcomes.clear()
        for record in records:
            outcomes[screen(spec, record).outcome] += 1

    def text() -> None:
        for line in lines:
            screen(spec, read_record_json(line))

    n = len(records)
    print(f"NCT07117175 eligibility, {n:,} synthetic records, {len(spec.criteria)} criteria, one core, "
          f"best of {args.repeat}\n")
    print("| input | wall s | records/s (wall) | CPU s | records/s (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for label, run in (("decoded JSON objects", decoded), ("JSON text (one line per record)", text)):
        wall, cpu = best(run, args.repeat)
        print(f"| {label} | {wall:.2f} | {n / wall:,.0f} | {cpu:.2f} | {n / cpu:,.0f} |")
    print("\noutcomes: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(outcomes.items())))
    print("(CPU time is the process's own; wall time also counts other processes sharing the machine)")


def best(run: Callable[[], None], repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


if __name__ == "__main__":
    main()
