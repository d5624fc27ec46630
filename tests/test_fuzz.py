"""Fuzz suite: hostile protocols, histories (text and JSON), patient records and trial events (issue 13).

Every example goes through the command line in-process (``cli.main`` with captured output) or the Python API,
and the invariant is the same everywhere: the answer is a verdict or a refusal (exit 0, 1 or 2; ``screen`` also
3 and 4), never the bug status 70, never a traceback.  Time is bounded by the documented limits rather than
by a timed assertion: a quadratic or unbounded path shows up as a run that does not finish.

The short form runs by default.  The long form (more examples each) is marked ``slow`` and runs where ``CI`` is
set (as .ci/run does) or with ``FUZZ_LONG=1``.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import escalation_rules as er
from conftest import NCT, ROOT
from escalation_rules.cli import main
from escalation_rules.errors import EscalationRulesError
from escalation_rules.protocol import protocol_from_mapping
from test_protocol import MINIMAL

SHORT = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
LONG_RUN = pytest.mark.skipif(not (os.environ.get("CI") or os.environ.get("FUZZ_LONG")),
                              reason="the long fuzz runs in CI (CI set) or with FUZZ_LONG=1")

SPEC = "3+3-deescalate"
VERDICTS = {0, 1, 2}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], allowed: set[int] = VERDICTS) -> int:
    status = main(argv)
    captured = capsys.readouterr()
    assert status in allowed, (argv[:3], status, captured.err[-500:])
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if status == 2:
        assert captured.err.strip(), "a refusal says why"
    return status


# ------------------------------------------------------------------ strategies

#: JSON values of every shape, with absurd numbers and strings among them.
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
              st.text(max_size=30), st.sampled_from([10**20, "1" * 400, " " * 3000, "NNN", "1NNN", "d1", "P01"])),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=15,
)

#: Outcome strings: mostly the notation's own characters, so that parsing gets deep.
HISTORY_TEXT = st.one_of(
    st.text(alphabet="0123456789NTnt []x\t\n", max_size=60),
    st.text(max_size=40),
    st.lists(st.tuples(st.integers(0, 12), st.text(alphabet="NT", min_size=1, max_size=7)), max_size=8).map(
        lambda cohorts: " ".join(f"{d}{o}" for d, o in cohorts)),
)


def _key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    paths = []
    for key, value in items:
        paths.append((*prefix, key))
        paths += _key_paths(value, (*prefix, key))
    return paths


BASE = tomllib.loads(MINIMAL)
PATHS = _key_paths(BASE)


@st.composite
def protocol_mappings(draw: st.DrawFn) -> dict[str, Any]:
    """The small protocol with up to three keys replaced by arbitrary JSON, deleted, or added."""
    return _mutated(draw, BASE, PATHS, ["replace", "delete", "add"])


def _mutated(draw: st.DrawFn, base: Any, paths: list[tuple[Any, ...]], actions: list[str]) -> Any:
    """A copy of ``base`` with one to three places (key paths) replaced by arbitrary JSON, deleted or added to."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        node: Any = data
        try:
            for key in path[:-1]:
                node = node[key]
            action = draw(st.sampled_from(actions))
            if action == "replace":
                node[path[-1]] = draw(JSON)
            elif action == "delete" and isinstance(node, dict):
                del node[path[-1]]
            elif isinstance(node, dict):
                node[draw(st.text(max_size=8))] = draw(JSON)
        except (KeyError, IndexError, TypeError):  # an earlier change removed the place
            continue
    return data


def _toml_text(data: Any) -> str:
    """Write the TOML subset the mapping holds (no nulls: they become strings, as a careless editor would)."""
    def value(v: Any) -> str:
        if v is None:
            return '"null"'
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if isinstance(v, float) else str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + "}"

    return "\n".join(f"{json.dumps(str(k))} = {value(v)}" for k, v in data.items()) + "\n"


# ------------------------------------------------------------------ the checks


