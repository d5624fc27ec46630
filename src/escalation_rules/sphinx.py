"""A Sphinx extension that renders protocol files into audit documentation.

Enable it in a project's ``conf.py``::

    extensions = ["escalation_rules.sphinx"]
    escalation_rules_root = ".."          # where relative protocol paths start (default: the conf.py folder)

and write, in reStructuredText (or MyST Markdown with ``{escalation-protocol}``)::

    .. escalation-protocol:: spec/nct07117175

for the whole audit page, or one section at a time::

    .. escalation-overview:: spec/nct07117175        (overview and dose ladder)
    .. escalation-tables:: spec/nct07117175          (each stage's decision table)
    .. escalation-diagram:: spec/nct07117175         (the condensed state graph, SVG)
    .. escalation-decisions:: spec/nct07117175       (decision points, options, sign-off)
    .. escalation-eligibility:: spec/nct07117175     (eligibility criteria, when declared)
    .. escalation-dlt:: spec/nct07117175             (the DLT definition, when declared)
    .. escalation-verification:: spec/nct07117175    (every invariant, what was enumerated, how to reproduce)
    .. escalation-traceability:: spec/nct07117175    (clause -> rules -> conformance vectors, with flags)
    .. escalation-oc:: spec/nct07117175              (operating characteristics, when declared)
    .. escalation-provenance:: spec/nct07117175      (SHA-256 of the files read, version, date)

The argument is a protocol file or folder, or a built-in design name with the
``:doses:`` option.  Other options: ``:sections:`` (comma-separated, for
``escalation-protocol``), ``:vectors:`` (the vector folder; default: the
``vectors`` folder beside the protocol's folder, or the
``escalation_rules_vectors`` setting) and ``:command:`` (how the protocol is
named in the printed commands; default: the argument).

The page is generated from the protocol each time the document is read, and
the protocol files are recorded as dependencies, so changing a rule rebuilds
the tables and the diagram.  Diagrams need Graphviz's ``dot`` program; without
it the build warns and shows the transition table only.

``.. escalation-cli::`` prints the help of every subcommand of the installed
command line.  ``.. escalation-optional-module:: NAME`` documents a module with autodoc when
it can be imported and says plainly that it is not available otherwise.

Sphinx is imported only when Sphinx loads the extension, so this module can
be imported (and its helpers used) without the ``docs`` extra.

Examples
--------
>>> spec_files("3+3-deescalate", Path("."))
[]
>>> "protocol.toml" in [p.name for p in spec_files("spec/nct07117175", Path("."))]
True
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import __version__
from .auditdoc import SECTIONS, AuditContext, audit_rst, find_vectors_dir, protocol_files
from .designs import DESIGNS
from .errors import EscalationRulesError
from .graph import compile_protocol
from .spec import resolve_spec, spec_path

if TYPE_CHECKING:  # pragma: no cover
    from docutils import nodes  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from sphinx.application import Sphinx  # type: ignore[import-untyped, import-not-found, unused-ignore]

__all__ = ["DIRECTIVES", "build_context", "cli_help", "exported_by_package", "parse_rst", "setup", "spec_files"]

#: Directive name to the sections it renders.
DIRECTIVES: dict[str, tuple[str, ...]] = {
    "escalation-protocol": tuple(SECTIONS),
    **{f"escalation-{name}": (name,) for name in SECTIONS},
}


def _spec_path(spec: str, root: Path) -> Path | None:
    """A protocol argument as a path: relative to ``root``, else a shipped protocol's name (``None``: neither)."""
    local = root / spec
    try:
        return spec_path(str(local)) if local.exists() or local.with_suffix("").is_dir() else spec_path(spec)
    except EscalationRulesError:
        return None


def spec_files(spec: str, root: Path) -> list[Path]:
    """The files a protocol argument reads (none for a built-in design)."""
    if spec in DESIGNS:
        return []
    path = _spec_path(spec, root)
    if path is None:
        return []
    return protocol_files(path)


