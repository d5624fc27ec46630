"""Resolve what the CLI calls SPEC: a protocol file or folder, or a built-in design name.

Examples
--------
>>> resolve_spec("3+3-escalate-only", doses=2).id
'3+3-escalate-only'
>>> resolve_spec("spec/nct07117175").id
'NCT07117175'
"""

from __future__ import annotations

from pathlib import Path

from .designs import DESIGNS, builtin_design
from .errors import ProtocolError
from .protocol import Protocol, load_protocol

__all__ = ["resolve_spec"]


def resolve_spec(spec: str, doses: int | None = None) -> Protocol:
    """Load ``spec``: a built-in design name (with ``doses``, default 5) or a protocol path.

    A path ending in ``.toml`` that does not exist is also tried as a folder
    of the same name without the suffix, so ``spec/nct07117175.toml`` and
    ``spec/nct07117175/`` name the same shipped protocol.

    Raises
    ------
    ProtocolError
        If ``spec`` is neither, or the protocol is refused.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a built-in design name or a protocol path (got {type(spec).__name__})")
    if spec in DESIGNS:
        return builtin_design(spec, 5 if doses is None else doses)
    if not spec.strip():
        raise ProtocolError(["SPEC: expected a protocol file or folder, or a built-in design name (got an empty "
                             "string)"])
    path = Path(spec)
    if not path.exists() and path.suffix == ".toml" and path.with_suffix("").is_dir():
        path = path.with_suffix("")
    if not path.exists():
        raise ProtocolError([f"{spec}: no such protocol file or folder, and not a built-in design "
                             f"(known: {', '.join(sorted(DESIGNS))})"])
    if doses is not None:
        raise ProtocolError([f"{spec}: --doses applies to built-in designs only; a protocol file declares its ladder"])
    return load_protocol(path)
