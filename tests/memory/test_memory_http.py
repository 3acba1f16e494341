"""Alert memory end to end through HTTP, on SQLite and PostgreSQL: the issue's behaviours and its safety
cases (never hides a critical, never crosses patients, never suppresses a card whose evidence changed,
ignores feedback for an unknown card)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cds_service.logs import patient_hash
from tests.memory.conftest import (
    ANTICOAG,
    HASH_KEY,
    INR_HIGH,
    INR_ORDER,
    START,
    Chart,
    Clock,
    MemoryClient,
    by_rule,
    inr,
    make_app_client,
    warfarin,
)

FP = "org.va-cds.fingerprint"
MEMORY = "org.va-cds.memory"


def test_every_card_has_a_fingerprint_that_the_same_chart_repeats(mem: MemoryClient) -> None:
    chart = Chart(labs=(inr(3.4),))
    first = by_rule(mem.call(chart))
    again = by_rule(mem.call(chart))
    assert set(first) == {ANTICOAG, INR_HIGH}
    for rule in first:
        assert first[rule]["extension"][FP].startswith("v1.")
        assert again[rule]["extension"][FP] == first[rule]["extension"][FP]
        assert again[rule]["uuid"] != first[rule]["uuid"]
    # A new lab value, a new medication or a changed status: a new fingerprint.
    new_value = by_rule(mem.call(replace(chart, labs=(inr(3.6),))))
    assert new_value[INR_HIGH]["extension"][FP] != first[INR_HIGH]["extension"][FP]
    new_med = by_rule(mem.call(replace(chart, meds=(warfarin("mr2", authored="2026-11-20"),))))
    assert new_med[ANTICOAG]["extension"][FP] != first[ANTICOAG]["extension"][FP]
    on_hold = by_rule(mem.call(replace(chart, meds=(warfarin(status="on-hold"),))))
    assert on_hold[ANTICOAG]["extension"][FP] != first[ANTICOAG]["extension"][FP]


def test_an_overridden_warning_comes_back_as_info_until_the_data_change(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart))[ANTICOAG]
    assert first["indicator"] == "warning" and MEMORY not in first["extension"]
    assert mem.feedback(first, reason="benefit-outweighs-risk") == {"received": 1, "stored": 1}

    mem.clock.advance(days=2)
    again = by_rule(mem.call(chart))[ANTICOAG]
    assert again["indicator"] == "info"
    assert again["detail"].startswith(
        "**Overridden on 28 Nov: Benefit outweighs risk — documented; shown again if the data change.**"
    )
    assert again["extension"][MEMORY] == {
        "remembered": [
            {
                "outcome": "overridden",
                "date": "2026-11-28T09:00:00+00:00",
                "card": first["uuid"],
                "reasonCode": "benefit-outweighs-risk",
            }
        ],
        "actions": ["demoted"],
    }
    assert again["extension"][FP] == first["extension"][FP]

    # Evidence changed (a new warfarin order): the full card, as new.
    changed = by_rule(mem.call(replace(chart, meds=(warfarin("mr9", authored="2026-11-29"),))))[ANTICOAG]
    assert changed["indicator"] == "warning" and MEMORY not in changed["extension"]
    assert len(changed["suggestions"]) == 2
    # Back to the data that were overridden: still a change since the card was last shown, so in full.
    back = by_rule(mem.call(chart))[ANTICOAG]
    assert back["indicator"] == "warning" and MEMORY not in back["extension"]

    # Past override_memory_days (30 by default) the unchanged card is a warning again.
    mem.clock.advance(days=29)
    late = by_rule(mem.call(chart))[ANTICOAG]
    assert late["indicator"] == "warning" and MEMORY not in late["extension"]


def test_memory_never_hides_or_softens_a_critical_card(mem: MemoryClient) -> None:
    chart = Chart(meds=(), labs=(inr(4.2),))
    first = by_rule(mem.call(chart))[INR_HIGH]
    assert first["indicator"] == "critical"
    mem.feedback(first, reason="not-applicable")
    mem.clock.advance(hours=3)
    for hook in ("order-sign", "patient-view"):
        again = by_rule(mem.call(chart, hook))[INR_HIGH]
        assert again["indicator"] == "critical"
        assert again["summary"] == first["summary"]
        assert again["detail"].startswith(
            "**Overridden on 28 Nov: Not applicable to this patient.** Shown again"
        )
        assert again["extension"][MEMORY]["actions"] == ["noted"]


def test_memory_never_crosses_patients(mem: MemoryClient) -> None:
    first = by_rule(mem.call(Chart(patient_id="p1")))[ANTICOAG]
    mem.feedback(first)
    other = by_rule(mem.call(Chart(patient_id="p2")))[ANTICOAG]
    # Same rule, same medication resource, same fingerprint — but another patient's chart.
    assert other["extension"][FP] == first["extension"][FP]
    assert other["indicator"] == "warning" and MEMORY not in other["extension"]
    assert by_rule(mem.call(Chart(patient_id="p1")))[ANTICOAG]["indicator"] == "info"


def test_feedback_for_an_unknown_card_is_stored_but_never_used(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart))[ANTICOAG]
    fake = {"uuid": "5f0c6d3e-1c1e-4a57-9a43-0d7b7a1c2b11"}
    assert mem.feedback(fake) == {"received": 1, "stored": 1}  # kept, as acknowledged feedback always is
    again = by_rule(mem.call(chart))[ANTICOAG]
    assert again["indicator"] == "warning" and MEMORY not in again["extension"]
    assert again["extension"][FP] == first["extension"][FP]


def test_an_accepted_order_is_not_suggested_again_on_the_same_data(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart))[ANTICOAG]
    inr_suggestion = next(s for s in first["suggestions"] if s["label"] == INR_ORDER)
    mem.feedback(first, "accepted", accepted=[inr_suggestion["uuid"]])

    mem.clock.advance(days=1)
    again = by_rule(mem.call(chart))[ANTICOAG]
    assert [s["label"] for s in again["suggestions"]] == ["Order platelet count"]
    assert again["indicator"] == "warning"  # accepted, not overridden: still a warning
    assert "**Already ordered on 28 Nov:** Order INR" in again["detail"]
    memory = again["extension"][MEMORY]
    assert memory["actions"] == ["suggestion-withheld"]
    assert memory["remembered"][0]["outcome"] == "accepted"

    # Both accepted: no suggestion left, and so no selectionBehavior either (the card stays spec-valid).
    platelets = again["suggestions"][0]
    mem.feedback(again, "accepted", accepted=[platelets["uuid"]])
    third = by_rule(mem.call(chart))[ANTICOAG]
    assert "suggestions" not in third and "selectionBehavior" not in third
    assert third["detail"].count("Already ordered on") == 2

    # New evidence: everything is suggested again.
    changed = by_rule(mem.call(replace(chart, meds=(warfarin("mr7", authored="2026-11-29"),))))[ANTICOAG]
    assert len(changed["suggestions"]) == 2


def test_a_repeated_patient_view_warning_not_acted_on_comes_back_as_info(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart, "patient-view"))[ANTICOAG]
    assert first["indicator"] == "warning"
    mem.clock.advance(hours=5)
    second = by_rule(mem.call(chart, "patient-view"))[ANTICOAG]
    assert second["indicator"] == "info"
    assert second["detail"].startswith("**Shown on this chart on 28 Nov at 09:00 UTC with the same data")
    assert second["extension"][MEMORY]["remembered"][0]["outcome"] == "shown"
    # Order-sign is not a chart opening: the warning is shown in full there (and that counts as shown).
    mem.clock.advance(hours=1)
    assert by_rule(mem.call(chart, "order-sign"))[ANTICOAG]["indicator"] == "warning"
    mem.clock.advance(hours=20)  # 26 h after the first, 20 h after the order-sign warning
    assert by_rule(mem.call(chart, "patient-view"))[ANTICOAG]["indicator"] == "info"
    # 24 h after the last time it was shown as a warning, it is a warning again...
    mem.clock.advance(hours=5)
    third = by_rule(mem.call(chart, "patient-view"))[ANTICOAG]
    assert third["indicator"] == "warning"
    # ...and a changed chart is always a full warning.
    mem.clock.advance(hours=1)
    changed = mem.call(replace(chart, meds=(warfarin(status="on-hold"),)), "patient-view")
    assert by_rule(changed)[ANTICOAG]["indicator"] == "warning"


def test_policy_may_leave_an_overridden_warning_out_of_patient_view(
    db_url: str, clock: Clock, tmp_path: Path
) -> None:
    policy = Path(__file__).resolve().parents[2] / "hooks" / "policy.yaml"
    text = policy.read_text().replace(
        "  omit_overridden_on_patient_view:\n    value: false",
        "  omit_overridden_on_patient_view:\n    value: true",
    )
    assert "value: true" in text
    site = tmp_path / "policy.yaml"
    site.write_text(text)
    with make_app_client(db_url, clock, tmp_path, policy_file=site) as client:
        mem = MemoryClient(client, clock)
        chart = Chart(labs=(inr(3.5),))
        first = by_rule(mem.call(chart))
        mem.feedback(first[ANTICOAG])
        mem.feedback(first[INR_HIGH])
        clock.advance(hours=1)
        view = by_rule(mem.call(chart, "patient-view"))
        assert ANTICOAG not in view  # left out entirely
        assert view[INR_HIGH]["indicator"] == "critical"  # never a critical
        sign = by_rule(mem.call(chart, "order-sign"))
        assert sign[ANTICOAG]["indicator"] == "info"  # only patient-view omits
        metrics = client.get("/metrics").text
        assert f'va_cds_memory_omitted_total{{rule="{ANTICOAG}"}} 1.0' in metrics


def test_memory_can_be_switched_off_per_rule(db_url: str, clock: Clock, tmp_path: Path) -> None:
    policy = Path(__file__).resolve().parents[2] / "hooks" / "policy.yaml"
    text = policy.read_text().replace(
        "  rules_off:\n", f'  rules_off:\n    {ANTICOAG}: "this site wants it every time"\n'
    )
    site = tmp_path / "policy.yaml"
    site.write_text(text)
    with make_app_client(db_url, clock, tmp_path, policy_file=site) as client:
        mem = MemoryClient(client, clock)
        first = by_rule(mem.call(Chart()))[ANTICOAG]
        mem.feedback(first)
        again = by_rule(mem.call(Chart()))[ANTICOAG]
        assert again["indicator"] == "warning" and MEMORY not in again["extension"]
        page = client.get(f"/docs/rules/{ANTICOAG}")
        assert page.status_code == 200
        assert "this site wants it every time" in page.text


def test_a_chart_busier_than_max_calls_forgets_and_shows_the_card_in_full(
    db_url: str, clock: Clock, tmp_path: Path
) -> None:
    # memory.max_calls bounds each lookup to the chart's latest calls: what lies beyond is forgotten, which
    # can only bring a card back in full, never hide one.
    policy = Path(__file__).resolve().parents[2] / "hooks" / "policy.yaml"
    text = policy.read_text()
    assert "  max_calls:\n    value: 200\n" in text
    site = tmp_path / "policy.yaml"
    site.write_text(text.replace("  max_calls:\n    value: 200\n", "  max_calls:\n    value: 3\n"))
    with make_app_client(db_url, clock, tmp_path, policy_file=site) as client:
        mem = MemoryClient(client, clock)
        first = by_rule(mem.call(Chart()))[ANTICOAG]
        mem.feedback(first)
        assert by_rule(mem.call(Chart()))[ANTICOAG]["indicator"] == "info"  # the override is remembered
        for _ in range(2):
            mem.call(Chart())
        # The override's call is now the 4th most recent: beyond the latest 3, so the warning is back in full.
        again = by_rule(mem.call(Chart()))[ANTICOAG]
        assert again["indicator"] == "warning" and MEMORY not in again["extension"]
        page = client.get(f"/docs/rules/{ANTICOAG}")
        assert "latest 3 calls" in page.text


def test_without_a_stable_hash_key_memory_is_off_and_start_up_says_so(
    db_url: str, clock: Clock, tmp_path: Path, caplog: object
) -> None:
    import logging

    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    if db_url.startswith("postgresql"):
        # A PostgreSQL URL means replicas may share the database: start-up refuses without the shared keys
        # (issue 17, cds_service/scale.py) before memory is even considered.
        from cds_service.scale import MissingSharedKeys

        with pytest.raises(MissingSharedKeys, match="VA_CDS_PATIENT_HASH_KEY"):
            make_app_client(db_url, clock, tmp_path, patient_hash_key=None)
        return
    with caplog.at_level(logging.WARNING, logger="va_cds.memory"):
        client = make_app_client(db_url, clock, tmp_path, patient_hash_key=None)
    said = [r.getMessage() for r in caplog.records if r.name == "va_cds.memory"]
    assert len(said) == 1 and "alert memory is OFF" in said[0] and "VA_CDS_PATIENT_HASH_KEY" in said[0]
    with client:
        mem = MemoryClient(client, clock)
        first = by_rule(mem.call(Chart()))[ANTICOAG]
        assert first["extension"][FP]  # fingerprints are still there
        mem.feedback(first)
        assert by_rule(mem.call(Chart()))[ANTICOAG]["indicator"] == "warning"


def test_metrics_count_demoted_cards_and_withheld_suggestions_by_rule(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart))[ANTICOAG]
    mem.feedback(first, "accepted", accepted=[first["suggestions"][0]["uuid"]])
    mem.feedback(first, "overridden")
    mem.call(chart)
    mem.call(chart)
    text = mem.http.get("/metrics").text
    assert f'va_cds_memory_demoted_total{{rule="{ANTICOAG}"}} 2.0' in text
    assert f'va_cds_memory_suggestions_withheld_total{{rule="{ANTICOAG}"}} 2.0' in text


def test_audit_rows_keep_fingerprint_and_what_memory_did(mem: MemoryClient) -> None:
    chart = Chart()
    first = by_rule(mem.call(chart))[ANTICOAG]
    first_audit = mem.state.store.find_audit(mem.last_hook_instance)
    mem.feedback(first)
    again = by_rule(mem.call(chart))[ANTICOAG]
    again_audit = mem.state.store.find_audit(mem.last_hook_instance)
    assert (
        first_audit.cards[0]["fingerprint"] == again_audit.cards[0]["fingerprint"] == first["extension"][FP]
    )
    assert "memory" not in first_audit.cards[0]
    assert (again_audit.cards[0]["memory"], again_audit.cards[0]["indicator"]) == ("demoted", "info")
    assert len(again_audit.cards[0]["suggestion_keys"]) == 2

    # The lookup itself: the overridden card, with its feedback, bound to this chart.
    rows = mem.state.store.recall(
        patient_hash(HASH_KEY.encode(), "p1"), "", "", {ANTICOAG: first["extension"][FP]}, START, None
    )
    assert [r.uuid for r in rows] == [first["uuid"]]
    assert rows[0].feedback[0].reason_code == "benefit-outweighs-risk"
    assert again["uuid"] != first["uuid"]
    other_chart = mem.state.store.recall(
        patient_hash(HASH_KEY.encode(), "p2"), "", "", {ANTICOAG: first["extension"][FP]}, START, None
    )
    assert other_chart == []


def test_cards_memory_changed_match_the_openapi_document(mem: MemoryClient) -> None:
    from tests.core.test_openapi import component, errors

    chart = Chart(labs=(inr(3.4),))
    first = by_rule(mem.call(chart))
    mem.feedback(first[INR_HIGH])
    mem.feedback(first[ANTICOAG], "accepted", accepted=[first[ANTICOAG]["suggestions"][0]["uuid"]])
    mem.feedback(first[ANTICOAG])
    cards = mem.call(chart)
    actions = {c["extension"]["org.va-cds.rule"]: c["extension"][MEMORY]["actions"] for c in cards}
    assert actions == {ANTICOAG: ["demoted", "suggestion-withheld"], INR_HIGH: ["noted"]}
    card_schema = component("Card")
    for card in [*first.values(), *cards]:
        assert errors(card_schema, card) == []
