"""DLT definitions: rules over adverse-event episodes, and ASTCT grading of CRS and ICANS.

A protocol's ``dlt`` table (kept raw by the loader in ``Protocol.extra``)
declares which categories exist and how each is graded, which attributions
count, and a list of rules.  A rule looks at the moments an episode reaches a
grade threshold inside the patient's observation window; it may add a
duration condition: the grade must come down to ``improves_to`` or lower
within ``within_hours`` of reaching the threshold, or by day ``by_day`` after
the infusion.  An episode whose outcome is not known yet is *pending*, never
"no DLT".

Examples
--------
>>> from datetime import datetime, timezone
>>> from escalation_rules import load_protocol
>>> d = dlt_definition(load_protocol("spec/nct07117175"))
>>> d.template, [r.id for r in d.rules][:3]
(True, ['death', 'crs-grade-4', 'crs-grade-3-persisting'])
>>> day = lambda n, h=0: datetime(2025, 1, 1 + n, h, tzinfo=timezone.utc)
>>> crs = Episode("P1", "crs1", "Cytokine release syndrome", "crs",
...               (GradePoint(day(2), 3), GradePoint(day(3), 2)), "probable")
>>> evaluate_episode(d, crs, infusion=day(0), close=day(28), as_of=day(10)).outcome
'no-dlt'
>>> slow = attrs.evolve(crs, points=(GradePoint(day(2), 3),))
>>> v = evaluate_episode(d, slow, infusion=day(0), close=day(28), as_of=day(4))
>>> v.outcome, v.until.isoformat()
('pending', '2025-01-06T00:00:00+00:00')
>>> evaluate_episode(d, slow, infusion=day(0), close=day(28), as_of=day(6)).outcome
'dlt'
>>> crs_grade({"fever": True, "hypotension": "one-vasopressor", "hypoxia": "low-flow"})
3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._attrs import value_repr
from ..errors import ProtocolError
from ..protocol import Protocol

__all__ = [
    "ATTRIBUTIONS",
    "SCALES",
    "DltDefinition",
    "DltRule",
    "Episode",
    "EpisodeVerdict",
    "GradePoint",
    "crs_grade",
    "dlt_definition",
    "evaluate_episode",
    "grade_from_components",
    "icans_grade",
    "parse_dlt",
]

#: Attribution of an adverse event to the product, weakest first (CTCAE practice).
ATTRIBUTIONS: tuple[str, ...] = ("unrelated", "unlikely", "possible", "probable", "definite")

#: Grading scales a category may use.
SCALES: tuple[str, ...] = ("ctcae", "astct-crs", "astct-icans")

_CRS_HYPOTENSION = {"none": 0, "no-vasopressors": 2, "one-vasopressor": 3, "multiple-vasopressors": 4}
_CRS_HYPOXIA = {"none": 0, "low-flow": 2, "high-flow": 3, "positive-pressure": 4}
_ICANS_CONSCIOUSNESS = {"normal": 0, "spontaneous": 1, "voice": 2, "touch": 3, "unarousable": 4}
_ICANS_SEIZURE = {"none": 0, "rapid": 3, "prolonged": 4}
_ICANS_MOTOR = {"none": 0, "deep-weakness": 4}
_ICANS_EDEMA = {"none": 0, "focal": 3, "diffuse": 4}


@attrs.frozen
class DltRule:
    """One rule of a DLT definition.

    Attributes
    ----------
    id : str
    categories : tuple of str
        Categories the rule looks at (``"*"`` for all).
    grade : int
        Threshold: the rule looks at moments the grade reaches this or higher.
    improves_to : int or None
        With ``within_hours`` or ``by_day``: the grade the episode must come
        down to for the threshold not to count.
    within_hours : int or None
        Hours after reaching the threshold.
    by_day : int or None
        Day after the infusion (day 0).
    terms, exclude_terms : tuple of str
        Only these terms (empty: all) and never these (compared case-insensitively).
    attribution : tuple of str or None
        Attributions that count; ``None`` takes the definition's.
    paraphrase : str
        What the rule says, in words.
    """

    __repr__ = value_repr

    id: str
    categories: tuple[str, ...]
    grade: int
    improves_to: int | None = None
    within_hours: int | None = None
    by_day: int | None = None
    terms: tuple[str, ...] = ()
    exclude_terms: tuple[str, ...] = ()
    attribution: tuple[str, ...] | None = None
    paraphrase: str = ""

    def applies_to(self, category: str, term: str) -> bool:
        """Whether the rule looks at an episode of this category and term."""
        if "*" not in self.categories and category not in self.categories:
            return False
        folded = term.casefold()
        if self.terms and folded not in {t.casefold() for t in self.terms}:
            return False
        return folded not in {t.casefold() for t in self.exclude_terms}


@attrs.frozen
class DltDefinition:
    """A checked DLT definition.

    Attributes
    ----------
    rules : tuple of DltRule
    categories : dict
        Category name to grading scale (one of :data:`SCALES`).
    attribution : tuple of str
        Attributions that count by default.
    default_window_days : int or None
        Observation window when the protocol's stage declares none.
    template : bool
        True when the definition is a template a sponsor must adapt.
    status, clause : str
        A note on where the definition comes from, and the protocol clause.
    """

    __repr__ = value_repr

    rules: tuple[DltRule, ...]
    categories: Mapping[str, str]
    attribution: tuple[str, ...]
    default_window_days: int | None = None
    template: bool = False
    status: str = ""
    clause: str = ""

    def scale(self, category: str) -> str:
        """The grading scale of a category."""
        return self.categories[category]


_TOP_KEYS = ("template", "status", "clause", "attribution", "default_window_days", "categories", "rules")
_RULE_KEYS = ("id", "categories", "grade", "improves_to", "within_hours", "by_day", "terms", "exclude_terms",
              "attribution", "paraphrase")


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{self.source}: {path}: {message}")

    def strings(self, raw: Mapping[str, Any], key: str, path: str, allowed: Sequence[str] | None = None,
                required: bool = False) -> tuple[str, ...] | None:
        if key not in raw:
            if required:
                self.add(f"{path}.{key}", "missing")
            return None
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(f"{path}.{key}", f"expected a list of strings (got {value!r})")
            return None
        for i, v in enumerate(value):
            if allowed is not None and v not in allowed:
                self.add(f"{path}.{key}[{i}]", f"expected one of {', '.join(allowed)} (got {v!r})")
        return tuple(value)

    def integer(self, raw: Mapping[str, Any], key: str, path: str, low: int, high: int | None = None,
                required: bool = False) -> int | None:
        if key not in raw:
            if required:
                self.add(f"{path}.{key}", "missing")
            return None
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            self.add(f"{path}.{key}", f"expected an integer {span} (got {value!r})")
            return None
        return value

    def text(self, raw: Mapping[str, Any], key: str, path: str, required: bool = False) -> str | None:
        if key not in raw:
            if required:
                self.add(f"{path}.{key}", "missing")
            return None
        value = raw[key]
        if not isinstance(value, str) or not value:
            self.add(f"{path}.{key}", f"expected a non-empty string (got {value!r})")
            return None
        return value

    def unknown(self, raw: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.add(f"{path}.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def parse_dlt(raw: Any, source: str = "dlt") -> DltDefinition:
    """Check a raw ``dlt`` table and build a :class:`DltDefinition`.

    Raises
    ------
    ProtocolError
        One line per problem, each naming ``source`` and the key path.

    Examples
    --------
    >>> parse_dlt({"categories": {"crs": "astct-crs"},  # doctest: +ELLIPSIS
    ...            "rules": [{"id": "r", "categories": ["crs"], "grade": 3, "within_hours": 72,
    ...                       "paraphrase": "grade 3 CRS"}]}, "x.toml")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.ProtocolError: x.toml: dlt.rules[0].within_hours: needs improves_to (the grade the ...)
    """
    p = _Problems(source)
    if not isinstance(raw, Mapping):
        raise ProtocolError([f"{source}: dlt: expected a table (got {raw!r})"])
    p.unknown(raw, "dlt", _TOP_KEYS)
    template = raw.get("template", False)
    if not isinstance(template, bool):
        p.add("dlt.template", f"expected a boolean (got {template!r})")
    status = p.text(raw, "status", "dlt") or ""
    clause = p.text(raw, "clause", "dlt") or ""
    attribution = p.strings(raw, "attribution", "dlt", ATTRIBUTIONS) or ("possible", "probable", "definite")
    window = p.integer(raw, "default_window_days", "dlt", 1)
    categories: dict[str, str] = {}
    raw_categories = raw.get("categories")
    if not isinstance(raw_categories, Mapping) or not raw_categories:
        p.add("dlt.categories", f"expected a table of category = grading scale (got {raw_categories!r})")
    else:
        for name, scale in raw_categories.items():
            if scale not in SCALES:
                p.add(f"dlt.categories.{name}", f"expected one of {', '.join(SCALES)} (got {scale!r})")
            else:
                categories[name] = scale
    rules: list[DltRule] = []
    raw_rules = raw.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        p.add("dlt.rules", f"expected a list of rule tables (got {raw_rules!r})")
        raw_rules = []
    seen: set[str] = set()
    for i, rr in enumerate(raw_rules):
        path = f"dlt.rules[{i}]"
        if not isinstance(rr, Mapping):
            p.add(path, f"expected a table (got {rr!r})")
            continue
        p.unknown(rr, path, _RULE_KEYS)
        rid = p.text(rr, "id", path, required=True)
        if rid is not None and rid in seen:
            p.add(f"{path}.id", f"duplicate rule id {rid!r}")
        seen.add(rid or "")
        cats = p.strings(rr, "categories", path, required=True)
        for j, cat in enumerate(cats or ()):
            if cat != "*" and categories and cat not in categories:
                p.add(f"{path}.categories[{j}]", f"unknown category {cat!r} (declared: {', '.join(categories)}, or *)")
        grade = p.integer(rr, "grade", path, 1, 5, required=True)
        improves = p.integer(rr, "improves_to", path, 0, 4)
        hours = p.integer(rr, "within_hours", path, 1)
        by_day = p.integer(rr, "by_day", path, 1)
        if hours is not None and by_day is not None:
            p.add(f"{path}.by_day", "give within_hours or by_day, not both")
        if (hours is not None or by_day is not None) and improves is None and "improves_to" not in rr:
            key = "within_hours" if hours is not None else "by_day"
            p.add(f"{path}.{key}", "needs improves_to (the grade the episode must come down to)")
        if improves is not None and hours is None and by_day is None and "within_hours" not in rr \
                and "by_day" not in rr:
            p.add(f"{path}.improves_to", "needs within_hours or by_day (when the grade must have come down)")
        if improves is not None and grade is not None and improves >= grade:
            p.add(f"{path}.improves_to", f"expected a grade below the threshold {grade} (got {improves})")
        terms = p.strings(rr, "terms", path) or ()
        exclude = p.strings(rr, "exclude_terms", path) or ()
        rule_attr = p.strings(rr, "attribution", path, ATTRIBUTIONS)
        paraphrase = p.text(rr, "paraphrase", path, required=True) or ""
        if rid is not None and cats is not None and grade is not None:
            rules.append(DltRule(rid, cats, grade, improves, hours, by_day, terms, exclude, rule_attr, paraphrase))
    if p.lines:
        raise ProtocolError(p.lines)
    return DltDefinition(tuple(rules), categories, attribution, window, bool(template), status, clause)


def dlt_definition(protocol: Protocol) -> DltDefinition:
    """Parse the DLT definition a protocol carries (``Protocol.extra["dlt"]``).

    Raises
    ------
    ProtocolError
        If the protocol has none, or it is malformed (key-path errors).
    """
    source = protocol.key_source("dlt") if hasattr(protocol, "key_source") else protocol.source
    if "dlt" not in protocol.extra:
        raise ProtocolError([f"{protocol.source}: dlt: missing; a trial record needs a DLT definition "
                             f"(see spec/nct07117175/dlt.toml for a template)"])
    return parse_dlt(protocol.extra["dlt"], source)


# ---------------------------------------------------------------- ASTCT grading


def _lookup(table: Mapping[str, int], components: Mapping[str, Any], key: str, what: str) -> int:
    value = components.get(key, "none")
    if value not in table:
        raise ProtocolError([f"components.{key}: expected one of {', '.join(table)} for {what} (got {value!r})"])
    return table[value]


def crs_grade(components: Mapping[str, Any]) -> int:
    """ASTCT consensus grade of cytokine release syndrome from its components.

    ``fever`` (bool: temperature of 38 °C or more, or fever masked by
    antipyretic or anti-cytokine treatment), ``hypotension`` (none,
    no-vasopressors, one-vasopressor, multiple-vasopressors) and ``hypoxia``
    (none, low-flow, high-flow, positive-pressure).  Without fever there is
    no CRS (grade 0); with it, the grade is that of the worse of hypotension
    and hypoxia, and 1 when neither is present.

    Examples
    --------
    >>> crs_grade({"fever": True}), crs_grade({"fever": False, "hypoxia": "high-flow"})
    (1, 0)
    >>> crs_grade({"fever": True, "hypotension": "multiple-vasopressors"})
    4
    """
    unknown = set(components) - {"fever", "hypotension", "hypoxia"}
    if unknown:
        raise ProtocolError([f"components.{sorted(unknown)[0]}: unknown CRS component "
                             f"(expected fever, hypotension, hypoxia)"])
    fever = components.get("fever")
    if not isinstance(fever, bool):
        raise ProtocolError([f"components.fever: expected true or false (got {fever!r})"])
    hypotension = _lookup(_CRS_HYPOTENSION, components, "hypotension", "CRS")
    hypoxia = _lookup(_CRS_HYPOXIA, components, "hypoxia", "CRS")
    if not fever:
        return 0
    return max(1, hypotension, hypoxia)


def icans_grade(components: Mapping[str, Any]) -> int:
    """ASTCT consensus grade of ICANS from its components (the worst one decides).

    ``ice`` (ICE score 0-10; 7-9 grade 1, 3-6 grade 2, 0-2 grade 3; leave it
    out when the patient cannot be assessed), ``consciousness`` (normal,
    spontaneous, voice, touch, unarousable), ``seizure`` (none, rapid,
    prolonged), ``motor`` (none, deep-weakness), ``edema`` (none, focal,
    diffuse).

    Examples
    --------
    >>> icans_grade({"ice": 8}), icans_grade({"ice": 5, "consciousness": "touch"})
    (1, 3)
    >>> icans_grade({"consciousness": "unarousable"})
    4
    """
    unknown = set(components) - {"ice", "consciousness", "seizure", "motor", "edema"}
    if unknown:
        raise ProtocolError([f"components.{sorted(unknown)[0]}: unknown ICANS component "
                             f"(expected ice, consciousness, seizure, motor, edema)"])
    grades = [0]
    ice = components.get("ice")
    if ice is not None:
        if not isinstance(ice, int) or isinstance(ice, bool) or not 0 <= ice <= 10:
            raise ProtocolError([f"components.ice: expected an ICE score from 0 to 10 (got {ice!r})"])
        grades.append(0 if ice == 10 else 1 if ice >= 7 else 2 if ice >= 3 else 3)
    grades.append(_lookup(_ICANS_CONSCIOUSNESS, {"consciousness": components.get("consciousness", "normal")},
                          "consciousness", "ICANS"))
    grades.append(_lookup(_ICANS_SEIZURE, components, "seizure", "ICANS"))
    grades.append(_lookup(_ICANS_MOTOR, components, "motor", "ICANS"))
    grades.append(_lookup(_ICANS_EDEMA, components, "edema", "ICANS"))
    return max(grades)


def grade_from_components(scale: str, components: Mapping[str, Any]) -> int:
    """Grade components on an ASTCT scale (``"astct-crs"`` or ``"astct-icans"``)."""
    if scale == "astct-crs":
        return crs_grade(components)
    if scale == "astct-icans":
        return icans_grade(components)
    raise ProtocolError([f"components: the {scale} scale takes a grade, not components"])


# ---------------------------------------------------------------- evaluation


@attrs.frozen
class GradePoint:
    """The grade of an episode from a moment on (grade 0: resolved)."""

    __repr__ = value_repr

    at: datetime
    grade: int


@attrs.frozen
class Episode:
    """An adverse-event episode: its grade over time and its attribution.

    ``points`` are in time order; the first is the onset.
    """

    __repr__ = value_repr

    patient: str
    ae: str
    term: str
    category: str
    points: tuple[GradePoint, ...]
    attribution: str | None = None

    @property
    def onset(self) -> datetime:
        """When the episode began."""
        return self.points[0].at

    @property
    def worst(self) -> int:
        """The highest grade recorded."""
        return max(p.grade for p in self.points)

    def grade_at(self, moment: datetime) -> int:
        """The grade in force at ``moment`` (0 before the onset)."""
        grade = 0
        for point in self.points:
            if point.at > moment:
                break
            grade = point.grade
        return grade


@attrs.frozen
class EpisodeVerdict:
    """Whether an episode is a DLT: ``"dlt"``, ``"no-dlt"`` or ``"pending"``.

    ``until`` is when a pending outcome becomes known (``None``: only when
    more is recorded, e.g. an attribution); ``rule`` is the rule that decided
    (or keeps it pending); ``at`` when a DLT became one.
    """

    __repr__ = value_repr

    outcome: str
    rule: str | None = None
    until: datetime | None = None
    at: datetime | None = None
    reason: str = ""


def _crossings(episode: Episode, grade: int) -> list[datetime]:
    """Moments the episode's grade rises to ``grade`` or above."""
    result = []
    before = 0
    for point in episode.points:
        if point.grade >= grade > before:
            result.append(point.at)
        before = point.grade
    return result


