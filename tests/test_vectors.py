"""Conformance vectors: every file in spec/vectors/ checked against its schema and replayed.

Each vector file names a design (a built-in design or a protocol path) and
lists histories with the decision the protocol prescribes after them, or the
refusal it calls for.  One test is generated per vector, with the id
``<file>::<description>``; vectors the engine is known to get wrong carry an
``xfail`` reason and are run as strict expected failures.  A coverage test
fails when a rule, or an option of a decision rule, of a shipped design has
no vector pinning it.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from escalation_rules import DESIGNS, Protocol, builtin_design, compile_protocol, decide, load_protocol
from escalation_rules.errors import HistoryError
from escalation_rules.history import parse_history_json

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "spec" / "vectors"
SCHEMA = VECTORS / "schema.json"


def _vector_files() -> list[Path]:
    return sorted(p for p in VECTORS.glob("*.json") if p.name != "schema.json")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _cases() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for path in _vector_files():
        data = _load(path)
        for test in data.get("tests", []):
            yield f"{path.name}::{test.get('description', '?')}", data, test


def _protocol(design: str, doses: int | None, params: dict[str, Any] | None = None) -> Protocol:
    if design in DESIGNS:
        return builtin_design(design, 5 if doses is None else doses, **(params or {}))
    return load_protocol(ROOT / design)


_PROTOCOLS: dict[tuple[str, int | None, str], Protocol] = {}


def _cached_protocol(design: str, doses: int | None, params: dict[str, Any] | None = None) -> Protocol:
    key = (design, doses, json.dumps(params or {}, sort_keys=True))
    if key not in _PROTOCOLS:
        _PROTOCOLS[key] = _protocol(design, doses, params)
    return _PROTOCOLS[key]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Generate one test per vector, with readable ids and strict xfail marks."""
    if "vector" in metafunc.fixturenames:
        params = []
        for case_id, data, test in _cases():
            marks = [pytest.mark.xfail(strict=True, reason=test["xfail"])] if "xfail" in test else []
            params.append(pytest.param((data, test), id=case_id, marks=marks))
        metafunc.parametrize("vector", params)
    if "vector_file" in metafunc.fixturenames:
        files = _vector_files()
        metafunc.parametrize("vector_file", files, ids=[p.name for p in files])


def test_schema_is_valid_draft_2020_12() -> None:
    """The vector schema is itself a valid JSON Schema (draft 2020-12)."""
    jsonschema.Draft202012Validator.check_schema(_load(SCHEMA))


def test_vector_files_exist() -> None:
    """Every shipped design has a vector file, and refusals have their own file."""
    names = {p.name for p in _vector_files()}
    for expected in ("nct07117175.json", "3+3-escalate-only.json", "3+3-deescalate.json", "3+3-six-at-top.json",
                     "accelerated-titration.json", "refused-histories.json"):
        assert expected in names


