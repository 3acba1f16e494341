"""Synthea records (shared fixtures) as resources for extract_facts, plus a VA draft ServiceRequest."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tests.shared_paths import SYNTHEA

HALLIE = "Hallie_Hoeger_62a0b57c-4129-43d9-b787-bcf7ad4fa654.json"
LUIGI = "Luigi_Wiegand_e27d88b0-c5e5-4042-ad49-184f6a900ee3.json"
_BILLING = {"Claim", "ExplanationOfBenefit"}  # never in a prefetch


def record(name: str) -> tuple[str, list[dict[str, Any]], datetime]:
    """(patient id, clinical resources, the record's last date — used as the request time)."""
    bundle = json.loads((SYNTHEA / name).read_text())
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] not in _BILLING]
    pid = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    stamps: list[str] = []
    for r in resources:
        stamps += [
            r[k]
            for k in ("effectiveDateTime", "authoredOn", "recordedDate", "issued")
            if isinstance(r.get(k), str)
        ]
        if r["resourceType"] == "Encounter" and isinstance(r.get("period", {}).get("end"), str):
            stamps.append(r["period"]["end"])
    return pid, resources, max(datetime.fromisoformat(s) for s in stamps if "T" in s)


def va_draft(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "va-draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {
            "coding": [
                {
                    "system": "http://www.ama-assn.org/go/cpt",
                    "code": "22513",
                    "display": "Percutaneous vertebral augmentation, thoracic (kyphoplasty)",
                }
            ]
        },
    }
