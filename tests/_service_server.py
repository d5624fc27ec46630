"""A real ``escalation-rules serve`` process on a loopback port for the service tests, and a small HTTP client.

Not a test module: the service tests import it (``from _service_server import ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from escalation_rules.service.auth import hash_token

ROOT = Path(__file__).resolve().parent.parent

#: Test people: name -> (person, roles per trial).  Tokens are made per server.
PEOPLE: dict[str, tuple[str, dict[str, list[str]]]] = {
    "admin": ("A. Admin", {"*": ["admin"]}),
    "investigator": ("Dr L. Wang", {"demo": ["investigator"], "meeting": ["investigator"], "load": ["investigator"]}),
    "sponsor": ("R. Zhou", {"demo": ["sponsor"], "meeting": ["sponsor"]}),
    "monitor": ("K. Ito", {"demo": ["monitor"], "meeting": ["monitor"], "load": ["monitor"]}),
    "other": ("Dr B. Other", {"trial-b": ["investigator"]}),
    "dual": ("Dr D. Dual", {"demo": ["investigator", "sponsor"]}),
}

#: The worked example (examples/nct07117175_trial.sh) up to the first joint decision: P01 at dose 1, no DLT.
WORKED_EXAMPLE: list[dict[str, Any]] = [
    {"type": "screened", "at": "2025-03-03T09:00Z", "patient": "P01", "eligible": True},
    {"type": "enrolled", "at": "2025-03-04T10:00Z", "patient": "P01", "dose": 1, "cohort": 1},
    {"type": "infused", "at": "2025-03-05T16:00Z", "patient": "P01", "date": "2025-03-05"},
    {"type": "ae_reported", "at": "2025-03-06T09:00Z", "patient": "P01", "ae": "crs-1",
     "term": "Cytokine release syndrome", "category": "crs", "components": {"fever": True},
     "onset": "2025-03-06T08:00Z", "attribution": "probable"},
    {"type": "ae_updated", "at": "2025-03-08T13:00Z", "patient": "P01", "ae": "crs-1",
     "resolved": "2025-03-08T12:00Z"},
    {"type": "dlt_adjudicated", "at": "2025-03-19T10:00Z", "patient": "P01", "dlt": False,
     "note": "day-14 safety assessment"},
]


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_users(path: Path) -> dict[str, str]:
    """Write a users file for :data:`PEOPLE`; return name -> token (the file holds only their hashes)."""
    tokens, lines = {}, []
    for name, (person, roles) in PEOPLE.items():
        token = f"test-token-{name}-0123456789"
        tokens[name] = token
        table = ", ".join(f'"{t}" = {json.dumps(r)}' for t, r in roles.items())
        lines += ["[[users]]", f"person = {json.dumps(person)}", f'token_hash = "{hash_token(token)}"',
                  f"roles = {{ {table} }}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return tokens


class Server:
    """A running server: its base URL, data folder and the users' tokens."""

    def __init__(self, url: str, data: Path, tokens: Mapping[str, str], proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.data = data
        self.tokens = dict(tokens)
        self.proc = proc
        self.default_who: str | None = None  # the token sent when a call names nobody ("" sends none)

    def call(self, method: str, path: str, body: Any = None, *, who: str | None = None, raw: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float = 60) -> tuple[int, Any]:
        """One request; the status and the decoded JSON body (text for other content types)."""
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        who = self.default_who if who is None else who
        if who:
            sent["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload, kind = response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as err:
            status, payload, kind = err.code, err.read(), err.headers.get("content-type", "")
        text = payload.decode("utf-8")
        return status, json.loads(text) if kind.startswith("application/json") else text


@contextlib.contextmanager
def running_server(tmp: Path, *, users: bool = True, extra: tuple[str, ...] = ()) -> Iterator[Server]:
    """Start ``escalation-rules serve`` on a free loopback port; stop it afterwards."""
    data = tmp / "trials"
    tokens = write_users(tmp / "users.toml") if users else {}
    port = free_port()
    command = [sys.executable, "-m", "escalation_rules.cli", "serve", "--port", str(port), "--data", str(data),
               "--protocols", str(ROOT / "spec"), *(["--users", str(tmp / "users.toml")] if users else []), *extra]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(f"http://127.0.0.1:{port}", data, tokens, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(tmp / 'server.log').read_text()}")
            try:
                if server.call("GET", "/v1/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer in 60 s: {(tmp / 'server.log').read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
