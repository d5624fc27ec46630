"""The protocol loader refuses every wrong shape and every value past a documented limit with one line per problem.

Each line names the file and the key path; no TypeError, ValueError or MemoryError comes out of the loader,
whatever type a key holds (issue 13).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import NCT
from escalation_rules import compile_protocol, verify
from escalation_rules._limits import MAX_CAP, MAX_COHORT, MAX_DOSES, MAX_FILE_BYTES, MAX_GUARD_CHARS, MAX_STATES
from escalation_rules.errors import CompileError, EscalationRulesError, ProtocolError
from escalation_rules.protocol import load_protocol, protocol_from_mapping, read_protocol_data
from test_protocol import MINIMAL

#: Values of every type a TOML (or JSON) document can hold, plus absurd sizes.
WRONG_VALUES: list[Any] = [5, "x", [1], {"a": 1}, True, 1.5, [[1]], [{"a": 1}], -1, 10**5000, "1" * 5000, "",
                           10**18, [10**5000], {"id": [1]}]


def _refusal(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ProtocolError) as caught:
        protocol_from_mapping(data, "p.toml")
    return caught.value.problems


def _minimal() -> dict[str, Any]:
    return tomllib.loads(MINIMAL)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["stages"][0].pop("id"), "p.toml: stages[0].id: missing"),
    (lambda d: d["stages"][0].update(doses={"d1": 1}), "p.toml: stages[0].doses: expected a list (got {'d1': 1})"),
    (lambda d: d["stages"][0].update(rules=5), "p.toml: stages[0].rules: expected a list (got 5)"),
    (lambda d: d["stages"][0]["rules"][0].update(id=["go"]),
     "p.toml: stages[0].rules[0].id: expected a string (got ['go'])"),
    (lambda d: d["stages"][0].update(doses=[["d1"]]), "p.toml: stages[0].doses[0]: expected a dose id (got ['d1'])"),
    (lambda d: d["stages"][0]["rules"][0].update(when="n == " + "1" * 5000),
     "p.toml: stages[0].rules[0].when: expression too long: expected at most 2000 characters (got 5005)"),
    (lambda d: d["stages"][0]["rules"][0].update(when="n == " + "1" * 100),
     "p.toml: stages[0].rules[0].when: number too large at column 6 (at most 15 digits, got 100)"),
    (lambda d: d["stages"][0]["rules"][0].update(cohort="1" * 5000),
     "p.toml: stages[0].rules[0].cohort: expression too long"),
    (lambda d: d["stages"][0]["rules"][0].update(cohort=10**5000),
     "p.toml: stages[0].rules[0].cohort: expected at most 100, the documented limit (got an integer of 5001 digits)"),
    (lambda d: d["protocol"].update(cap=10**9),
     f"p.toml: protocol.cap: expected at most {MAX_CAP}, the documented limit (got 1000000000)"),
    (lambda d: d["protocol"].update(cap=10**18),
     f"p.toml: protocol.cap: expected at most {MAX_CAP}, the documented limit (got 1000000000000000000)"),
    (lambda d: d["stages"][0].update(cohort=MAX_COHORT + 1),
     f"p.toml: stages[0].cohort: expected at most {MAX_COHORT}, the documented limit (got {MAX_COHORT + 1})"),
    (lambda d: d.update(doses=[{"id": f"d{i}"} for i in range(MAX_DOSES + 1)]),
     f"p.toml: doses: expected at most {MAX_DOSES} doses (got {MAX_DOSES + 1})"),
    (lambda d: d["doses"][0].update(amount=10**5000), "p.toml: doses[0].amount: expected a positive amount"),
])
def test_issue_examples_are_refused_naming_the_key_path(change: Any, expected: str) -> None:
    """Each wrong shape or absurd size from the issue is one line naming the file and key path."""
    data = _minimal()
    change(data)
    problems = _refusal(data)
    assert any(line.startswith(expected) for line in problems), problems


def _key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _key_paths(value, (*prefix, key))


def _replaced(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(data)
    node = copied
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copied


def _load_or_refuse(data: dict[str, Any]) -> None:
    try:
        compile_protocol(protocol_from_mapping(data, "p.toml"))
    except EscalationRulesError as err:
        assert str(err) and all(line.startswith("p.toml") for line in str(err).splitlines()), str(err)


@pytest.mark.parametrize("path", list(_key_paths(_minimal())), ids=str)
def test_any_value_at_any_key_path_is_loaded_or_refused_cleanly(path: tuple[Any, ...]) -> None:
    """Every key of a small protocol, given a value of every type, loads or is refused with our own error."""
    for value in WRONG_VALUES:
        _load_or_refuse(_replaced(_minimal(), path, value))


@pytest.mark.slow
def test_any_value_at_any_key_path_of_the_shipped_protocol_is_loaded_or_refused_cleanly() -> None:
    """The same over every key path of NCT07117175 (its own sections besides)."""
    data, _, _ = read_protocol_data(NCT)
    for path in _key_paths(data):
        if path[0] in ("eligibility", "dlt", "scenarios"):
            continue
        for value in WRONG_VALUES:
            try:
                protocol_from_mapping(_replaced(data, path, value), "p.toml")
            except ProtocolError as err:
                assert all(line.startswith("p.toml") for line in err.problems)


def test_a_protocol_file_past_the_size_limit_is_refused(tmp_path: Any) -> None:
    """A file larger than the limit is refused by name before it is parsed."""
    path = tmp_path / "big.toml"
    path.write_text(MINIMAL + "#" * MAX_FILE_BYTES, encoding="utf-8")
    with pytest.raises(ProtocolError, match=f"big.toml: larger than the limit of {MAX_FILE_BYTES} bytes"):
        load_protocol(path)


FILL = """
roles = ["investigator"]
[protocol]
id = "fill"
cap = {cap}
[[doses]]
id = "d1"
[[stages]]
id = "fill"
kind = "fill"
cohort = 1
doses = ["d1"]
[[stages.rules]]
id = "more"
when = "remaining > 0"
action = "treat"
cohort = "1"
clause = "c"
paraphrase = "p"
[[stages.rules]]
id = "done"
when = "remaining == 0"
action = "stop"
mtd = "current"
clause = "c"
paraphrase = "p"
"""


def test_a_fill_stage_of_single_patients_at_the_cap_limit_verifies() -> None:
    """Cohorts of one up to the largest cap accepted verify on merged states (no recursion or overflow error)."""
    protocol = protocol_from_mapping(tomllib.loads(FILL.format(cap=MAX_CAP)), "fill.toml")
    assert verify(protocol).ok


def test_the_full_state_graph_is_refused_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile_protocol (show, verify --full) refuses a graph past MAX_STATES instead of running out of memory.

    The fill protocol at the cap limit has about 500,000 states; the limit is lowered here so that the test
    reaches it at once (the check is the same).
    """
    import escalation_rules.graph

    assert MAX_STATES < MAX_CAP * MAX_CAP // 2
    monkeypatch.setattr(escalation_rules.graph, "MAX_STATES", 2000)
    protocol = protocol_from_mapping(tomllib.loads(FILL.format(cap=MAX_CAP)), "fill.toml")
    with pytest.raises(CompileError, match="passes the limit of 2000 states"):
        compile_protocol(protocol)


def test_guard_length_limit_ignores_surrounding_white_space() -> None:
    """Trailing white space does not count against the guard length limit (and is read in linear time)."""
    data = _minimal()
    data["stages"][0]["rules"][0]["when"] += " " * (MAX_GUARD_CHARS * 50)
    protocol_from_mapping(data, "p.toml")


def test_the_shipped_protocol_at_the_cap_limit_is_verified_or_refused_by_the_state_limit() -> None:
    """NCT07117175 with its cap raised: verified while its merged states stay under the limit, refused past it.

    Its remaining subjects are enrolled three at a time with a decision after each cohort, so its states grow
    with the cube of the cap: cap 50 verifies; cap 1000 passes the merged-state limit and is refused (before
    the limit, cap 1000 ran out of memory).
    """
    data, source, owners = read_protocol_data(NCT)
    data["protocol"]["cap"] = 50
    assert verify(protocol_from_mapping(data, source, owners)).ok
    data["protocol"]["cap"] = MAX_CAP
    with pytest.raises(CompileError, match="classes of states to explore"):
        verify(protocol_from_mapping(data, source, owners))
