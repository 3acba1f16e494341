"""Public JWKs (RFC 7517) turned into `cryptography` keys, and JWS signature checks for the
asymmetric algorithms we allow.

Built on `cryptography` directly rather than a JWT library's key loader so that exactly these rules
hold: public keys only (a JWK carrying private material is refused, it means a leaked key), no
symmetric (`oct`) keys, EC curve tied to the algorithm, RSA keys of at least 2048 bits.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "JwkError",
    "PublicJwk",
    "parse_jwk",
    "parse_jwks",
    "verify_signature",
]

# alg → (key type, EC curve name or None, hash). Anything not here (none, HS*, EdDSA, ES256K) is refused.
_ALGS: dict[str, tuple[str, str | None, type[hashes.HashAlgorithm]]] = {
    "ES256": ("EC", "P-256", hashes.SHA256),
    "ES384": ("EC", "P-384", hashes.SHA384),
    "ES512": ("EC", "P-521", hashes.SHA512),
    "RS256": ("RSA", None, hashes.SHA256),
    "RS384": ("RSA", None, hashes.SHA384),
    "RS512": ("RSA", None, hashes.SHA512),
    "PS256": ("RSA", None, hashes.SHA256),
    "PS384": ("RSA", None, hashes.SHA384),
    "PS512": ("RSA", None, hashes.SHA512),
}
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(_ALGS)
# The spec's RECOMMENDED pair (CDS Hooks 2.0 §JWT Signing Algorithm); others only when configured.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ES384", "RS384")

_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class JwkError(ValueError):
    """A JWK that cannot be used as a trusted public verification key."""


@dataclass(frozen=True)
class PublicJwk:
    """One usable verification key from a JWKS."""

    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own `alg`, if it pins one
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey

    def accepts(self, alg: str) -> bool:
        """Whether this key may verify a signature made with `alg` (type, curve and pinned alg agree)."""
        spec = _ALGS.get(alg)
        if spec is None or spec[0] != self.kty or spec[1] != self.crv:
            return False
        return self.alg is None or self.alg == alg


def b64url_decode(segment: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2): no padding, no standard-alphabet characters."""
    if len(segment) % 4 == 1 or any(c in segment for c in "+/= \t\r\n"):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _uint(jwk: Mapping[str, Any], name: str) -> tuple[int, int]:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise JwkError(f"member {name!r} missing or not a string")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise JwkError(f"member {name!r} is not base64url") from exc
    return int.from_bytes(raw, "big"), len(raw)


def parse_jwk(jwk: Mapping[str, Any]) -> PublicJwk:
    """Validate one JWK and load its public key; raises `JwkError` naming the problem."""
    if not isinstance(jwk, Mapping):
        raise JwkError("key is not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwkError("key has no 'kid'")
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        raise JwkError(f"key {kid!r} contains private or symmetric key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JwkError(f"key {kid!r} has use={use!r}, not 'sig'")
    alg = jwk.get("alg")
    if alg is not None and alg not in _ALGS:
        raise JwkError(f"key {kid!r} pins unsupported alg {alg!r}")
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            crv = jwk.get("crv")
            if not isinstance(crv, str) or crv not in _CURVES:
                raise JwkError(f"key {kid!r} has unsupported curve {crv!r}")
            curve, size = _CURVES[crv]
            x, xlen = _uint(jwk, "x")
            y, ylen = _uint(jwk, "y")
            if xlen != size or ylen != size:
                raise JwkError(f"key {kid!r} has coordinates of the wrong length for {crv}")
            # Raises ValueError if the point is not on the curve (invalid-curve attacks).
            ec_key = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
            return PublicJwk(kid, "EC", crv, alg, ec_key)
        if kty == "RSA":
            n, _ = _uint(jwk, "n")
            e, _ = _uint(jwk, "e")
            rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
            if rsa_key.key_size < _MIN_RSA_BITS:
                raise JwkError(f"key {kid!r} is RSA-{rsa_key.key_size}, below {_MIN_RSA_BITS} bits")
            return PublicJwk(kid, "RSA", None, alg, rsa_key)
    except JwkError:
        raise
    except ValueError as exc:
        raise JwkError(f"key {kid!r} is not a valid {kty} public key") from exc
    raise JwkError(f"key {kid!r} has unsupported kty {kty!r}")


def parse_jwks(doc: object, *, strict: bool) -> tuple[dict[str, PublicJwk], list[str]]:
    """Keys of a JWKS document by kid, plus the problems found.

    `strict` (trust files): any bad key is an error. Not strict (fetched from a jku): unusable keys
    are skipped and reported, so one exotic key an issuer publishes does not lock out the others.
    Duplicate kids are always refused for that kid, since "which key did they mean" has no safe answer.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise JwkError("JWKS must be an object with a 'keys' array")
    keys: dict[str, PublicJwk] = {}
    problems: list[str] = []
    duplicates: set[str] = set()
    for raw in doc["keys"]:
        try:
            key = parse_jwk(raw)
        except JwkError as exc:
            if strict:
                raise
            problems.append(str(exc))
            continue
        if key.kid in keys or key.kid in duplicates:
            if strict:
                raise JwkError(f"duplicate kid {key.kid!r}")
            problems.append(f"duplicate kid {key.kid!r}")
            keys.pop(key.kid, None)
            duplicates.add(key.kid)
            continue
        keys[key.kid] = key
    return keys, problems


def verify_signature(alg: str, key: PublicJwk, signing_input: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid JWS signature of `signing_input` under `key` with `alg`."""
    if not key.accepts(alg):
        return False
    _, crv, hash_cls = _ALGS[alg]
    try:
        if isinstance(key.key, ec.EllipticCurvePublicKey):
            size = _CURVES[crv or ""][1]
            # JWS ECDSA signatures are fixed-length R||S (RFC 7518 §3.4), not DER.
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hash_cls()))
            return True
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls().digest_size)
            key.key.verify(signature, signing_input, pss, hash_cls())
        else:
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hash_cls())
        return True
    except (InvalidSignature, ValueError):
        return False
