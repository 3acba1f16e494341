"""openapi.yaml is the contract: a valid OpenAPI 3.1 document, listing exactly the routes the app serves,
whose schemas accept what the app really answers and real clients really send, and reject what CDS Hooks
2.0 forbids (so a green run means something)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.shared_paths import SANDBOX as SHARED_SANDBOX

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "openapi.yaml"
SANDBOX = SHARED_SANDBOX

DOC_URI = "urn:va-cds:openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}

DOC: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
REGISTRY: Registry = Registry().with_resource(
    DOC_URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)


# ---------------------------------------------------------------------------------------------------
# Helpers: schemas of the document as jsonschema validators
# ---------------------------------------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator_at(pointer: str) -> Draft202012Validator:
    """A 2020-12 validator for the schema at `pointer` in the document, with its $refs resolvable."""
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#{pointer}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def component(name: str) -> Draft202012Validator:
    return validator_at(_pointer("components", "schemas", name))


def errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _deref(obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """Follow a local `$ref` of a Response/Header object; return it and its pointer."""
    while "$ref" in obj:
        pointer = obj["$ref"].removeprefix("#")
        obj = DOC
        for part in pointer.strip("/").split("/"):
            obj = obj[part.replace("~1", "/").replace("~0", "~")]
    return obj, pointer


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in DOC["paths"].items() for method in item if method in METHODS
    }


def assert_documented(response: Any, path: str, method: str) -> Any:
    """The response's status, media type, required headers and body are all as the document says."""
    operation = DOC["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method.upper()} {path} answered {status}, which the document does not list: {response.text[:300]}"
    )
    resp, resp_ptr = _deref(
        operation["responses"][status], _pointer("paths", path, method, "responses", status)
    )
    for name, header in resp.get("headers", {}).items():
        header, header_ptr = _deref(header, resp_ptr + _pointer("headers", name))
        value = response.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{status} from {method.upper()} {path} lacks the {name} header"
        if value is not None:
            problems = errors(validator_at(header_ptr + "/schema"), value)
            assert not problems, f"header {name}: {value!r}: {problems}"
    if "content" not in resp:
        assert response.content == b"", f"{status} from {method.upper()} {path} should have no body"
        return None
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in resp["content"], f"{status} from {method.upper()} {path} is {media}, not documented"
    if media.endswith("json"):
        body = response.json()
        problems = errors(validator_at(resp_ptr + _pointer("content", media, "schema")), body)
        assert not problems, f"{method.upper()} {path} {status} body does not match the document: {problems}"
        return body
    return response.text


# ---------------------------------------------------------------------------------------------------
# Fixtures shared with the app-based tests
# ---------------------------------------------------------------------------------------------------

EMPTY_SEARCHSET: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "birthDate": "1950-01-01",
    "gender": "female",
}
VA_ORDER: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "va-1",
    "status": "draft",
    "intent": "order",
    "code": {
        "coding": [
            {
                "system": "http://www.ama-assn.org/go/cpt",
                "code": "22513",
                "display": "Percutaneous vertebral augmentation, including cavity creation; thoracic",
            }
        ]
    },
    "subject": {"reference": "Patient/p1"},
}


def order_sign_request(prefetch_keys: list[str] | None) -> dict[str, Any]:
    """A VA order-sign call; every listed prefetch key answered (patient, else an empty searchset)."""
    body: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/pr1",
            "patientId": "p1",
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": VA_ORDER}],
            },
        },
    }
    if prefetch_keys is not None:
        body["prefetch"] = {
            key: copy.deepcopy(PATIENT if key == "patient" else EMPTY_SEARCHSET) for key in prefetch_keys
        }
    return body


