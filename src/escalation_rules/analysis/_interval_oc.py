"""Exact operating characteristics of the model-assisted designs, level by level with numpy.

The generic programme (:mod:`escalation_rules._reduce` and
:func:`~escalation_rules.analysis.oc.operating_characteristics`) explores
classes of states one by one in Python.  For BOIN, Keyboard, mTPI-2 and
i3+3 the final isotonic selection reads the counts at every dose, so hardly
any two states share a future, and the classes number hundreds of thousands
beyond 40 patients.  Their rules are simple enough to apply to every state of
a level at once: after ``j`` cohorts every trial has enrolled ``j`` times the
cohort size, and a state is the patients and DLTs at every dose, the current
dose and the lowest closed dose.  Each state is packed into one integer key
(the counts of a dose as one code, the codes in mixed radix), the boundary
table is read as arrays indexed by the patients at the current dose, every
state is spread over the binomial outcomes of its next cohort, and equal keys
are merged by sorting them, with their probabilities summed.  Trials
that stop go straight into the figures; the MTD of those that stop with a
selection is chosen by the same isotonic regression as R BOIN's
``select.mtd`` (:func:`escalation_rules._interval.select_isotonic`), run on
all of them at once with the same arithmetic in the same order.

Only the built-in designs as :func:`~escalation_rules.builtin_design` makes
them take this path, and only with float probabilities; the accelerated-
titration start (``titration``), ``stop_n_at_dose``, protocols that put an
interval stage behind other stages, exact fractions, and ladders too long to
pack into 62 bits use the generic programme.  Tests check that both give the
same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._interval import _too_toxic
from ..protocol import Protocol

__all__ = ["IntervalPlan", "interval_figures", "interval_plan"]

_NAMES = ("boin", "keyboard", "mtpi2", "i3+3")
#: What a cohort's outcome leads to: stay, escalate, de-escalate, close the dose and de-escalate,
#: stop and select the MTD, stop for toxicity (no MTD); and the move of the first four.
_STAY, _UP, _DOWN, _CLOSE, _SELECT, _TOXIC = range(6)
_CHUNK = 1 << 16  # rows of the MTD selection at a time (arrays that stay in the cache)
_MOVE = np.array([0, 1, -1, -1, 0, 0], dtype=np.int64)
_PLANS: dict[int, tuple[Protocol, IntervalPlan | None]] = {}


class IntervalPlan:
    """What the level-by-level programme needs of a built-in interval design (truth-independent)."""

    def __init__(self, protocol: Protocol, name: str, params: dict[str, Any]) -> None:
        assert protocol.selection is not None
        self.protocol = protocol
        self.k = len(protocol.doses)
        self.cohort = int(params["cohort"])
        self.cap = protocol.cap
        self.start = int(params["start"]) - 1
        self.earlystop = int(params["n_earlystop"])
        self.keyboard = name == "keyboard"
        self.extrasafe = bool(params["extrasafe"])
        rows = {b.n: b for b in protocol.boundaries}
        never = self.cap + 1
        self.esc = np.array([-1] + [rows[n].escalate for n in range(1, self.cap + 1)], dtype=np.int64)
        self.deesc = np.array([never] + [rows[n].deescalate for n in range(1, self.cap + 1)], dtype=np.int64)
        self.elim = np.array([never] + [rows[n].eliminate for n in range(1, self.cap + 1)], dtype=np.int64)
        self.stop = np.array([never] + [rows[n].stop for n in range(1, self.cap + 1)], dtype=np.int64)
        # the counts at a dose as one code: u cohorts and y DLTs -> offset[u] + y
        units = self.cap // self.cohort
        sizes = [u * self.cohort + 1 for u in range(units + 1)]
        self.offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.radix = int(self.offset[-1])
        self.units_of = np.repeat(np.arange(units + 1), sizes).astype(np.int64)
        self.tox_of = np.concatenate([np.arange(s) for s in sizes]).astype(np.int64)
        sel = protocol.selection
        self.selection = sel
        n_of = [int(u) * self.cohort for u in self.units_of]
        y_of = [int(y) for y in self.tox_of]
        # the selection's arithmetic per code, in Python floats exactly as select_isotonic does it
        self.too_toxic = np.array([n >= 3 and _too_toxic(sel.target, sel.cutoff_eli, y, n)
                                   for n, y in zip(n_of, y_of, strict=True)])
        self.too_toxic_first = np.array([sel.extrasafe and _too_toxic(sel.target, sel.cutoff_eli - sel.offset, y, n)
                                         for n, y in zip(n_of, y_of, strict=True)])
        self.est = np.array([(y + 0.05) / (n + 0.1) for n, y in zip(n_of, y_of, strict=True)])
        self.wt = np.array([((n + 0.1) ** 2 * (n + 1.1)) / ((y + 0.05) * (n - y + 0.05))
                            for n, y in zip(n_of, y_of, strict=True)])

        self._decisions()

    def _decisions(self) -> None:
        """The outcome of every (code at the current dose, current dose, move up blocked, DLTs in the cohort).

        ``new_code[code, x]`` is the code after a cohort with ``x`` DLTs; ``decision[code, dose,
        blocked, x]`` is one of ``_STAY``, ``_UP``, ``_DOWN``, ``_CLOSE``, ``_SELECT``, ``_TOXIC``,
        following the rules of the design's table in their order (see
        :func:`escalation_rules.designs.design_mapping`).
        """
        k, c, units = self.k, self.cohort, self.cap // self.cohort
        code, dose, blocked, x = np.meshgrid(np.arange(self.radix), np.arange(k), [False, True], np.arange(c + 1),
                                             indexing="ij")
        u = np.minimum(self.units_of[code] + 1, units)  # codes that are full never take another cohort
        n = u * c
        tox = np.minimum(self.tox_of[code] + x, n)
        self.new_code = (self.offset[u] + tox)[:, 0, 0, :]
        lowest = dose == 0
        kb_stop = (n >= self.earlystop) if self.keyboard else np.zeros(n.shape, dtype=bool)
        extrasafe = lowest & (tox >= self.stop[n]) & ~kb_stop
        eliminate = (tox >= self.elim[n]) & ~kb_stop & ~extrasafe
        toxic_stop = extrasafe | (eliminate & lowest)
        move_down = eliminate & ~lowest
        esc_max, de_min = self.esc[n], self.deesc[n]
        stay = ((tox > esc_max) & (tox < de_min)) | (lowest & (tox >= de_min)) | (blocked & (tox <= esc_max))
        free = ~kb_stop & ~toxic_stop & ~move_down
        early = free & (n >= self.earlystop) & stay & (not self.keyboard)
        up = free & ~early & (tox <= esc_max) & ~blocked
        down = free & ~early & ~up & (tox >= de_min) & ~lowest
        go = np.full(n.shape, _STAY, dtype=np.int8)
        go[up], go[down], go[move_down] = _UP, _DOWN, _CLOSE
        go[kb_stop | early], go[toxic_stop] = _SELECT, _TOXIC
        self.decision = go

    def fits(self) -> bool:
        """Whether a state packs into 62 bits (codes of every dose, the current dose, the lowest closed dose)."""
        return self.radix ** self.k * self.k * (self.k + 1) < 2**62

    def select(self, codes: np.ndarray, closed: np.ndarray) -> np.ndarray:
        """The 0-based MTD of each row (-1: none), as :func:`~escalation_rules._interval.select_isotonic`."""
        if len(closed) <= _CHUNK:
            return self._select(codes, closed)
        return np.concatenate([self._select(codes[i:i + _CHUNK], closed[i:i + _CHUNK])
                               for i in range(0, len(closed), _CHUNK)])

    def _select(self, codes: np.ndarray, closed: np.ndarray) -> np.ndarray:
        k, rows = self.k, len(closed)
        toxic = self.too_toxic[codes]
        limit = np.where(toxic.any(axis=1), toxic.argmax(axis=1), k)
        limit = np.where(self.too_toxic_first[codes[:, 0]], 0, limit)
        limit = np.minimum(limit, closed)
        admissible = (np.arange(k)[None, :] < limit[:, None]) & (self.units_of[codes] > 0)
        est, wt = self.est[codes], self.wt[codes]
        # pool adjacent violators, every row at once: blocks as stacks of (value, weight, size)
        value = np.zeros((rows, k))
        weight = np.zeros((rows, k))
        size = np.zeros((rows, k), dtype=np.int64)
        height = np.zeros(rows, dtype=np.int64)
        for i in range(k):
            r = np.nonzero(admissible[:, i])[0]
            h = height[r]
            value[r, h], weight[r, h], size[r, h] = est[r, i], wt[r, i], 1
            height[r] = h + 1
            while r.size:
                h = height[r]
                r = r[h > 1]
                h = height[r]
                r = r[value[r, h - 2] > value[r, h - 1]]
                if not r.size:
                    break
                h = height[r]
                v1, w1, s1 = value[r, h - 2], weight[r, h - 2], size[r, h - 2]
                v2, w2, s2 = value[r, h - 1], weight[r, h - 1], size[r, h - 1]
                value[r, h - 2] = (v1 * w1 + v2 * w2) / (w1 + w2)
                weight[r, h - 2] = w1 + w2
                size[r, h - 2] = s1 + s2
                height[r] = h - 1
        ends = np.cumsum(size, axis=1)
        count = admissible.sum(axis=1)
        best_dist = np.full(rows, np.inf)
        best = np.full(rows, -1, dtype=np.int64)
        for j in range(k):  # the j-th admissible dose, in order: the first of equal distances wins
            has = j < count
            block = np.minimum((ends <= j).sum(axis=1), k - 1)
            fitted = value[np.arange(rows), block]
            dist = np.abs(fitted + (j + 1) * 1e-10 - self.selection.target)
            better = has & (dist < best_dist)
            best_dist = np.where(better, dist, best_dist)
            best = np.where(better, j, best)
        position = np.cumsum(admissible, axis=1) - 1
        chosen = admissible & (position == best[:, None])
        return np.where(best >= 0, chosen.argmax(axis=1), -1)


def interval_plan(protocol: Protocol) -> IntervalPlan | None:
    """The plan of ``protocol`` when it is a built-in interval design the fast programme covers, else None.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> plan = interval_plan(builtin_design("boin", 5, target=0.3, max_n=30))
    >>> plan.k, plan.cohort, plan.radix     # codes of (patients, DLTs) at a dose
    (5, 3, 176)
    >>> interval_plan(builtin_design("boin", 5, titration=True)) is None
    True
    """
    hit = _PLANS.get(id(protocol))
    if hit is not None and hit[0] is protocol:
        return hit[1]
    plan = _plan(protocol)
    if len(_PLANS) >= 32:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[id(protocol)] = (protocol, plan)
    return plan


def _plan(protocol: Protocol) -> IntervalPlan | None:
    from ..designs import design_mapping
    from ..errors import EscalationRulesError
    from ..protocol import protocol_from_mapping

    meta = protocol.extra.get("meta")
    design = meta.get("design") if isinstance(meta, dict) else None
    if not isinstance(design, dict) or design.get("name") not in _NAMES or protocol.selection is None:
        return None
    name, params = design["name"], design.get("parameters")
    if not isinstance(params, dict) or params.get("titration") or params.get("stop_n_at_dose"):
        return None
    try:  # the rules must be the built-in design's own, not an edited copy
        same = protocol_from_mapping(design_mapping(name, len(protocol.doses), params), protocol.source)
    except EscalationRulesError:
        return None
    fields = ("doses", "stages", "start_dose", "start_stage", "cap", "early_termination", "default_policy",
              "boundaries", "selection", "model")
    if any(getattr(same, f) != getattr(protocol, f) for f in fields):
        return None
    plan = IntervalPlan(protocol, name, params)
    return plan if plan.fits() else None


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort ``keys``: the order, the start of each run of equal keys in it, and each run's length."""
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])) if keys.size else order
    return order, starts, np.diff(np.append(starts, len(keys)))


