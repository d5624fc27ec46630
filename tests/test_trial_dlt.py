"""DLT definitions: parsing with key paths, ASTCT grading, and episode evaluation over time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from escalation_rules import load_protocol
from escalation_rules.errors import ProtocolError
from escalation_rules.trial.dlt import (
    DltDefinition,
    DltRule,
    Episode,
    GradePoint,
    crs_grade,
    dlt_definition,
    evaluate_episode,
    icans_grade,
    parse_dlt,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CLOSE = T0 + timedelta(days=28)
NCT = dlt_definition(load_protocol("spec/nct07117175"))


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def episode(category: str, *points: tuple[datetime, int], term: str = "Term", attribution: str | None = "possible",
            ) -> Episode:
    return Episode("P1", "ae1", term, category, tuple(GradePoint(t, g) for t, g in points), attribution)


def verdict(ep: Episode, as_of: datetime, close: datetime = CLOSE) -> str:
    return evaluate_episode(NCT, ep, infusion=T0, close=close, as_of=as_of).outcome


def test_shipped_definition_is_marked_as_a_template() -> None:
    """spec/nct07117175/dlt.toml is clearly a template a sponsor adapts."""
    assert NCT.template is True
    assert "template" in NCT.status
    assert set(NCT.categories) >= {"crs", "icans", "hematologic", "non-hematologic"}


def test_missing_definition_is_refused_with_a_pointer_to_the_template() -> None:
    """A protocol without a dlt table cannot keep a trial record."""
    from escalation_rules import builtin_design

    with pytest.raises(ProtocolError, match="dlt: missing"):
        dlt_definition(builtin_design("3+3-escalate-only", doses=3))


@pytest.mark.parametrize(("raw", "message"), [
    ({"categories": {"crs": "astct"}, "rules": []}, "dlt.categories.crs: expected one of ctcae"),
    ({"categories": {"crs": "ctcae"}, "rules": [{"id": "a", "categories": ["cns"], "grade": 3, "paraphrase": "x"}]},
     "dlt.rules[0].categories[0]: unknown category 'cns'"),
    ({"categories": {"crs": "ctcae"}, "rules": [{"id": "a", "categories": ["crs"], "grade": 7, "paraphrase": "x"}]},
     "dlt.rules[0].grade: expected an integer from 1 to 5"),
    ({"categories": {"crs": "ctcae"},
      "rules": [{"id": "a", "categories": ["crs"], "grade": 3, "improves_to": 3, "within_hours": 1,
                 "paraphrase": "x"}]},
     "dlt.rules[0].improves_to: expected a grade below the threshold 3"),
    ({"categories": {"crs": "ctcae"},
      "rules": [{"id": "a", "categories": ["crs"], "grade": 3, "improves_to": 2, "paraphrase": "x"}]},
     "dlt.rules[0].improves_to: needs within_hours or by_day"),
    ({"categories": {"crs": "ctcae"}, "rules": [{"id": "a", "categories": ["crs"], "grade": 3, "paraphrase": "x",
                                                 "typo": 1}]},
     "dlt.rules[0].typo: unknown key"),
    ({"categories": {"crs": "ctcae"}, "attribution": ["likely"],
      "rules": [{"id": "a", "categories": ["crs"], "grade": 3, "paraphrase": "x"}]},
     "dlt.attribution[0]: expected one of unrelated"),
])
def test_malformed_definitions_are_refused_with_key_paths(raw: dict[str, Any], message: str) -> None:
    """Each mistake in a dlt table is reported with the file and its key path."""
    with pytest.raises(ProtocolError) as err:
        parse_dlt(raw, "x/dlt.toml")
    assert any(line.startswith("x/dlt.toml: ") and message in line for line in err.value.problems), err.value.problems


@pytest.mark.parametrize(("components", "grade"), [
    ({"fever": False}, 0),
    ({"fever": True}, 1),
    ({"fever": True, "hypotension": "no-vasopressors"}, 2),
    ({"fever": True, "hypoxia": "low-flow"}, 2),
    ({"fever": True, "hypotension": "one-vasopressor", "hypoxia": "low-flow"}, 3),
    ({"fever": True, "hypoxia": "high-flow"}, 3),
    ({"fever": True, "hypotension": "multiple-vasopressors"}, 4),
    ({"fever": True, "hypoxia": "positive-pressure"}, 4),
])
def test_crs_grade_follows_the_astct_table(components: dict[str, Any], grade: int) -> None:
    """CRS is graded by the worse of hypotension and hypoxia, given fever (ASTCT consensus)."""
    assert crs_grade(components) == grade


@pytest.mark.parametrize(("components", "grade"), [
    ({"ice": 10}, 0), ({"ice": 7}, 1), ({"ice": 3}, 2), ({"ice": 0}, 3),
    ({"consciousness": "voice"}, 2), ({"consciousness": "touch"}, 3), ({"consciousness": "unarousable"}, 4),
    ({"seizure": "rapid"}, 3), ({"seizure": "prolonged"}, 4), ({"motor": "deep-weakness"}, 4),
    ({"edema": "focal"}, 3), ({"edema": "diffuse"}, 4), ({"ice": 8, "edema": "focal"}, 3),
])
def test_icans_grade_is_the_worst_component(components: dict[str, Any], grade: int) -> None:
    """ICANS takes the most severe of ICE score, consciousness, seizure, motor and oedema (ASTCT consensus)."""
    assert icans_grade(components) == grade


def test_bad_components_are_refused() -> None:
    """An unknown component or value is refused, naming it."""
    with pytest.raises(ProtocolError, match=r"components\.hypotension"):
        crs_grade({"fever": True, "hypotension": "some"})
    with pytest.raises(ProtocolError, match=r"components\.fevr"):
        crs_grade({"fevr": True})
    with pytest.raises(ProtocolError, match=r"components\.ice"):
        icans_grade({"ice": 11})


def test_grade_3_not_improving_within_72_hours_is_pending_then_a_dlt() -> None:
    """A grade 3 CRS is pending until 72 h have passed, then a DLT if it has not come down to grade 2."""
    ep = episode("crs", (at(2), 3))
    v = evaluate_episode(NCT, ep, infusion=T0, close=CLOSE, as_of=at(4))
    assert v.outcome == "pending" and v.until == at(5)
    late = attrs.evolve(ep, points=(*ep.points, GradePoint(at(5, 1), 2)))
    assert verdict(late, at(6)) == "dlt"


def test_grade_3_improving_in_time_is_no_dlt() -> None:
    """A grade 3 CRS that comes down to grade 2 within 72 h is no DLT."""
    assert verdict(episode("crs", (at(2), 3), (at(4), 2)), at(4)) == "no-dlt"


def test_a_second_rise_is_judged_again() -> None:
    """Coming back up to grade 3 after improving starts a new 72 h clock."""
    ep = episode("crs", (at(2), 3), (at(3), 2), (at(10), 3))
    assert verdict(ep, at(11)) == "pending"
    assert verdict(ep, at(14)) == "dlt"


def test_grade_4_is_a_dlt_at_once() -> None:
    """A grade 4 CRS needs no duration: it is a DLT as soon as it is recorded."""
    assert verdict(episode("crs", (at(2), 4)), at(2)) == "dlt"


def test_missing_attribution_keeps_a_dlt_pending_and_unrelated_clears_it() -> None:
    """An episode meeting a rule without attribution is pending with no date; 'unrelated' makes it no DLT."""
    ep = episode("crs", (at(2), 4), attribution=None)
    v = evaluate_episode(NCT, ep, infusion=T0, close=CLOSE, as_of=at(3))
    assert (v.outcome, v.until) == ("pending", None)
    assert verdict(attrs.evolve(ep, attribution="unrelated"), at(3)) == "no-dlt"


def test_by_day_condition_reads_the_grade_on_that_day() -> None:
    """Grade 4 neutropenia is pending until day 28 and a DLT only if still above grade 3 then."""
    recovered = episode("hematologic", (at(5), 4), (at(20), 3))
    assert verdict(recovered, at(21)) == "pending"
    assert verdict(recovered, at(28)) == "no-dlt"
    assert verdict(episode("hematologic", (at(5), 4)), at(28)) == "dlt"


def test_thresholds_reached_after_the_window_do_not_count() -> None:
    """A grade 4 reached after the window closes is no DLT."""
    assert verdict(episode("crs", (at(20), 1), (at(29), 4)), at(30)) == "no-dlt"


def test_excluded_terms_are_not_judged_by_the_rule() -> None:
    """Fever is excepted from the grade 3 non-haematologic rule of the template."""
    assert verdict(episode("non-hematologic", (at(2), 3), term="Fever"), at(10)) == "no-dlt"
    assert verdict(episode("non-hematologic", (at(2), 3), term="Diarrhoea"), at(10)) == "dlt"


def test_points_after_as_of_are_not_seen() -> None:
    """Evaluation at a moment ignores grades recorded for later moments."""
    ep = episode("crs", (at(2), 1), (at(5), 4))
    assert verdict(ep, at(3)) == "no-dlt"
    assert verdict(ep, at(5)) == "dlt"


_RULE = DltRule("r", ("x",), 3, 2, 24, None, (), (), None, "grade 3 for more than a day")
_DEF = DltDefinition((_RULE,), {"x": "ctcae"}, ("possible", "probable", "definite"))


@given(st.lists(st.tuples(st.integers(0, 27 * 24), st.integers(0, 5)), min_size=1, max_size=8),
       st.integers(0, 40 * 24))
def test_pending_is_never_no_dlt_later_dlt_is_final(points: list[tuple[int, int]], hours: int) -> None:
    """Invariant: once an episode is a DLT it stays one as time passes, and a pending one is never 'no DLT' yet."""
    ordered = sorted(points)
    ep = Episode("P", "a", "T", "x", tuple(GradePoint(T0 + timedelta(hours=h), g) for h, g in ordered), "possible")
    now = T0 + timedelta(hours=hours)
    first = evaluate_episode(_DEF, ep, infusion=T0, close=CLOSE, as_of=now)
    later = evaluate_episode(_DEF, ep, infusion=T0, close=CLOSE, as_of=now + timedelta(days=30))
    assert later.outcome in ("dlt", "no-dlt")
    if first.outcome == "dlt":
        assert later.outcome == "dlt"
    if first.outcome == "pending":
        assert first.until is not None and first.until > now
