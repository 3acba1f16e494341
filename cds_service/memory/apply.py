"""What memory does to this call's cards, given what the same chart was shown before. Pure: no I/O.

Memory acts only when the latest card of the same rule shown to this chart has the same fingerprint
(the evidence has not changed since), and then only earlier cards with that fingerprint count. A card
whose evidence changed since it was last shown therefore always comes back in full, as new — also when
the data later return to an earlier state (A, then B, then A again: the second A is new). With a
match, inside the policy windows:

* **Overridden** (within `override_memory_days`): a *warning* comes back as info, its detail opening
  with "Overridden on 28 Nov: <reason>; shown again if the data change" (`demoted`); on patient-view the
  policy may leave it out instead (`omitted`). A *critical* card is shown in full, the earlier override
  noted (`noted`): memory never hides or softens a critical card.
* **Accepted suggestion** (within `accepted_memory_days`): the order already accepted is not suggested
  again; the card says it was ordered, and when (`suggestion-withheld`). Critical cards keep every
  suggestion and only note the order.
* **Repeated patient-view** (within `repeat_memory_hours`): a warning whose latest showing as a warning
  was not acted on (no feedback) comes back as info (`demoted`).

Every card memory touched carries `extension["org.va-cds.memory"]`: what was remembered (outcome, date,
reason code, the earlier card's uuid) and what was done. Rules switched off in the policy are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cds_service.contracts import INDICATOR_ORDER, md_escape
from cds_service.memory.fingerprint import FINGERPRINT_KEY, MEMORY_KEY, suggestion_key
from cds_service.memory.policy import MemoryPolicy
from cds_service.models import Card, Suggestion
from cds_service.persistence.store import FeedbackSeen, RecalledCard

DEMOTED = "demoted"
WITHHELD = "suggestion-withheld"
OMITTED = "omitted"
NOTED = "noted"
PATIENT_VIEW = "patient-view"
_MAX_REASON_CHARS = 120


@dataclass(slots=True)
class MemoryOutcome:
    """The cards to return, the cards memory left out, and what memory did to each (by card uuid)."""

    cards: list[Card]
    omitted: list[Card] = field(default_factory=list)
    actions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: suggestions withheld, by rule id (for the metrics)
    withheld: dict[str, int] = field(default_factory=dict)


def rule_of(card: Card) -> str:
    return str((card.extension or {}).get("org.va-cds.rule", ""))


def fingerprint_in(card: Card) -> str | None:
    value = (card.extension or {}).get(FINGERPRINT_KEY)
    return value if isinstance(value, str) else None


def suggestion_keys(card: Card) -> list[str]:
    return [suggestion_key(s.label, _description(s)) for s in card.suggestions or ()]


def _description(s: Suggestion) -> str:
    return " | ".join(a.description for a in s.actions or ())


def day(when: datetime, now: datetime) -> str:
    """'28 Nov' (with the year when it is not the current one), in UTC."""
    text = f"{when.day} {when:%b}"
    return text if when.year == now.year else f"{text} {when.year}"


def _reason_text(card: Card, fb: FeedbackSeen) -> str:
    # Our own display for a reason we offered; else what the client sent; free text escaped and clipped.
    offered = {r.code: r.display for r in card.overrideReasons or ()}
    if fb.reason_code and fb.reason_code in offered:
        return offered[fb.reason_code]
    for text in (fb.reason_display, fb.reason_code, fb.user_comment):
        if text and text.strip():
            flat = " ".join(text.split())
            clipped = flat if len(flat) <= _MAX_REASON_CHARS else flat[: _MAX_REASON_CHARS - 1] + "…"
            return md_escape(clipped)
    return "no reason given"


def _remembered(
    outcome: str, when: datetime, earlier: RecalledCard, code: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"outcome": outcome, "date": when.isoformat(), "card": earlier.uuid}
    if code:
        entry["reasonCode"] = code
    return entry


def apply_memory(
    cards: list[Card], recalled: list[RecalledCard], hook: str, now: datetime, policy: MemoryPolicy
) -> MemoryOutcome:
    """Apply alert memory to `cards` (see the module docstring). `recalled`: this chart's earlier cards."""
    out = MemoryOutcome(cards=[])
    by_rule: dict[str, list[RecalledCard]] = {}
    for earlier in recalled:  # oldest first: the last of each rule is the latest shown
        by_rule.setdefault(earlier.rule_id, []).append(earlier)
    for card in cards:
        rule, fp = rule_of(card), fingerprint_in(card)
        shown = by_rule.get(rule) if fp and policy.applies_to(rule) else None
        # Evidence changed since the rule's latest card (or never shown): the full card, as new.
        matches = [e for e in shown if e.fingerprint == fp] if shown and shown[-1].fingerprint == fp else []
        changed = _remember(card, matches, hook, now, policy, out) if matches else None
        if changed is None:
            out.cards.append(card)
    # A demoted card now sorts with the info cards (stable: the rules' order holds within a level).
    out.cards.sort(key=lambda c: INDICATOR_ORDER[c.indicator])
    return out


