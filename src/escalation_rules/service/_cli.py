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
import gc
import ipaddress
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import EscalationRulesError, install_hint

__all__ = ["is_loopback", "register", "worker_app"]



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
    if not 1 <= args.workers <= 64:
        raise EscalationRulesError(f"--workers: expected 1 to 64 processes (got {args.workers})")
    folders = _protocol_folders(args.protocols)
    protocols = service.find_protocols(folders)
    app = service.create_app(service.ServiceConfig(data, users, protocols, args.max_body))
    _check_address(args.host, args.port)
    import uvicorn

    mode = f"users from {args.users}" if users else "no authentication (loopback only)"
    print(f"escalation-rules serve: http://{args.host}:{args.port}/ (data {data}; {mode}; protocols: "
          f"{', '.join(sorted(protocols)) or 'built-in designs only'}"
          f"{f'; {args.workers} worker processes' if args.workers > 1 else ''})", file=sys.stderr, flush=True)
    if args.workers == 1:
        _latency_first()
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
        return 0
    # each worker process builds the same application from what was checked here (the users file is read again)
    os.environ[_WORKER_CONFIG] = json.dumps({"data": str(data.resolve()), "users": args.users and str(
        Path(args.users).resolve()), "protocols": [str(f.resolve()) for f in folders], "max_body": args.max_body})
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                log_level=args.log_level, server_header=False)
    return 0


def _latency_first() -> None:
    """Tune the interpreter for short answers once the application is built.

    The interpreter lock changes hands every millisecond instead of every 5
    (Python's default): the event loop answers decisions while the trials'
    worker threads run the store, and each time a thread comes back from
    SQLite or the network it waits for the lock up to one interval.  The
    objects built at start-up (protocols, tables) are moved out of the
    garbage collector's generations, so a full collection does not walk
    them again while requests wait.
    """
    sys.setswitchinterval(0.001)
    gc.freeze()  # what start-up built lives as long as the server: the collector need not walk it again


#: The environment variable that hands the checked options to ``--workers`` processes.
_WORKER_CONFIG = "ESCALATION_RULES_SERVE_WORKER"


def worker_app() -> Any:
    """The application of one ``serve --workers N`` process (uvicorn calls this in each), from the parent's options."""
    from .auth import load_users

    service = _import_service()
    given = json.loads(os.environ[_WORKER_CONFIG])
    users = load_users(given["users"]) if given["users"] else None
    protocols = service.find_protocols([Path(f) for f in given["protocols"]])
    app = service.create_app(service.ServiceConfig(Path(given["data"]), users, protocols, given["max_body"]))
    _latency_first()
    return app


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
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes sharing the port (default 1); appends to one trial stay one at a time "
                        "across them")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning)")
    p.add_argument("--openapi", action="store_true", help="print the OpenAPI description and exit")
    p.add_argument("--hash-token", action="store_true",
                   help="read a token (one line, at least 16 characters) on stdin and print its token_hash line")
    p.add_argument("--new-token", action="store_true", help="make a random token and print it with its token_hash")
    p.set_defaults(handler=_cmd_serve)
