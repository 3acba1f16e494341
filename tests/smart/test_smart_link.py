"""The `pre.checklist` card's link: absolute without a SMART client, smart (launch URL + checklist token as
appContext) with one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.checklist.service import LINK_LABEL
from cds_service.settings import Settings
from tests.pages.helpers import SERVICE_URL, Clock, checklist_card, order_sign_request


def _links(tmp_path: Path, **settings: Any) -> list[dict[str, Any]]:
    app = create_app(
        Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/t.db", **settings),  # type: ignore[call-arg]
        clock=Clock(),
    )
    with TestClient(app) as c:
        resp = c.post(SERVICE_URL, json=order_sign_request(c.get("/cds-services").json()))
        assert resp.status_code == 200
        return list(checklist_card(resp.json()["cards"])["links"])


def test_absolute_link_without_a_smart_client(tmp_path: Path) -> None:
    (link,) = [x for x in _links(tmp_path) if x["label"] == LINK_LABEL]
    assert link["type"] == "absolute" and link["url"].startswith("http://testserver/checklist/")
    assert "appContext" not in link


def test_smart_link_defaults_to_the_launch_route_under_the_public_base(tmp_path: Path) -> None:
    links = _links(tmp_path, smart_client_id="va-cds", public_base_url="https://cds.example.org")
    (link,) = [x for x in links if x["label"] == LINK_LABEL]
    assert link["type"] == "smart" and link["url"] == "https://cds.example.org/smart/launch"
    assert len(link["appContext"]) == 55
    assert not any("/checklist/" in x["url"] for x in links)  # the capability URL is not handed out


def test_smart_launch_url_can_be_set(tmp_path: Path) -> None:
    links = _links(tmp_path, smart_client_id="va-cds", smart_launch_url="https://apps.example.org/va/launch")
    assert any(x["url"] == "https://apps.example.org/va/launch" and x["type"] == "smart" for x in links)
