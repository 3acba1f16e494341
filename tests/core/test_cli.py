"""The `va-cds` command: evaluate offline (the informatics team's rule-testing tool), db upgrade, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cli import main

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
    payload = json.loads(out.split("\n", 1)[1])  # after the "== service (hook)" header line
    rules = [c["extension"]["org.va-cds.rule"] for c in payload["cards"]]
    assert "pre.coag.antithrombotic-active" in rules and "pre.coag.labs-missing" in rules
    warfarin = next(
        c for c in payload["cards"] if c["extension"]["org.va-cds.rule"] == "pre.coag.antithrombotic-active"
    )
    assert "warfarin" in warfarin["summary"].lower()


def test_evaluate_bundle_without_a_va_order_gives_no_cards(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(LUIGI), "--now", "2020-06-01"]) == 0
    out = capsys.readouterr().out
    assert "va-preprocedure-patient-view (patient-view)" in out
    assert "va-postprocedure-patient-view (patient-view)" in out
    assert "[" not in out.replace("== ", "")  # no "[WARNING]"-style card lines
    assert out.count("(no cards)") == 2


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
