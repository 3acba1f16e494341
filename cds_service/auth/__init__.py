"""Authentication of CDS Clients: bearer JWTs checked against allowlisted issuers (issue 6).

Public API: `AuthError`, `www_authenticate`, `TrustConfig`, `load_trust`, `JwtVerifier`.
"""

from __future__ import annotations

from .errors import REASONS, AuthError, www_authenticate
from .trust import IssuerTrust, TrustConfig, load_trust
from .verifier import REQUIRED_CLAIMS, JwtVerifier

__all__ = [
    "REASONS",
    "REQUIRED_CLAIMS",
    "AuthError",
    "IssuerTrust",
    "JwtVerifier",
    "TrustConfig",
    "load_trust",
    "www_authenticate",
]
