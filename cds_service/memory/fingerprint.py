"""The evidence fingerprint of a card: same rule on the same data → same fingerprint, any change → new.

Computed from the built card (so it covers exactly what the clinician is shown): the rule id, the
indicator the rule chose, the summary, the `org.va-cds.evidence` entries (the FHIR reference and the
summary that carries the value, the date and the status, plus any further keys an entry has, such as a
version) as a set, the policy values used and the findings, if the card has them. Uuids, links, the detail
text and the citation are left out: they change between calls (or releases) without the data changing.

The hash is SHA-256 over canonical JSON, truncated to 128 bits and prefixed with a scheme version, so a
later change of what goes in never matches an old fingerprint (it only shows a card once more in full).
It contains nothing about the patient beyond what is in the response itself, and cannot be reversed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from cds_service.models import Card

FINGERPRINT_KEY = "org.va-cds.fingerprint"
MEMORY_KEY = "org.va-cds.memory"
SCHEME = "v1"

#: the extensions that describe the data a card was built from (any others are presentation)
_DATA_KEYS = ("org.va-cds.rule", "org.va-cds.evidence", "org.va-cds.policy", "org.va-cds.findings")


def _canonical(value: Any) -> bytes:
    # Sorted keys and no whitespace: the same content is the same bytes whatever order it was built in.
    # Non-JSON leaves (dates, Decimals in policy values) are written as text rather than refused.
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def fingerprint_of(indicator: str, summary: str, extension: Mapping[str, Any]) -> str:
    """The fingerprint of a card with this indicator, summary and extensions."""
    content: dict[str, Any] = {"indicator": indicator, "summary": summary}
    for key in _DATA_KEYS:
        if key in extension:
            content[key] = extension[key]
    evidence = content.get("org.va-cds.evidence")
    if isinstance(evidence, list):
        # A set: the same facts listed in another order are the same evidence.
        content["org.va-cds.evidence"] = sorted({_canonical(e).decode() for e in evidence})
    digest = hashlib.sha256(_canonical(content)).hexdigest()[:32]
    return f"{SCHEME}.{digest}"


def card_fingerprint(card: Card) -> str:
    """The fingerprint of a built card (its own fingerprint extension, if any, is not part of it)."""
    return fingerprint_of(card.indicator, card.summary, card.extension or {})


def with_fingerprint(card: Card) -> Card:
    """`card` with `extension["org.va-cds.fingerprint"]` set (in place; returned for chaining)."""
    if card.extension is None:
        card.extension = {}
    card.extension[FINGERPRINT_KEY] = card_fingerprint(card)
    return card


def suggestion_key(label: str, description: str) -> str:
    """A stable key for a suggestion (its uuid is new on every call): what it offers, hashed."""
    return hashlib.sha256(_canonical([label, description])).hexdigest()[:16]
