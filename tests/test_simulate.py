"""Tests of escalation_rules.analysis.simulation: Monte Carlo operating characteristics."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from escalation_rules import builtin_design
from escalation_rules.analysis import BOUNDED_FIGURES, operating_characteristics, simulate
from escalation_rules.cli import main
from escalation_rules.designs import DESIGNS
from escalation_rules.errors import EscalationRulesError


def _assert_agrees(exact: Any, sim: Any, sigmas: float = 4.0) -> None:
    """Every simulated figure lies within ``sigmas`` standard errors of the exact one.

    A small floor (a few trials' worth) covers figures whose simulated
    standard error is 0 because the event never (or always) happened.
    """
    floor = 3.0 / sim.trials

    def close(e: Any, s: float, se: float, scale: float, what: str) -> None:
        assert abs(float(e) - s) <= sigmas * se + floor * scale, f"{what}: exact {float(e)}, simulated {s} ± {se}"

    cap = max(1, len(exact.truth) * 6)
    for d, (e, s, se) in enumerate(zip(exact.mtd, sim.mtd, sim.se["mtd"], strict=True)):
        close(e, s, se, 1, f"mtd[{d}]")
    for key in ("patients_at_dose", "dlts_at_dose"):
        for d, (e, s, se) in enumerate(zip(getattr(exact, key), getattr(sim, key), sim.se[key], strict=True)):
            close(e, s, se, cap, f"{key}[{d}]")
    for name in BOUNDED_FIGURES:
        close(exact.figure(name), sim.figures[name], sim.se[name], cap, name)
    exact_sizes = dict(exact.sample_size)
    sim_sizes = dict(sim.sample_size)
    sim_se = dict(sim.se["sample_size"])
    for n in set(exact_sizes) | set(sim_sizes):
        close(exact_sizes.get(n, 0), sim_sizes.get(n, 0.0), sim_se.get(n, 0.0), 1, f"sample_size[{n}]")


def test_same_seed_same_results_and_other_seed_other_results():
    """Simulation is reproducible by seed."""
    design = builtin_design("3+3-deescalate", 3)
    a = simulate(design, [0.1, 0.2, 0.35], trials=5000, seed=7)
    b = simulate(design, [0.1, 0.2, 0.35], trials=5000, seed=7)
    c = simulate(design, [0.1, 0.2, 0.35], trials=5000, seed=8)
    assert a.mtd == b.mtd and a.figures == b.figures and a.patients_at_dose == b.patients_at_dose
    assert a.mtd != c.mtd


def test_graph_walk_agrees_with_exact_figures():
    """20,000 simulated trials of 3+3-deescalate agree with the exact figures within 4 standard errors."""
    design = builtin_design("3+3-deescalate", 4)
    truth = [0.05, 0.15, 0.3, 0.5]
    _assert_agrees(operating_characteristics(design, truth), simulate(design, truth, trials=20_000, seed=11))


def test_decision_engine_agrees_with_exact_figures(nct):
    """Trials run through decide itself agree with the exact figures of NCT07117175 (default policy)."""
    truth = [0.1, 0.2, 0.3, 0.45]
    sim = simulate(nct, truth, trials=400, seed=5, engine="engine")
    assert sim.engine == "engine"
    _assert_agrees(operating_characteristics(nct, truth), sim, sigmas=4.5)


def test_every_figure_has_a_standard_error():
    """The result carries a standard error for every figure, per dose where the figure is per dose."""
    sim = simulate(builtin_design("3+3-escalate-only", 3), [0.1, 0.3, 0.5], trials=2000, seed=1)
    assert len(sim.se["mtd"]) == 4 and len(sim.se["patients_at_dose"]) == 3 and len(sim.se["dlts_at_dose"]) == 3
    assert all(name in sim.se for name in BOUNDED_FIGURES)
    assert sim.se["expected_patients"] > 0
    assert abs(sum(sim.mtd) - 1) < 1e-12


def test_simulation_follows_the_policy(nct):
    """Under most-cautious, NCT07117175 stops at the first decision point: one or three patients."""
    sim = simulate(nct, [0.1, 0.2, 0.3, 0.4], trials=3000, seed=2, policy="most-cautious")
    assert {n for n, _ in sim.sample_size} <= {1, 3}
    assert sim.mtd[0] == 1.0


def test_progress_bar_only_on_a_terminal():
    """The progress bar is written when asked for (or on a TTY) and never to a plain stream."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    design = builtin_design("3+3-deescalate", 2)
    quiet = io.StringIO()
    simulate(design, [0.1, 0.2], trials=100, seed=1, stream=quiet)
    assert quiet.getvalue() == ""
    loud = Tty()
    simulate(design, [0.1, 0.2], trials=100, seed=1, stream=loud)
    assert "100/100 trials" in loud.getvalue()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trials": 1}, "^trials: "),
    ({"engine": "fast"}, "^engine: "),
    ({"overdose_patients": 0}, "^overdose_patients: "),
])
def test_bad_arguments_are_refused(kwargs, message):
    """Trial counts below 2, unknown engines and non-positive thresholds are refused."""
    with pytest.raises(EscalationRulesError, match=message):
        simulate(builtin_design("3+3-deescalate", 2), [0.1, 0.2], **kwargs)