# A card in the shape of the reference example (cds-hooks-2.0.md §3) plus our extensions.
GOOD_CARD: dict[str, Any] = {
    "uuid": "0c8f2b7e-6a55-4d1a-9d43-2f4a1e3b9c10",
    "summary": "No INR or platelet count in the last 30 days before vertebral augmentation",
    "detail": "Order **INR** and a **CBC** before the procedure.",
    "indicator": "warning",
    "source": {
        "label": "va-cds",
        "url": "http://127.0.0.1:8080/docs/rules/pre.coag.labs-missing",
        "topic": {
            "system": "https://va-cds.org/fhir/CodeSystem/rule",
            "code": "pre.coag.labs-missing",
            "display": "pre.coag.labs-missing",
        },
    },
    "suggestions": [
        {
            "label": "Order INR",
            "uuid": "7d1e5b0a-94c2-4e4b-8a61-3f2c9e0d5b72",
            "isRecommended": True,
            "actions": [
                {
                    "type": "create",
                    "description": "Order INR (LOINC 6301-6)",
                    "resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order"},
                }
            ],
        }
    ],
    "selectionBehavior": "any",
    "overrideReasons": [
        {
            "system": "https://va-cds.org/fhir/CodeSystem/override-reason",
            "code": "not-applicable",
            "display": "Not applicable to this patient",
        }
    ],
    "links": [
        {
            "label": "Open the tapering calculator",
            "url": "https://apps.example.com/launch",
            "type": "smart",
            "appContext": '{"draftOrder":"ServiceRequest/va-1"}',
        }
    ],
    "extension": {
        "org.va-cds.rule": "pre.coag.labs-missing",
        "org.va-cds.findings": ["pre.coag.labs-missing"],
        "org.va-cds.citation": "Chapter §2.1; refs [6-9]",
        "org.va-cds.evidence": [{"reference": "Observation/123", "summary": "INR 2.4 on 2026-11-19"}],
        "org.va-cds.policy": {"coag_window_days": 30},
    },
}


