"""Tests of escalation_rules.errors: install hints that work for someone with the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from escalation_rules.errors import install_hint

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("extra", ["docs", "plot", "strategies", "test"])
def test_install_hint_names_the_clone_and_the_packages(extra):
    """The hint installs the extra from the clone (the package is on no index) and names its packages."""
    hint = install_hint(extra)
    assert f"pip install -e '.[{extra}]'" in hint and "or install " in hint
    assert "escalation_rules[" not in hint


def test_no_install_hint_needs_a_package_index():
    """No README, docs page or source file tells a user to install the package from an index."""
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py"),
             *(ROOT / "scripts").glob("*")]
    offenders = [f"{path.relative_to(ROOT)}: {line.strip()}" for path in files if path.is_file()
                 for line in path.read_text(encoding="utf-8").splitlines()
                 if re.search(r"pip install\s+['\"]?escalation_rules", line)]
    assert offenders == []


def test_docs_without_sphinx_names_the_extra():
    """`docs` without Sphinx refuses in one line that says how to install the extra from the clone."""
    code = ("import sys\nsys.modules['sphinx'] = None\nfrom escalation_rules.cli import main\n"
            "sys.exit(main(['docs', '3+3-escalate-only', '--doses', '2', '--out', 'never']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "pip install -e '.[docs]'" in done.stderr


def test_docs_without_graphviz_names_the_apt_package(tmp_path, monkeypatch):
    """Without Graphviz's dot the site is still built, with a warning naming the Debian package."""
    pytest.importorskip("sphinx")
    from escalation_rules.auditsite import build_site

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    page, warnings = build_site("3+3-six-at-top", tmp_path / "site", doses=2)
    assert page.is_file()
    assert any("apt-get install graphviz" in line for line in warnings), warnings