def design_settings(text: str) -> dict[str, str]:
    """The ``:set:`` option of the directives, ``NAME=VALUE NAME=VALUE``, as a mapping.

    Examples
    --------
    >>> design_settings("target=0.3 max_n=12")
    {'target': '0.3', 'max_n': '12'}
    """
    from .cli import parse_design_settings

    return parse_design_settings(text.split())


def build_context(spec: str, root: Path, doses: int | None = None, vectors: str | None = None,
                  command: str | None = None, render: bool = True,
                  params: Mapping[str, Any] | None = None) -> AuditContext:
    """Load, compile, verify and render a protocol for an audit page.

    Parameters
    ----------
    spec : str
        A protocol path relative to ``root`` (or absolute), or a built-in design name.
    root : Path
        Where relative paths start.
    doses : int, optional
        For a built-in design.
    vectors : str, optional
        The vector folder, relative to ``root``; default: beside the protocol.
    command : str, optional
        How to name the protocol in the printed commands (default ``spec``).
    render : bool
        Draw the diagram with Graphviz.

    Raises
    ------
    EscalationRulesError
        When the protocol is refused.

    Examples
    --------
    >>> ctx = build_context("3+3-deescalate", Path("."), doses=3, render=False)
    >>> ctx.report.ok, ctx.spec
    (True, '3+3-deescalate')
    """
    if spec in DESIGNS:
        protocol = resolve_spec(spec, doses, params)
        spec_path = None
    else:
        spec_path = _spec_path(spec, root) or root / spec
        protocol = resolve_spec(str(spec_path), doses)
    compiled = compile_protocol(protocol)
    if vectors is not None:
        vectors_dir: Path | None = root / vectors
    elif spec_path is not None:
        vectors_dir = find_vectors_dir(spec_path)
    else:
        vectors_dir = find_vectors_dir(root / "spec" / "x")
    return AuditContext.build(compiled, command or spec, spec_path, vectors_dir, render=render)


def parse_rst(text: str) -> tuple[list[nodes.Node], list[str]]:
    """Parse generated reStructuredText with plain docutils; returns the nodes and any problems found.

    The text uses only standard docutils constructs, so it parses the same
    under a reStructuredText or a MyST host document.  Needs docutils (installed with Sphinx).
    """
    from docutils import nodes  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from docutils.core import publish_doctree  # type: ignore[import-untyped, import-not-found, unused-ignore]

    doc = publish_doctree(text, settings_overrides={
        "doctitle_xform": False, "sectsubtitle_xform": False, "report_level": 5, "halt_level": 5,
        "raw_enabled": True, "file_insertion_enabled": False, "warning_stream": io.StringIO(),
    })
    problems = []
    for msg in list(doc.findall(nodes.system_message)):
        if msg["level"] >= 2:
            problems.append(f"line {msg.get('line', '?')}: {msg.astext().splitlines()[-1]}")
        if msg.parent is not None:
            msg.parent.remove(msg)
    for node in doc.findall(nodes.Element):
        node["ids"] = []
        if isinstance(node, nodes.literal_block):
            node["language"] = "text"  # commands and data, not Python: no highlighting
    return list(doc.children), problems


def cli_help(width: int = 100) -> list[tuple[str, str]]:
    """The ``--help`` text of the command line and of each subcommand, in registration order.

    Examples
    --------
    >>> [name for name, _text in cli_help()][:3]
    ['', 'next', 'verify']
    """
    import argparse
    import functools

    from .cli import build_parser

    formatter = functools.partial(argparse.HelpFormatter, width=width)
    parser = build_parser()
    parser.formatter_class = formatter
    out = [("", parser.format_help())]
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sub.formatter_class = formatter
                out.append((name, sub.format_help()))
    return out


_CACHE: dict[tuple[Any, ...], AuditContext] = {}


def exported_by_package(module: Any) -> list[str]:
    """Names a module exports that ``escalation_rules`` itself re-exports (the same objects).

    Examples
    --------
    >>> import escalation_rules.engine
    >>> "decide" in exported_by_package(escalation_rules.engine)
    True
    """
    import escalation_rules

    names = getattr(module, "__all__", ())
    return [n for n in names
            if n in escalation_rules.__all__ and getattr(module, n, None) is getattr(escalation_rules, n, None)]

