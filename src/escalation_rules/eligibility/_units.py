"""Units as laboratories write them: pint spellings, UCUM codes and the ``IU``/``U`` habit for enzymes.

A record's unit is read by :func:`lab_unit`, which gives the spelling the
guard language's unit registry (pint) understands.  Plain pint spellings
(``mg/dL``, ``mg/dl``, ``umol/L``, ``U/L``) are taken as they are; anything
else is parsed as UCUM by ``ucumvert`` (``10*9/L``, ``[IU]/L``,
``mL/min/{1.73_m2}``: annotations in braces are dropped), whose unit
definitions are added to the registry the first time they are needed.  An
unknown unit is refused, listing the closest known spellings.
:func:`lab_factor` converts; for an enzyme activity it reads international
units as enzyme units (``IU/L`` is ``U/L``).

Examples
--------
>>> lab_unit("mg/dl")
'mg/dl'
>>> lab_unit("10*9/L")
'_10 ** 9 / liter'
>>> lab_factor("10*9/L", "1/uL")
1000.0
>>> lab_factor("IU/L", "U/L")
1.0
>>> lab_factor("mL/min/{1.73_m2}", "mL/min")
1.0
>>> lab_unit("mg/dLL")
Traceback (most recent call last):
...
escalation_rules.errors.GuardSyntaxError: unknown unit 'mg/dLL' (close matches: mg/dL, mg/L, g/dL)
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
from pathlib import Path
from typing import Any

from .. import _units as _shipped_units
from ..errors import GuardSyntaxError
from ..guards import _REGISTRY_SETUP, _registry, parse_unit, unit_factor

__all__ = ["KNOWN_LAB_UNITS", "lab_factor", "lab_unit"]

#: Spellings offered as close matches for an unknown unit (all accepted).
KNOWN_LAB_UNITS = (
    "%", "1", "mg/dL", "mg/L", "g/dL", "g/L", "ug/L", "ng/mL", "pg/mL", "umol/L", "µmol/L", "mmol/L", "U/L",
    "IU/L", "[IU]/L", "IU/mL", "[IU]/mL", "copies/mL", "10*9/L", "10*3/uL", "10*6/uL", "/uL", "mL/min",
    "mL/min/{1.73_m2}", "kg", "g", "lb", "[lb_av]", "cm", "m", "day", "week", "wk", "month", "mo", "year", "a",
)
_UCUM_MARKS = frozenset("*[{^")


def _ucum_atoms_path() -> Path:
    """ucumvert's pint definitions of UCUM atoms, found without importing ucumvert."""
    found = importlib.util.find_spec("ucumvert")
    assert found is not None and found.origin is not None, "ucumvert is a dependency"
    return Path(found.origin).resolve().parent / "pint_ucum_defs.txt"


def _add_ucum_atoms(registry: Any) -> None:
    if "_10" not in registry:
        registry.load_definitions(_ucum_atoms_path())


_REGISTRY_SETUP.append(_add_ucum_atoms)  # whenever pint is first needed, it knows UCUM's atoms


@functools.cache
def _with_ucum_definitions() -> Any:
    """ucumvert, after adding its UCUM atoms (``IU``, ``wk``, ``mo``, ``_10``) to the registry (once)."""
    import ucumvert  # type: ignore[import-untyped]

    _add_ucum_atoms(_registry())
    return ucumvert


@functools.cache
def _ucum() -> Any:
    """A function from a UCUM code to a pint unit or quantity of the registry (the parser is built once)."""
    ucumvert = _with_ucum_definitions()
    parser, transform = ucumvert.get_ucum_parser(), ucumvert.UcumToPintTransformer(ureg=_registry()).transform
    return lambda text: transform(ucumvert.parse_ucum(text, parser))


@functools.cache
def lab_unit(text: str) -> str:
    """The registry's spelling of a unit as a laboratory writes it (pint or UCUM).

    Raises
    ------
    GuardSyntaxError
        For a unit neither pint nor UCUM knows (with close matches), or one with an offset.
    """
    if text in _shipped_units.UNITS:  # pint's recorded answer: no pint or UCUM parser to load
        return text
    _with_ucum_definitions()
    if not _UCUM_MARKS.intersection(text):
        try:
            parse_unit(text)
            return text
        except GuardSyntaxError as err:
            if "offset" in err.message:
                raise
    try:
        value = _ucum()(text)
        magnitude = getattr(value, "magnitude", 1)
        spelled = str(getattr(value, "units", value))
        if magnitude != 1:
            raise ValueError(text)
        parse_unit(spelled)
    except Exception:  # ucumvert and pint raise several kinds
        close = difflib.get_close_matches(text, KNOWN_LAB_UNITS, n=3, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "write it as UCUM, e.g. 'mg/dL', '10*9/L', 'umol/L'"
        raise GuardSyntaxError(f"unknown unit {text!r} ({hint})", text) from None
    return spelled


@functools.cache
def lab_factor(source: str, target: str, molar_mass: str | None = None) -> float:
    """The factor from a laboratory's unit ``source`` into ``target`` (international units count as enzyme units
    when ``target`` is an enzyme activity).

    Raises
    ------
    GuardSyntaxError
        If the unit is unknown or the dimensions differ.
    """
    spelled = lab_unit(source)
    try:
        return unit_factor(spelled, target, molar_mass)
    except GuardSyntaxError:
        canonical = parse_unit(spelled)[0]
        if "international_unit" in canonical and parse_unit(target)[1] == parse_unit("U/L")[1]:
            return unit_factor(canonical.replace("international_unit", "enzyme_unit"), target, molar_mass)
        raise
