"""The `va-cds` command: evaluate offline (the informatics team's rule-testing tool), db upgrade, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service.cli import main
from hooks import build_services
from hooks.policy import load_policy

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
    assert "pre.coag.antithrombotic-active" in rules and "pre.coag.labs-missing" in rules
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
