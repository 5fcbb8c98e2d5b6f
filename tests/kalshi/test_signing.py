from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from apps.kalshi.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WS_PATH,
    Credentials,
    KeyLoadError,
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign,
    verify,
)


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


def test_it_signs_the_handshake_with_rsa_pss_sha256_salt_32(key_pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = key_pair
    credentials = Credentials(key_id="key-123", private_key=load_private_key(private_pem))
    headers = credentials.headers("GET", WS_PATH, 1_700_000_000_123)

    assert headers[HEADER_KEY] == "key-123"
    assert headers[HEADER_TIMESTAMP] == "1700000000123"
    # Verify with the public key and the exact parameters Kalshi uses, independently of verify().
    public = load_public_key(public_pem)
    signature = base64.b64decode(headers[HEADER_SIGNATURE])
    public.verify(  # type: ignore[call-arg]
        signature,
        b"1700000000123GET/trade-api/ws/v2",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_the_query_string_is_not_signed(key_pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = key_pair
    signature = sign(load_private_key(private_pem), 42, "GET", "/trade-api/v2/markets?limit=5&cursor=x")
    assert verify(load_public_key(public_pem), signature, 42, "GET", "/trade-api/v2/markets")


def test_a_signature_for_another_path_time_or_key_fails(key_pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = key_pair
    public = load_public_key(public_pem)
    signature = sign(load_private_key(private_pem), 42, "GET", WS_PATH)
    assert not verify(public, signature, 43, "GET", WS_PATH)
    assert not verify(public, signature, 42, "GET", "/trade-api/v2/markets")
    _, other_public = generate_key_pair()
    assert not verify(load_public_key(other_public), signature, 42, "GET", WS_PATH)
    assert not verify(public, "not base64!", 42, "GET", WS_PATH)


def test_ed25519_keys_sign_the_same_text() -> None:
    from cryptography.hazmat.primitives import serialization

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signature = sign(load_private_key(pem), 7, "GET", WS_PATH)
    assert verify(key.public_key(), signature, 7, "GET", WS_PATH)


def test_bad_key_material_gives_an_error_without_the_material() -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETGARBAGE\n-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyLoadError) as caught:
        load_private_key(secret)
    assert "TOPSECRET" not in str(caught.value)


def test_credentials_never_show_the_key_id_or_key(key_pair: tuple[bytes, bytes]) -> None:
    credentials = Credentials(key_id="very-secret-id", private_key=load_private_key(key_pair[0]))
    assert "very-secret-id" not in repr(credentials)
    assert "very-secret-id" not in str(credentials)


def test_a_damaged_rsa_key_is_refused_unless_the_check_is_waived_for_the_simulators_own(
    key_pair: tuple[bytes, bytes],
) -> None:
    good = load_private_key(key_pair[0])
    assert isinstance(good, rsa.RSAPrivateKey)
    numbers = good.private_numbers()
    damaged = rsa.RSAPrivateNumbers(  # private exponents off by two: the key no longer signs correctly
        numbers.p, numbers.q, numbers.d + 2, numbers.dmp1 + 2, numbers.dmq1 + 2, numbers.iqmp, numbers.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    pem = damaged.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    with pytest.raises(KeyLoadError, match="not a readable unencrypted PEM key"):
        load_private_key(pem)
    unchecked = load_private_key(pem, check_rsa=False)
    signature = sign(unchecked, 42, "GET", WS_PATH)
    assert not verify(load_public_key(key_pair[1]), signature, 42, "GET", WS_PATH)