def _sandbox_bodies(kind: str) -> Iterator[Any]:
    for path in sorted(SANDBOX.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.values() if path.name == "feedback.json" else [data]
        for entry in entries:
            request = entry.get("request", {}) if isinstance(entry, dict) else {}
            if request.get("method") != "POST":
                continue
            is_feedback = request.get("url", "").endswith("/feedback")
            if is_feedback == (kind == "feedback"):
                yield pytest.param(request["body"], id=f"{path.stem}:{request['url'].rsplit('/', 1)[-1]}")


# ---------------------------------------------------------------------------------------------------
# 1. A valid OpenAPI 3.1 document
# ---------------------------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    validate(DOC, cls=OpenAPIV31SpecValidator)  # raises on any violation
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert [s["url"] for s in DOC["servers"]] == ["http://127.0.0.1:8080"]
    assert "CDS Hooks 2.0" in DOC["info"]["description"]


def test_cds_hooks_operations_require_the_jwt_and_the_others_do_not() -> None:
    scheme = DOC["components"]["securitySchemes"]["cdsHooksJwt"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    for claim in ("iss", "aud", "exp", "iat", "jti", "ES384", "RS384"):
        assert claim in scheme["description"], f"the JWT scheme does not document {claim}"
    secured = {
        (method.upper(), path)
        for method, path in documented_routes()
        if DOC["paths"][path][method.lower()].get("security", DOC.get("security")) == [{"cdsHooksJwt": []}]
    }
    open_ = {
        (method.upper(), path)
        for method, path in documented_routes()
        if DOC["paths"][path][method.lower()].get("security", DOC.get("security")) == []
    }
    assert secured == {
        ("GET", "/cds-services"),
        ("POST", "/cds-services/{service_id}"),
        ("POST", "/cds-services/{service_id}/feedback"),
    }
    assert secured | open_ == documented_routes()
    for method, path in secured:
        assert "401" in DOC["paths"][path][method.lower()]["responses"]


# ---------------------------------------------------------------------------------------------------
# 4. The schemas are strict: what CDS Hooks 2.0 forbids is rejected (the same as the wire models do)
# ---------------------------------------------------------------------------------------------------


def test_reference_card_is_accepted_by_document_and_wire_model() -> None:
    from cds_service.models import Card, HookResponse

    assert errors(component("Card"), GOOD_CARD) == []
    assert errors(component("HookResponse"), {"cards": [GOOD_CARD]}) == []
    assert errors(component("HookResponse"), {"cards": []}) == []
    Card.model_validate(GOOD_CARD)
    HookResponse.model_validate({"cards": [GOOD_CARD]})


def _card(**changes: Any) -> dict[str, Any]:
    card = copy.deepcopy(GOOD_CARD)
    for dotted, value in changes.items():
        target = card
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        key: Any = int(last) if last.isdigit() else last
        if value is _DROP:
            del target[key]
        else:
            target[key] = value
    return card


_DROP = object()

BAD_CARDS = [
    pytest.param(_card(summary="x" * 140), id="summary-140-chars"),
    pytest.param(_card(selectionBehavior=_DROP), id="suggestions-without-selectionBehavior"),
    pytest.param(_card(suggestions=_DROP), id="selectionBehavior-without-suggestions"),
    pytest.param(_card(overrideReasons__0__display=_DROP), id="override-reason-without-display"),
    pytest.param(_card(detail=""), id="empty-detail"),
    pytest.param(_card(summary=""), id="empty-summary"),
    pytest.param(_card(indicator="hard-stop"), id="pre-1.0-indicator"),
    pytest.param(_card(selectionBehavior="exactly-one"), id="unknown-selectionBehavior"),
    pytest.param(_card(links=[]), id="empty-links"),
    pytest.param(_card(uuid="not-a-uuid"), id="card-uuid-not-uuid"),
    pytest.param(_card(suggestions__0__uuid=_DROP), id="suggestion-without-uuid"),
    pytest.param(_card(source__topic__system=_DROP), id="coding-without-system"),
    pytest.param(_card(source=_DROP), id="no-source"),
    pytest.param(_card(links__0__type="absolute"), id="appContext-on-absolute-link"),
    pytest.param(_card(links__0__type="relative"), id="unknown-link-type"),
    pytest.param(_card(suggestions__0__actions__0__type="replace"), id="unknown-action-type"),
    pytest.param(_card(suggestions__0__actions__0__resource=_DROP), id="create-without-resource"),
    pytest.param(
        _card(suggestions__0__actions__0={"type": "delete", "description": "Cancel"}),
        id="delete-without-resourceId",
    ),
    pytest.param(
        _card(
            selectionBehavior="at-most-one",
            suggestions=[
                {"label": "A", "uuid": "7d1e5b0a-94c2-4e4b-8a61-3f2c9e0d5b73", "isRecommended": True},
                {"label": "B", "uuid": "7d1e5b0a-94c2-4e4b-8a61-3f2c9e0d5b74", "isRecommended": True},
            ],
        ),
        id="at-most-one-with-two-recommended",
    ),
    pytest.param(_card(hardStop=True), id="unknown-member"),
]


@pytest.mark.parametrize("card", BAD_CARDS)
def test_document_rejects_cards_cds_hooks_forbids(card: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from cds_service.models import Card

    assert errors(component("Card"), card), "the document's Card schema accepted an invalid card"
    with pytest.raises(ValidationError):  # the document and the wire model agree
        Card.model_validate(card)


def test_document_forbids_null_members_and_the_wire_model_never_emits_them() -> None:
    from cds_service.models import Card

    for member in ("links", "suggestions", "detail", "overrideReasons"):
        assert errors(component("Card"), _card(**{member: None})), f"{member}: null accepted"
    card = Card.model_validate(_card(links=None, detail=None))
    assert set(card.model_dump(mode="json", exclude_none=True)) == set(GOOD_CARD) - {"links", "detail"}


def test_card_extension_documents_the_va_cds_keys() -> None:
    ext = component("CardExtension")
    assert errors(ext, GOOD_CARD["extension"]) == []
    assert errors(ext, {**GOOD_CARD["extension"], "org.va-cds.evidence": [{"reference": "Observation/1"}]})
    assert errors(ext, {**GOOD_CARD["extension"], "org.va-cds.policy": "30 days"})
    assert errors(ext, {k: v for k, v in GOOD_CARD["extension"].items() if k != "org.va-cds.rule"})


def test_discovery_schema_refuses_non_2_0_prefetch_tokens() -> None:
    service = {
        "hook": "order-sign",
        "id": "va-preprocedure",
        "description": "Checks before vertebral augmentation.",
        "prefetch": {"patient": "Patient/{{context.patientId}}", "me": "Practitioner/{{userPractitionerId}}"},
    }
    schema = component("DiscoveryResponse")
    assert errors(schema, {"services": [service]}) == []
    assert errors(schema, {"services": []}) == []
    for template in (
        "Observation?patient={{context.patientId}}&date=ge{{today() - 90 days}}",
        "ServiceRequest/{{context.draftOrders.ServiceRequest.id}}",
        "Patient/{{Patient.id}}",
    ):
        bad = {**service, "prefetch": {"x": template}}
        assert errors(schema, {"services": [bad]}), template
    assert errors(schema, {"services": [{**service, "hook": "medication-prescribe"}]})
    assert errors(schema, {"services": [{k: v for k, v in service.items() if k != "description"}]})


# ---------------------------------------------------------------------------------------------------
# Requests: strict envelope, lenient FHIR; what real clients send is accepted
# ---------------------------------------------------------------------------------------------------


def test_request_schema_accepts_null_prefetch_and_lenient_draft_orders() -> None:
    body = order_sign_request(["patient", "conditions"])
    body["prefetch"]["conditions"] = None  # spec-legal: "no data"
    del body["context"]["draftOrders"]["type"]  # Bundle.type is not specified for draftOrders
    body["context"]["draftOrders"]["entry"][0]["resource"]["unknownFhirMember"] = {"x": 1}
    assert errors(component("HookRequest"), body) == []


def _req(change: str) -> dict[str, Any]:
    body = order_sign_request(["patient"])
    if change == "no-hookInstance":
        del body["hookInstance"]
    elif change == "hookInstance-not-uuid":
        body["hookInstance"] = "12345"
    elif change == "no-context":
        del body["context"]
    elif change == "auth-without-fhirServer":
        body["fhirAuthorization"] = {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "va-cds",
        }
    elif change == "fhirAuthorization-without-subject":
        body["fhirServer"] = "https://ehr.example.org/fhir"
        body["fhirAuthorization"] = {
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "s",
        }
    elif change == "order-sign-without-draftOrders":
        del body["context"]["draftOrders"]
    elif change == "patientId-is-a-reference":
        body["context"]["patientId"] = "Patient/p1"
    elif change == "userId-without-type":
        body["context"]["userId"] = "pr1"
    elif change == "patient-user-on-order-sign":
        body["context"]["userId"] = "Patient/p1"
    elif change == "draftOrders-not-a-bundle":
        body["context"]["draftOrders"] = {"resourceType": "ServiceRequest"}
    elif change == "prefetch-value-is-a-string":
        body["prefetch"]["patient"] = "Patient/p1"
    elif change == "unknown-hook":
        body["hook"] = "medication-prescribe"
    elif change == "encounter-start-without-encounterId":
        body["hook"] = "encounter-start"
        del body["context"]["draftOrders"]
    return body


@pytest.mark.parametrize(
    "change",
    [
        "no-hookInstance",
        "hookInstance-not-uuid",
        "no-context",
        "auth-without-fhirServer",
        "fhirAuthorization-without-subject",
        "order-sign-without-draftOrders",
        "patientId-is-a-reference",
        "userId-without-type",
        "patient-user-on-order-sign",
        "draftOrders-not-a-bundle",
        "prefetch-value-is-a-string",
        "unknown-hook",
        "encounter-start-without-encounterId",
    ],
)
def test_request_schema_is_strict_on_the_envelope(change: str) -> None:
    assert errors(component("HookRequest"), _req(change)), f"{change} was accepted"


@pytest.mark.parametrize("body", list(_sandbox_bodies("hook")))
def test_captured_sandbox_hook_requests_match_the_request_schema(body: dict[str, Any]) -> None:
    assert errors(component("HookRequest"), body) == []


def _feedback_request_validator() -> Draft202012Validator:
    path = "/cds-services/{service_id}/feedback"
    return validator_at(
        _pointer("paths", path, "post", "requestBody", "content", "application/json", "schema")
    )


@pytest.mark.parametrize("body", list(_sandbox_bodies("feedback")))
def test_captured_sandbox_feedback_is_2_0_feedback(body: dict[str, Any]) -> None:
    assert errors(component("FeedbackRequest"), body) == []
    assert errors(_feedback_request_validator(), body) == []


LEGACY_FEEDBACK = [
    pytest.param(
        {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T17:45:16Z"},
        id="no-feedback-wrapper",
    ),
    pytest.param(
        {
            "feedback": [
                {
                    "card": "c1",
                    "outcome": "overridden",
                    "overrideReason": {"system": "http://example.org/override", "code": "not-relevant"},
                    "outcomeTimestamp": "2026-11-21T17:45:16Z",
                }
            ]
        },
        id="bare-coding-override-reason",
    ),
    pytest.param(
        {
            "feedback": [
                {
                    "card": "c1",
                    "outcome": "accepted",
                    "acceptedSuggestions": ["9b5910d9-c4d7-43ed-8c0c-ea621272243a"],
                    "outcomeTimestamp": "2026-11-21T17:45:16Z",
                }
            ]
        },
        id="accepted-suggestions-as-strings",
    ),
    pytest.param(
        {"feedback": [{"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-21 17:45"}]},
        id="accepted-without-suggestions-and-loose-timestamp",
    ),
]


@pytest.mark.parametrize("body", LEGACY_FEEDBACK)
def test_older_feedback_shapes_are_documented_as_accepted_but_not_as_2_0(body: dict[str, Any]) -> None:
    from cds_service.models import FeedbackRequest

    FeedbackRequest.model_validate(body)  # the app takes them ...
    assert errors(_feedback_request_validator(), body) == []  # ... the document says so ...
    assert errors(component("FeedbackRequest"), body)  # ... and does not pass them off as 2.0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"feedback": []}, id="empty-feedback"),
        pytest.param(
            {"feedback": [{"card": "c1", "outcome": "ignored", "outcomeTimestamp": "2026-11-21T17:45:16Z"}]},
            id="unknown-outcome",
        ),
        pytest.param({"feedback": [{"card": "c1", "outcome": "overridden"}]}, id="no-timestamp"),
        pytest.param(
            {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
            id="timestamp-not-rfc3339",
        ),
    ],
)
def test_feedback_the_app_refuses_is_refused_by_the_document(body: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from cds_service.models import FeedbackRequest

    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate(body)
    assert errors(_feedback_request_validator(), body)


# ---------------------------------------------------------------------------------------------------
# 2 & 3. The running app: exactly the documented routes, and real responses match the document
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path) -> Any:
    from cds_service.app import create_app
    from cds_service.settings import Settings

    def make(**settings: Any) -> Any:
        settings.setdefault("auth_mode", "off")
        settings.setdefault("database_url", f"sqlite:///{tmp_path}/t.db")
        if settings["auth_mode"] == "required":
            settings.setdefault("public_base_url", "http://testserver")  # required with auth on (issue 16)
        return create_app(Settings(**settings))

    return make


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app for the read-mostly tests (building one takes ~2 s: policy, value sets, migrations)."""
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.settings import Settings

    db = tmp_path_factory.mktemp("openapi") / "t.db"
    with TestClient(create_app(Settings(auth_mode="off", database_url=f"sqlite:///{db}"))) as c:
        yield c


def _flatten(routes: list[Any]) -> Iterator[Any]:
    """Every endpoint route. FastAPI >= 0.16x keeps an included router as one `_IncludedRouter` entry
    in `app.routes` (its routes, with the prefix applied, come from `effective_candidates()`)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _flatten(route.effective_candidates())
        elif hasattr(route, "original_router"):
            yield from _flatten(route.original_router.routes)
        else:
            yield route


def _served_routes(app: Any) -> set[tuple[str, str]]:
    served = set()
    for route in _flatten(app.routes):
        methods = getattr(route, "methods", None) or set()
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", getattr(route, "path", ""))
        for method in methods - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    assert served, "no routes found: has FastAPI changed how app.routes exposes them?"
    return served


def _demo_routes() -> set[tuple[str, str]]:
    return {(m, p) for m, p in documented_routes() if "demo" in DOC["paths"][p][m.lower()].get("tags", ())}


def test_app_serves_exactly_the_documented_routes(make_app: Any) -> None:
    served = _served_routes(make_app(demo=True))
    documented = documented_routes()
    assert served - documented == set(), "served but not in openapi.yaml"
    assert documented - served == set(), "in openapi.yaml but not served"


def test_demo_routes_are_served_only_when_the_demo_is_on(make_app: Any) -> None:
    demo = _demo_routes()
    assert demo and all(p.startswith("/demo/fhir") for _, p in demo)
    assert _served_routes(make_app()) == documented_routes() - demo


def test_openapi_yaml_is_served_as_is(client: Any) -> None:
    response = client.get("/openapi.yaml")
    assert_documented(response, "/openapi.yaml", "get")
    assert response.content == OPENAPI.read_bytes()


def test_ops_responses_match_the_document(client: Any) -> None:
    assert assert_documented(client.get("/health"), "/health", "get") == {"status": "ok"}
    ready = client.get("/ready")
    assert_documented(ready, "/ready", "get")
    metrics = client.get("/metrics")
    assert_documented(metrics, "/metrics", "get")
    assert "# TYPE" in metrics.text


def test_documentation_pages_match_the_document(client: Any) -> None:
    home = client.get("/docs", follow_redirects=False)
    assert home.status_code == 308
    assert_documented(home, "/docs", "get")
    assert_documented(client.get("/docs/rules"), "/docs/rules", "get")
    page = client.get("/docs/rules/pre.coag.labs-missing")
    assert page.status_code == 200
    assert "pre.coag.labs-missing" in assert_documented(page, "/docs/rules/{rule_id}", "get")
    missing = client.get("/docs/rules/no.such-rule")
    assert missing.status_code == 404
    assert_documented(missing, "/docs/rules/{rule_id}", "get")
    assert_documented(client.get("/static/va-cds.css"), "/static/{name}", "get")
    assert_documented(client.get("/static/app.py"), "/static/{name}", "get")
    questionnaire = client.get("/fhir/Questionnaire/va-cds-master-checklist")
    assert_documented(questionnaire, "/fhir/Questionnaire/va-cds-master-checklist", "get")


def test_checklist_link_from_a_card_matches_the_document(client: Any) -> None:
    keys = _prefetch_keys(_discovery(client), "va-preprocedure-order-sign", "order-sign")
    cards = client.post("/cds-services/va-preprocedure-order-sign", json=order_sign_request(keys)).json()[
        "cards"
    ]
    [checklist] = [c for c in cards if c["extension"]["org.va-cds.rule"] == "pre.checklist"]
    url = next(link["url"] for link in checklist["links"] if "/checklist/" in link["url"])
    token = url.rsplit("/checklist/", 1)[1].split("?")[0]
    page = client.get(f"/checklist/{token}")
    assert page.status_code == 200
    assert_documented(page, "/checklist/{token}", "get")
    export = client.post(f"/checklist/{token}/export", json={"ticked": [], "notes": {}})
    assert export.status_code == 200
    assert_documented(export, "/checklist/{token}/export", "post")
    bad_form = client.post(f"/checklist/{token}/export", content=b"x", headers={"content-type": "text/plain"})
    assert bad_form.status_code == 400
    assert_documented(bad_form, "/checklist/{token}/export", "post")
    forged = client.get("/checklist/AAAA")
    assert forged.status_code == 404
    assert_documented(forged, "/checklist/{token}", "get")


def _discovery(client: Any) -> dict[str, Any]:
    return assert_documented(client.get("/cds-services"), "/cds-services", "get")


def _prefetch_keys(discovery: dict[str, Any], service: str, hook: str) -> list[str]:
    [entry] = [s for s in discovery["services"] if s["id"] == service and s["hook"] == hook]
    return list(entry.get("prefetch", {}))


def test_discovery_and_a_real_hook_call_match_the_document(client: Any) -> None:
    discovery = _discovery(client)
    assert discovery["services"], "no clinical service registered"
    keys = _prefetch_keys(discovery, "va-preprocedure-order-sign", "order-sign")
    request = order_sign_request(keys)
    # Due tomorrow with no labs on file: the checklist card escalates to a warning (catalog V2.12), so the
    # answer exercises overrideReasons too.
    tomorrow = (datetime.now(UTC) + timedelta(hours=20)).isoformat()
    request["context"]["draftOrders"]["entry"][0]["resource"] = {**VA_ORDER, "occurrenceDateTime": tomorrow}
    response = client.post("/cds-services/va-preprocedure-order-sign", json=request)
    body = assert_documented(response, "/cds-services/{service_id}", "post")
    assert response.status_code == 200
    assert body["cards"], "a VA order with no labs on file should raise cards"
    # The cards exercise the nested schemas, not only the envelope.
    assert any("suggestions" in c for c in body["cards"])
    assert any("overrideReasons" in c for c in body["cards"])
    assert all(c["extension"]["org.va-cds.rule"] for c in body["cards"])


CONTEXTS: dict[str, dict[str, Any]] = {
    "patient-view": {"userId": "Practitioner/pr1", "patientId": "p1"},
    "order-sign": order_sign_request(None)["context"],
    "order-select": {**order_sign_request(None)["context"], "selections": ["ServiceRequest/va-1"]},
    "encounter-start": {"userId": "Practitioner/pr1", "patientId": "p1", "encounterId": "e1"},
    "encounter-discharge": {"userId": "Practitioner/pr1", "patientId": "p1", "encounterId": "e1"},
}


def test_every_discovered_service_and_hook_answers_per_the_document(client: Any) -> None:
    discovery = _discovery(client)
    for entry in discovery["services"]:
        keys = list(entry.get("prefetch", {}))
        request = {
            "hook": entry["hook"],
            "hookInstance": "6f1b7f0e-8d9a-4c1e-9a43-0b6d1c2e3f40",
            "context": copy.deepcopy(CONTEXTS[entry["hook"]]),
            "prefetch": {k: copy.deepcopy(PATIENT if k == "patient" else EMPTY_SEARCHSET) for k in keys},
        }
        assert errors(component("HookRequest"), request) == [], "our own test request breaks the document"
        response = client.post(f"/cds-services/{entry['id']}", json=request)
        assert response.status_code == 200, f"{entry['id']} / {entry['hook']}: {response.text[:300]}"
        assert_documented(response, "/cds-services/{service_id}", "post")


def test_data_unavailable_card_matches_the_document(client: Any) -> None:
    keys = _prefetch_keys(_discovery(client), "va-preprocedure-order-sign", "order-sign")
    request = order_sign_request(keys)
    failed = next(k for k in keys if k != "patient")
    request["prefetch"][failed] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "forbidden"}],
    }
    response = client.post("/cds-services/va-preprocedure-order-sign", json=request)
    body = assert_documented(response, "/cds-services/{service_id}", "post")
    rules = [c["extension"]["org.va-cds.rule"] for c in body["cards"]]
    assert "sys.data-unavailable" in rules


