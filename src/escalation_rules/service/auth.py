"""The users file of the HTTP service: API tokens (salted scrypt hashes only), people and their roles per trial.

A users file is TOML::

    [[users]]
    person = "Dr L. Wang"
    token_hash = "scrypt$16384$8$1$...$..."     # from: escalation-rules serve --hash-token
    roles = { demo = ["investigator"] }          # trial id (or "*" for every trial) -> roles

Roles: ``investigator`` and ``sponsor`` (record events; sign and adjudicate
in their own role), ``monitor`` (read only), ``admin`` (create trials and
record events; signs nothing unless the person also holds a signing role).
A plaintext ``token`` is refused at load, and so is a ``token_hash`` that is
not a salted scrypt hash.

Examples
--------
>>> line = hash_token("s3cret-token-of-at-least-16", salt=b"0123456789abcdef")
>>> line.startswith("scrypt$16384$8$1$")
True
>>> users = parse_users({"users": [{"person": "Dr A", "token_hash": line, "roles": {"demo": ["investigator"]}}]},
...                     "users.toml")
>>> user = users.authenticate("s3cret-token-of-at-least-16")
>>> user.person, user.roles_for("demo"), user.roles_for("other")
('Dr A', ('investigator',), ())
>>> users.authenticate("wrong") is None
True
>>> users.remembered("s3cret-token-of-at-least-16")[0], users.remembered("a-token-never-presented")
(True, (False, None))
>>> parse_users({"users": [{"person": "Dr A", "token": "plain", "roles": {}}]}, "users.toml")
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
escalation_rules.errors.EscalationRulesError: users.toml: users[0].token: a plaintext token is refused; ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any

import attrs

from .._attrs import value_repr
from .._limits import read_toml
from ..errors import EscalationRulesError

__all__ = ["ROLES", "SIGNING_ROLES", "TRIAL_ID", "User", "Users", "hash_token", "load_users", "new_token",
           "parse_users"]

#: The roles a person may hold for a trial.
ROLES: tuple[str, ...] = ("investigator", "sponsor", "monitor", "admin")

#: The roles that sign decisions and adjudicate DLTs in their own name.
SIGNING_ROLES: tuple[str, ...] = ("investigator", "sponsor")

#: Roles that may record events (a monitor reads only).
WRITING_ROLES: tuple[str, ...] = ("investigator", "sponsor", "admin")

#: What a trial id looks like: it names a file under the data folder, so no dots, slashes or spaces.
TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

#: scrypt cost parameters: about 16 MiB and a few tens of milliseconds per check.
_N, _R, _P = 16384, 8, 1

_HASH = re.compile(r"^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")

#: The shortest token accepted by --hash-token (a guessable token is no protection).
MIN_TOKEN = 16


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """The stored form of a token: ``scrypt$N$r$p$salt$hash`` with a fresh 16-byte salt.

    Raises
    ------
    EscalationRulesError
        For a token shorter than 16 characters or holding white space.
    """
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise EscalationRulesError(f"token: expected at least {MIN_TOKEN} characters without spaces "
                                   f"(got {len(token)} characters)")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(token, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


@attrs.frozen
class User:
    """A person, the hash of their token, and their roles per trial id (``"*"``: every trial)."""

    __repr__ = value_repr

    person: str
    token_hash: str = attrs.field(repr=False)
    roles: Mapping[str, tuple[str, ...]] = attrs.field(eq=False)

    def roles_for(self, trial: str) -> tuple[str, ...]:
        """The roles this person holds for ``trial`` (those given for ``"*"`` included)."""
        held = [*self.roles.get(trial, ()), *self.roles.get("*", ())]
        return tuple(r for r in ROLES if r in held)

    def matches(self, token: str) -> bool:
        """Whether ``token`` hashes to this user's stored hash (constant-time comparison)."""
        m = _HASH.match(self.token_hash)
        if m is None:  # pragma: no cover - refused at load
            return False
        n, r, p = (int(m.group(i)) for i in (1, 2, 3))
        salt, digest = base64.b64decode(m.group(4)), base64.b64decode(m.group(5))
        return hmac.compare_digest(_scrypt(token, salt, n, r, p), digest)


