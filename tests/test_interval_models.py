"""decide on BOIN, Keyboard, mTPI-2 and i3+3 agrees with small independent models written from the publications.

The models below are written from the papers and the reference R packages' documented rules (R BOIN
get.oc / select.mtd, R Keyboard get.boundary.kb / get.oc.kb, Guo et al. 2017 for mTPI-2's unit
probability mass, Liu, Wang and Ji 2020 for i3+3), not from the package: each computes the decision
for the counts at hand directly, in exact rational arithmetic where the definition allows it, with
no precomputed table.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from math import comb

from hypothesis import given, settings
from hypothesis import strategies as st

from escalation_rules import builtin_design, decide

ESCALATE, STAY, DEESCALATE = 1, 0, -1


def _beta_cdf(x: Fraction, y: int, n: int) -> Fraction:
    """Pr(p <= x) for p ~ Beta(1 + y, 1 + n - y), exactly: the identity with Binomial(n + 1, x) >= y + 1."""
    x = min(max(x, Fraction(0)), Fraction(1))
    return sum((Fraction(comb(n + 1, j)) * x**j * (1 - x) ** (n + 1 - j) for j in range(y + 1, n + 2)), Fraction(0))


def _too_toxic(target: Fraction, y: int, n: int, cutoff: Fraction) -> bool:
    """The elimination rule shared by the four designs: n >= 3 and Pr(p > target | data) > cutoff."""
    return n >= 3 and 1 - _beta_cdf(target, y, n) > cutoff


def _boin_move(p: dict, y: int, n: int) -> int:
    """BOIN (Liu and Yuan 2015): compare y/n with lambda_e and lambda_d derived from phi, phi1, phi2."""
    phi, phi1, phi2 = p["target"], p.get("phi1", 0.6 * p["target"]), p.get("phi2", 1.4 * p["target"])
    lam_e = math.log((1 - phi1) / (1 - phi)) / math.log(phi * (1 - phi1) / (phi1 * (1 - phi)))
    lam_d = math.log((1 - phi) / (1 - phi2)) / math.log(phi2 * (1 - phi) / (phi * (1 - phi2)))
    if y / n <= lam_e:
        return ESCALATE
    return DEESCALATE if y / n >= lam_d else STAY


def _keyboard_move(p: dict, y: int, n: int) -> int:
    """Keyboard (Yan, Mandrekar and Yuan 2017): the strongest key against the target key.

    Keys of the target key's width are laid out from its edges down to 0 and up to 1; a key cut by 0 or 1
    has its probability scaled up to the full width; ties go to the higher key (R Keyboard).
    """
    lo, hi = p["target"] - p.get("margin_left", Fraction(1, 20)), p["target"] + p.get("margin_right", Fraction(1, 20))
    width = hi - lo
    edges = [lo, hi]
    while edges[0] > 0:
        edges.insert(0, max(edges[0] - width, Fraction(0)))
    while edges[-1] < 1:
        edges.append(min(edges[-1] + width, Fraction(1)))
    strength = []
    for a, b in itertools.pairwise(edges):
        mass = _beta_cdf(b, y, n) - _beta_cdf(a, y, n)
        strength.append(mass * width / (b - a) if a == edges[0] or b == edges[-1] else mass)
    best = max(i for i, s in enumerate(strength) if s == max(strength))
    target_key = edges.index(lo)
    return ESCALATE if best < target_key else STAY if best == target_key else DEESCALATE


def _mtpi2_move(p: dict, y: int, n: int) -> int:
    """mTPI-2 (Guo et al. 2017): the sub-interval of greatest unit probability mass (Ockham's razor).

    The equivalence interval [target - eps1, target + eps2] and intervals of its length below and above
    it (the last ones cut at 0 and 1) partition [0, 1]; UPM = posterior probability / length.
    """
    lo, hi = p["target"] - p.get("margin_left", Fraction(1, 20)), p["target"] + p.get("margin_right", Fraction(1, 20))
    step = hi - lo
    below = []  # (upm, position) with position < 0 below the interval
    k, top = 1, lo
    while top > 0:
        bottom = max(top - step, Fraction(0))
        below.append(((_beta_cdf(top, y, n) - _beta_cdf(bottom, y, n)) / (top - bottom), -k))
        k, top = k + 1, bottom
    above = []
    k, bottom = 1, hi
    while bottom < 1:
        top = min(bottom + step, Fraction(1))
        above.append(((_beta_cdf(top, y, n) - _beta_cdf(bottom, y, n)) / (top - bottom), k))
        k, bottom = k + 1, top
    upms = [*below, ((_beta_cdf(hi, y, n) - _beta_cdf(lo, y, n)) / step, 0), *above]
    best = max(upms)  # the largest UPM; of equal ones, the higher interval
    return ESCALATE if best[1] < 0 else STAY if best[1] == 0 else DEESCALATE


def _i3_move(p: dict, y: int, n: int) -> int:
    """i3+3 (Liu, Wang and Ji 2020): y/n against the equivalence interval, and (y - 1)/n when above it."""
    lo, hi = p["target"] - p.get("eps1", Fraction(1, 20)), p["target"] + p.get("eps2", Fraction(1, 20))
    rate = Fraction(y, n)
    if rate < lo:
        return ESCALATE
    if rate <= hi:
        return STAY
    return STAY if Fraction(y - 1, n) < lo else DEESCALATE


MOVES = {"boin": _boin_move, "keyboard": _keyboard_move, "mtpi2": _mtpi2_move, "i3+3": _i3_move}


def _pava(values: list[float], weights: list[float]) -> list[float]:
    """Weighted isotonic (non-decreasing) regression by pooling adjacent violators."""
    blocks: list[list[float]] = []  # [value, weight, size]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, s2 = blocks.pop()
            v1, w1, s1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, s1 + s2])
    return [b[0] for b in blocks for _ in range(int(b[2]))]


def _select_mtd(p: dict, n: list[int], y: list[int]) -> int | None:
    """R BOIN select.mtd: isotonic estimates of (y + 0.05)/(n + 0.1), closest to the target, 1-based."""
    target, cutoff = p["target"], p.get("cutoff_eli", Fraction(95, 100))
    open_doses = len(n)
    for i in range(len(n)):
        if _too_toxic(target, y[i], n[i], cutoff):
            open_doses = i
            break
    if p.get("extrasafe") and _too_toxic(target, y[0], n[0], cutoff - p.get("offset", Fraction(1, 20))):
        open_doses = 0
    kept = [i for i in range(open_doses) if n[i] > 0]
    if not kept:
        return None
    est = [(y[i] + 0.05) / (n[i] + 0.1) for i in kept]
    var = [(y[i] + 0.05) * (n[i] - y[i] + 0.05) / ((n[i] + 0.1) ** 2 * (n[i] + 1.1)) for i in kept]
    iso = [v + (j + 1) * 1e-10 for j, v in enumerate(_pava(est, [1 / v for v in var]))]
    distance = [abs(v - float(target)) for v in iso]
    return kept[distance.index(min(distance))] + 1


def _model_step(design: str, p: dict, state: dict) -> tuple[str, int | None, int | None]:
    """The model's decision after the last cohort: ('treat', dose, None) or ('stop', None, mtd); 1-based."""
    n, y, d = state["n"], state["y"], state["dose"]
    target, cutoff = p["target"], p.get("cutoff_eli", Fraction(95, 100))
    if sum(n) >= p["max_n"]:
        return "stop", None, _select_mtd(p, n, y)
    if design == "keyboard" and n[d] >= p.get("n_earlystop", 100):  # R get.oc.kb stops at once
        return "stop", None, _select_mtd(p, n, y)
    if _too_toxic(target, y[d], n[d], cutoff):
        state["open"] = min(state["open"], d)
        if d == 0:
            return "stop", None, None
    if p.get("extrasafe") and d == 0 and _too_toxic(target, y[0], n[0], cutoff - p.get("offset", Fraction(1, 20))):
        return "stop", None, None
    move = MOVES[design](p, y[d], n[d])
    if move == ESCALATE and d + 1 < state["open"]:
        nxt = d + 1
    elif move == DEESCALATE and d > 0:
        nxt = d - 1
    else:
        nxt = d
    if design != "keyboard" and nxt == d and n[d] >= p.get("n_earlystop", 100):  # BOIN: stop when staying
        return "stop", None, _select_mtd(p, n, y)
    state["dose"] = nxt
    return "treat", nxt + 1, None


PARAMS = {
    "boin": st.fixed_dictionaries({}, optional={"extrasafe": st.booleans(), "n_earlystop": st.sampled_from([9, 12])}),
    "keyboard": st.fixed_dictionaries({}, optional={
        "margin_left": st.sampled_from(["0.03", "0.05", "0.1"]), "margin_right": st.sampled_from(["0.05", "0.1"]),
        "n_earlystop": st.sampled_from([9, 12])}),
    "mtpi2": st.fixed_dictionaries({}, optional={
        "margin_left": st.sampled_from(["0.03", "0.05", "0.1"]), "margin_right": st.sampled_from(["0.05", "0.1"])}),
    "i3+3": st.fixed_dictionaries({}, optional={
        "eps1": st.sampled_from(["0.03", "0.05", "0.1"]), "eps2": st.sampled_from(["0.05", "0.1"])}),
}


@st.composite
def _cases(draw: st.DrawFn, design: str) -> tuple[dict, int, list[int]]:
    """Random parameters, dose count and cohort outcomes (DLTs per cohort, capped at the cohort size)."""
    cohort = draw(st.integers(1, 4))
    params: dict = {"target": draw(st.sampled_from(["0.2", "0.25", "0.3", "0.33", "0.4"])),
                    "cohort": cohort, "max_n": cohort * draw(st.integers(3, 8)),
                    "cutoff_eli": draw(st.sampled_from(["0.95", "0.9", "0.8"])), **draw(PARAMS[design])}
    return params, draw(st.integers(3, 5)), draw(st.lists(st.integers(0, 4), min_size=40, max_size=40))


def _exact(params: dict) -> dict:
    """The parameters as the model reads them: rates as exact fractions, counts as integers."""
    return {k: Fraction(v) if isinstance(v, str) else v for k, v in params.items()}


def _check(design: str, params: dict, doses: int, outcomes: list[int]) -> None:
    package = builtin_design(design, doses, **{k: float(v) if isinstance(v, str) else v for k, v in params.items()})
    p = _exact(params)
    cohort = p["cohort"]
    state = {"n": [0] * doses, "y": [0] * doses, "dose": 0, "open": doses}
    history: list[str] = []
    for tox in outcomes:
        d = state["dose"]
        k = min(tox, cohort)
        state["n"][d] += cohort
        state["y"][d] += k
        history.append(f"{d + 1}{'T' * k}{'N' * (cohort - k)}")
        expected = _model_step(design, p, state)
        got = decide(package, " ".join(history))
        assert (got.action, got.dose, got.mtd) == expected, (design, params, " ".join(history), got.rule, got.reason)
        if expected[0] == "stop":
            return


@settings(max_examples=150, deadline=None)
@given(_cases("boin"))
def test_boin_decide_agrees_with_independent_model(case: tuple[dict, int, list[int]]) -> None:
    """Invariant: after every cohort of a random BOIN trial, decide gives the model's move, stop and MTD."""
    _check("boin", *case)


@settings(max_examples=150, deadline=None)
@given(_cases("keyboard"))
def test_keyboard_decide_agrees_with_independent_model(case: tuple[dict, int, list[int]]) -> None:
    """Invariant: after every cohort of a random Keyboard trial, decide gives the strongest-key model's decision."""
    _check("keyboard", *case)


@settings(max_examples=150, deadline=None)
@given(_cases("mtpi2"))
def test_mtpi2_decide_agrees_with_independent_model(case: tuple[dict, int, list[int]]) -> None:
    """Invariant: after every cohort of a random mTPI-2 trial, decide gives the unit-probability-mass model."""
    _check("mtpi2", *case)


@settings(max_examples=150, deadline=None)
@given(_cases("i3+3"))
def test_i3_decide_agrees_with_independent_model(case: tuple[dict, int, list[int]]) -> None:
    """Invariant: after every cohort of a random i3+3 trial, decide gives the interval model's decision."""
    _check("i3+3", *case)
