"""`va-cds evaluate`: run a hook offline and print the cards, for informatics teams testing rules.

Input is either a CDS Hooks request (JSON with hook, hookInstance and context) or a patient record Bundle;
with a Bundle, `--draft-order vertebroplasty|kyphoplasty` adds a VA draft order (order-sign), otherwise the
record is reviewed as patient-view. No EHR, no network for a Bundle: its resources stand in for every
prefetch key. A request without prefetch is fetched from its `fhirServer`, as the service would.

Every bad argument or input ends with one line on stderr and exit status 2 (never a traceback); a request
whose data cannot be had (no prefetch, no fhirServer) exits 3. `--format json` prints one JSON document:
the hook, the evaluation time and, per service called, its cards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import orjson
from pydantic import ValidationError

from cds_service.cards import build_cards
from cds_service.contracts import ServiceDefinition
from cds_service.hook_contexts import context_problems
from cds_service.invocation import evaluate, invoke
from cds_service.models import Card, HookRequest
from cds_service.prefetch import FetchLimits, PrefetchUnobtainable
from cds_service.settings import Settings
from fhir_mappings.library import ValueSetLibrary, default_library
from hooks import build_services
from hooks.policy import PolicyError, load_policy

CPT = "http://www.ama-assn.org/go/cpt"
DRAFTS = {
    "vertebroplasty": ("22511", "Percutaneous vertebroplasty, lumbosacral"),
    "kyphoplasty": ("22513", "Percutaneous vertebral augmentation (kyphoplasty), thoracic"),
}
SHAPES = (
    "a CDS Hooks request (a JSON object with hook, hookInstance and context) "
    'or a FHIR Bundle of one patient\'s record (resourceType "Bundle")'
)


class UsageError(Exception):
    """A bad argument or input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage + error; we want one line
        raise UsageError(message)


def _bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def _bundle_patient(resources: list[dict[str, Any]]) -> str:
    """The one patient a record Bundle is about; an empty or patient-less Bundle is an error, not 0 cards."""
    if not resources:
        raise UsageError(
            "the Bundle has no resources: give the patient's record, a Patient resource among them"
        )
    ids = sorted({str(r.get("id")) for r in resources if r.get("resourceType") == "Patient"})
    if not ids:
        raise UsageError("the Bundle holds no Patient resource: whose record is it?")
    if len(ids) > 1:
        raise UsageError(
            f"the Bundle holds {len(ids)} patients ({', '.join(ids)}): give one patient's record"
        )
    return ids[0]


def request_from_bundle(bundle: dict[str, Any], hook: str | None, draft: str | None) -> dict[str, Any]:
    resources = _bundle_resources(bundle)
    pid = _bundle_patient(resources)
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
    elif draft:
        raise UsageError(f"--draft-order needs an order hook (order-sign or order-select), not {chosen!r}")
    if chosen in ("encounter-start", "encounter-discharge"):
        encounters = [r for r in resources if r.get("resourceType") == "Encounter"]
        if not encounters:
            raise UsageError(
                f"hook {chosen!r} needs an Encounter in the Bundle (it becomes context.encounterId)"
            )
        context["encounterId"] = str(encounters[-1].get("id"))
    return {"hook": chosen, "hookInstance": str(uuid.uuid4()), "context": context}


