"""A site's laboratory reference ranges (``screen --site FILE``).

Reference ranges belong to the laboratory, not to each record.  A site file
(TOML) lists, per measurement code, one or more ranges, each optionally for
one sex and an age band; the most specific range that fits the patient is
used.  A range the record carries itself wins over the site's.

.. code-block:: toml

    [site]
    name = "Example Hospital laboratory"

    [[ranges.creatinine]]
    sex = "female"
    low = 45
    high = 84
    unit = "umol/L"

    [[ranges.creatinine]]
    sex = "male"
    low = 59
    high = 104
    unit = "umol/L"

    [[ranges.alt]]
    age_from = 18      # years, inclusive
    age_to = 65        # years, exclusive
    high = 40
    unit = "U/L"

Examples
--------
>>> site = load_site("examples/site-ranges.toml")
>>> site.range("creatinine", "male", 46)
SiteRange(code='creatinine', low=59.0, high=104.0, unit='umol/L', sex='male', age_from=None, age_to=None)
>>> site.range("alt", None, 46) is None  # two ranges differ by sex, and the sex is not known
True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .. import _toml as tomllib
from .._attrs import value_repr
from ..errors import GuardSyntaxError, ProtocolError
from ._record import _CODE, _show
from ._units import lab_unit

__all__ = ["SiteError", "SiteRange", "SiteRanges", "load_site"]

_RANGE_KEYS = ("sex", "age_from", "age_to", "low", "high", "unit")


class SiteError(ProtocolError):
    """A site file was refused; :attr:`problems` holds one line per problem, naming the file and key path."""


@attrs.frozen
class SiteRange:
    """One reference range of a site's laboratory, for a sex and an age band (``None``: any)."""

    __repr__ = value_repr

    code: str
    low: float | None
    high: float | None
    unit: str
    sex: str | None = None
    age_from: int | None = None
    age_to: int | None = None

    def fits(self, sex: str | None, age: int | None) -> bool | None:
        """Whether the range applies to the patient (``None`` when that depends on an unknown sex or age)."""
        unknown = False
        if self.sex is not None:
            if sex is None:
                unknown = True
            elif sex != self.sex:
                return False
        if self.age_from is not None or self.age_to is not None:
            if age is None:
                unknown = True
            elif (self.age_from is not None and age < self.age_from) or (self.age_to is not None
                                                                          and age >= self.age_to):
                return False
        return None if unknown else True

    @property
    def specificity(self) -> int:
        """How many conditions the range has (the most specific fitting range is used)."""
        return (self.sex is not None) + (self.age_from is not None or self.age_to is not None)

    def describe(self) -> str:
        """The range and whom it is for, in words."""
        low = "" if self.low is None else f"{self.low:g}"
        high = "" if self.high is None else f"{self.high:g}"
        who = [self.sex] if self.sex else []
        if self.age_from is not None or self.age_to is not None:
            who.append(f"age {self.age_from if self.age_from is not None else 0}-"
                       f"{'' if self.age_to is None else self.age_to}")
        return f"{low}-{high} {self.unit}" + (f" ({', '.join(who)})" if who else "")


@attrs.frozen
class SiteRanges:
    """A site file: its name and, per measurement code, the laboratory's reference ranges."""

    __repr__ = value_repr

    name: str
    source: str
    ranges: Mapping[str, tuple[SiteRange, ...]]

    def range(self, code: str, sex: str | None, age: int | None) -> SiteRange | None:
        """The most specific range for this patient, or ``None`` if none fits or it depends on unknown data."""
        candidates = self.ranges.get(code, ())
        fits = [(r, r.fits(sex, age)) for r in candidates]
        if any(ok is None for _, ok in fits):
            fitting = [r for r, ok in fits if ok is True]
            unsure = [r for r, ok in fits if ok is None]
            # an unsure range matters only if it would be chosen over a fitting one or give another answer
            if not fitting or max(r.specificity for r in unsure) >= max(r.specificity for r in fitting):
                return None
            return max(fitting, key=lambda r: r.specificity)
        fitting = [r for r, ok in fits if ok]
        return max(fitting, key=lambda r: r.specificity) if fitting else None


