#!/usr/bin/env bash
# Build the project's documentation (HTML) with warnings as errors, then run
# the doctests of its pages. Run from anywhere; needs the docs extra
# (pip install -e '.[docs]') and Graphviz's dot for the audit diagrams.
#   scripts/build_docs.sh            -> docs/_build/html/index.html
set -euo pipefail
cd "$(dirname "$0")/.."
# The tutorial's design comparison is drawn by the command the tutorial shows.
mkdir -p docs/_generated
escalation-rules grid 3+3-deescalate --also boin --also crm --set max_n=18 \
  --scenarios spec/nct07117175/scenarios.toml --plot docs/_generated/design-comparison.png >/dev/null
sphinx-build -W --keep-going -q -b html docs docs/_build/html
sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest
echo "docs built: docs/_build/html/index.html (doctests passed)"
