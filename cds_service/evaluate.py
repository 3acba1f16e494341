"""`va-cds evaluate`: run a hook offline and print the cards, for informatics teams testing rules.

Input is either a CDS Hooks request (JSON with hook, context and prefetch) or a patient record Bundle; with a
Bundle, `--draft-order vertebroplasty|kyphoplasty` adds a VA draft order (order-sign), otherwise the record
is reviewed as patient-view. No EHR, no network: a Bundle's resources stand in for every prefetch key.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from cds_service.cards import build_cards
from cds_service.invocation import evaluate, invoke
from cds_service.models import Card, HookRequest
from cds_service.prefetch import FetchLimits, PrefetchUnobtainable
from cds_service.settings import Settings
from fhir_mappings.library import default_library
from hooks import build_services
from hooks.policy import load_policy

CPT = "http://www.ama-assn.org/go/cpt"
DRAFTS = {
    "vertebroplasty": ("22511", "Percutaneous vertebroplasty, lumbosacral"),
    "kyphoplasty": ("22513", "Percutaneous vertebral augmentation (kyphoplasty), thoracic"),
}


def _bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def request_from_bundle(bundle: dict[str, Any], hook: str | None, draft: str | None) -> dict[str, Any]:
    resources = _bundle_resources(bundle)
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), {})
    pid = str(patient.get("id") or "unknown")
    context: dict[str, Any] = {"userId": "Practitioner/va-cds-evaluate", "patientId": pid}
    chosen = hook or ("order-sign" if draft else "patient-view")
    if chosen in ("order-sign", "order-select"):
        entries = []
        if draft:
            code, display = DRAFTS[draft]
            entries.append(
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": "va-draft",
                        "status": "draft",
                        "intent": "order",
                        "code": {
                            "coding": [{"system": CPT, "code": code, "display": display}],
                            "text": display,
                        },
                        "subject": {"reference": f"Patient/{pid}"},
                    }
                }
            )
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        if chosen == "order-select":
            context["selections"] = ["ServiceRequest/va-draft"] if draft else []
    if chosen in ("encounter-start", "encounter-discharge"):
        encounters = [r for r in resources if r.get("resourceType") == "Encounter"]
        context["encounterId"] = str(encounters[-1].get("id")) if encounters else "unknown"
    return {"hook": chosen, "hookInstance": str(uuid.uuid4()), "context": context}


def _print(cards: list[Card], fmt: str) -> None:
    if fmt == "json":
        print(
            orjson.dumps(
                {"cards": [c.model_dump(mode="json", exclude_none=True) for c in cards]},
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    if not cards:
        print("(no cards)")
    for c in cards:
        rule = (c.extension or {}).get("org.va-cds.rule")
        print(f"[{c.indicator.upper():8}] {rule}: {c.summary}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="va-cds evaluate", description=__doc__)
    parser.add_argument("file", type=Path, help="a CDS Hooks request JSON or a patient record Bundle")
    parser.add_argument("--hook", help="hook to run (default: the request's, or order-sign/patient-view)")
    parser.add_argument("--service", help="service id (default: every service answering the hook)")
    parser.add_argument("--draft-order", choices=sorted(DRAFTS), help="with a Bundle: add a VA draft order")
    parser.add_argument("--now", help="evaluate as of this ISO date-time (default: now)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)

    settings = Settings()
    policy = load_policy(settings.policy_file)
    library = default_library(settings.valueset_dir)
    services = build_services(policy)
    try:
        doc = orjson.loads(args.file.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    is_bundle = isinstance(doc, dict) and doc.get("resourceType") == "Bundle"
    raw = request_from_bundle(doc, args.hook, args.draft_order) if is_bundle else doc
    if args.hook and not is_bundle:
        raw = {**raw, "hook": args.hook}
    try:
        req = HookRequest.model_validate(raw)
    except Exception as exc:
        print(f"not a valid CDS Hooks request: {exc}", file=sys.stderr)
        return 2
    chosen = [s for s in services if req.hook == s.hook and (args.service in (None, s.id))]
    if not chosen:
        print(f"no service answers hook {req.hook!r}", file=sys.stderr)
        return 2
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    for svc in chosen:
        print(f"== {svc.id} ({req.hook})")
        if is_bundle:
            if svc.quick_scope is not None and svc.quick_scope(req.hook, req.context) is False:
                cards: list[Card] = []
            else:
                specs = evaluate(svc, req, _bundle_resources(doc), frozenset(), now, library)
                cards = build_cards(specs, base)
        else:
            try:
                cards = asyncio.run(_invoke(svc, req, now, base, settings))
            except PrefetchUnobtainable as exc:
                print(f"412: prefetch keys missing and no fhirServer: {', '.join(exc.keys)}", file=sys.stderr)
                return 3
        _print(cards, args.format)
    return 0


async def _invoke(svc: Any, req: HookRequest, now: datetime, base: str, settings: Settings) -> list[Card]:
    limits = FetchLimits(settings.fhir_deadline_s, settings.fhir_max_pages, settings.fhir_max_bytes)
    async with httpx.AsyncClient() as client:
        result = await invoke(svc, req, client=client, limits=limits, now=now, base_url=base)
    return result.cards
