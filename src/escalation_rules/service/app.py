"""The HTTP/JSON service: the engine, eligibility screening and the trial store over ``/v1``, and the meeting page.

Built with FastAPI (routing, the OpenAPI 3.1 description) on uvicorn.  The
engine is synchronous, so every endpoint is a plain function that FastAPI
runs in its thread pool: a slow request never blocks the others.  Appends to
one trial are serialised by a lock per trial (and by the store's own
``BEGIN IMMEDIATE`` transaction), so concurrent clients lose and duplicate
nothing.

Errors are JSON ``{"error": LINE, "problems": [LINE, ...]}`` with the
one-line messages the CLI prints: 401 no or unknown token, 403 a role that
does not allow the request, 404 an unknown protocol or trial, 409 a trial
that exists already, 413 a body over the limit, 422 refused input.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

import attrs
from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._attrs import value_repr
from ..designs import DESIGNS
from ..errors import EscalationRulesError
from ..protocol import Protocol, protocol_from_mapping
from ..trial.events import format_time
from . import _trials
from ._ledger import Ledger
from .auth import SIGNING_ROLES, TRIAL_ID, WRITING_ROLES, User, Users

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["MAX_BATCH", "MAX_BODY", "ServiceConfig", "ServiceError", "create_app", "find_protocols"]

#: Default limit of a request body, in bytes.
MAX_BODY = 1_000_000

#: The most events one request may append.
MAX_BATCH = 1000

#: The longest Idempotency-Key accepted.
MAX_KEY = 128

_POLICIES = ("default", "most-aggressive", "most-cautious")

#: Location parts that name a union's member type rather than a field.
_TYPE_TAG = re.compile(r"^(str|int|float|bool|dict|list)(\[.*\])?$|^function-")


class ServiceError(Exception):
    """A refused request: HTTP status and one line per problem."""

    def __init__(self, status: int, problems: list[str] | str) -> None:
        self.status = status
        self.problems = [problems] if isinstance(problems, str) else list(problems) or ["refused"]
        super().__init__(self.problems[0])


@attrs.frozen
class ServiceConfig:
    """What a server serves: the data folder, its users (None: no authentication, loopback only), its protocols."""

    __repr__ = value_repr

    data: Path
    users: Users | None = None
    protocols: Mapping[str, Path] = attrs.field(factory=dict)
    max_body: int = MAX_BODY


def find_protocols(folders: list[Path]) -> dict[str, Path]:
    """The protocols in folders: each sub-folder holding ``protocol.toml``, named by the folder (lower case).

    Examples
    --------
    >>> sorted(find_protocols([Path("spec")]))
    ['nct07117175']
    """
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise EscalationRulesError(f"--protocols: {folder}: no such folder")
        for sub in sorted(folder.iterdir()):
            if (sub / "protocol.toml").is_file():
                found.setdefault(sub.name.lower(), sub)
    return found


# ---------------------------------------------------------------- request and response shapes


class ErrorBody(BaseModel):
    """Every refusal: the first problem, and all of them (one line each)."""

    error: str
    problems: list[str]


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (401, "no token, or a token the server does not know"),
        (403, "the caller's roles do not allow this"),
        (404, "no such protocol or trial"),
        (413, "the request body is over the limit"),
        (422, "the input was refused (the CLI's one-line messages)"),
    )}


class DecideRequest(BaseModel):
    """A history: an outcome string (``"1N [escalate] 2NNN"``) or a list of entries (``next --history-json``)."""

    model_config = ConfigDict(extra="forbid")
    history: str | list[dict[str, Any]] = Field(
        default="", description="outcome string, or entries such as {\"dose\": 1, \"outcomes\": \"N\"}",
        examples=["1N [escalate] 2NNN"])


class OcRequest(BaseModel):
    """Exact operating characteristics under true DLT probabilities (``oc --json``)."""

    model_config = ConfigDict(extra="forbid")
    truth: str | list[float] = Field(description="one probability per dose: [0.05, 0.1] or \"1/20,1/10\" (exact)",
                                     examples=[[0.05, 0.1, 0.2, 0.35]])
    policy: str | dict[str, str] = Field(default="default", description=f"one of {', '.join(_POLICIES)}, or a "
                                                                        f"table of rule id to option id")
    target: float | str = Field(default="0.3", description="target DLT probability defining the true MTD")
    overdose_patients: int = Field(default=3, description="report P(this many or more patients above the true MTD)")
    bounds: bool = Field(default=True, description="also compute each safety figure's range over every policy")


class CreateTrial(BaseModel):
    """A new trial: its id (letters, digits, ``-``, ``_``) and a protocol the server knows."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="trial id: letters, digits, '-' and '_', at most 64", examples=["demo"])
    protocol: str = Field(description="a protocol name from GET /v1/protocols", examples=["nct07117175"])
    doses: int | None = Field(default=None, description="number of doses of a built-in design")


