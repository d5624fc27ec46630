"""Batch screening (eligibility._batch): JSON Lines in order, refusals per line, chunks on an executor."""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.eligibility import (
    EligibilitySpec,
    RecordError,
    load_eligibility,
    load_site,
    read_record_json,
    screen,
    screen_compact,
    screen_jsonl,
    screen_lines,
)
from escalation_rules.eligibility._batch import _engine, _screen_chunk
from escalation_rules.errors import EscalationRulesError
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


# ------------------------------------------------------------------ the column engine against the evaluator

SPEC = load_eligibility(load_protocol(PROTOCOL))
SITE = load_site(ROOT / "examples" / "site-ranges.toml")
SCREENING = date(2026, 3, 2)


def _day(offset: int) -> str:
    return (SCREENING + timedelta(days=offset)).isoformat()


# Offsets (days from screening) at and around every window the protocol reads: 14 and 28 days of measurement age,
# 2 weeks before cell collection, 1, 3, 6 and 12 months, 5 years.
_OFFSETS = st.sampled_from([0, -1, -13, -14, -15, -27, -28, -29, -30, -31, -59, -60, -89, -90, -91, -92, -181, -182,
                            -183, -365, -366, -1826, -1827, -3000])
_UNITS = {
    "creatinine": [("mg/dL", 1.0), ("mg/dl", 1.0), ("umol/L", 88.4), ("µmol/L", 88.4), ("mmol/L", 0.0884)],
    "bilirubin": [("mg/dL", 1.0), ("umol/L", 17.1), ("mg/L", 10.0)],
    "alt": [("U/L", 1.0), ("IU/L", 1.0), ("[IU]/L", 1.0), ("U/mL", 0.001)],
    "ast": [("U/L", 1.0), ("IU/L", 1.0)],
    "spo2": [("%", 1.0), ("1", 0.01)],
    "lvef": [("%", 1.0)],
    "cd7_flow": [("%", 1.0)],
    "cd7_ihc": [("%", 1.0)],
    "tumour_burden": [("%", 1.0)],
}
_VALUES = {"creatinine": [0.5, 1.0, 1.1, 2.75, 2.76, 3.0], "bilirubin": [0.2, 3.6, 3.61, 1.2],
           "alt": [35, 120, 121, 7], "ast": [35, 105, 106], "spo2": [92, 93, 100, 50],
           "lvef": [50, 51, 100], "cd7_flow": [69, 70, 100], "cd7_ihc": [49, 50], "tumour_burden": [5, 5.5, 24]}
_CODES = ("positive", "negative", None)
_BOOLS = (True, False, None)


def _pick(draw: st.DrawFn, usual: Any, rare: Any = ()) -> Any:
    """One of ``usual``, or now and then one of ``rare`` (refused values, shapes the columns leave alone)."""
    if rare and draw(st.integers(0, 40)) == 23:  # Hypothesis favours 0 and the ends: one value between
        return draw(st.sampled_from(rare))
    return draw(st.sampled_from(usual))


def _mostly(draw: st.DrawFn, usual: Any, others: Any) -> Any:
    """``usual`` about three times in four, else one of ``others``."""
    return draw(st.sampled_from([usual] * 9 + list(others)))


@st.composite
def measurement(draw: st.DrawFn, code: str) -> dict[str, Any] | None:
    """A measurement of ``code`` in one of the units laboratories write, dated at or around its window."""
    if draw(st.integers(0, 9)) == 0:
        return None
    unit, factor = _pick(draw, _UNITS[code], [("kg", 1.0), ("nope", 1.0)])
    value = _pick(draw, _VALUES[code], [0, 101, -1]) * factor
    m: dict[str, Any] = {"code": code, "value": round(value, 6), "unit": unit}
    if draw(st.integers(0, 7)):
        m["date"] = _day(_pick(draw, [0, -1, -13, -14, -15, -27, -28, -29, -400], [1]))
    if code in ("creatinine", "bilirubin", "alt", "ast"):
        shape = draw(st.integers(0, 4))
        high = _pick(draw, [1.1, 1.2, 40, 35], [0.0])
        if shape == 1:
            m["reference_range"] = {"low": high / 4, "high": high}
        elif shape == 2:
            m["reference_range"] = {"high": high * factor, "unit": unit}
        elif shape == 3:
            m["reference_range"] = {"low": 1, "unit": _pick(draw, [unit], ["nope", "U/L", "mg/dL"])}
        elif shape == 4:
            m["reference_range"] = None
    return m


