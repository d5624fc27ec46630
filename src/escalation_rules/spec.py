"""Resolve what the CLI calls SPEC: a protocol file or folder, a shipped protocol's name, or a built-in design name.

The repository's ``spec/`` folder is installed with the package (as package
data, from the one copy in ``spec/``), so the shipped protocols can be named
from anywhere: ``nct07117175`` is the shipped ``spec/nct07117175`` folder.
A path that exists always wins over a shipped name.

Examples
--------
>>> resolve_spec("3+3-escalate-only", doses=2).id
'3+3-escalate-only'
>>> resolve_spec("spec/nct07117175").id
'NCT07117175'
>>> resolve_spec("nct07117175").id
'NCT07117175'
>>> sorted(shipped_protocols())
['nct07117175']
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .designs import DESIGNS, builtin_design, settings_text
from .errors import ProtocolError
from .protocol import Protocol, load_protocol

__all__ = ["known_specs", "resolve_spec", "settings_text", "shipped_dir", "shipped_protocols", "spec_path"]


@cache
def shipped_dir() -> Path | None:
    """The installed copy of the repository's ``spec/`` folder (``None`` if it is missing).

    It is the package ``escalation_rules._shipped`` (mapped to ``spec/`` when
    the package is built, so an editable install reads the clone's ``spec/``).
    """
    try:
        found = importlib.util.find_spec("escalation_rules._shipped")
    except (ImportError, ValueError):  # pragma: no cover - a broken installation
        found = None
    for location in (found.submodule_search_locations or []) if found is not None else []:
        if Path(location).is_dir():
            return Path(location)
    source_tree = Path(__file__).resolve().parents[2] / "spec"  # running from a source tree without installing
    return source_tree if source_tree.is_dir() else None


def shipped_protocols() -> dict[str, Path]:
    """Shipped protocols by name: each folder of the shipped ``spec/`` with a ``protocol.toml``, and each TOML file."""
    root = shipped_dir()
    if root is None:
        return {}
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry / "protocol.toml").is_file():
            found[entry.name] = entry
        elif entry.is_file() and entry.suffix == ".toml":
            found[entry.stem] = entry
    return found


def known_specs() -> str:
    """The names a SPEC may take besides a path, for error messages."""
    shipped = ", ".join(shipped_protocols()) or "none installed"
    return f"shipped protocols: {shipped}; built-in designs: {', '.join(sorted(DESIGNS))}"


def spec_path(spec: str) -> Path:
    """The protocol file or folder that ``spec`` names: an existing path, else a shipped protocol's name.

    ``spec/x.toml`` that does not exist is also tried as the folder ``spec/x``,
    and a shipped name may be given in any case and with ``.toml``
    (``NCT07117175``, ``nct07117175.toml``).

    Raises
    ------
    ProtocolError
        When ``spec`` is neither; the one-line message lists the known names.

    Examples
    --------
    >>> spec_path("nct07117175").name
    'nct07117175'
    >>> spec_path("no-such-protocol")
    Traceback (most recent call last):
    ...
    escalation_rules.errors.ProtocolError: no-such-protocol: no such protocol file or folder, and not a shipped \
protocol or a built-in design (shipped protocols: nct07117175; built-in designs: 3+3-deescalate, 3+3-escalate-only, \
3+3-six-at-top, accelerated-titration, boin, crm, i3+3, keyboard, mtpi2)
    """
    if not spec.strip():
        raise ProtocolError(["SPEC: expected a protocol file or folder, a shipped protocol or a built-in design name "
                             f"(got an empty string; {known_specs()})"])
    path = Path(spec)
    if path.exists():
        return path
    if path.suffix == ".toml" and path.with_suffix("").is_dir():
        return path.with_suffix("")
    shipped = {name.lower(): where for name, where in shipped_protocols().items()}
    name = spec.lower().removesuffix(".toml")
    if "/" not in spec and "\\" not in spec and name in shipped:
        return shipped[name]
    raise ProtocolError([f"{spec}: no such protocol file or folder, and not a shipped protocol or a built-in design "
                         f"({known_specs()})"])


def resolve_spec(spec: str, doses: int | None = None, params: Mapping[str, Any] | None = None) -> Protocol:
    """Load ``spec``: a built-in design name (with ``doses``, default 5, and its ``params``), a protocol path or a
    shipped protocol's name.

    A path ending in ``.toml`` that does not exist is also tried as a folder
    of the same name without the suffix, so ``spec/nct07117175.toml`` and
    ``spec/nct07117175/`` name the same shipped protocol; see :func:`spec_path`.

    Raises
    ------
    ProtocolError
        If ``spec`` is none of these, or the protocol is refused.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a built-in design name or a protocol path (got {type(spec).__name__})")
    if spec in DESIGNS:
        return builtin_design(spec, 5 if doses is None else doses, **dict(params or {}))
    path = spec_path(spec)
    if params:
        raise ProtocolError([f"{spec}: --set applies to model-assisted built-in designs only; a protocol file "
                             "declares its parameters"])
    if doses is not None:
        raise ProtocolError([f"{spec}: --doses applies to built-in designs only; a protocol file declares its ladder"])
    return load_protocol(path)
