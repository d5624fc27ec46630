"""Monte Carlo operating characteristics, with a standard error on every figure.

Two engines draw the same trials in distribution:

``graph`` (the default)
    A vectorised walk of the merged state graph: every trial of a batch
    advances one step per iteration, each cohort's DLT count drawn with
    :meth:`numpy.random.Generator.binomial`.  A million trials of 3+3 with
    5 doses take a second or two on one core.
``engine``
    Each trial is run through :func:`escalation_rules.decide` itself: the
    history grows one cohort (patient by patient, ``N`` or ``T``) or one
    decision at a time, and the engine says what happens next.  Slow; it is
    there so that the graph walk and the decision engine can be compared.

Results are reproducible for a given ``seed`` (trials are drawn in batches
of fixed size from :func:`numpy.random.default_rng`).  The figures and
their names are those of :class:`~escalation_rules.analysis.oc.OperatingCharacteristics`.

Examples
--------
>>> from escalation_rules import builtin_design
>>> sim = simulate(builtin_design("3+3-deescalate", doses=3), [0.05, 0.15, 0.4], trials=20000, seed=1)
>>> exact = operating_characteristics(builtin_design("3+3-deescalate", doses=3), [0.05, 0.15, 0.4])
>>> abs(sim.mtd[2] - exact.mtd[2]) < 4 * sim.se["mtd"][2]
True
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import attrs
import numpy as np

from .._attrs import value_repr
from .._limits import MAX_CAP
from .._machine import env_of
from .._reduce import DECIDE, STOP, TREAT, ReducedGraph
from ..engine import replay
from ..errors import EscalationRulesError
from ..protocol import Protocol
from .oc import (
    _FIGURE_TEXT,
    BOUNDED_FIGURES,
    _check_truth,
    _chosen,
    check_target,
    format_number,
    operating_characteristics,
    policy_graph,
    shown,
)
from .policy import Policy

__all__ = ["MAX_TRIALS", "SimulationResult", "simulate"]

BATCH = 100_000
ENGINES = ("graph", "engine")
#: How each engine is named in the text header.
_ENGINE_TEXT = {"graph": "walk of the merged state graph", "engine": "every trial through the decision engine"}
#: The most trials one call simulates (10^9 takes hours; the standard error is then about 3e-5 at most).
MAX_TRIALS = 1_000_000_000


@attrs.frozen
class SimulationResult:
    """Simulated operating characteristics with standard errors.

    Attributes
    ----------
    protocol, policy, engine : str
    truth : tuple of float
    target : float
    true_mtd : int or None
        1-based.
    trials, seed : int
    overdose_patients : int
    mtd, patients_at_dose, dlts_at_dose : tuple of float
    sample_size : tuple of (int, float)
    figures : dict
        Each of :data:`~escalation_rules.analysis.oc.BOUNDED_FIGURES` to its estimate.
    se : dict
        Standard error of every figure, under the same names (lists for the
        per-dose figures; ``sample_size`` as (size, se) pairs).
    seconds : float
        Wall-clock time of the run.
    """

    __repr__ = value_repr

    protocol: str
    policy: str
    engine: str
    truth: tuple[float, ...]
    target: float
    true_mtd: int | None
    trials: int
    seed: int | None
    overdose_patients: int
    mtd: tuple[float, ...]
    patients_at_dose: tuple[float, ...]
    dlts_at_dose: tuple[float, ...]
    sample_size: tuple[tuple[int, float], ...]
    figures: Mapping[str, float] = attrs.field(eq=False)
    se: Mapping[str, Any] = attrs.field(eq=False)
    seconds: float = attrs.field(default=0.0, eq=False)

    def __getattr__(self, name: str) -> Any:
        figures = object.__getattribute__(self, "figures")
        if name in figures:
            return figures[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``escalation-rules simulate --json``: the ``oc`` keys plus ``se``."""
        return {
            "protocol": self.protocol,
            "truth": list(self.truth),
            "target": self.target,
            "true_mtd": self.true_mtd,
            "policy": self.policy,
            "engine": self.engine,
            "trials": self.trials,
            "seed": self.seed,
            "mtd": list(self.mtd),
            "expected_patients": self.figures["expected_patients"],
            "expected_dlts": self.figures["expected_dlts"],
            "patients_at_dose": list(self.patients_at_dose),
            "dlts_at_dose": list(self.dlts_at_dose),
            "sample_size": [[n, q] for n, q in self.sample_size],
            **{name: self.figures[name] for name in BOUNDED_FIGURES if name not in ("expected_patients",
                                                                                   "expected_dlts")},
            "overdose_patients": self.overdose_patients,
            "se": {key: (list(map(list, value)) if key == "sample_size" else value) for key, value in self.se.items()},
            "seconds": round(self.seconds, 3),
        }

    def text(self) -> str:
        """A table per dose and the summary figures, each with its standard error."""
        f = format_number
        se = self.se
        lines = [f"simulated operating characteristics of {self.protocol} ({self.trials} trials, seed {self.seed}, "
                 f"{_ENGINE_TEXT[self.engine]}, policy {self.policy}, target {f(self.target)}, "
                 f"true MTD {'none' if self.true_mtd is None else 'dose ' + str(self.true_mtd)})",
                 f"{'dose':>6} {'true P(DLT)':>12} {'P(MTD)':>18} {'patients':>18} {'DLTs':>18}"]
        lines.append(f"{'none':>6} {'':>12} {f(self.mtd[0]) + ' ± ' + f(se['mtd'][0]):>18}")
        for d, p in enumerate(self.truth):
            cells = [f"{f(v[d + o])} ± {f(s[d + o])}" for v, s, o in (
                (self.mtd, se["mtd"], 1), (self.patients_at_dose, se["patients_at_dose"], 0),
                (self.dlts_at_dose, se["dlts_at_dose"], 0))]
            lines.append(f"{d + 1:>6} {f(p):>12} " + " ".join(f"{c:>18}" for c in cells))
        width = max(len(t) for t in _FIGURE_TEXT.values()) + 2
        lines.append("")
        for name in BOUNDED_FIGURES:
            label = _FIGURE_TEXT[name].format(m=self.overdose_patients)
            lines.append(f"{label:<{width}} {f(self.figures[name])} ± {f(se[name])}")
        lines.append("sample size distribution: " + ", ".join(f"{n}: {f(q)}" for n, q in self.sample_size))
        return "\n".join(lines)


