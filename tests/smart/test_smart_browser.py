"""The SMART checklist in a real browser (Debian's Chromium via Playwright): the EHR launches the card's
smart link, the clinician allows the app at the EHR's authorization server (authlib), sees the patient
banner, ticks, files in the chart; the filed QuestionnaireResponse is read back from the FHIR endpoint.
Every request the browser makes goes to va-cds or the test EHR, nowhere else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pages.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _require_chromium
from tests.smart.conftest import App
from tests.smart.ehr import Ehr
from tests.smart.flow import smart_link

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(app: App) -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, app: App, ehr: Ehr) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 1300})
    seen: list[str] = []
    foreign: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        seen.append(url)
        if url.startswith((app.base + "/", ehr.base + "/", "data:")):
            r.continue_()
        else:
            foreign.append(url)
            r.abort()

    context.route("**/*", route)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()
    assert foreign == [], f"the browser left va-cds and the EHR: {foreign}"
    assert any(u.startswith(ehr.base + "/auth/authorize") for u in seen)


def _shoot(pg: Any, name: str, tmp_path: Path) -> None:
    target = tmp_path / name
    pg.evaluate("window.scrollTo(0, 0)")
    pg.screenshot(path=str(target))
    assert target.stat().st_size > 1000
    if os.environ.get("VA_CDS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / name)


def test_ehr_launch_authorize_banner_tick_file_and_read_back(
    app: App, ehr: Ehr, page: Any, tmp_path: Path
) -> None:
    link = smart_link(app)
    launch_id = ehr.new_launch("p1", link["appContext"])
    page.goto(ehr.launch_url(link["url"], launch_id))

    # The EHR's authorization server asks; the clinician allows.
    assert page.locator("h1").inner_text() == "Allow va-cds checklist?"
    page.get_by_role("button", name="Allow").click()

    page.wait_for_url(f"{app.base}/smart/checklist")
    banner = page.locator("#patient-banner")
    assert "Marta Testwoman" in banner.inner_text()
    assert "1948-03-02" in banner.inner_text()
    assert "MRN-400117" in banner.inner_text()
    assert "To obtain" in page.locator('[id="item-pre.coagulation"]').inner_text()

    ticks = ["pre.access", "pre.cement", "consent.leakage", "consent.neural", "intra.timeout"]
    for link_id in ticks:
        page.locator(f'input[name="tick"][value="{link_id}"]').check()
    page.locator('textarea[name="consent.notes"]').fill("Risks discussed with patient and daughter")
    _shoot(page, "smart-checklist.png", tmp_path)

    page.get_by_role("button", name="File in chart").click()
    page.wait_for_selector("#filed")
    assert page.locator("h1").inner_text() == "Checklist filed in the chart"
    rid = page.locator("#resource-id").inner_text()
    assert page.locator("#resource-version").inner_text() == "1"
    _shoot(page, "smart-filed.png", tmp_path)

    reader = ehr.issue_token("p1", "patient/QuestionnaireResponse.r")
    got = httpx.get(
        f"{ehr.fhir_base}/QuestionnaireResponse/{rid}", headers={"Authorization": f"Bearer {reader}"}
    )
    assert got.status_code == 200
    qr = got.json()
    assert qr["subject"] == {"reference": "Patient/p1"} and qr["author"] == {
        "reference": "Practitioner/doc-1"
    }
    answers = {i["linkId"]: i["answer"][0] for g in qr["item"] for i in g["item"]}
    assert {k for k, a in answers.items() if a.get("valueBoolean") is True} == set(ticks)
    assert answers["consent.notes"] == {"valueString": "Risks discussed with patient and daughter"}

    # Back in the same window, the session is over: the token died with the filing.
    response = page.goto(f"{app.base}/smart/checklist")
    assert response is not None and response.status == 403
    assert "Marta" not in page.locator("main").inner_text()


def test_wrong_patient_refusal_page_in_the_browser(app: App, ehr: Ehr, page: Any, tmp_path: Path) -> None:
    link = smart_link(app, patient="p1")
    launch_id = ehr.new_launch("p2", link["appContext"])
    before = dict(ehr.resources)
    page.goto(ehr.launch_url(link["url"], launch_id))
    page.get_by_role("button", name="Allow").click()
    page.wait_for_selector("h1:has-text('Wrong patient')")
    assert "nothing was written" in page.locator("main").inner_text()
    _shoot(page, "smart-wrong-patient.png", tmp_path)
    assert ehr.resources == before
