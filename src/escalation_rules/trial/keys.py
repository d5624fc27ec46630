"""Signing keys for trial stores: Ed25519 through the ``cryptography`` library, kept outside the store file.

A signed store (format ``escalation-rules-trial/3``) names its key by a
fingerprint (the SHA-256 of the raw public key) and keeps, beside the head
of its hash chain, an Ed25519 signature of the head.  Recording needs the
private key; checking needs only the public key, so an auditor can verify a
store without being able to write one.

:func:`generate_key` writes the private key (PKCS #8 PEM, readable by its
owner only) and the public key beside it (``FILE.pub``, SubjectPublicKeyInfo
PEM); :func:`load_key` reads either.

Examples
--------
>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> key = generate_key(os.path.join(folder, "trial.key"))
>>> public = load_key(os.path.join(folder, "trial.key.pub"))
>>> public.id == key.id, public.can_sign, key.can_sign
(True, False, True)
>>> public.verify(key.sign(b"head"), b"head"), public.verify(key.sign(b"head"), b"other")
(True, False)
"""

from __future__ import annotations

import hashlib
import os

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._attrs import value_repr
from .events import TrialError

__all__ = ["StoreKey", "generate_key", "load_key"]

#: A key file larger than this is not a key (read no further).
_MAX_KEY_FILE = 16_384


@attrs.frozen
class StoreKey:
    """An Ed25519 key: the public half always, the private half when it can sign.

    ``id`` is the fingerprint a signed store names: the SHA-256 (hex) of the
    raw 32-byte public key.  ``source`` names the file it came from, for
    messages.
    """

    __repr__ = value_repr

    public: Ed25519PublicKey = attrs.field(repr=False)
    private: Ed25519PrivateKey | None = attrs.field(repr=False, default=None)
    source: str = "key"

    @property
    def id(self) -> str:
        """The key's fingerprint: SHA-256 of the raw public key, hex."""
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()

    @property
    def can_sign(self) -> bool:
        """True when the private half is present."""
        return self.private is not None

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of ``message``, hex.

        Raises
        ------
        TrialError
            If this is a public key only.
        """
        if self.private is None:
            raise TrialError(f"{self.source}: a public key cannot sign; give the private key file")
        return self.private.sign(message).hex()

    def verify(self, signature: str, message: bytes) -> bool:
        """True when ``signature`` (hex) is this key's signature of ``message``."""
        try:
            self.public.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def generate_key(path: str | os.PathLike[str]) -> StoreKey:
    """Write a new private key to ``path`` (mode 0600) and its public key to ``path.pub``; refuse to overwrite.

    Raises
    ------
    TrialError
        If either file exists or cannot be written.
    """
    target = os.fspath(path)
    public_path = target + ".pub"
    for name in (target, public_path):
        if os.path.exists(name):
            raise TrialError(f"{name}: already exists; a key is never overwritten (choose another file name)")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        with open(public_path, "xb") as handle:
            handle.write(public_pem)
    except OSError as err:
        raise TrialError(f"{err.filename or target}: cannot write the key: {err.strerror}") from None
    return StoreKey(private.public_key(), private, target)


def load_key(path: str | os.PathLike[str]) -> StoreKey:
    """Read an Ed25519 private key (PKCS #8 PEM) or public key (SubjectPublicKeyInfo PEM).

    Raises
    ------
    TrialError
        One line naming the file: missing, unreadable, not a PEM key, not Ed25519, or encrypted.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as err:
        raise TrialError(f"{name}: cannot read the key: {err.strerror} "
                         f"(create one with: escalation-rules trial keygen FILE)") from None
    if len(data) > _MAX_KEY_FILE:
        raise TrialError(f"{name}: not a key file (larger than {_MAX_KEY_FILE} bytes)")
    if b"PRIVATE KEY" in data:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise TrialError(f"{name}: the private key is encrypted; give an unencrypted PKCS #8 PEM key") from None
        except ValueError as err:
            raise TrialError(f"{name}: not a PEM private key ({err})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise TrialError(f"{name}: expected an Ed25519 key (got {type(private).__name__})")
        return StoreKey(private.public_key(), private, name)
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        raise TrialError(f"{name}: not a PEM key (expected an Ed25519 private or public key, "
                         f"as written by: escalation-rules trial keygen FILE)") from None
    if not isinstance(public, Ed25519PublicKey):
        raise TrialError(f"{name}: expected an Ed25519 key (got {type(public).__name__})")
    return StoreKey(public, None, name)
