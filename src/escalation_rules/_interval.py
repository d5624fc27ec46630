"""Decision boundaries and MTD selection of the model-assisted (interval) designs.

A model-assisted design (BOIN, Keyboard, mTPI-2, i3+3) decides from the
patients and DLTs at the current dose only, so its rule is a table: for each
number ``n`` treated at the current dose, escalate when the DLTs are at most
``escalate[n]``, de-escalate when they are at least ``deescalate[n]``, and
close the dose (with every dose above it) when they are at least
``eliminate[n]``.  A protocol file holds the table as ``[[boundaries]]``
rows; the guards of its rules read the row of the current ``n`` through the
names ``escalate_max``, ``deescalate_min``, ``eliminate_min`` and
``stop_min`` (the extra-safe stopping boundary of the lowest dose).  A
boundary that never applies is ``n + 1`` (no count of DLTs reaches it).

The ``[selection]`` table says how the MTD is chosen when a rule stops with
``mtd = "selected"``: isotonic regression of the observed DLT rates as the R
package BOIN's ``select.mtd`` does it (the doses eliminated by the posterior
rule, and untried doses, are excluded; ties are broken as that function
breaks them).

Examples
--------
>>> b = boin_boundaries(0.3, 9)
>>> [row.escalate for row in b][2::3], [row.deescalate for row in b][2::3], [row.eliminate for row in b][2::3]
([0, 1, 2], [2, 3, 4], [3, 4, 5])
>>> select_isotonic(Selection(0.3), ((3, 0), (3, 0), (15, 4), (9, 4), (0, 0)))
2
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._attrs import value_repr

__all__ = [
    "BOUNDARY_NAMES",
    "Boundary",
    "Selection",
    "boin_boundaries",
    "boin_lambdas",
    "i3_boundaries",
    "keyboard_boundaries",
    "posterior_above",
    "select_isotonic",
]

#: Guard names that read the boundary row of the current dose's ``n``.
BOUNDARY_NAMES: Mapping[str, str] = {
    "escalate_max": "escalate when the DLTs at the current dose are at most this (boundary table)",
    "deescalate_min": "de-escalate when the DLTs at the current dose are at least this (boundary table)",
    "eliminate_min": "close the current dose and all above when its DLTs are at least this (boundary table)",
    "stop_min": "stop the trial when the DLTs at the lowest dose are at least this (extra-safe rule)",
}


@attrs.frozen
class Boundary:
    """The decision boundaries for ``n`` patients treated at the current dose.

    ``escalate`` may be -1 (never escalate); ``deescalate``, ``eliminate``
    and ``stop`` may be ``n + 1`` (never).
    """

    __repr__ = value_repr

    n: int
    escalate: int
    deescalate: int
    eliminate: int
    stop: int


@attrs.frozen
class Selection:
    """How a design selects the MTD at the end (``mtd = "selected"``).

    Attributes
    ----------
    target : float
        The target DLT rate.
    cutoff_eli : float
        A dose with at least 3 patients and Pr(p > target | data) above this
        (Beta(1, 1) prior) is excluded with every dose above it.
    extrasafe : bool
        Also exclude every dose when the lowest one passes ``cutoff_eli - offset``.
    offset : float
    method : str
        ``"isotonic"`` (the only method so far).
    """

    __repr__ = value_repr

    target: float
    cutoff_eli: float = 0.95
    extrasafe: bool = False
    offset: float = 0.05
    method: str = "isotonic"


def posterior_above(target: float, tox: int, n: int) -> float:
    """Pr(p > target | tox DLTs in n) under a Beta(1, 1) prior.

    With integer counts the Beta tail is a binomial sum:
    Pr(Beta(tox + 1, n - tox + 1) > t) = Pr(Binomial(n + 1, t) <= tox).

    Examples
    --------
    >>> round(posterior_above(0.3, 2, 3), 4), round(posterior_above(0.3, 3, 3), 4)
    (0.9163, 0.9919)
    """
    return math.fsum(math.comb(n + 1, j) * target**j * (1 - target) ** (n + 1 - j) for j in range(tox + 1))


def _first_tox_above(target: float, n: int, cutoff: float) -> int:
    """The least DLT count (1 to n) whose posterior tail exceeds ``cutoff``, else n + 1 (and n + 1 below 3)."""
    if n < 3:
        return n + 1
    for tox in range(1, n + 1):
        if posterior_above(target, tox, n) > cutoff:
            return tox
    return n + 1


def boin_lambdas(target: float, phi1: float, phi2: float) -> tuple[float, float]:
    """BOIN's escalation and de-escalation boundaries on the DLT rate (Liu and Yuan 2015).

    Examples
    --------
    >>> [round(x, 3) for x in boin_lambdas(0.3, 0.18, 0.42)]
    [0.236, 0.359]
    """
    lambda_e = math.log((1 - phi1) / (1 - target)) / math.log(target * (1 - phi1) / (phi1 * (1 - target)))
    lambda_d = math.log((1 - target) / (1 - phi2)) / math.log(phi2 * (1 - target) / (target * (1 - phi2)))
    return lambda_e, lambda_d


def _with_elimination(target: float, n_max: int, cutoff_eli: float, extrasafe: bool, offset: float,
                      rule: Any) -> tuple[Boundary, ...]:
    rows = []
    for n in range(1, n_max + 1):
        esc, deesc = rule(n)
        elim = _first_tox_above(target, n, cutoff_eli)
        stop = _first_tox_above(target, n, cutoff_eli - offset) if extrasafe else n + 1
        rows.append(Boundary(n, esc, min(deesc, elim), elim, stop))
    return tuple(rows)


def boin_boundaries(target: float, n_max: int, *, phi1: float | None = None, phi2: float | None = None,
                    cutoff_eli: float = 0.95, extrasafe: bool = False, offset: float = 0.05) -> tuple[Boundary, ...]:
    """BOIN's table for 1 to ``n_max`` patients, as R BOIN's ``get.boundary`` computes it.

    The de-escalation boundary is lowered to the elimination boundary where
    it is higher, as that function does.
    """
    lam_e, lam_d = boin_lambdas(target, 0.6 * target if phi1 is None else phi1,
                                1.4 * target if phi2 is None else phi2)
    return _with_elimination(target, n_max, cutoff_eli, extrasafe, offset,
                             lambda n: (math.floor(lam_e * n), math.ceil(lam_d * n)))


def _beta_cdf(x: float, a: int, b: int) -> float:
    """The Beta(a, b) distribution function for integer a, b >= 1 (a binomial tail)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    m = a + b - 1
    return math.fsum(math.comb(m, j) * x**j * (1 - x) ** (m - j) for j in range(a, m + 1))


