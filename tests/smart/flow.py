"""The SMART path driven over plain HTTP (httpx), as a browser would follow it: hook call, EHR launch,
authorize, callback, checklist page, file in chart."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.pages.helpers import SERVICE_URL, checklist_card, order_sign_request
from tests.smart.conftest import App
from tests.smart.ehr import Ehr

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def smart_link(app: App, patient: str = "p1") -> dict[str, Any]:
    """A fresh order-sign call for `patient`; the pre.checklist card's smart link."""
    with httpx.Client(base_url=app.base, timeout=10) as http:
        body = order_sign_request(http.get("/cds-services").json())
        body["hookInstance"] = str(uuid.uuid4())
        body["context"]["patientId"] = patient
        body["prefetch"]["patient"]["id"] = patient
        for entry in body["context"]["draftOrders"]["entry"]:
            entry["resource"]["subject"]["reference"] = f"Patient/{patient}"
        resp = http.post(SERVICE_URL, json=body)
    assert resp.status_code == 200, resp.text
    links = checklist_card(resp.json()["cards"])["links"]
    return next(link for link in links if link["type"] == "smart")


def browser() -> httpx.Client:
    return httpx.Client(timeout=10, follow_redirects=False)


def launch(
    http: httpx.Client, app: App, ehr: Ehr, link: dict[str, Any], *, patient: str = "p1", **kw: Any
) -> httpx.Response:
    """The EHR launches the link for `patient`: the app's answer (a redirect to authorize, or a page)."""
    launch_id = ehr.new_launch(patient, link["appContext"], **kw)
    return http.get(ehr.launch_url(link["url"], launch_id))


def authorize(http: httpx.Client, redirect: httpx.Response) -> httpx.Response:
    """The user allows the app at the EHR's consent screen: the EHR's redirect back to the callback."""
    assert redirect.status_code == 302, redirect.text
    consent = http.get(redirect.headers["location"])
    assert consent.status_code == 200, consent.text
    params = dict(parse_qsl(urlsplit(redirect.headers["location"]).query))
    authorize_url = redirect.headers["location"].split("?")[0]
    answer = http.post(authorize_url, data={**params, "confirm": "yes"})
    assert answer.status_code == 302, answer.text
    return answer


def launched(http: httpx.Client, app: App, ehr: Ehr, link: dict[str, Any], **kw: Any) -> httpx.Response:
    """Launch, authorize, follow the callback: the app's answer to the callback."""
    back = authorize(http, launch(http, app, ehr, link, **kw))
    assert back.headers["location"].startswith(f"{app.base}/smart/callback?")
    return http.get(back.headers["location"])


def csrf(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no CSRF token on the page"
    return match.group(1)
