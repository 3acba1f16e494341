"""The `va-cds` command: evaluate offline (the informatics team's rule-testing tool), db upgrade, report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.cli import main
from cds_service.settings import Settings
from hooks import build_services
from hooks.policy import load_policy
from tests.net import free_port

SYNTHEA = Path(__file__).resolve().parents[1] / "fixtures" / "synthea"
HALLIE = next(SYNTHEA.glob("Hallie_Hoeger_*.json"))
LUIGI = next(SYNTHEA.glob("Luigi_Wiegand_*.json"))


def test_evaluate_bundle_with_a_va_draft_order_shows_the_warfarin_cards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["evaluate", str(HALLIE), "--draft-order", "kyphoplasty", "--now", "2020-06-01", "--format", "json"]
    )
    out = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out)  # the whole output is one JSON document
    assert payload["hook"] == "order-sign"
    cards = [c for s in payload["services"] for c in s["cards"]]
    rules = [c["extension"]["org.va-cds.rule"] for c in cards]
    findings = [f for c in cards for f in c["extension"]["org.va-cds.findings"]]
    assert "pre.coag.antithrombotic-active" in rules and "pre.coag.labs-missing" in findings
    warfarin = next(c for c in cards if c["extension"]["org.va-cds.rule"] == "pre.coag.antithrombotic-active")
    assert "warfarin" in warfarin["summary"].lower()


def test_evaluate_json_names_every_service_called_even_without_cards(capsys) -> None:
    assert main(["evaluate", str(LUIGI), "--now", "2020-06-01", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["hook"] == "patient-view" and payload["now"].startswith("2020-06-01T00:00:00")
    assert [s["id"] for s in payload["services"]] == _ids_answering("patient-view")
    assert all(s["cards"] == [] for s in payload["services"])


def test_evaluate_bundle_without_a_va_order_gives_no_cards(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(LUIGI), "--now", "2020-06-01"]) == 0
    out = capsys.readouterr().out
    assert _ids_answering("patient-view") == ["va-preprocedure-patient-view", "va-postprocedure-patient-view"]
    for sid in _ids_answering("patient-view"):
        assert f"== {sid} (patient-view)" in out
    assert "[" not in out.replace("== ", "")  # no "[WARNING]"-style card lines
    assert out.count("(no cards)") == len(_ids_answering("patient-view"))


def _ids_answering(hook: str) -> list[str]:
    return [s.id for s in build_services(load_policy(None)) if s.hook == hook]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err and "\n" not in err, captured.err  # one line, never a traceback
    assert "Traceback" not in captured.err and captured.out == ""
    assert err.startswith("va-cds evaluate: ")
    return err


@pytest.mark.parametrize(
    "now",
    ["yesterday", "2020-06-01T08:00:00+99:00", "2020-13-01", "0001-01-01T00:00:00+05:00", ""],
)
def test_evaluate_bad_now_is_a_one_line_usage_error(now: str, capsys) -> None:
    assert main(["evaluate", str(HALLIE), "--now", now]) == 2
    assert "--now" in _one_line_error(capsys)


def test_evaluate_unknown_service_lists_the_service_ids(capsys) -> None:
    assert main(["evaluate", str(HALLIE), "--service", "nope"]) == 2
    err = _one_line_error(capsys)
    assert "unknown service 'nope'" in err
    for sid in [s.id for s in build_services(load_policy(None))]:
        assert sid in err


def test_evaluate_service_that_does_not_answer_the_hook_says_which_hooks_it_answers(capsys) -> None:
    svc = next(s for s in build_services(load_policy(None)) if s.hook != "patient-view")
    assert main(["evaluate", str(HALLIE), "--service", svc.id]) == 2
    err = _one_line_error(capsys)
    assert f"does not answer hook 'patient-view'; it answers {svc.hook!r}" in err


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        ({"resourceType": "Patient", "id": "p1"}, "a FHIR Patient resource"),
        ([{"resourceType": "Bundle"}], "a JSON list"),
        ({"resource": "x"}, "a JSON object without hook or context"),
        ("just text", "a JSON value"),
    ],
)
def test_evaluate_file_of_neither_shape_names_the_two_accepted_shapes(
    doc: object, what: str, tmp_path: Path, capsys
) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(doc))
    assert main(["evaluate", str(path)]) == 2
    err = _one_line_error(capsys)
    assert what in err and "a CDS Hooks request" in err and "a FHIR Bundle" in err


@pytest.mark.parametrize(
    ("bundle", "reason"),
    [
        ({"resourceType": "Bundle", "type": "collection"}, "has no resources"),
        ({"resourceType": "Bundle", "entry": []}, "has no resources"),
        (
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition", "id": "c1"}}]},
            "no Patient resource",
        ),
        (
            {
                "resourceType": "Bundle",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "a"}},
                    {"resource": {"resourceType": "Patient", "id": "b"}},
                ],
            },
            "2 patients (a, b)",
        ),
    ],
)
def test_evaluate_empty_or_patient_less_bundle_is_an_error(
    bundle: dict, reason: str, tmp_path: Path, capsys
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    assert main(["evaluate", str(path)]) == 2
    assert reason in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--draft-order", "laminectomy"], "invalid choice: 'laminectomy'"),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--hook", "patient-view", "--draft-order", "kyphoplasty"], "--draft-order needs an order hook"),
        (["--hook", "no-such-hook"], "hook 'no-such-hook'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_evaluate_bad_arguments_are_one_line_usage_errors(args: list[str], reason: str, capsys) -> None:
    assert main(["evaluate", str(HALLIE), *args]) == 2
    assert reason in _one_line_error(capsys)


def test_evaluate_invalid_hook_request_says_what_is_wrong(tmp_path: Path, capsys) -> None:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"hook": "patient-view", "context": {"patientId": "p1"}}))
    assert main(["evaluate", str(path)]) == 2
    assert "not a valid CDS Hooks request: hookInstance" in _one_line_error(capsys)
    path.write_text(json.dumps({"hook": "patient-view", "hookInstance": "x", "context": {}}))
    assert main(["evaluate", str(path), "--draft-order", "kyphoplasty"]) == 2
    assert "--draft-order applies to a patient Bundle" in _one_line_error(capsys)


def test_evaluate_missing_file_and_missing_argument_are_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in _one_line_error(capsys)
    assert main(["evaluate"]) == 2
    assert "required: file" in _one_line_error(capsys)


def test_evaluate_hook_request_without_prefetch_or_server_reports_412(tmp_path: Path, capsys) -> None:
    request = {
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/u1",
            "patientId": "p1",
            "draftOrders": {
                "resourceType": "Bundle",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "ServiceRequest",
                            "status": "draft",
                            "intent": "order",
                            "code": {"text": "Kyphoplasty L1"},
                        }
                    }
                ],
            },
        },
    }
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request))
    assert main(["evaluate", str(path)]) == 3
    assert "412" in capsys.readouterr().err


def test_evaluate_unreadable_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["evaluate", str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_db_upgrade_then_report_through_the_cli(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert main(["report", "overrides", "--database-url", url, "--csv", "-"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("rule")  # a CSV header, no rows yet


def test_unknown_command_prints_usage(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "usage: va-cds" in capsys.readouterr().err


# ---- one default database ------------------------------------------------------------------------------


@pytest.fixture
def fresh_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with nothing in it and no database settings: the defaults apply."""
    monkeypatch.chdir(tmp_path)
    for name in ("VA_CDS_DATABASE_URL", "VA_CDS_SETTINGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_report_before_any_database_names_the_url_and_the_fix_and_creates_nothing(
    fresh_checkout: Path, capsys
) -> None:
    assert main(["report", "overrides"]) == 1
    err = capsys.readouterr().err
    assert "no database at sqlite:///./var/va-cds.db" in err
    assert "va-cds db upgrade" in err and "Traceback" not in err
    assert list(fresh_checkout.iterdir()) == []  # no empty database file, no ./var