def test_cors_preflight_is_answered_without_a_token_as_the_document_says(make_app: Any) -> None:
    from fastapi.testclient import TestClient

    assert "preflight" in DOC["info"]["description"]
    origin = "http://127.0.0.1:8080"
    with TestClient(make_app(auth_mode="required", trust_preset="sandbox", cors_origins=[origin])) as c:
        response = c.options(
            "/cds-services/va-preprocedure-order-sign/feedback",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed


def test_feedback_response_matches_the_document(client: Any) -> None:
    discovery = _discovery(client)
    keys = _prefetch_keys(discovery, "va-preprocedure-order-sign", "order-sign")
    cards = client.post("/cds-services/va-preprocedure-order-sign", json=order_sign_request(keys)).json()[
        "cards"
    ]
    card = next(c for c in cards if "suggestions" in c)
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-11-21T17:45:14.801Z",
            }
        ]
    }
    assert errors(_feedback_request_validator(), feedback) == []
    path = "/cds-services/{service_id}/feedback"
    first = assert_documented(
        client.post("/cds-services/va-preprocedure-order-sign/feedback", json=feedback), path, "post"
    )
    again = assert_documented(
        client.post("/cds-services/va-preprocedure-order-sign/feedback", json=feedback), path, "post"
    )
    assert first == {"received": 1, "stored": 1}
    assert again == {"received": 1, "stored": 0}  # idempotent resend


