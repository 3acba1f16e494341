"""The SMART checklist over HTTP against the test EHR (authlib's authorization server, a token-enforcing,
validating FHIR endpoint): the happy path and each way a launch or a filing must be refused."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from cds_service.checklist import token as tokens
from cds_service.logs import patient_hash
from tests.core.test_openapi import assert_documented
from tests.smart.conftest import SECRET, App
from tests.smart.ehr import Ehr
from tests.smart.flow import authorize, browser, csrf, launch, launched, smart_link

TICKS = ["pre.access", "consent.leakage", "intra.timeout"]


def _rows(app: App, table: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(app.database_url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    finally:
        engine.dispose()


def _file(http: httpx.Client, app: App, page: str, ticks: list[str], note: str = "") -> httpx.Response:
    form = [("csrf", csrf(page)), ("action", "file"), *(("tick", t) for t in ticks)]
    if note:
        form.append(("pre.notes", note))
    return http.post(
        f"{app.base}/smart/file",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_card_offers_a_smart_link_carrying_only_the_checklist_token(app: App) -> None:
    link = smart_link(app)
    assert link["url"] == app.launch_url
    # Exactly a checklist token (random snapshot id, expiry, MAC): nothing about the patient.
    claims = tokens.verify(tokens.derive_key(SECRET.encode()), link["appContext"], app.clock())
    assert len(link["appContext"]) == 55 and len(claims.snapshot_id) == 32
    assert set(link) == {"label", "url", "type", "appContext"}


def test_launch_authorize_banner_file_and_read_back(
    app: App, ehr: Ehr, caplog: pytest.LogCaptureFixture
) -> None:
    link = smart_link(app)
    caplog.set_level(logging.INFO)
    with browser() as http:
        redirect = launch(http, app, ehr, link)
        assert redirect.status_code == 302
        assert_documented(redirect, "/smart/launch", "get")
        query = dict(parse_qsl(urlsplit(redirect.headers["location"]).query))
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["aud"] == ehr.fhir_base and query["scope"].split() == [
            "launch",
            "openid",
            "fhirUser",
            "patient/Patient.r",
            "patient/QuestionnaireResponse.c",
        ]
        cookie = redirect.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/smart" in cookie
        back = http.get(authorize(http, redirect).headers["location"])
        assert back.status_code == 303 and back.headers["location"] == f"{app.base}/smart/checklist"
        assert_documented(back, "/smart/callback", "get")
        page = http.get(back.headers["location"])
        assert page.status_code == 200
        assert_documented(page, "/smart/checklist", "get")
        assert "Marta Testwoman" in page.text and "1948-03-02" in page.text and "MRN-400117" in page.text
        assert page.headers["cache-control"] == "no-store"
        filed = _file(http, app, page.text, TICKS, "Consent signed")
        assert filed.status_code == 200, filed.text
        assert_documented(filed, "/smart/file", "post")
        assert "Checklist filed in the chart" in filed.text
        # The session ended with the filing: its token is gone.
        assert http.get(f"{app.base}/smart/checklist").status_code == 403

    (rid,) = [rid for rid in ehr.resources if rid in filed.text]
    assert 'id="resource-version">1<' in filed.text
    reader = ehr.issue_token("p1", "patient/QuestionnaireResponse.r")
    got = httpx.get(
        f"{ehr.fhir_base}/QuestionnaireResponse/{rid}", headers={"Authorization": f"Bearer {reader}"}
    )
    assert got.status_code == 200
    qr = got.json()
    assert qr["status"] == "completed" and qr["subject"] == {"reference": "Patient/p1"}
    assert qr["author"] == {"reference": "Practitioner/doc-1"}  # fhirUser from the id_token
    assert qr["questionnaire"] == "https://va-cds.org/fhir/Questionnaire/va-cds-master-checklist|1.0.0"
    answers = {i["linkId"]: i["answer"][0] for g in qr["item"] for i in g["item"]}
    assert {k for k, a in answers.items() if a.get("valueBoolean") is True} == set(TICKS)
    assert answers["pre.notes"] == {"valueString": "Consent signed"}

    # The audit line: hook instance, patient hash, resource; no answers, no patient id.
    (line,) = [r for r in _rows(app, "checklist_filing") if rid in r["resource"]]
    assert line["patient_hash"] == patient_hash(SECRET.encode(), "p1")
    assert line["resource"] == f"QuestionnaireResponse/{rid}/_history/1"
    assert _rows(app, "smart_launch_session") == [] or all(
        r["phase"] != "active" for r in _rows(app, "smart_launch_session")
    )
    # Nothing in the logs or the database carries the access token or the patient's details.
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    for secret in [t for t in ehr.tokens if ehr.tokens[t].client_id != "test-reader"] + [
        "Testwoman",
        "MRN-400117",
    ]:
        assert secret not in logged
        assert all(secret.encode() not in (r["sealed"] or b"") for r in _rows(app, "smart_launch_session"))


def test_token_is_sealed_in_the_session_row(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        assert launched(http, app, ehr, link).status_code == 303
        rows = [r for r in _rows(app, "smart_launch_session") if r["phase"] == "active"]
        assert rows
        issued = [t.encode() for t, tok in ehr.tokens.items() if tok.client_id != "test-reader"]
        for row in rows:
            assert not any(t in row["sealed"] for t in issued)
            assert b"p1" not in row["sealed"]


def test_wrong_patient_is_refused_and_nothing_is_written(app: App, ehr: Ehr) -> None:
    link = smart_link(app, patient="p1")
    before = dict(ehr.resources)
    with browser() as http:
        answer = launched(http, app, ehr, link, patient="p2")
        assert answer.status_code == 403
        assert_documented(answer, "/smart/callback", "get")
        assert "Wrong patient" in answer.text and "nothing was written" in answer.text
        assert "Otherman" not in answer.text  # no banner, no patient details on the refusal
        assert http.get(f"{app.base}/smart/checklist").status_code == 403
    assert ehr.resources == before


def test_expired_launch_is_refused(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        redirect = launch(http, app, ehr, link)
        back = authorize(http, redirect)
        app.clock.advance(601)  # past VA_CDS_SMART_LAUNCH_TTL_S (600 s)
        before = ehr.token_requests
        answer = http.get(back.headers["location"])
        assert answer.status_code == 410 and "Launch expired" in answer.text
        assert_documented(answer, "/smart/callback", "get")
        assert ehr.token_requests == before  # the code was never exchanged


def test_replayed_state_is_refused(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        back = authorize(http, launch(http, app, ehr, link))
        assert http.get(back.headers["location"]).status_code == 303
        before = ehr.token_requests
        replay = http.get(back.headers["location"])
        assert replay.status_code == 400 and "already used" in replay.text
        assert ehr.token_requests == before
    # The same state from another browser (no session cookie) is refused too.
    with browser() as other:
        answer = other.get(back.headers["location"])
        assert answer.status_code == 400 and "no launch in this browser" in answer.text


def test_state_of_another_launch_is_refused(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        back = authorize(http, launch(http, app, ehr, link))
        forged = back.headers["location"].replace("state=", "state=x")
        answer = http.get(forged)
        assert answer.status_code == 400 and "does not match this launch" in answer.text


def test_code_without_pkce_verifier_is_refused_by_the_authorization_server(app: App, ehr: Ehr) -> None:
    """The code alone is useless: the EHR's token endpoint (authlib) refuses it without the verifier,
    so a code stolen from the redirect cannot be redeemed by anyone but the launching session."""
    link = smart_link(app)
    with browser() as http:
        back = authorize(http, launch(http, app, ehr, link))
        code = dict(parse_qsl(urlsplit(back.headers["location"]).query))["code"]
        stolen = httpx.post(
            f"{ehr.base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": "va-cds-checklist",
                "redirect_uri": f"{app.base}/smart/callback",
            },
        )
        assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_request"
        assert "code_verifier" in stolen.json()["error_description"]
        wrong = httpx.post(
            f"{ehr.base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": "va-cds-checklist",
                "redirect_uri": f"{app.base}/smart/callback",
                "code_verifier": "x" * 64,
            },
        )
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        # The rightful session still completes with its own verifier.
        assert http.get(back.headers["location"]).status_code == 303


def test_token_without_write_scope_cannot_file(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        answer = launched(http, app, ehr, link, withhold=frozenset({"patient/QuestionnaireResponse.c"}))
        page = http.get(answer.headers["location"])
        assert page.status_code == 200
        assert 'id="no-write"' in page.text and "File in chart" not in page.text
        assert "Download as FHIR QuestionnaireResponse" in page.text
        before = dict(ehr.resources)
        refused = _file(http, app, page.text, TICKS)
        assert refused.status_code == 403 and "Not permitted to file" in refused.text
        assert ehr.resources == before
    # And the FHIR endpoint itself would refuse such a token (it enforces scopes).
    token = ehr.issue_token("p1", "patient/Patient.r")
    direct = httpx.post(
        f"{ehr.fhir_base}/QuestionnaireResponse",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        content=b"{}",
    )
    assert direct.status_code == 403


def test_ehr_422_is_shown_in_plain_words_with_the_answers_kept(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        page = http.get(launched(http, app, ehr, link).headers["location"])
        ehr.fail_next_write = 422
        failed = _file(http, app, page.text, TICKS, "Keep this note")
        assert failed.status_code == 502
        assert_documented(failed, "/smart/file", "post")
        assert "The checklist was not filed" in failed.text
        assert "refused it (HTTP 422)" in failed.text
        assert "Questionnaire version not accepted by this EHR" in failed.text
        for tick in TICKS:
            assert f'value="{tick}" checked' in failed.text
        assert "Keep this note</textarea>" in failed.text
        assert "Try filing again" in failed.text and "Download as FHIR QuestionnaireResponse" in failed.text
        # Retry works from the page as shown.
        again = _file(http, app, failed.text, TICKS, "Keep this note")
        assert again.status_code == 200 and "Checklist filed in the chart" in again.text


def test_fhir_base_not_in_the_trust_file_is_refused(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    launch_id = ehr.new_launch("p1", link["appContext"])
    before = ehr.discovery_requests
    with browser() as http:
        for iss in (
            "https://evil.example/fhir",
            ehr.fhir_base + "2",  # another base path on the trusted host
            ehr.fhir_base.replace("127.0.0.1", "localhost"),  # same machine, another host name
            ehr.fhir_base + "?x=1",
        ):
            answer = http.get(link["url"], params={"iss": iss, "launch": launch_id})
            assert answer.status_code == 403, iss
            assert_documented(answer, "/smart/launch", "get")
            assert "not trusted" in answer.text
            assert "set-cookie" not in answer.headers
    assert ehr.discovery_requests == before  # nothing was fetched from an untrusted server


def test_checklist_and_file_without_a_session_are_refused(app: App) -> None:
    with browser() as http:
        assert http.get(f"{app.base}/smart/checklist").status_code == 403
        assert http.post(f"{app.base}/smart/file", data={"tick": "pre.access"}).status_code == 403
        assert http.get(f"{app.base}/smart/launch").status_code == 400
        assert http.get(f"{app.base}/smart/callback").status_code == 400


def test_filing_without_the_csrf_token_is_refused(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        page = http.get(launched(http, app, ehr, link).headers["location"])
        assert page.status_code == 200
        before = dict(ehr.resources)
        forged = http.post(f"{app.base}/smart/file", data={"tick": "pre.access", "csrf": "0" * 64})
        assert forged.status_code == 403 and "CSRF" in forged.text
        missing = http.post(f"{app.base}/smart/file", data={"tick": "pre.access"})
        assert missing.status_code == 400
        assert ehr.resources == before


def test_launch_session_whose_verifier_is_gone_is_refused_without_a_token_request(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        back = authorize(http, launch(http, app, ehr, link))
        engine = sa.create_engine(app.database_url)
        with engine.begin() as conn:  # the sealed verifier lost (or tampered with) in the database
            conn.execute(
                sa.text("UPDATE smart_launch_session SET sealed = :x WHERE phase = 'launching'"),
                {"x": b"\0" * 40},
            )
        engine.dispose()
        before = ehr.token_requests
        answer = http.get(back.headers["location"])
        assert answer.status_code == 400 and "PKCE verifier" in answer.text
        assert ehr.token_requests == before


def test_launched_session_expires(app: App, ehr: Ehr) -> None:
    link = smart_link(app)
    with browser() as http:
        page_url = launched(http, app, ehr, link).headers["location"]
        assert http.get(page_url).status_code == 200
        app.clock.advance(3601)  # past VA_CDS_SMART_SESSION_TTL_S
        expired = http.get(page_url)
        assert expired.status_code == 410 and "expired" in expired.text
        assert http.get(page_url).status_code == 403  # and the row is gone with its token


def test_banner_the_ehr_will_not_give_is_a_visible_warning(app: App, ehr: Ehr) -> None:
    link = smart_link(app, patient="p3")  # the EHR has no Patient p3 to show
    with browser() as http:
        page = http.get(launched(http, app, ehr, link, patient="p3").headers["location"])
        assert page.status_code == 200
        assert "Patient details could not be read from the EHR" in page.text
        assert "confirm the patient in the EHR before filing" in page.text
