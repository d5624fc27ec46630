"""Screening many records: JSON Lines in, one compact result per line out, optionally on an executor.

:func:`screen_lines` screens lines in this process; :func:`screen_compact`
does the same from JSON Lines text or bytes straight to the compact JSON
lines that ``screen --batch --json`` prints; :func:`screen_jsonl` splits
lines into chunks and runs the chunks on any ``concurrent.futures.Executor``
(a process pool, or Dask's ``client.get_executor()`` for a cluster).  Only
the protocol folder's path, the site file's path and the lines travel to the
workers; each worker loads the protocol once.  Results come back in input
order.

Batches take a fast path: the protocol's criteria are compiled once into
operations over columns (one numpy array per data item, three-valued logic
over whole batches), and records are decoded by ``msgspec`` into typed
structures.  A record the columns cannot represent exactly (a refused line,
a unit or a shape the columns do not cover, a viral load with its assay's
limits, dated disease assessments, a pregnancy test, two results of one
code, a site range) is screened by the record-by-record evaluator; the
results are the same either way (a property test holds them equal).

Examples
--------
>>> import json
>>> from escalation_rules import load_protocol
>>> from escalation_rules.eligibility import load_eligibility
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> lines = [json.dumps({"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 4}), "{oops"]
>>> rows = list(screen_lines(spec, lines))
>>> rows[0]
{'line': 1, 'record': 'P1', 'outcome': 'not eligible', 'failed': ['inc_ecog'], 'needed': []}
>>> rows[1]["error"]  # doctest: +ELLIPSIS
['<batch>:2: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2']
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import operator
import re
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from json.encoder import encode_basestring
from pathlib import Path
from typing import Annotated, Any

import attrs
import msgspec
import numpy as np

from .._limits import MAX_FILE_BYTES
from ..errors import EscalationRulesError, GuardSyntaxError
from ..guards import (
    _CALENDAR,
    DATE,
    INT,
    NUMBER,
    BoolOp,
    Call,
    Compare,
    Literal,
    Name,
    Not,
    QuantityLiteral,
    QuantityType,
    _shift,
    parse_unit,
    snap,
    unit_factor,
)
from ._record import _ANCHOR_ORDER, LIST_FIELDS, PLAUSIBLE, SECTION_FIELDS, RecordError, _unit_ok, read_record_json
from ._screen import OUTCOMES, screen_summary
from ._site import SiteRanges, load_site
from ._spec import DataItem, EligibilitySpec, _names, load_eligibility
from ._units import lab_factor, lab_unit

__all__ = ["screen_compact", "screen_jsonl", "screen_lines"]

#: Records decoded and screened together on the fast path.
BATCH = 4096


def screen_lines(spec: EligibilitySpec, lines: Iterable[str], site: SiteRanges | None = None,
                 source: str = "<batch>", first: int = 1) -> Iterator[dict[str, Any]]:
    """Screen one JSON record per line; yield ``{"line", "record", "outcome", "failed", "needed"}`` per record.

    Blank lines are skipped; a refused line gives ``{"line": N, "error": [...]}`` and the others go on.
    ``first`` is the number of the first line (for chunks of a larger file).
    """
    for number, payload, pattern in _rows(spec, lines, site, first):
        if pattern is not None:
            yield {"line": number, "record": payload, "outcome": pattern.outcome, "failed": list(pattern.failed),
                   "needed": list(pattern.needed)}
            continue
        line = payload if isinstance(payload, str) else payload.decode("utf-8")
        if not line.strip():
            continue
        try:
            summary, _ = screen_summary(spec, read_record_json(line, f"{source}:{number}"), site=site)
        except RecordError as err:
            yield {"line": number, "error": err.problems}
            continue
        yield {"line": number, **summary}


def screen_compact(spec: EligibilitySpec, data: bytes | str, site: SiteRanges | None = None,
                   source: str = "<batch>") -> Iterator[tuple[int, str | None, list[str] | None]]:
    """Screen JSON Lines text (or UTF-8 bytes) into the compact lines of ``screen --batch --json``.

    Yields ``(line number, compact JSON line, None)`` per screened record and
    ``(line number, None, problems)`` per refused line; blank lines are
    skipped.  Lines are numbered as :meth:`str.splitlines` numbers them.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> data = b'{"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 4}\\n\\n[1]\\n'
    >>> for row in screen_compact(spec, data):
    ...     print(row)
    (1, '{"line":1,"record":"P1","outcome":"not eligible","failed":["inc_ecog"],"needed":[]}', None)
    (3, None, ['<batch>:3: expected a JSON object (got [1])'])
    """
    if isinstance(data, bytes):
        text = data.decode("utf-8")  # refused whole, as reading the file as text would
        lines: Sequence[bytes | str] = text.splitlines() if _ODD_BREAKS.search(text) else data.splitlines()
    else:
        lines = data.splitlines()
    return _compact(spec, lines, site, source)


def _compact(spec: EligibilitySpec, lines: Sequence[bytes | str], site: SiteRanges | None,
             source: str) -> Iterator[tuple[int, str | None, list[str] | None]]:
    for number, payload, pattern in _rows(spec, lines, site, 1):
        if pattern is not None:
            yield number, f'{{"line":{number},"record":{encode_basestring(payload)},{pattern.tail}', None
            continue
        line = payload if isinstance(payload, str) else payload.decode("utf-8")
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            summary, _ = screen_summary(spec, read_record_json(line, where), site=site)
        except RecordError as err:
            yield number, None, err.problems
            continue
        except (EscalationRulesError, RecursionError, ValueError) as err:  # one bad line never ends the batch
            reason = ("nested too deeply to read" if isinstance(err, RecursionError) else
                      str(err).splitlines()[0] if isinstance(err, EscalationRulesError) else
                      "a number or value too large to read")
            yield number, None, [f"{where}: {reason}"]
            continue
        yield number, json.dumps({"line": number, **summary}, ensure_ascii=False, separators=(",", ":")), None


# Line breaks str.splitlines knows and bytes.splitlines does not: with any of them, lines are split as text.
_ODD_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _rows(spec: EligibilitySpec, lines: Iterable[bytes | str], site: SiteRanges | None,
          first: int) -> Iterator[tuple[int, Any, _Pattern | None]]:
    """``(number, record id, pattern)`` per line screened on the fast path, ``(number, line, None)`` per other line.

    Lines are taken in batches of :data:`BATCH`; in each, the lines msgspec
    decodes are screened over columns, and the others (and the records the
    columns do not represent) are handed back for the evaluator.
    """
    engine = _engine(spec, site)
    batch: list[tuple[int, bytes | str]] = []
    for number, line in enumerate(lines, start=first):
        batch.append((number, line))
        if len(batch) == BATCH:
            yield from _batch(engine, batch)
            batch = []
    if batch:
        yield from _batch(engine, batch)


def _batch(engine: _Engine | None, batch: list[tuple[int, bytes | str]]) -> Iterator[tuple[int, Any, Any]]:
    if engine is None:
        for number, line in batch:
            yield number, line, None
        return
    decode = engine.decode
    recs: list[Any] = []
    where: list[int] = []  # position in the batch of each decoded record
    for k, (_, line) in enumerate(batch):
        if len(line) > MAX_FILE_BYTES:
            continue
        try:
            recs.append(decode(line))
        except (msgspec.DecodeError, RecursionError, ValueError):  # ValidationError is a DecodeError
            continue
        where.append(k)
    results: list[Any] = [None] * len(batch)
    if recs:
        slow, patterns = engine.screen(recs)
        for k, rec, late, pattern in zip(where, recs, slow.tolist(), patterns, strict=True):
            if not late:
                results[k] = (rec.id, pattern)
    for (number, line), result in zip(batch, results, strict=True):
        if result is None:
            yield number, line, None
        else:
            yield number, result[0], result[1]


_ENGINES: dict[tuple[int, int], tuple[Any, Any, _Engine | None]] = {}


def _engine(spec: EligibilitySpec, site: SiteRanges | None) -> _Engine | None:
    """The column engine of ``spec`` with ``site`` (built once; ``None`` if the protocol needs the evaluator)."""
    key = (id(spec), id(site))
    found = _ENGINES.get(key)
    if found is not None and found[0]() is spec and (site is None or found[1]() is site):
        return found[2]
    try:
        engine: _Engine | None = _Engine(spec, site)
    except _Unsupported:
        engine = None
    _ENGINES[key] = (weakref.ref(spec), None if site is None else weakref.ref(site), engine)
    return engine


def screen_jsonl(protocol: str | Path, lines: Sequence[str], site: str | Path | None = None,
                 executor: Executor | None = None, chunk_size: int = 5000,
                 source: str = "<batch>") -> Iterator[dict[str, Any]]:
    """Screen JSON lines against the protocol folder ``protocol``, in chunks on ``executor``.

    Parameters
    ----------
    protocol : str or Path
        The protocol folder (workers load it themselves, once each).
    lines : sequence of str
        One JSON record per line.
    site : str or Path or None
        A site file of reference ranges (``screen --site``).
    executor : concurrent.futures.Executor or None
        Where the chunks run; ``None`` screens them here, one after another.
    chunk_size : int
        Lines per task.

    Yields
    ------
    dict
        As :func:`screen_lines`, in input order.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected 1 or more (got {chunk_size})")
    starts = range(0, len(lines), chunk_size)
    args = [(str(protocol), None if site is None else str(site), list(lines[i:i + chunk_size]), i + 1, source)
            for i in starts]
    if executor is None:
        for a in args:
            yield from _chunk(*a)
        return
    for future in [executor.submit(_chunk, *a) for a in args]:
        yield from future.result()


