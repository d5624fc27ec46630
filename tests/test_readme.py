"""Tests that the README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_python_api_example_runs(tmp_path):
    """The Python API block of the README runs from the repository root."""
    block = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    script = tmp_path / "readme_api.py"
    script.write_text(block.group(1), encoding="utf-8")
    subprocess.run([sys.executable, str(script)], cwd=ROOT, check=True, capture_output=True, text=True)


def test_fresh_machine_commands_name_the_shipped_protocol_and_the_tests():
    """The README opens with the install-and-run command and the test command."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert "pip install -e '.[test,docs]'" in blocks[0] and "nct07117175" in blocks[0]
    assert "pytest" in blocks[1]


def test_console_examples_print_what_the_readme_shows(capsys):
    """The `next` examples in the README's console block give the output shown."""
    from escalation_rules.cli import main

    block = re.search(r"```console\n(.*?)```", README, re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("$ escalation-rules next"):
            continue
        argv = re.findall(r'"[^"]*"|\S+', line[len("$ escalation-rules "):])
        argv = [a.strip('"') for a in argv]
        main(argv)
        captured = capsys.readouterr()
        shown = []
        for expected in lines[i + 1:]:
            if expected.startswith("$ "):
                break
            shown.append(expected)
        assert (captured.out + captured.err).strip().splitlines() == shown
