"""A test EHR for the SMART checklist: authlib's OAuth 2.0 authorization server and a small FHIR endpoint.

Real parts: the authorization server is authlib's `AuthorizationServer` (Flask integration) with its
authorization-code grant, PKCE (`CodeChallenge(required=True)`, S256 only) and OpenID Connect `id_token`
(`OpenIDCode`, RS256, with the `fhirUser` claim). What SMART adds is configured, not faked: the `launch`
parameter must name a launch this EHR started, `aud` must be its FHIR base, and the token response carries
the launch context (`patient`, `appContext`). The FHIR endpoint checks every bearer token with authlib's
`ResourceProtector` (scopes included), confines it to the launched patient, and validates what it receives
with fhir.resources (R4B QuestionnaireResponse) before storing it with an id and version.

It runs under werkzeug on a loopback port chosen at run time (see `running_ehr`).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from flask import Flask, Response, jsonify, request
from joserfc.jwk import RSAKey
from markupsafe import escape
from pydantic import ValidationError
from werkzeug.serving import make_server

CLIENT_ID = "va-cds-checklist"
PATIENTS: dict[str, dict[str, Any]] = {
    "p1": {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"use": "official", "family": "Testwoman", "given": ["Marta"]}],
        "birthDate": "1948-03-02",
        "gender": "female",
        "identifier": [{"type": {"text": "MRN"}, "system": "urn:example:mrn", "value": "MRN-400117"}],
    },
    "p2": {
        "resourceType": "Patient",
        "id": "p2",
        "name": [{"use": "official", "family": "Otherman", "given": ["Olaf"]}],
        "birthDate": "1951-07-19",
        "identifier": [{"type": {"text": "MRN"}, "value": "MRN-999002"}],
    },
}


@dataclass
class Client:
    client_id: str
    redirect_uris: list[str]
    scope: str
    client_secret: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint == "token":
            return method == ("client_secret_basic" if self.client_secret else "none")
        return True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    launch: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token:
    access_token: str
    client_id: str
    scope: str
    patient: str
    user: str
    issued_at: float
    expires_in: int
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        raise NotImplementedError


@dataclass
class Launch:
    patient: str
    app_context: str
    user: str = "doc-1"
    #: scopes this EHR refuses to grant for this launch (a site policy, or the user unticking them)
    withhold: frozenset[str] = frozenset()


@dataclass
class Ehr:
    """The EHR's state: launches, codes, tokens, stored resources, and what the tests observe."""

    base: str = ""  # http://127.0.0.1:port, set once the server is bound
    clients: dict[str, Client] = field(default_factory=dict)
    launches: dict[str, Launch] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0
    discovery_requests: int = 0
    writes_refused: list[str] = field(default_factory=list)
    #: when set, the next QuestionnaireResponse POST is answered with this status and an OperationOutcome
    fail_next_write: int | None = None
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, private=True))

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    def new_launch(self, patient: str, app_context: str, **kwargs: Any) -> str:
        launch_id = secrets.token_urlsafe(12)
        self.launches[launch_id] = Launch(patient=patient, app_context=app_context, **kwargs)
        return launch_id

    def launch_url(self, app_launch_url: str, launch_id: str) -> str:
        """What the EHR opens when the clinician clicks the card's smart link."""
        from urllib.parse import urlencode

        return f"{app_launch_url}?{urlencode({'iss': self.fhir_base, 'launch': launch_id})}"

    def issue_token(self, patient: str, scope: str) -> str:
        """A token for the test itself (reading back what was filed), as an EHR admin tool would."""
        token = Token(secrets.token_urlsafe(24), "test-reader", scope, patient, "admin", time.time(), 600)
        self.tokens[token.access_token] = token
        return token.access_token