def parse_now(value: str) -> datetime:
    """ISO date or date-time; a date means its midnight UTC, a time without offset is UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(
            f"--now {value!r} is not an ISO date or date-time with a valid offset (-23:59 to +23:59), "
            "e.g. 2026-06-01 or 2026-06-01T08:00+01:00"
        ) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _read(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"cannot read {path}: not JSON ({exc.msg})") from None


def _what(doc: Any) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
        return f"a FHIR {doc['resourceType']} resource"
    if isinstance(doc, dict):
        return "a JSON object without hook or context"
    return "a JSON list" if isinstance(doc, list) else "a JSON value"


def _choose(services: list[ServiceDefinition], hook: str, wanted: str | None) -> list[ServiceDefinition]:
    if wanted is not None:
        svc = next((s for s in services if s.id == wanted), None)
        if svc is None:
            raise UsageError(
                f"unknown service {wanted!r}; the services are: {', '.join(s.id for s in services)}"
            )
        if hook != svc.hook:
            raise UsageError(f"service {wanted!r} does not answer hook {hook!r}; it answers {svc.hook!r}")
        return [svc]
    chosen = [s for s in services if s.hook == hook]
    if not chosen:
        hooks = sorted({s.hook for s in services})
        raise UsageError(f"no service answers hook {hook!r}; the hooks answered are: {', '.join(hooks)}")
    return chosen


def _card_json(card: Card) -> dict[str, Any]:
    return card.model_dump(mode="json", exclude_none=True)


def _print_text(service_id: str, hook: str, cards: list[Card]) -> None:
    print(f"== {service_id} ({hook})")
    if not cards:
        print("(no cards)")
    for c in cards:
        rule = (c.extension or {}).get("org.va-cds.rule")
        print(f"[{c.indicator.upper():8}] {rule}: {c.summary}")


def main(argv: list[str]) -> int:
    try:
        return _run(argv)
    except UsageError as exc:
        print(f"va-cds evaluate: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


def _run(argv: list[str]) -> int:
    parser = _Parser(prog="va-cds evaluate", description=__doc__)
    parser.add_argument("file", type=Path, help="a CDS Hooks request JSON or a patient record Bundle")
    parser.add_argument("--hook", help="hook to run (default: the request's, or order-sign/patient-view)")
    parser.add_argument("--service", help="service id (default: every service answering the hook)")
    parser.add_argument("--draft-order", choices=sorted(DRAFTS), help="with a Bundle: add a VA draft order")
    parser.add_argument("--now", type=str, help="evaluate as of this ISO date or date-time (default: now)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    now = parse_now(args.now) if args.now is not None else datetime.now(UTC)

    try:
        settings = Settings()
        policy = load_policy(settings.policy_file)
        library = default_library(settings.valueset_dir)
    except ValidationError as exc:
        raise UsageError(f"invalid VA_CDS_* setting: {_one_line(exc)}") from None
    except (PolicyError, OSError, ValueError) as exc:
        raise UsageError(f"cannot load the policy or value sets: {exc}") from None
    services = build_services(policy)

    doc = _read(args.file)
    is_bundle = isinstance(doc, dict) and doc.get("resourceType") == "Bundle"
    if is_bundle:
        raw = request_from_bundle(doc, args.hook, args.draft_order)
    elif isinstance(doc, dict) and ({"hook", "hookInstance", "context"} & doc.keys()):
        if args.draft_order:
            raise UsageError(
                "--draft-order applies to a patient Bundle; a hook request carries its draftOrders"
            )
        raw = {**doc, "hook": args.hook} if args.hook else doc
    else:
        raise UsageError(f"{args.file} is {_what(doc)}; va-cds evaluate reads {SHAPES}")
    try:
        req = HookRequest.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"not a valid CDS Hooks request: {_one_line(exc)}") from None
    problems = context_problems(req.hook, req.context)
    if problems:
        raise UsageError(f"not a valid {req.hook} request: {'; '.join(problems)}")
    chosen = _choose(services, req.hook, args.service)

    base = settings.public_base_url or f"http://{settings.host}:{settings.port}"
    results: list[tuple[str, list[Card]]] = []
    for svc in chosen:
        if is_bundle:
            if svc.quick_scope is not None and svc.quick_scope(req.hook, req.context) is False:
                cards: list[Card] = []
            else:
                specs = evaluate(svc, req, _bundle_resources(doc), frozenset(), now, library)
                cards = build_cards(specs, base)
        else:
            try:
                cards = asyncio.run(_invoke(svc, req, now, base, settings, library))
            except PrefetchUnobtainable as exc:
                print(
                    f"va-cds evaluate: 412: prefetch keys missing and no fhirServer: {', '.join(exc.keys)}",
                    file=sys.stderr,
                )
                return 3
        results.append((svc.id, cards))
        if args.format == "text":
            _print_text(svc.id, req.hook, cards)
    if args.format == "json":
        document = {
            "hook": req.hook,
            "now": now.isoformat(),
            "services": [{"id": sid, "cards": [_card_json(c) for c in cards]} for sid, cards in results],
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _invoke(
    svc: ServiceDefinition,
    req: HookRequest,
    now: datetime,
    base: str,
    settings: Settings,
    library: ValueSetLibrary,
) -> list[Card]:
    limits = FetchLimits(settings.fhir_deadline_s, settings.fhir_max_pages, settings.fhir_max_bytes)
    async with httpx.AsyncClient() as client:
        result = await invoke(svc, req, client=client, limits=limits, now=now, base_url=base, library=library)
    return result.cards