def _protocol_case(data: dict[str, Any], tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    protocol: er.Protocol | None
    try:
        protocol = protocol_from_mapping(data, "fuzz.toml")
    except EscalationRulesError:
        protocol = None
    if protocol is not None:
        try:
            er.verify(protocol)
            er.decide(protocol, "")
        except EscalationRulesError:
            pass
    path = tmp / "fuzz.toml"
    try:
        path.write_text(_toml_text(data), encoding="utf-8")
    except (UnicodeEncodeError, ValueError):  # lone surrogates cannot be written as UTF-8
        return
    for command in ("verify", "show", "next"):
        _run([command, str(path)], capsys)


def _history_case(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    _run(["next", SPEC, "--doses", "3", text], capsys, {0, 2})
    _run(["paths", SPEC, "--doses", "3", "--depth", "2", text], capsys, {0, 2})


def _history_json_case(data: Any, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp / "history.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    _run(["next", SPEC, "--doses", "3", "--history-json", str(path)], capsys, {0, 2})
    try:
        er.decide(er.builtin_design(SPEC, 3), data)
    except (EscalationRulesError, TypeError) as err:
        assert not isinstance(err, TypeError) or str(err).startswith("history"), str(err)


RECORD = json.loads((ROOT / "spec" / "patients" / "eligible.json").read_text(encoding="utf-8"))
RECORD_PATHS = _key_paths(RECORD)


@st.composite
def records(draw: st.DrawFn) -> Any:
    """A real record with up to three values replaced by arbitrary JSON (or arbitrary JSON outright)."""
    if draw(st.booleans()):
        return draw(JSON)
    return _mutated(draw, RECORD, RECORD_PATHS, ["replace"])


def _record_case(data: Any, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp / "record.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    _run(["screen", str(NCT), str(path)], capsys, {0, 2, 3, 4})
    batch = tmp / "batch.jsonl"
    batch.write_text(json.dumps(RECORD) + "\n" + json.dumps(data) + "\n", encoding="utf-8")
    _run(["screen", str(NCT), "--batch", str(batch)], capsys, {0, 2})


EVENTS = [json.loads(path.read_text(encoding="utf-8"))
          for path in sorted((ROOT / "spec" / "trial" / "examples").glob("*.json"))]


@st.composite
def event_lists(draw: st.DrawFn) -> list[Any]:
    """Example events with values replaced by arbitrary JSON, or arbitrary JSON in their place."""
    events = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 4)) == 0:
            events.append(draw(JSON))
            continue
        event = copy.deepcopy(draw(st.sampled_from(EVENTS)))
        if draw(st.booleans()):
            key = draw(st.sampled_from(sorted(event)))
            event[key] = draw(JSON)
        events.append(event)
    return events


def _events_case(events: list[Any], nct: er.Protocol) -> None:
    try:
        er.trial_status(nct, events)
    except EscalationRulesError:
        pass
    except TypeError as err:
        assert str(err).startswith("events"), str(err)


# ------------------------------------------------------------------ short form (default run)


@SHORT
@given(data=protocol_mappings())
def test_fuzzed_protocols_are_verified_or_refused(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol with arbitrary values at arbitrary keys is verified or refused: exit 0, 1 or 2, no traceback."""
    _protocol_case(data, tmp_path_factory.mktemp("p"), capsys)


@SHORT
@given(text=HISTORY_TEXT)
def test_fuzzed_history_text_is_decided_or_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """next and paths on an arbitrary outcome string exit 0 or 2, never a traceback."""
    _history_case(text, capsys)


@SHORT
@given(data=JSON)
def test_fuzzed_history_json_is_decided_or_refused(data: Any, tmp_path_factory: pytest.TempPathFactory,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """next --history-json and decide() on arbitrary JSON answer or refuse with our error."""
    _history_json_case(data, tmp_path_factory.mktemp("h"), capsys)


@SHORT
@given(data=records())
def test_fuzzed_patient_records_are_screened_or_refused(data: Any, tmp_path_factory: pytest.TempPathFactory,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """screen (single and batch) on an arbitrary record answers 0, 2, 3 or 4, never a traceback."""
    _record_case(data, tmp_path_factory.mktemp("r"), capsys)


@SHORT
@given(events=event_lists())
def test_fuzzed_trial_events_are_applied_or_refused(events: list[Any], nct: er.Protocol) -> None:
    """trial_status on arbitrary events answers or refuses with our error (or a TypeError naming events)."""
    _events_case(events, nct)


# ------------------------------------------------------------------ long form (CI)


@pytest.mark.slow
@LONG_RUN
@LONG
@given(data=protocol_mappings(), text=HISTORY_TEXT, history=JSON, record=records(), events=event_lists())
def test_long_fuzz_every_input_is_answered_or_refused(data: dict[str, Any], text: str, history: Any, record: Any,
                                                      events: list[Any], nct: er.Protocol,
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The five fuzzers above, with many more examples: every answer is a verdict or a refusal."""
    tmp = tmp_path_factory.mktemp("long")
    _protocol_case(data, tmp, capsys)
    _history_case(text, capsys)
    _history_json_case(history, tmp, capsys)
    _record_case(record, tmp, capsys)
    _events_case(events, nct)