def test_cli_simulate_json_mirrors_oc_with_standard_errors(capsys):
    """simulate --json prints the oc fields plus 'se' for each of them."""
    assert main(["simulate", "3+3-deescalate", "--truth", "0.1,0.2,0.3", "--trials", "2000", "--seed", "3",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("mtd", "expected_patients", "expected_dlts", "patients_at_dose", "dlts_at_dose"):
        assert key in data and key in data["se"]
    assert data["trials"] == 2000 and data["seed"] == 3 and data["engine"] == "graph"


def test_cli_simulate_text_with_the_engine(capsys, in_repo):
    """simulate --engine runs through the decision engine and prints figures with ± standard errors."""
    assert main(["simulate", "spec/nct07117175", "--truth", "0.1,0.2,0.3,0.4", "--trials", "50", "--seed", "1",
                 "--engine"]) == 0
    out = capsys.readouterr().out
    assert "every trial through the decision engine" in out and "engine engine" not in out and "±" in out


# ------------------------------------------------------------------ slow: every shipped design

_TRUTHS = [
    [0.05, 0.1, 0.2, 0.3, 0.5],
    [0.02, 0.05, 0.08, 0.12, 0.16],
    [0.3, 0.4, 0.5, 0.6, 0.7],
    [0.1, 0.35, 0.1, 0.35, 0.6],
]


@pytest.mark.slow
@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("truth", _TRUTHS, ids=["rising", "flat-low", "toxic", "non-monotone"])
def test_exact_agrees_with_simulation_for_every_builtin_design(design, truth):
    """For every built-in design, exact figures agree with 200,000 simulated trials within 4 standard errors."""
    protocol = builtin_design(design, len(truth))
    _assert_agrees(operating_characteristics(protocol, truth), simulate(protocol, truth, trials=200_000, seed=2024))


@pytest.mark.slow
@pytest.mark.parametrize("truth", [[0.05, 0.1, 0.2, 0.35], [0.2, 0.3, 0.4, 0.5], [0.01, 0.02, 0.05, 0.1]],
                         ids=["rising", "toxic", "safe"])
@pytest.mark.parametrize("policy", ["default", "most-aggressive"])
def test_exact_agrees_with_simulation_for_nct07117175(nct, truth, policy):
    """For NCT07117175, exact figures agree with 200,000 simulated trials within 4 standard errors."""
    _assert_agrees(operating_characteristics(nct, truth, policy=policy),
                   simulate(nct, truth, trials=200_000, seed=99, policy=policy))


@pytest.mark.slow
@pytest.mark.parametrize("design", ["3+3-deescalate", "accelerated-titration"])
def test_decision_engine_agrees_with_exact_figures_for_builtin_designs(design):
    """Trials run through decide agree with the exact figures of the built-in designs within 4 standard errors."""
    truth = [0.05, 0.15, 0.3, 0.5]
    protocol = builtin_design(design, len(truth))
    _assert_agrees(operating_characteristics(protocol, truth), simulate(protocol, truth, trials=3000, seed=8,
                                                                         engine="engine"))


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_negative_or_non_integer_seed_is_refused(seed: Any) -> None:
    """A seed numpy cannot take is refused with a one-line EscalationRulesError, not a numpy traceback."""
    with pytest.raises(EscalationRulesError, match="seed: expected a whole number of 0 or more"):
        simulate(builtin_design("3+3-deescalate", 2), [0.1, 0.2], trials=10, seed=seed)


def test_cli_refuses_a_negative_seed(capsys: pytest.CaptureFixture[str]) -> None:
    """simulate --seed -1 exits 2 with one line on stderr."""
    assert main(["simulate", "3+3-deescalate", "--truth", "0.1,0.2", "--seed", "-1", "--trials", "10"]) == 2
    err = capsys.readouterr().err
    assert "--seed: expected a whole number of 0 or more (got -1)" in err and len(err.splitlines()) == 1


def test_without_a_seed_the_drawn_seed_is_reported_and_reproduces_the_run() -> None:
    """With no seed one is drawn from the OS and reported; running again with it gives the same figures."""
    design = builtin_design("3+3-deescalate", 3)
    first = simulate(design, [0.1, 0.2, 0.35], trials=500)
    assert isinstance(first.seed, int) and first.seed >= 0
    assert f"seed {first.seed}," in first.text()
    again = simulate(design, [0.1, 0.2, 0.35], trials=500, seed=first.seed)
    assert again.mtd == first.mtd and again.figures == first.figures


def test_trials_above_the_maximum_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """More than MAX_TRIALS trials are refused at once with a clear error instead of running for days."""
    from escalation_rules.analysis.simulation import MAX_TRIALS

    with pytest.raises(EscalationRulesError, match="trials: expected at most 1,000,000,000"):
        simulate(builtin_design("3+3-deescalate", 2), [0.1, 0.2], trials=MAX_TRIALS + 1, seed=1)
    assert main(["simulate", "3+3-deescalate", "--truth", "0.1,0.2", "--trials", "10000000000000"]) == 2
    assert "--trials: expected at most" in capsys.readouterr().err


def test_messages_show_json_words_not_python_reprs() -> None:
    """A bad trial count is shown as JSON writes it (true, null), never as Python's True or None."""
    design = builtin_design("3+3-deescalate", 2)
    with pytest.raises(EscalationRulesError, match=r"\(got true\)"):
        simulate(design, [0.1, 0.2], trials=True)  # type: ignore[arg-type]
    with pytest.raises(EscalationRulesError, match=r"\(got null\)"):
        simulate(design, [0.1, 0.2], trials=None)  # type: ignore[arg-type]


def test_simulation_honours_a_policy_that_depends_on_the_data(nct):
    """The graph walk follows guarded cases as the exact figures do (default: declare only at <= 1 DLT in 3)."""
    truth = [0.4, 0.55, 0.7, 0.8]
    sim = simulate(nct, truth, trials=20_000, seed=3)
    _assert_agrees(operating_characteristics(nct, truth), sim)
    always = simulate(nct, truth, trials=20_000, seed=3, policy={"fill-complete": "declare"})
    assert always.mtd[1] - sim.mtd[1] > 0.015  # exactly 0.2668 - 0.2399