@st.composite
def column_record(draw: st.DrawFn) -> dict[str, Any]:
    """A record from the eligible example with any field missing, unknown, at a boundary, in another unit,
    inside or outside each date window, and now and then refused or of a shape the columns leave to the
    evaluator."""
    rec = copy.deepcopy(BASE)
    rec["id"] = draw(st.sampled_from(["P1", "Zoë", 'q"uote', "P\\2"]))
    anchors = rec["anchors"]
    for key in ("cell_collection", "enrolment"):
        choice = draw(st.integers(0, 4))
        if choice == 0:
            del anchors[key]
        elif choice == 1:
            anchors[key] = _day(_pick(draw, [0, 10, 14], [-1]))
    if draw(st.integers(0, 9)) == 0:
        rec["as_of"] = _day(_pick(draw, [0, 30], [-1]))
    born = _mostly(draw, "1979-06-15", []) if draw(st.booleans()) else _pick(
        draw, [None, "2008-03-02", "2008-03-03", "1955-03-02", "1955-03-01", "1990-07-15"],
        ["1890-01-01", "2027-01-01"])
    rec["demographics"] = {"birth_date": born, "sex": draw(st.sampled_from(["female", "male", None]))}
    rec["ecog"] = _pick(draw, [0, 1, 2, 3, None], [6, 1.0, True])
    weight = _pick(draw, [None, (62, "kg"), (136.7, "lb"), (62000, "g")], [(0, "kg"), (70, "m"), (1000, "kg")])
    rec["weight"] = None if weight is None else {"value": weight[0], "unit": weight[1]}
    if weight is not None and draw(st.booleans()):
        rec["weight"]["date"] = _day(_pick(draw, [0, -20], [1]))
    life = _pick(draw, [None, (6, "months"), (12, "weeks"), (13, "weeks"), (84, "day"), (1, "year"),
                        (2.76, "months")], [(-1, "weeks"), (6, "kg")])
    rec["life_expectancy"] = None if life is None else {"value": life[0], "unit": life[1]}
    measurements = [m for code in _UNITS if (m := draw(measurement(code))) is not None]
    if draw(st.integers(0, 40)) == 23 and measurements:
        measurements.append(dict(measurements[0]))  # the same code twice
    if draw(st.integers(0, 40)) == 23:
        measurements.append({"code": "hbv_dna", "value": draw(st.sampled_from([5, 50])), "unit": "IU/mL",
                             "date": _day(-3), **draw(st.sampled_from([{"lloq": 20}, {"detected": False},
                                                                       {"lloq": 20, "detected": True}]))})
    rec["measurements"] = measurements if draw(st.integers(0, 9)) else _pick(draw, [None, []])
    for key in ("hbsag", "hbcab", "hcv_ab", "tppa", "hiv_ab"):
        rec["serology"][key] = _mostly(draw, rec["serology"].get(key, "negative"), _CODES)
    rec["serology"]["hbv_dna"] = _mostly(draw, "below_detection_limit", ["detectable", None])
    for section in ("cardiac", "cns", "allergies", "plans"):
        for key in rec[section]:
            rec[section][key] = _mostly(draw, False, _BOOLS)
    if draw(st.integers(0, 9)) == 0:
        rec["cardiac"] = None
    diagnosis = rec["diagnosis"]
    for key in ("relapsed", "induction_completed", "induction_complete_remission", "second_line_given",
                "second_line_complete_remission", "mrd_persistent_positive", "extramedullary_disease"):
        diagnosis[key] = _mostly(draw, diagnosis[key], _BOOLS)
    diagnosis["who2022"] = _mostly(draw, "t_all_lbl", ["aml", "other", None])
    diagnosis["relapse_evidence"] = draw(st.sampled_from(["marrow_blasts_5_percent", "extramedullary", None]))
    diagnosis["relapse_date"] = _mostly(draw, "2025-07-01", ["2025-11-18", "2025-11-19", None])
    diagnosis["salvage_courses_without_remission"] = _mostly(draw, 1, [0, None])
    diagnosis["targeted_courses_without_remission"] = _mostly(draw, 1, [0, None])
    rec["transplant"] = {key: _mostly(draw, False, _BOOLS) for key in ("allogeneic", "relapse_after_transplant",
                                                                        "acute_gvhd_active", "chronic_gvhd_active")}
    rec["transplant"]["acute_gvhd_grade"] = draw(st.sampled_from([0, 2, 3, None]))
    rec["pregnancy"] = {key: _mostly(draw, False, _BOOLS) for key in ("planning_pregnancy", "not_applicable")}
    for key in ("pregnant", "lactating"):  # true for a man is refused: now and then
        rec["pregnancy"][key] = _pick(draw, (False,) * 6 + (_BOOLS if rec["demographics"]["sex"] != "male" else
                                                            (None,)), [True])
    if draw(st.integers(0, 40)) == 23:
        rec["pregnancy"].update(test_result=draw(st.sampled_from(["positive", "negative"])), test_date=_day(-3))
    for key in rec["attestations"]:
        rec["attestations"][key] = _mostly(draw, rec["attestations"][key], _BOOLS)
    start = _OFFSETS.map(_day)
    span = st.tuples(_OFFSETS, st.sampled_from([0, 1, 13, 14, 20, 100])).map(
        lambda t: {"start": _day(t[0]), "end": _day(min(t[0] + t[1], 0))})
    medication = st.fixed_dictionaries({
        "category": st.sampled_from(["corticosteroid", "immunosuppressant", "pd1_antibody", "chemotherapy",
                                     "targeted"]),
        "start": start}, optional={
        "route": st.sampled_from(["oral", "inhaled", "topical", None]),
        "indication": st.sampled_from(["treatment", "physiological_replacement", None])})
    medications = draw(st.none() | st.lists(st.tuples(medication, st.integers(0, 2), span), max_size=4))
    rec["medications"] = None if medications is None else [
        {**m, **({"end": e["end"]} if k == 1 else {"end": _day(9)} if k == 2 else {}), "start": e["start"]}
        for m, k, e in medications]
    event = st.fixed_dictionaries({
        "type": st.sampled_from(["gi_bleeding", "arterial_thrombosis", "deep_vein_thrombosis", "hypertensive_crisis",
                                 "coronary_angioplasty", "other"]),
        "start": start}, optional={"symptomatic": st.sampled_from(_BOOLS)})
    events = draw(st.none() | st.lists(st.tuples(event, st.booleans(), span), max_size=3))
    rec["events"] = None if events is None else [{**e, **(d if k else {"start": d["start"]})}
                                                  for e, k, d in events]
    infection = st.fixed_dictionaries({
        "type": st.sampled_from(["bacterial", "fungal", "other"]),
        "site": st.sampled_from(["simple_urinary_tract", "other"]),
        "requires_treatment": st.booleans(), "controlled": st.booleans(), "start": start})
    infections = draw(st.none() | st.lists(st.tuples(infection, st.booleans(), span), max_size=2))
    rec["infections"] = None if infections is None else [{**e, **(d if k else {"start": d["start"]})}
                                                         for e, k, d in infections]
    malignancy = st.fixed_dictionaries({
        "category": st.sampled_from(["basal_cell_skin", "thyroid", "other"]), "curatively_treated": st.booleans(),
        "start": start})
    rec["malignancies"] = draw(st.none() | st.lists(malignancy, max_size=2))
    therapy = st.fixed_dictionaries({"category": st.sampled_from(["chemotherapy", "car_t", "other"]),
                                     "start": start})
    rec["therapies"] = draw(st.none() | st.lists(therapy, max_size=2))
    if draw(st.integers(0, 40)) == 23:
        rec["transplants"] = [{"type": "allogeneic", "start": _day(-400)}]
    if draw(st.integers(0, 40)) == 23:
        rec["disease_assessments"] = [{"specimen": "bone_marrow", "date": _day(-100), "blasts_percent": 12}]
    if draw(st.integers(0, 40)) == 23:
        rec["unexpected"] = 1
    return rec


