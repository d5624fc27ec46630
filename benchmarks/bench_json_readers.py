"""Compare columnar JSON readers with the column engine's typed msgspec decoding.

Run from the repository root (pyarrow and polars are not dependencies: install them to compare)::

    python benchmarks/bench_json_readers.py --records 20000

Writes the records of ``bench_screen.py`` to a JSON Lines file and prints the CPU seconds (best of
``--repeat``) each reader takes to parse it: msgspec into the column engine's typed structures (every
field's type, range and code checked), ``pyarrow.json.read_json`` with its schema inferred and given,
and ``polars.read_ndjson`` likewise.  A reader that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_screen import ROOT, synthetic

from escalation_rules import load_protocol
from escalation_rules.eligibility import load_eligibility
from escalation_rules.eligibility._batch import _views
from escalation_rules.eligibility._columns import engine


def cpu(run: Callable[[], Any], repeat: int) -> float:
    """Best CPU seconds of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def optional(name: str) -> Any:
    """The module ``name``, or ``None`` if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = load_eligibility(load_protocol(ROOT / "spec" / "nct07117175"))
    column_engine = engine(spec, None)
    assert column_engine is not None
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "records.jsonl"
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic(args.records)),
                          encoding="utf-8")
        data = source.read_bytes()
    sample = b"\n".join(data.splitlines()[:2000])
    rows: list[tuple[str, float | None]] = []
    lines = _views(data)
    gc.disable()
    rows.append(("msgspec, typed structures (the column engine)",
                 cpu(lambda: [column_engine.decode(line) for line in lines], args.repeat)))
    gc.enable()
    pj = optional("pyarrow.json")
    if pj is None:
        rows.append(("pyarrow.json.read_json (not installed)", None))
    else:
        schema = pj.read_json(io.BytesIO(sample)).schema
        given = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        one = pj.ReadOptions(use_threads=False)
        rows += [("pyarrow.json.read_json, schema inferred", cpu(lambda: pj.read_json(io.BytesIO(data)), args.repeat)),
                 ("pyarrow.json.read_json, schema given, one thread",
                  cpu(lambda: pj.read_json(io.BytesIO(data), parse_options=given, read_options=one), args.repeat)),
                 ("pyarrow.json.read_json, schema given, threads",
                  cpu(lambda: pj.read_json(io.BytesIO(data), parse_options=given), args.repeat))]
    pl = optional("polars")
    if pl is None:
        rows.append(("polars.read_ndjson (not installed)", None))
    else:
        polars_schema = pl.read_ndjson(io.BytesIO(sample)).schema
        rows += [("polars.read_ndjson, schema inferred", cpu(lambda: pl.read_ndjson(io.BytesIO(data)), args.repeat)),
                 ("polars.read_ndjson, schema given",
                  cpu(lambda: pl.read_ndjson(io.BytesIO(data), schema=polars_schema), args.repeat))]
    n = args.records
    print(f"{n:,} records ({len(data) / n / 1024:.1f} KB each), CPU seconds, best of {args.repeat}\n")
    print("| reader | CPU s | µs per record |")
    print("|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | " + ("— | — |" if seconds is None else f"{seconds:.2f} | {seconds / n * 1e6:.1f} |"))


if __name__ == "__main__":
    main()
