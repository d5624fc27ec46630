"""Signing keys for trial stores: generation, reading, refusals with one line naming the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from escalation_rules.cli import main
from escalation_rules.trial.events import TrialError
from escalation_rules.trial.keys import generate_key, load_key


def test_keygen_writes_a_private_key_for_its_owner_and_a_public_key(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`trial keygen FILE` writes FILE (mode 0600) and FILE.pub, names the key id, and never overwrites."""
    key = tmp_path / "trial.key"
    assert main(["trial", "keygen", str(key)]) == 0
    private, public = load_key(key), load_key(f"{key}.pub")
    assert private.id in capsys.readouterr().out
    assert private.can_sign and not public.can_sign and private.id == public.id
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert main(["trial", "keygen", str(key)]) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a PEM key"),
    (b"hello", "not a PEM key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private key"),
    (b"x" * 20_000, "not a key file"),
])
def test_bad_key_files_are_refused_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    """A key file that is empty, not PEM, damaged or huge is refused with one line naming it."""
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(TrialError, match=message) as err:
        load_key(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_other_kinds_of_keys_are_refused(tmp_path: Path) -> None:
    """An EC key, an encrypted key and a missing file: refused, saying what was expected."""
    ec = generate_private_key(SECP256R1())
    (tmp_path / "ec.key").write_bytes(ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp_path / "enc.key").write_bytes(ec.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TrialError, match="expected an Ed25519 key"):
        load_key(tmp_path / "ec.key")
    with pytest.raises(TrialError, match="encrypted"):
        load_key(tmp_path / "enc.key")
    with pytest.raises(TrialError, match="cannot read the key"):
        load_key(tmp_path / "missing.key")


def test_a_public_key_cannot_sign(tmp_path: Path) -> None:
    """Signing needs the private half; verifying a signature works with either."""
    key = generate_key(tmp_path / "k")
    public = load_key(tmp_path / "k.pub")
    with pytest.raises(TrialError, match="public key cannot sign"):
        public.sign(b"x")
    assert public.verify(key.sign(b"x"), b"x") and not public.verify("zz", b"x")