def load_site(path: str | Path) -> SiteRanges:
    """Read and check a site file.

    Raises
    ------
    SiteError
        With one line per problem (``site.toml: ranges.alt[1].high: expected a positive number (got -3)``).
    """
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise SiteError([f"{source}: cannot read: {err.strerror or err}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SiteError([f"{source}: not valid TOML: {err}"]) from None
    problems: list[str] = []

    def problem(where: str, message: str) -> None:
        problems.append(f"{source}: {where}: {message}")

    for key in data:
        if key not in ("site", "ranges"):
            problem(key, "unknown key (expected one of: ranges, site)")
    site = data.get("site", {})
    name = site.get("name", source) if isinstance(site, dict) else source
    if not isinstance(name, str):
        problem("site.name", f"expected a string (got {_show(name)})")
        name = source
    raw = data.get("ranges")
    if not isinstance(raw, dict) or not raw:
        problem("ranges", "expected tables [[ranges.CODE]] with low, high and unit")
        raise SiteError(problems)
    ranges: dict[str, tuple[SiteRange, ...]] = {}
    for code, entries in raw.items():
        if not _CODE.match(code):
            problem(f"ranges.{code}", "expected a lower-case measurement code such as 'creatinine'")
            continue
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            problem(f"ranges.{code}", f"expected [[ranges.{code}]] tables (got {_show(entries)})")
            continue
        out = []
        for i, entry in enumerate(entries):
            checked = _entry(code, entry, f"ranges.{code}[{i}]", problem)
            if checked is not None:
                out.append(checked)
        keys = [(r.sex, r.age_from, r.age_to) for r in out]
        if len(set(keys)) != len(keys):
            problem(f"ranges.{code}", "two ranges for the same sex and age band")
        ranges[code] = tuple(out)
    if problems:
        raise SiteError(problems)
    return SiteRanges(name, source, ranges)


def _entry(code: str, entry: Any, where: str, problem: Any) -> SiteRange | None:
    if not isinstance(entry, dict):
        problem(where, f"expected a table (got {_show(entry)})")
        return None
    bad = False
    for key in entry:
        if key not in _RANGE_KEYS:
            problem(f"{where}.{key}", f"unknown key (expected one of: {', '.join(_RANGE_KEYS)})")
            bad = True
    numbers: dict[str, float | None] = {}
    for key in ("low", "high"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                                  or value != value or value == float("inf")):
            problem(f"{where}.{key}", f"expected a number of 0 or more (got {_show(value)})")
            bad = True
            value = None
        numbers[key] = None if value is None else float(value)
    low, high = numbers["low"], numbers["high"]
    if entry.get("low") is None and entry.get("high") is None:
        problem(where, "expected low, high or both")
        bad = True
    if high is not None and high <= 0:
        problem(f"{where}.high", f"expected a positive limit (got {high:g})")
        bad = True
    if low is not None and high is not None and low > high:
        problem(where, f"low {low:g} is above high {high:g}")
        bad = True
    unit = entry.get("unit")
    if not isinstance(unit, str):
        problem(f"{where}.unit", f"expected a unit such as 'umol/L' (got {_show(unit)})")
        bad = True
    else:
        try:
            lab_unit(unit)
        except GuardSyntaxError as err:
            problem(f"{where}.unit", err.message)
            bad = True
    sex = entry.get("sex")
    if sex is not None and sex not in ("female", "male"):
        problem(f"{where}.sex", f"expected female or male (got {_show(sex)})")
        bad = True
    ages: dict[str, int | None] = {}
    for key in ("age_from", "age_to"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 130):
            problem(f"{where}.{key}", f"expected whole years 0 to 130 (got {_show(value)})")
            bad = True
            value = None
        ages[key] = value
    if ages["age_from"] is not None and ages["age_to"] is not None and ages["age_from"] >= ages["age_to"]:
        problem(where, f"age_from {ages['age_from']} is not below age_to {ages['age_to']}")
        bad = True
    if bad:
        return None
    return SiteRange(code, low, high, str(unit), sex, ages["age_from"], ages["age_to"])
