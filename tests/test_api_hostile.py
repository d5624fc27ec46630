"""Every public function refuses wrong input with our own error, or a TypeError naming the argument (issue 13).

The property test feeds each function of ``escalation_rules.__all__`` arbitrary values in each argument
(keeping the others valid) and accepts only an EscalationRulesError subclass, or a TypeError whose message
starts with the name of a Python argument of that function.  The examples from the issue are pinned too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import escalation_rules as er
from escalation_rules.errors import EscalationRulesError

SMALL = er.builtin_design("3+3-escalate-only", 2)
COMPILED = er.compile_protocol(SMALL)
NCT_SPEC = "spec/nct07117175"

class _Huge:
    """Stands for 10**5000 in generated values (Hypothesis cannot print the number itself)."""

    def __repr__(self) -> str:
        return "10**5000"


def _materialize(value: Any) -> Any:
    if isinstance(value, _Huge):
        return 10**5000
    if isinstance(value, list):
        return [_materialize(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_materialize(v) for v in value)
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    return value


#: Arbitrary Python values: every JSON shape, absurd sizes, and the package's own objects in the wrong place.
ANYTHING = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.just(_Huge()), st.floats(), st.text(max_size=20),
              st.binary(max_size=5), st.sampled_from([SMALL, COMPILED, "1NNN", "3+3-deescalate", NCT_SPEC])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4),
                            st.tuples(inner, inner)),
    max_leaves=8,
)

#: Each public function with valid arguments (so that replacing one tests that argument alone).
VALID: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "decide": (er.decide, {"protocol": SMALL, "history": "1NNN"}),
    "future_paths": (er.future_paths, {"protocol": SMALL, "history": "1NNN", "max_depth": 1}),
    "verify": (er.verify, {"protocol": SMALL}),
    "compile_protocol": (er.compile_protocol, {"protocol": SMALL}),
    "operating_characteristics": (er.operating_characteristics,
                                  {"protocol": SMALL, "truth": [0.1, 0.2], "target": 0.3, "overdose_patients": 3}),
    "path_probabilities": (er.path_probabilities, {"tree": er.future_paths(SMALL, "1NNN", max_depth=1),
                                                   "truth": [0.1, 0.2]}),
    "simulate": (er.simulate, {"protocol": SMALL, "truth": [0.1, 0.2], "trials": 10, "seed": 1}),
    "builtin_design": (er.builtin_design, {"name": "3+3-deescalate", "doses": 2}),
    "resolve_spec": (er.resolve_spec, {"spec": "3+3-deescalate", "doses": 2}),
    "load_protocol": (er.load_protocol, {"path": NCT_SPEC}),
    "load_eligibility": (er.load_eligibility, {"protocol": NCT_SPEC}),
    "screen": (er.screen, {"spec": NCT_SPEC, "record": {"id": "P1"}}),
    "parse_outcomes": (er.parse_outcomes, {"text": "1NNN"}),
    "parse_history_json": (er.parse_history_json, {"data": "[]", "source": "history"}),
    "trial_status": (er.trial_status, {"protocol": NCT_SPEC, "events": []}),
    "load_scenarios": (er.load_scenarios, {"path": "no-such-file.csv"}),
}
_LOADED: dict[str, Any] = {}


def _resolve(value: Any) -> Any:
    if value == NCT_SPEC:  # the shipped protocol, loaded once
        if "nct" not in _LOADED:
            _LOADED["nct"] = er.load_protocol(NCT_SPEC)
        return _LOADED["nct"]
    return value


def _call(name: str, argument: str, value: Any) -> None:
    function, valid = VALID[name]
    kwargs = {k: (_resolve(v) if k in ("protocol", "spec") and name not in ("resolve_spec",) else v)
              for k, v in valid.items()}
    if name == "screen" and argument != "spec":
        kwargs["spec"] = er.load_eligibility(_resolve(NCT_SPEC))
    kwargs[argument] = _materialize(value)
    params = list(inspect.signature(function).parameters)
    try:
        function(**kwargs)
    except EscalationRulesError as err:
        assert str(err).strip() and len(str(err)) < 5000, (name, argument)
    except TypeError as err:
        names = "|".join(re.escape(p) for p in params)
        assert re.match(rf"^({names})\b", str(err)), (name, argument, str(err))


CASES = [(name, argument) for name, (_, valid) in VALID.items() for argument in valid]


@pytest.mark.parametrize(("name", "argument"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=ANYTHING)
def test_every_public_function_refuses_arbitrary_values_with_our_error_or_a_named_type_error(
        name: str, argument: str, value: Any) -> None:
    """Whatever a caller passes in one argument, only our errors or a TypeError naming an argument come out."""
    _call(name, argument, value)


def test_every_public_function_is_covered() -> None:
    """Each function of __all__ is in the table above (run_grid is covered by its own tests: it starts processes)."""
    functions = {n for n in er.__all__ if n[0].islower() and callable(getattr(er, n))}
    assert functions - set(VALID) == {"run_grid"}


def test_issue_examples() -> None:
    """The calls the issue lists: accepted in the documented forms, refused with our wording otherwise."""
    nct = _resolve(NCT_SPEC)
    compiled = er.compile_protocol(nct)
    assert er.decide(nct, [{"dose": 1, "outcomes": "N"}]).action == "decide"
    assert er.operating_characteristics(compiled, [0.05, 0.1, 0.2, 0.35]).to_dict()
    assert er.screen(compiled, {"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 3}).outcome == \
        "not eligible"
    with pytest.raises(er.HistoryError, match="dose level too large"):
        er.decide(nct, "1" * 5000 + "N")
    with pytest.raises(TypeError, match=r"^events\[0\]: expected an event"):
        er.trial_status(nct, [1, 2])
    with pytest.raises(TypeError, match=r"^spec: expected"):
        er.screen(None, {"id": "P1"})
    with pytest.raises(EscalationRulesError, match=r"^target: expected a probability from 0 to 1 "):
        er.operating_characteristics(nct, [0.05, 0.1, 0.2, 0.35], target=2)
    with pytest.raises(EscalationRulesError, match=r"^max_depth: expected an integer of 0 or more"):
        er.future_paths(nct, max_depth=-1)
    with pytest.raises(EscalationRulesError, match=r"^truth\[0\]: expected a probability"):
        er.operating_characteristics(nct, ["1/20", 0.1, 0.2, 0.35])
    deep: Any = {}
    for _ in range(20_000):
        deep = {"a": deep}
    with pytest.raises(EscalationRulesError):
        er.screen(compiled, {"id": "P1", "ecog": deep})
