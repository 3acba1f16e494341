"""The SMART checklist's routes: launch, callback, the launched checklist page, and "file in chart".

* `GET /smart/launch?iss=&launch=` — the EHR's launch. `iss` must be a FHIR base the trust file lists
  under `fhir_servers`; its SMART configuration is discovered, a launch session is stored (state, sealed
  PKCE verifier) and the browser is sent to the EHR's authorize endpoint.
* `GET /smart/callback?code=&state=` — the state must belong to this browser's session and be unused; the
  code is exchanged (PKCE verifier, authlib); the token's `appContext` names the checklist, whose
  snapshot's patient hash must equal the launched patient's. Otherwise: a refusal page, nothing kept.
* `GET /smart/checklist` — the checklist with the patient banner (read with the token, never stored).
* `POST /smart/file` — CSRF-checked; the QuestionnaireResponse is validated, POSTed to the EHR, and the
  filing recorded (hook instance, patient hash, resource id). A refusal keeps the answers on the page.

Every failure a user can meet is an HTML page in plain words with the right status, never a stack trace.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cds_service.auth.trust import is_loopback_url, load_trust, normalise_fhir_base
from cds_service.checklist import questionnaire as q
from cds_service.checklist import service as checklist
from cds_service.checklist import token as tokens
from cds_service.checklist.storage import Snapshot
from cds_service.docs_pages import (
    _PRIVATE_HEADERS,
    MAX_FORM_BYTES,
    STATUS_TEXT,
    _parse_answers,
    _render,
    _utc,
    shown_items,
)
from cds_service.logs import patient_hash
from cds_service.persistence import StoreUnavailable
from cds_service.smart import fhir, oauth
from cds_service.smart import sessions as s

if TYPE_CHECKING:
    from cds_service.state import State

log = logging.getLogger("va_cds.smart")

COOKIE = "va_cds_smart"
COOKIE_PATH = "/smart"
MAX_PARAM = 2048


class Refusal(Exception):
    """Stop here and show this page (status, title, text, hint)."""

    def __init__(self, status: int, title: str, text: str, hint: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.text, self.hint = status, title, text, hint


@dataclass(frozen=True, slots=True)
class Active:
    """A launched session, opened: the sealed secrets are in memory only for this request."""

    cookie: str
    row: s.LaunchSession
    access_token: str
    patient: str
    fhir_user: str | None
    can_write: bool
    checklist_token: str


def allowed_fhir_bases(state: State) -> frozenset[str]:
    """FHIR bases accepted as a launch's `iss`: the trust file's `fhir_servers` (and, with
    authentication off, `VA_CDS_FHIR_SERVERS`), normalised for an exact scheme/host/port/path match."""
    bases = set(load_trust(state.settings).fhir_servers)
    if state.settings.auth_mode == "off":
        for url in state.settings.fhir_servers:
            norm = normalise_fhir_base(url)
            # Same rule as the trust file: https, or plain http only to this machine.
            if norm is None or not (norm.startswith("https://") or is_loopback_url(norm)):
                raise ValueError(f"VA_CDS_FHIR_SERVERS: {url!r} is not an https FHIR base URL")
            bases.add(norm)
    return frozenset(bases)


def smart_router(state: State) -> APIRouter:
    """The SMART routes, bound to one app's State (settings, store, clock, secret, HTTP client)."""
    router = APIRouter(include_in_schema=False)
    settings = state.settings
    store = s.SessionStore(state.store)
    app_key = state.hash_key
    checklist_key = checklist.signing_key(state)
    trusted = allowed_fhir_bases(state)

    def page(request: Request, exc: Refusal) -> HTMLResponse:
        headers = dict(_PRIVATE_HEADERS)
        if exc.status == 503:
            headers["Retry-After"] = "5"
        return _render(
            "message.html",
            exc.status,
            headers,
            base=state.base_url(request),
            title=exc.title,
            text=exc.text,
            hint=exc.hint,
            status=exc.status,
        )

    def client(request: Request) -> oauth.Client:
        assert settings.smart_client_id is not None
        return oauth.Client(
            settings.smart_client_id,
            settings.smart_client_secret,
            f"{state.base_url(request)}/smart/callback",
        )

    def set_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
        # Secure everywhere but loopback (a development browser on http://127.0.0.1 would drop it);
        # HttpOnly (no script needs it, and the pages run none); Lax, so the EHR's redirect back to the
        # callback (a top-level GET) carries it while cross-site POSTs do not.
        response.set_cookie(
            COOKIE,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            secure=not is_loopback_url(state.base_url(request)),
            httponly=True,
            samesite="lax",
        )

    def clear_cookie(request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE,
            path=COOKIE_PATH,
            secure=not is_loopback_url(state.base_url(request)),
            httponly=True,
            samesite="lax",
        )

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except StoreUnavailable:
            raise Refusal(
                503,
                "Checklist temporarily unavailable",
                "The session store could not be reached.",
                "Try again in a few seconds.",
            ) from None

    def not_configured() -> Refusal:
        return Refusal(
            404,
            "SMART launch is not set up",
            "This va-cds installation has no SMART client configured (VA_CDS_SMART_CLIENT_ID).",
            "Open the checklist from the card's link instead.",
        )

    def param(request: Request, name: str) -> str | None:
        value = request.query_params.get(name)
        return value if value and len(value) <= MAX_PARAM else None

    async def snapshot(claims_token: str) -> Snapshot:
        try:
            claims = tokens.verify(checklist_key, claims_token, state.clock())
        except tokens.TokenError as exc:
            if exc.expired:
                raise Refusal(
                    410,
                    "This checklist has expired",
                    "The checklist this launch refers to is past its validity.",
                    "Re-check the order in the EHR to get a fresh card, then launch again.",
                ) from None
            raise Refusal(
                400,
                "Launch refused: unknown checklist",
                "The EHR's launch context does not name a checklist this service issued.",
                "Launch the checklist from the card's link in the EHR.",
            ) from None
        await checklist.wait_pending(claims.snapshot_id)
        snap = await db(checklist.load_snapshot, state, claims.snapshot_id)
        if snap is None:
            raise Refusal(
                404,
                "Checklist not found",
                "The checklist this launch refers to is not in the service's store.",
                "Re-check the order in the EHR to get a fresh card, then launch again.",
            )
        assert isinstance(snap, Snapshot)
        return snap

    async def active_session(request: Request) -> Active:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 100:
            raise Refusal(
                403,
                "No launched checklist in this window",
                "This page only opens after a launch from the EHR, in the same browser window.",
                "Launch the checklist again from the card in the EHR.",
            )
        row = await db(store.load, s.session_id(cookie))
        if row is None or row.phase != s.ACTIVE:
            raise Refusal(
                403,
                "This checklist session has ended",
                "The session was filed, refused, replaced or never completed.",
                "Launch the checklist again from the card in the EHR.",
            )
        if state.clock() >= row.expires_at:
            await db(store.end, row.id)
            raise Refusal(
                410,
                "This checklist session has expired",
                "Launched checklists stay open for a limited time; the EHR's permission has lapsed.",
                "Launch the checklist again from the card in the EHR.",
            )
        data = s.unseal(app_key, cookie, row.sealed)
        if data is None:
            raise Refusal(403, "This checklist session has ended", "The session could not be opened.")
        return Active(
            cookie=cookie,
            row=row,
            access_token=data["access_token"],
            patient=data["patient"],
            fhir_user=data.get("fhir_user"),
            can_write=bool(data.get("can_write")),
            checklist_token=data["checklist_token"],
        )

    def render_checklist(
        request: Request,
        act: Active,
        snap: Snapshot,
        banner: fhir.Banner | None,
        *,
        status: int = 200,
        error: str | None = None,
        kept: dict[str, Any] | None = None,
    ) -> HTMLResponse:
        items = shown_items(snap.items)
        by_id = {f"pre.{item['id']}": item for item in items}
        context: dict[str, Any] = {
            "base": state.base_url(request),
            "token": act.checklist_token,
            "snap": snap,
            "sections": q.SECTIONS,
            "marks": by_id,
            "extra": [item for link_id, item in by_id.items() if link_id not in q.ITEM_IDS],
            "counts": {st: sum(1 for i in items if i["status"] == st) for st in STATUS_TEXT},
            "status_text": STATUS_TEXT,
            "created": _utc(snap.created_at),
            "questionnaire_url": q.QUESTIONNAIRE_URL,
            "banner": banner,
            "csrf": s.csrf_token(app_key, act.cookie),
            "can_write": act.can_write,
            "error": error,
        }
        if kept is not None:
            context["kept"] = kept
        return _render("smart_checklist.html", status, _PRIVATE_HEADERS, **context)

    @router.get("/smart/launch")
    async def launch(request: Request) -> Response:
        try:
            if not settings.smart_client_id:
                raise not_configured()
            iss, launch_id = param(request, "iss"), param(request, "launch")
            if iss is None or launch_id is None:
                raise Refusal(
                    400,
                    "Launch refused: incomplete launch",
                    "An EHR launch names its FHIR server (iss) and a launch id (launch); this one did not.",
                    "Launch the checklist from the card in the EHR.",
                )
            base = normalise_fhir_base(iss)
            if base is None or base not in trusted:
                log.warning("SMART launch refused: FHIR server not trusted", extra={"iss": iss[:200]})
                raise Refusal(
                    403,
                    "Launch refused: this EHR is not trusted",
                    "The FHIR server that launched the checklist is not on this service's list of "
                    "trusted FHIR servers.",
                    "An administrator adds it under fhir_servers in the trust file.",
                )
            try:
                config = await oauth.discover(state.http, iss)
            except oauth.DiscoveryError as exc:
                raise Refusal(
                    502,
                    "Launch failed: the EHR's SMART configuration is unusable",
                    f"{exc}.",
                    "Try again; if it persists, the EHR's SMART set-up needs attention.",
                ) from None
            cookie, oauth_state, verifier = s.new_cookie(), oauth.new_state(), oauth.new_code_verifier()
            now = state.clock()
            sid = s.session_id(cookie)
            await db(
                store.create,
                s.LaunchSession(
                    id=sid,
                    state_hash=s.state_hash(oauth_state),
                    phase=s.LAUNCHING,
                    iss=iss.rstrip("/"),
                    token_endpoint=config.token_endpoint,
                    created_at=now,
                    expires_at=now + timedelta(seconds=settings.smart_launch_ttl_s),
                    snapshot_id=None,
                    hook_instance=None,
                    patient_hash=None,
                    sealed=s.seal(app_key, cookie, {"verifier": verifier}),
                ),
            )
            url = oauth.authorize_url(
                client(request), config, iss=iss, launch=launch_id, state=oauth_state, verifier=verifier
            )
        except Refusal as exc:
            return page(request, exc)
        response = RedirectResponse(url, status_code=302, headers=_PRIVATE_HEADERS)
        set_cookie(request, response, cookie, settings.smart_launch_ttl_s)
        return response

    async def finish_launch(request: Request, cookie: str, row: s.LaunchSession) -> Response:
        sealed = s.unseal(app_key, cookie, row.sealed)
        verifier = sealed.get("verifier") if sealed else None
        if not isinstance(verifier, str):
            raise Refusal(400, "Launch refused", "The launch session holds no PKCE verifier.")
        code = param(request, "code")
        if code is None:
            raise Refusal(400, "Launch refused", "The EHR sent no authorization code.")
        try:
            grant = await oauth.exchange_code(
                client(request), row.token_endpoint, code=code, verifier=verifier
            )
        except oauth.TokenExchangeError as exc:
            log.warning("SMART token exchange refused", extra={"reason": str(exc)[:300]})
            raise Refusal(
                502,
                "Launch failed: the EHR refused the sign-in",
                f"The EHR's token endpoint said: {str(exc)[:300]}",
                "Launch the checklist again from the card in the EHR.",
            ) from None
        if grant.patient is None or grant.app_context is None:
            raise Refusal(
                400,
                "Launch refused: no patient or checklist in the launch",
                "The EHR's answer did not name the patient and the checklist this launch is for.",
                "Launch the checklist from the card's link in the EHR.",
            )
        snap = await snapshot(grant.app_context)
        launched = patient_hash(app_key, grant.patient)
        if snap.patient_hash is None or not hmac.compare_digest(launched, snap.patient_hash):
            log.warning(
                "SMART launch refused: patient does not match the checklist",
                extra={"hook_instance": snap.hook_instance, "patient": launched},
            )
            raise Refusal(
                403,
                "Wrong patient: this checklist is not for the patient open in the EHR",
                "The checklist was prepared for a different patient than the one the EHR launched it "
                "for. Nothing was shown and nothing was written to the chart.",
                "Open the right patient's chart in the EHR and launch the checklist from that "
                "patient's card.",
            )
        now = state.clock()
        expires = now + timedelta(seconds=settings.smart_session_ttl_s)
        if grant.expires_in is not None:
            expires = min(expires, now + timedelta(seconds=max(grant.expires_in, 0)))
        await db(
            store.activate,
            row.id,
            sealed=s.seal(
                app_key,
                cookie,
                {
                    "access_token": grant.access_token,
                    "patient": grant.patient,
                    "fhir_user": grant.fhir_user,
                    "can_write": grant.can_write,
                    "checklist_token": grant.app_context,
                },
            ),
            expires_at=expires,
            snapshot_id=snap.id,
            hook_instance=snap.hook_instance,
            patient_hash=launched,
        )
        log.info("SMART launch completed", extra={"hook_instance": snap.hook_instance, "patient": launched})
        response = RedirectResponse(
            f"{state.base_url(request)}/smart/checklist", status_code=303, headers=_PRIVATE_HEADERS
        )
        set_cookie(request, response, cookie, max(60, int((expires - now).total_seconds())))
        return response

    @router.get("/smart/callback")
    async def callback(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        row: s.LaunchSession | None = None
        try:
            if not settings.smart_client_id:
                raise not_configured()
            oauth_state = param(request, "state")
            if oauth_state is None:
                raise Refusal(400, "Launch refused", "The EHR's answer carries no state parameter.")
            if not cookie or len(cookie) > 100:
                raise Refusal(
                    400,
                    "Launch refused: no launch in this browser",
                    "This answer from the EHR does not belong to a launch started in this browser "
                    "(or cookies are blocked).",
                    "Launch the checklist again from the card in the EHR.",
                )
            row = await db(store.load, s.session_id(cookie))
            if row is None:
                raise Refusal(
                    400,
                    "Launch refused: unknown launch",
                    "No launch in progress matches this browser.",
                    "Launch the checklist again from the card in the EHR.",
                )
            if state.clock() >= row.expires_at:
                raise Refusal(
                    410,
                    "Launch expired",
                    "The sign-in at the EHR took longer than this service allows for a launch.",
                    "Launch the checklist again from the card in the EHR.",
                )
            if not hmac.compare_digest(row.state_hash, s.state_hash(oauth_state)):
                raise Refusal(400, "Launch refused", "The EHR's answer does not match this launch (state).")
            if not await db(store.claim, row.id, row.state_hash):
                row = None  # leave the session as it is: its rightful use is elsewhere or done
                raise Refusal(
                    400,
                    "Launch refused: this sign-in was already used",
                    "The EHR's answer for this launch has already been used once; it cannot be replayed.",
                    "Launch the checklist again from the card in the EHR.",
                )
            error = param(request, "error")
            if error is not None:
                raise Refusal(
                    403,
                    "The EHR did not authorize the checklist",
                    f"The EHR answered: {error}"
                    + (
                        f" — {param(request, 'error_description')}"
                        if param(request, "error_description")
                        else ""
                    ),
                    "Launch the checklist again from the card in the EHR.",
                )
            return await finish_launch(request, cookie, row)
        except Refusal as exc:
            if row is not None:  # a refused or failed launch leaves nothing behind
                try:
                    await anyio.to_thread.run_sync(store.end, row.id)
                except StoreUnavailable:
                    log.warning("SMART launch session not deleted (store unavailable); it will expire")
            response = page(request, exc)
            if row is not None:
                clear_cookie(request, response)
            return response

    @router.get("/smart/checklist")
    async def checklist_page(request: Request) -> Response:
        try:
            act = await active_session(request)
            snap = await snapshot(act.checklist_token)
        except Refusal as exc:
            return page(request, exc)
        banner = await fhir.read_banner(state.http, act.row.iss, act.access_token, act.patient)
        return render_checklist(request, act, snap, banner)

    @router.post("/smart/file")
    async def file_in_chart(request: Request) -> Response:
        try:
            act = await active_session(request)
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                raise Refusal(413, "Form too large", "The checklist form was too large to file.")
            ctype = request.headers.get("content-type", "")
            parsed = _parse_answers(ctype, body)
            csrf = _form_field(body, "csrf") if parsed is not None else None
            if parsed is None or csrf is None:
                raise Refusal(
                    400, "Could not read the checklist form", "Submit the form from the checklist page."
                )
            if not hmac.compare_digest(csrf, s.csrf_token(app_key, act.cookie)):
                raise Refusal(
                    403,
                    "Form refused",
                    "This form did not come from the checklist page of this session (CSRF check).",
                    "Reload the checklist page and submit it again.",
                )
            if not act.can_write:
                raise Refusal(
                    403,
                    "Not permitted to file",
                    "The EHR did not grant this app permission to create questionnaire responses.",
                    "Download the checklist instead, or ask for the app's EHR registration to include "
                    "patient/QuestionnaireResponse.c.",
                )
            snap = await snapshot(act.checklist_token)
        except Refusal as exc:
            return page(request, exc)
        ticked, notes = parsed
        now = state.clock()
        resource = filed_resource(
            ticked, notes, now=now, snap=snap, patient=act.patient, author=act.fhir_user
        )
        try:
            fhir.validate(resource)
            filed = await fhir.create_response(state.http, act.row.iss, act.access_token, resource)
        except (fhir.FilingError, ValueError) as exc:
            status = 500 if isinstance(exc, ValueError) else 502
            text = (
                str(exc) if isinstance(exc, fhir.FilingError) else f"The checklist failed validation: {exc}"
            )
            log.warning(
                "checklist not filed",
                extra={
                    "hook_instance": snap.hook_instance,
                    "reason": text[:300],
                    "patient": act.row.patient_hash,
                },
            )
            banner = await fhir.read_banner(state.http, act.row.iss, act.access_token, act.patient)
            kept = {"ticked": ticked, "notes": notes}
            return render_checklist(request, act, snap, banner, status=status, error=text, kept=kept)
        banner = await fhir.read_banner(state.http, act.row.iss, act.access_token, act.patient)
        await record_filing(act, snap, filed, now)
        try:
            await anyio.to_thread.run_sync(store.end, act.row.id)  # the token dies with the session
        except StoreUnavailable:
            log.warning("SMART session not deleted after filing (store unavailable); it will expire")
        response = _render(
            "smart_filed.html",
            200,
            _PRIVATE_HEADERS,
            base=state.base_url(request),
            filed=filed,
            banner=banner,
        )
        clear_cookie(request, response)
        return response

    async def record_filing(act: Active, snap: Snapshot, filed: fhir.Filed, now: datetime) -> None:
        line = {
            "hook_instance": snap.hook_instance,
            "patient_hash": act.row.patient_hash,
            "fhir_server": act.row.iss,
            "resource": filed.reference,
        }
        try:
            await anyio.to_thread.run_sync(
                lambda: store.record_filing(
                    hook_instance=snap.hook_instance,
                    patient_hash=act.row.patient_hash,
                    fhir_server=act.row.iss,
                    resource=filed.reference,
                    at=now,
                )
            )
        except StoreUnavailable:
            # Filed in the chart already: say so in the log rather than lose the audit line.
            log.warning("checklist filing audit not stored; logged instead", extra={"filing": line})
            return
        log.info("checklist filed in chart", extra={"filing": line})

    return router


def filed_resource(
    ticked: set[str],
    notes: dict[str, str],
    *,
    now: datetime,
    snap: Snapshot,
    patient: str,
    author: str | None,
) -> dict[str, Any]:
    """The QuestionnaireResponse to file: the export's answers with the chart's subject and author."""
    resource = q.questionnaire_response(ticked, notes, authored=now, snapshot_id=snap.id, patient_hash=None)
    resource["subject"] = {"reference": f"Patient/{patient}"}
    if author:
        resource["author"] = {"reference": author}
    return resource


def _form_field(body: bytes, name: str) -> str | None:
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=500).get(name)
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if values else None
