"""The two FHIR calls the SMART checklist makes with the user's token: read the Patient for the banner,
and create the QuestionnaireResponse.

The banner is read leniently (any name, birth date and identifier the record has) and never stored. The
QuestionnaireResponse is built strictly: validated with fhir.resources before it is sent. An EHR's refusal
(OperationOutcome, any 4xx/5xx, a network failure) becomes `FilingError` with a sentence a clinician can
act on; nothing here raises anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from pydantic import ValidationError

TIMEOUT_S = 10.0
MAX_BYTES = 1_000_000
_LOCATION = re.compile(
    r"(?:^|/)QuestionnaireResponse/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?/?$"
)


@dataclass(frozen=True, slots=True)
class Banner:
    name: str
    birth_date: str
    identifier: str


@dataclass(frozen=True, slots=True)
class Filed:
    resource_id: str
    version: str | None

    @property
    def reference(self) -> str:
        ref = f"QuestionnaireResponse/{self.resource_id}"
        return f"{ref}/_history/{self.version}" if self.version else ref


class FilingError(Exception):
    """The EHR did not accept the QuestionnaireResponse; `str()` is the plain-words reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def _name(patient: dict[str, Any]) -> str:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if chosen is None:
        return "(no name on record)"
    if isinstance(chosen.get("text"), str) and chosen["text"].strip():
        return str(chosen["text"]).strip()
    given = " ".join(g for g in chosen.get("given") or [] if isinstance(g, str))
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else ""
    return " ".join(p for p in (given, family) if p) or "(no name on record)"


def _identifier(patient: dict[str, Any]) -> str:
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        kind: dict[str, Any] = ident["type"] if isinstance(ident.get("type"), dict) else {}
        label = kind.get("text") or next(
            (c.get("code") for c in kind.get("coding") or [] if isinstance(c, dict) and c.get("code")), None
        )
        return f"{label} {ident['value']}" if isinstance(label, str) else str(ident["value"])
    return "(no identifier on record)"


async def read_banner(http: httpx.AsyncClient, iss: str, token: str, patient_id: str) -> Banner | None:
    """Name, birth date and first identifier of the launched patient; None if the EHR would not say."""
    try:
        resp = await http.get(
            f"{iss.rstrip('/')}/Patient/{patient_id}", headers=_headers(token), timeout=TIMEOUT_S
        )
    except httpx.HTTPError:
        return None
    if resp.status_code != 200 or len(resp.content) > MAX_BYTES:
        return None
    try:
        patient = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        return None
    birth = patient.get("birthDate")
    return Banner(
        name=_name(patient),
        birth_date=birth if isinstance(birth, str) else "(no birth date on record)",
        identifier=_identifier(patient),
    )


def validate(resource: dict[str, Any]) -> None:
    """Raises ValueError naming the first problem if `resource` is not a valid R4 QuestionnaireResponse."""
    try:
        QuestionnaireResponse.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ValueError(f"{where}: {first.get('msg')}") from None


def _outcome_text(body: bytes) -> str | None:
    """The issues of an OperationOutcome, joined; None if the body is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in doc.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details: dict[str, Any] = issue["details"] if isinstance(issue.get("details"), dict) else {}
        text = details.get("text") or issue.get("diagnostics") or issue.get("code")
        if isinstance(text, str) and text:
            texts.append(text[:300])
    return "; ".join(texts[:5]) or None


_STATUS_WORDS = {
    400: "the EHR could not read the request",
    401: "the EHR no longer accepts this sign-in (the session may have ended)",
    403: "the EHR does not allow this user or app to file checklists for this patient",
    404: "the EHR has no place to file questionnaire responses",
    409: "the EHR reported a conflict with existing data",
    412: "the EHR reported a conflict with existing data",
    422: "the EHR checked the checklist and refused it",
    429: "the EHR is busy",
}


async def create_response(http: httpx.AsyncClient, iss: str, token: str, resource: dict[str, Any]) -> Filed:
    """POST the QuestionnaireResponse; the id and version from `Location`. Raises FilingError."""
    try:
        resp = await http.post(
            f"{iss.rstrip('/')}/QuestionnaireResponse",
            content=orjson.dumps(resource),
            headers={**_headers(token), "Content-Type": "application/fhir+json", "Prefer": "return=minimal"},
            timeout=TIMEOUT_S,
        )
    except httpx.TimeoutException:
        raise FilingError("The EHR did not answer in time. The checklist may not have been filed.") from None
    except httpx.HTTPError:
        raise FilingError("The EHR could not be reached.") from None
    if resp.status_code in (200, 201):
        match = _LOCATION.search(resp.headers.get("location") or resp.headers.get("content-location") or "")
        if match is None:
            raise FilingError(
                "The EHR accepted the checklist but did not say where it was filed (no Location header).",
                resp.status_code,
            )
        return Filed(resource_id=match.group(1), version=match.group(2))
    words = _STATUS_WORDS.get(resp.status_code) or (
        "the EHR had an internal problem" if resp.status_code >= 500 else "the EHR refused the checklist"
    )
    detail = _outcome_text(resp.content[:MAX_BYTES])
    message = f"Not filed: {words} (HTTP {resp.status_code})."
    if detail:
        message += f" The EHR said: {detail}"
    raise FilingError(message, resp.status_code)
