from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.utils import base64url_encode

from quart_gateway.admission.auth import TokenVerifier, bearer_token
from quart_gateway.errors import AuthError
from quart_gateway.settings import Secret, Settings
from tests.support import SECRET, make_token

HS = Settings(jwt_secret_key=Secret(SECRET))


def rsa_keys() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


async def test_valid_token_yields_the_subject() -> None:
    principal = await TokenVerifier(HS).verify(make_token("alice", expires_in=60))
    assert principal.user_id == "alice"
    assert principal.expires_at == pytest.approx(time.time() + 60, abs=2)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "Missing token"),
        ("", "Missing token"),
        ("not-a-jwt", "Malformed token"),
        (make_token("alice", expires_in=-60), "Token expired"),
        (
            make_token("alice", key="another-key-that-is-also-long-enough-for-hs256!!"),
            "Token signature invalid",
        ),
        (make_token(None), "Token lacks the 'sub' claim"),
        (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), "Token lacks the 'exp' claim"),
        (make_token("alice", key=SECRET, algorithm="HS512"), "Token algorithm not accepted"),
    ],
)
async def test_rejected_tokens(token: str | None, message: str) -> None:
    with pytest.raises(AuthError) as info:
        await TokenVerifier(HS).verify(token)
    assert info.value.message == message
    assert info.value.status_code == 401


async def test_alg_none_is_rejected() -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        await TokenVerifier(HS).verify(unsigned)


async def test_empty_subject_is_rejected() -> None:
    with pytest.raises(AuthError):
        await TokenVerifier(HS).verify(make_token("  "))


async def test_rs256_with_public_key() -> None:
    private, public = rsa_keys()
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=public)
    token = make_token("bob", key=private, algorithm="RS256")
    assert (await TokenVerifier(settings).verify(token)).user_id == "bob"


async def test_algorithm_confusion_is_rejected() -> None:
    """An HS256 token 'signed' with the RSA public key must not pass an RS256 verifier."""
    _, public = rsa_keys()
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=public)
    header = base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = base64url_encode(b'{"sub":"mallory","exp":9999999999}')
    signature = hmac.new(public.encode(), header + b"." + payload, hashlib.sha256).digest()
    forged = (header + b"." + payload + b"." + base64url_encode(signature)).decode()
    with pytest.raises(AuthError):
        await TokenVerifier(settings).verify(forged)


async def test_es256_with_public_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = Settings(jwt_algorithm="ES256", jwt_public_key=public.decode())
    token = make_token("carol", key=private, algorithm="ES256")
    assert (await TokenVerifier(settings).verify(token)).user_id == "carol"


async def test_audience_and_issuer_are_checked_when_set() -> None:
    settings = dataclasses.replace(HS, jwt_audience="gateway", jwt_issuer="https://auth")
    verifier = TokenVerifier(settings)
    good = make_token("alice", aud="gateway", iss="https://auth")
    assert (await verifier.verify(good)).user_id == "alice"
    for bad in (
        make_token("alice", aud="other", iss="https://auth"),
        make_token("alice", aud="gateway", iss="https://evil"),
        make_token("alice"),
    ):
        with pytest.raises(AuthError):
            await verifier.verify(bad)


async def test_audience_is_ignored_when_not_configured() -> None:
    assert (await TokenVerifier(HS).verify(make_token("alice", aud="anything"))).user_id == "alice"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
        ("", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_a_verified_token_is_remembered_until_it_expires() -> None:
    verifier = TokenVerifier(dataclasses.replace(HS, jwt_leeway_seconds=0))
    token = make_token("user-1", expires_in=1)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # no second verification
    await asyncio.sleep(1.1)
    with pytest.raises(AuthError, match="expired"):
        await verifier.verify(token)  # a remembered token still ends at its exp


async def test_a_forged_twin_of_a_remembered_token_is_still_refused() -> None:
    verifier = TokenVerifier(HS)
    token = make_token("user-1")
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    with pytest.raises(AuthError):
        await verifier.verify(f"{header}.{payload}.{signature[:-2]}xx")