class _Progress:
    """A one-line progress bar on a terminal (nothing when ``stream`` is not a TTY)."""

    def __init__(self, total: int, enabled: bool | None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = isatty() if enabled is None else enabled
        self.total = total
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} trials, {elapsed:.1f} s")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


class _Tally:
    """Sums and sums of squares of the per-trial quantities."""

    def __init__(self, k: int, cap: int) -> None:
        self.n = 0
        self.mtd = np.zeros(k + 1, dtype=np.int64)
        self.sizes = np.zeros(cap + 1, dtype=np.int64)
        self.pat = np.zeros(k)
        self.pat2 = np.zeros(k)
        self.dlt = np.zeros(k)
        self.dlt2 = np.zeros(k)
        self.scalars: dict[str, list[float]] = {name: [0.0, 0.0] for name in BOUNDED_FIGURES}

    def add(self, mtd_code: np.ndarray, patients: np.ndarray, dlts: np.ndarray, toxic: np.ndarray,
            first_over: int, true_mtd_code: int, m: int) -> None:
        k = patients.shape[1]
        self.n += len(mtd_code)
        self.mtd += np.bincount(mtd_code, minlength=k + 1)
        total = patients.sum(axis=1)
        self.sizes += np.bincount(total, minlength=len(self.sizes))[: len(self.sizes)]
        pf = patients.astype(np.float64)
        df = dlts.astype(np.float64)
        self.pat += pf.sum(axis=0)
        self.pat2 += (pf * pf).sum(axis=0)
        self.dlt += df.sum(axis=0)
        self.dlt2 += (df * df).sum(axis=0)
        above = patients[:, first_over:].sum(axis=1)
        per_trial = {
            "expected_patients": total,
            "expected_dlts": dlts.sum(axis=1),
            "expected_patients_above_mtd": above,
            "p_any_above_mtd": above >= 1,
            "p_overdose": above >= m,
            "p_select_above_mtd": mtd_code >= first_over + 1,
            "p_correct_selection": mtd_code == true_mtd_code,
            "p_stop_toxicity": toxic & (mtd_code == 0),
            "p_no_mtd": mtd_code == 0,
        }
        for name, values in per_trial.items():
            v = values.astype(np.float64)
            self.scalars[name][0] += float(v.sum())
            self.scalars[name][1] += float((v * v).sum())

    @staticmethod
    def _mean_se(total: Any, squares: Any, n: int) -> tuple[Any, Any]:
        mean = total / n
        var = np.maximum(squares / n - mean * mean, 0.0) * n / max(n - 1, 1)
        return mean, np.sqrt(var / n)

    def result(self) -> dict[str, Any]:
        n = self.n
        p_mtd = self.mtd / n
        out: dict[str, Any] = {"mtd": p_mtd, "mtd_se": np.sqrt(p_mtd * (1 - p_mtd) / n)}
        out["pat"], out["pat_se"] = self._mean_se(self.pat, self.pat2, n)
        out["dlt"], out["dlt_se"] = self._mean_se(self.dlt, self.dlt2, n)
        sizes = self.sizes / n
        out["sizes"] = [(int(s), float(q), float(np.sqrt(q * (1 - q) / n))) for s, q in enumerate(sizes) if q]
        out["scalars"] = {name: self._mean_se(t, s, n) for name, (t, s) in self.scalars.items()}
        return out