def _chunk(protocol: str, site: str | None, lines: list[str], first: int, source: str) -> list[dict[str, Any]]:
    spec, ranges = _loaded(protocol, site)
    return list(screen_lines(spec, lines, ranges, source, first))


@functools.cache
def _loaded(protocol: str, site: str | None) -> tuple[EligibilitySpec, SiteRanges | None]:
    """The protocol's screener and the site file, loaded once per process."""
    from ..protocol import load_protocol

    return load_eligibility(load_protocol(protocol)), None if site is None else load_site(site)


# ------------------------------------------------------------------ the column engine
#
# Records are decoded by msgspec into typed structs built from the record format's tables (so a wrong type,
# an unknown field or an impossible code fails in C), the values the criteria read are gathered into one numpy
# column per data item, and each criterion runs once over the whole batch in Kleene logic coded as int8:
# 0 false, 1 unknown, 2 true (and = minimum, or = maximum, not = 2 - x).  Any record the columns cannot
# represent exactly (see _Engine.columns) is screened by the record-by-record evaluator instead.

_F, _U, _T = 0, 1, 2
_KLEENE = {True: _T, False: _F, None: _U}
_NO_DAY = 0  # ordinal of a missing date (real ordinals start at 1)
_OPEN = np.iinfo(np.int64).max  # end of an ongoing course
_EPOCH = dt.date(1970, 1, 1).toordinal()
_DATED_LISTS = ("events", "transplants")  # an entry without an end lasts one day


