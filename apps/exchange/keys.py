"""The simulator's API key pair, generated once into a data folder and shared by the trader.

Plain Python (no Django): the trader and ``manage.py runexchange`` both call ``ensure_key_pair``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization

from apps.kalshi.signing import PrivateKey, generate_key_pair, load_private_key

PRIVATE_KEY_FILE = "sim_private_key.pem"
PUBLIC_KEY_FILE = "sim_public_key.pem"


class KeyPairPaths(NamedTuple):
    private_key: Path
    public_key: Path


class LoadedKeyPair(NamedTuple):
    private_key: PrivateKey
    public_key_pem: bytes
    paths: KeyPairPaths


def _write_atomic(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a temporary file next to ``path`` and return it (caller links or renames it)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def ensure_key_pair(directory: Path) -> KeyPairPaths:
    """Make sure ``directory`` holds sim_private_key.pem (mode 0600) and the matching sim_public_key.pem.

    An existing private key is kept and the public key is (re)derived from it when missing or stale.
    Safe when two processes race: the private key is published with a hard link, which fails if another
    process got there first, so both end up with the same pair.
    """
    return _ensure(directory)[0]


def load_key_pair(directory: Path) -> LoadedKeyPair:
    """``ensure_key_pair``, and the pair it ensured: the private key, loaded (a trader signs with it), and the
    public PEM (its simulator checks signatures with it)."""
    paths, private_key, public_pem = _ensure(directory)
    return LoadedKeyPair(private_key, public_pem, paths)


def _ensure(directory: Path) -> tuple[KeyPairPaths, PrivateKey, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_FILE
    public_path = directory / PUBLIC_KEY_FILE
    if not private_path.exists():
        private_pem, _ = generate_key_pair()
        tmp = _write_atomic(private_path, private_pem, 0o600)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, private_path)
        finally:
            tmp.unlink(missing_ok=True)
    # Made by this module, for the built-in simulator only: no need to pay for the RSA consistency check.
    private_key = load_private_key(private_path.read_bytes(), check_rsa=False)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        tmp = _write_atomic(public_path, public_pem, 0o644)
        os.replace(tmp, public_path)
    return KeyPairPaths(private_key=private_path, public_key=public_path), private_key, public_pem
