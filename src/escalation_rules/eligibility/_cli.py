"""The ``screen`` and ``data-items`` subcommands.

Exit status of ``screen``: 0 eligible, 3 not eligible, 4 undetermined, 2 the
input was refused (bad protocol, malformed or impossible record).  With
``--batch``: 0 when every record was screened (whatever the outcomes), 2 when
any line was refused (each refused line is reported with its line number, the
others are still screened), whatever the reason: a malformed or impossible
record, JSON nested too deeply, a number or a line past the documented limits.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._limits import MAX_JOBS
from ..errors import EscalationRulesError
from ._batch import screen_compact
from ._record import RecordError, decode_json, read_record_json
from ._screen import OUTCOMES, data_dictionary, screen
from ._site import SiteRanges, load_site
from ._spec import EligibilitySpec, load_eligibility

if TYPE_CHECKING:
    import mmap

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``screen`` and ``data-items`` to the CLI's subparsers."""
    from ..cli import add_spec_arguments

    p = subparsers.add_parser("screen", help="screen a patient record against the protocol's eligibility criteria")
    add_spec_arguments(p)
    p.add_argument("patient", metavar="PATIENT.json",
                   help="the patient record or FHIR Bundle ('-' for stdin); with --batch, a file of one record "
                        "per line, or a folder of record and Bundle files (*.json)")
    p.add_argument("--batch", action="store_true",
                   help="read one record per line (JSON Lines): screen SPEC --batch FILE.jsonl")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (with --batch: one compact line per record: outcome, failed, needed)")
    p.add_argument("--explain", action="store_true",
                   help="with --batch: add the full per-criterion explanation to every record")
    p.add_argument("--site", metavar="FILE",
                   help="the site laboratory's reference ranges (TOML); a record's own range wins")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="with --batch FILE --json: screen in N processes (default: one per core this process may "
                        "use; 1: this process "
                        f"only; at most {MAX_JOBS})")
    p.set_defaults(handler=_cmd_screen)

    p = subparsers.add_parser("data-items", help="the data items the eligibility criteria read")
    add_spec_arguments(p)
    p.add_argument("--json", action="store_true", help="print the data dictionary as JSON")
    p.set_defaults(handler=_cmd_data_items)


def _spec(args: argparse.Namespace) -> EligibilitySpec:
    from ..cli import load_spec

    return load_eligibility(load_spec(args))


def _read(name: str) -> str:
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EscalationRulesError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def _cmd_screen(args: argparse.Namespace) -> int:
    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        raise EscalationRulesError(f"--jobs: expected a whole number from 1 to {MAX_JOBS} (got {args.jobs})")
    if args.jobs is not None and not (args.batch and args.json and not args.explain
                                      and not Path(args.patient).is_dir()):
        raise EscalationRulesError("--jobs: only with --batch FILE --json (the compact lines of a JSON Lines file; "
                                   "folders, --explain and the text output are screened by one process)")
    spec = _spec(args)
    site = None if args.site is None else load_site(args.site)
    if args.batch and Path(args.patient).is_dir():
        return _batch_folder(spec, Path(args.patient), args.json, args.explain, site)
    if args.batch:
        return _batch(spec, args.patient, args.json, args.explain, site, args.jobs)
    source = "<stdin>" if args.patient == "-" else args.patient
    result = screen(spec, decode_json(_read(args.patient), source), source, site=site)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(result.text())
    return result.exit_status


def _batch(spec: EligibilitySpec, name: str, as_json: bool, explain: bool = False,
           site: SiteRanges | None = None, jobs: int | None = None) -> int:
    source = "<stdin>" if name == "-" else name
    if as_json and not explain:  # the compact batch path: column screening, no explanation built
        return _compact(spec, name, source, site, _cores() if jobs is None else jobs)
    lines = ((number, line) for number, line in enumerate(_read(name).splitlines(), start=1) if line.strip())
    return _screen_each(spec, (("line", number, f"{source}:{number}", functools.partial(read_record_json, line))
                               for number, line in lines), as_json, explain, site, "record(s)")


