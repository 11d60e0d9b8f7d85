"""HMAC-SHA256 signatures for Meta's webhooks and the billing events.

Meta signs the raw body bytes with the app secret and sends `X-Hub-Signature-256:
sha256=<hex>`; we hash the bytes exactly as received (never re-serialised JSON) and
compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum


class SignatureCheck(Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"


def sign(body: bytes, secret: str) -> str:
    """The header value for `body`: `sha256=<hex digest>`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def check(body: bytes, secret: str, header: str | None) -> SignatureCheck:
    if not header:
        return SignatureCheck.MISSING
    expected = sign(body, secret)
    # compare_digest needs equal types; a non-ASCII header can never be valid.
    try:
        given = header.strip().encode("ascii")
    except UnicodeEncodeError:
        return SignatureCheck.INVALID
    if hmac.compare_digest(expected.encode("ascii"), given):
        return SignatureCheck.VALID
    return SignatureCheck.INVALID
