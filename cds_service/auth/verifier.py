"""Verification of the CDS Client's bearer JWT (CDS Hooks 2.0 §Trusting CDS Clients, checklist §H).

Order, cheapest and least trusting first, so that nothing an unauthenticated caller controls causes
work or network traffic before it must:

1. `Authorization: Bearer` present; token size limit.
2. Structure: three strict base64url segments, JSON objects (duplicate members refused: two parsers
   disagreeing about a duplicated `alg` or `aud` is a classic bypass).
3. Header: `alg` not none/HMAC and one we implement; `typ` JWT (required by the spec); no `crit`; `kid`
   required.
4. Unverified `iss` allowlisted; `alg` allowed for that issuer; `jku`, if present, in that issuer's
   allowlist — otherwise refused before any request is made to it.
5. Key by kid: the issuer's static JWKS, else the allowlisted jku(s) via `JwksCache`.
6. Signature.
7. Claims (now trusted): required iss/aud/exp/iat/jti (2.0 defines no `sub`), `aud` equals one of the
   endpoint's external URLs, exp/iat/nbf with leeway, bounded lifetime, tenant, then `jti` unseen —
   recorded last, so only accepted tokens consume a jti. With a `SharedReplay` (the database's `jti`
   table, issue 17) the jti is also claimed there, atomically, so a replay is refused whichever worker or
   replica receives it; if that claim cannot be made the token is refused (fail closed).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .errors import AuthError
from .jwks import JwksCache
from .keys import ASYMMETRIC_ALGORITHMS, PublicJwk, b64url_decode, verify_signature
from .replay import ReplayCache, SharedReplay
from .trust import IssuerTrust, TrustConfig

__all__ = ["REQUIRED_CLAIMS", "JwtVerifier"]

REQUIRED_CLAIMS: tuple[str, ...] = ("iss", "aud", "exp", "iat", "jti")
_MAX_JTI_CHARS = 256


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError("non-standard JSON constant")


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            b64url_decode(segment),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise AuthError("malformed", f"{what} is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise AuthError("malformed", f"{what} is not a JSON object")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class JwtVerifier:
    """Verifies bearer JWTs against a `TrustConfig`. One instance per app: it owns the JWKS and
    replay caches, which only work if shared across requests."""

    def __init__(
        self,
        trust: TrustConfig,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        leeway_s: int = 60,
        jwks_timeout_s: float = 2.0,
        max_token_bytes: int = 8192,
        max_lifetime_s: int = 3600,
        jwks_ttl_s: float = 3600.0,
        jwks_min_refetch_s: float = 30.0,
        replay_cache_size: int = 100_000,
        shared_replay: SharedReplay | None = None,
    ) -> None:
        self._trust = trust
        self._clock = clock
        self._leeway_s = leeway_s
        self._max_token_bytes = max_token_bytes
        self._max_lifetime_s = max_lifetime_s
        self._jwks = JwksCache(
            http, clock=clock, timeout_s=jwks_timeout_s, ttl_s=jwks_ttl_s, min_refetch_s=jwks_min_refetch_s
        )
        self._replay = ReplayCache(replay_cache_size)
        self._shared_replay = shared_replay

    @property
    def trust(self) -> TrustConfig:
        """The issuers this verifier trusts (the app reads each issuer's `fhir_servers` from it)."""
        return self._trust

    async def verify(self, authorization_header: str | None, audiences: Sequence[str]) -> dict[str, Any]:
        """Verified claims of the request's bearer JWT; raises `AuthError` on any failure.

        `audiences`: the external URL(s) the caller may have addressed (for feedback, both the feedback
        URL and the service URL). An empty sequence accepts nothing.
        """
        token = self._bearer_token(authorization_header)
        header_b64, payload_b64, sig_b64 = self._split(token)
        header = _json_object(header_b64, "header")
        payload = _json_object(payload_b64, "payload")
        try:
            signature = b64url_decode(sig_b64)
        except ValueError as exc:
            raise AuthError("malformed", "signature is not base64url") from exc

        alg, kid, jku = self._check_header(header)
        issuer = self._check_issuer(payload, alg, jku)
        key = await self._resolve_key(issuer, kid, jku)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not key.accepts(alg) or not verify_signature(alg, key, signing_input, signature):
            raise AuthError("bad-signature", f"issuer {issuer.iss}")
        jti, expires_at, now = self._check_claims(payload, issuer, audiences)
        if self._shared_replay is not None:
            await self._claim_shared(self._shared_replay, issuer.iss, jti, expires_at, now)
        return payload

    # -- steps -----------------------------------------------------------------------------------

    def _bearer_token(self, authorization_header: str | None) -> str:
        if authorization_header is None or not authorization_header.strip():
            raise AuthError("missing-token")
        scheme, _, token = authorization_header.strip().partition(" ")
        # RFC 6750 §2.1 / RFC 7235: the auth scheme is case-insensitive.
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("bad-scheme", "Authorization is not a Bearer credential")
        token = token.strip()
        if len(token) > self._max_token_bytes:
            raise AuthError("token-too-large", f"{len(token)} > {self._max_token_bytes} characters")
        if not token.isascii():
            raise AuthError("malformed", "token is not ASCII")
        return token

    @staticmethod
    def _split(token: str) -> tuple[str, str, str]:
        parts = token.split(".")
        # Exactly three: five would be a JWE, which the spec does not use; fewer or more is garbage.
        # An empty signature is let through here so that `alg: none` is reported as bad-alg below;
        # it can never verify.
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise AuthError("malformed", f"expected 3 segments, got {len(parts)}")
        return parts[0], parts[1], parts[2]

    @staticmethod
    def _check_header(header: dict[str, Any]) -> tuple[str, str, str | None]:
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("bad-alg", "alg missing")
        if alg.lower() == "none" or alg.upper().startswith("HS") or alg not in ASYMMETRIC_ALGORITHMS:
            # §JWT Signing Algorithm: none and symmetric algorithms SHALL NOT be used.
            raise AuthError("bad-alg", f"alg {alg[:20]!r} not accepted")
        typ = header.get("typ")
        # CDS Hooks 2.0 §Trusting CDS Clients lists `typ` as REQUIRED with the value "JWT", so a token without
        # it is refused. Media type names are case-insensitive and RFC 7515 §4.1.9 lets the "application/"
        # prefix be omitted, so "jwt" and "application/jwt" are the same declaration and accepted too.
        if not isinstance(typ, str) or typ.lower() not in ("jwt", "application/jwt"):
            raise AuthError("bad-typ", "typ missing" if typ is None else "typ is not JWT")
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extensions, so a critical one must be refused.
            raise AuthError("unsupported-header", "crit header present")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("missing-kid", "kid header missing")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise AuthError("malformed", "jku is not a string")
        return alg, kid, jku

    def _check_issuer(self, payload: dict[str, Any], alg: str, jku: str | None) -> IssuerTrust:
        iss = payload.get("iss")
        if iss is None:
            raise AuthError("missing-claim", "iss")
        if not isinstance(iss, str):
            raise AuthError("invalid-claim", "iss is not a string")
        issuer = self._trust.issuer(iss)
        if issuer is None:
            raise AuthError("unknown-issuer", "iss not allowlisted")
        if alg not in issuer.algorithms:
            raise AuthError("bad-alg", f"alg {alg} not configured for issuer {iss}")
        if jku is not None and jku not in issuer.jku:
            # Never fetch a non-allowlisted jku (§H item 33): the attacker would choose the key.
            raise AuthError("jku-not-allowed", f"jku not allowlisted for issuer {iss}")
        return issuer

    async def _resolve_key(self, issuer: IssuerTrust, kid: str, jku: str | None) -> PublicJwk:
        # Static keys first: registered out of band, no network needed.
        key = issuer.static_keys.get(kid)
        if key is not None:
            return key
        urls = (jku,) if jku is not None else issuer.jku
        reached_any = False
        for url in urls:
            try:
                key = await self._jwks.get_key(url, kid)
            except AuthError:
                continue
            reached_any = True
            if key is not None:
                return key
        if urls and not reached_any:
            raise AuthError("jwks-unavailable", f"no JWKS reachable for issuer {issuer.iss}")
        raise AuthError("unknown-kid", f"kid not found for issuer {issuer.iss}")

    def _check_claims(
        self, payload: dict[str, Any], issuer: IssuerTrust, audiences: Sequence[str]
    ) -> tuple[str, float, float]:
        """Check the claims, record the jti in this process; (jti, expiry, now) for the shared claim."""
        for claim in REQUIRED_CLAIMS:
            if claim not in payload or payload[claim] is None:
                raise AuthError("missing-claim", claim)
        for claim in ("exp", "iat", "nbf"):
            if claim in payload and not _is_number(payload[claim]):
                raise AuthError("invalid-claim", f"{claim} is not a number")
        jti = payload["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI_CHARS:
            raise AuthError("invalid-claim", "jti is not a short non-empty string")

        aud = payload["aud"]
        aud_list = [aud] if isinstance(aud, str) else aud
        if not isinstance(aud_list, list) or not aud_list or not all(isinstance(a, str) for a in aud_list):
            raise AuthError("invalid-claim", "aud is not a string or array of strings")
        # Exact string comparison: the spec says aud is the URL called; normalising would widen it.
        if not set(aud_list) & set(audiences):
            shown = ", ".join(a[:200] for a in aud_list[:3])
            raise AuthError("bad-aud", f"aud {shown} not in {', '.join(audiences)}")

        now = self._clock()
        exp = float(payload["exp"])
        iat = float(payload["iat"])
        if now >= exp + self._leeway_s:
            raise AuthError("expired", "exp passed")
        if iat > now + self._leeway_s:
            raise AuthError("iat-in-future", "iat in the future")
        if "nbf" in payload and float(payload["nbf"]) > now + self._leeway_s:
            raise AuthError("not-yet-valid", "nbf in the future")
        if exp - iat > self._max_lifetime_s:
            # Bounds how long a leaked token works and how long its jti must be remembered.
            raise AuthError("lifetime-too-long", f"exp - iat > {self._max_lifetime_s}s")

        if issuer.tenants is not None:
            tenant = payload.get("tenant")
            if not isinstance(tenant, str) or tenant not in issuer.tenants:
                raise AuthError("tenant-not-allowed", f"tenant not allowlisted for issuer {issuer.iss}")

        expires_at = exp + self._leeway_s
        try:
            self._replay.check_and_add(issuer.iss, jti, expires_at, now)
        except AuthError as exc:
            # A full in-process cache only fails closed when it is the only check; with a shared store
            # behind it, that store still decides.
            if exc.reason != "replay-cache-full" or self._shared_replay is None:
                raise
        return jti, expires_at, now

    async def _claim_shared(
        self, shared: SharedReplay, iss: str, jti: str, expires_at: float, now: float
    ) -> None:
        try:
            # Atomicity comes from the store's unique key, not from the absence of an await.
            claimed = await shared.claim(iss, jti, expires_at, now)
        except Exception as exc:
            # Fail closed: without the shared answer another process may already have accepted this token.
            # Forget the local record so a retry is told the real reason, not "replayed".
            self._replay.forget(iss, jti)
            raise AuthError("replay-check-unavailable", f"{type(exc).__name__}: {exc}"[:300]) from exc
        if not claimed:
            raise AuthError("replayed", "jti already claimed in the shared replay table")
