"""Write src/escalation_rules/_units.py: pint's answers for every unit the shipped protocols and records use.

Run from the repository root: ``python scripts/units_table.py``.  It screens
the shipped example records and every eligibility conformance vector with the
table switched off, records each unit pint was asked about and its answer,
and writes them as Python literals.  ``tests/test_guards.py`` checks
every entry against pint, so the table cannot drift from it.  Screening then
needs no pint for these units (pint costs about half a second to import and
set up); any other unit is still asked of pint.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from escalation_rules import _units, guards  # noqa: E402
from escalation_rules.eligibility import load_eligibility, screen  # noqa: E402
from escalation_rules.spec import resolve_spec  # noqa: E402


def collect() -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str, str | None], float]]:
    """Screen the shipped records and vectors with an empty table; return what pint was asked."""
    units: dict[str, tuple[str, str]] = {}
    factors: dict[tuple[str, str, str | None], float] = {}
    pint_parse, pint_factor = guards._pint_parse_unit, guards._pint_unit_factor

    def record_parse(text: str) -> tuple[str, str]:
        units[text] = pint_parse(text)
        return units[text]

    def record_factor(source: str, target: str, molar_mass: str | None = None) -> float:
        factors[(source, target, molar_mass)] = pint_factor(source, target, molar_mass)
        return factors[(source, target, molar_mass)]

    _units.UNITS.clear()
    _units.FACTORS.clear()
    guards._pint_parse_unit, guards._pint_unit_factor = record_parse, record_factor
    guards.parse_unit.cache_clear()
    guards.unit_factor.cache_clear()
    from test_eligibility import BASE, VECTORS, edit  # the vectors' record edits, as the tests apply them

    spec = load_eligibility(resolve_spec(str(ROOT / "spec" / "nct07117175")))
    shipped = sorted((ROOT / "spec" / "patients").glob("*.json"))
    records: list[Any] = [json.loads(p.read_text(encoding="utf-8")) for p in shipped
                          if not p.name.endswith((".schema.json", ".expected.json"))]
    records += [edit(BASE, case["set"]) for case in VECTORS["cases"]]
    records += [edit(BASE, changes) for changes in EVERYDAY]
    for record in records:
        try:
            screen(spec, record)
        except Exception:  # refused records still ask about their units
            continue
    return units, factors


#: Everyday spellings of laboratories and scales (plain pint units), so that batches written in them need no pint.
EVERYDAY: list[dict[str, Any]] = [
    {"weight": {"value": 140, "unit": unit}} for unit in ("lb", "g")
] + [
    {"measurements[code=creatinine].unit": unit, "measurements[code=creatinine].reference_range": None}
    for unit in ("µmol/L", "mg/dl", "mmol/L", "mg/L")
] + [
    {"measurements[code=bilirubin].unit": unit, "measurements[code=bilirubin].reference_range": None}
    for unit in ("µmol/L", "umol/L", "mg/dl")
] + [
    {"measurements[code=creatinine].reference_range": {"high": 97, "unit": "µmol/L"}},
    {"measurements[code=bilirubin].reference_range": {"high": 21, "unit": "µmol/L"}},
]


def main() -> None:
    units, factors = collect()
    lines = [
        '"""pint\'s answers for the units the shipped protocols and records use (generated: scripts/units_table.py).',
        "",
        ":func:`escalation_rules.guards.parse_unit` and :func:`~escalation_rules.guards.unit_factor` look here",
        "first, so screening with these units needs no pint (about half a second to import and set up); any",
        "other unit is asked of pint.  tests/test_guards.py checks every entry against pint.",
        '"""',
        "",
        f"PINT_VERSION = {version('pint')!r}",
        "",
        "UNITS: dict[str, tuple[str, str]] = {",
        *(f"    {k!r}: {v!r}," for k, v in sorted(units.items())),
        "}",
        "",
        "FACTORS: dict[tuple[str, str, str | None], float] = {",
        *(f"    {k!r}: {v!r}," for k, v in sorted(factors.items(), key=lambda kv: tuple(map(str, kv[0])))),
        "}",
        "",
    ]
    (ROOT / "src" / "escalation_rules" / "_units.py").write_text("\n".join(lines), encoding="utf-8")
    print(f"{len(units)} units, {len(factors)} conversions")


if __name__ == "__main__":
    main()
