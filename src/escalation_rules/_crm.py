"""The continual reassessment method (CRM) as a model a protocol's rules can read.

O'Quigley, Pepe and Fisher (1990), as R package dfcrm's ``crm`` and
``crmsim`` compute it: the empiric (power) model p_d = skeleton_d ^ exp(a),
or the one-parameter logistic model p_d = 1 / (1 + exp(-intcpt - exp(a) x_d))
with x_d = logit(skeleton_d) - intcpt; a ~ Normal(0, prior_sd^2); the
estimate of a is its posterior mean (by numerical integration over a fine
grid), and each dose's DLT rate is the model's curve at that estimate.  The
recommended dose is the one whose rate is closest to the target (the top
dose when every rate is at most the target, dose 1 when every rate is at
least it).  With ``restrict``, the next dose never skips a dose upward, and
never rises after a cohort whose DLT fraction reached the target.  An
optional safety rule stops the trial when Pr(p_1 > target | data) exceeds
``stop_p``.

A protocol declares the model in a ``[model]`` table; its rules read the
guard names ``model_dose`` (the dose the model sends the next cohort to,
1-based, restriction applied), ``model_too_toxic`` (the safety rule) and
move with ``move = "model"``; ``mtd = "model"`` declares the dose the model
recommends from all the data.

Examples
--------
>>> m = CrmModel(skeleton=(0.05, 0.12, 0.25, 0.4, 0.55), target=0.25)
>>> m.recommend(((3, 0), (0, 0), (0, 0), (0, 0), (0, 0)))
4
>>> m.next_dose(((3, 0), (0, 0), (0, 0), (0, 0), (0, 0)), current=0, cohort=3, cohort_tox=0)  # no skipping
2
>>> [round(p, 3) for p in m.rates(((3, 0), (3, 1), (0, 0), (0, 0), (0, 0)))]
[0.102, 0.199, 0.347, 0.497, 0.634]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import attrs

from ._attrs import value_repr

__all__ = ["CrmModel", "lee_cheung_skeleton"]

Counts = tuple[tuple[int, int], ...]

_GRID = 2001  # points of the integration grid over a, from -10 to +10 prior standard deviations


@attrs.frozen
class CrmModel:
    """A one-parameter CRM (see the module docstring). Doses are 0-based in the methods."""

    __repr__ = value_repr

    skeleton: tuple[float, ...]
    target: float
    prior_sd: float = math.sqrt(1.34)
    model: str = "empiric"
    intcpt: float = 3.0
    restrict: bool = True
    stop_p: float | None = None

    def _curve(self) -> Any:
        """The grid of a, the prior weights, and log p and log(1 - p) of every dose on it (numpy arrays)."""
        return _curve(self.skeleton, self.prior_sd, self.model, self.intcpt)

    def _posterior(self, counts: Counts) -> Any:
        import numpy as np

        grid, prior, logp, log1mp = self._curve()
        loglik = np.zeros_like(grid)
        for d, (n, tox) in enumerate(counts):
            if n:
                loglik += tox * logp[d] + (n - tox) * log1mp[d]
        loglik -= loglik.max()
        weights = prior * np.exp(loglik)
        return grid, weights / weights.sum()

    def estimate(self, counts: Counts) -> float:
        """The posterior mean of a."""
        return _fit(self, counts)[0]

    def rates(self, counts: Counts) -> tuple[float, ...]:
        """Each dose's DLT rate at the posterior mean of a (as dfcrm's ``ptox``)."""
        a = self.estimate(counts)
        if self.model == "empiric":
            return tuple(s ** math.exp(a) for s in self.skeleton)
        return tuple(1 / (1 + math.exp(-self.intcpt - math.exp(a) * x)) for x in _scaled(self.skeleton, self.intcpt))

    def recommend(self, counts: Counts) -> int:
        """The dose (1-based) whose estimated rate is closest to the target, as dfcrm's ``crm`` recommends it."""
        return _recommend(self, counts)

    def next_dose(self, counts: Counts, current: int, cohort: int, cohort_tox: int) -> int:
        """The 1-based dose for the next cohort, with dfcrm's restriction when ``restrict`` is set."""
        best = self.recommend(counts)
        if not self.restrict:
            return best
        if cohort and cohort_tox / cohort >= self.target:
            return min(best, current + 1)  # no escalation right after a cohort at or above the target rate
        return min(best, current + 2)  # no skipping when escalating

    def explain(self, counts: Counts, current: int | None = None, cohort: int = 0, cohort_tox: int = 0) -> str:
        """Why the model chose its dose: the estimates, the closest dose, and the restriction that applied.

        ``current`` (0-based) is the dose of the cohort just completed; None explains the final recommendation.

        Examples
        --------
        >>> m = CrmModel(skeleton=(0.05, 0.12, 0.25, 0.4, 0.55), target=0.25)
        >>> print(m.explain(((3, 0), (0, 0), (0, 0), (0, 0), (0, 0)), current=0, cohort=3, cohort_tox=0))
        CRM (empiric model, prior sd 1.158): estimated DLT rates 0.007, 0.029, 0.099, 0.217, 0.369; closest to the \
target 0.25: dose 4; restricted to dose 2 (no skipping a dose when escalating)
        """
        rates = self.rates(counts)
        best = self.recommend(counts)
        text = (f"CRM ({self.model} model, prior sd {self.prior_sd:.3f}): estimated DLT rates "
                f"{', '.join(f'{p:.3f}' for p in rates)}; closest to the target {self.target:g}: dose {best}")
        if current is None or not self.restrict:
            return text
        chosen = self.next_dose(counts, current, cohort, cohort_tox)
        if chosen == best:
            return text
        why = ("no escalation right after a cohort at or above the target rate"
               if cohort and cohort_tox / cohort >= self.target else "no skipping a dose when escalating")
        return f"{text}; restricted to dose {chosen} ({why})"

    def p_first_too_toxic(self, counts: Counts) -> float:
        """Pr(p_1 > target | data), over the integration grid."""
        return _fit(self, counts)[1]

    def too_toxic(self, counts: Counts) -> bool:
        """The safety rule: Pr(p_1 > target | data) > stop_p (never without ``stop_p``)."""
        return self.stop_p is not None and self.p_first_too_toxic(counts) > self.stop_p