JSON = {"content-type": "application/json"}


def _error_cases() -> list[Any]:
    hook = "/cds-services/{service_id}"
    feedback = "/cds-services/{service_id}/feedback"
    good = json.dumps(order_sign_request(["patient"]))
    wrong_hook = json.dumps({**order_sign_request(["patient"]), "hook": "encounter-discharge"})
    no_instance = json.dumps({k: v for k, v in order_sign_request(None).items() if k != "hookInstance"})
    return [
        pytest.param("/cds-services/no-such-service", hook, good, JSON, 404, id="hook-unknown-service"),
        pytest.param(
            "/cds-services/no-such-service/feedback", feedback, "{}", JSON, 404, id="feedback-unknown-service"
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign", hook, "{not json", JSON, 400, id="hook-malformed-json"
        ),
        pytest.param("/cds-services/va-preprocedure-order-sign", hook, "", JSON, 400, id="hook-empty-body"),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign", hook, "[]", JSON, 400, id="hook-body-not-object"
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign",
            hook,
            no_instance,
            JSON,
            400,
            id="hook-no-hookInstance",
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign", hook, wrong_hook, JSON, 400, id="hook-wrong-hook"
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign",
            hook,
            good,
            {"content-type": "text/plain"},
            415,
            id="hook-text-plain",
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign/feedback",
            feedback,
            '{"feedback": []}',
            JSON,
            400,
            id="feedback-empty-list",
        ),
        pytest.param(
            "/cds-services/va-preprocedure-order-sign/feedback",
            feedback,
            '{"feedback": [{"card": "c1"}]}',
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            id="feedback-form-encoded",
        ),
    ]


