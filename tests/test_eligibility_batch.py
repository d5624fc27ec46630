"""Batch screening (eligibility._batch): JSON Lines in order, refusals per line, chunks on an executor."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from escalation_rules import load_protocol
from escalation_rules.eligibility import load_eligibility, screen, screen_jsonl, screen_lines
from test_eligibility import BASE, edit

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "spec" / "nct07117175"


def lines() -> list[str]:
    out = [json.dumps(edit(BASE, {"id": f"P{i}", "ecog": i % 5, "measurements[code=alt].value": 20 + 7 * i}))
           for i in range(23)]
    out[5] = "{broken"
    out[9] = ""
    return out


def test_screen_jsonl_on_an_executor_keeps_order_and_equals_screening_one_by_one() -> None:
    """Chunks run on an executor come back in input order, each row as screening that record alone gives."""
    spec = load_eligibility(load_protocol(PROTOCOL))
    with ThreadPoolExecutor(2) as pool:
        rows = list(screen_jsonl(PROTOCOL, lines(), executor=pool, chunk_size=4))
    assert [r["line"] for r in rows] == [n for n in range(1, 24) if n != 10]
    assert rows == list(screen_lines(spec, lines()))
    assert "error" in next(r for r in rows if r["line"] == 6)
    for row, text in zip(rows, [t for t in lines() if t.strip()], strict=True):
        if "error" not in row:
            assert {k: v for k, v in row.items() if k != "line"} == screen(spec, json.loads(text)).summary()


def test_site_file_travels_to_the_workers() -> None:
    """A site file given by path fills reference ranges in every chunk."""
    record = edit(BASE, {f"measurements[code={c}].reference_range": None for c in ("creatinine", "bilirubin", "alt",
                                                                                     "ast")})
    rows = list(screen_jsonl(PROTOCOL, [json.dumps(record)] * 3, site=ROOT / "examples" / "site-ranges.toml",
                             chunk_size=2))
    assert [r["outcome"] for r in rows] == ["eligible"] * 3
    assert next(iter(screen_jsonl(PROTOCOL, [json.dumps(record)])))["outcome"] == "undetermined"


def test_chunk_size_must_be_positive() -> None:
    """A chunk size below 1 is refused."""
    with pytest.raises(ValueError, match="chunk_size"):
        list(screen_jsonl(PROTOCOL, lines(), chunk_size=0))