def _remember(
    card: Card,
    matches: list[RecalledCard],
    hook: str,
    now: datetime,
    policy: MemoryPolicy,
    out: MemoryOutcome,
) -> Card | None:
    """Append the card as memory leaves it to `out` and return it; None when memory changes nothing."""
    override_since = now - timedelta(days=policy.override_memory_days)
    accepted_since = now - timedelta(days=policy.accepted_memory_days)
    repeat_since = now - timedelta(hours=policy.repeat_memory_hours)

    overrides = [
        (e, f)
        for e in matches
        if e.shown_at >= override_since
        for f in e.feedback
        if f.outcome == "overridden"
    ]
    override = max(overrides, key=lambda ef: ef[1].outcome_at, default=None)
    ordered: dict[str, tuple[RecalledCard, FeedbackSeen]] = {}  # suggestion key → when accepted
    for e in matches:
        if e.shown_at < accepted_since:
            continue
        keys = dict(zip(e.suggestions, e.suggestion_keys, strict=False))
        for f in e.feedback:
            if f.outcome != "accepted":
                continue
            for sid in f.accepted_suggestions:
                key = keys.get(sid)
                if key is not None and (key not in ordered or ordered[key][1].outcome_at < f.outcome_at):
                    ordered[key] = (e, f)
    repeat = None
    if hook == PATIENT_VIEW and card.indicator == "warning":
        # The last time this chart showed it as a warning, inside the window: a repeat if nobody acted on it.
        warned = [e for e in matches if e.shown_at >= repeat_since and e.indicator == "warning"]
        last = warned[-1] if warned else None
        if last is not None and not last.feedback and OMITTED not in (last.memory or ""):
            repeat = last

    notes: list[str] = []
    remembered: list[dict[str, Any]] = []
    actions: list[str] = []
    update: dict[str, Any] = {}

    if override is not None:
        earlier, fb = override
        remembered.append(_remembered("overridden", fb.outcome_at, earlier, fb.reason_code))
        reason = _reason_text(card, fb)
        if card.indicator == "critical":
            actions.append(NOTED)
            notes.append(
                f"**Overridden on {day(fb.outcome_at, now)}: {reason}.** Shown again in full because it is "
                "critical."
            )
        elif card.indicator == "warning":
            if hook == PATIENT_VIEW and policy.omit_overridden_on_patient_view:
                out.omitted.append(card)
                out.actions[str(card.uuid)] = (OMITTED,)
                return card
            actions.append(DEMOTED)
            update["indicator"] = "info"
            notes.append(
                f"**Overridden on {day(fb.outcome_at, now)}: {reason}; shown again if the data change.**"
            )
    if DEMOTED not in actions and repeat is not None and card.indicator == "warning":
        remembered.append(_remembered("shown", repeat.shown_at, repeat))
        actions.append(DEMOTED)
        update["indicator"] = "info"
        hours = f"{policy.repeat_memory_hours:g}"
        when = f"{day(repeat.shown_at, now)} at {repeat.shown_at:%H:%M} UTC"
        notes.append(
            f"**Shown on this chart on {when} with the same data and not acted on;** shown as "
            f"information until the data change or {hours} h pass."
        )

    if ordered and card.suggestions:
        keep: list[Suggestion] = []
        for suggestion, key in zip(card.suggestions, suggestion_keys(card), strict=True):
            hit = ordered.get(key)
            if hit is None:
                keep.append(suggestion)
                continue
            earlier, fb = hit
            remembered.append(_remembered("accepted", fb.outcome_at, earlier))
            label = md_escape(suggestion.label)
            if card.indicator == "critical":
                keep.append(suggestion)  # a critical card keeps every suggestion: the order may have lapsed
                if NOTED not in actions:
                    actions.append(NOTED)
                notes.append(f"**Ordered on {day(fb.outcome_at, now)}:** {label} (suggestion accepted then).")
            else:
                notes.append(
                    f"**Already ordered on {day(fb.outcome_at, now)}:** {label} (suggestion accepted then; "
                    "not suggested again while the data are unchanged)."
                )
        withheld = len(card.suggestions) - len(keep)
        if withheld:
            actions.append(WITHHELD)
            out.withheld[rule_of(card)] = out.withheld.get(rule_of(card), 0) + withheld
            update["suggestions"] = keep or None
            if not keep:
                update["selectionBehavior"] = None

    if not actions:
        return None
    extension = dict(card.extension or {})
    extension[MEMORY_KEY] = {"remembered": remembered, "actions": actions}
    update["extension"] = extension
    detail = "\n\n".join(notes)
    update["detail"] = f"{detail}\n\n{card.detail}" if card.detail else detail
    changed = card.model_copy(update=update)
    out.cards.append(changed)
    out.actions[str(card.uuid)] = tuple(actions)
    return changed