@pytest.mark.parametrize(("url", "path", "body", "headers", "status"), _error_cases())
def test_error_bodies_match_the_document(
    client: Any, url: str, path: str, body: str, headers: dict[str, str], status: int
) -> None:
    response = client.post(url, content=body.encode(), headers=headers)
    assert response.status_code == status, response.text
    outcome = assert_documented(response, path, "post")
    assert outcome["issue"][0]["diagnostics"]


def test_missing_prefetch_without_fhir_server_is_a_documented_412(client: Any) -> None:
    response = client.post("/cds-services/va-preprocedure-order-sign", json=order_sign_request(None))
    assert response.status_code == 412
    outcome = assert_documented(response, "/cds-services/{service_id}", "post")
    assert "fhirServer" in outcome["issue"][0]["diagnostics"]


def test_oversized_bodies_are_a_documented_413(make_app: Any) -> None:
    from fastapi.testclient import TestClient

    big = json.dumps({**order_sign_request(["patient"]), "padding": "x" * 2000})
    with TestClient(make_app(max_body_bytes=1000)) as c:
        for url, path in (
            ("/cds-services/va-preprocedure-order-sign", "/cds-services/{service_id}"),
            ("/cds-services/va-preprocedure-order-sign/feedback", "/cds-services/{service_id}/feedback"),
        ):
            response = c.post(url, content=big.encode(), headers=JSON)
            assert response.status_code == 413
            assert_documented(response, path, "post")