class _Unsupported(Exception):
    """The protocol uses something the column engine does not compile (its batches use the evaluator)."""


def _kind_type(kind: Any) -> Any:
    if kind == "bool":
        return bool
    if kind == "date":
        return dt.date
    if kind == "text":
        return str
    if kind[0] == "int":
        return Annotated[int, msgspec.Meta(ge=kind[1], le=kind[2])]
    if kind[0] == "number":
        return Annotated[float, msgspec.Meta(ge=kind[1], le=kind[2])]
    return typing.Literal[tuple(kind)]


_STRUCT: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}
_Number = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]  # larger: the checking reader explains


def _struct(name: str, kinds: Mapping[str, Any], required: tuple[str, ...] = ()) -> Any:
    fields: list[Any] = [(k, _kind_type(v)) for k, v in kinds.items() if k in required]
    fields += [(k, _kind_type(v) | None, None) for k, v in kinds.items() if k not in required]
    return msgspec.defstruct(name, fields, **_STRUCT)


class _Anchors(msgspec.Struct, **_STRUCT):
    screening: dt.date
    cell_collection: dt.date | None = None
    enrolment: dt.date | None = None
    planned_infusion: dt.date | None = None


class _Dated(msgspec.Struct, **_STRUCT):
    value: _Number
    unit: str
    date: dt.date | None = None


class _Undated(msgspec.Struct, **_STRUCT):
    value: _Number
    unit: str


class _Range(msgspec.Struct, **_STRUCT):
    low: _Number | None = None
    high: _Number | None = None
    unit: str | msgspec.UnsetType = msgspec.UNSET  # a null unit is refused by the reader


_SECTIONS = {name: _struct(name, kinds) for name, kinds in SECTION_FIELDS.items()}
_LISTS = {name: _struct(name, kinds, required) for name, (kinds, required) in LIST_FIELDS.items()}


def _decoder(spec: EligibilitySpec) -> msgspec.json.Decoder:
    """A decoder of the records this protocol can screen on the fast path (its codes and attestations only)."""
    codes = sorted(spec._codes)
    if not codes:
        raise _Unsupported("no measurements")
    measurement = msgspec.defstruct("measurement", [
        ("code", typing.Literal[tuple(codes)]), ("value", _Number), ("unit", str), ("date", dt.date | None, None),
        ("reference_range", _Range | None, None), ("lloq", _Number | None, None), ("detected", bool | None, None)],
        **_STRUCT)
    attested = msgspec.defstruct("attestations", [(k, bool | None, None) for k in sorted(spec._attestations)],
                                 **_STRUCT)
    listed: Any = list  # built at run time: mypy cannot see these as types
    fields: list[Any] = [
        ("id", Annotated[str, msgspec.Meta(min_length=1)]), ("anchors", _Anchors),
        ("format", typing.Literal["escalation-rules/patient-record/1"] | None, None),
        ("as_of", dt.date | None, None), ("ecog", Annotated[int, msgspec.Meta(ge=0, le=5)] | None, None),
        ("weight", _Dated | None, None), ("life_expectancy", _Undated | None, None),
        ("measurements", listed[measurement] | None, None), ("attestations", attested | None, None),
        ("disease_assessments", Any, None)]
    fields += [(name, struct | None, None) for name, struct in _SECTIONS.items()]
    fields += [(name, listed[struct] | None, None) for name, struct in _LISTS.items()]
    return msgspec.json.Decoder(msgspec.defstruct("record", fields, **_STRUCT))


def _none(values: Any) -> Any:
    """Which entries of an object column are ``None``."""
    return np.equal(values, None)  # type: ignore[call-overload]


def _ordinals(days: list[Any]) -> np.ndarray:
    return np.array([_NO_DAY if d is None else d.toordinal() for d in days], dtype=np.int64)


def _floats(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _codes(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _kleene(values: list[Any]) -> np.ndarray:
    k = _KLEENE
    return np.array([k[v] for v in values], dtype=np.int8)


def _snapped(values: np.ndarray, factor: float) -> np.ndarray:
    """``snap(v * factor)`` exactly as the evaluator computes it (NaN stays NaN)."""
    if factor == 1.0:
        return values
    return np.array([v if v != v else snap(v * factor) for v in values.tolist()], dtype=np.float64)


def _compare_const(values: np.ndarray, op: str, constant: float, snap_values: bool) -> np.ndarray:
    """Kleene ``v op constant`` over a float column (NaN unknown); with ``snap_values``, as ``snap(v) op c``."""
    fn = _NP_OP[op]
    with np.errstate(invalid="ignore"):
        result = fn(values, constant)
        if snap_values:
            near = np.abs(values - constant) <= 1e-9 * abs(constant)
            for i in np.flatnonzero(near).tolist():
                result[i] = _OPERATOR_PY[op](snap(float(values[i])), constant)
    out = np.where(result, _T, _F).astype(np.int8)
    out[np.isnan(values)] = _U
    return out


_NP_OP = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
          ">=": np.greater_equal}
_OPERATOR_PY = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
                ">=": operator.ge}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@attrs.frozen
class _Events:
    """An event-list column: which records' lists are unknown, and the kept entries (record, start, end)."""

    unknown: np.ndarray
    rec: np.ndarray
    start: np.ndarray
    end: np.ndarray