def keyboard_boundaries(target: float, n_max: int, *, margin_left: float = 0.05, margin_right: float = 0.05,
                        cutoff_eli: float = 0.95, extrasafe: bool = False,
                        offset: float = 0.05) -> tuple[Boundary, ...]:
    """Keyboard (Yan, Mandrekar and Yuan 2017) and mTPI-2 (Guo et al. 2017) boundaries.

    The unit interval is cut into the target key ``[target - margin_left,
    target + margin_right]`` and keys of the same width on either side, the
    outermost ones cut off at 0 and 1.  Each key is scored by its posterior
    probability under Beta(1 + tox, 1 + n - tox) divided by its length (the
    unit probability mass of mTPI-2; R Keyboard's compensation factor for the
    partial end keys is the same thing); the strongest key (the highest of
    equally strong ones, as R Keyboard takes it) below the target key
    escalates, the target key stays, a key above de-escalates.  The two
    designs give the same table.
    """
    low, high = target - margin_left, target + margin_right
    width = high - low
    edges = [low, high]
    while edges[0] > 1e-12:
        edges.insert(0, max(edges[0] - width, 0.0))
    while edges[-1] < 1 - 1e-12:
        edges.append(min(edges[-1] + width, 1.0))
    target_key = edges.index(low)

    def side(n: int, tox: int) -> int:
        cdf = [_beta_cdf(x, tox + 1, n - tox + 1) for x in edges]
        scores = [(cdf[i + 1] - cdf[i]) / (edges[i + 1] - edges[i]) for i in range(len(edges) - 1)]
        top = max(scores)
        strongest = max(i for i, v in enumerate(scores) if v >= top - 1e-12)
        return (strongest > target_key) - (strongest < target_key)

    def rule(n: int) -> tuple[int, int]:
        sides = [side(n, tox) for tox in range(n + 1)]
        esc = max((t for t, s in enumerate(sides) if s < 0), default=-1)
        deesc = min((t for t, s in enumerate(sides) if s > 0), default=n + 1)
        return esc, deesc

    return _with_elimination(target, n_max, cutoff_eli, extrasafe, offset, rule)


