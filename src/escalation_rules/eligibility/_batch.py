"""Screening many records: JSON Lines in, one compact result per line out, optionally on an executor.

:func:`screen_lines` screens lines in this process; :func:`screen_jsonl`
splits them into chunks and runs the chunks on any
``concurrent.futures.Executor`` (a process pool, or Dask's
``client.get_executor()`` for a cluster).  Only the protocol folder's path,
the site file's path and the lines travel to the workers; each worker loads
the protocol once.  Results come back in input order.

Examples
--------
>>> import json
>>> from escalation_rules import load_protocol
>>> from escalation_rules.eligibility import load_eligibility
>>> spec = load_eligibility(load_protocol("spec/nct07117175"))
>>> lines = [json.dumps({"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 4}), "{oops"]
>>> rows = list(screen_lines(spec, lines))
>>> rows[0]
{'line': 1, 'record': 'P1', 'outcome': 'not eligible', 'failed': ['inc_ecog'], 'needed': []}
>>> rows[1]["error"]  # doctest: +ELLIPSIS
['<batch>:2: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2']
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._record import RecordError, read_record_json
from ._screen import screen_summary
from ._site import SiteRanges, load_site
from ._spec import EligibilitySpec, load_eligibility

if TYPE_CHECKING:  # concurrent.futures imports logging: not paid by every screen at start-up
    from concurrent.futures import Executor

__all__ = ["screen_jsonl", "screen_lines"]


def screen_lines(spec: EligibilitySpec, lines: Iterable[str], site: SiteRanges | None = None,
                 source: str = "<batch>", first: int = 1) -> Iterator[dict[str, Any]]:
    """Screen one JSON record per line; yield ``{"line", "record", "outcome", "failed", "needed"}`` per record.

    Blank lines are skipped; a refused line gives ``{"line": N, "error": [...]}`` and the others go on.
    ``first`` is the number of the first line (for chunks of a larger file).
    """
    for number, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            summary, _ = screen_summary(spec, read_record_json(line, f"{source}:{number}"), site=site)
        except RecordError as err:
            yield {"line": number, "error": err.problems}
            continue
        yield {"line": number, **summary}


def screen_jsonl(protocol: str | Path, lines: Sequence[str], site: str | Path | None = None,
                 executor: Executor | None = None, chunk_size: int = 5000,
                 source: str = "<batch>") -> Iterator[dict[str, Any]]:
    """Screen JSON lines against the protocol folder ``protocol``, in chunks on ``executor``.

    Parameters
    ----------
    protocol : str or Path
        The protocol folder (workers load it themselves, once each).
    lines : sequence of str
        One JSON record per line.
    site : str or Path or None
        A site file of reference ranges (``screen --site``).
    executor : concurrent.futures.Executor or None
        Where the chunks run; ``None`` screens them here, one after another.
    chunk_size : int
        Lines per task.

    Yields
    ------
    dict
        As :func:`screen_lines`, in input order.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected 1 or more (got {chunk_size})")
    starts = range(0, len(lines), chunk_size)
    args = [(str(protocol), None if site is None else str(site), list(lines[i:i + chunk_size]), i + 1, source)
            for i in starts]
    if executor is None:
        for a in args:
            yield from _chunk(*a)
        return
    for future in [executor.submit(_chunk, *a) for a in args]:
        yield from future.result()


def _chunk(protocol: str, site: str | None, lines: list[str], first: int, source: str) -> list[dict[str, Any]]:
    spec, ranges = _loaded(protocol, site)
    return list(screen_lines(spec, lines, ranges, source, first))


@functools.cache
def _loaded(protocol: str, site: str | None) -> tuple[EligibilitySpec, SiteRanges | None]:
    """The protocol's screener and the site file, loaded once per process."""
    from ..protocol import load_protocol

    return load_eligibility(load_protocol(protocol)), None if site is None else load_site(site)