def _expected(spec: EligibilitySpec, text: str, number: int, site: Any = None) -> dict[str, Any]:
    """The row the record-by-record evaluator gives line ``number``."""
    try:
        return {"line": number, **screen(spec, read_record_json(text, f"<batch>:{number}"), site=site).summary()}
    except RecordError as err:
        return {"line": number, "error": err.problems}


@given(st.lists(column_record(), min_size=1, max_size=40), st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_invariant_column_engine_equals_record_by_record_evaluator(records: list[dict[str, Any]],
                                                                    with_site: bool) -> None:
    """Invariant: screening a batch over columns gives every record exactly the outcome, failed criteria and
    needed items (or the refusal) that the record-by-record evaluator gives it, whatever is missing, unknown,
    at a boundary, in another unit or inside or outside a date window, with or without a site file."""
    site = SITE if with_site else None
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    rows = list(screen_lines(SPEC, lines, site))
    assert rows == [_expected(SPEC, text, i, site) for i, text in enumerate(lines, start=1)]
    compact = list(screen_compact(SPEC, "\n".join(lines).encode("utf-8"), site))
    assert [(n, None if t is None else json.loads(t), p) for n, t, p in compact] == [
        (r["line"], None if "error" in r else r, r.get("error")) for r in rows]


def test_the_common_shape_takes_the_column_path() -> None:
    """The example record and its everyday variations (units, missing items, lists) are screened over columns,
    not by the evaluator."""
    variants = [BASE, edit(BASE, {"weight": {"value": 140, "unit": "lb"}}),
                edit(BASE, {"measurements[code=creatinine].unit": "mg/dl", "measurements[code=creatinine].value": 1}),
                edit(BASE, {"ecog": None, "medications": None, "anchors.enrolment": None}),
                edit(BASE, {"events[+]": {"type": "gi_bleeding", "start": "2026-01-10"}})]
    lines = [json.dumps(v, ensure_ascii=False) for v in variants]
    assert None not in _screen_chunk(_engine(SPEC, None), lines)
    rows = list(screen_lines(SPEC, lines))
    assert rows == [_expected(SPEC, text, i) for i, text in enumerate(lines, start=1)]
    assert rows[0]["outcome"] == "eligible"


def test_assay_limits_leave_only_their_record_to_the_evaluator() -> None:
    """A viral load with its assay's limits (``lloq``, ``detected``) is read by the evaluator; the records beside
    it in the batch stay on the column path, and every result equals the evaluator's."""
    load = {"code": "hbv_dna", "value": 50, "unit": "IU/mL", "date": "2026-02-27"}
    variants = [BASE, edit(BASE, {"measurements[+]": {**load, "lloq": 20}}),
                edit(BASE, {"measurements[+]": {**load, "detected": True}}), BASE]
    lines = [json.dumps(v, ensure_ascii=False) for v in variants]
    found = _screen_chunk(_engine(SPEC, None), lines)
    assert [f is None for f in found] == [False, True, True, False]
    rows = list(screen_lines(SPEC, lines))
    assert rows == [_expected(SPEC, text, i) for i, text in enumerate(lines, start=1)]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r", "\u2028"])
def test_compact_numbers_lines_as_splitlines_whatever_the_line_break(end: str) -> None:
    """Bytes split at plain newlines (without copying), at ``\\r\\n`` or at a break only text knows give the
    lines and line numbers :meth:`str.splitlines` gives, blank lines and a last line without a break included."""
    lines = [json.dumps(BASE, ensure_ascii=False), "", "{oops", json.dumps(edit(BASE, {"ecog": 4}))]
    text = end.join(lines)
    for data in (text, text + end):
        rows = list(screen_compact(SPEC, data.encode("utf-8")))
        assert [n for n, _, _ in rows] == [1, 3, 4]
        assert rows == list(screen_compact(SPEC, data))
        assert rows == list(screen_compact(SPEC, bytearray(data.encode("utf-8"))))
        assert rows == list(screen_compact(SPEC, _mapped(data.encode("utf-8"))))
        assert rows[1][2] is not None and rows[1][2][0].startswith("<batch>:3: ")


def _mapped(data: bytes) -> Any:
    """``data`` as a read-only mmap of a temporary file (as ``screen --batch`` maps a file)."""
    import mmap
    import tempfile

    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.flush()
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def test_compact_refuses_data_of_another_type_in_one_line() -> None:
    """Anything but text, bytes, a bytearray or an mmap is refused naming what arrived."""
    with pytest.raises(EscalationRulesError, match=r"^data: expected str, bytes, bytearray or mmap.mmap "
                                                    r"\(got memoryview\)$"):
        screen_compact(SPEC, memoryview(b"{}"))  # type: ignore[arg-type]


def test_bytes_not_utf8_are_refused_whole_as_decoding_them_whole_would() -> None:
    """The UTF-8 check runs a megabyte at a time; a bad byte anywhere (here past the first megabyte, and a
    character cut at the end) is refused with the error and position that decoding the whole gives."""
    line = json.dumps(BASE, ensure_ascii=False).encode("utf-8") + b"\n"
    good = line * ((1 << 20) // len(line) + 2)
    for data in (good + b"\xff\n", good + "µ".encode()[:1]):
        with pytest.raises(UnicodeDecodeError) as err:
            list(screen_compact(SPEC, data))
        with pytest.raises(UnicodeDecodeError) as mapped:
            list(screen_compact(SPEC, _mapped(data)))
        assert str(mapped.value) == str(err.value)
        with pytest.raises(UnicodeDecodeError) as whole:
            data.decode("utf-8")
        assert str(err.value) == str(whole.value)


def test_docs_quote_the_batch_size() -> None:
    """docs/eligibility.md (Speed) names the number of lines screened together as the code has it."""
    from escalation_rules.eligibility._batch import BATCH, SHARE

    text = " ".join((ROOT / "docs" / "eligibility.md").read_text(encoding="utf-8").split())
    assert f"Lines are taken {BATCH:,} at a time" in text
    assert f"cuts a file of at least {2 * SHARE:,} lines into one contiguous share per core" in text


def _share_batch() -> bytes:
    """Three shares' worth of lines (past 2 x SHARE), with refused, blank and evaluator-only lines among them."""
    from escalation_rules.eligibility._batch import SHARE as BATCH

    base = [json.dumps(edit(BASE, {"id": f"J{i}", "ecog": i % 5, "measurements[code=alt].value": 20 + i % 90}),
                       ensure_ascii=False) for i in range(64)]
    lines = [base[i % 64] for i in range(3 * BATCH + 17)]
    lines[3] = "{broken"
    lines[BATCH + 5] = ""
    lines[2 * BATCH + 1] = json.dumps(edit(BASE, {"ecog": "x"}))
    lines[-2] = json.dumps(edit(BASE, {"measurements[+]": {"code": "hbv_dna", "value": 50, "unit": "IU/mL",
                                                              "date": "2026-02-27", "lloq": 20}}))
    return "\n".join(lines).encode("utf-8")


def _children() -> set[int]:
    """This process's child processes, zombies included (Linux lists them under /proc)."""
    return {int(pid) for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()}


@pytest.mark.parametrize("jobs", [2, 3, 64])
def test_jobs_give_the_rows_of_one_process_in_input_order(jobs: int) -> None:
    """Screening in forked processes gives exactly the rows (numbers, lines, refusals) of screening in this one,
    in input order, and leaves no child process behind."""
    data, before = _share_batch(), _children()
    one = list(screen_compact(SPEC, data))
    assert list(screen_compact(SPEC, data, jobs=jobs)) == one
    assert list(screen_compact(SPEC, _mapped(data), jobs=jobs)) == one
    assert list(screen_compact(SPEC, data.decode("utf-8"), jobs=jobs)) == one  # shares cut in the lines
    crlf = data.replace(b"\n", b"\r\n")  # \r breaks lines too: cut in the lines as well
    assert list(screen_compact(SPEC, crlf, jobs=jobs)) == list(screen_compact(SPEC, crlf))
    assert [n for n, t, _ in one if t is None] == [4, 2 * 4096 + 2]
    assert _children() <= before


def test_jobs_stopped_early_end_their_children() -> None:
    """A caller that stops reading after the first row leaves no worker process running."""
    before = _children()
    rows = screen_compact(SPEC, _share_batch(), jobs=3)
    assert next(iter(rows))[0] == 1
    assert len(_children() - before) == 2
    rows.close()  # type: ignore[attr-defined]
    assert _children() <= before


def test_a_failing_worker_is_reported_naming_its_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker process that fails raises the package's error naming the first line of its share, not a
    traceback from another process or a silent gap in the results."""
    from escalation_rules.eligibility import _batch

    real = _batch._compact

    def failing(spec: Any, lines: Any, site: Any, source: str, first: int = 1) -> Any:
        if first > 1:
            raise MemoryError("no room")
        return real(spec, lines, site, source, first)

    monkeypatch.setattr(_batch, "_compact", failing)
    before = _children()
    for data in (_share_batch(), _share_batch().decode("utf-8")):  # shares cut in the bytes, or in the lines
        with pytest.raises(EscalationRulesError, match=r"^screening lines (\d+) and after in a worker process "
                                                        r"failed: MemoryError: no room$") as err:
            list(screen_compact(SPEC, data, jobs=2))
        first = int(str(err.value).split()[2])  # the second of two shares of about half the lines each
        assert abs(first - (3 * _batch.SHARE + 17) // 2) < 100
    assert _children() <= before


def test_jobs_stay_in_this_process_while_other_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With another Python thread running (a web server's, say), nothing is forked: the batch is screened here."""
    import os
    import threading

    def no_fork() -> int:
        raise AssertionError("forked while another thread ran")

    monkeypatch.setattr(os, "fork", no_fork)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        data = _share_batch()
        assert list(screen_compact(SPEC, data, jobs=2)) == list(screen_compact(SPEC, data))
    finally:
        stop.set()
        other.join()


@pytest.mark.parametrize("jobs", [0, -1, 65, 10**100, 2.0, True, "2"])
def test_jobs_outside_the_limits_are_refused(jobs: Any) -> None:
    """``jobs`` must be a whole number from 1 to MAX_JOBS; anything else is refused at once, in one line."""
    with pytest.raises(EscalationRulesError, match=r"^jobs: expected a whole number from 1 to 64 \(got .*\)$"):
        screen_compact(SPEC, b"", jobs=jobs)


def test_jobs_find_breaks_only_text_knows_and_bad_utf8_before_giving_a_row() -> None:
    """With shares cut in the bytes, this process checks the whole text while the others screen: a line break
    only text knows (U+2028 inside a line) makes it screen the text in one process instead (same rows as
    without jobs), and bytes that are not UTF-8 are refused whole, as without jobs; no child is left."""
    before = _children()
    odd = _share_batch().replace(b'"J3"', '"J\u2028 3"'.encode("utf-8"))
    assert list(screen_compact(SPEC, odd, jobs=2)) == list(screen_compact(SPEC, odd))
    for bad in (_share_batch() + b"\n\xff\n", b"\xe2\x80\n" + _share_batch()):  # in the last share, the first
        with pytest.raises(UnicodeDecodeError) as err:
            next(iter(screen_compact(SPEC, bad, jobs=2)))
        with pytest.raises(UnicodeDecodeError) as alone:
            list(screen_compact(SPEC, bad))
        assert str(err.value) == str(alone.value)
    assert _children() <= before


def test_a_null_reference_range_stays_on_the_column_path() -> None:
    """``"reference_range": null`` (no range, said outright) is read over columns as an absent range, with the
    evaluator's result."""
    variants = [BASE, edit(BASE, {"measurements[code=alt].reference_range": None}), BASE]
    lines = [json.dumps(v, ensure_ascii=False) for v in variants]
    assert None not in _screen_chunk(_engine(SPEC, None), lines)
    rows = list(screen_lines(SPEC, lines))
    assert rows == [_expected(SPEC, text, i) for i, text in enumerate(lines, start=1)]
    assert rows[1]["outcome"] == "undetermined" and "alt.uln" in rows[1]["needed"]