#: The stylesheet the extension adds to HTML output.  On screen every table fits its column: cells wrap and long
#: conditions and identifiers break anywhere, and a table that still cannot fit scrolls sideways inside its frame.
#: In print (A4, sidebars left out) the same holds, and every table of five columns or more (class
#: ``escalation-wide``) and the state graph section are printed on landscape pages (the named page
#: ``escalation-wide``), so no column is cut off.
CSS_FILE = "escalation_rules.css"
CSS = """table[class*="escalation-"] { width: 100%; }
table[class*="escalation-"] td, table[class*="escalation-"] th { vertical-align: top; }
table[class*="escalation-"] td { overflow-wrap: anywhere; }
table[class*="escalation-"] code.literal, table[class*="escalation-"] span.pre {
  white-space: normal; overflow-wrap: anywhere; }
.escalation-diagram a { text-decoration: none; }
@page { size: A4 portrait; margin: 12mm; }
@page escalation-wide { size: A4 landscape; margin: 10mm; }
@media print {
  .page, .main, .content, .article-container, article[role=main] {
    display: block !important; width: auto !important; overflow: visible !important; }
  .toc-drawer, .sidebar-drawer, .mobile-header, .theme-toggle-container, .back-to-top, .skip-to-content,
  .related-pages, .bottom-of-page { display: none !important; }
  .table-wrapper { overflow: visible !important; }
  table[class*="escalation-"] { font-size: 9pt; }
  .table-wrapper.escalation-wide, table.escalation-wide, section:has(> .escalation-landscape-section) {
    page: escalation-wide; }
}
"""


