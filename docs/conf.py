"""Sphinx configuration of the escalation_rules documentation.

Build (from the repository root)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

Doctests run with the repository root as working directory, so examples can
read ``spec/nct07117175`` as the package's own docstrings do.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import escalation_rules  # noqa: E402

project = "escalation_rules"
author = "the escalation_rules authors"
copyright = "the escalation_rules authors"
release = escalation_rules.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "escalation_rules.sphinx",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The audit directives read protocol paths relative to the repository root.
escalation_rules_root = ".."

# numpydoc-style docstrings
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# "Attributes" sections become field lists, so a documented property is not described twice.
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}

# Doctests: only the explicit ``doctest``/``testcode`` blocks of the pages run
# here; the API's docstring examples run under pytest --doctest-modules, in
# their modules' namespaces.
doctest_test_doctest_blocks = ""
# Doctests: run from the repository root (protocol paths in examples are relative to it).
doctest_global_setup = f"""
import os
os.chdir({str(ROOT)!r})
"""

html_theme = "furo"
html_title = f"escalation_rules {release}"
html_static_path: list[str] = []
# Cross-references to type names in signatures are not all resolvable (attrs,
# networkx, typing aliases); keep warnings meaningful with -W.
nitpicky = False
# Classes exported by the package are documented as escalation_rules.X with their
# defining module's name as canonical alias; a bare "Protocol" in a type then has
# two targets that are the same object, which Sphinx reports as ambiguous.
suppress_warnings = ["myst.header", "ref.python"]