_EVENTS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "description": "one trial event, or a non-empty list of them (one transaction); the event contract is "
                       "spec/trial/event.schema.json",
        "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "minItems": 1}]}}},
}

_RECORD_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "description": "a patient record (the screen command's PATIENT.json; "
                                         "spec/patients/patient-record.schema.json)"}}},
}

#: A JSON body read as it is (its schema is given by openapi_extra): our own checks word the refusals.
_RAW_BODY = Body(default=None, include_in_schema=False)


class _NdJson(Response):
    media_type = "application/x-ndjson"


# ---------------------------------------------------------------- middleware


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, before the endpoint sees it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > self.limit:
                    await _send_error(send, 413 if length > self.limit else 400,
                                      f"request body: {value.decode('latin-1')[:20]} bytes; the limit is "
                                      f"{self.limit} bytes" if length > self.limit
                                      else "Content-Length: expected a number of bytes")
                    return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    raise _TooLarge()
            return message

        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if too_large:  # the framework turned the refused read into its own answer: send ours instead
                if not started:
                    started = True
                    await _send_error(send, 413, f"request body: more than {self.limit} bytes; the limit is "
                                                 f"{self.limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, f"request body: more than {self.limit} bytes; the limit is "
                                             f"{self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _send_error(send: Send, status: int, line: str) -> None:
    body = json.dumps({"error": line, "problems": [line]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Answers:
    """Decisions already given, by (protocol, doses, history key): decide is a pure function of these.

    Only the event loop reads and writes it; a history longer than
    :data:`KEEP` characters is not kept, and the table is emptied when full.
    """

    KEEP = 2048
    SIZE = 4096

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int | None, str], bytes] = {}
        self._running: dict[tuple[str, int | None, str], asyncio.Future[bytes]] = {}

    def get(self, protocol: str, doses: int | None, history: str) -> bytes | None:
        return self._kept.get((protocol, doses, history))

    def keep(self, protocol: str, doses: int | None, history: str, answer: bytes) -> None:
        if len(history) <= self.KEEP:
            if len(self._kept) >= self.SIZE:
                self._kept.clear()
            self._kept[(protocol, doses, history)] = answer

    async def answer(self, protocol: str, doses: int | None, history: str,
                     compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The kept answer, else ``compute()``'s, kept; the same question asked while it runs waits for that run
        (a burst of one new history costs one decision, not one per request).  A refusal is not kept."""
        key = (protocol, doses, history)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        if len(history) > self.KEEP:
            return await compute()
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(compute())
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def _finished(self, key: tuple[str, int | None, str], done: asyncio.Future[bytes]) -> None:
        del self._running[key]
        if not done.cancelled() and done.exception() is None:
            self.keep(*key, done.result())


_DECIDE_PATH = re.compile(r"^/v1/protocols/([^/]+)/decide$")

#: The largest body a kept decision is answered for before routing (longer ones take the full route).
_QUICK_BODY = 4096


class QuickDecide:
    """Answer a decide that was answered before straight from the event loop, before the framework's routing.

    Only the plainest request qualifies: ``POST /v1/protocols/NAME/decide``
    without a query, ``Content-Type: application/json``, a body of at most
    4 KiB that is ``{"history": "..."}`` (or ``{}``), a token the server has
    already checked and knows (or no users file), and a history whose
    answer is kept.  The answer is then the same bytes with the same headers
    as the endpoint sends.  Everything else, a refusal included, goes on to
    the endpoint unchanged (the body read so far is handed on).
    """

    def __init__(self, app: ASGIApp, answers: Answers, users: Users | None, limit: int) -> None:
        self.app = app
        self.answers = answers
        self.users = users
        self.limit = min(limit, _QUICK_BODY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (_DECIDE_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST"
                 and not scope.get("query_string") else None)
        if match is None or not self._plain(scope["headers"]):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size, complete = 0, False
        while size <= self.limit:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                complete = size <= self.limit
                break
        answer = self._kept(match.group(1), b"".join(m.get("body", b"") for m in read)) if complete else None
        if answer is None:
            await self.app(scope, _replaying(read, receive), send)
            return
        headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _plain(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """A JSON body, and a known token (or none needed); each header once."""
        seen: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in (b"authorization", b"content-type"):
                if name in seen:
                    return False
                seen[name] = value
        if seen.get(b"content-type") != b"application/json":
            return False
        if self.users is None:
            return True
        scheme, _, token = seen.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        known, user = self.users.remembered(token.strip())
        return known and user is not None

    def _kept(self, protocol: str, body: bytes) -> bytes | None:
        try:
            request = json.loads(body)
        except ValueError:
            return None
        if not isinstance(request, dict) or not set(request) <= {"history"}:
            return None
        history = request.get("history", "")
        return self.answers.get(protocol, None, "s" + history) if isinstance(history, str) else None


def _replaying(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


# ---------------------------------------------------------------- the application


@attrs.frozen
class Caller:
    """Who is asking: the authenticated user, or nobody when the server runs without a users file."""

    __repr__ = value_repr

    user: User | None

    @property
    def person(self) -> str:
        return self.user.person if self.user is not None else "anonymous (no users file)"

    def roles(self, trial: str) -> tuple[str, ...]:
        return self.user.roles_for(trial) if self.user is not None else ("investigator", "sponsor", "admin")


def _error_response(status: int, problems: list[str]) -> JSONResponse:
    return JSONResponse({"error": problems[0], "problems": problems}, status_code=status)


def _lines(err: Exception, data: Path) -> list[str]:
    text = str(err).replace(f"{data}/", "")
    return [line for line in text.splitlines() if line.strip()] or [type(err).__name__]


def _static_root() -> Path:
    return Path(str(resources.files("escalation_rules.service") / "static"))


def _template(name: str) -> str:
    return (resources.files("escalation_rules.service") / "templates" / name).read_text(encoding="utf-8")


def create_app(config: ServiceConfig) -> FastAPI:
    """The ASGI application serving ``config``.

    Examples
    --------
    >>> import tempfile
    >>> app = create_app(ServiceConfig(Path(tempfile.mkdtemp()), protocols=find_protocols([Path("spec")])))
    >>> app.openapi()["openapi"], "/v1/protocols/{protocol}/decide" in app.openapi()["paths"]
    ('3.1.0', True)
    """
    data = config.data
    locks: dict[str, threading.Lock] = {}
    lock_files: dict[str, IO[bytes]] = {}
    locks_guard = threading.Lock()
    ledgers: list[Ledger] = []

    def ledger() -> Ledger:
        with locks_guard:
            if not ledgers:
                ledgers.append(Ledger(data))
            return ledgers[0]

    app = FastAPI(
        title="escalation_rules service", version=__version__, openapi_url="/v1/openapi.json",
        docs_url=None, redoc_url=None,
        description="The dose-escalation engine, eligibility screening and the trial record over HTTP/JSON. "
                    "Authenticate with `Authorization: Bearer TOKEN`. Errors are `{\"error\", \"problems\"}`. "
                    "`POST /v1/trials/{trial}/events` takes an `Idempotency-Key` header: a retry with the same "
                    "key and body answers the first answer again and records nothing.")
    answers = Answers()
    app.add_middleware(BodyLimit, limit=config.max_body)
    app.add_middleware(QuickDecide, answers=answers, users=config.users, limit=config.max_body)
    app.mount("/static", StaticFiles(directory=_static_root()), name="static")

    @app.exception_handler(ServiceError)
    def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error_response(exc.status, exc.problems)

    @app.exception_handler(EscalationRulesError)
    def _refused(request: Request, exc: EscalationRulesError) -> JSONResponse:
        problems = getattr(exc, "problems", None)
        lines = [str(p).replace(f"{data}/", "") for p in problems] if problems else _lines(exc, data)
        return _error_response(422, lines)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        found: dict[str, list[str]] = {}
        for e in exc.errors():
            # a union's members appear in the location (history.str, history.list[...]): one line per place
            where = ".".join(str(p) for p in e.get("loc", ()) if not _TYPE_TAG.match(str(p)))
            got = e.get("input")
            if isinstance(got, bytes | bytearray) or e.get("type") == "json_invalid":
                found.setdefault(where, []).append("expected a JSON body (Content-Type: application/json)")
                continue
            shown = "" if e.get("type") == "missing" else f" (got {json.dumps(got, default=str)[:60]})"
            found.setdefault(where, []).append(f"{e.get('msg', 'invalid')}{shown}")
        lines = [f"{where}: {' or '.join(dict.fromkeys(msgs))}" for where, msgs in found.items()]
        return _error_response(422, lines or ["request: invalid"])

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        line = exc.detail if isinstance(exc.detail, str) else "refused"
        if exc.status_code == 400 and "parsing the body" in line:  # e.g. a body that is not UTF-8
            return _error_response(422, ["body: not JSON that can be read (expected UTF-8 JSON text, not nested "
                                         "too deeply, with Content-Type: application/json)"])
        if exc.status_code == 404 and line == "Not Found":
            line = f"{request.url.path}: no such endpoint (see /v1/openapi.json)"
        elif exc.status_code == 405:
            line = f"{request.method} {request.url.path}: method not allowed"
        response = _error_response(exc.status_code, [line])
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # every method the path answers, across the routes that share it
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
                       for m in (r.methods or ())}
            response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug, never a trace
        return _error_response(500, [f"internal error ({type(exc).__name__}); the request changed nothing it "
                                     f"could not complete"])

    # -- helpers

    def bearer(authorization: str | None) -> str:
        """The token of an ``Authorization: Bearer TOKEN`` header (401 without one)."""
        if not authorization:
            raise ServiceError(401, "Authorization: missing (expected: Bearer TOKEN)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(401, "Authorization: expected: Bearer TOKEN")
        return token.strip()

    def known(user: User | None) -> Caller:
        if user is None:
            raise ServiceError(401, "Authorization: unknown token")
        return Caller(user)

    def caller(authorization: str | None) -> Caller:
        if config.users is None:
            return Caller(None)
        return known(config.users.authenticate(bearer(authorization)))

    async def caller_on_loop(authorization: str | None) -> Caller:
        """:func:`caller` for async endpoints: a token checked before costs one SHA-256 on the event loop; only a
        token not seen yet pays for scrypt, in the thread pool."""
        if config.users is None:
            return Caller(None)
        token = bearer(authorization)
        remembered, user = config.users.remembered(token)
        if not remembered:
            user = await run_in_threadpool(config.users.authenticate, token)
        return known(user)

    def trial_id(trial: str) -> str:
        if not TRIAL_ID.match(trial):
            raise ServiceError(422, f"trial: expected letters, digits, '-' and '_' (at most 64, starting with a "
                                    f"letter or digit) (got {trial[:70]!r})")
        return trial

    def access(trial: str, who: Caller, need: str) -> tuple[str, ...]:
        """Check the caller's roles for ``trial`` allow ``need`` (read, write, admin) and that the trial exists."""
        trial_id(trial)
        roles = who.roles(trial)
        if not roles:
            raise ServiceError(403, f"trial {trial}: {who.person} holds no role for this trial")
        if need == "write" and not set(roles) & set(WRITING_ROLES):
            raise ServiceError(403, f"trial {trial}: {who.person} holds {', '.join(roles)}, which records nothing "
                                    f"(read only)")
        if need == "admin" and "admin" not in roles:
            raise ServiceError(403, f"trial {trial}: creating a trial needs the admin role ({who.person} holds "
                                    f"{', '.join(roles)})")
        if need != "admin" and not _trials.exists(data, trial):
            raise ServiceError(404, f"trial {trial}: no such trial")
        return roles

    @lru_cache(maxsize=256)
    def _protocol(name: str, doses: int | None) -> Protocol:
        from ..graph import explore_merged
        from ..spec import resolve_spec

        if name in DESIGNS:
            protocol = resolve_spec(name, doses)
        else:
            raw = shipped(name, doses)
            protocol = protocol_from_mapping(raw["data"], raw["source"], raw["owners"])
        explore_merged(protocol)  # refuse a protocol that fails its build checks
        return protocol

    def shipped(name: str, doses: int | None) -> dict[str, Any]:
        """A served protocol's raw data, its files named from the protocols folder (no server paths shown)."""
        if name not in config.protocols:
            known = ", ".join([*sorted(config.protocols), *sorted(DESIGNS)])
            raise ServiceError(404, f"protocol {name[:70]!r}: not known to this server (known: {known})")
        if doses is not None:
            raise ServiceError(422, f"doses: applies to built-in designs only; {name} declares its ladder")
        path = config.protocols[name]
        shown = f"{path.parent.name}/{path.name}"
        raw = _trials.raw_protocol(str(path), None)
        return {"source": shown, "data": raw["data"],
                "owners": {k: v.replace(str(path), shown, 1) for k, v in raw["owners"].items()}}

    def load(name: str, doses: int | None) -> Protocol:
        if doses is not None and not 1 <= doses <= 40:
            raise ServiceError(422, f"doses: expected 1 to 40 (got {doses})")
        return _protocol(name, doses)


    @contextmanager
    def trial_lock(trial: str) -> Iterator[None]:
        """Appends to (and the creation of) one trial one at a time: in this process, and across the processes
        serving the same data folder (``serve --workers``, or two servers) by an advisory lock on a file."""
        with locks_guard:
            lock = locks.setdefault(trial, threading.Lock())
        with lock:
            if fcntl is None:  # pragma: no cover - no advisory file locks here: one process per data folder
                yield
                return
            handle = lock_files.get(trial)
            if handle is None:
                folder = data / ".locks"
                folder.mkdir(exist_ok=True)
                handle = lock_files[trial] = open(folder / f"{trial}.lock", "a+b")  # noqa: SIM115 (kept open)
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def authenticated(authorization: str | None = Header(default=None)) -> None:
        """Any known token (a protocol's tables, decisions and screening are for the people of the server)."""
        await caller_on_loop(authorization)

    signed_in = [Depends(authenticated)]

    # -- health and the caller

    @app.get("/v1/health", tags=["service"], summary="Health and version")
    def health() -> dict[str, str]:
        """200 with the package version while the server runs."""
        return {"status": "ok", "version": __version__}

    @app.get("/v1/whoami", tags=["service"], summary="The authenticated person and their roles",
             responses={401: _ERRORS[401]})
    def whoami(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """The person a token belongs to and the roles they hold per trial (``*``: every trial)."""
        who = caller(authorization)
        if who.user is None:
            return {"person": who.person, "roles": {"*": list(who.roles("*"))}, "authenticated": False}
        return {"person": who.person, "roles": {t: list(r) for t, r in who.user.roles.items()},
                "authenticated": True}

    # -- protocols

    @app.get("/v1/protocols", tags=["protocols"], summary="The protocols this server knows",
             dependencies=signed_in, responses={401: _ERRORS[401]})
    def list_protocols() -> dict[str, Any]:
        """Shipped protocols (by folder name) and built-in designs (take ``?doses=N``, default 5)."""
        shipped = [{"name": n, "kind": "protocol", "id": _protocol(n, None).id, "title": _protocol(n, None).title}
                   for n in sorted(config.protocols)]
        designs = [{"name": n, "kind": "design", "id": n, "title": n} for n in sorted(DESIGNS)]
        return {"protocols": [*shipped, *designs]}

    @app.get("/v1/protocols/{protocol}", tags=["protocols"], summary="A protocol's ladder and tables",
             dependencies=signed_in,
              responses={c: _ERRORS[c] for c in (401, 404, 422)})
    def show(protocol: str, doses: int | None = Query(default=None, description="doses of a built-in design")
             ) -> dict[str, Any]:
        """The same content as ``escalation-rules show SPEC --json``."""
        from ..describe import protocol_summary
        from ..graph import compile_protocol

        return protocol_summary(compile_protocol(load(protocol, doses)))

    @app.get("/v1/protocols/{protocol}/data-items", tags=["protocols"],
             summary="The data items the eligibility criteria read", dependencies=signed_in,
              responses={c: _ERRORS[c] for c in (401, 404, 422)})
    def data_items(protocol: str, doses: int | None = None) -> list[dict[str, Any]]:
        """The same content as ``escalation-rules data-items SPEC --json``."""
        from ..eligibility import data_dictionary, load_eligibility

        return data_dictionary(load_eligibility(load(protocol, doses)))

    def decided(protocol: str, doses: int | None, history: str) -> bytes:
        """The encoded decision (``history``: ``s`` and an outcome string, or ``j`` and JSON entries)."""
        from ..engine import decide
        from ..history import parse_history_json

        p = load(protocol, doses)
        entries = history[1:] if history.startswith("s") else parse_history_json(
            {"history": json.loads(history[1:])}, "history")
        return json.dumps(decide(p, entries).to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    for name in config.protocols:  # built once at start (and a first decision made, which fills the engine's
        with contextlib.suppress(EscalationRulesError):  # tables), not by the first requests all at once; a refused
            decided(name, None, "s")  # protocol is refused with its message on each request naming it

    @app.post("/v1/protocols/{protocol}/decide", tags=["protocols"], summary="The decision after a history",
              response_model=dict[str, Any], dependencies=signed_in,
              responses={c: _ERRORS[c] for c in (401, 404, 413, 422)})
    async def decide_endpoint(protocol: str, body: DecideRequest, doses: int | None = None) -> Response:
        """Exactly the object ``escalation-rules next SPEC OUTCOMES --json`` prints."""
        history = ("s" + body.history if isinstance(body.history, str)
                   else "j" + json.dumps(body.history, sort_keys=True, separators=(",", ":")))
        # the engine runs in the thread pool; a kept answer is sent from the event loop
        answer = await answers.answer(protocol, doses, history,
                                      lambda: run_in_threadpool(decided, protocol, doses, history))
        return Response(answer, media_type="application/json")

    @app.post("/v1/protocols/{protocol}/screen", tags=["protocols"], summary="Screen a patient record",
              openapi_extra={"requestBody": _RECORD_BODY},
              dependencies=signed_in,
              responses={c: _ERRORS[c] for c in (401, 404, 413, 422)})
    def screen_endpoint(protocol: str, request_body: Any = _RAW_BODY,
                        doses: int | None = None) -> dict[str, Any]:
        """The ``screen --json`` result: eligible, not eligible and undetermined are 200 (``exit_status`` says
        which, as the CLI's exit status does); a refused record is 422 naming the field."""
        from ..eligibility import load_eligibility, screen

        spec = load_eligibility(load(protocol, doses))
        if not isinstance(request_body, dict):
            raise ServiceError(422, f"record: expected a JSON object (got {type(request_body).__name__})")
        return screen(spec, request_body, "record").to_dict()

    @app.post("/v1/protocols/{protocol}/oc", tags=["protocols"], summary="Exact operating characteristics",
              dependencies=signed_in,
              responses={c: _ERRORS[c] for c in (401, 404, 413, 422)})
    def oc_endpoint(protocol: str, body: OcRequest, doses: int | None = None) -> dict[str, Any]:
        """The object ``escalation-rules oc SPEC --truth ... --json`` prints (built-in designs: 1 to 40 doses)."""
        from ..analysis import operating_characteristics
        from ..analysis.oc import parse_probability, parse_truth

        text = body.truth if isinstance(body.truth, str) else ",".join(repr(v) for v in body.truth)
        truth = parse_truth(text)
        if protocol in DESIGNS:
            if doses is not None and doses != len(truth):
                raise ServiceError(422, f"doses: {doses} but truth gives {len(truth)} probabilities; for a built-in "
                                        f"design the number of doses is the length of truth")
            doses = len(truth)
        p = load(protocol, doses)
        if isinstance(body.policy, str) and body.policy not in _POLICIES:
            raise ServiceError(422, f"policy: expected one of {', '.join(_POLICIES)} or a table of rule id to option "
                                    f"id (got {body.policy[:40]!r})")
        if not 1 <= body.overdose_patients <= 1000:
            raise ServiceError(422, f"overdose_patients: expected 1 to 1000 (got {body.overdose_patients})")
        target = parse_probability(str(body.target), "target")
        result = operating_characteristics(p, truth, policy=body.policy, target=target,
                                           overdose_patients=body.overdose_patients, bounds=body.bounds)
        return result.to_dict()

    # -- trials

    @app.get("/v1/trials", tags=["trials"], summary="The trials the caller may read", responses={401: _ERRORS[401]})
    def list_trials(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Trial ids in the data folder for which the caller holds a role."""
        who = caller(authorization)
        ids = sorted(p.stem for p in data.glob("*.db") if TRIAL_ID.match(p.stem))
        return {"trials": [{"trial": t, "roles": list(who.roles(t))} for t in ids if who.roles(t)]}

    @app.post("/v1/trials", tags=["trials"], summary="Create a trial", status_code=201,
              responses={**{c: _ERRORS[c] for c in (401, 403, 404, 413, 422)},
                         409: {"model": ErrorBody, "description": "the trial exists already"}})
    def create_trial(body: CreateTrial, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """A new trial store ``DATA/<id>.db`` for a protocol the server knows (needs the admin role)."""
        who = caller(authorization)
        trial = trial_id(body.id)
        access(trial, who, "admin")
        load(body.protocol, body.doses)
        design = body.protocol in DESIGNS
        raw = _trials.raw_protocol(body.protocol, body.doses) if design else shipped(body.protocol, None)
        with trial_lock(trial):
            if _trials.exists(data, trial):
                raise ServiceError(409, f"trial {trial}: exists already; a trial is created once")
            made = _trials.create(data, trial, raw)
        _trials.open_connections(data, trial)  # after the lock: an append that came meanwhile goes first
        return made

    @app.get("/v1/trials/{trial}", tags=["trials"], summary="A trial: its protocol and the caller's roles",
             responses={c: _ERRORS[c] for c in (401, 403, 404, 422)})
    def trial_info(trial: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """The trial's protocol (as ``show --json``), and the roles the caller holds for it."""
        from ..describe import protocol_summary
        from ..graph import compile_protocol

        who = caller(authorization)
        roles = access(trial, who, "read")
        p = _trials.protocol(data, trial)
        return {"trial": trial, "person": who.person, "roles": list(roles),
                "signing_roles": [r for r in roles if r in SIGNING_ROLES],
                "protocol": protocol_summary(compile_protocol(p))}

    @app.post("/v1/trials/{trial}/events", tags=["trials"], summary="Record events (atomically)", status_code=201,
              openapi_extra={"requestBody": _EVENTS_BODY},
              responses={c: _ERRORS[c] for c in (401, 403, 404, 413, 422)})
    async def record_events(trial: str, request_body: Any = _RAW_BODY,
                            authorization: str | None = Header(default=None),
                            idempotency_key: str | None = Header(
                                default=None, description="a retry with the same key and body records nothing "
                                                          "and answers the first answer again")) -> dict[str, Any]:
        """Check and append one event or a list of them in one transaction; nothing is stored if one is refused.

        The server attributes the events to the authenticated person: a
        ``decision_signed`` or ``dlt_adjudicated`` event is recorded in the
        caller's own name and role (``person`` and ``role`` may be left out;
        another person, or a role the caller does not hold, is refused).
        ``at`` may be left out: the server's clock fills it.
        """
        who = await caller_on_loop(authorization)
        roles = access(trial, who, "write")
        if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_KEY
                                                and idempotency_key.isprintable()):
            raise ServiceError(422, f"Idempotency-Key: expected 1 to {MAX_KEY} printable characters")
        batch = request_body if isinstance(request_body, list) else [request_body]
        if not batch or (isinstance(request_body, list) and len(batch) > MAX_BATCH):
            raise ServiceError(422, f"events: expected an event object or a list of 1 to {MAX_BATCH} events "
                                    f"(got {len(batch)})")
        # the rest (attribution, the idempotency records, the append and its fsync) is one step in the trial's
        # own worker thread: appends to one trial are serialised, and the event loop keeps answering meanwhile
        return await _trials.on_trial(data, trial, lambda: append(trial, request_body, batch, who, roles,
                                                                  idempotency_key))

    def append(trial: str, request_body: Any, batch: list[Any], who: Caller, roles: tuple[str, ...],
               idempotency_key: str | None) -> dict[str, Any]:
        """Attribute, record and keep the answer to an append (in the trial's worker thread)."""
        labels = ["event" if not isinstance(request_body, list) else f"events[{i}]" for i in range(len(batch))]
        now = format_time(datetime.now(UTC))
        filled = [_attribute(ev, label, who, roles, now) for ev, label in zip(batch, labels, strict=True)]
        request_hash = hashlib.sha256(json.dumps(request_body, sort_keys=True, default=str).encode()).hexdigest()
        with trial_lock(trial), _trials.computing():
            if idempotency_key is None:
                seqs = _trials.record(data, trial, filled, labels)
            else:
                replay = self_replay(trial, idempotency_key, who, request_hash)
                if replay is not None:
                    return replay
                ledger().begin(trial, idempotency_key, who.person, request_hash, _trials.last_seq(data, trial),
                               filled)
                try:
                    seqs = _trials.record(data, trial, filled, labels)
                except EscalationRulesError:
                    ledger().forget(trial, idempotency_key, who.person)
                    raise
            answer = {"trial": trial, "recorded": seqs, "recorded_by": who.person, "replayed": False}
            ledger().keep(trial, idempotency_key, who.person, answer, seqs, now)
        return answer

    def self_replay(trial: str, key: str, who: Caller, request_hash: str) -> dict[str, Any] | None:
        """The first answer to a key again, or None when the request is to be recorded (under the trial's lock)."""
        kept = ledger().answered(trial, key, who.person)
        if kept is None:
            return None
        request, response, head, sent = kept
        if request != request_hash:
            raise ServiceError(422, "Idempotency-Key: already used for another request to this trial")
        if response is not None:
            return {**response, "replayed": True}
        # the earlier attempt stopped between writing the key and keeping the answer: were its events stored?
        stored = _trials.events(data, trial, head)
        if not _trials.same_events(stored, sent):
            ledger().forget(trial, key, who.person)
            return None
        seqs = [e["seq"] for e in stored[:len(sent)]]
        answer = {"trial": trial, "recorded": seqs, "recorded_by": who.person, "replayed": False}
        ledger().keep(trial, key, who.person, answer, seqs, format_time(datetime.now(UTC)))
        return {**answer, "replayed": True}

    @app.get("/v1/trials/{trial}/status", tags=["trials"], summary="The trial's status",
             responses={**{c: _ERRORS[c] for c in (401, 403, 404, 422)},
                        409: {"model": ErrorBody, "description": "the store fails verification"}})
    async def trial_status(trial: str, as_of: str | None = Query(default=None, description="ISO 8601 moment"),
                           authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """The object ``escalation-rules trial status DB --json`` prints (a store that fails verification: 409)."""
        who = await caller_on_loop(authorization)
        access(trial, who, "read")
        result = await _trials.on_trial(data, trial, lambda: _trials.status(data, trial, as_of), read=True)
        if isinstance(result, str):
            raise ServiceError(409, f"trial {trial}: the store fails verification, so no status is given: {result}")
        return result

    @app.get("/v1/trials/{trial}/log", tags=["trials"], summary="The audit log",
             responses={c: _ERRORS[c] for c in (401, 403, 404, 422)})
    def trial_log(trial: str, after: int = Query(default=0, ge=0, description="only events after this number"),
                  authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Every stored event (as ``trial log --json``), each with the person who recorded it through the service."""
        who = caller(authorization)
        access(trial, who, "read")
        people = ledger().people(trial)
        return {"trial": trial, "events": [{**e, "recorded_by": people.get(e["seq"])}
                                           for e in _trials.events(data, trial, after)]}

    @app.get("/v1/trials/{trial}/verify", tags=["trials"], summary="Verify the hash chain",
             responses={c: _ERRORS[c] for c in (401, 403, 404, 422)})
    def trial_verify(trial: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """The report ``trial verify --json`` prints; ``ok`` false names the first broken link (still 200)."""
        who = caller(authorization)
        access(trial, who, "read")
        return _trials.verify(data, trial)

    @app.get("/v1/trials/{trial}/export", tags=["trials"], summary="Every event as JSON lines", response_class=_NdJson,
             responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                              "description": "one event per line, canonical JSON"},
                        **{c: {"description": _ERRORS[c]["description"], "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}} for c in (401, 403, 404, 422)}})
    def trial_export(trial: str, authorization: str | None = Header(default=None)) -> Response:
        """The lines ``trial export`` writes (canonical JSON, in the order recorded)."""
        who = caller(authorization)
        access(trial, who, "read")
        return Response(_trials.export(data, trial), media_type="application/x-ndjson")

    # -- the meeting page

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/meeting")

    @app.get("/meeting", include_in_schema=False)
    def meeting() -> HTMLResponse:
        return HTMLResponse(_template("meeting.html").replace("{{version}}", __version__),
                            headers={"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    def _attribute(event: Any, label: str, who: Caller, roles: tuple[str, ...], now: str) -> Any:
        """The event in the caller's name: ``at`` filled, sign-offs and adjudications in the caller's own role."""
        if not isinstance(event, dict):
            return event  # the store refuses it with its own line
        event = dict(event)
        event.setdefault("at", now)
        if event.get("type") not in ("decision_signed", "dlt_adjudicated") or who.user is None:
            return event
        signing = [r for r in roles if r in SIGNING_ROLES]
        role = event.get("role")
        if role is None:
            if len(signing) != 1:
                held = ", ".join(signing) or "no signing role"
                raise ServiceError(422 if signing else 403, f"{label}: role: missing ({who.person} holds {held} "
                                                            f"for trial; name the role to sign in)")
            event["role"] = signing[0]
        elif role not in signing:
            held = ", ".join(signing) or "no signing role"
            raise ServiceError(403, f"{label}: role: {who.person} holds {held}; a {event.get('type')} event is "
                                    f"recorded in the caller's own role only (got {str(role)[:40]!r})")
        person = event.get("person")
        if person is not None and person != who.person:
            raise ServiceError(403, f"{label}: person: events are recorded in the name of the authenticated "
                                    f"person ({who.person}), not {str(person)[:60]!r}")
        event["person"] = who.person
        return event

    _bearer_openapi(app)
    return app


def _bearer_openapi(app: FastAPI) -> None:
    """Describe ``Authorization`` as the bearer security scheme rather than as a header parameter."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a token from the users file (none when the server runs without one)"}}
        for item in schema["paths"].values():
            for operation in item.values():
                params = operation.get("parameters", [])
                if any(p.get("name") == "authorization" for p in params):
                    operation["parameters"] = [p for p in params if p.get("name") != "authorization"]
                    if not operation["parameters"]:
                        del operation["parameters"]
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_document(app: FastAPI) -> str:
    """The OpenAPI description as the repository ships it (``spec/openapi.json``): sorted keys, two-space indent."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