class SmartLaunchContext:
    """authlib grant extension: the SMART launch context in the token response."""

    def __init__(self, ehr: Ehr) -> None:
        self.ehr = ehr

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def process_token(self, grant: Any, response: Any) -> None:
        _, token, _ = response
        code = grant.request.authorization_code
        launch = self.ehr.launches[code.launch]
        token["patient"] = launch.patient
        token["appContext"] = launch.app_context
        stored = self.ehr.tokens[token["access_token"]]
        stored.patient = launch.patient


class OpenId(OpenIDCode):
    """id_token with the SMART `fhirUser` claim, signed RS256 with the EHR's key."""

    def __init__(self, ehr: Ehr) -> None:
        super().__init__(require_nonce=False)
        self.ehr = ehr

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return any(c.nonce == nonce for c in self.ehr.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.ehr.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": f"{self.ehr.base}/auth", "aud": [client.client_id], "exp": int(time.time()) + 300}

    def generate_user_info(self, user: str, scope: str) -> dict[str, str]:
        return {"sub": user, "fhirUser": f"Practitioner/{user}"}


def build_app(ehr: Ehr) -> Flask:
    app = Flask("test-ehr")

    def save_token(token: dict[str, Any], req: Any) -> None:
        ehr.tokens[token["access_token"]] = Token(
            access_token=token["access_token"],
            client_id=req.client.client_id,
            scope=token.get("scope", ""),
            patient="",
            user=req.user,
            issued_at=time.time(),
            expires_in=int(token.get("expires_in", 3600)),
        )

    server = AuthorizationServer(app, query_client=ehr.clients.get, save_token=save_token)

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]  # noqa: RUF012

        def validate_authorization_request(self) -> str:
            redirect_uri: str = super().validate_authorization_request()
            data = self.request.payload.data
            if data.get("aud") != ehr.fhir_base:
                raise InvalidRequestError("'aud' must be this EHR's FHIR base URL")
            if data.get("launch") not in ehr.launches:
                raise InvalidRequestError("unknown 'launch'")
            if data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("PKCE with S256 is required")
            return redirect_uri

        def save_authorization_code(self, code: str, req: Any) -> None:
            data = req.payload.data
            launch = ehr.launches[data["launch"]]
            granted = " ".join(s for s in req.payload.scope.split() if s not in launch.withhold)
            ehr.codes[code] = AuthCode(
                code=code,
                client_id=req.client.client_id,
                redirect_uri=req.payload.redirect_uri,
                scope=granted,
                user=launch.user,
                launch=data["launch"],
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                nonce=data.get("nonce"),
                auth_time=int(time.time()),
            )

        def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
            item = ehr.codes.get(code)
            return item if item is not None and item.client_id == client.client_id else None

        def delete_authorization_code(self, authorization_code: AuthCode) -> None:
            ehr.codes.pop(authorization_code.code, None)  # single use

        def authenticate_user(self, authorization_code: AuthCode) -> str:
            return authorization_code.user

    server.register_grant(CodeGrant, [CodeChallenge(required=True), OpenId(ehr), SmartLaunchContext(ehr)])

    class Validator(BearerTokenValidator):  # type: ignore[misc]
        def authenticate_token(self, token_string: str) -> Token | None:
            return ehr.tokens.get(token_string)

    protect = ResourceProtector()
    protect.register_token_validator(Validator())

    def outcome(status: int, code: str, text: str) -> Response:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "details": {"text": text}}],
        }
        resp = jsonify(body)
        resp.status_code = status
        resp.content_type = "application/fhir+json"
        return resp

    @app.get("/fhir/.well-known/smart-configuration")
    def smart_configuration() -> Any:
        ehr.discovery_requests += 1
        return jsonify(
            {
                "issuer": f"{ehr.base}/auth",
                "authorization_endpoint": f"{ehr.base}/auth/authorize",
                "token_endpoint": f"{ehr.base}/auth/token",
                "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
                "scopes_supported": ["launch", "openid", "fhirUser", "patient/*.rs", "patient/*.c"],
                "response_types_supported": ["code"],
                "capabilities": [
                    "launch-ehr",
                    "client-public",
                    "client-confidential-symmetric",
                    "context-ehr-patient",
                    "sso-openid-connect",
                    "permission-v2",
                ],
            }
        )

    @app.route("/auth/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        launch = ehr.launches.get(request.values.get("launch", ""))
        user = launch.user if launch else None
        if request.method == "GET":
            try:
                server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return outcome(400, "invalid", f"{error.error}: {error.description}")
            # The EHR's consent screen: a form re-posting the request's own parameters.
            hidden = "".join(
                f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                for k, v in request.args.items(multi=True)
            )
            return (
                "<!doctype html><title>Test EHR authorization</title><h1>Allow va-cds checklist?</h1>"
                f'<form method="post" action="/auth/authorize">{hidden}'
                '<button name="confirm" value="yes">Allow</button></form>'
            )
        try:
            grant = server.get_consent_grant(end_user=user)  # the same checks again on the posted form
        except OAuth2Error as error:
            return outcome(400, "invalid", f"{error.error}: {error.description}")
        return server.create_authorization_response(
            grant_user=user if request.form.get("confirm") else None, grant=grant
        )

    @app.post("/auth/token")
    def issue_token() -> Any:
        ehr.token_requests += 1
        return server.create_token_response()

    @app.get("/fhir/Patient/<pid>")
    @protect("patient/Patient.r")
    def read_patient(pid: str) -> Any:
        if current_token.patient != pid or pid not in PATIENTS:
            return outcome(403, "forbidden", "token is not for this patient")
        return jsonify(PATIENTS[pid])

    @app.post("/fhir/QuestionnaireResponse")
    def create_qr() -> Any:
        try:
            token = protect.acquire_token(["patient/QuestionnaireResponse.c"])
        except OAuth2Error as error:
            ehr.writes_refused.append(error.error)
            return outcome(403 if error.error == "insufficient_scope" else 401, "forbidden", error.error)
        if not (request.content_type or "").startswith("application/fhir+json"):
            return outcome(415, "not-supported", "send application/fhir+json")
        if ehr.fail_next_write is not None:
            status, ehr.fail_next_write = ehr.fail_next_write, None
            return outcome(status, "business-rule", "Questionnaire version not accepted by this EHR")
        body = request.get_json(silent=True)
        try:
            QuestionnaireResponse.model_validate(body)
        except ValidationError as exc:
            return outcome(400, "structure", f"invalid QuestionnaireResponse: {exc.errors()[0]['msg']}")
        assert isinstance(body, dict)
        if (body.get("subject") or {}).get("reference") != f"Patient/{token.patient}":
            ehr.writes_refused.append("wrong subject")
            return outcome(403, "forbidden", "subject is not the launched patient")
        rid = str(uuid.uuid4())
        body["id"] = rid
        body["meta"] = {"versionId": "1"}
        ehr.resources[rid] = body
        resp = Response(status=201)
        resp.headers["Location"] = f"{ehr.fhir_base}/QuestionnaireResponse/{rid}/_history/1"
        return resp

    @app.get("/fhir/QuestionnaireResponse/<rid>")
    @protect("patient/QuestionnaireResponse.r")
    def read_qr(rid: str) -> Any:
        body = ehr.resources.get(rid)
        if body is None or body["subject"]["reference"] != f"Patient/{current_token.patient}":
            return outcome(404, "not-found", "no such QuestionnaireResponse")
        resp = jsonify(body)
        resp.content_type = "application/fhir+json"
        return resp

    return app


@contextmanager
def running_ehr(redirect_uri: str | None = None) -> Iterator[Ehr]:
    """The test EHR on a free loopback port; register `redirect_uri` for the app's client later if None."""
    ehr = Ehr()
    app = build_app(ehr)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    ehr.base = f"http://127.0.0.1:{srv.server_port}"
    thread = threading.Thread(target=srv.serve_forever, name="test-ehr", daemon=True)
    thread.start()
    try:
        yield ehr
    finally:
        srv.shutdown()
        thread.join(timeout=10)
