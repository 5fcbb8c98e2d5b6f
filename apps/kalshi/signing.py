"""Request signing for Kalshi's API keys.

Every WebSocket handshake and REST call carries three headers. The signature is RSA-PSS (SHA-256, MGF1
SHA-256, salt length 32) — or Ed25519 for such keys — over ``timestamp_ms + METHOD + path`` where path is
the request path without its query string. The host is not part of the signature.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"
WS_PATH = "/trade-api/ws/v2"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey

MIN_RSA_KEY_BITS = 2048
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


class KeyLoadError(ValueError):
    """A key that cannot be loaded; the message never contains key material."""


def load_private_key(pem: bytes, *, check_rsa: bool = True) -> PrivateKey:
    """The private key in ``pem``. ``check_rsa=False`` skips OpenSSL's RSA consistency check (about 40 ms a key
    here): only for a key this program made itself and signs nothing but requests to its own simulator with,
    where a damaged key shows as refused signatures; a key given for Kalshi is always checked."""
    try:
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=not check_rsa)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError("the private key is not a readable unencrypted PEM key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyLoadError("the private key must be RSA or Ed25519")
    # RSA-PSS with SHA-256 and a 32-byte salt cannot sign with a small key; refuse it before any connection.
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_KEY_BITS:
        raise KeyLoadError(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_KEY_BITS} are needed")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyLoadError("the public key is not a readable PEM key") from exc
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyLoadError("the public key must be RSA or Ed25519")
    return key


def generate_key_pair() -> tuple[bytes, bytes]:
    """A fresh RSA-2048 key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def signed_text(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """The exact bytes Kalshi signs: the query string is dropped from the path."""
    return f"{timestamp_ms}{method.upper()}{urlsplit(path).path}".encode()


def sign(private_key: PrivateKey, timestamp_ms: int | str, method: str, path: str) -> str:
    message = signed_text(timestamp_ms, method, path)
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(message, _PSS, hashes.SHA256())
    else:
        signature = private_key.sign(message)
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: PublicKey, signature_b64: str, timestamp_ms: int | str, method: str, path: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    message = signed_text(timestamp_ms, method, path)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, _PSS, hashes.SHA256())
        else:
            public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Credentials:
    """An API key id and its private key. ``repr`` never shows either."""

    key_id: str = field(repr=False)
    private_key: PrivateKey = field(repr=False)

    def headers(self, method: str, path: str, now_ms: int) -> dict[str, str]:
        return {
            HEADER_KEY: self.key_id,
            HEADER_TIMESTAMP: str(now_ms),
            HEADER_SIGNATURE: sign(self.private_key, now_ms, method, path),
        }

    def __str__(self) -> str:
        return "Credentials(<hidden>)"
