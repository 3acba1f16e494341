"""Property test through HTTP (SQLite): over generated sequences of calls, feedback and elapsed time, a
card whose evidence changed since the chart last saw that rule is always shown in full, and a critical
card is always shown as critical — with the site policy that lets memory leave overridden warnings out of
patient-view, the most aggressive setting."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.memory.conftest import (
    ANTICOAG,
    INR_HIGH,
    Chart,
    Clock,
    MemoryClient,
    by_rule,
    inr,
    make_app_client,
    warfarin,
)

MEDS = {
    "none": (),
    "warfarin": (warfarin("mr1"),),
    "warfarin-on-hold": (warfarin("mr1", status="on-hold"),),
    "warfarin-new-order": (warfarin("mr2", authored="2026-11-20"),),
}
LABS = {
    "none": (),
    "inr-3.5": (inr(3.5, "inr1"),),
    "inr-4.1": (inr(4.1, "inr2", when="2026-11-27T20:00:00Z"),),
    "inr-2.0": (inr(2.0, "inr3"),),
}


@dataclass(frozen=True)
class Call:
    hook: str
    meds: str
    labs: str


@dataclass(frozen=True)
class Feedback:
    rule: str
    outcome: str  # overridden | accepted


@dataclass(frozen=True)
class Wait:
    hours: float


STEPS = st.one_of(
    st.builds(
        Call,
        hook=st.sampled_from(["order-sign", "patient-view"]),
        meds=st.sampled_from(sorted(MEDS)),
        labs=st.sampled_from(sorted(LABS)),
    ),
    st.builds(
        Feedback,
        rule=st.sampled_from([ANTICOAG, INR_HIGH]),
        outcome=st.sampled_from(["overridden", "accepted"]),
    ),
    st.builds(Wait, hours=st.sampled_from([0.5, 6, 23, 25, 24 * 29, 24 * 31])),
)


def test_changed_evidence_is_always_shown_in_full(tmp_path: Path) -> None:
    policy = Path(__file__).resolve().parents[2] / "hooks" / "policy.yaml"
    site = tmp_path / "policy.yaml"
    site.write_text(
        policy.read_text().replace(
            "  omit_overridden_on_patient_view:\n    value: false",
            "  omit_overridden_on_patient_view:\n    value: true",
        )
    )
    clock = Clock()
    with make_app_client(f"sqlite:///{tmp_path / 'db.sqlite'}", clock, tmp_path, policy_file=site) as client:
        mem = MemoryClient(client, clock)

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(steps=st.lists(STEPS, min_size=1, max_size=14))
        def run(steps: list[Call | Feedback | Wait]) -> None:
            patient = f"p-{uuid.uuid4().hex[:12]}"  # a chart of its own: memory is per patient
            last_fp: dict[str, str] = {}  # rule → fingerprint of its latest card this chart was shown
            last_card: dict[str, dict[str, Any]] = {}
            for step in steps:
                if isinstance(step, Wait):
                    clock.advance(hours=step.hours)
                elif isinstance(step, Feedback):
                    card = last_card.get(step.rule)
                    if card is None:
                        continue
                    if step.outcome == "accepted":
                        ids = [s["uuid"] for s in card.get("suggestions") or ()][:1]
                        mem.feedback(card, "accepted", accepted=ids)
                    else:
                        mem.feedback(card, "overridden", reason="not-applicable")
                else:
                    chart = Chart(patient_id=patient, meds=MEDS[step.meds], labs=LABS[step.labs])
                    cards = by_rule(mem.call(chart, step.hook))
                    fires_critical = step.labs in ("inr-3.5", "inr-4.1")
                    fires_warning = step.meds in ("warfarin", "warfarin-new-order")
                    # A critical card is always there, always critical.
                    assert (INR_HIGH in cards) == fires_critical
                    if fires_critical:
                        assert cards[INR_HIGH]["indicator"] == "critical"
                    for rule, card in cards.items():
                        fp = card["extension"]["org.va-cds.fingerprint"]
                        if last_fp.get(rule) != fp:  # evidence changed since last shown (or never shown)
                            assert "org.va-cds.memory" not in card["extension"], (steps, rule)
                            assert card["indicator"] == ("critical" if rule == INR_HIGH else "warning")
                            if rule == ANTICOAG:
                                assert len(card["suggestions"]) == 2
                        last_fp[rule] = fp
                        last_card[rule] = card
                    if fires_warning and ANTICOAG not in cards:
                        # Left out: only an overridden, unchanged warning on patient-view may be.
                        assert step.hook == "patient-view"
                        assert last_fp.get(ANTICOAG) is not None

        run()
