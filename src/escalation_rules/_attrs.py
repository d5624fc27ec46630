"""One ``__repr__`` for the package's attrs classes.

attrs writes and compiles a ``__repr__`` for every class it builds; the
package defines about a hundred, and the commands that trial software runs
once per decision (``next``, ``screen``, ``trial status``) pay for each at
start-up. The classes share this one instead (``__repr__ = value_repr`` in
the class body, which attrs then leaves alone): it prints what attrs would,
the class name and every field shown in repr, in order.

Examples
--------
>>> import attrs
>>> @attrs.frozen
... class Dose:
...     level: int
...     label: str
...     _note: str = attrs.field(default="", repr=False)
...     __repr__ = value_repr
>>> Dose(1, "1x10^7 cells/kg")
Dose(level=1, label='1x10^7 cells/kg')
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["value_repr"]


def value_repr(self: Any) -> str:
    """``ClassName(field=value, ...)`` over the fields attrs shows in repr, as attrs's own repr words it."""
    cls = type(self)
    shown = ", ".join(f"{field.name}={getattr(self, field.name)!r}" for field in attrs.fields(cls) if field.repr)
    return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({shown})"
