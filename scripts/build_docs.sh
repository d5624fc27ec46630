#!/usr/bin/env bash
# Build the project's documentation (HTML) with warnings as errors, then run
# the doctests of its pages. Run from anywhere; needs the docs extra
# (pip install -e '.[docs]') and Graphviz's dot for the audit diagrams.
#   scripts/build_docs.sh            -> docs/_build/html/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
sphinx-build -W --keep-going -q -b html docs docs/_build/html
sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest
echo "docs built: docs/_build/html/index.html (doctests passed)"