def i3_boundaries(target: float, n_max: int, *, eps1: float = 0.05, eps2: float = 0.05,
                  cutoff_eli: float = 0.95, extrasafe: bool = False, offset: float = 0.05) -> tuple[Boundary, ...]:
    """i3+3 (Liu, Wang and Ji 2020): escalate below the equivalence interval, stay in it;
    above it, stay when one DLT fewer would fall below the interval, else de-escalate."""
    low, high = target - eps1, target + eps2

    def rule(n: int) -> tuple[int, int]:
        esc = max((t for t in range(n + 1) if t / n < low), default=-1)
        deesc = min((t for t in range(n + 1) if t / n > high and (t - 1) / n >= low), default=n + 1)
        return esc, deesc

    return _with_elimination(target, n_max, cutoff_eli, extrasafe, offset, rule)


def _pava(values: list[float], weights: list[float]) -> list[float]:
    """Pool adjacent violators: the non-decreasing fit of ``values`` with ``weights``."""
    blocks: list[list[float]] = []  # [value, weight, size]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, s2 = blocks.pop()
            v1, w1, s1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, s1 + s2])
    out: list[float] = []
    for v, _w, s in blocks:
        out += [v] * int(s)
    return out


@functools.lru_cache(maxsize=65536)
def _too_toxic(target: float, cutoff: float, tox: int, n: int) -> bool:
    return n >= 3 and posterior_above(target, tox, n) > cutoff


def excluded_from(selection: Selection, counts: Sequence[tuple[int, int]]) -> int:
    """The lowest dose (0-based) excluded by the posterior rule, with all above it (len(counts) if none)."""
    target, cutoff = selection.target, selection.cutoff_eli
    if selection.extrasafe and counts and _too_toxic(target, cutoff - selection.offset, counts[0][1], counts[0][0]):
        return 0
    for i, (n, tox) in enumerate(counts):
        if n >= 3 and _too_toxic(target, cutoff, tox, n):
            return i
    return len(counts)


def select_isotonic(selection: Selection, counts: Sequence[tuple[int, int]],
                    closed_from: int | None = None) -> int | None:
    """The 0-based MTD chosen by isotonic regression, or None (BOIN's ``select.mtd``).

    Doses at or above ``closed_from`` (the lowest dose closed during the
    trial) and those excluded by the posterior rule are left out, as are
    untried doses; among the rest, the dose whose isotonic estimate is
    closest to the target; of equal estimates, the highest below the target
    and the lowest above it.
    """
    limit = excluded_from(selection, counts)
    if closed_from is not None:
        limit = min(limit, closed_from)
    if limit == 0:
        return None
    admissible = [i for i in range(limit) if counts[i][0] > 0]
    if not admissible:
        return None
    est, wts = [], []
    for i in admissible:
        n, tox = counts[i]
        est.append((tox + 0.05) / (n + 0.1))
        wts.append(((n + 0.1) ** 2 * (n + 1.1)) / ((tox + 0.05) * (n - tox + 0.05)))
    fitted = _pava(est, wts)
    best = min(range(len(admissible)), key=lambda j: (abs(fitted[j] + (j + 1) * 1e-10 - selection.target), j))
    return admissible[best]
