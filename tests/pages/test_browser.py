"""The pages in a real browser: Debian's Chromium driven by Playwright against the app under uvicorn.

A person's path: an EHR posts order-sign, the `pre.checklist` card carries a link, the clinician opens
it, ticks items, exports the QuestionnaireResponse; plus a rule page and an expired link. Every request
a page makes is recorded and must go to the app's own origin. Screenshots land in the test's temporary
directory, and in docs/screenshots/ when VA_CDS_SCREENSHOTS=1 (how the README images are refreshed).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds_service.app import create_app
from cds_service.checklist import token as tokens
from cds_service.settings import Settings
from tests.net import free_port
from tests.pages.helpers import SERVICE_URL, checklist_link, order_sign_request

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-test-secret"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _require_chromium() -> None:
    if Path(CHROMIUM).is_file():
        return
    message = f"{CHROMIUM} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must install Debian's chromium package")
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_chromium()
    import uvicorn

    db = tmp_path_factory.mktemp("browser") / "va-cds.db"
    settings = Settings(  # type: ignore[call-arg]
        auth_mode="off", database_url=f"sqlite:///{db}", patient_hash_key=SECRET, checklist_ttl_s=3600
    )
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-browser-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Recorder:
    """Every request of a browser context; anything not to the app's origin is blocked and kept."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.seen: list[str] = []
        self.foreign: list[str] = []

    def route(self, route: Any) -> None:
        url = route.request.url
        self.seen.append(url)
        if url.startswith(self.origin + "/") or url.startswith("data:"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[tuple[Any, Recorder]]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 412, "height": 900})
    recorder = Recorder(server)
    context.route("**/*", recorder.route)
    # page.on("request") as a second witness: it also sees requests a route handler might not.
    pg = context.new_page()
    pg.on("request", lambda req: recorder.seen.append(req.url))
    try:
        yield pg, recorder
    finally:
        context.close()
    assert recorder.foreign == [], f"pages made external requests: {recorder.foreign}"
    assert all(u.startswith(server + "/") or u.startswith("data:") for u in recorder.seen), recorder.seen


def _shoot(pg: Any, name: str, tmp_path: Path, width: int = 1000, height: int = 1300) -> None:
    # A fixed viewport rather than the full page: README-sized images that show the top of the page.
    pg.set_viewport_size({"width": width, "height": height})
    pg.evaluate("window.scrollTo(0, 0)")
    target = tmp_path / name
    pg.screenshot(path=str(target))
    assert target.stat().st_size > 1000
    if os.environ.get("VA_CDS_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / name)


def test_checklist_from_a_real_hook_response_ticked_and_exported(
    server: str, page: tuple[Any, Recorder], tmp_path: Path
) -> None:
    pg, recorder = page
    with httpx.Client(base_url=server, timeout=10) as http:
        discovery = http.get("/cds-services").json()
        resp = http.post(SERVICE_URL, json=order_sign_request(discovery))
    assert resp.status_code == 200, resp.text
    link = checklist_link(resp.json()["cards"])
    assert link.startswith(f"{server}/checklist/")

    pg.goto(link)
    assert pg.title().startswith("Pre-procedure checklist")
    coag = pg.locator('[id="item-pre.coagulation"]')
    assert "To obtain" in coag.inner_text()
    assert coag.locator('a[href$="/docs/rules/pre.coag.labs-missing"]').count() == 1
    assert "Needs documentation" in pg.locator('[id="item-pre.access"]').inner_text()

    ticks = [
        "pre.access",
        "pre.cement",
        "consent.leakage",
        "consent.neural",
        "consent.infection",
        "consent.adjacent",
        "intra.timeout",
    ]
    for link_id in ticks:
        pg.locator(f'input[name="tick"][value="{link_id}"]').check()
    pg.locator('textarea[name="pre.notes"]').fill("INR and CBC drawn; results before the list")
    _shoot(pg, "checklist.png", tmp_path)
    _shoot(pg, "checklist-phone.png", tmp_path, width=412, height=900)

    with pg.expect_download() as download_info:
        pg.get_by_role("button", name="Export as FHIR QuestionnaireResponse").click()
    download = download_info.value
    assert download.suggested_filename.startswith("va-cds-checklist-")
    exported = json.loads(Path(download.path()).read_text(encoding="utf-8"))

    from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

    QuestionnaireResponse.model_validate(exported)
    assert exported["status"] == "completed"
    assert exported["questionnaire"].startswith(
        "https://va-cds.org/fhir/Questionnaire/va-cds-master-checklist|"
    )
    answers = {i["linkId"]: i["answer"][0] for g in exported["item"] for i in g["item"]}
    assert {k for k, a in answers.items() if a.get("valueBoolean") is True} == set(ticks)
    assert answers["pre.notes"] == {"valueString": "INR and CBC drawn; results before the list"}
    assert "p1" not in json.dumps(exported)

    # The print view renders without buttons.
    pg.goto(f"{link}?print=1")
    assert pg.locator("button").is_hidden()
    assert len(recorder.seen) >= 3


def test_rule_page(server: str, page: tuple[Any, Recorder], tmp_path: Path) -> None:
    pg, _ = page
    pg.goto(f"{server}/docs/rules")
    pg.get_by_role("link", name="Active anticoagulant or antiplatelet before vertebral augmentation").click()
    pg.wait_for_url(f"{server}/docs/rules/pre.coag.antithrombotic-active")
    assert pg.locator("h1").inner_text().startswith("Active anticoagulant")
    body = pg.locator("main").inner_text()
    assert "Antithrombotic hold periods" in body
    assert "apixaban" in body
    assert "SIR 2019" in body
    _shoot(pg, "rule-page.png", tmp_path)


def test_expired_link_page(server: str, page: tuple[Any, Recorder], tmp_path: Path) -> None:
    pg, _ = page
    key = tokens.derive_key(SECRET.encode())
    expired = tokens.issue(key, tokens.new_snapshot_id(), datetime.now(UTC) - timedelta(minutes=1))
    response = pg.goto(f"{server}/checklist/{expired}")
    assert response is not None and response.status == 410
    assert "expired" in pg.locator("h1").inner_text().lower()
    _shoot(pg, "expired.png", tmp_path, height=600)
    response = pg.goto(f"{server}/checklist/{expired[:-2]}xx")
    assert response is not None and response.status == 404
    assert "not recognised" in pg.locator("h1").inner_text()