class _Columns:
    """The values of one batch: data items and criteria by name, plus the records sent to the evaluator."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.slow = np.zeros(n, dtype=bool)
        self.values: dict[str, Any] = {}
        self.stale: dict[str, np.ndarray] = {}  # measurement too old or undated (its range is not what is missing)

    def unknown(self, name: str) -> np.ndarray:
        v = self.values[name]
        if isinstance(v, _Events):
            return v.unknown
        if v.dtype == np.int8:
            return v == _U
        if v.dtype == np.float64:
            return np.isnan(v)
        if v.dtype == np.int64:
            return v == _NO_DAY
        return _none(v)


def _shifted(days: np.ndarray, amount: int, unit: str) -> np.ndarray:
    """``_shift`` of every known ordinal (0 stays 0), computed once per distinct day."""
    uniq, inverse = np.unique(days, return_inverse=True)
    shifted = np.array([0 if d == _NO_DAY else _shift(dt.date.fromordinal(d), amount, unit).toordinal()
                        for d in uniq.tolist()], dtype=np.int64)
    return shifted[inverse]


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = (days - _EPOCH).astype("datetime64[D]")
    years = d.astype("datetime64[Y]")
    months = d.astype("datetime64[M]")
    return (years.astype(np.int64) + 1970, (months - years).astype(np.int64) + 1,
            (d - months).astype(np.int64) + 1)


class _Engine:
    """One protocol's criteria compiled to column operations (built once per protocol and site)."""

    def __init__(self, spec: EligibilitySpec, site: SiteRanges | None) -> None:
        self.spec, self.site = spec, site
        self.decode = _decoder(spec).decode
        self.items = spec.items
        for item in self.items.values():
            if item.formula is None and not self._plain_source(item):
                raise _Unsupported(item.source)
        self.criteria = [(c, self._compile(c.when.tree)) for c in spec.criteria]
        self.kinds = [c.kind for c in spec.criteria]
        self.order = spec.item_names

    @staticmethod
    def _plain_source(item: DataItem) -> bool:
        head = item.source.partition(".")[0]
        return (head in ("anchors", "attestations", "measurements") or head in SECTION_FIELDS
                or item.source in ("ecog", "weight", "life_expectancy", "disease_assessments")
                or item.source in LIST_FIELDS)

    # -------------------------------------------------------------- gathering columns
    def columns(self, recs: list[Any]) -> _Columns:
        n = len(recs)
        cols = _Columns(n)
        slow, values = cols.slow, cols.values
        screening = _ordinals([r.anchors.screening for r in recs])
        anchors = {"screening": screening}
        for key in ("cell_collection", "enrolment", "planned_infusion"):
            anchors[key] = _ordinals([getattr(r.anchors, key) for r in recs])
        as_of_raw = _ordinals([r.as_of for r in recs])
        as_of = np.where(as_of_raw == _NO_DAY, screening, as_of_raw)
        slow |= as_of < screening
        for before, key in _ANCHOR_ORDER:
            a, b = anchors[before], anchors[key]
            slow |= (a != _NO_DAY) & (b != _NO_DAY) & (b < a)
        latest = np.zeros(n, dtype=np.int64)  # the latest past date the record gives (checked against as_of)

        def past(days: np.ndarray) -> None:
            np.maximum(latest, days, out=latest)

        slow |= np.array([r.transplants is not None or r.disease_assessments is not None for r in recs])
        sections: dict[str, dict[str, list[Any]]] = {}
        for head, kinds in SECTION_FIELDS.items():
            tables = [getattr(r, head) for r in recs]
            sections[head] = {key: [None if t is None else getattr(t, key) for t in tables] for key in kinds}
            for key, kind in kinds.items():
                if kind == "date":
                    past(_ordinals(sections[head][key]))
        birth = _ordinals(sections["demographics"]["birth_date"])
        sex = sections["demographics"]["sex"]
        known_birth = birth != _NO_DAY
        by, _, _ = _ymd(np.where(known_birth, birth, screening))
        sy, _, _ = _ymd(screening)
        slow |= known_birth & ((sy - by > 130) | (birth > screening))
        preg = sections["pregnancy"]
        slow |= np.array([s == "male" and bool(p or q) for s, p, q in zip(sex, preg["pregnant"], preg["lactating"],
                                                                           strict=True)])
        slow |= np.array([t is not None for t in preg["test_result"]])  # a pregnancy test: the evaluator
        attestations = [r.attestations for r in recs]
        for name, item in self.items.items():
            head, _, rest = item.source.partition(".")
            if item.formula is not None:
                continue
            if head == "anchors":
                values[name] = anchors[rest]
            elif head == "attestations":
                values[name] = _kleene([None if a is None else getattr(a, rest) for a in attestations])
            elif head in SECTION_FIELDS:
                raw = sections[head][rest]
                kind = SECTION_FIELDS[head][rest]
                values[name] = (_kleene(raw) if kind == "bool" else _ordinals(raw) if kind == "date" else
                                _floats(raw) if isinstance(kind, tuple) and kind[0] in ("int", "number") else
                                _codes(raw))
            elif item.source == "ecog":
                values[name] = _floats([r.ecog for r in recs])
            elif item.source == "disease_assessments":
                values[name] = np.full(n, None, dtype=object)
        self._quantities(recs, cols, past)
        self._measurements(recs, cols, anchors, past)
        self._lists(recs, cols, past)
        slow |= latest > as_of
        self._formulas(cols, anchors)
        return cols

    def _quantities(self, recs: list[Any], cols: _Columns, past: Callable[[np.ndarray], None]) -> None:
        for source, dimension, place in (("weight", "[mass]", "weight"), ("life_expectancy", "[time]",
                                                                           "life_expectancy")):
            raw = [getattr(r, source) for r in recs]
            present = np.array([q is not None for q in raw])
            values = _floats([None if q is None else q.value for q in raw])
            units = [None if q is None else q.unit for q in raw]
            if source == "weight":
                past(_ordinals([None if q is None else q.date for q in raw]))
                cols.slow |= present & ~(values > 0)
            else:
                cols.slow |= present & ~(values >= 0)
            target, low, high = PLAUSIBLE[place]
            to_target = np.array([1.0 if u is None else _plain_factor(u, target, None, dimension) for u in units])
            cols.slow |= present & np.isnan(to_target)
            with np.errstate(invalid="ignore"):
                converted = values * to_target
                cols.slow |= present & ~((low <= converted) & (converted <= high))
            for name, item in self.items.items():
                if item.source != source:
                    continue
                factors = np.array([np.nan if u is None else _plain_factor(u, item.type.unit, item.molar_mass)
                                    for u in units])
                cols.slow |= present & np.isnan(factors)
                cols.values[name] = _converted(values, factors)

    def _measurements(self, recs: list[Any], cols: _Columns, anchors: Mapping[str, np.ndarray],
                      past: Callable[[np.ndarray], None]) -> None:
        n, slow = cols.n, cols.slow
        found: dict[str, tuple[list[int], list[Any]]] = {code: ([], []) for code in self.spec._codes}
        for i, r in enumerate(recs):
            ms = r.measurements
            if ms:
                for m in ms:
                    entry = found[m.code]
                    entry[0].append(i)
                    entry[1].append(m)
        site = self.site
        for code, (index, ms) in found.items():
            idx = np.array(index, dtype=np.int64)
            counts = np.bincount(idx, minlength=n)
            slow |= counts > 1  # two results of one code: the evaluator picks the latest
            value = np.full(n, np.nan)
            day = np.zeros(n, dtype=np.int64)
            low = np.full(n, np.nan)
            high = np.full(n, np.nan)
            unit: list[Any] = [None] * n
            range_unit: list[Any] = [None] * n
            has_range = np.zeros(n, dtype=bool)
            odd = np.zeros(n, dtype=bool)
            for i, m in zip(index, ms, strict=True):
                value[i] = m.value
                unit[i] = m.unit
                if m.date is not None:
                    day[i] = m.date.toordinal()
                rng = m.reference_range
                if rng is not None:
                    has_range[i] = rng.low is not None or rng.high is not None
                    if rng.low is not None:
                        low[i] = rng.low
                    if rng.high is not None:
                        high[i] = rng.high
                    range_unit[i] = m.unit if rng.unit is msgspec.UNSET else rng.unit
                if m.lloq is not None or m.detected is not None:
                    odd[i] = True  # viral loads with their assay's limits: the evaluator
            present = counts > 0
            past(day)
            slow |= odd
            slow |= present & ~(value >= 0)
            with np.errstate(invalid="ignore"):
                slow |= (high <= 0) | (low > high)
            scale = np.array([-1.0 if u is None else _percent(u) for u in unit])
            slow |= present & np.isnan(scale)
            with np.errstate(invalid="ignore"):
                slow |= present & (scale >= 0) & (value * scale > 1)
            range_ok = np.array([u is None or not np.isnan(_percent(u)) for u in range_unit])
            slow |= ~range_ok
            place = f"measurements.{code}"
            if place in PLAUSIBLE:
                target, lo, hi = PLAUSIBLE[place]
                to_target = np.array([np.nan if u is None else _plain_factor(u, target, None) for u in unit])
                with np.errstate(invalid="ignore"):
                    converted = value * to_target
                    slow |= present & ~np.isnan(to_target) & ~((lo <= converted) & (converted <= hi))
            if site is not None:
                slow |= present & ~has_range
            for name, item in self.items.items():
                if item.source != place:
                    continue
                if item.formula is None and name in self._viral_loads():
                    slow |= present
                target_unit, molar = item.type.unit, item.molar_mass
                factors = np.array([np.nan if u is None else _plain_factor(u, target_unit, molar) for u in unit])
                slow |= present & np.isnan(factors)
                known = present.copy()
                stale = np.zeros(n, dtype=bool)
                if item.max_age is not None:
                    anchor = anchors[str(item.age_anchor)]
                    earliest = _shifted(anchor, -item.max_age[0], item.max_age[1])
                    stale = present & ((day == _NO_DAY) | (anchor == _NO_DAY) | (day < earliest))
                    known &= ~stale
                cols.stale[name] = stale
                cols.values[name] = np.where(known, _converted(value, factors), np.nan)
                range_factors = np.array([
                    f if u is None or u == v else _plain_factor(u, target_unit, molar)
                    for f, u, v in zip(factors.tolist(), range_unit, unit, strict=True)])
                slow |= present & has_range & np.isnan(range_factors)
                ranged = known & has_range
                cols.values[f"{name}.uln"] = np.where(ranged, _converted(high, range_factors), np.nan)
                cols.values[f"{name}.lln"] = np.where(ranged, _converted(low, range_factors), np.nan)

    @functools.cached_property
    def _viral_loads_set(self) -> frozenset[str]:
        return frozenset(i.inputs["load"] for i in self.items.values() if i.formula == "viral_load")

    def _viral_loads(self) -> frozenset[str]:
        return self._viral_loads_set

    def _lists(self, recs: list[Any], cols: _Columns, past: Callable[[np.ndarray], None]) -> None:
        n, slow = cols.n, cols.slow
        for source in LIST_FIELDS:
            readers = [item for item in self.items.values() if item.source == source]
            lists = [getattr(r, source) for r in recs]
            none = np.array([entries is None for entries in lists])
            rec: list[int] = []
            entries: list[Any] = []
            for i, e in enumerate(lists):
                if e:
                    rec.extend([i] * len(e))
                    entries.extend(e)
            rec_a = np.array(rec, dtype=np.int64)
            start = _ordinals([e.start for e in entries])
            ends = [e.end for e in entries]
            end = _ordinals(ends)
            if source in _DATED_LISTS:
                end = np.where(end == _NO_DAY, start, end)
            bad = (end != _NO_DAY) & (end < start)
            slow[rec_a[bad]] = True
            latest = np.zeros(n, dtype=np.int64)
            np.maximum.at(latest, rec_a, start)
            if source not in ("medications", "therapies"):
                np.maximum.at(latest, rec_a, end)
            past(latest)
            end = np.where(end == _NO_DAY, _OPEN, end)
            for item in readers:
                keep = np.full(len(entries), _T, dtype=np.int8)
                for field, allowed in item.where.items():
                    keep = np.minimum(keep, _member(entries, source, field, frozenset(allowed)))
                if item.where_not:
                    dropped = np.full(len(entries), _T, dtype=np.int8)
                    for field, allowed in item.where_not.items():
                        dropped = np.minimum(dropped, _member(entries, source, field, frozenset(allowed)))
                    keep = np.where(keep == _F, _F, np.where((keep == _U) | (dropped == _U), _U,
                                                             np.where(dropped == _T, _F, _T))).astype(np.int8)
                unknown = none.copy()
                unknown[rec_a[keep == _U]] = True
                kept = keep == _T
                cols.values[item.name] = _Events(unknown, rec_a[kept], start[kept], end[kept])

    def _formulas(self, cols: _Columns, anchors: Mapping[str, np.ndarray]) -> None:
        values, slow = cols.values, cols.slow
        for name, item in self.items.items():
            inputs = item.inputs
            if item.formula == "age_years":
                b, d = values[inputs["birth_date"]], values[inputs["on"]]
                by, bm, bd = _ymd(b)
                dy, dm, dd = _ymd(d)
                age = (dy - by - ((dm < bm) | ((dm == bm) & (dd < bd)))).astype(np.float64)
                values[name] = np.where((b == _NO_DAY) | (d == _NO_DAY), np.nan, age)
            elif item.formula == "cockcroft_gault":
                a, s = values[inputs["age"]], values[inputs["sex"]]
                w, c = values[inputs["weight"]], values[inputs["creatinine"]]
                weight_item, creat_item = self.items[inputs["weight"]], self.items[inputs["creatinine"]]
                to_kg = unit_factor(weight_item.type.unit, "kg")
                to_mgdl = unit_factor(creat_item.type.unit, "mg/dL", creat_item.molar_mass)
                out = unit_factor("mL/min", str(item.unit))
                female = np.where(s == "female", 0.85, 1.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    crcl = (140 - a) * w * to_kg * female / (72 * c * to_mgdl) * out
                unknown = np.isnan(a) | _none(s) | np.isnan(w) | np.isnan(c) | ~(c > 0)
                values[name] = np.where(unknown, np.nan, crcl)
            elif item.formula in ("pregnancy_status", "female_only"):
                stated, s, na = values[inputs["stated"]], values[inputs["sex"]], values[inputs["not_applicable"]]
                values[name] = np.where(s == "male", _F, np.where(stated != _U, stated,
                                                                  np.where(na == _T, _F, _U))).astype(np.int8)
            elif item.formula == "viral_load":
                values[name] = values[inputs["stated"]]  # a numeric load present went to the evaluator
            elif item.formula == "relapse_evidence":
                values[name] = values[inputs["attested"]]  # dated assessments present went to the evaluator
            elif item.formula is not None:
                raise _Unsupported(item.formula)
        del slow

    # -------------------------------------------------------------- compiling criteria
    def _compile(self, node: Any) -> Callable[[_Columns], Any]:
        if isinstance(node, Name):
            name = node.name
            return lambda cols: cols.values[name]
        if isinstance(node, Literal) and isinstance(node.value, bool):
            value = _T if node.value else _F
            return lambda cols: np.full(cols.n, value, dtype=np.int8)
        if isinstance(node, Not):
            inner = self._compile(node.operand)
            return lambda cols: (2 - inner(cols)).astype(np.int8)
        if isinstance(node, BoolOp):
            return self._logic(node.op, node.operands)
        if isinstance(node, Compare):
            return self._compare(node)
        if isinstance(node, Call):
            return self._call(node)
        raise _Unsupported(type(node).__name__)

    def _logic(self, op: str, operands: tuple[Any, ...]) -> Callable[[_Columns], Any]:
        parts = [self._compile(o) for o in operands]
        reduce = np.minimum if op == "and" else np.maximum

        def run(cols: _Columns) -> np.ndarray:
            out = parts[0](cols)
            for part in parts[1:]:
                out = reduce(out, part(cols))
            return out.astype(np.int8)
        return run

    def _compare(self, node: Compare) -> Callable[[_Columns], Any]:
        op = node.op
        left: Any = node.left
        right: Any = node.right
        if isinstance(left, Literal | QuantityLiteral) and not isinstance(right, Literal | QuantityLiteral):
            op, left, right = _FLIP[op], right, left
        ratio = isinstance(left, Call) and left.function in ("ratio_to_uln", "ratio_to_lln")
        if not (isinstance(left, Name) or ratio):
            raise _Unsupported("comparison")
        if isinstance(right, QuantityLiteral):
            if not isinstance(left, Name):
                raise _Unsupported("comparison")
            kind = self.spec_names[left.name]
            amount = snap(right.value * unit_factor(right.unit, kind.unit))
            name = left.name
            return lambda cols: _compare_const(cols.values[name], op, amount, False)
        if not isinstance(right, Literal) or isinstance(right.value, bool):
            raise _Unsupported("comparison")
        constant: Any = right.value
        if ratio:
            assert isinstance(left, Call) and isinstance(left.args[0], Name)
            base = left.args[0].name
            key = f"{base}.{'uln' if left.function == 'ratio_to_uln' else 'lln'}"

            def run_ratio(cols: _Columns) -> np.ndarray:
                v, b = cols.values[base], cols.values[key]
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = np.where(b == 0, np.nan, v / b)
                return _compare_const(r, op, float(constant), True)
            return run_ratio
        name = left.name
        if isinstance(constant, str):
            if op not in ("==", "!="):
                raise _Unsupported("code order")

            def run_code(cols: _Columns) -> np.ndarray:
                v = cols.values[name]
                same = v == constant if op == "==" else v != constant
                return np.where(_none(v), _U, np.where(same, _T, _F)).astype(np.int8)
            return run_code
        kind = self.spec_names[name]
        if kind not in (INT, NUMBER) and not isinstance(kind, QuantityType):
            raise _Unsupported("comparison")
        return lambda cols: _compare_const(cols.values[name], op, float(constant), False)

    @functools.cached_property
    def spec_names(self) -> dict[str, Any]:
        return _names(self.items)

    def _call(self, node: Call) -> Callable[[_Columns], Any]:
        fn = node.function
        args: Any = node.args
        if fn in ("all_of", "any_of"):
            return self._logic("and" if fn == "all_of" else "or", args)
        if fn == "implies":
            return self._logic("or", (Not(args[0]), args[1]))
        if fn == "one_of":
            inner = self._compile(args[0])
            allowed = [a.value for a in args[1:]]

            def run_one_of(cols: _Columns) -> np.ndarray:
                v = inner(cols)
                hit = np.isin(v, np.array(allowed, dtype=object))
                return np.where(_none(v), _U, np.where(hit, _T, _F)).astype(np.int8)
            return run_one_of
        if fn == "at_least":
            need = int(args[0].value)
            parts = [self._compile(a) for a in args[1:]]

            def run_at_least(cols: _Columns) -> np.ndarray:
                got = [p(cols) for p in parts]
                yes = sum((g == _T).astype(np.int64) for g in got)
                unknown = sum((g == _U).astype(np.int64) for g in got)
                return np.where(yes >= need, _T, np.where(yes + unknown < need, _F, _U)).astype(np.int8)
            return run_at_least
        if fn in ("within", "within_after", "ongoing", "exists"):
            return self._window(fn, args)
        raise _Unsupported(fn)

    def _events(self, node: Any) -> Callable[[_Columns], _Events]:
        if not isinstance(node, Name):
            raise _Unsupported("events")
        name = node.name
        if self.spec_names[name] == DATE:
            def from_date(cols: _Columns) -> _Events:
                d = cols.values[name]
                known = np.flatnonzero(d != _NO_DAY)
                return _Events(d == _NO_DAY, known, d[known], d[known])
            return from_date
        return lambda cols: cols.values[name]

    def _window(self, fn: str, args: tuple[Any, ...]) -> Callable[[_Columns], Any]:
        events = self._events(args[0])
        if fn == "exists":
            def run_exists(cols: _Columns) -> np.ndarray:
                e = events(cols)
                has = np.bincount(e.rec, minlength=cols.n) > 0
                return np.where(e.unknown, _U, np.where(has, _T, _F)).astype(np.int8)
            return run_exists
        anchor_node = args[-1]
        if not isinstance(anchor_node, Name):
            raise _Unsupported("anchor")
        anchor_name = anchor_node.name
        if fn == "ongoing":
            amount, unit, after = 0, "day", False
        else:
            duration = args[1]
            amount, _ = int(duration.value), None
            unit = _CALENDAR[parse_unit(duration.unit)[0]]
            after = fn == "within_after"

        def run_window(cols: _Columns) -> np.ndarray:
            e = events(cols)
            day = cols.values[anchor_name]
            other = _shifted(day, amount if after else -amount, unit) if amount else day
            low, high = (day, other) if after else (other, day)
            hit = (e.start <= high[e.rec]) & (e.end >= low[e.rec])
            has = np.bincount(e.rec, minlength=cols.n) > 0
            any_hit = np.bincount(e.rec[hit], minlength=cols.n) > 0
            return np.where(e.unknown, _U, np.where(~has, _F, np.where(day == _NO_DAY, _U,
                                                                        np.where(any_hit, _T, _F)))).astype(np.int8)
        return run_window

    # -------------------------------------------------------------- screening a batch
    def evaluate(self, cols: _Columns) -> list[np.ndarray]:
        out = []
        for criterion, run in self.criteria:
            value = run(cols)
            cols.values[criterion.id] = value
            out.append(value)
        return out

    def needed(self, cols: _Columns, unknown_criteria: np.ndarray) -> dict[str, np.ndarray]:
        """Per data item, the records whose undetermined criteria miss it (as the evaluator's ``_missing``)."""
        memo: dict[str, dict[str, np.ndarray]] = {}
        spec = self.spec

        def reach(name: str) -> dict[str, np.ndarray]:
            found = memo.get(name)
            if found is not None:
                return found
            unknown = cols.unknown(name)
            out: dict[str, np.ndarray] = {}
            base, dot, _ = name.partition(".")
            definition = spec.definition(name)
            item = self.items.get(name)
            if dot:
                stale = cols.stale.get(base)
                if stale is not None and stale.any():
                    out[base] = unknown & stale
                    out[name] = unknown & ~stale
                else:
                    out[name] = unknown
            elif definition is not None or (item is not None and item.formula is not None):
                inner = definition.reads if definition is not None else tuple(item.inputs.values()) if item else ()
                for child in inner:
                    for leaf, mask in reach(child).items():
                        hit = unknown & mask
                        out[leaf] = out[leaf] | hit if leaf in out else hit
            else:
                out[name] = unknown
            memo[name] = out
            return out

        wanted: dict[str, np.ndarray] = {}
        for j, (criterion, _) in enumerate(self.criteria):
            if criterion.kind == "definition":
                continue
            open_ = unknown_criteria[:, j]
            if not open_.any():
                continue
            for name in criterion.reads:
                for leaf, mask in reach(name).items():
                    hit = open_ & mask
                    wanted[leaf] = wanted[leaf] | hit if leaf in wanted else hit
        return wanted

    def screen(self, recs: list[Any]) -> tuple[np.ndarray, list[_Pattern]]:
        """Screen decoded records: per record ``True`` if the evaluator must take it, and its result pattern."""
        cols = self.columns(recs)
        values = self.evaluate(cols)
        judged = [(j, v) for j, ((c, _), v) in enumerate(zip(self.criteria, values, strict=True))
                  if c.kind != "definition"]
        failing_ex = [c.kind == "exclusion" for c, _ in self.criteria]
        n = cols.n
        fails = np.zeros((n, len(judged)), dtype=bool)
        unknown = np.zeros((n, len(self.criteria)), dtype=bool)
        for k, (j, v) in enumerate(judged):
            fails[:, k] = v == (_T if failing_ex[j] else _F)
            unknown[:, j] = v == _U
        failing = fails.any(axis=1)
        undetermined: Any = ~failing & unknown.any(axis=1)
        unknown &= undetermined[:, None]
        wanted = self.needed(cols, unknown)
        leaves = [name for name in self.order if name in wanted]
        need = np.zeros((n, len(leaves)), dtype=bool)
        for k, name in enumerate(leaves):
            need[:, k] = wanted[name]
        outcome = np.where(failing, 1, np.where(undetermined, 2, 0)).astype(np.uint8)
        matrix = np.concatenate([outcome[:, None], np.packbits(fails, axis=1), np.packbits(need, axis=1)], axis=1)
        rows = np.ascontiguousarray(matrix).view(np.dtype((np.void, matrix.shape[1]))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        judged_ids = [self.criteria[j][0].id for j, _ in judged]
        patterns = []
        for i in first.tolist():
            failed = tuple(cid for cid, f in zip(judged_ids, fails[i].tolist(), strict=True) if f)
            needs = tuple(name for name, f in zip(leaves, need[i].tolist(), strict=True) if f)
            patterns.append(_Pattern(OUTCOMES[outcome[i]], failed, needs))
        return cols.slow, [patterns[k] for k in inverse.ravel().tolist()]


@attrs.frozen
class _Pattern:
    """One outcome with its failed criteria and needed items, shared by the records that have it."""

    outcome: str
    failed: tuple[str, ...]
    needed: tuple[str, ...]

    @functools.cached_property
    def tail(self) -> str:
        """The compact JSON after the record's id."""
        return (f'"outcome":"{self.outcome}","failed":{json.dumps(list(self.failed), separators=(",", ":"))},'
                f'"needed":{json.dumps(list(self.needed), separators=(",", ":"))}}}')


def _converted(values: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``v if f == 1.0 else snap(v * f)`` per element, as the evaluator converts units (NaN stays NaN)."""
    out = values.copy()
    todo = np.flatnonzero((factors != 1.0) & ~np.isnan(values) & ~np.isnan(factors))
    if todo.size:
        out[todo] = [snap(v * f) for v, f in zip(values[todo].tolist(), factors[todo].tolist(), strict=True)]
    return out


@functools.cache
def _plain_factor(unit: str, target: str, molar: str | None, dimension: str | None = None) -> float:
    """``lab_factor(unit, target, molar)``, NaN where the evaluator would refuse the unit."""
    try:
        if dimension is not None and parse_unit(lab_unit(unit))[1] != dimension:
            return math.nan
        return lab_factor(unit, target, molar)
    except GuardSyntaxError:
        return math.nan


@functools.cache
def _percent(unit: str) -> float:
    """The share one ``unit`` is of a whole (``%``: 0.01), -1 for a unit with a dimension, NaN for an unknown one."""
    info = _unit_ok(unit)
    if info is None:
        return math.nan
    return -1.0 if info[0] is None else info[0]


def _member(entries: list[Any], source: str, field: str, allowed: frozenset[Any]) -> np.ndarray:
    """Kleene membership of each entry's ``field`` in ``allowed`` (unknown where the entry lacks it)."""
    if source in ("medications", "therapies"):
        key = field
        values = [getattr(e, key) for e in entries]
        if key == "indication":
            values = [v or "unspecified" for v in values]
    else:
        key = ("category" if source == "malignancies" else "type") if field in ("category", "type") else field
        values = [getattr(e, key) for e in entries]
    return np.array([_U if v is None else _T if v in allowed else _F for v in values], dtype=np.int8)
