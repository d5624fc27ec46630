"""Pytest configuration shared by tests/ and the doctests under src/.

Hypothesis runs without its example database and derandomised, so that a
local run behaves as CI's fresh clone does and the doctests that show the
minimal example ``find`` returns do not depend on earlier runs or on test
order.  (Set HYPOTHESIS_PROFILE=explore for random exploration.)
"""

import os

from hypothesis import settings

settings.register_profile("repository", database=None, derandomize=True)
settings.register_profile("explore", database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repository"))
