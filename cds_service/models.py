"""CDS Hooks 2.0 wire models (pydantic v2), with the spec's invariants as validators.

Requests are read strictly at the envelope (hook, hookInstance, context fields) and leniently inside
FHIR content: draft orders and prefetch values stay plain JSON for `fhir_mappings` to read. Responses
are built strictly: these models refuse what the spec forbids (summary >= 140 chars, suggestions
without selectionBehavior, override reasons without display, appContext on absolute links...).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

# ---------------------------------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------------------------------


class WireModel(BaseModel):
    """Base for everything we emit: unknown fields rejected, `None` never serialised."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Coding(WireModel):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = Field(default=None, min_length=1)


# ---------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------


class ServiceDescriptor(WireModel):
    hook: str = Field(min_length=1)
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9\-._~]+$")
    title: str | None = Field(default=None, min_length=1)
    description: str = Field(min_length=1)
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = Field(default=None, min_length=1)


class DiscoveryResponse(WireModel):
    services: list[ServiceDescriptor]


# ---------------------------------------------------------------------------------------------------
# Invocation request (lenient inside FHIR, strict on the envelope)
# ---------------------------------------------------------------------------------------------------

_RULE_ID = re.compile(r"^[a-z][a-z0-9.-]*$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class FhirAuthorization(BaseModel):
    # Extra members are tolerated (extensions, vendor fields); required ones are enforced.
    model_config = ConfigDict(extra="allow")

    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int = Field(ge=0)
    scope: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    patient: str | None = None

    def __repr__(self) -> str:  # never let the token reach a log line through repr()
        return f"FhirAuthorization(scope={self.scope!r}, access_token=<redacted>)"

    __str__ = __repr__


class HookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1)
    hookInstance: str
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _hook_instance_is_uuid(cls, v: str) -> str:
        if not _UUID_RE.match(v):
            raise ValueError("hookInstance must be a UUID")
        return v

    @field_validator("fhirServer")
    @classmethod
    def _fhir_server_is_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("fhirServer must be an absolute http(s) URL")
        return v

    @model_validator(mode="after")
    def _auth_needs_server(self) -> HookRequest:
        # cds-r-1: fhirAuthorization ⇒ fhirServer
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirAuthorization requires fhirServer")
        return self

    def __repr__(self) -> str:
        return f"HookRequest(hook={self.hook!r}, hookInstance={self.hookInstance!r})"

    __str__ = __repr__


# ---------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------


class Source(WireModel):
    label: str = Field(min_length=1)
    url: str | None = Field(default=None, pattern=r"^https?://")
    icon: str | None = Field(default=None, pattern=r"^https?://")
    topic: Coding | None = None


class Action(WireModel):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _resource_for_type(self) -> Action:
        if self.type in ("create", "update") and not self.resource:
            raise ValueError(f"a {self.type} action needs a resource")
        if self.type == "delete" and not self.resourceId:
            raise ValueError("a delete action needs resourceId")  # cds-resp-2
        return self


class Suggestion(WireModel):
    label: str = Field(min_length=1)
    uuid: UUID
    isRecommended: bool | None = None
    actions: list[Action] | None = Field(default=None, min_length=1)


class Link(WireModel):
    label: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    type: Literal["absolute", "smart"]
    appContext: str | None = Field(default=None, min_length=1)
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context_only_smart(self) -> Link:
        if self.appContext is not None and self.type != "smart":
            raise ValueError("appContext is only allowed on smart links")  # cds-resp-3
        return self


class OverrideReason(Coding):
    display: str = Field(min_length=1)  # cds-resp-4: display is required here


class Card(WireModel):
    uuid: UUID
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = Field(default=None, min_length=1)
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = Field(default=None, min_length=1)
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReason] | None = Field(default=None, min_length=1)
    links: list[Link] | None = Field(default=None, min_length=1)
    extension: dict[str, Any] | None = None

    @field_validator("extension")
    @classmethod
    def _our_extensions_are_well_formed(cls, ext: dict[str, Any] | None) -> dict[str, Any] | None:
        """The org.va-cds.* extensions are a contract too (openapi.yaml CardExtension): refuse bad ones."""
        if ext is None:
            return None
        rule = ext.get("org.va-cds.rule")
        if rule is not None and (not isinstance(rule, str) or not _RULE_ID.match(rule)):
            raise ValueError("org.va-cds.rule must be a rule id like 'pre.coag.labs-missing'")
        citation = ext.get("org.va-cds.citation")
        if citation is not None and (not isinstance(citation, str) or not citation.strip()):
            raise ValueError("org.va-cds.citation must be non-empty text")
        findings = ext.get("org.va-cds.findings")
        if findings is not None and (
            not isinstance(findings, list)
            or not findings
            or not all(isinstance(f, str) and _RULE_ID.match(f) for f in findings)
            or (rule is not None and findings[0] != rule)
        ):
            raise ValueError("org.va-cds.findings must list rule ids, the card's own first")
        evidence = ext.get("org.va-cds.evidence")
        if evidence is not None:
            if not isinstance(evidence, list) or not evidence:
                raise ValueError("org.va-cds.evidence must be a non-empty list")
            for item in evidence:
                if not isinstance(item, dict) or not all(
                    isinstance(item.get(k), str) and item[k].strip() for k in ("reference", "summary")
                ):
                    raise ValueError("each org.va-cds.evidence entry needs a reference and a summary")
        return ext

    @model_validator(mode="after")
    def _selection_iff_suggestions(self) -> Card:
        # cds-resp-6: selectionBehavior must be present if (and only makes sense if) suggestions are
        if (self.suggestions is None) != (self.selectionBehavior is None):
            raise ValueError("selectionBehavior must be present exactly when suggestions are")
        if self.suggestions and self.selectionBehavior == "at-most-one":
            recommended = [s for s in self.suggestions if s.isRecommended]
            if len(recommended) > 1:
                raise ValueError("at-most-one allows at most one recommended suggestion")
        return self


