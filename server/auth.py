"""Bearer-token authentication: HS256 JWTs whose `sub` is the user id."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import jwt

from server.clock import Clock
from server.errors import Reason, Unauthenticated

DEFAULT_TOKEN_LIFETIME = timedelta(hours=12)


class TokenAuthority:
    def __init__(self, *, secret: str, issuer: str, audience: str, clock: Clock) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._clock = clock

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
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self._issuer or None,
                audience=self._audience or None,
                options={"require": ["sub", "exp"], "verify_aud": bool(self._audience)},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(Reason.UNAUTHENTICATED, f"invalid bearer token: {exc}") from exc
        subject = str(claims.get("sub", ""))
        if not subject:
            raise Unauthenticated(Reason.UNAUTHENTICATED, "the token names no subject")
        return subject

    def user_from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | Any) -> str:
        for key, value in metadata or ():
            if key.lower() == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    break
                return self.user_id(token.strip())
        raise Unauthenticated(
            Reason.UNAUTHENTICATED, "missing `authorization: Bearer <token>` metadata"
        )
