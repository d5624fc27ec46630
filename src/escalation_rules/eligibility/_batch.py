"""Screening many records: JSON Lines in, one compact result per line out, optionally on an executor.

:func:`screen_lines` screens lines in this process; :func:`screen_compact`
does the same from JSON Lines text or bytes straight to the compact JSON
lines that ``screen --batch --json`` prints; :func:`screen_jsonl` splits
lines into chunks and runs the chunks on any ``concurrent.futures.Executor``
(a process pool, or Dask's ``client.get_executor()`` for a cluster).  Only
the protocol folder's path, the site file's path and the lines travel to the
workers; each worker loads the protocol once.  Results come back in input
order.

Batches take a fast path: the protocol's criteria are compiled once into
operations over columns (one numpy array per data item, three-valued logic
over whole batches), and records are decoded by ``msgspec`` into typed
structures.  A record the columns cannot represent exactly (a refused line,
a unit or a shape the columns do not cover, a viral load with its assay's
limits, dated disease assessments, a pregnancy test, two results of one
code, a site range) is screened by the record-by-record evaluator; the
results are the same either way (a property test holds them equal).

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

import codecs
import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._limits import MAX_JOBS, show
from ..errors import EscalationRulesError
from ._record import RecordError, read_record_json
from ._screen import screen_summary
from ._site import SiteRanges, load_site
from ._spec import EligibilitySpec, load_eligibility

if TYPE_CHECKING:  # concurrent.futures imports logging, mmap loads a library: not paid by every screen at start-up
    import mmap
    from concurrent.futures import Executor

__all__ = ["screen_compact", "screen_jsonl", "screen_lines"]

#: Records decoded and screened together on the fast path (small enough for the decoded records to stay in
#: the processor's cache while their values are gathered: larger batches measured slower, not faster).
BATCH = 1024
#: Lines each process takes at least when a batch is screened in several (``jobs``).
SHARE = 4096


def screen_lines(spec: EligibilitySpec, lines: Iterable[str], site: SiteRanges | None = None,
                 source: str = "<batch>", first: int = 1) -> Iterator[dict[str, Any]]:
    """Screen one JSON record per line; yield ``{"line", "record", "outcome", "failed", "needed"}`` per record.

    Blank lines are skipped; a refused line gives ``{"line": N, "error": [...]}`` and the others go on.
    ``first`` is the number of the first line (for chunks of a larger file).
    """
    engine = _engine(spec, site)
    for start, chunk in _chunks(lines, first):
        for number, line, found in zip(itertools.count(start), chunk, _screen_chunk(engine, chunk), strict=False):
            if found is not None:
                rid, pattern = found
                yield {"line": number, "record": rid, "outcome": pattern.outcome, "failed": list(pattern.failed),
                       "needed": list(pattern.needed)}
                continue
            text = line if isinstance(line, str) else line.decode("utf-8")
            if not text.strip():
                continue
            try:
                summary, _ = screen_summary(spec, read_record_json(text, f"{source}:{number}"), site=site)
            except RecordError as err:
                yield {"line": number, "error": err.problems}
                continue
            yield {"line": number, **summary}


def screen_compact(spec: EligibilitySpec, data: str | bytes | bytearray | mmap.mmap, site: SiteRanges | None = None,
                   source: str = "<batch>", *, jobs: int = 1) -> Iterator[tuple[int, str | None, list[str] | None]]:
    """Screen JSON Lines text (or UTF-8 bytes) into the compact lines of ``screen --batch --json``.

    Yields ``(line number, compact JSON line, None)`` per screened record and
    ``(line number, None, problems)`` per refused line; blank lines are
    skipped.  Lines are numbered as :meth:`str.splitlines` numbers them.
    Bytes that are not UTF-8 are refused whole (``UnicodeDecodeError``)
    before anything is screened.  ``data`` may be an :class:`mmap.mmap` of
    the file (read-only): its lines are read where they lie, never copied
    (the file must not shrink while it is screened: the operating system
    ends a process that reads a mapped page the file no longer has).

    With ``jobs`` above 1 (at most :data:`~escalation_rules._limits.MAX_JOBS`),
    the data are cut into that many contiguous shares of about :data:`SHARE`
    lines or more (bytes after a line break, each process then finding and
    checking the lines of its own share); this process screens the first
    while forked copies of it screen the others, and their results follow in
    input order.  The results are the same as with ``jobs=1``.  Without
    ``os.fork`` (Windows), while other Python threads run in this process
    (forking them is unsafe), or with fewer than two shares' worth of lines,
    everything is screened here.

    Examples
    --------
    >>> from escalation_rules import load_protocol
    >>> spec = load_eligibility(load_protocol("spec/nct07117175"))
    >>> data = b'{"id": "P1", "anchors": {"screening": "2026-03-02"}, "ecog": 4}\\n\\n[1]\\n'
    >>> for row in screen_compact(spec, data):
    ...     print(row)
    (1, '{"line":1,"record":"P1","outcome":"not eligible","failed":["inc_ecog"],"needed":[]}', None)
    (3, None, ['<batch>:3: expected a JSON object (got [1])'])
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise EscalationRulesError(f"jobs: expected a whole number from 1 to {MAX_JOBS} (got {show(jobs)})")
    import mmap

    lines: Sequence[bytes | memoryview | str]
    if isinstance(data, str):
        lines = data.splitlines()
    elif isinstance(data, bytes | bytearray | mmap.mmap):
        carriage = data.find(b"\r") != -1  # \r breaks lines too: the lines are then split as bytes.splitlines does
        if jobs > 1 and not carriage and _can_fork():
            cuts = _byte_shares(data, jobs)
            if len(cuts) > 2:  # each process finds and checks the lines of its own share
                _engine(spec, site)  # compiled once, before the copies are made
                return _forked(list(itertools.pairwise(cuts)), lambda cut: _plain_views(data, *cut),
                               lambda first, share: _compact(spec, share, site, source, first),
                               lambda: screen_compact(spec, data, site, source))
        lines = (str(data, "utf-8").splitlines() if _odd_utf8(data) else
                 bytes(data).splitlines() if carriage else _views(data))
    else:
        raise EscalationRulesError(f"data: expected str, bytes, bytearray or mmap.mmap (got {type(data).__name__})")
    shares = min(jobs, len(lines) // SHARE)
    if shares > 1 and _can_fork():
        size = -(-len(lines) // shares)  # equal shares: measured to finish together (the others pack and send
        parts = [lines[i:i + size] for i in range(0, len(lines), size)]  # their rows while this one relays)
        _engine(spec, site)
        return _forked(parts, lambda part: part, lambda first, share: _compact(spec, share, site, source, first),
                       lambda: _compact(spec, lines, site, source))
    return _compact(spec, lines, site, source)


def _byte_shares(data: bytes | bytearray | mmap.mmap, jobs: int) -> list[int]:
    """Where to cut ``data`` (after a line break) into at most ``jobs`` shares of about :data:`SHARE` lines or more.

    The number of lines is estimated from the first ``2 * SHARE`` (counting them all would cost more than
    finding them); ``[0, len(data)]`` (one share) when there are fewer.
    """
    end = -1
    for _ in range(2 * SHARE):
        end = data.find(b"\n", end + 1)
        if end == -1:
            return [0, len(data)]
    shares = min(jobs, int(len(data) * 2 / (end + 1)))  # lines per 2 x SHARE lines' bytes: shares of SHARE
    cuts = [0]
    for k in range(1, shares):
        at = data.find(b"\n", max(len(data) * k // shares, cuts[-1]))
        if at == -1 or at + 1 >= len(data):
            break
        cuts.append(at + 1)
    return [*cuts, len(data)]


def _can_fork() -> bool:
    """Whether this process may fork copies of itself: POSIX, and no other Python thread running."""
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1


_Row = tuple[int, str | None, list[str] | None]
_Share = Any  # what one process screens: a list of lines, or where its lines lie in the data


def _forked(shares: Sequence[_Share], lines_of: Callable[[_Share], Sequence[Any] | None],
            run: Callable[[int, Sequence[Any]], Iterator[_Row]], whole: Callable[[], Iterator[_Row]]
            ) -> Iterator[_Row]:
    """``run(first line number, lines_of(share))`` for each share, the first in this process and the others in
    forked children, rows in order.

    Each child finds its lines, tells this process how many there are (or that ``lines_of`` found its share
    cannot be screened apart: then all is screened by ``whole()`` here, in one process, and the children are
    ended), is told the number of its first line, screens, sends its rows back whole through a pipe (pickled)
    and exits.  A child that fails raises :class:`EscalationRulesError`, naming the first line of its share.
    Children left running when the caller stops early are ended.
    """
    import gc
    import pickle
    import warnings

    children: list[list[int]] = []  # [pid, rows read end, count read end, first write end]; -1 once closed
    try:
        for share in shares[1:]:
            rows_r, rows_w = os.pipe()
            count_r, count_w = os.pipe()
            first_r, first_w = os.pipe()
            with warnings.catch_warnings():  # numpy's BLAS keeps idle native threads; the child never calls BLAS
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: never returns into the parent's code
                _child(share, lines_of, run, rows_w, count_w, first_r,
                       [rows_r, count_r, first_w, *(fd for child in children for fd in child[1:] if fd != -1)])
            for fd in (rows_w, count_w, first_r):
                os.close(fd)
            children.append([pid, rows_r, count_r, first_w])
        own = lines_of(shares[0])
        counts: list[int] = []
        for child in children:
            count = _read_all(child[2])
            child[2] = -1
            if len(count) != 8:  # it failed before it found its lines: its rows pipe says why
                payload = _read_all(child[1])
                child[1] = -1
                _raise_failed(pickle.loads(payload) if payload else (False, "ended without a result"),
                              1 + sum(counts) + (len(own) if own is not None else 0))
            counts.append(int.from_bytes(count, "little"))
        if own is None or _APART in counts:
            _end(children)
            yield from whole()
            return
        starts = list(itertools.accumulate([1 + len(own), *counts[:-1]]))
        for child, start in zip(children, starts, strict=True):
            os.write(child[3], start.to_bytes(8, "little"))
            os.close(child[3])
            child[3] = -1
        yield from run(1, own)
        while children:
            pid, rows_r, _, _ = children.pop(0)
            start = starts.pop(0)
            try:
                payload = _read_all(rows_r)
            finally:
                os.waitpid(pid, 0)
            collecting = gc.isenabled()
            gc.disable()  # tens of thousands of new tuples, no cycles: no collection while they arrive
            try:
                result: tuple[bool, Any] = pickle.loads(payload) if payload else (False, "ended without a result")
            finally:
                if collecting:
                    gc.enable()
            if not result[0]:
                _raise_failed(result, start)
            yield from result[1]
    finally:
        _end(children)


_APART = (1 << 64) - 1  # the count a child sends when its share cannot be screened apart


def _plain_views(data: bytes | bytearray | mmap.mmap, start: int, stop: int) -> list[memoryview] | None:
    """:func:`_views` of ``data[start:stop]``, or ``None`` if that part is not UTF-8 or has a line break only
    text knows (the whole is then read as one process reads it, which refuses or splits it as it should)."""
    try:
        if _odd_utf8(data, start, stop):
            return None
    except UnicodeDecodeError:
        return None
    return _views(data, start, stop)


def _child(share: _Share, lines_of: Callable[[_Share], Sequence[Any] | None],
           run: Callable[[int, Sequence[Any]], Iterator[_Row]], rows_w: int, count_w: int, first_r: int,
           parents: list[int]) -> None:
    """The forked child of :func:`_forked`: find the lines, count them, learn the first number, screen, send."""
    import gc
    import pickle

    status = 0
    try:
        for fd in parents:  # the other ends, and the pipes of the children forked before this one
            os.close(fd)
        gc.freeze()  # collections skip the parent's objects: no copying of the pages it shares
        lines = lines_of(share)
        os.write(count_w, (_APART if lines is None else len(lines)).to_bytes(8, "little"))
        os.close(count_w)
        first = _read_all(first_r)
        if len(first) != 8:  # the parent stopped (or found nothing to screen here): leave quietly
            os._exit(0)
        assert lines is not None  # the parent never sends a first line number then
        payload = pickle.dumps((True, list(run(int.from_bytes(first, "little"), lines))), pickle.HIGHEST_PROTOCOL)
    except BaseException as err:  # reported by the parent, whatever it was
        status, payload = 1, pickle.dumps((False, f"{type(err).__name__}: {err}"))
    try:
        with open(rows_w, "wb") as pipe:
            pipe.write(payload)
    finally:
        os._exit(status)


def _read_all(fd: int) -> bytes:
    """Everything a pipe gives until its writer closes it (the read end is closed after)."""
    with open(fd, "rb") as pipe:
        return pipe.read()


def _raise_failed(result: tuple[bool, Any], first: int) -> None:
    raise EscalationRulesError(f"screening lines {first} and after in a worker process failed: {result[1]}")


def _end(children: list[list[int]]) -> None:
    """End the children still running and close the pipes still open."""
    import signal

    for pid, *fds in children:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        for fd in fds:
            if fd != -1:
                os.close(fd)
    children.clear()


def _odd_utf8(data: bytes | bytearray | mmap.mmap, begin: int = 0, stop: int | None = None) -> bool:
    """Whether ``data[begin:stop]`` has a line break only text knows; ``UnicodeDecodeError`` if it is not UTF-8
    (for the whole of ``data``, the error decoding it whole gives).

    Checked a megabyte at a time, so that no copy of the whole text is made.
    """
    stop = len(data) if stop is None else stop
    decoder, view, odd = codecs.getincrementaldecoder("utf-8")(), memoryview(data), False
    try:
        for start in range(begin, stop, 1 << 20):
            piece = decoder.decode(view[start:min(start + (1 << 20), stop)])
            odd = odd or any(mark in piece for mark in _ODD_BREAKS)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        if begin == 0 and stop == len(data):
            str(data, "utf-8")  # the same error as decoding the whole (its position counted from the start)
        raise
    return odd


def _views(data: bytes | bytearray | mmap.mmap, start: int = 0, stop: int | None = None) -> list[memoryview]:
    """The lines of ``data[start:stop]`` split at ``\\n`` alone, as views into it (``bytes.splitlines`` without
    the copies); ``start`` is the start of a line."""
    stop = len(data) if stop is None else stop
    view, find, out = memoryview(data), data.find, []
    while (end := find(b"\n", start, stop)) != -1:
        out.append(view[start:end])
        start = end + 1
    if start < stop:
        out.append(view[start:stop])
    return out


def _compact(spec: EligibilitySpec, lines: Sequence[bytes | memoryview | str], site: SiteRanges | None,
             source: str, first: int = 1) -> Iterator[_Row]:
    engine = _engine(spec, site)
    for start, chunk in _chunks(lines, first):
        found = _screen_chunk(engine, chunk)
        if None not in found:  # the usual batch: every line screened over columns
            every: list[Any] = found
            yield from [(number, f'{{"line":{number},"record":{encode_basestring(rid)},{pattern.tail}', None)
                        for number, (rid, pattern) in zip(itertools.count(start), every, strict=False)]
            continue
        for number, line, one in zip(itertools.count(start), chunk, found, strict=False):
            if one is not None:
                yield number, f'{{"line":{number},"record":{encode_basestring(one[0])},{one[1].tail}', None
                continue
            yield from _evaluated(spec, line, number, site, source)


def _evaluated(spec: EligibilitySpec, line: bytes | memoryview | str, number: int, site: SiteRanges | None,
               source: str) -> Iterator[tuple[int, str | None, list[str] | None]]:
    """One line by the record-by-record evaluator: its compact line, its problems, or nothing if blank."""
    text = line if isinstance(line, str) else str(line, "utf-8")
    if not text.strip():
        return
    where = f"{source}:{number}"
    try:
        summary, _ = screen_summary(spec, read_record_json(text, where), site=site)
    except RecordError as err:
        yield number, None, err.problems
        return
    except (EscalationRulesError, RecursionError, ValueError) as err:  # one bad line never ends the batch
        reason = ("nested too deeply to read" if isinstance(err, RecursionError) else
                  str(err).splitlines()[0] if isinstance(err, EscalationRulesError) else
                  "a number or value too large to read")
        yield number, None, [f"{where}: {reason}"]
        return
    yield number, json.dumps({"line": number, **summary}, ensure_ascii=False, separators=(",", ":")), None


def _screen_chunk(engine: Any, chunk: list[Any]) -> list[Any]:
    """Per line, ``(record id, result pattern)`` when screened over columns, ``None`` for the evaluator."""
    from ._columns import screen_chunk

    return screen_chunk(engine, chunk)


def _engine(spec: EligibilitySpec, site: SiteRanges | None) -> Any:
    """The column engine of ``spec`` with ``site`` (numpy and msgspec are imported on the first batch)."""
    from ._columns import engine

    return engine(spec, site)


# Line breaks str.splitlines knows and bytes.splitlines does not: with any of them, lines are split as text.
_ODD_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _chunks(lines: Iterable[Any], first: int) -> Iterator[tuple[int, list[Any]]]:
    """``(number of the first line, lines)`` per batch of :data:`BATCH` lines."""
    if isinstance(lines, list | tuple):
        for i in range(0, len(lines), BATCH):
            yield first + i, list(lines[i:i + BATCH])
        return
    it = iter(lines)
    start = first
    while chunk := list(itertools.islice(it, BATCH)):
        yield start, chunk
        start += len(chunk)


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
