"""Reads and searches over the demo resources: just the FHIR search the sandbox and our prefetch use.

Supported: `patient`/`subject`, `_id`, `code`, `category`, `status` (comma-separated tokens, `system|code` or
bare `code`), `_sort` on the resource's date (`date`, `authoredon`, `authored`, descending with `-`) and
`_count`. Other parameters are ignored, as a FHIR server in its default lenient mode does; the demo tests
check that every parameter of our discovery's prefetch templates is one of the supported ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cds_service.demo.patients import Resource

#: Resource types the demo serves (others are not part of it: 404).
TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "DiagnosticReport",
    "ServiceRequest",
    "Appointment",
    "Procedure",
    "Encounter",
)
SUPPORTED_PARAMS = frozenset({"patient", "subject", "_id", "code", "category", "status", "_sort", "_count"})
_CODE_FIELDS = ("code", "medicationCodeableConcept")
_SORT_FIELDS = {
    "date": (
        "effectiveDateTime",
        "performedDateTime",
        "performedPeriod.start",
        "onsetDateTime",
        "recordedDate",
        "period.start",
        "start",
        "occurrenceDateTime",
        "authoredOn",
        "issued",
    ),
    "authoredon": ("authoredOn",),
    "authored": ("authoredOn",),
}


class SearchError(ValueError):
    """A search the demo cannot answer (e.g. `_count=abc`): 400 with the reason."""


def _get(resource: Mapping[str, Any], dotted: str) -> Any:
    value: Any = resource
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _patient_refs(resource: Resource) -> set[str]:
    if resource["resourceType"] == "Patient":
        return {str(resource.get("id"))}
    refs = [_get(resource, "subject.reference"), _get(resource, "patient.reference")]
    for participant in resource.get("participant") or ():
        refs.append(_get(participant, "actor.reference"))
    return {r.rsplit("/", 1)[-1] for r in refs if isinstance(r, str) and r.startswith("Patient/")}


def _codings(concepts: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for concept in concepts:
        for coding in (concept or {}).get("coding") or ():
            out.append((str(coding.get("system", "")), str(coding.get("code", ""))))
    return out


def _token_match(tokens: Sequence[str], codings: list[tuple[str, str]]) -> bool:
    for token in tokens:
        system, sep, code = token.rpartition("|")
        if any(c == code and (not sep or s == system) for s, c in codings):
            return True
    return False


def _matches(resource: Resource, name: str, values: list[str]) -> bool:
    """Each value of a repeated parameter must match (AND); commas inside one value are ORs."""
    for value in values:
        tokens = [t for t in value.split(",") if t]
        if name in ("patient", "subject"):
            if not {t.rsplit("/", 1)[-1] for t in tokens} & _patient_refs(resource):
                return False
        elif name == "_id":
            if str(resource.get("id")) not in tokens:
                return False
        elif name == "code":
            if not _token_match(tokens, _codings(resource.get(f) for f in _CODE_FIELDS)):
                return False
        elif name == "category":
            category = resource.get("category")
            concepts = category if isinstance(category, list) else [category]
            if not _token_match(tokens, _codings(concepts)):
                return False
        elif name == "status" and str(resource.get("status")) not in tokens:
            return False
    return True


def _sort_key(resource: Resource, field: str) -> str:
    for dotted in _SORT_FIELDS.get(field, ()):
        value = _get(resource, dotted)
        if isinstance(value, str):
            return value
    return ""


def search(resources: Iterable[Resource], rtype: str, params: Mapping[str, list[str]]) -> list[Resource]:
    """The matching resources of one type, sorted and counted as the parameters ask."""
    found = [
        r
        for r in resources
        if r["resourceType"] == rtype
        and all(_matches(r, name, values) for name, values in params.items() if name in SUPPORTED_PARAMS)
    ]
    for spec in reversed((params.get("_sort") or [""])[0].split(",")):
        field = spec.lstrip("-").lower()
        if field in _SORT_FIELDS:
            found.sort(key=lambda r, f=field: _sort_key(r, f), reverse=spec.startswith("-"))  # type: ignore[misc]
    if "_count" in params:
        raw = params["_count"][0]
        if not raw.isdigit():
            raise SearchError(f"_count must be a whole number, not {raw!r}")
        found = found[: int(raw)]
    return found


def read(resources: Iterable[Resource], rtype: str, rid: str) -> Resource | None:
    return next((r for r in resources if r["resourceType"] == rtype and r.get("id") == rid), None)


def searchset(base: str, rtype: str, query: str, found: list[Resource]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "link": [{"relation": "self", "url": f"{base}/{rtype}" + (f"?{query}" if query else "")}],
        "entry": [
            {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in found
        ],
    }


def capability_statement(base: str, date: str) -> dict[str, Any]:
    """What the demo answers, in the shape the sandbox reads when it connects to a FHIR server."""
    params = [
        {"name": "patient", "type": "reference"},
        {"name": "code", "type": "token"},
        {"name": "category", "type": "token"},
        {"name": "status", "type": "token"},
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "va-cds demo data source (synthetic patients; not a FHIR server)"},
        "implementation": {
            "description": "Synthetic demo patients for the CDS Hooks Sandbox walkthrough, read-only",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": t,
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": params,
                    }
                    for t in TYPES
                ],
            }
        ],
    }