def _scaled(skeleton: Sequence[float], intcpt: float) -> tuple[float, ...]:
    return tuple(math.log(s / (1 - s)) - intcpt for s in skeleton)


@functools.lru_cache(maxsize=64)
def _curve(skeleton: tuple[float, ...], prior_sd: float, model: str, intcpt: float) -> Any:
    import numpy as np

    grid = np.linspace(-10 * prior_sd, 10 * prior_sd, _GRID)
    prior = np.exp(-(grid**2) / (2 * prior_sd**2))
    scale = np.exp(grid)
    if model == "empiric":
        logp = [scale * math.log(s) for s in skeleton]
    else:
        logp = [-np.log1p(np.exp(-intcpt - scale * x)) for x in _scaled(skeleton, intcpt)]
    log1mp = [np.log(-np.expm1(lp)) for lp in logp]
    return grid, prior, logp, log1mp


@functools.lru_cache(maxsize=1 << 16)
def _fit(model: CrmModel, counts: Counts) -> tuple[float, float]:
    """The posterior mean of a and Pr(p_1 > target | data), from one integration of the posterior.

    A state's next dose and its safety rule both read them (``model_dose``,
    ``model_too_toxic``), so the posterior is computed once per data.
    """
    grid, post = model._posterior(counts)
    _, _, logp, _ = model._curve()
    return float((grid * post).sum()), float(post[logp[0] > math.log(model.target)].sum())


@functools.lru_cache(maxsize=1 << 16)
def _recommend(model: CrmModel, counts: Counts) -> int:
    rates = model.rates(counts)
    if all(p <= model.target for p in rates):
        return len(rates)
    if all(p >= model.target for p in rates):
        return 1
    return min(range(len(rates)), key=lambda d: (abs(rates[d] - model.target), d)) + 1


def lee_cheung_skeleton(target: float, halfwidth: float, prior_mtd: int, doses: int, model: str = "empiric",
                        intcpt: float = 3.0) -> tuple[float, ...]:
    """The skeleton of Lee and Cheung (2009), as dfcrm's ``getprior`` builds it.

    The prior MTD (1-based) gets the target; each step away scales the dose
    so that neighbouring doses meet at ``target ± halfwidth`` (the
    indifference interval).

    Examples
    --------
    >>> [round(p, 3) for p in lee_cheung_skeleton(0.25, 0.05, 3, 5)]
    [0.084, 0.157, 0.25, 0.355, 0.46]
    """
    if model == "empiric":
        up = math.log(target + halfwidth) / math.log(target - halfwidth)
        scaled = [0.0] * doses
        scaled[prior_mtd - 1] = math.log(target)  # work on log p: each step multiplies it
        for k in range(prior_mtd, doses):
            scaled[k] = scaled[k - 1] * up
        for k in range(prior_mtd - 2, -1, -1):
            scaled[k] = scaled[k + 1] / up
        return tuple(math.exp(x) for x in scaled)

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    up = (logit(target + halfwidth) - intcpt) / (logit(target - halfwidth) - intcpt)
    scaled = [0.0] * doses
    scaled[prior_mtd - 1] = logit(target) - intcpt
    for k in range(prior_mtd, doses):
        scaled[k] = scaled[k - 1] * up
    for k in range(prior_mtd - 2, -1, -1):
        scaled[k] = scaled[k + 1] / up
    return tuple(1 / (1 + math.exp(-intcpt - x)) for x in scaled)
