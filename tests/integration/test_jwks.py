"""JWT keys from a JWKS endpoint (a real loopback HTTP server)."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from quart_gateway.admission.auth import TokenVerifier
from quart_gateway.errors import AuthError
from quart_gateway.settings import Settings
from tests.support import Reply, Upstream
from tests.unit.test_auth import rsa_keys


async def test_rs256_with_a_jwks_url(upstream: Upstream) -> None:
    """Keys fetched from a JWKS endpoint (a real loopback HTTP server), selected by `kid`."""
    private, _ = rsa_keys()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    upstream.reply(
        "/.well-known/jwks.json",
        Reply(body={"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}),
    )
    settings = Settings(jwt_algorithm="RS256", jwt_jwks_url=f"{upstream.url}/.well-known/jwks.json")
    verifier = TokenVerifier(settings)
    token = jwt.encode(
        {"sub": "dave", "exp": int(time.time()) + 60},
        private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert (await verifier.verify(token)).user_id == "dave"
    unknown = jwt.encode(
        {"sub": "dave", "exp": int(time.time()) + 60},
        private,
        algorithm="RS256",
        headers={"kid": "other"},
    )
    with pytest.raises(AuthError):
        await verifier.verify(unknown)


async def test_a_key_of_the_wrong_type_is_a_401_not_a_crash(upstream: Upstream) -> None:
    """A JWKS entry whose key does not fit the token's algorithm: pyjwt raises outside its
    InvalidTokenError tree; the verifier still answers with an AuthError."""
    from cryptography.hazmat.primitives.asymmetric import ec

    private, _ = rsa_keys()
    other = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key()))
    upstream.reply("/jwks", Reply(body={"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    settings = Settings(jwt_algorithm="RS256", jwt_jwks_url=f"{upstream.url}/jwks")
    token = jwt.encode(
        {"sub": "eve", "exp": int(time.time()) + 60},
        private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(AuthError):
        await TokenVerifier(settings).verify(token)