def _rule_verdict(rule: DltRule, definition: DltDefinition, episode: Episode, infusion: datetime,
                  close: datetime, as_of: datetime) -> EpisodeVerdict:
    points = tuple(p for p in episode.points if p.at <= as_of)
    seen = attrs.evolve(episode, points=points) if points else None
    if seen is None:
        return EpisodeVerdict("no-dlt")
    counts = rule.attribution if rule.attribution is not None else definition.attribution
    if episode.attribution is not None and episode.attribution not in counts:
        return EpisodeVerdict("no-dlt", rule.id, reason=f"attributed {episode.attribution!r}")
    for t0 in _crossings(seen, rule.grade):
        if t0 >= close:
            break
        if rule.within_hours is not None:
            deadline = t0 + timedelta(hours=rule.within_hours)
            assert rule.improves_to is not None
            improved = next((p.at for p in seen.points if t0 < p.at <= deadline and p.grade <= rule.improves_to),
                            None)
            if improved is not None:
                continue
            if as_of < deadline:
                return EpisodeVerdict("pending", rule.id, deadline,
                                      reason=f"grade {rule.grade}+ since {t0:%Y-%m-%d %H:%M}; known by "
                                             f"{deadline:%Y-%m-%d %H:%M} ({rule.paraphrase})")
            happened = deadline
        elif rule.by_day is not None:
            deadline = infusion + timedelta(days=rule.by_day)
            assert rule.improves_to is not None
            if as_of < deadline:
                return EpisodeVerdict("pending", rule.id, deadline,
                                      reason=f"grade {rule.grade}+ since {t0:%Y-%m-%d}; known on day {rule.by_day} "
                                             f"({deadline:%Y-%m-%d}) ({rule.paraphrase})")
            if seen.grade_at(deadline) <= rule.improves_to:
                return EpisodeVerdict("no-dlt", rule.id)
            happened = deadline
        else:
            happened = t0
        if episode.attribution is None:
            return EpisodeVerdict("pending", rule.id, None,
                                  reason=f"meets rule {rule.id!r} but has no attribution yet")
        return EpisodeVerdict("dlt", rule.id, at=happened, reason=rule.paraphrase)
    return EpisodeVerdict("no-dlt")


def evaluate_episode(definition: DltDefinition, episode: Episode, *, infusion: datetime, close: datetime,
                     as_of: datetime) -> EpisodeVerdict:
    """Whether an episode is a DLT as of ``as_of``, for a patient infused at ``infusion``.

    Only thresholds reached before ``close`` (the end of the observation
    window) count.  The first rule that makes the episode a DLT wins; else
    the episode is pending if any rule is still waiting (for a duration or an
    attribution), else it is no DLT.
    """
    pending: list[EpisodeVerdict] = []
    for rule in definition.rules:
        if not rule.applies_to(episode.category, episode.term):
            continue
        verdict = _rule_verdict(rule, definition, episode, infusion, close, as_of)
        if verdict.outcome == "dlt":
            return verdict
        if verdict.outcome == "pending":
            pending.append(verdict)
    if pending:
        dated = [v.until for v in pending if v.until is not None]
        undated = [v for v in pending if v.until is None]
        first = undated[0] if undated else max(pending, key=lambda v: v.until or as_of)
        return attrs.evolve(first, until=None if undated else max(dated))
    return EpisodeVerdict("no-dlt")