def test_report_on_a_database_without_the_schema_says_what_to_run(tmp_path: Path, capsys) -> None:
    db = tmp_path / "other.db"
    sqlite3.connect(db).close()  # an existing, empty SQLite file
    url = f"sqlite:///{db}"
    assert main(["report", "overrides", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert f"the database at {url} has no va-cds schema" in err
    assert f"va-cds db upgrade --database-url {url}" in err


def test_serve_db_upgrade_and_report_share_one_default_database(fresh_checkout: Path, capsys) -> None:
    assert Settings().database_url == "sqlite:///./var/va-cds.db"
    with TestClient(create_app(Settings(auth_mode="off"))) as client:  # what `va-cds serve` builds
        assert client.get("/ready").status_code == 200
    assert (fresh_checkout / "var" / "va-cds.db").is_file()  # ./var created for it
    assert main(["db", "upgrade"]) == 0
    assert main(["report", "overrides"]) == 0
    assert "no cards recorded" in capsys.readouterr().out


# ---- serve stops cleanly -------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_exits_0_after_ctrl_c_or_sigterm(sig: signal.Signals, tmp_path: Path) -> None:
    """`make serve` execs `va-cds serve`: its exit status is what make reports (no `Error 130/143`)."""
    port = free_port()
    env = {**os.environ, "VA_CDS_AUTH_MODE": "off", "VA_CDS_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("va-cds serve did not become ready:\n" + log.read_text(errors="replace"))
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output


@pytest.mark.parametrize(
    "env, named",
    [
        ({"VA_CDS_AUTH_MODE": "required"}, "VA_CDS_PUBLIC_BASE_URL is required"),
        ({"VA_CDS_AUTH_MODE": "sometimes"}, "invalid setting auth_mode"),
        (
            {"VA_CDS_AUTH_MODE": "off", "VA_CDS_POLICY_FILE": "/nonexistent/policy.yaml"},
            "/nonexistent/policy.yaml",
        ),
    ],
    ids=["no-public-base-url", "bad-auth-mode", "missing-policy-file"],
)
def test_serve_refuses_a_bad_configuration_in_one_line_with_exit_2(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A start-up refusal is one line naming the setting and exit status 2, before uvicorn starts (it used
    to be a traceback from inside uvicorn's import of the app, and exit 0)."""
    for key in list(os.environ):
        if key.startswith("VA_CDS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
