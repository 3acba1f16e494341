"""Human-facing pages: rule documentation, the pre-procedure checklist, and its FHIR export.

Routes (all server-rendered Jinja2 with autoescaping; no scripts at all, no external assets, so they work
on hospital networks that block CDNs and pass a strict Content-Security-Policy):

* `GET /docs/rules`, `GET /docs/rules/{rule_id}` — what each rule checks, the policy values in force
  (value, unit, source), the evidence it reads, the steps it advises, its citation and what alert
  memory does with its cards here.
* `GET /checklist/{token}` (`?print=1` for the print view) — the master checklist for one hook call,
  pre-procedure items pre-marked from the snapshot the call left behind.
* `POST /checklist/{token}/export` — the ticked form (form-encoded or JSON) back as a FHIR R4
  QuestionnaireResponse, downloaded as a file.
* `GET /fhir/Questionnaire/va-cds-master-checklist` — the Questionnaire the responses answer.

Every failure a user can cause (unknown rule, forged, expired or unknown token, bad form) gets an HTML
page with a plain explanation and the right status, never a stack trace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cds_service.checklist import questionnaire as q
from cds_service.checklist import service as checklist
from cds_service.checklist import token as tokens
from cds_service.checklist.storage import Snapshot
from cds_service.contracts import RuleDoc, ServiceDefinition
from cds_service.memory.recall import AlertMemory
from cds_service.persistence import StoreUnavailable
from cds_service.state import State
from hooks.policy import Policy

log = logging.getLogger("va_cds.pages")

HOLDS_KEY = "antithrombotic_holds"
MAX_FORM_BYTES = 64_000
STATIC_FILES = {"va-cds.css": "text/css; charset=utf-8"}
STATUS_TEXT = {
    "met": "Met by data",
    "problem": "Problem",
    "to-obtain": "To obtain",
    "needs-documentation": "Needs documentation",
}


def shown_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The snapshot rows as the page shows them: work-up that is simply not done yet (a `*-missing` finding)
    reads "To obtain", as on the card (catalog V2.4), not "Problem". Stored rows are left as they are."""
    return [
        {**item, "status": "to-obtain"}
        if item.get("status") == "problem" and str(item.get("rule_id") or "").endswith("-missing")
        else item
        for item in items
    ]


# No script-src at all: the pages need none, so an injected script could not run even if escaping failed.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
_BASE_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}
# The token in a checklist URL is the only key to the page: keep it out of caches, Referer headers
# and search indexes.
_PRIVATE_HEADERS = {
    **_BASE_HEADERS,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}