class Users:
    """The people a server knows; :meth:`authenticate` finds the one a token belongs to.

    A token that was checked once is remembered (by its SHA-256, in memory
    only), so each request does not pay for scrypt again.
    """

    def __init__(self, users: tuple[User, ...], source: str) -> None:
        self.users = users
        self.source = source
        self._known: dict[str, User | None] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> User | None:
        """The user holding ``token``, or None."""
        known, user = self.remembered(token)
        if known:
            return user
        found = next((u for u in self.users if u.matches(token)), None)
        with self._lock:
            if len(self._known) > 4096:
                self._known.clear()
            self._known[self._digest(token)] = found
        return found

    def remembered(self, token: str) -> tuple[bool, User | None]:
        """``(True, user or None)`` when ``token`` was checked before (or cannot be one); ``(False, None)`` when
        only :meth:`authenticate` can tell (it pays for scrypt once).  Cheap: one SHA-256 of the token."""
        if not token or len(token) > 512:
            return True, None
        key = self._digest(token)
        with self._lock:
            if key in self._known:
                return True, self._known[key]
        return False, None

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _where(source: str, path: str) -> str:
    return f"{source}: {path}"


def parse_users(data: Mapping[str, Any], source: str) -> Users:
    """Check decoded users-file data; refuse with one line naming the file and key path.

    Raises
    ------
    EscalationRulesError
        For an unknown key, a plaintext token, a malformed hash, an unknown role or a bad trial id.
    """
    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise EscalationRulesError(f"{source}: {unknown[0]}: unknown key (expected a [[users]] list)")
    entries = data.get("users")
    if not isinstance(entries, list) or not entries:
        raise EscalationRulesError(f"{source}: users: expected a non-empty list of [[users]] tables")
    users: list[User] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"users[{i}]"
        if not isinstance(entry, dict):
            raise EscalationRulesError(_where(source, f"{at}: expected a table (got {type(entry).__name__})"))
        if "token" in entry:
            raise EscalationRulesError(_where(source, f"{at}.token: a plaintext token is refused; store only "
                                                      f"token_hash (make one with: escalation-rules serve "
                                                      f"--hash-token)"))
        extra = sorted(set(entry) - {"person", "token_hash", "roles"})
        if extra:
            raise EscalationRulesError(_where(source, f"{at}.{extra[0]}: unknown key (expected person, token_hash, "
                                                      f"roles)"))
        person = entry.get("person")
        if not isinstance(person, str) or not person.strip():
            raise EscalationRulesError(_where(source, f"{at}.person: expected a non-empty string (got {person!r})"))
        if person in seen:
            raise EscalationRulesError(_where(source, f"{at}.person: {person!r} appears twice (one entry per person)"))
        seen.add(person)
        digest = entry.get("token_hash")
        if not isinstance(digest, str) or not _HASH.match(digest):
            shown = "a string" if isinstance(digest, str) else repr(digest)
            raise EscalationRulesError(_where(source, f"{at}.token_hash: expected a salted hash "
                                                      f"scrypt$N$r$p$SALT$HASH from escalation-rules serve "
                                                      f"--hash-token (got {shown} that is not one; a plaintext "
                                                      f"token is refused)"))
        n = int(digest.split("$")[1])
        if n < 1024 or n & (n - 1):
            raise EscalationRulesError(_where(source, f"{at}.token_hash: scrypt N must be a power of two of at "
                                                      f"least 1024 (got {n})"))
        roles = entry.get("roles")
        if not isinstance(roles, dict) or not roles:
            raise EscalationRulesError(_where(source, f"{at}.roles: expected a table of trial id (or \"*\") to a "
                                                      f"list of roles"))
        held: dict[str, tuple[str, ...]] = {}
        for trial, names in roles.items():
            if trial != "*" and not TRIAL_ID.match(trial):
                raise EscalationRulesError(_where(source, f"{at}.roles.{trial}: not a trial id (letters, digits, "
                                                          f"'-' and '_', at most 64) or \"*\""))
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise EscalationRulesError(_where(source, f"{at}.roles.{trial}: expected a non-empty list of roles "
                                                          f"(got {names!r})"))
            bad = [n for n in names if n not in ROLES]
            if bad:
                raise EscalationRulesError(_where(source, f"{at}.roles.{trial}: unknown role {bad[0]!r} (expected "
                                                          f"{', '.join(ROLES)})"))
            held[trial] = tuple(names)
        users.append(User(person, digest, held))
    return Users(tuple(users), source)


def load_users(path: str) -> Users:
    """Read and check a users file (TOML)."""
    return parse_users(read_toml(path, "users file", "{path}: not UTF-8 text (byte {offset})"), path)
