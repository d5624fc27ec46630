"""``escalation-rules serve``: the HTTP service (registered by :mod:`escalation_rules.cli`).

FastAPI and uvicorn are imported only when the command runs (install them
with the ``serve`` extra), so the rest of the CLI works without them.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["serve", "--data", "/tmp/trials"])
>>> args.host, args.port, args.data
('127.0.0.1', 8000, '/tmp/trials')
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import EscalationRulesError, install_hint

__all__ = ["is_loopback", "register"]



def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``).

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("::1")
    (True, True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _protocol_folders(given: list[str] | None) -> list[Path]:
    """The folders given, else the shipped protocols (package data, in a wheel or an editable install)."""
    if given:
        return [Path(g) for g in given]
    from ..spec import shipped_dir

    shipped = shipped_dir()
    return [shipped] if shipped is not None else []


def _check_address(host: str, port: int) -> None:
    """Refuse an address the server cannot listen on, with one line (before anything is started)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise EscalationRulesError(f"--host {host}: cannot resolve ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise EscalationRulesError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror})") from None


def _import_service() -> Any:
    try:
        from . import app
    except ImportError as err:
        raise EscalationRulesError(f"serve: the service needs FastAPI and uvicorn ({err.name} is missing); install "
                                   f"them {install_hint('serve')}") from None
    return app


def _cmd_serve(args: argparse.Namespace) -> int:
    from .auth import hash_token, load_users, new_token

    if args.hash_token:
        token = sys.stdin.readline().strip()
        print(f'token_hash = "{hash_token(token)}"')
        return 0
    if args.new_token:
        token = new_token()
        print(f"# give this token to the person; it is stored nowhere: {token}")
        print(f'token_hash = "{hash_token(token)}"')
        return 0
    service = _import_service()
    if args.openapi:
        import tempfile

        with tempfile.TemporaryDirectory() as empty:
            app = service.create_app(service.ServiceConfig(Path(empty)))
            sys.stdout.write(service.openapi_document(app))
        return 0
    if args.data is None:
        raise EscalationRulesError("--data: required (the folder of trial stores, one file per trial)")
    if not 0 <= args.port <= 65535:
        raise EscalationRulesError(f"--port: expected 0 to 65535 (got {args.port})")
    if args.max_body < 1024:
        raise EscalationRulesError(f"--max-body: expected at least 1024 bytes (got {args.max_body})")
    users = load_users(args.users) if args.users else None
    if users is None and not is_loopback(args.host):
        raise EscalationRulesError(f"--host {args.host}: without --users the server answers on loopback only "
                                   f"(127.0.0.1, ::1, localhost); give a users file to serve other machines")
    data = Path(args.data)
    if data.exists() and not data.is_dir():
        raise EscalationRulesError(f"--data: {data}: not a folder")
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EscalationRulesError(f"--data: {data}: cannot create: {err.strerror}") from None
    protocols = service.find_protocols(_protocol_folders(args.protocols))
    app = service.create_app(service.ServiceConfig(data, users, protocols, args.max_body))
    _check_address(args.host, args.port)
    import uvicorn

    mode = f"users from {args.users}" if users else "no authentication (loopback only)"
    print(f"escalation-rules serve: http://{args.host}:{args.port}/ (data {data}; {mode}; protocols: "
          f"{', '.join(sorted(protocols)) or 'built-in designs only'})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
    return 0


def register(subparsers: Any) -> None:
    """Add ``serve``."""
    p = subparsers.add_parser("serve", help="the HTTP/JSON service and the meeting page")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data", default=None, metavar="DIR", help="folder of trial stores, one DIR/<trial>.db each")
    p.add_argument("--users", default=None, metavar="FILE",
                   help="users file (TOML: person, token_hash, roles per trial); required off loopback")
    p.add_argument("--protocols", action="append", metavar="DIR",
                   help="folder of protocol folders to serve by name (default: the shipped protocols)")
    p.add_argument("--max-body", type=int, default=1_000_000, metavar="BYTES",
                   help="largest request body accepted (default 1000000)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning)")
    p.add_argument("--openapi", action="store_true", help="print the OpenAPI description and exit")
    p.add_argument("--hash-token", action="store_true",
                   help="read a token (one line, at least 16 characters) on stdin and print its token_hash line")
    p.add_argument("--new-token", action="store_true", help="make a random token and print it with its token_hash")
    p.set_defaults(handler=_cmd_serve)