def _graph_arrays(graph: ReducedGraph, policy: Policy) -> dict[str, np.ndarray]:
    chosen = _chosen(graph, policy)
    nodes = graph.nodes
    width = max((n.cohort for n in nodes), default=0) + 1
    kind = np.array([n.kind for n in nodes], dtype=np.int8)
    dose = np.array([max(n.dose, 0) for n in nodes], dtype=np.int64)
    cohort = np.array([n.cohort for n in nodes], dtype=np.int64)
    child = np.full((len(nodes), width), -1, dtype=np.int64)
    for i, node in enumerate(nodes):
        if node.kind == TREAT:
            child[i, : len(node.children)] = node.children
        elif node.kind == DECIDE and chosen[i] >= 0:
            child[i, 0] = chosen[i]
    mtd_code = np.array([0 if n.mtd is None else n.mtd + 1 for n in nodes], dtype=np.int64)
    closes = np.array([n.closes for n in nodes], dtype=bool)
    return {"kind": kind, "dose": dose, "cohort": cohort, "child": child, "mtd": mtd_code, "closes": closes}


def _walk_batch(arrays: Mapping[str, np.ndarray], root: int, k: int, size: int, truth: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    kind, dose, cohort, child = arrays["kind"], arrays["dose"], arrays["cohort"], arrays["child"]
    node = np.full(size, root, dtype=np.int64)
    active = np.arange(size)
    patients = np.zeros((size, k), dtype=np.int32)
    dlts = np.zeros((size, k), dtype=np.int32)
    while active.size:
        here = node[active]
        kinds = kind[here]
        treat = kinds == TREAT
        if treat.any():
            trials = active[treat]
            at = here[treat]
            d = dose[at]
            c = cohort[at]
            x = rng.binomial(c, truth[d])
            patients[trials, d] += c.astype(np.int32)
            dlts[trials, d] += x.astype(np.int32)
            node[trials] = child[at, x]
        decide_ = kinds == DECIDE
        if decide_.any():
            node[active[decide_]] = child[here[decide_], 0]
        active = active[kinds != STOP]
    final = node
    return arrays["mtd"][final], patients, dlts, arrays["closes"][final]


def _engine_trial(protocol: Protocol, policy: Policy, truth: Sequence[float], rng: np.random.Generator,
                  k: int) -> tuple[int, np.ndarray, np.ndarray, bool]:
    patients = np.zeros(k, dtype=np.int32)
    dlts = np.zeros(k, dtype=np.int32)
    history: list[str] = []
    while True:
        state, decision = replay(protocol, " ".join(history))
        if decision.action == "treat":
            assert decision.dose is not None and decision.cohort_size is not None
            d = decision.dose - 1
            outcomes = rng.random(decision.cohort_size) < truth[d]
            history.append(f"{decision.dose}{''.join('T' if t else 'N' for t in outcomes)}")
            patients[d] += decision.cohort_size
            dlts[d] += int(outcomes.sum())
        elif decision.action == "decide":
            env = env_of(protocol, state.dose, state.counts, state.enrolled, state.closed)
            option = policy.option(decision.rule, env)
            if option is None:
                offered = ", ".join(o.id for o in decision.options)
                raise EscalationRulesError(f"policy {policy.name}: no option for decision rule {decision.rule!r} "
                                           f"(offered: {offered}); name one in the policy")
            history.append(f"[{option}]")
        else:
            rule_id, _, option_id = decision.rule.partition("/")
            rule = protocol.rule(rule_id)
            outcome = next(o.outcome for o in rule.options if o.id == option_id) if option_id else rule.outcome
            closes = bool(outcome is not None and outcome.close)
            return (0 if decision.mtd is None else decision.mtd), patients, dlts, closes


def simulate(
    protocol: Protocol | ReducedGraph,
    truth: Sequence[float],
    *,
    trials: int = 10_000,
    seed: int | None = None,
    policy: str | Mapping[str, Any] | Policy | None = None,
    target: float = 0.3,
    overdose_patients: int = 3,
    engine: str = "graph",
    progress: bool | None = None,
    stream: TextIO | None = None,
) -> SimulationResult:
    """Simulate ``trials`` trials of ``protocol`` under the true DLT probabilities ``truth``.

    Parameters
    ----------
    trials : int
        Number of simulated trials, from 2 to :data:`MAX_TRIALS`.
    seed : int or None
        Seed of :func:`numpy.random.default_rng` (0 or more): equal seeds give
        equal results.  ``None`` draws a seed from the operating system; the
        result's ``seed`` says which, so the run can be repeated.
    policy, target, overdose_patients
        As for :func:`~escalation_rules.analysis.oc.operating_characteristics`.
    engine : str
        ``"graph"`` (vectorised walk of the merged graph) or ``"engine"``
        (every step through :func:`escalation_rules.decide`).
    progress : bool or None
        Show a progress bar on ``stream`` (default: stderr, only when it is a terminal).

    Raises
    ------
    EscalationRulesError
        For a bad truth, trial count, engine or policy.
    """
    if engine not in ENGINES:
        raise EscalationRulesError(f"engine: expected one of {', '.join(ENGINES)} (got {engine!r})")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 2:
        raise EscalationRulesError(f"trials: expected an integer of at least 2 (got {shown(trials)})")
    if trials > MAX_TRIALS:
        raise EscalationRulesError(f"trials: expected at most {MAX_TRIALS:,} trials (got {shown(trials)}); "
                                   "the standard errors shrink with the square root of the count")
    if seed is None:
        seed = secrets.randbits(63)  # from the OS; reported with the result so the run can be repeated
    elif not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise EscalationRulesError(f"seed: expected a whole number of 0 or more (got {shown(seed)})")
    if not isinstance(overdose_patients, int) or not 1 <= overdose_patients <= MAX_CAP:
        raise EscalationRulesError(f"overdose_patients: expected a positive integer of at most {MAX_CAP} "
                                   f"(got {shown(overdose_patients)})")
    check_target(target)
    start = time.perf_counter()
    graph, pol = policy_graph(protocol, policy)
    probs = tuple(float(p) for p in _check_truth(graph, truth))
    k = graph.doses
    target_f = float(target)
    first_over = next((d for d, p in enumerate(probs) if p > target_f), k)
    true_mtd_code = first_over  # mtd code: 0 none, d + 1 for 0-based dose d
    rng = np.random.default_rng(seed)
    tally = _Tally(k, graph.protocol.cap)
    bar = _Progress(trials, progress, stream)
    truth_arr = np.array(probs)
    if engine == "graph":
        arrays = _graph_arrays(graph, pol)
        done = 0
        while done < trials:
            size = min(BATCH, trials - done)
            mtd_code, patients, dlts, toxic = _walk_batch(arrays, graph.root, k, size, truth_arr, rng)
            tally.add(mtd_code, patients, dlts, toxic, first_over, true_mtd_code, overdose_patients)
            done += size
            bar.update(done)
    else:
        operating_characteristics(graph, [0.0] * k, policy=pol, bounds=False)  # refuse an open decision early
        step = max(1, min(1000, trials // 100))
        done = 0
        while done < trials:
            size = min(step, trials - done)
            rows = [_engine_trial(graph.protocol, pol, probs, rng, k) for _ in range(size)]
            tally.add(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows]),
                      np.array([r[2] for r in rows]), np.array([r[3] for r in rows], dtype=bool),
                      first_over, true_mtd_code, overdose_patients)
            done += size
            bar.update(done)
    out = tally.result()
    scalars = out["scalars"]
    se: dict[str, Any] = {
        "mtd": [float(x) for x in out["mtd_se"]],
        "patients_at_dose": [float(x) for x in out["pat_se"]],
        "dlts_at_dose": [float(x) for x in out["dlt_se"]],
        "sample_size": [(s, e) for s, _, e in out["sizes"]],
    }
    se.update({name: float(scalars[name][1]) for name in BOUNDED_FIGURES})
    return SimulationResult(
        protocol=graph.protocol.id,
        policy=pol.name,
        engine=engine,
        truth=probs,
        target=target_f,
        true_mtd=first_over if first_over > 0 else None,
        trials=trials,
        seed=seed,
        overdose_patients=overdose_patients,
        mtd=tuple(float(x) for x in out["mtd"]),
        patients_at_dose=tuple(float(x) for x in out["pat"]),
        dlts_at_dose=tuple(float(x) for x in out["dlt"]),
        sample_size=tuple((s, q) for s, q, _ in out["sizes"]),
        figures={name: float(scalars[name][0]) for name in BOUNDED_FIGURES},
        se=se,
        seconds=time.perf_counter() - start,
    )

