"""Tokens from an identity provider: RS256/ES256 verified against a JWKS document
served by a real local HTTP server, with issuer/audience checks, a clock leeway and
key rotation; the shared development secret stops working once a provider is set."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import pytest
from conftest import Running, StartServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import SecretStr
from support.rpc import Client, details

from server.main import token_authority

ISSUER = "https://idp.example.test"
AUDIENCE = "vidscan"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        document: dict[str, Any] = codec.to_jwk(public, as_dict=True)
        document.update(kid=self.kid, alg=self.algorithm, use="sig")
        return document

    def token(self, subject: str, **claims: Any) -> str:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "sub": subject,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + timedelta(minutes=5),
            **claims,
        }
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def rsa_key() -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(f"rsa-{uuid.uuid4().hex[:8]}", "RS256", private)


def ec_key() -> SigningKey:
    return SigningKey(
        f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1())
    )


@dataclass
class IdentityProvider:
    """Serves /jwks.json with whatever keys are published; counts fetches."""

    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self.keys = list(keys)


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            provider.fetches += 1
            body = json.dumps({"keys": [k.jwk() for k in provider.keys]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    provider.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()


async def start_with_idp(start_server: StartServer, idp: IdentityProvider) -> Running:
    return await start_server(
        jwks_url=idp.url,
        jwks_cache_seconds=1,
        jwks_refetch_cooldown_seconds=0,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


async def call_as(running: Running, token: str) -> str:
    """CreateUploadSession with this token: the session id, or raises RpcError."""
    client = Client(running.channel, token, running.target)
    return (await client.new_session()).session_id


async def refused(running: Running, token: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        await call_as(running, token)
    info = details(caught.value)
    return info.code, info.reason


async def test_rs256_and_es256_tokens_from_the_provider(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    rs, es = rsa_key(), ec_key()
    idp.publish(rs, es)
    running = await start_with_idp(start_server, idp)
    assert await call_as(running, rs.token("alice"))
    assert await call_as(running, es.token("bob"))
    # Once fetched, the keys are cached: more calls do not refetch.
    fetched = idp.fetches
    for _ in range(5):
        assert await call_as(running, rs.token("alice"))
    assert idp.fetches == fetched


async def test_issuer_audience_expiry_and_leeway(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    key = rsa_key()
    idp.publish(key)
    running = await start_with_idp(start_server, idp)
    unauthenticated = (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert await refused(running, key.token("alice", iss="https://other.test")) == unauthenticated
    assert await refused(running, key.token("alice", aud="someone-else")) == unauthenticated
    now = datetime.now(UTC)
    # 30 s leeway by default: a token expired 5 s ago still passes, 5 minutes ago not.
    assert await call_as(running, key.token("alice", exp=now - timedelta(seconds=5)))
    assert await refused(running, key.token("alice", exp=now - timedelta(minutes=5))) == (
        unauthenticated
    )
    unknown = rsa_key()  # signed with a key the provider never published
    assert await refused(running, unknown.token("mallory")) == unauthenticated


async def test_unknown_key_ids_refetch_at_most_once_per_cooldown(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    key = rsa_key()
    idp.publish(key)
    running = await start_server(
        jwks_url=idp.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )  # the default 30 s cooldown
    assert await call_as(running, key.token("alice"))
    fetched = idp.fetches
    for _ in range(10):  # forged key ids do not become requests to the provider
        await refused(running, rsa_key().token("mallory"))
    assert idp.fetches <= fetched + 1


async def test_key_rotation_needs_no_restart(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    old, new = rsa_key(), ec_key()
    idp.publish(old)
    running = await start_with_idp(start_server, idp)
    assert await call_as(running, old.token("alice"))
    idp.publish(new)  # the provider rotates: the new key is in, the old one out
    assert await call_as(running, new.token("alice"))  # unknown kid: refetched at once
    await asyncio.sleep(1.2)  # the 1 s cache of the document runs out
    assert await refused(running, old.token("alice")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_the_development_secret_is_not_accepted_beside_a_provider(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    key = rsa_key()
    idp.publish(key)
    running = await start_with_idp(start_server, idp)
    hs256 = token_authority(running.settings).mint("alice")
    assert await refused(running, hs256) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    # Algorithm confusion: an HS256 token whose HMAC key is the provider's public key
    # (PyJWT refuses to make one, so it is assembled by hand).
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{b64(signature)}"
    assert await refused(running, forged) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_an_unreachable_provider_is_unavailable_not_unauthenticated(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    idp.publish(rsa_key())
    running = await start_with_idp(start_server, idp)
    newcomer = rsa_key()
    assert idp.server is not None
    idp.server.shutdown()
    idp.server.server_close()
    with pytest.raises(grpc.RpcError) as caught:
        await call_as(running, newcomer.token("alice"))
    info = details(caught.value)
    assert (info.code, info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "IDENTITY_PROVIDER_UNAVAILABLE",
    )
    assert info.retry_after_seconds is not None


async def test_a_real_shared_secret_keeps_working_beside_the_provider(
    start_server: StartServer, idp: IdentityProvider
) -> None:
    key = rsa_key()
    idp.publish(key)
    running = await start_server(
        jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_secret=SecretStr("a-shared-secret-of-at-least-32-bytes"),
    )
    assert await call_as(running, token_authority(running.settings).mint("service-a"))
    assert await call_as(running, key.token("alice"))
