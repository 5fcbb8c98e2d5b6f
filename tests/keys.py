"""The tests' RSA keys: a few named pairs made once per test run and shared by its workers, each loaded once per
process. Making an RSA key costs about 0.1 s of CPU and loading one (OpenSSL checks it) about 0.04 s, and the
suite asks for keys hundreds of times; a test about making or loading keys makes and loads its own."""

from __future__ import annotations

import fcntl
import functools

from apps.kalshi.signing import Credentials, PrivateKey, generate_key_pair, load_private_key
from tests.processes import shared_dir


@functools.cache
def key_pair(name: str) -> tuple[bytes, bytes]:
    """The run's key pair called ``name``: (private PEM, public PEM). Pairs of different names are unrelated."""
    private_path, public_path = shared_dir() / f"{name}.private.pem", shared_dir() / f"{name}.public.pem"
    with open(shared_dir() / "keys.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker to ask makes the pair; the others read its files
        if not private_path.exists():
            private_pem, public_pem = generate_key_pair()
            public_path.write_bytes(public_pem)
            private_path.write_bytes(private_pem)
        return private_path.read_bytes(), public_path.read_bytes()


@functools.cache
def private_key(name: str) -> PrivateKey:
    """The private key of ``key_pair(name)``, loaded."""
    return load_private_key(key_pair(name)[0])


def credentials(name: str, key_id: str) -> Credentials:
    """Credentials that sign with ``key_pair(name)`` under ``key_id``."""
    return Credentials(key_id=key_id, private_key=private_key(name))