_env = Environment(
    loader=PackageLoader("cds_service", "templates"),
    autoescape=True,  # every template is HTML; rule ids and form text come from outside
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class PolicyRow:
    key: str
    value: str
    unit: str
    source: str
    missing: bool = False


@dataclass(slots=True)
class RuleEntry:
    doc: RuleDoc
    services: list[ServiceDefinition] = field(default_factory=list)


def _fmt(value: float) -> str:
    return f"{value:g}"


def policy_rows(policy: Policy, keys: tuple[str, ...]) -> tuple[list[PolicyRow], bool]:
    """Rows for a rule's policy keys, and whether the antithrombotic hold table applies.

    Keys may be bare (`inr_max`, a threshold; a rule id, a window) or qualified by section
    (`thresholds.inr_max`, `windows_days.post.pce.suspected`). A key the policy lacks is shown as
    such rather than hidden, because a rule page that silently omits a value misleads.
    """
    rows: list[PolicyRow] = []
    holds = False
    for key in keys:
        if key == HOLDS_KEY:
            holds = True
            continue
        section, _, name = key.partition(".")
        if section == "thresholds" and name:
            entry = policy.thresholds.get(name)
        elif section == "windows_days" and name:
            entry = policy.windows_days.get(name)
        else:
            name = key
            entry = policy.thresholds.get(key) or policy.windows_days.get(key)
        if entry is None:
            rows.append(PolicyRow(name, "—", "", "not set in the policy file", missing=True))
        else:
            rows.append(PolicyRow(name, _fmt(entry.value), entry.unit, entry.source))
    return rows, holds


def _hold_rows(policy: Policy) -> list[dict[str, str]]:
    return [
        {
            "agent": h.ingredient.replace("_", " "),
            "days": _fmt(h.days),
            "renal": (
                f"{_fmt(h.days_reduced_renal)} days if CrCl < {_fmt(h.crcl_cutoff)} mL/min"
                if h.days_reduced_renal is not None and h.crcl_cutoff is not None
                else "—"
            ),
            "note": h.note,
        }
        for h in sorted(policy.holds.values(), key=lambda h: h.ingredient)
    ]


def memory_view(memory: AlertMemory, doc: RuleDoc) -> dict[str, Any]:
    """What the rule page says about alert memory for this rule: on or off (and why), and its windows."""
    policy = memory.policy
    off = ""
    if not policy.enabled:
        off = "Alert memory is switched off in this site's policy file."
    elif not memory.enabled:
        off = "Alert memory is off on this server: no stable patient hash key is configured."
    elif doc.rule_id in policy.rules_off:
        off = (
            f"Alert memory is switched off for this rule in the policy file: {policy.rules_off[doc.rule_id]}"
        )
    rows = [
        PolicyRow(
            f"memory.{key}",
            _fmt(s.value) if not isinstance(s.value, bool) else str(s.value).lower(),
            s.unit,
            s.source,
        )
        for key, s in policy.settings.items()
    ]
    return {
        "off": off,
        "critical": doc.indicator == "critical",
        "override_days": _fmt(policy.override_memory_days),
        "accepted_days": _fmt(policy.accepted_memory_days),
        "repeat_hours": _fmt(policy.repeat_memory_hours),
        "max_calls": policy.max_calls,
        "omit": policy.omit_overridden_on_patient_view,
        "rows": rows,
    }


def _catalog(services: dict[str, ServiceDefinition]) -> dict[str, RuleEntry]:
    out: dict[str, RuleEntry] = {}
    for svc in services.values():
        for doc in svc.rules:
            # A shared rule id (e.g. sys.data-unavailable) is one page listing every service using it.
            out.setdefault(doc.rule_id, RuleEntry(doc)).services.append(svc)
    return out


def _render(
    name: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=headers or _BASE_HEADERS)


def _utc(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def docs_router(state: State) -> APIRouter:
    """The pages' routes, bound to one app's State (policy, services, store, clock, secret)."""
    router = APIRouter(include_in_schema=False)
    catalog = _catalog(state.services)
    key = checklist.signing_key(state)
    questionnaire = q.master_questionnaire()

    def message(
        request: Request, status: int, title: str, text: str, hint: str = "", private: bool = False
    ) -> HTMLResponse:
        headers = dict(_PRIVATE_HEADERS if private else _BASE_HEADERS)
        if status == 503:
            headers["Retry-After"] = "5"
        return _render(
            "message.html",
            status,
            headers,
            base=state.base_url(request),
            title=title,
            text=text,
            hint=hint,
            status=status,
        )

    @router.get("/docs")
    async def docs_home(request: Request) -> Response:
        return RedirectResponse(f"{state.base_url(request)}/docs/rules", status_code=308)

    @router.get("/docs/rules")
    async def rules_index(request: Request) -> Response:
        # Services of one family share their rules (one id per hook, V2.1): list the rules once per family.
        families: dict[int, list[ServiceDefinition]] = {}
        for svc in state.services.values():
            if svc.rules:
                families.setdefault(id(svc.rules), []).append(svc)
        groups = [
            {
                "id": members[0].id,
                "title": members[0].title.split(" (")[0],
                "services": members,
                "rules": [catalog[d.rule_id].doc for d in members[0].rules],
            }
            for members in families.values()
        ]
        return _render("rules_index.html", base=state.base_url(request), groups=groups)

    @router.get("/docs/rules/{rule_id:path}")  # any sub-path gets the friendly page
    async def rule_page(rule_id: str, request: Request) -> Response:
        entry = catalog.get(rule_id)
        if entry is None:
            shown = rule_id if len(rule_id) <= 80 else rule_id[:80] + "…"
            return message(
                request,
                404,
                "No such rule",
                f"va-cds has no rule with the id “{shown}”.",
                "The index lists every rule the services can show.",
            )
        rows, holds = policy_rows(state.policy, entry.doc.policy_keys)
        return _render(
            "rule.html",
            base=state.base_url(request),
            doc=entry.doc,
            services=entry.services,
            hooks=entry.doc.hooks or tuple(dict.fromkeys(s.hook for s in entry.services)),
            policy_rows=rows,
            holds=_hold_rows(state.policy) if holds else [],
            holds_source=state.policy.holds_source,
            memory=memory_view(state.memory, entry.doc),
        )

    async def snapshot_for(request: Request, token: str) -> Snapshot | HTMLResponse:
        try:
            claims = tokens.verify(key, token, state.clock())
        except tokens.TokenError as exc:
            if exc.expired:
                hours = max(1, round(state.settings.checklist_ttl_s / 3600))
                return message(
                    request,
                    410,
                    "This checklist link has expired",
                    f"Checklist links stay valid for about {hours} hour(s) after the order was checked.",
                    "Open the patient's chart or re-check the order in the EHR to get a fresh link.",
                    private=True,
                )
            return not_found(request)
        try:
            # A click racing the background write, here or (several processes) on another worker/replica.
            snap = await checklist.find_snapshot(state, claims)
        except StoreUnavailable:
            return message(
                request,
                503,
                "Checklist temporarily unavailable",
                "The checklist store could not be reached.",
                "Try again in a few seconds.",
                private=True,
            )
        return snap if snap is not None else not_found(request)

    def not_found(request: Request) -> HTMLResponse:
        return message(
            request,
            404,
            "Checklist link not recognised",
            "This link does not match any checklist. It may be incomplete, or it was issued before the "
            "service was restarted with a new key.",
            "Open the checklist again from the card in the EHR.",
            private=True,
        )

    @router.get("/checklist/{token}")
    async def checklist_page(token: str, request: Request) -> Response:
        found = await snapshot_for(request, token)
        if isinstance(found, HTMLResponse):
            return found
        snap = found
        items = shown_items(snap.items)
        by_id = {f"pre.{item['id']}": item for item in items}
        extra = [item for link_id, item in by_id.items() if link_id not in q.ITEM_IDS]
        counts = {s: sum(1 for i in items if i["status"] == s) for s in STATUS_TEXT}
        base = state.base_url(request)
        return _render(
            "checklist.html",
            200,
            _PRIVATE_HEADERS,
            base=base,
            token=token,
            snap=snap,
            sections=q.SECTIONS,
            marks=by_id,
            extra=extra,
            counts=counts,
            status_text=STATUS_TEXT,
            created=_utc(snap.created_at),
            expires=_utc(snap.expires_at),
            print_mode=request.query_params.get("print") == "1",
            questionnaire_url=q.QUESTIONNAIRE_URL,
        )

    @router.post("/checklist/{token}/export")
    async def export(token: str, request: Request) -> Response:
        found = await snapshot_for(request, token)
        if isinstance(found, HTMLResponse):
            return found
        body = await _read_limited(request, MAX_FORM_BYTES)
        if body is None:
            return message(request, 413, "Form too large", "The checklist form was too large to export.")
        parsed = _parse_answers(request.headers.get("content-type", ""), body)
        if parsed is None:
            return message(
                request,
                400,
                "Could not read the checklist form",
                "Send the form as application/x-www-form-urlencoded or as JSON "
                '{"ticked": [linkId, ...], "notes": {linkId: text}}.',
            )
        ticked, notes = parsed
        authored = state.clock()
        resource = q.questionnaire_response(
            ticked, notes, authored=authored, snapshot_id=found.id, patient_hash=found.patient_hash
        )
        filename = f"va-cds-checklist-{authored.strftime('%Y%m%dT%H%M%SZ')}.json"
        return Response(
            orjson.dumps(resource, option=orjson.OPT_INDENT_2),
            media_type="application/fhir+json",
            headers={
                **_PRIVATE_HEADERS,
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
        )

    @router.get(f"/fhir/Questionnaire/{q.QUESTIONNAIRE_ID}")
    async def questionnaire_resource() -> Response:
        return Response(orjson.dumps(questionnaire), media_type="application/fhir+json")

    @router.get("/static/{name}")
    async def static_file(name: str) -> Response:
        media = STATIC_FILES.get(name)  # an allow-list: no path from the URL ever reaches the file system
        if media is None:
            return Response(status_code=404)
        data = (resources.files("cds_service") / "static" / name).read_bytes()
        return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=3600"})

    return router


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `limit` (declared or streamed): never all of it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _parse_answers(content_type: str, body: bytes) -> tuple[set[str], dict[str, str]] | None:
    """(ticked linkIds, notes by linkId) from a form or JSON body; unknown linkIds are ignored."""
    ctype = content_type.split(";")[0].strip().lower()
    ticked: set[str] = set()
    notes: dict[str, str] = {}
    if ctype == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=False, max_num_fields=500)
        except (UnicodeDecodeError, ValueError):
            return None
        ticked = {v for v in form.get("tick", []) if v in q.ITEM_IDS}
        notes = {k: v[0] for k, v in form.items() if k in q.NOTE_IDS and v}
    elif ctype == "application/json" or ctype.endswith("+json"):
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(raw, dict):
            return None
        raw_ticked, raw_notes = raw.get("ticked", []), raw.get("notes", {})
        if not isinstance(raw_ticked, list) or not isinstance(raw_notes, dict):
            return None
        ticked = {v for v in raw_ticked if isinstance(v, str) and v in q.ITEM_IDS}
        notes = {k: v for k, v in raw_notes.items() if k in q.NOTE_IDS and isinstance(v, str)}
    else:
        return None
    return ticked, notes
