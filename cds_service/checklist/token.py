"""Stateless, signed, expiring tokens for checklist links.

A token is `base64url(version ‖ snapshot id ‖ expiry ‖ MAC)`: a random 128-bit snapshot id (the row
that ties the page to the audit record's hookInstance), the expiry in Unix seconds, and a truncated
HMAC-SHA256 over both. Nothing in it identifies the patient. Because it is self-verifying, issuing one
costs no database round trip on the hook response path, and a forged or altered token is rejected
before any lookup. The expiry is signed, so an expired link can be told apart (410) from a forged one
(404) without keeping anything in the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

_VERSION = 1
_ID_BYTES = 16  # 128 random bits: not guessable, not enumerable
_MAC_BYTES = 16  # 128-bit truncated HMAC-SHA256 (NIST SP 800-107 allows truncation to this length)
_LAYOUT = struct.Struct(">B16sQ")
_TOKEN_BYTES = _LAYOUT.size + _MAC_BYTES
# Domain separation: the same app secret also keys the patient hash; a token MAC must never be
# usable as (or derived from) a patient pseudonym.
_CONTEXT = b"va-cds/checklist-token/v1"


class TokenError(Exception):
    """The token cannot be used. `expired` tells a genuine-but-old token from a forged/garbled one."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class TokenClaims:
    snapshot_id: str  # 32 hex characters
    expires_at: datetime


def derive_key(app_secret: bytes) -> bytes:
    """The token signing key, derived from the app's secret (the patient-hash key)."""
    return hmac.new(app_secret, _CONTEXT, hashlib.sha256).digest()


def new_snapshot_id() -> str:
    return secrets.token_hex(_ID_BYTES)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def issue(key: bytes, snapshot_id: str, expires_at: datetime) -> str:
    """A URL-safe token (55 characters) for `snapshot_id`, valid until `expires_at`."""
    payload = _LAYOUT.pack(_VERSION, bytes.fromhex(snapshot_id), int(expires_at.timestamp()))
    return _b64(payload + _mac(key, payload))


def verify(key: bytes, token: str, now: datetime) -> TokenClaims:
    """The claims of a genuine, unexpired token; raises TokenError otherwise (never anything else)."""
    if len(token) > 128 or not token.isascii():
        raise TokenError("malformed token")
    try:
        raw = _unb64(token)
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    if len(raw) != _TOKEN_BYTES:
        raise TokenError("malformed token")
    payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    # Constant-time comparison: the MAC must not be discoverable byte by byte through timing.
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise TokenError("signature does not match")
    version, sid, expiry = _LAYOUT.unpack(payload)
    if version != _VERSION:
        raise TokenError("unknown token version")
    expires_at = datetime.fromtimestamp(expiry, UTC)
    if now >= expires_at:
        raise TokenError("token expired", expired=True)
    return TokenClaims(snapshot_id=sid.hex(), expires_at=expires_at)