def _signature(files: list[Path]) -> tuple[Any, ...]:
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives and settings (called by Sphinx)."""
    from docutils import nodes  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from docutils.parsers.rst import directives  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from docutils.statemachine import StringList  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from sphinx.util import logging  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from sphinx.util.docutils import SphinxDirective  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from sphinx.util.nodes import nested_parse_with_titles  # type: ignore[import-untyped, import-not-found, unused-ignore]

    logger = logging.getLogger(__name__)
    app.add_config_value("escalation_rules_root", ".", "env", types=[str])
    app.add_config_value("escalation_rules_vectors", None, "env", types=[str, type(None)])
    app.add_config_value("escalation_rules_render", True, "env", types=[bool])

    def make(name: str, default_sections: tuple[str, ...]) -> type[SphinxDirective]:
        class AuditDirective(SphinxDirective):
            required_arguments = 1
            has_content = False
            option_spec: ClassVar[dict[str, Any]] = {
                "doses": directives.positive_int,
                "set": directives.unchanged,  # a model-assisted design's parameters: NAME=VALUE NAME=VALUE
                "vectors": directives.unchanged,
                "command": directives.unchanged,
                "sections": directives.unchanged,
            }

            def run(self) -> list[nodes.Node]:
                spec = self.arguments[0]
                root = (Path(app.confdir) / self.config.escalation_rules_root).resolve()
                vectors = self.options.get("vectors", self.config.escalation_rules_vectors)
                sections = default_sections
                if "sections" in self.options:
                    sections = tuple(s.strip() for s in self.options["sections"].split(",") if s.strip())
                files = spec_files(spec, root)
                where = _spec_path(spec, root) or root / spec
                vector_dir = (root / vectors) if vectors else (find_vectors_dir(where) if files else None)
                vector_files = sorted(vector_dir.glob("*.json")) if vector_dir and vector_dir.is_dir() else []
                for f in [*files, *vector_files]:
                    self.env.note_dependency(str(f))
                params = design_settings(self.options.get("set", ""))
                key = (spec, str(root), self.options.get("doses"), tuple(sorted(params.items())), vectors,
                       self.options.get("command"),
                       _signature([*files, *vector_files]), self.config.escalation_rules_render)
                try:
                    ctx = _CACHE.get(key)
                    if ctx is None:
                        ctx = build_context(spec, root, self.options.get("doses"), vectors,
                                            self.options.get("command"), render=self.config.escalation_rules_render,
                                            params=params)
                        _CACHE[key] = ctx
                    href = None
                    if ctx.svg is not None and "diagram" in sections:
                        href = self._publish_svg(ctx.svg, ctx.compiled.protocol.id)
                    text = audit_rst(ctx, sections, href)
                except EscalationRulesError as err:
                    first = str(err).splitlines()[0]  # most messages already start with the protocol's path
                    named = Path(spec).name in first.split(": ", 1)[0]
                    raise self.error(f"{name}: {first}" if named else f"{name}: {spec}: {first}") from None
                if ctx.svg_error and "diagram" in sections and self.config.escalation_rules_render:
                    logger.warning("%s: %s", spec, ctx.svg_error, location=self.get_location())
                found, problems = parse_rst(text)
                for problem in problems:
                    logger.warning("%s: generated page text: %s", spec, problem, location=self.get_location())
                for node in found:
                    for element in node.findall(nodes.Element):
                        if element["names"] or isinstance(element, nodes.section):
                            self.state.document.set_id(element)
                return found

            def _publish_svg(self, svg: str, protocol_id: str) -> str | None:
                """Write the full-size SVG beside the HTML pages; returns its URL relative to this page."""
                if app.builder.format != "html":
                    return None
                digest = hashlib.sha256(svg.encode("utf-8")).hexdigest()[:10]
                name = f"{re.sub(r'[^A-Za-z0-9_.-]', '-', protocol_id)}-{digest}.svg"
                folder = Path(app.outdir) / "_escalation"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg, encoding="utf-8")
                return "../" * self.env.docname.count("/") + f"_escalation/{name}"

        AuditDirective.__name__ = "AuditDirective_" + name.replace("-", "_")
        return AuditDirective

    for directive_name, sections in DIRECTIVES.items():
        app.add_directive(directive_name, make(directive_name, sections))

    class OptionalModule(SphinxDirective):
        """Autodoc a module when it imports; otherwise say plainly that it is not available."""

        required_arguments = 1
        has_content = False

        def run(self) -> list[nodes.Node]:
            name = self.arguments[0]
            try:
                module = importlib.import_module(name)
            except ImportError as err:
                para = nodes.paragraph(text=f"The module {name} is not available in this build ({err}).")
                return [nodes.note("", para)]
            shared = exported_by_package(module)
            options = ["   :members:"] + ([f"   :exclude-members: {', '.join(shared)}"] if shared else [])
            content = StringList([f".. automodule:: {name}", *options, ""], source=self.get_source_info()[0])
            if self.env.doc2path(self.env.docname).suffix == ".md":
                options = [":members:"] + ([f":exclude-members: {', '.join(shared)}"] if shared else [])
                content = StringList([f"```{{automodule}} {name}", *options, "```", ""])
            holder = nodes.section()
            holder.document = self.state.document
            nested_parse_with_titles(self.state, content, holder)
            found: list[nodes.Node] = list(holder.children)
            if shared:
                text = (f"Also exported by the package itself, and documented there: {', '.join(shared)}.")
                found.append(nodes.paragraph(text=text))
            return found

    app.add_directive("escalation-optional-module", OptionalModule)

    class CliHelp(SphinxDirective):
        """The help of every subcommand of the installed command line, as literal blocks."""

        has_content = False

        def run(self) -> list[nodes.Node]:
            out: list[nodes.Node] = []
            for title, text in cli_help():
                section = nodes.section(ids=[], names=[f"escalation-rules {title}".strip()])
                section += nodes.title(text=f"escalation-rules {title}".strip())
                section += nodes.literal_block(text, text, language="text")
                self.state.document.note_implicit_target(section, section)
                out.append(section)
            return out

    app.add_directive("escalation-cli", CliHelp)

    def write_css(app: Sphinx, exception: Exception | None) -> None:
        if exception is None and app.builder.format == "html":
            static = Path(app.outdir) / "_static"
            static.mkdir(parents=True, exist_ok=True)
            (static / CSS_FILE).write_text(CSS, encoding="utf-8")

    app.add_css_file(CSS_FILE)
    app.connect("build-finished", write_css)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