def test_vector_file_matches_schema(vector_file: Path) -> None:
    """Each vector file validates against spec/vectors/schema.json."""
    validator = jsonschema.Draft202012Validator(_load(SCHEMA))
    errors = sorted(validator.iter_errors(_load(vector_file)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{vector_file.name}: {list(e.absolute_path)}: {e.message}" for e in errors)


def test_vector_descriptions_are_unique(vector_file: Path) -> None:
    """Descriptions within a file are unique, so every generated test id names one vector."""
    descriptions = [t["description"] for t in _load(vector_file)["tests"]]
    duplicates = {d for d in descriptions if descriptions.count(d) > 1}
    assert not duplicates


def _history(raw: Any) -> Any:
    return raw if isinstance(raw, str) else parse_history_json(raw, "vector")


def test_vector(vector: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The engine gives the decision (or the refusal) the vector prescribes."""
    data, test = vector
    protocol = _cached_protocol(data["design"], data.get("doses"), data.get("params"))
    if "error" in test:
        with pytest.raises(HistoryError) as caught:
            decide(protocol, _history(test["history"]))
        assert caught.value.cohort == test["error"]["cohort"], str(caught.value)
        assert test["error"]["contains"] in str(caught.value)
        assert "\n" not in str(caught.value)
        return
    decision = decide(protocol, _history(test["history"]))
    got = decision.to_dict()
    got["options"] = [o["id"] for o in got["options"]]
    pinned = {key: got[key] for key in test["expected"]}
    assert pinned == test["expected"], f"{decision.reason} (history {decision.history!r})"


# ---------------------------------------------------------------- coverage


def _shipped_designs() -> dict[str, int | None]:
    """Every shipped design: the built-in ones, and each protocol under spec/ (a file or folder with [protocol])."""
    designs: dict[str, int | None] = dict.fromkeys(DESIGNS)
    for path in sorted((ROOT / "spec").iterdir()):
        files = sorted(path.glob("*.toml")) if path.is_dir() else [path] if path.suffix == ".toml" else []
        if any("protocol" in tomllib.loads(f.read_text(encoding="utf-8")) for f in files):
            designs[path.relative_to(ROOT).as_posix()] = None
    return designs


def _required_labels(protocol: Protocol) -> set[str]:
    """Rule ids, and ``rule/option`` for every option of a decision rule."""
    labels = set()
    for stage in protocol.stages:
        for rule in stage.rules:
            labels.add(rule.id)
            labels.update(f"{rule.id}/{option.id}" for option in rule.options)
    return labels


def _never_fire(protocol: Protocol) -> set[str]:
    warnings = compile_protocol(protocol).warnings
    exempt = set()
    for stage in protocol.stages:
        for rule in stage.rules:
            if any(f"rule {rule.id!r} " in w and "never fires" in w for w in warnings):
                exempt.add(rule.id)
                exempt.update(f"{rule.id}/{option.id}" for option in rule.options)
    return exempt


def _missing(design: str, cases: list[tuple[dict[str, Any], dict[str, Any]]]) -> set[str]:
    """Rule and option labels of ``design`` that no vector in ``cases`` pins (never-firing rules exempt)."""
    files = [(data, test) for data, test in cases if data["design"] == design]
    pinned = {test["expected"]["rule"] for _, test in files if "expected" in test and "rule" in test["expected"]}
    missing: set[str] | None = None
    for count in {data.get("doses") for data, _ in files} or {None}:
        protocol = _cached_protocol(design, count)
        lacking = _required_labels(protocol) - _never_fire(protocol) - pinned
        missing = lacking if missing is None else missing & lacking
    return missing or set()


@pytest.mark.parametrize("design", sorted(_shipped_designs()))
def test_every_rule_and_option_has_a_vector(design: str) -> None:
    """Every rule and option of a shipped design is pinned by a vector (rules that never fire are exempt)."""
    cases = [(data, test) for _, data, test in _cases()]
    assert any(data["design"] == design for data, _ in cases), f"no vector file for design {design!r}"
    missing = _missing(design, cases)
    assert not missing, f"{design}: no vector pins {', '.join(sorted(missing))}"


def test_coverage_check_detects_a_missing_option() -> None:
    """Dropping the vectors that pin an option makes the coverage check name it."""
    cases = [(data, test) for _, data, test in _cases()
             if test.get("expected", {}).get("rule") != "top-pass/fill"]
    assert _missing("spec/nct07117175", cases) == {"top-pass/fill"}
    one_dose = [({"design": "3+3-escalate-only", "doses": 1}, {})]
    assert "esc-zero-of-three" not in _missing("3+3-escalate-only", one_dose)  # never fires with one dose: exempt
    assert "at-pass" in _missing("accelerated-titration", [])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(doses=3), "doses with a protocol path"),
        (lambda d: d["tests"][0].pop("clause"), "a vector without its clause"),
        (lambda d: d["tests"][0].update(error={"cohort": 1, "contains": "x"}), "both expected and error"),
        (lambda d: d["tests"][0].pop("expected"), "neither expected nor error"),
        (lambda d: d["tests"][0]["expected"].update(action="wait"), "an unknown action"),
        (lambda d: d["tests"][0]["expected"].update(colour="red"), "an unknown expected field"),
        (lambda d: d["tests"][0].update(history=[{"dose": 1}]), "a cohort entry without outcomes"),
        (lambda d: d.update(tests=[]), "no vectors"),
    ],
)
def test_schema_refuses_malformed_vectors(change: Any, where: str) -> None:
    """The schema refuses malformed vector files (here: one change to a valid file each)."""
    data = _load(VECTORS / "nct07117175.json")
    validator = jsonschema.Draft202012Validator(_load(SCHEMA))
    assert validator.is_valid(data)
    change(data)
    assert not validator.is_valid(data), where