def _batch_folder(spec: EligibilitySpec, folder: Path, as_json: bool, explain: bool,
                  site: SiteRanges | None) -> int:
    """Screen every ``*.json`` file of a folder (records or FHIR Bundles), in name order."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise EscalationRulesError(f"{folder}: no .json files in this folder")
    return _screen_each(spec, (("file", file.name, str(file), lambda where: decode_json(_read(where), where))
                               for file in files), as_json, explain, site, "file(s)", named=True)


def _screen_each(spec: EligibilitySpec, items: Iterable[tuple[str, Any, str, Callable[[str], Any]]],
                 as_json: bool, explain: bool, site: SiteRanges | None, noun: str, named: bool = False) -> int:
    """Screen each ``(key, value, where, read)`` of a batch: ``read(where)`` gives the record (or Bundle).

    One bad item never ends the batch: it is reported (``{key: value, "error": ...}`` in JSON) and counted.
    ``named`` passes ``where`` to :func:`screen` as the record's source.
    """
    tally: Counter[str] = Counter()
    refused = 0
    for key, value, where, read in items:
        try:
            data = read(where)
            result = screen(spec, data, where, site=site) if named else screen(spec, data, site=site)
        except (EscalationRulesError, RecursionError, ValueError) as err:  # one bad item never ends the batch
            refused += 1
            problems = err.problems if isinstance(err, RecordError) else [f"{where}: {_reason(err)}"]
            for problem in problems:
                print(f"escalation-rules screen: {problem}", file=sys.stderr)
            if as_json:
                print(json.dumps({key: value, "error": problems}, ensure_ascii=False))
            continue
        tally[result.outcome] += 1
        if as_json:
            row = {key: value, **(result.to_dict() if explain else result.summary())}
            print(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
        elif explain:
            print(f"{where}: {result.text()}")
        else:
            detail = (f" (fails: {', '.join(r.criterion.id for r in result.failed)})" if result.failed else
                      f" (needs: {', '.join(result.needed)})" if result.needed else "")
            print(f"{where}: {result.record_id}: {result.outcome}{detail}")
    if not as_json:
        counts = ", ".join(f"{tally[o]} {o}" for o in OUTCOMES)
        print(f"screened {sum(tally.values())} {noun}: {counts}; {refused} refused")
    return 2 if refused else 0


def _compact(spec: EligibilitySpec, name: str, source: str, site: SiteRanges | None, jobs: int) -> int:
    """``screen --batch FILE --json``: one compact line per record, refused lines reported by number."""
    try:
        data = sys.stdin.read() if name == "-" else _mapped(name)
        rows = screen_compact(spec, data, site, source, jobs=jobs)
    except (OSError, UnicodeDecodeError) as err:
        raise EscalationRulesError(f"{name}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    refused = 0
    write = sys.stdout.write
    done: list[str] = []  # written a few thousand lines at a time (and before any refusal's message)
    for number, text, problems in rows:
        if text is not None:
            done.append(text)
            if len(done) >= 4096:
                write("\n".join(done) + "\n")
                done.clear()
            continue
        if done:
            write("\n".join(done) + "\n")
            done.clear()
        refused += 1
        for problem in problems or ():
            print(f"escalation-rules screen: {problem}", file=sys.stderr)
        write(json.dumps({"line": number, "error": problems}, ensure_ascii=False) + "\n")
    if done:
        write("\n".join(done) + "\n")
    return 2 if refused else 0


def _cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it), at most MAX_JOBS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_JOBS))


def _mapped(name: str) -> bytes | mmap.mmap:
    """The file mapped into memory, read-only (read whole if it is not a regular file or is empty).

    A mapped file is read where it lies: no copy of it is made, and forked workers share it.
    """
    import mmap

    with open(name, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return file.read()
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)  # open after the file is closed


def _reason(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply to read"
    if isinstance(err, EscalationRulesError):
        return str(err).splitlines()[0]
    return "a number or value too large to read"


def _cmd_data_items(args: argparse.Namespace) -> int:
    rows = data_dictionary(_spec(args))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        kind = r["type"] + (f" [{r['unit']}; {r['dimension']}]" if r["unit"] else "")
        if r["codes"]:
            kind += f" ({'|'.join(r['codes'])})"
        if r["attested"]:
            kind += " (attested by the investigator)"
        print(f"{r['name']:{width}}  {r['source']:45}  {kind}")
        print(f"{'':{width}}  used by: {', '.join(r['used_by'])}")
        for code in r.get("fhir_codes") or ():
            if "element" in code:
                print(f"{'':{width}}  from {code['element']}")
                continue
            how = (" (prefix)" if code.get("match") else "") + (" (means none)" if code.get("means") else "")
            print(f"{'':{width}}  from {code['resource']} {code['system']}|{code['code']}{how} {code['display']}")
    return 0
