"""The trial documentation runs: docs/trial.md doctests and the worked example script."""

from __future__ import annotations

import doctest
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The console script beside this Python first (the README runs .venv/bin/python -m pytest without activating).
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def test_docs_trial_examples_run() -> None:
    """Every Python example in docs/trial.md runs and prints what the page says."""
    failed, attempted = doctest.testfile(str(ROOT / "docs/trial.md"), module_relative=False,
                                         optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("escalation-rules", path=PATH) is None, reason="the console script is not installed")
def test_worked_example_runs_a_whole_trial_to_the_mtd() -> None:
    """examples/nct07117175_trial.sh runs from screening to the MTD, refusals included, and verify passes."""
    result = subprocess.run(["bash", str(ROOT / "examples/nct07117175_trial.sh")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PATH": PATH})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "MTD: dose 3 (5×10^7 CAR-NK cells/kg)" in result.stdout
    assert "ok: 85 events, hash chain intact, signature valid" in result.stdout
    assert "created " in result.stdout and "/replay.db; imported 85 events" in result.stdout
    assert "replayed status identical" in result.stdout
