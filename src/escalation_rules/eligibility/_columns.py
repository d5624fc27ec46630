"""The column engine of batch screening (see :mod:`escalation_rules.eligibility._batch`).

Records are decoded by msgspec into typed structs built from the record format's tables (so a wrong type,
an unknown field or an impossible code fails in C), the values the criteria read are gathered into one numpy
column per data item, and each criterion runs once over the whole batch in Kleene logic coded as int8:
0 false, 1 unknown, 2 true (and = minimum, or = maximum, not = 2 - x).  Any record the columns cannot
represent exactly (see :meth:`_Engine.columns`) is left to the record-by-record evaluator.  Kept apart from
``_batch`` so that screening one record imports neither numpy nor msgspec.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import itertools
import json
import math
import operator
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import attrs
import msgspec
import numpy as np

from .._attrs import value_repr
from .._limits import MAX_FILE_BYTES
from ..errors import GuardSyntaxError
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
from ._record import _ANCHOR_ORDER, LIST_FIELDS, PLAUSIBLE, SECTION_FIELDS, _unit_ok
from ._screen import OUTCOMES
from ._site import SiteRanges
from ._spec import DataItem, EligibilitySpec, _names
from ._units import lab_factor, lab_unit

__all__ = ["engine", "screen_chunk"]


def screen_chunk(engine: _Engine | None, chunk: list[Any]) -> list[tuple[str, _Pattern] | None]:
    """Per line, ``(record id, result pattern)`` when screened over columns, ``None`` for the evaluator."""
    results: list[tuple[str, _Pattern] | None] = [None] * len(chunk)
    if engine is None:
        return results
    decode = engine.decode
    recs: list[Any] = []
    where: list[int] = []  # position in the chunk of each decoded record
    collecting = gc.isenabled()
    gc.disable()  # a batch makes millions of short-lived tuples and no cycles: no collection while it runs
    try:
        try:  # the usual chunk: every line decodes
            if max(map(len, chunk), default=0) > MAX_FILE_BYTES:
                raise ValueError("a line too long")
            recs = list(map(decode, chunk))
            where = list(range(len(chunk)))
        except (msgspec.DecodeError, RecursionError, ValueError):  # ValidationError is a DecodeError
            recs, where = [], []
            for k, line in enumerate(chunk):
                if len(line) > MAX_FILE_BYTES:
                    continue
                try:
                    recs.append(decode(line))
                except (msgspec.DecodeError, RecursionError, ValueError):
                    continue
                where.append(k)
        if recs:
            slow, patterns = engine.screen(recs)
            if len(recs) == len(chunk) and not slow.any():  # the usual chunk: every line over columns
                return list(zip(map(_ID, recs), patterns, strict=True))
            for k, rec, late, pattern in zip(where, recs, slow.tolist(), patterns, strict=True):
                if not late:
                    results[k] = (rec.id, pattern)
    finally:
        if collecting:
            gc.enable()
    return results


_ID = operator.attrgetter("id")
_MEASUREMENT = operator.attrgetter("code", "value", "unit", "date", "reference_range.low", "reference_range.high",
                                   "reference_range.unit")
_ENGINES: dict[tuple[int, int], tuple[Any, Any, _Engine | None]] = {}
_KEPT_ENGINES = 8  # specifications x site files a long-lived process screens with, kept compiled


def engine(spec: EligibilitySpec, site: SiteRanges | None) -> _Engine | None:
    """The column engine of ``spec`` with ``site`` (built once; ``None`` if the protocol needs the evaluator)."""
    key = (id(spec), id(site))
    found = _ENGINES.get(key)
    if found is not None and found[0]() is spec and (site is None or found[1]() is site):
        return found[2]
    try:
        engine: _Engine | None = _Engine(spec, site)
    except _Unsupported:
        engine = None
    while len(_ENGINES) >= _KEPT_ENGINES:  # an engine holds its specification: keep only the latest few
        del _ENGINES[next(iter(_ENGINES))]
    _ENGINES[key] = (weakref.ref(spec), None if site is None else weakref.ref(site), engine)
    return engine


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


class _Range(msgspec.Struct, frozen=True, **_STRUCT):
    low: _Number | None = None
    high: _Number | None = None
    unit: str | msgspec.UnsetType = msgspec.UNSET  # a null unit is refused by the reader


_NO_RANGE = _Range()  # a measurement without a reference range has this one (so its fields read in one pass)


_SECTIONS = {name: _struct(name, kinds) for name, kinds in SECTION_FIELDS.items()}
_LISTS = {name: _struct(name, kinds, required) for name, (kinds, required) in LIST_FIELDS.items()}


def _decoder(spec: EligibilitySpec) -> tuple[msgspec.json.Decoder, Any, Any]:
    """A decoder of the records this protocol can screen on the fast path (its codes and attestations only)."""
    codes = sorted(spec._codes)
    if not codes:
        raise _Unsupported("no measurements")
    measurement = msgspec.defstruct("measurement", [
        ("code", typing.Literal[tuple(codes)]), ("value", _Number), ("unit", str), ("date", dt.date | None, None),
        ("reference_range", _Range | None, _NO_RANGE)],
        **_STRUCT)  # lloq, detected: refused, so the evaluator reads them
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
    record = msgspec.defstruct("record", fields, **_STRUCT)
    return msgspec.json.Decoder(record), record, attested


def _transpose(objs: Sequence[Any], fields: tuple[str, ...], only: tuple[str, ...] | None = None
               ) -> dict[str, Sequence[Any]]:
    """Columns of a list of structs (``None`` entries give ``None`` in every column), transposed in C.

    With ``only``, just those fields (at least two) are read.
    """
    if only is not None:
        fields = only
    empty = (None,) * len(fields)
    get = msgspec.structs.astuple if only is None else operator.attrgetter(*only)
    try:
        rows = list(map(get, objs))
    except (TypeError, AttributeError):  # some are missing
        rows = [empty if o is None else get(o) for o in objs]
    if not rows:
        return {f: () for f in fields}
    return dict(zip(fields, zip(*rows, strict=False), strict=True))


def _lengths(lists: Sequence[Any]) -> np.ndarray:
    """The length of each list (0 for a missing one)."""
    try:
        return np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    except TypeError:  # some are missing
        return np.fromiter((0 if e is None else len(e) for e in lists), dtype=np.int64, count=len(lists))


def _present(values: Sequence[Any]) -> np.ndarray:
    """Which values are not ``None`` (any values: structs, lists...)."""
    return np.fromiter(map(operator.is_not, values, itertools.repeat(None)), dtype=bool, count=len(values))


class _Units:
    """A column of unit spellings (or codes) as small integers, so that each spelling is judged once.

    ``missing`` are the values that stand for no unit (ids below ``len(missing)``).
    """

    def __init__(self, units: Sequence[Any], missing: tuple[Any, ...] = (None,)) -> None:
        index = {u: k for k, u in enumerate(dict.fromkeys((*missing, *units)))}
        self.ids = np.fromiter(map(index.__getitem__, units), dtype=np.int64, count=len(units))
        self.spellings = list(index)
        self.missing = len(missing)

    def same(self, other: _Units, rows: np.ndarray) -> np.ndarray:
        """Whether the unit of ``rows`` here is spelt as in ``other`` (compared once per spelling)."""
        theirs = {u: k for k, u in enumerate(other.spellings)}
        table = np.array([theirs.get(u, -1) if k >= self.missing else -1 for k, u in enumerate(self.spellings)],
                         dtype=np.int64)
        return table[self.ids[rows]] == other.ids[rows]

    def map(self, fn: Callable[[str], float], missing: float) -> np.ndarray:
        table = np.array([missing if k < self.missing else fn(u) for k, u in enumerate(self.spellings)],
                         dtype=np.float64)
        return table[self.ids]

    def factors(self, target: str, molar: str | None, rows: np.ndarray | None = None,
                dimension: str | None = None) -> np.ndarray:
        """The factor into ``target`` of the units of ``rows`` (all by default), worked out for the spellings
        they use only (NaN for none, for one that does not convert, or for one not of ``dimension``).

        A spelling that does not convert can be costly to judge (close matches are looked for), so the
        spellings no row asks about are not judged at all.
        """
        ids = self.ids if rows is None else self.ids[rows]
        table = np.full(len(self.spellings), math.nan)
        for k in np.flatnonzero(np.bincount(ids, minlength=len(self.spellings))[self.missing:]).tolist():
            table[k + self.missing] = _plain_factor(self.spellings[k + self.missing], target, molar, dimension)
        return table[ids]


def _none(values: Any) -> Any:
    """Which entries of an object column are ``None``."""
    return np.equal(values, None)  # type: ignore[call-overload]


def _ordinals(days: Sequence[Any]) -> np.ndarray:
    """Dates as ordinals (``_NO_DAY`` where missing)."""
    try:
        return np.fromiter(map(_ORDINAL, days), dtype=np.int64, count=len(days))
    except TypeError:  # some are missing: the others are read in C all the same (a date is never false)
        present = _present(days)
        out = np.full(len(days), _NO_DAY, dtype=np.int64)
        out[present] = np.fromiter(map(_ORDINAL, filter(None, days)), dtype=np.int64, count=int(present.sum()))
        return out


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Numbers as floats (NaN where missing)."""
    return np.array(values, dtype=np.float64)  # numpy reads None as NaN


