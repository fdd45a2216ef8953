"""Tokens and grants, checked as the real server's auth middleware checks them."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
from aiohttp import web
from livekit.api.access_token import Claims, TokenVerifier, VideoGrants

PERMISSION_DENIED = "permissions denied"


class AuthError(Exception):
    """A token the middleware rejects: HTTP 401 with a plain-text body."""


@dataclass
class Auth:
    """A verified token: the API key that signed it and its claims."""

    api_key: str
    claims: Claims

    @property
    def video(self) -> VideoGrants | None:
        return self.claims.video


def bearer_token(request: web.Request) -> str | None:
    """``Authorization: Bearer …`` (SDKs, server APIs) or ``?access_token=`` (browsers)."""
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer "):
            raise AuthError("invalid authorization header. Must start with Bearer ")
        return header[len("Bearer ") :]
    return request.query.get("access_token") or None


def authenticate(keys: dict[str, str], request: web.Request) -> Auth | None:
    """None without a token, AuthError for a bad one (unknown key, signature, expiry)."""
    token = bearer_token(request)
    if not token:
        return None
    try:
        api_key = jwt.decode(token, options={"verify_signature": False}).get("iss", "")
    except jwt.PyJWTError:
        raise AuthError("invalid authorization token") from None
    secret = keys.get(api_key)
    if not secret:
        raise AuthError(f"invalid API key: {api_key}")
    try:
        return Auth(api_key, TokenVerifier(api_key, secret).verify(token))
    except Exception as exc:  # any PyJWT failure: signature, expiry, issuer
        raise AuthError(f"invalid token, error: {exc}") from None
