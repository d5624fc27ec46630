"""TOML reading, through :mod:`tomli`.

:mod:`tomli` is the library the standard library's :mod:`tomllib` was taken
from (same parser, same errors), and its wheels are compiled: it reads the
shipped protocol folder about five times faster than the pure-Python
standard copy, which every ``next``, ``screen`` and ``trial status`` process
pays at start-up.

Examples
--------
>>> loads('cap = 18')
{'cap': 18}
"""

from __future__ import annotations

from tomli import TOMLDecodeError, load, loads

__all__ = ["TOMLDecodeError", "load", "loads"]
