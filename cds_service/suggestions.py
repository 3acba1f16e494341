"""Each order is suggested at most once per response (catalog V2.7), on the most severe card that needs it.

Rules suggest what their own finding needs, so two cards in one response can offer the same INR or the same
chest X-ray; a clinician who accepts both gets two orders. `dedupe_suggestions` runs over the cards of one
response, most severe first, and removes a suggested resource that an earlier card (or an earlier suggestion
of the same card) already offers. A suggestion left with no resource goes; a card whose suggestions all went
keeps its text and evidence (it still says what to do, the order button is on the louder card).

"The same order" = the same resource type and a shared code (system + code), or, for an order coded by text
alone, the same text. Nothing clinical is decided here: this is presentation, in the core, for every family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cds_service.contracts import INDICATOR_ORDER, CardSpec, SuggestionSpec

OrderKey = tuple[str, str, str]  # (resourceType, system, code) or (resourceType, "text", lowercased text)

_CODE_FIELDS = ("code", "medicationCodeableConcept")


def order_keys(resource: Mapping[str, Any]) -> frozenset[OrderKey]:
    """What makes two suggested resources the same order: their codes, else their code text."""
    rtype = str(resource.get("resourceType", ""))
    keys: set[OrderKey] = set()
    text = ""
    for name in _CODE_FIELDS:
        cc = resource.get(name)
        if not isinstance(cc, Mapping):
            continue
        for coding in cc.get("coding") or ():
            if isinstance(coding, Mapping) and coding.get("code"):
                system = str(coding.get("system") or "").strip().rstrip("/").lower()
                keys.add((rtype, system, str(coding["code"]).strip()))
        if not text and isinstance(cc.get("text"), str):
            text = " ".join(cc["text"].lower().split())
    if not keys and text:
        keys.add((rtype, "text", text))
    return frozenset(keys)


def _most_severe_first(specs: Sequence[CardSpec]) -> list[int]:
    return sorted(range(len(specs)), key=lambda i: INDICATOR_ORDER[specs[i].indicator])  # stable


def _keep(suggestion: SuggestionSpec, seen: set[OrderKey]) -> SuggestionSpec | None:
    kept: list[dict[str, Any]] = []
    for resource in suggestion.resources:
        keys = order_keys(resource)
        if keys and keys & seen:
            continue  # already offered by a more severe card (or earlier on this one)
        seen.update(keys)
        kept.append(resource)
    if not kept:
        return None
    if len(kept) == len(suggestion.resources):
        return suggestion
    return dataclasses.replace(suggestion, resources=tuple(kept))


def dedupe_suggestions(specs: Iterable[CardSpec]) -> list[CardSpec]:
    """The specs in their original order, each order suggested once: on the most severe card offering it."""
    out = list(specs)
    seen: set[OrderKey] = set()
    for i in _most_severe_first(out):
        spec = out[i]
        if not spec.suggestions:
            continue
        kept = tuple(s for s in (_keep(s, seen) for s in spec.suggestions) if s is not None)
        if kept != spec.suggestions:
            out[i] = dataclasses.replace(spec, suggestions=kept)
    return out
