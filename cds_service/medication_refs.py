"""Fetch the Medications that medication orders name by reference but the request did not send (V2.4).

A MedicationRequest/Statement may name its drug only through `medicationReference`. When the Medication is
neither contained nor among the request's resources, the drug is unknown, and an unknown drug must never
read as "no antithrombotic". So, before the facts are built, each distinct such reference is fetched once
from `fhirServer` (a plain `GET Medication/<id>`, the client's token, inside what is left of the call's
deadline) through the prefetch module's public `resolve`, which owns the FHIR client and its limits.

What can come of it:
- fetched: the Medication joins the resources and the order is read as its drug;
- the fetch failed (error, timeout, OperationOutcome, not a Medication): the order stays unidentified
  (`ClinicalFacts.unidentified_medications`) and the key `MEDICATION_REFS_KEY` is reported unavailable, so
  `sys.data-unavailable` names the check that could not run;
- not fetchable (no fhirServer, a reference to another server or a bundle-internal urn): unidentified, no
  fetch and no data-unavailable (nothing was tried).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from cds_service.prefetch import FetchLimits, KeyOutcome, resolve

MAX_REFERENCES = 20  # distinct Medications fetched per call; more are reported as not fetched
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE = re.compile(r"^Medication/([^/?#]+)(?:/_history/[^/?#]+)?/?$")
_IGNORED_STATUS = frozenset({"entered-in-error", "cancelled", "not-taken", "completed", "stopped", "revoked"})


def _sent_medications(resources: Iterable[Mapping[str, Any]]) -> set[str]:
    return {
        f"Medication/{r.get('id')}"
        for r in resources
        if r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)
    }


def _bundle_resources(resources: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The resources, with those inside (nested) Bundles unwrapped."""
    out: list[Mapping[str, Any]] = []
    todo = list(resources)
    while todo:
        r = todo.pop()
        if not isinstance(r, Mapping):
            continue
        if r.get("resourceType") == "Bundle":
            entries = r.get("entry")
            for e in entries if isinstance(entries, list) else ():
                if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping):
                    todo.append(e["resource"])
            continue
        out.append(r)
    return out


def medication_id(reference: str, fhir_server: str | None) -> str | None:
    """The Medication id a reference names on `fhir_server`, or None when it is not fetchable there."""
    ref = reference.strip()
    if ref.startswith(("http://", "https://")):
        if not fhir_server:
            return None
        base = fhir_server.rstrip("/") + "/"
        if not ref.startswith(base) or urlsplit(ref)[:2] != urlsplit(base)[:2]:
            return None  # another server: never send the token there
        ref = ref[len(base) :]
    m = _RELATIVE.match(ref)
    if m is None or not _ID.match(m.group(1)):
        return None
    return m.group(1)


def unresolved_references(
    resources: Iterable[Mapping[str, Any]], drafts: Iterable[Mapping[str, Any]], fhir_server: str | None
) -> list[str]:
    """Distinct Medication ids that medication orders name and the request did not send."""
    flat = _bundle_resources(resources) + _bundle_resources(drafts)
    sent = _sent_medications(flat)
    wanted: list[str] = []
    for r in flat:
        if r.get("resourceType") not in ("MedicationRequest", "MedicationStatement"):
            continue
        if r.get("status") in _IGNORED_STATUS:
            continue
        ref = r.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if not isinstance(target, str) or target.startswith("#"):
            continue
        med_id = medication_id(target, fhir_server)
        if med_id is None or f"Medication/{med_id}" in sent or med_id in wanted:
            continue
        wanted.append(med_id)
    return wanted


async def fetch_medications(
    resources: Iterable[Mapping[str, Any]],
    drafts: Iterable[Mapping[str, Any]],
    *,
    fhir_server: str | None,
    access_token: str | None,
    client: Any,  # what `prefetch.resolve` takes: the app's shared FHIR client
    limits: FetchLimits,
    seconds_left: float,
    allowed: frozenset[str] | None = None,
) -> tuple[list[dict[str, Any]], KeyOutcome | None]:
    """(Medications fetched, the outcome of `MEDICATION_REFS_KEY`), or ([], None) when nothing was tried.

    `allowed`: the FHIR bases this caller may name, forwarded to `resolve` when given (the allowlist of the
    FHIR client, so the token never goes to a base the prefetch itself would refuse).
    """
    if not fhir_server:
        return [], None
    resources = list(resources)
    ids = unresolved_references(resources, drafts, fhir_server)
    if not ids:
        return [], None
    if seconds_left <= 0:
        return [], KeyOutcome("failed", "timeout")
    templates = {f"medication-{n}": f"Medication/{med_id}" for n, med_id in enumerate(ids[:MAX_REFERENCES])}
    outcomes = await resolve(
        templates,
        "",
        {},
        None,
        fhir_server,
        access_token,
        client,
        dataclasses.replace(limits, deadline_s=seconds_left),
        **({"allowed": allowed} if allowed is not None else {}),
    )
    fetched: list[dict[str, Any]] = []
    problems: list[str] = []
    for n, med_id in enumerate(ids[:MAX_REFERENCES]):
        outcome = outcomes[f"medication-{n}"]
        meds = [r for r in outcome.resources if r.get("resourceType") == "Medication"]
        if not outcome.available:
            problems.append(outcome.reason or outcome.status)
        elif len(meds) != 1 or meds[0].get("id") not in (None, med_id):
            problems.append("not-the-medication")  # a search Bundle, another id, or not a Medication
        else:
            fetched.append({**meds[0], "id": med_id})
    if len(ids) > MAX_REFERENCES:
        problems.append("too-many-references")
    if problems:
        return fetched, KeyOutcome("failed", f"{len(problems)}-of-{len(ids)}:{problems[0]}")
    return fetched, KeyOutcome("fetched", resources=fetched)
