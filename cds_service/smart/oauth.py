"""The OAuth side of SMART App Launch 2 (EHR launch): discovery, the authorize redirect, the token exchange.

The protocol work (PKCE S256 challenge, authorization URL, token request and client authentication, token
response parsing) is authlib's `AsyncOAuth2Client`; this module only says what SMART adds: discovery from
`{iss}/.well-known/smart-configuration`, the `launch` and `aud` parameters, and the launch context
(`patient`, `fhirUser`, `appContext`) in the token response.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError

with warnings.catch_warnings():
    # Authlib >= 1.9 prefers the `httpx2` fork and warns when it falls back to httpx, which this project uses
    # everywhere (and respx mocks); the fallback is supported, so the start-up warning is only noise.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

SCOPES = "launch openid fhirUser patient/Patient.r patient/QuestionnaireResponse.c"
#: Scopes that allow creating a QuestionnaireResponse (SMART v2 `.c`/`.cruds`; v1 `.write`/`.*`).
WRITE_SCOPES = frozenset(
    f"{who}/QuestionnaireResponse.{perm}"
    for who in ("patient", "user")
    for perm in ("c", "cu", "cru", "crud", "cruds", "write", "*")
)
MAX_DISCOVERY_BYTES = 200_000
TIMEOUT_S = 10.0


class DiscoveryError(Exception):
    """The EHR's SMART configuration could not be read or does not allow this launch."""


class TokenExchangeError(Exception):
    """The token endpoint refused the code (or answered something that is not a token)."""


@dataclass(frozen=True, slots=True)
class SmartConfig:
    authorization_endpoint: str
    token_endpoint: str


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str | None
    redirect_uri: str

    def oauth(self) -> AsyncOAuth2Client:
        # A confidential client authenticates with HTTP Basic; a public one sends only its client_id and
        # relies on PKCE (SMART App Launch 2 requires S256 from both).
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=SCOPES,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none",
            timeout=TIMEOUT_S,
            follow_redirects=False,
        )


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    scopes: frozenset[str]
    patient: str | None
    fhir_user: str | None
    app_context: str | None
    expires_in: int | None

    @property
    def can_write(self) -> bool:
        return bool(self.scopes & WRITE_SCOPES)


def _https_or_same_origin(url: object, iss: str) -> str:
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise DiscoveryError(f"endpoint {url!r} is not an absolute URL")
    if url.startswith("http://") and not iss.startswith("http://"):
        raise DiscoveryError(f"endpoint {url!r} is plain http for an https FHIR server")
    return url


async def discover(http: httpx.AsyncClient, iss: str) -> SmartConfig:
    """Read `{iss}/.well-known/smart-configuration`; raises DiscoveryError with a plain reason."""
    url = f"{iss.rstrip('/')}/.well-known/smart-configuration"
    try:
        resp = await http.get(url, headers={"Accept": "application/json"}, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"could not reach the EHR ({type(exc).__name__})") from None
    if resp.status_code != 200:
        raise DiscoveryError(f"the EHR answered HTTP {resp.status_code} for its SMART configuration")
    if len(resp.content) > MAX_DISCOVERY_BYTES:
        raise DiscoveryError("the SMART configuration is too large")
    try:
        doc = resp.json()
    except ValueError:
        raise DiscoveryError("the SMART configuration is not JSON") from None
    if not isinstance(doc, dict):
        raise DiscoveryError("the SMART configuration is not a JSON object")
    methods = doc.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise DiscoveryError("the EHR does not support PKCE with S256")
    return SmartConfig(
        authorization_endpoint=_https_or_same_origin(doc.get("authorization_endpoint"), iss),
        token_endpoint=_https_or_same_origin(doc.get("token_endpoint"), iss),
    )


def new_state() -> str:
    return str(generate_token(43))


def new_code_verifier() -> str:
    return str(generate_token(64))  # RFC 7636: 43–128 characters of the unreserved set


def authorize_url(
    client: Client, config: SmartConfig, *, iss: str, launch: str, state: str, verifier: str
) -> str:
    url, _ = client.oauth().create_authorization_url(
        config.authorization_endpoint, state=state, code_verifier=verifier, launch=launch, aud=iss
    )
    return str(url)


def _fhir_user(token: dict[str, Any], client_id: str) -> str | None:
    """`fhirUser` from the token response, else from the id_token's claims.

    The id_token came straight from the token endpoint over the TLS connection we opened, so per OpenID
    Connect Core §3.1.3.7 (6) TLS server validation stands in for the signature check; the audience must
    still be us. The value is only the `author` reference of what we file, never an access decision.
    """
    direct = token.get("fhirUser")
    if isinstance(direct, str) and direct:
        return direct
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        return None
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False, "verify_aud": False})
    except jwt.PyJWTError:
        return None
    aud = claims.get("aud")
    if client_id not in (aud if isinstance(aud, list) else [aud]):
        return None
    value = claims.get("fhirUser")
    return value if isinstance(value, str) and value else None


async def exchange_code(client: Client, token_endpoint: str, *, code: str, verifier: str) -> TokenGrant:
    """The token for this code; raises TokenExchangeError with the server's reason."""
    async with client.oauth() as oauth:
        try:
            token = await oauth.fetch_token(token_endpoint, code=code, code_verifier=verifier)
        except OAuthError as exc:
            reason = exc.description or exc.error
            raise TokenExchangeError(
                f"{exc.error}: {reason}" if reason != exc.error else str(reason)
            ) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenExchangeError(f"no usable token response ({type(exc).__name__})") from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenExchangeError("the token response has no access_token")
    scope = token.get("scope")
    patient, app_context, expires = token.get("patient"), token.get("appContext"), token.get("expires_in")
    return TokenGrant(
        access_token=access,
        # RFC 6749 §5.1: no `scope` in the response means the scopes asked for were granted.
        scopes=frozenset((scope if isinstance(scope, str) else SCOPES).split()),
        patient=patient if isinstance(patient, str) and patient else None,
        fhir_user=_fhir_user(dict(token), client.client_id),
        app_context=app_context if isinstance(app_context, str) and app_context else None,
        expires_in=int(expires) if isinstance(expires, int | float) else None,
    )
