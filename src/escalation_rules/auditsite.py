"""``escalation-rules docs SPEC --out DIR``: an audit website for any protocol, no Sphinx project needed.

The command writes a one-page Sphinx project that uses
:mod:`escalation_rules.sphinx` on SPEC, builds it to HTML in DIR and prints
the path of the page.  It needs the ``docs`` extra (Sphinx; the furo theme
is used when it is installed) and Graphviz's ``dot`` for the diagram.  It
makes no network request.  With ``--pdf`` it also prints the page to
``DIR/audit.pdf`` with headless Chromium (which must be installed): the PDF
is the HTML page as a browser prints it, not a separately typeset document
(A4; wide tables and the diagrams on landscape pages).

The page is stamped with the SHA-256 of every file it was built from, the
package version and the date; ``escalation-rules docs --check SITE SPEC``
(:func:`check_site`) says whether a built site still matches SPEC's files:
exit status 0 when it does, 1 naming each changed, added or removed file,
2 on a usage error.

Examples
--------
>>> print(index_rst("NCT07117175", "spec/nct07117175").splitlines()[0])
NCT07117175: audit of the dose-escalation rules
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .auditdoc import (
    design_settings,
    find_vectors_dir,
    protocol_files,
    read_stamps,
    run_vectors,
    scenarios_of,
    sha256_of,
    stamp_differences,
    stamp_files,
)
from .designs import DESIGNS
from .errors import EscalationRulesError, install_hint
from .spec import resolve_spec, settings_text, spec_path

__all__ = ["build_site", "check_site", "conf_py", "index_rst", "print_pdf", "register"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes Sphinx may put in its messages


def index_rst(protocol_id: str, spec: str, doses: int | None = None, vectors: str | None = None,
              command: str | None = None, params: Mapping[str, Any] | None = None) -> str:
    """The page source: a title, how to read the page, and the ``escalation-protocol`` directive."""
    title = f"{protocol_id}: audit of the dose-escalation rules"
    options = ""
    if doses is not None:
        options += f"   :doses: {doses}\n"
    if params:
        options += "   :set: " + " ".join(f"{k}={v}" for k, v in sorted(params.items())) + "\n"
    if vectors is not None:
        options += f"   :vectors: {vectors}\n"
    if command is not None:
        options += f"   :command: {command}\n"
    return (
        f"{title}\n{'=' * len(title)}\n\n"
        "This document shows the dose-escalation rules of the protocol exactly as the decision software runs "
        "them. It is produced from the protocol file itself, and the checks it reports were run on the same "
        "rules. How to read it:\n\n"
        "* *Overview* names the protocol, the doses and who signs decisions.\n"
        "* *Provenance of this page* gives the SHA-256 of every file the page was built from, the package version "
        "and the date, and the command that says whether the page still matches the files.\n"
        "* *Decision tables* list, for each stage of the trial, what happens after a cohort of patients has been "
        "observed, with the protocol clause each row encodes.\n"
        "* *State graph* draws every way the trial can unfold, condensed into one box per dose and decision.\n"
        "* *Decision points* list the choices the rules leave to people, and who must sign each one.\n"
        "* *Verification report* states every safety property that was checked on every possible course of the "
        "trial, with the command that repeats the check.\n"
        "* *Traceability matrix* links each protocol clause to the rules and to the test cases.\n\n"
        f".. escalation-protocol:: {spec}\n{options}\n"
    )


def conf_py(title: str) -> str:
    """A minimal ``conf.py`` for the generated project."""
    theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
    return (
        f"project = {title!r}\n"
        "extensions = ['escalation_rules.sphinx']\n"
        f"html_theme = {theme!r}\n"
        f"html_title = {title!r}\n"
        "html_show_sourcelink = False\n"
        "html_copy_source = False\n"
        "escalation_rules_root = '/'\n"
        "html_static_path = ['_static']\n"
        "html_css_files = ['audit.css']\n"
    )


#: Wider pages, so the tables and the diagram have room (furo's column is narrow for them).
AUDIT_CSS = """@media (min-width: 95em) { .content { width: 60em; } }
@media (min-width: 110em) { .content { width: 68em; } }
table.docutils td, table.docutils th { vertical-align: top; }
@media print { .skip-to-content, .theme-toggle-container, .back-to-top { display: none !important; } }
"""


def build_site(spec: str, out: Path, doses: int | None = None, vectors: str | None = None,
               warnings_as_errors: bool = False, params: Mapping[str, Any] | None = None) -> tuple[Path, list[str]]:
    """Build the audit site of ``spec`` into ``out``; returns the page's path and the build warnings.

    Raises
    ------
    EscalationRulesError
        When the protocol is refused, Sphinx is not installed, or (with
        ``warnings_as_errors``) the build warns.
    """
    try:
        from sphinx.application import Sphinx
        from sphinx.errors import SphinxError
        from sphinx.util.docutils import docutils_namespace
    except ImportError:
        raise EscalationRulesError(f"docs: Sphinx is not installed; install the 'docs' extra, "
                                   f"{install_hint('docs')}") from None
    protocol = resolve_spec(spec, doses, params)  # refuse a bad SPEC, scenarios or vectors before building anything
    scenarios_of(protocol)
    if vectors is not None and not Path(vectors).is_dir():
        raise EscalationRulesError(f"--vectors {vectors}: no such folder (expected a folder of *.json vectors)")
    target = spec if spec in DESIGNS else str(spec_path(spec).resolve())
    if vectors is None and spec in DESIGNS:  # a design's vectors: spec/vectors below where the command runs
        found = find_vectors_dir(Path("spec") / "x")
        vectors = None if found is None else str(found)
    vectors_abs = str(Path(vectors).resolve()) if vectors is not None else None
    out = out.resolve()
    warnings = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="escalation-docs-") as tmp:
        src = Path(tmp) / "source"
        src.mkdir()
        title = f"{protocol.id} audit"
        (src / "conf.py").write_text(conf_py(title), encoding="utf-8")
        (src / "_static").mkdir()
        (src / "_static" / "audit.css").write_text(AUDIT_CSS, encoding="utf-8")
        command = f"{spec} {settings_text(params)}".strip()
        (src / "index.rst").write_text(index_rst(protocol.id, target, doses, vectors_abs, command=command,
                                                 params=params),
                                       encoding="utf-8")
        try:
            with docutils_namespace():  # each build starts from docutils' own registries
                app = Sphinx(str(src), str(src), str(out), str(Path(tmp) / "doctrees"), "html",
                             status=None, warning=warnings, freshenv=True, warningiserror=warnings_as_errors)
                app.build(force_all=True)
        except SphinxError as err:
            raise EscalationRulesError(f"docs: the build failed: {str(err).splitlines()[0]}") from None
    lines = [_ANSI.sub("", ln) for ln in warnings.getvalue().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR:" in ln or "CRITICAL:" in ln]
    if errors:
        raise EscalationRulesError(f"docs: the build failed: {errors[0]}")
    if warnings_as_errors and lines:
        raise EscalationRulesError(f"docs: the build warned: {lines[0]}")
    return out / "index.html", lines


def print_pdf(page: Path, pdf: Path, browser: str | None = None) -> Path:
    """Print an HTML page to PDF with headless Chromium (local file, no network, a fresh profile).

    Raises
    ------
    EscalationRulesError
        When no Chromium is installed or it fails to print.
    """
    exe = browser or next((found for name in ("chromium", "chromium-browser", "google-chrome")
                           if (found := shutil.which(name))), None)
    if exe is None:
        raise EscalationRulesError("docs --pdf: Chromium is needed to print the page to PDF and was not found "
                                   "(Debian: apt-get install chromium)")
    pdf.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="escalation-pdf-") as profile:
        try:
            done = subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
                capture_output=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise EscalationRulesError("docs --pdf: Chromium took longer than 300 s to print the page") from None
    if done.returncode != 0 or not pdf.is_file():
        raise EscalationRulesError(f"docs --pdf: Chromium could not print {page} (exit status {done.returncode})")
    return pdf


def _site_stamp(site: Path, spec: str) -> tuple[Path, dict[str, Any]]:
    """The stamped page of a site (a folder or an HTML file) and its stamp; for a site with several stamped
    pages, the one built from ``spec`` (same argument, or same folder or file name)."""
    if site.is_file():
        pages = [site]
    elif site.is_dir():
        pages = [site / "index.html"] if (site / "index.html").is_file() else []
        pages += sorted(p for p in site.rglob("*.html") if p != site / "index.html" and "_static" not in p.parts)
    else:
        raise EscalationRulesError(f"--check {site}: no such site (expected the folder 'docs --out' wrote, "
                                   "or one of its HTML pages)")
    found: list[tuple[Path, dict[str, Any]]] = []
    for page in pages:
        try:
            text = page.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise EscalationRulesError(f"--check {page}: cannot read the page ({err})") from None
        found.extend((page, stamp) for stamp in read_stamps(text))
        if found and page == site / "index.html":
            break
    if not found:
        raise EscalationRulesError(f"--check {site}: no stamped audit page found (expected an index.html built by "
                                   "'escalation-rules docs' of this version or later)")
    name = Path(spec).name
    if len(found) > 1:
        found = [f for f in found if f[1].get("spec") == spec or Path(str(f[1].get("spec"))).name == name] or found
    if len({json.dumps(stamp, sort_keys=True) for _, stamp in found}) > 1:
        pages_named = ", ".join(sorted({str(page) for page, _ in found}))
        raise EscalationRulesError(f"--check {site}: several stamped audit pages ({pages_named}); give one page")
    return found[0]


def check_site(site: Path, spec: str, doses: int | None = None, vectors: str | None = None,
               params: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """Does an audit site still match the protocol files?  Returns the verdict and a report (lines of text).

    The protocol's files and the conformance vector files that target it are
    hashed now and compared with the SHA-256 the page was stamped with.

    Raises
    ------
    EscalationRulesError
        When SITE has no stamped page or SPEC is no protocol (a usage error, not a mismatch).

    Examples
    --------
    >>> import tempfile
    >>> from escalation_rules import builtin_design, compile_protocol
    >>> from escalation_rules.auditdoc import AuditContext, audit_rst
    >>> ctx = AuditContext.build(compile_protocol(builtin_design("3+3-deescalate", doses=3)), "3+3-deescalate",
    ...                          vectors_dir=Path("spec/vectors"))
    >>> with tempfile.TemporaryDirectory() as site:
    ...     _ = (Path(site) / "index.html").write_text(audit_rst(ctx, ["provenance"]), encoding="utf-8")
    ...     check_site(Path(site), "3+3-deescalate", 3)[0], check_site(Path(site), "3+3-deescalate", 4)[0]
    (True, False)
    """
    page, stamp = _site_stamp(site, spec)
    proto_path = None if spec in DESIGNS else spec_path(spec)  # a path, or a shipped protocol's name
    if proto_path is not None and not protocol_files(proto_path):
        raise EscalationRulesError(f"{spec}: no such protocol file or folder")
    vectors_dir = (Path(vectors) if vectors is not None
                   else find_vectors_dir(proto_path if proto_path is not None else Path("spec") / "x"))
    note = ""
    try:
        protocol = resolve_spec(spec, doses, params)
        results = run_vectors(protocol, vectors_dir, proto_path)
        design_doses: int | None = len(protocol.doses)
    except EscalationRulesError as err:
        if proto_path is None:
            raise
        results, design_doses = [], None
        note = f"the protocol no longer loads ({str(err).splitlines()[0]}); its vectors were not compared"
    current: dict[str, Any] = {"design": None if proto_path is not None else spec, "doses": design_doses,
               "parameters": (design_settings(protocol) or None) if proto_path is None and design_doses else None,
               "files": [{"name": name, "sha256": sha256_of(file)}
                         for name, file in stamp_files(proto_path, vectors_dir, results)]}
    differences = stamp_differences(stamp, current, protocol_only=bool(note))
    if not note and stamp.get("protocol") != protocol.id:
        differences.insert(0, f"different protocol: the page is of {stamp.get('protocol')}, {spec} is {protocol.id}")
    built = f"built {stamp.get('built')} by {stamp.get('package')} {stamp.get('version')}"
    if differences or note:
        lines = [f"{page} does NOT match {spec} ({built}):", *(f"  {d}" for d in differences)]
        if note:
            lines.append(f"  {note}")
        return False, "\n".join(lines)
    counted = Counter("vector" if f["name"].startswith("vectors/") else "protocol" for f in current["files"])
    what = (f"{counted['protocol']} protocol file(s) and " if proto_path is not None
            else f"built-in design {spec} with {design_doses} doses and ") + \
        f"{counted['vector']} vector file(s), SHA-256 as stamped"
    return True, f"{page} matches {spec}: {what} ({built})"


def _cmd_docs(args: argparse.Namespace) -> int:
    if args.check is not None:
        if args.out is not None or args.pdf:
            raise EscalationRulesError("--check compares a built site with the protocol files; "
                                       "give it without --out or --pdf")
        from .cli import parse_design_settings

        ok, report = check_site(Path(args.check), args.spec, args.doses, args.vectors,
                                parse_design_settings(args.design_set))
        print(report)
        return 0 if ok else 1
    if args.out is None:
        raise EscalationRulesError("give --out DIR to build the site, or --check SITE to compare a built site "
                                   "with the protocol files")
    from .cli import parse_design_settings

    page, warnings = build_site(args.spec, Path(args.out), args.doses, args.vectors, args.strict,
                                parse_design_settings(args.design_set))
    for line in warnings:
        print(f"warning: {line}")
    print(f"audit site written: {page}")
    if args.pdf:
        print(f"audit PDF written: {print_pdf(page, page.parent / 'audit.pdf')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``docs`` subcommand."""
    from .cli import add_spec_arguments

    p = subparsers.add_parser("docs", help="build an audit website (HTML) for a protocol")
    add_spec_arguments(p)
    p.add_argument("--out", metavar="DIR", help="folder to write the site to (index.html)")
    p.add_argument("--check", metavar="SITE",
                   help="instead of building, say whether the site SITE (its folder or page) still matches SPEC's "
                        "files by the SHA-256 it was stamped with: exit status 0 when it does, 1 when not "
                        "(naming each changed file), 2 on a usage error")
    p.add_argument("--vectors", metavar="DIR",
                   help="conformance vector folder (default: the 'vectors' folder beside the protocol's folder)")
    p.add_argument("--strict", action="store_true", help="treat build warnings (e.g. Graphviz missing) as errors")
    p.add_argument("--pdf", action="store_true",
                   help="also print the page to DIR/audit.pdf with headless Chromium (must be installed)")
    p.set_defaults(handler=_cmd_docs)
