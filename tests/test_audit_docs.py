"""docs/audit.md runs as written: every console example, in order, in a folder holding a copy of spec/, prints
what the page says (``...`` standing for text that changes from run to run)."""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "audit.md"
BIN = Path(sys.executable).parent


def console_examples(text: str) -> list[tuple[str, str]]:
    """Each ``$ command`` of the page's console blocks, with the output written under it."""
    examples: list[tuple[str, str]] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], ""))
            elif examples:
                command, output = examples[-1]
                examples[-1] = (command, output + line + "\n")
    return examples


def test_console_examples_are_found() -> None:
    """The reader of the page is not vacuous: it finds the page's commands and their outputs."""
    examples = console_examples(PAGE.read_text(encoding="utf-8"))
    assert len(examples) >= 7
    assert examples[0] == ("escalation-rules docs spec/nct07117175 --out site",
                           "audit site written: .../site/index.html\n")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (apt-get install graphviz)")
@pytest.mark.skipif(not (BIN / "escalation-rules").exists(), reason="the console script is not installed")
def test_every_console_example_of_the_audit_page_prints_what_the_page_says(tmp_path: Path) -> None:
    """Run in order (the site built by the first is checked by the later ones), each command prints the output
    written under it."""
    pytest.importorskip("sphinx")
    shutil.copytree(ROOT / "spec", tmp_path / "spec")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SOURCE_DATE_EPOCH", None)
    checker = doctest.OutputChecker()
    for command, want in console_examples(PAGE.read_text(encoding="utf-8")):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        got = done.stdout
        assert checker.check_output(want, got, doctest.ELLIPSIS), f"$ {command}\nwanted:\n{want}\ngot:\n{got}"
