"""The tests' RSA keys: a few named pairs made once per test run and shared by its workers, each loaded once per
process. Making an RSA key costs about 0.1 s of CPU and loading one (OpenSSL checks it) about 0.04 s, and the
suite asks for keys hundreds of times; a test about making or loading keys makes and loads its own."""

from __future__ import annotations

import functools
from pathlib import Path

from apps.kalshi.signing import Credentials, PrivateKey, generate_key_pair, load_private_key
from tests.processes import made_once


@functools.cache
def key_pair(name: str) -> tuple[bytes, bytes]:
    """The run's key pair called ``name``: (private PEM, public PEM). Pairs of different names are unrelated."""
    folder = made_once(f"key-{name}", _write_key_pair)
    return (folder / "private.pem").read_bytes(), (folder / "public.pem").read_bytes()


def _write_key_pair(folder: Path) -> None:
    private_pem, public_pem = generate_key_pair()
    folder.mkdir()
    (folder / "private.pem").write_bytes(private_pem)
    (folder / "public.pem").write_bytes(public_pem)


@functools.cache
def private_key(name: str) -> PrivateKey:
    """The private key of ``key_pair(name)``, loaded."""
    return load_private_key(key_pair(name)[0])


def credentials(name: str, key_id: str) -> Credentials:
    """Credentials that sign with ``key_pair(name)`` under ``key_id``."""
    return Credentials(key_id=key_id, private_key=private_key(name))
