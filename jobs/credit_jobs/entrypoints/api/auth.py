"""Checking a request's `Authorization` header against the configured credentials. No I/O.

Every protected request is checked here; Basic and Bearer are both accepted. Every configured credential is compared
with `hmac.compare_digest` (constant time per comparison, and all of them are compared, so the time does not say which
one came close). A Basic password may contain `:` (only the first colon separates the user). A failure says why in a
reason code for the audit log — never the secret, never what was sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from credit_jobs.entrypoints.api.settings import Credential

# Both challenges in one header (RFC 9110 §11.6.1 allows a comma-separated list).
CHALLENGE = 'Basic realm="credit-jobs", charset="UTF-8", Bearer realm="credit-jobs"'


@dataclass(frozen=True)
class Principal:
    name: str  # `basic:<user>` or `token:<name>`
    scopes: frozenset[str]


@dataclass(frozen=True)
class AuthFailure:
    reason: str  # missing | malformed | unknown_scheme | bad_credentials


def attempted_principal(header: str | None) -> str:
    """Who a request claims to be, before anything is verified — what a failed-authentication budget is kept for:
    `basic:<user>` (the user as sent, at most 64 characters), `bearer:<first 16 hex of the token's SHA-256>` (a
    token has no name until it matches; random tokens of 24+ characters are not guessed), or `none`."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "basic" and (pair := _decode_basic(value.strip())) is not None:
        return "basic:" + pair[0].decode("utf-8", "backslashreplace")[:64]
    if scheme.lower() == "bearer" and value.strip():
        return "bearer:" + hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return "none"


def authenticate(header: str | None, credentials: tuple[Credential, ...]) -> Principal | AuthFailure:
    if not header:
        return AuthFailure("missing")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        pair = _decode_basic(value)
        if pair is None:
            return AuthFailure("malformed")
        return _match(credentials, "basic", pair[1], username=pair[0])
    if scheme.lower() == "bearer":
        if not value:
            return AuthFailure("malformed")
        return _match(credentials, "bearer", value.encode("utf-8", "surrogateescape"))
    return AuthFailure("unknown_scheme")


def _decode_basic(value: str) -> tuple[bytes, bytes] | None:
    """(user, password) from base64 `user:password`; None when the value is not strict base64 or has no colon."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    user, colon, password = raw.partition(b":")
    return (user, password) if colon else None


def _match(
    credentials: tuple[Credential, ...], scheme: str, secret: bytes, *, username: bytes = b""
) -> Principal | AuthFailure:
    found: Credential | None = None
    for credential in credentials:
        if credential.scheme != scheme:
            continue
        # Both halves are always compared (no short-circuit between user and password).
        same_user = hmac.compare_digest(credential.username, username)
        same_secret = hmac.compare_digest(credential.secret, secret)
        if same_user & same_secret and found is None:
            found = credential
    if found is None:
        return AuthFailure("bad_credentials")
    return Principal(found.principal, found.scopes)