def test_auth_failures_are_documented_401s_and_open_routes_stay_open(make_app: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(make_app(auth_mode="required", trust_preset="sandbox", demo=True)) as c:
        for method, path in sorted(documented_routes()):
            url = path.format(
                service_id="va-preprocedure-order-sign",
                rule_id="pre.checklist",
                token="x",
                name="va-cds.css",
                resource_type="Patient",
                resource_id="demo-planned-warfarin",
            )
            if method == "POST":
                response = c.post(url, json={}, headers={"Authorization": "Bearer not-a-jwt"})
            else:
                response = c.get(url, follow_redirects=False)
            operation = DOC["paths"][path][method.lower()]
            if operation.get("security"):
                assert response.status_code == 401, f"{method} {path} answered {response.status_code}"
            else:
                assert response.status_code != 401, f"{method} {path} asks for a token it does not document"
            assert_documented(response, path, method.lower())


def test_feedback_store_outage_is_a_documented_503(make_app: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    (tmp_path / "not-a-dir").write_text("a file where the database directory should be")
    app = make_app(database_url=f"sqlite:///{tmp_path}/not-a-dir/t.db")
    body = {"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T17:45:16Z"}]}
    with TestClient(app) as c:
        response = c.post("/cds-services/va-preprocedure-order-sign/feedback", json=body)
        assert response.status_code == 503
        assert_documented(response, "/cds-services/{service_id}/feedback", "post")
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert "database" in assert_documented(ready, "/ready", "get")["failed"]


def test_schema_generated_requests_get_documented_answers(tmp_path: Path) -> None:
    """Property check with schemathesis: requests generated from the document's own request schemas
    never get a 5xx, and every answer (status, media type, headers, body) is one the document lists."""
    import httpx
    import schemathesis
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from cds_service.app import create_app
    from cds_service.settings import Settings

    # Generated fhirServer URLs must never reach the network: every FHIR fetch answers 503.
    fhir = httpx.AsyncClient(transport=httpx.MockTransport(lambda _req: httpx.Response(503)))
    app = create_app(Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/t.db"), http_client=fhir)
    schema = schemathesis.openapi.from_dict(DOC)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    with TestClient(app, raise_server_exceptions=False) as c:
        service_for_hook = {s["hook"]: s["id"] for s in _discovery(c)["services"]}
        for path in ("/cds-services/{service_id}", "/cds-services/{service_id}/feedback"):
            operation = schema[path]["POST"]

            @settings(
                max_examples=40,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                hook = case.body.get("hook") if isinstance(case.body, dict) else None
                case.path_parameters = {
                    "service_id": service_for_hook.get(hook, "va-preprocedure-order-sign")
                }
                response = c.post(case.formatted_path, json=case.body)
                case.validate_response(response, checks=checks)

            check()