def interval_figures(plan: IntervalPlan, truth: Sequence[float], first_over: int, m: int) -> dict[str, Any]:
    """Every figure of the operating characteristics under ``truth`` (floats), level by level.

    A state's key is ``(base * K + dose) * (K + 1) + closed`` where ``base`` packs the codes of
    every dose; a cohort changes one code, so a child's key follows from its parent's by arithmetic,
    and the codes are written out only for the distinct states that go on.

    Examples
    --------
    >>> from escalation_rules import builtin_design
    >>> plan = interval_plan(builtin_design("boin", 5, target=0.3, max_n=30))
    >>> f = interval_figures(plan, [0.05, 0.1, 0.2, 0.35, 0.5], first_over=3, m=3)
    >>> round(sum(f["mtd"]), 12), round(f["mtd"][3], 4), f["states"]
    (1.0, 0.3892, 6581)
    """
    k, c = plan.k, plan.cohort
    binom = np.array([[math.comb(c, x) * p**x * (1.0 - p) ** (c - x) for x in range(c + 1)] for p in truth])
    place = np.array([plan.radix ** (k - 1 - i) for i in range(k)], dtype=np.int64)
    codes = np.zeros((1, k), dtype=np.int16 if plan.radix < 2**15 else np.int64)
    base = np.zeros(1, dtype=np.int64)
    dose = np.array([plan.start], dtype=np.int64)
    closed = np.array([k], dtype=np.int64)
    reach = np.ones(1)
    patients = np.zeros(k)
    mtd = np.zeros(k + 1)
    sizes: dict[int, float] = {}
    tails = np.zeros(m + 1)
    tox_stop = above = 0.0
    states = 0
    for level in range(plan.cap // c):
        last = (level + 1) * c >= plan.cap
        count = len(dose)
        states += count
        at = np.bincount(dose, weights=reach, minlength=k)
        patients += at * c
        above += float(at[first_over:].sum()) * c
        here = codes[np.arange(count), dose].astype(np.int64)
        blocked = (dose == k - 1) | (dose + 1 >= closed)
        w = reach[:, None] * binom[dose]  # (state, DLTs in the cohort)
        new_code = plan.new_code[here]
        child_base = base[:, None] + (new_code - here[:, None]) * place[dose][:, None]
        go = np.full(w.shape, _SELECT, dtype=np.int8) if last else plan.decision[here, dose, blocked.astype(int)]
        # trials that stop after this cohort
        ends = go >= _SELECT
        if ends.any():
            n_above = (plan.units_of[codes[:, first_over:]] * c).sum(axis=1) + np.where(dose >= first_over, c, 0)
            we = w[ends]
            sizes[(level + 1) * c] = sizes.get((level + 1) * c, 0.0) + float(we.sum())
            stop_above = np.broadcast_to(n_above[:, None], w.shape)[ends]
            for r in range(1, m + 1):
                tails[r] += float(we[stop_above >= r].sum())
            toxic = go == _TOXIC
            if toxic.any():
                lost = float(w[toxic].sum())
                mtd[0] += lost
                tox_stop += lost
            if last:  # every child: no index of them needed
                order, starts, _ = _groups((child_base * (k + 1) + closed[:, None]).ravel())
                rows, weights = order[starts], np.add.reduceat(w.ravel()[order], starts)
            else:
                sel = np.flatnonzero(go == _SELECT)
                order, starts, _ = _groups(child_base.ravel()[sel] * (k + 1) + closed[sel // (c + 1)])
                rows, weights = sel[order[starts]], np.add.reduceat(w.ravel()[sel[order]], starts)
            if rows.size:
                rp, rx = np.divmod(rows, c + 1)
                end_codes = codes[rp]
                end_codes[np.arange(len(rows)), dose[rp]] = new_code[rp, rx]
                chosen = plan.select(end_codes, closed[rp])
                mtd += np.bincount(chosen + 1, weights=weights, minlength=k + 1)
        if last:
            break
        # trials that go on: merge equal states
        cont = np.flatnonzero(go.ravel() < _SELECT)
        if not cont.size:
            break
        parent, x = np.divmod(cont, c + 1)
        g = go.ravel()[cont]
        new_dose = dose[parent] + _MOVE[g]
        new_closed = np.where(g == _CLOSE, dose[parent], closed[parent])
        order, starts, _ = _groups((child_base.ravel()[cont] * k + new_dose) * (k + 1) + new_closed)
        reach = np.add.reduceat(w.ravel()[cont[order]], starts)
        rep = order[starts]
        base = child_base.ravel()[cont[rep]]
        rp = parent[rep]
        codes = codes[rp]
        codes[np.arange(len(rep)), dose[rp]] = new_code[rp, x[rep]]
        dose = new_dose[rep]
        closed = new_closed[rep]
    true_mtd = first_over - 1  # -1: none
    dlts = [float(patients[i]) * float(truth[i]) for i in range(k)]
    return {
        "mtd": tuple(float(v) for v in mtd),
        "patients_at_dose": tuple(float(v) for v in patients),
        "dlts_at_dose": tuple(dlts),
        "sample_size": tuple(sorted((n, q) for n, q in sizes.items() if q)),
        "p_stop_toxicity": tox_stop,
        "p_select_above_mtd": float(mtd[first_over + 1:].sum()),
        "p_correct_selection": float(mtd[true_mtd + 1]),
        "expected_patients_above_mtd": above,
        "p_any_above_mtd": float(tails[1]) if m >= 1 else 0.0,
        "p_overdose": float(tails[m]),
        "states": states,
    }
