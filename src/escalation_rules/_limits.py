"""The documented limits on input, checked where input is read (one place for every reader).

Anything a protocol file, a history, a patient record or a stored trial may
hold is bounded here, so that whatever the package accepts it can verify,
decide and print in seconds.  docs/reference/limits.md lists the same numbers
(a test compares them with these constants).

Examples
--------
>>> show(10 ** 5000)
'an integer of 5001 digits'
>>> show("x" * 100)
"'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' (100 characters)"
>>> check_int(5, "protocol.cap", MAX_CAP) is None
True
>>> check_int(10 ** 9, "protocol.cap", MAX_CAP)
'protocol.cap: expected at most 1000, the documented limit (got 1000000000)'
"""

from __future__ import annotations

import os
from typing import Any

from . import _toml as tomllib
from .errors import EscalationRulesError

__all__ = [
    "MAX_BUNDLE_ENTRIES",
    "MAX_CAP",
    "MAX_COHORT",
    "MAX_DOSES",
    "MAX_FILE_BYTES",
    "MAX_GUARD_CHARS",
    "MAX_HISTORY_CHARS",
    "MAX_HISTORY_ENTRIES",
    "MAX_INT_DIGITS",
    "MAX_JOBS",
    "MAX_MERGED_STATES",
    "MAX_OPTIONS",
    "MAX_RULES",
    "MAX_STAGES",
    "MAX_STATES",
    "check_int",
    "count_text",
    "read_toml",
    "show",
]

#: Entries in one FHIR Bundle screened as a patient (its text also counts against MAX_FILE_BYTES).
MAX_BUNDLE_ENTRIES = 5000
#: Doses on a ladder (the built-in designs take 1 to 40 too).
MAX_DOSES = 40
#: The enrolment cap (patients in one trial).
MAX_CAP = 1000
#: Patients in one cohort (a stage's entry cohort, a rule's cohort expression, a history's cohort).
MAX_COHORT = 100
#: Stages in one protocol.
MAX_STAGES = 100
#: Rules in one protocol (all stages together).
MAX_RULES = 1000
#: Options at one decision point.
MAX_OPTIONS = 100
#: States in the full compiled state graph (``compile_protocol``, ``show``, ``verify --full``): that graph holds
#: every history, so it grows exponentially with the ladder; verification on merged states has no such limit.
MAX_STATES = 100_000
#: Classes of states explored on merged states (``verify``, ``next``, ``paths``, ``oc``): the work of every
#: analysis grows with them; a protocol past it is refused within seconds instead of running for minutes
#: (NCT07117175 with its cap raised to 100 has about 240,000; at its own cap of 18, 308).
MAX_MERGED_STATES = 100_000
#: Characters in one guard, cohort expression or eligibility criterion.
MAX_GUARD_CHARS = 2000
#: Bytes in one protocol file, history file or patient record (and one line of a batch), users or DLT file.
MAX_FILE_BYTES = 1_000_000
#: Characters in a history (outcome string or JSON text).
MAX_HISTORY_CHARS = 100_000
#: Entries (cohorts and decisions) in a history.
MAX_HISTORY_ENTRIES = 10_000
#: Processes screening one batch (``screen --batch --jobs``, ``screen_compact(jobs=...)``).
MAX_JOBS = 64
#: Digits in any integer read from input (a guard literal, a dose level, a record's number).
MAX_INT_DIGITS = 15


def show(value: Any, width: int = 60) -> str:
    """``repr(value)`` for an error message, shortened, and safe for huge integers.

    Examples
    --------
    >>> show([1, 2])
    '[1, 2]'
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {_digit_count(value)} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer past Python's printing limit inside a container
        return f"a {type(value).__name__} holding a number too large to print"
    if len(text) > width:
        if isinstance(value, str):
            return f"{text[:width - 3]}...' ({len(value)} characters)"
        return text[:width - 3] + "..."
    return text


def count_text(value: int) -> str:
    """A count for people: exact up to 18 digits, else its order of magnitude (never past the printing limit).

    Examples
    --------
    >>> count_text(12), count_text(2 ** 20000)
    ('12', 'about 10^6020')
    """
    return str(value) if value < 10**18 else f"about 10^{_digit_count(value) - 1}"


def _digit_count(value: int) -> int:
    # the number of decimal digits, without converting the whole number to text
    value = abs(value)
    estimate = max(1, int(value.bit_length() * 0.30102999566398))
    return estimate + (1 if value >= 10**estimate else 0)


def check_int(value: int, where: str, high: int, low: int = 1) -> str | None:
    """A one-line problem when ``value`` lies outside ``low..high``, else None.

    Examples
    --------
    >>> check_int(0, "stages[0].cohort", MAX_COHORT)
    'stages[0].cohort: expected a positive integer (got 0)'
    """
    if value < low:
        wanted = "a positive integer" if low == 1 else f"at least {low}"
        return f"{where}: expected {wanted} (got {show(value)})"
    if value > high:
        return f"{where}: expected at most {high}, the documented limit (got {show(value)})"
    return None


#: How :func:`read_toml` words bytes that are not UTF-8 by default (``{path}``, ``{byte}``, ``{offset}``).
NOT_UTF8 = "{path}: not UTF-8 text (byte {offset}): TOML files are UTF-8"


def read_toml(path: str | os.PathLike[str], what: str, not_utf8: str = NOT_UTF8) -> dict[str, Any]:
    """Read a TOML file of at most :data:`MAX_FILE_BYTES` (a protocol, users or DLT file: ``what``).

    Every way the file can fail to be read is refused with one line naming it:
    missing or unreadable, too large, not UTF-8 (worded by ``not_utf8``), not
    valid TOML, nested too deeply for Python's parser.

    Raises
    ------
    EscalationRulesError
        With that line as its message.

    Examples
    --------
    >>> read_toml("no/such.toml", "protocol file")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.EscalationRulesError: no/such.toml: cannot read: No such file or directory
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise EscalationRulesError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise EscalationRulesError(f"{path}: larger than the limit of {MAX_FILE_BYTES} bytes for a {what}")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise EscalationRulesError(not_utf8.format(path=path, byte=err.object[err.start], offset=err.start)) from None
    except tomllib.TOMLDecodeError as err:
        raise EscalationRulesError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise EscalationRulesError(f"{path}: nested too deeply to read") from None
