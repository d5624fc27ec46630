"""Shared fixtures: the repository root, the test fixture files and the shipped protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from escalation_rules import Protocol, load_protocol

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NCT = ROOT / "spec" / "nct07117175"


@pytest.fixture(scope="session")
def nct() -> Protocol:
    """The shipped NCT07117175 protocol, loaded once."""
    return load_protocol(NCT)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with the repository root as working directory (relative spec paths)."""
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[..., Path]:
    """Write TOML text to a file under a temporary folder and return its path."""

    def write(text: str, name: str = "protocol.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write