class HookResponse(WireModel):
    cards: list[Card]
    systemActions: list[Action] | None = Field(default=None, min_length=1)

    def to_json(self) -> bytes:
        """The response body: pydantic-core writes JSON bytes directly (no intermediate dict or str)."""
        return _HOOK_RESPONSE_JSON.dump_json(self, exclude_none=True)


_HOOK_RESPONSE_JSON: TypeAdapter[HookResponse] = TypeAdapter(HookResponse)


# ---------------------------------------------------------------------------------------------------
# Feedback
# ---------------------------------------------------------------------------------------------------


# Bounds on feedback (issue 16): a report is a few short fields; these keep one request from storing
# megabytes of free text per card. Each is answered with a 400 naming the field (openapi.yaml has them too).
MAX_FEEDBACK_ITEMS = 100
MAX_ACCEPTED_SUGGESTIONS = 50
MAX_REASON_FIELD_CHARS = 500
MAX_REASON_FIELDS = 10
MAX_USER_COMMENT_CHARS = 2000


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)


class OverrideReasonIn(BaseModel):
    """What a client sends: a Coding without display is tolerated (the sandbox sends none)."""

    model_config = ConfigDict(extra="allow")
    reason: dict[str, Any] | None = None
    userComment: str | None = Field(default=None, max_length=MAX_USER_COMMENT_CHARS)

    @field_validator("reason")
    @classmethod
    def _reason_is_small(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if len(v) > MAX_REASON_FIELDS:
            raise ValueError(f"a reason Coding has at most {MAX_REASON_FIELDS} members")
        for key, value in v.items():
            if isinstance(value, str) and len(value) > MAX_REASON_FIELD_CHARS:
                raise ValueError(f"reason.{key} is longer than {MAX_REASON_FIELD_CHARS} characters")
            if isinstance(value, dict | list):
                raise ValueError(f"reason.{key} must be a plain value (a Coding has no nested members)")
        return v


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    card: str = Field(min_length=1, max_length=200)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(
        default=None, max_length=MAX_ACCEPTED_SUGGESTIONS
    )
    overrideReason: OverrideReasonIn | None = None
    outcomeTimestamp: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _lenient_shapes(cls, data: Any) -> Any:
        """Accept the older shapes clients really sent (checklist §6), normalised to 2.0."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        reason = data.get("overrideReason")
        # sandbox#135: overrideReason: {code, system} without the `reason` wrapper
        if isinstance(reason, dict) and "reason" not in reason and ("code" in reason or "system" in reason):
            data["overrideReason"] = {
                "reason": {k: reason[k] for k in ("system", "code", "display") if k in reason},
                **({"userComment": reason["userComment"]} if "userComment" in reason else {}),
            }
        # docs#523: acceptedSuggestions as bare strings instead of {"id": ...}
        accepted = data.get("acceptedSuggestions")
        if isinstance(accepted, list):
            data["acceptedSuggestions"] = [{"id": a} if isinstance(a, str) else a for a in accepted]
        return data

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        # cds-fb-2: accepted ⇒ acceptedSuggestions. A card without suggestions can still be
        # "accepted" by some clients; we keep it (nothing acknowledged is lost) with an empty list.
        if self.outcome == "accepted" and self.acceptedSuggestions is None:
            self.acceptedSuggestions = []
        return self

    @field_validator("outcomeTimestamp")
    @classmethod
    def _rfc3339(cls, v: str) -> str:
        if not re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$", v):
            raise ValueError("outcomeTimestamp must be an RFC 3339 date-time")
        return v


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)

    @model_validator(mode="before")
    @classmethod
    def _unwrapped(cls, data: Any) -> Any:
        # sandbox#133: a single feedback object sent without the {"feedback": [...]} wrapper
        if isinstance(data, dict) and "feedback" not in data and "card" in data:
            return {"feedback": [data]}
        return data
