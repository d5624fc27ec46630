"""One exception hierarchy for everything the package refuses.

Every error derives from :class:`EscalationRulesError`, and also from the
builtin that fits (``ValueError``), so callers can catch either.  Messages
are one line each: they name the place (file and key path, cohort, rule or
state) and say what was expected and what arrived.

Examples
--------
>>> from escalation_rules.errors import ProtocolError, EscalationRulesError
>>> err = ProtocolError(["a.toml: doses[0].id: expected a string (got 3)"])
>>> isinstance(err, EscalationRulesError) and isinstance(err, ValueError)
True
>>> print(err)
a.toml: doses[0].id: expected a string (got 3)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CompileError",
    "EscalationRulesError",
    "GuardSyntaxError",
    "HistoryError",
    "ProtocolError",
    "install_hint",
]


def install_hint(extra: str) -> str:
    """How to install an optional extra, for someone with the repository (the package is not on an index).

    Names the extra's packages too (from the installed package's metadata), for
    an environment built from the wheel.

    Examples
    --------
    >>> install_hint("plot")
    "from the repository's clone: pip install -e '.[plot]' (or install matplotlib>=3.7)"
    """
    import importlib.metadata
    import re

    marker = re.compile(rf"""extra\s*==\s*['"]{re.escape(extra)}['"]""")
    try:
        requires = importlib.metadata.requires("escalation_rules") or []
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        requires = []
    packages = [r.split(";")[0].strip() for r in requires if marker.search(r)]
    also = f" (or install {', '.join(packages)})" if packages else ""
    return f"from the repository's clone: pip install -e '.[{extra}]'{also}"


class EscalationRulesError(ValueError):
    """Base class of every error this package raises for bad input."""


class GuardSyntaxError(EscalationRulesError):
    """A guard expression could not be parsed or type-checked.

    Parameters
    ----------
    message : str
        What was expected and what arrived.
    text : str
        The guard text.
    position : int
        0-based offset of the problem in ``text``.
    """

    def __init__(self, message: str, text: str = "", position: int = 0) -> None:
        self.message = message
        self.text = text
        self.position = position
        super().__init__(message)


class ProtocolError(EscalationRulesError):
    """A protocol file (or built-in design) was refused.

    Holds one line per problem in :attr:`problems`; ``str()`` joins them.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CompileError(ProtocolError):
    """A protocol loaded but its rules fail a build-time check.

    The lines name the rule ids and the states involved (as outcome strings).
    """


class HistoryError(EscalationRulesError):
    """A trial history is impossible under the protocol.

    Parameters
    ----------
    message : str
        One line naming the cohort and the rule it breaks.
    cohort : int or None
        1-based index of the offending entry in the history, if any.
    """

    def __init__(self, message: str, cohort: int | None = None) -> None:
        self.cohort = cohort
        super().__init__(message)
