"""Authentication failure type and the `WWW-Authenticate` header value sent with a 401.

`AuthError.reason` is a short, bounded machine string (safe as a metrics label and in logs).
`AuthError.detail` is for operators' logs only and never names token bytes or key material.
Clients see only `www_authenticate(reason)`, a fixed phrase per reason: failures before the
signature is verified all read "invalid token", so a caller without a trusted key learns nothing
about which issuer, key id or check it got wrong.
"""

from __future__ import annotations

__all__ = ["REASONS", "AuthError", "www_authenticate"]

# Every reason the verifier can raise, with the phrase a client may see. Pre-signature reasons map to
# the generic phrase on purpose (see module docstring); post-signature ones are reachable only with a
# token signed by a trusted issuer, so telling that client "expired" or "audience mismatch" helps it
# fix its configuration without helping an attacker.
_GENERIC = "invalid token"
REASONS: dict[str, str] = {
    "missing-token": "bearer token required",
    "bad-scheme": "bearer token required",
    "token-too-large": "token too large",
    "malformed": _GENERIC,
    "bad-alg": _GENERIC,
    "bad-typ": _GENERIC,
    "missing-kid": _GENERIC,
    "unsupported-header": _GENERIC,
    "unknown-issuer": _GENERIC,
    "jku-not-allowed": _GENERIC,
    "unknown-kid": _GENERIC,
    "jwks-unavailable": _GENERIC,
    "bad-signature": _GENERIC,
    "missing-claim": "token missing a required claim",
    "invalid-claim": _GENERIC,
    "bad-aud": "token audience mismatch",
    "expired": "token expired",
    "not-yet-valid": "token not yet valid",
    "iat-in-future": "token not yet valid",
    "lifetime-too-long": "token lifetime too long",
    "tenant-not-allowed": _GENERIC,
    "replayed": "token already used",
    "replay-cache-full": "try again later",
    # The shared replay table (database) could not be asked: refused, never accepted unchecked (issue 17).
    "replay-check-unavailable": "replay check unavailable, try again later",
}


class AuthError(Exception):
    """The caller could not be authenticated; the app answers 401 with `www_authenticate(reason)`."""

    reason: str
    detail: str

    def __init__(self, reason: str, detail: str = "") -> None:
        # Unknown reasons are a programming error; keep the label set bounded for metrics anyway.
        self.reason = reason if reason in REASONS else "malformed"
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


def www_authenticate(reason: str) -> str:
    """The `WWW-Authenticate` value for a 401 caused by `reason` (an `AuthError.reason`).

    Built only from fixed strings, never from request data, so it cannot echo a token or be used
    for header injection.
    """
    # A missing token gets `invalid_request` with its reason too. RFC 6750 §3.1 suggests (SHOULD NOT) leaving
    # the error out when no credentials were sent; we include it on purpose so every 401 says why (issue 16),
    # and "bearer token required" reveals nothing a caller without a token did not already know.
    error = "invalid_request" if reason in ("missing-token", "bad-scheme") else "invalid_token"
    description = REASONS.get(reason, _GENERIC)
    return f'Bearer realm="cds-services", error="{error}", error_description="{description}"'
