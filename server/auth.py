"""Bearer-token authentication: JWTs whose `sub` is the user id.

Two kinds of token, told apart by the header's ``alg`` (never by trying keys, so an
RS256 public key can never be used as an HS256 secret):

- HS256, signed with ``VIDSCAN_JWT_SECRET`` (``TokenAuthority``, which also mints them
  for the CLI and tests);
- RS256/ES256 from an identity provider, verified against its JWKS document
  (``JwksKeys``, PyJWT's ``PyJWKClient``; a key id it has not seen refetches the
  document, so key rotation needs no restart).

Both check ``exp`` (required), and the issuer and audience when they are configured,
with a small clock leeway. ``Authenticator`` is what the servicers call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import jwt

from server import logs
from server.clock import Clock
from server.errors import Reason, Unauthenticated, Unavailable

DEFAULT_TOKEN_LIFETIME = timedelta(hours=12)


JWKS_ALGORITHMS = ("RS256", "ES256")


def _decode(
    token: str, key: Any, *, algorithm: str, issuer: str, audience: str, leeway: float
) -> str:
    """Verifies ``token`` with ``key`` and returns its subject."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer or None,
            audience=audience or None,
            leeway=leeway,
            options={"require": ["sub", "exp"], "verify_aud": bool(audience)},
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated(Reason.UNAUTHENTICATED, f"invalid bearer token: {exc}") from exc
    subject = str(claims.get("sub", ""))
    if not subject:
        raise Unauthenticated(Reason.UNAUTHENTICATED, "the token names no subject")
    return subject


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | Any) -> str:
    """The token of the ``authorization: Bearer <token>`` metadata entry."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                break
            return token.strip()
    raise Unauthenticated(
        Reason.UNAUTHENTICATED, "missing `authorization: Bearer <token>` metadata"
    )


class TokenAuthority:
    """HS256 tokens signed with the shared secret: minted and verified here."""

    def __init__(
        self, *, secret: str, issuer: str, audience: str, clock: Clock, leeway_seconds: float = 0
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._leeway = leeway_seconds

    def mint(self, user_id: str, *, lifetime: timedelta = DEFAULT_TOKEN_LIFETIME) -> str:
        now = self._clock()
        claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + lifetime}
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def user_id(self, token: str) -> str:
        """The token's subject, or Unauthenticated with the reason in the message."""
        return _decode(
            token,
            self._secret,
            algorithm="HS256",
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
        )

    def user_from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | Any) -> str:
        return self.user_id(bearer_token(metadata))


class JwksKeys:
    """The signing keys of an identity provider, from its JWKS URL.

    The document is cached for ``cache_seconds``; a token whose ``kid`` is not in the
    cached document refetches it (rotation), at most once per
    ``refetch_cooldown_seconds``. Fetching runs in a thread
    (PyJWKClient uses urllib); a token whose key is cached costs no thread hop.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        refetch_cooldown_seconds: float,
        timeout_seconds: float = 5.0,
    ) -> None:
        # The cooldown bounds how often tokens with unknown key ids can make us refetch
        # (a flood of forged kids must not become a flood of requests to the provider).
        self._client = jwt.PyJWKClient(
            url,
            cache_keys=False,
            lifespan=cache_seconds,
            timeout=timeout_seconds,
            cooldown_duration=refetch_cooldown_seconds,
        )
        self._url = url

    def _cached(self, kid: str) -> jwt.PyJWK | None:
        cache = self._client.jwk_set_cache
        if cache is None:
            return None
        jwk_set = cache.get()  # None once expired
        if jwk_set is None:
            return None
        return next((k for k in jwk_set.keys if k.key_id == kid), None)

    async def signing_key(self, token: str) -> jwt.PyJWK:
        try:
            kid = str(jwt.get_unverified_header(token).get("kid") or "")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(Reason.UNAUTHENTICATED, f"invalid bearer token: {exc}") from exc
        if not kid:
            raise Unauthenticated(Reason.UNAUTHENTICATED, "the token names no key id (kid)")
        cached = self._cached(kid)
        if cached is not None:
            return cached
        try:
            return await asyncio.to_thread(self._client.get_signing_key, kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable(
                Reason.IDENTITY_PROVIDER_UNAVAILABLE,
                "the identity provider's keys could not be fetched",
            ) from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(
                Reason.UNAUTHENTICATED, f"the token's signing key is unknown: {exc}"
            ) from exc


class Authenticator:
    """Who is calling: the user id of the call's bearer token.

    ``hs256`` is None when shared-secret tokens are not accepted (an identity
    provider is configured and the secret is the built-in development one).
    """

    def __init__(
        self,
        *,
        hs256: TokenAuthority | None,
        jwks: JwksKeys | None,
        issuer: str,
        audience: str,
        leeway_seconds: float,
    ) -> None:
        self._hs256 = hs256
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds

    async def user_id(self, token: str) -> str:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise Unauthenticated(Reason.UNAUTHENTICATED, f"invalid bearer token: {exc}") from exc
        if algorithm == "HS256" and self._hs256 is not None:
            return self._hs256.user_id(token)
        if algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            key = await self._jwks.signing_key(token)
            return _decode(
                token,
                key.key,
                algorithm=str(algorithm),
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        raise Unauthenticated(
            Reason.UNAUTHENTICATED, f"tokens signed with {algorithm!r} are not accepted here"
        )

    async def user_from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | Any) -> str:
        """The caller's user id; it joins the RPC's log context (the token never does)."""
        user = await self.user_id(bearer_token(metadata))
        logs.bind(user_id=user)
        return user