def _codes(values: Sequence[Any]) -> np.ndarray:
    """Codes (strings or ``None``) as an object column."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _kleene(values: Sequence[Any]) -> np.ndarray:
    """Booleans as Kleene codes (unknown where missing)."""
    return np.fromiter(map(_KLEENE.__getitem__, values), dtype=np.int8, count=len(values))


_ORDINAL = dt.date.toordinal


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

    __repr__ = value_repr

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
        decoder, record, attested = _decoder(spec)
        self.decode = decoder.decode
        self.record_fields = record.__struct_fields__
        self.attestation_fields = attested.__struct_fields__
        self.codes = {code: k for k, code in enumerate(sorted(spec._codes))}
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
        top = _transpose(recs, self.record_fields)
        anchor_rows = _transpose(top["anchors"], _Anchors.__struct_fields__)
        anchors = {key: _ordinals(anchor_rows[key]) for key in _Anchors.__struct_fields__}
        screening = anchors["screening"]
        as_of_raw = _ordinals(top["as_of"])
        as_of = np.where(as_of_raw == _NO_DAY, screening, as_of_raw)
        slow |= as_of < screening
        for before, key in _ANCHOR_ORDER:
            a, b = anchors[before], anchors[key]
            slow |= (a != _NO_DAY) & (b != _NO_DAY) & (b < a)
        latest = np.zeros(n, dtype=np.int64)  # the latest past date the record gives (checked against as_of)

        def past(days: np.ndarray) -> None:
            np.maximum(latest, days, out=latest)

        slow |= _present(top["transplants"]) | _present(top["disease_assessments"])
        sections: dict[str, dict[str, Sequence[Any]]] = {}
        for head, kinds in SECTION_FIELDS.items():
            sections[head] = rows = _transpose(top[head], _SECTIONS[head].__struct_fields__)
            for key, kind in kinds.items():
                if kind == "date":
                    past(_ordinals(rows[key]))
        birth = _ordinals(sections["demographics"]["birth_date"])
        sex = sections["demographics"]["sex"]
        known_birth = birth != _NO_DAY
        by, _, _ = _ymd(np.where(known_birth, birth, screening))
        sy, _, _ = _ymd(screening)
        slow |= known_birth & ((sy - by > 130) | (birth > screening))
        preg = sections["pregnancy"]
        male = _codes(sex) == "male"
        slow |= male & ((_kleene(preg["pregnant"]) == _T) | (_kleene(preg["lactating"]) == _T))
        slow |= _present(preg["test_result"])  # a pregnancy test: the evaluator
        attested = _transpose(top["attestations"], self.attestation_fields)
        for name, item in self.items.items():
            head, _, rest = item.source.partition(".")
            if item.formula is not None:
                continue
            if head == "anchors":
                values[name] = anchors[rest]
            elif head == "attestations":
                values[name] = _kleene(attested[rest])
            elif head in SECTION_FIELDS:
                raw = sections[head][rest]
                kind = SECTION_FIELDS[head][rest]
                values[name] = (_kleene(raw) if kind == "bool" else _ordinals(raw) if kind == "date" else
                                _floats(raw) if isinstance(kind, tuple) and kind[0] in ("int", "number") else
                                _codes(raw))
            elif item.source == "ecog":
                values[name] = _floats(top["ecog"])
            elif item.source == "disease_assessments":
                values[name] = np.full(n, None, dtype=object)
        self._quantities(top, cols, past)
        self._measurements(top["measurements"], cols, anchors, past)
        self._lists(top, cols, past)
        slow |= latest > as_of
        self._formulas(cols)
        return cols

    def _quantities(self, top: Mapping[str, Sequence[Any]], cols: _Columns,
                    past: Callable[[np.ndarray], None]) -> None:
        for source, dimension in (("weight", "[mass]"), ("life_expectancy", "[time]")):
            raw = top[source]
            rows = _transpose(raw, (_Dated if source == "weight" else _Undated).__struct_fields__)
            present = _present(raw)
            values = _floats(rows["value"])
            units = _Units(rows["unit"])
            if source == "weight":
                past(_ordinals(rows["date"]))
                cols.slow |= present & ~(values > 0)
            else:
                cols.slow |= present & ~(values >= 0)
            target, low, high = PLAUSIBLE[source]
            to_target = units.factors(target, None, dimension=dimension)
            cols.slow |= present & np.isnan(to_target)
            with np.errstate(invalid="ignore"):
                converted = values * to_target
                cols.slow |= present & ~((low <= converted) & (converted <= high))
            for name, item in self.items.items():
                if item.source != source:
                    continue
                factors = units.factors(item.type.unit, item.molar_mass)
                cols.slow |= present & np.isnan(factors)
                cols.values[name] = _converted(values, factors)

    def _measurements(self, lists: Sequence[Any], cols: _Columns, anchors: Mapping[str, np.ndarray],
                      past: Callable[[np.ndarray], None]) -> None:
        n, slow = cols.n, cols.slow
        rec = np.repeat(np.arange(n), _lengths(lists))
        flat = list(itertools.chain.from_iterable(filter(None, lists)))
        try:
            rows = list(map(_MEASUREMENT, flat))
        except AttributeError:  # "reference_range": null
            for m in flat:
                if m.reference_range is None:
                    m.reference_range = _NO_RANGE
            rows = list(map(_MEASUREMENT, flat))
        code_col, value_col, unit_col, date_col, low_col, high_col, range_unit_col = (
            zip(*rows, strict=True) if rows else ((),) * 7)
        codes = self.codes
        code = np.fromiter(map(codes.__getitem__, code_col), dtype=np.int64, count=len(flat))
        if flat and np.bincount(rec * len(codes) + code).max() > 1:  # two results of one code: the latest counts
            slow |= np.bincount(rec, minlength=n) > np.array([len({m.code for m in ms}) if ms else 0
                                                              for ms in lists])
        value = _floats(value_col)
        units = _Units(unit_col)
        day = _ordinals(date_col)
        past_days = np.zeros(n, dtype=np.int64)
        np.maximum.at(past_days, rec, day)
        past(past_days)
        low, high = _floats(low_col), _floats(high_col)
        has_range = ~np.isnan(low) | ~np.isnan(high)
        range_units = _Units(range_unit_col, (None, msgspec.UNSET))  # UNSET: a range in the value's unit
        own_unit = range_units.ids >= 2
        bad = ~(value >= 0)
        with np.errstate(invalid="ignore"):
            bad |= (high <= 0) | (low > high)
            scale = units.map(_percent, -1.0)
            bad |= np.isnan(scale) | ((scale >= 0) & (value * scale > 1))
        bad |= own_unit & np.isnan(range_units.map(_percent, -1.0))
        slow[rec[bad]] = True
        site = self.site
        for name, item in self.items.items():
            head, _, wanted = item.source.partition(".")
            if head != "measurements":
                continue
            mine = np.flatnonzero(code == codes[wanted])
            where = rec[mine]
            if name in self._viral_loads:
                slow[where] = True
            m_value, m_day, m_has_range = value[mine], day[mine], has_range[mine]
            place = item.source
            if place in PLAUSIBLE:
                target, lo, hi = PLAUSIBLE[place]
                to_target = units.factors(target, None, mine)
                with np.errstate(invalid="ignore"):
                    converted = m_value * to_target
                    slow[where[~np.isnan(to_target) & ~((lo <= converted) & (converted <= hi))]] = True
            if site is not None:
                slow[where[~m_has_range]] = True
            unit, molar = item.type.unit, item.molar_mass
            factors = units.factors(unit, molar, mine)
            slow[where[np.isnan(factors)]] = True
            known = np.ones(where.size, dtype=bool)
            stale_m = np.zeros(where.size, dtype=bool)
            if item.max_age is not None:
                anchor = anchors[str(item.age_anchor)][where]
                earliest = _shifted(anchor, -item.max_age[0], item.max_age[1])
                stale_m = (m_day == _NO_DAY) | (anchor == _NO_DAY) | (m_day < earliest)
                known &= ~stale_m
            stale = np.zeros(n, dtype=bool)
            stale[where] = stale_m
            cols.stale[name] = stale
            column = np.full(n, np.nan)
            column[where] = np.where(known, _converted(m_value, factors), np.nan)
            cols.values[name] = column
            other = own_unit[mine] & ~range_units.same(units, mine)
            range_factors = np.where(other, range_units.factors(unit, molar, mine), factors)
            slow[where[m_has_range & np.isnan(range_factors)]] = True
            ranged = known & m_has_range
            for limit, bound in (("uln", high), ("lln", low)):
                column = np.full(n, np.nan)
                column[where] = np.where(ranged, _converted(bound[mine], range_factors), np.nan)
                cols.values[f"{name}.{limit}"] = column

    @functools.cached_property
    def _viral_loads(self) -> frozenset[str]:
        return frozenset(i.inputs["load"] for i in self.items.values() if i.formula == "viral_load")

    def _lists(self, top: Mapping[str, Sequence[Any]], cols: _Columns, past: Callable[[np.ndarray], None]) -> None:
        n, slow = cols.n, cols.slow
        for source in LIST_FIELDS:
            readers = [item for item in self.items.values() if item.source == source]
            lists = top[source]
            unknown_list = ~_present(lists)
            rec = np.repeat(np.arange(n), _lengths(lists))
            entries = list(itertools.chain.from_iterable(filter(None, lists)))
            rows = _transpose(entries, _LISTS[source].__struct_fields__)
            start = _ordinals(rows["start"])
            end = _ordinals(rows["end"]) if "end" in rows else np.zeros(len(entries), dtype=np.int64)
            if source in _DATED_LISTS:
                end = np.where(end == _NO_DAY, start, end)
            slow[rec[(end != _NO_DAY) & (end < start)]] = True
            latest = np.zeros(n, dtype=np.int64)
            np.maximum.at(latest, rec, start)
            if source not in ("medications", "therapies"):
                np.maximum.at(latest, rec, end)
            past(latest)
            end = np.where(end == _NO_DAY, _OPEN, end)
            seen: dict[str, _Units] = {}
            for item in readers:
                keep = np.full(len(entries), _T, dtype=np.int8)
                for field, allowed in item.where.items():
                    keep = np.minimum(keep, _member(rows, source, field, frozenset(allowed), seen))
                if item.where_not:
                    dropped = np.full(len(entries), _T, dtype=np.int8)
                    for field, allowed in item.where_not.items():
                        dropped = np.minimum(dropped, _member(rows, source, field, frozenset(allowed), seen))
                    keep = np.where(keep == _F, _F, np.where((keep == _U) | (dropped == _U), _U,
                                                             np.where(dropped == _T, _F, _T))).astype(np.int8)
                unknown = unknown_list.copy()
                unknown[rec[keep == _U]] = True
                kept = keep == _T
                cols.values[item.name] = _Events(unknown, rec[kept], start[kept], end[kept])

    def _formulas(self, cols: _Columns) -> None:
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

    __repr__ = value_repr

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
    if todo.size:  # snap depends on the product alone: once per distinct product (a zero stays as it is, signed)
        product = values[todo] * factors[todo]
        distinct, inverse = np.unique(product, return_inverse=True)
        snapped = np.array([snap(p) for p in distinct.tolist()], dtype=np.float64)[inverse.ravel()]
        out[todo] = np.where(product == 0, product, snapped)
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


def _member(rows: Mapping[str, Sequence[Any]], source: str, field: str, allowed: frozenset[Any],
            seen: dict[str, _Units]) -> np.ndarray:
    """Kleene membership of each entry's ``field`` in ``allowed`` (unknown where the entry lacks it).

    The field's values are numbered once per list (kept in ``seen``) and judged once per distinct value.
    """
    if source not in ("medications", "therapies") and field in ("category", "type"):
        field = "category" if source == "malignancies" else "type"
    values = seen.get(field)
    if values is None:
        values = seen[field] = _Units(rows[field])
    unspecified = source in ("medications", "therapies") and field == "indication"  # no indication: unspecified
    table = np.array([_U if v is None and not unspecified else _T if (v or "unspecified" if unspecified else v)
                      in allowed else _F for v in values.spellings], dtype=np.int8)
    return table[values.ids]
