"""Benchmark inputs: Synthea records turned into order-sign requests the way an EHR would send them.

The `va-preprocedure-order-sign` service declares its prefetch keys; each key gets one searchset Bundle.
Resources are routed to keys by resourceType, and Observations by LOINC code when a key lists it, else
by category (vital-signs vs laboratory) — i.e. an EHR that does not apply the code filters, the heavy
case in which the service itself has to ignore what it does not need. Billing resources (Claim,
ExplanationOfBenefit) and types no key asks for are left out and counted. `_count` is not applied.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthea"
HEAVY_PATTERN = "Wendell_Lesch_*.json"
SERVICE_ID = "va-preprocedure-order-sign"
BILLING = frozenset({"Claim", "ExplanationOfBenefit"})
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"


def fixture_path(pattern: str = HEAVY_PATTERN, directory: Path = FIXTURES) -> Path:
    """The one Synthea file matching `pattern` (raises when none or several match)."""
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one file matching {pattern} in {directory}, found {len(found)}")
    return found[0]


def load_record(path: Path) -> list[dict[str, Any]]:
    """The resources of a Synthea transaction Bundle."""
    bundle = orjson.loads(path.read_bytes())
    return [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]


def service_prefetch(service_id: str = SERVICE_ID) -> dict[str, str]:
    """Prefetch templates of the service, read from the service definition itself."""
    from hooks import build_services
    from hooks.policy import load_policy

    for svc in build_services(load_policy()):
        if svc.id == service_id:
            return dict(svc.prefetch)
    raise LookupError(f"no service {service_id}")


@dataclass(frozen=True, slots=True)
class KeySpec:
    key: str
    resource_type: str
    is_read: bool  # `Patient/{{context.patientId}}`: answered with the resource, not a Bundle
    codes: frozenset[str]
    query: str


def parse_templates(templates: Mapping[str, str]) -> list[KeySpec]:
    """Resource type, read-vs-search and LOINC codes of each prefetch template."""
    out = []
    for key, template in templates.items():
        path, _, query = template.partition("?")
        rtype = path.split("/")[0]
        codes: set[str] = set()
        for value in parse_qs(query, keep_blank_values=True).get("code", []):
            for token in value.split(","):
                codes.add(token.rpartition("|")[2])
        out.append(KeySpec(key, rtype, "/" in path, frozenset(codes), template))
    return out


def _loinc_codes(res: Mapping[str, Any]) -> list[str]:
    cc = res.get("code")
    codings = cc.get("coding") if isinstance(cc, dict) else None
    return [str(c.get("code")) for c in codings or () if isinstance(c, dict) and c.get("code")]


def _categories(res: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for cat in res.get("category") or ():
        for coding in (cat or {}).get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                out.add(coding["code"])
    return out


@dataclass(slots=True)
class Routed:
    """Resources per prefetch key, plus what was left out and why."""

    patient: dict[str, Any]
    by_key: dict[str, list[dict[str, Any]]]
    left_out: Counter[str] = field(default_factory=Counter)

    def count(self) -> int:
        return sum(len(v) for v in self.by_key.values())

    def pool(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, resource) of every routed resource except the Patient, interleaved by key."""
        return [(k, r) for k, rs in self.by_key.items() for r in rs if r.get("resourceType") != "Patient"]


def route(resources: Iterable[dict[str, Any]], specs: list[KeySpec]) -> Routed:
    """Send each resource to the prefetch key an EHR would answer it under."""
    resources = list(resources)
    by_type: dict[str, list[KeySpec]] = {}
    for spec in specs:
        by_type.setdefault(spec.resource_type, []).append(spec)
    by_code = {code: spec.key for spec in by_type.get("Observation", []) for code in spec.codes}
    # A key's category is the majority category of the record's Observations carrying its codes.
    votes: dict[str, Counter[str]] = {s.key: Counter() for s in by_type.get("Observation", [])}
    for res in resources:
        if res.get("resourceType") == "Observation":
            for code in _loinc_codes(res):
                if code in by_code:
                    votes[by_code[code]].update(_categories(res) & {"vital-signs", "laboratory"})
    key_category = {k: (v.most_common(1)[0][0] if v else "laboratory") for k, v in votes.items()}
    obs_keys_by_cat: dict[str, list[str]] = {}
    for k, cat in key_category.items():
        obs_keys_by_cat.setdefault(cat, []).append(k)
    rr: Counter[str] = Counter()
    by_key: dict[str, list[dict[str, Any]]] = {s.key: [] for s in specs}
    left_out: Counter[str] = Counter()
    patient: dict[str, Any] | None = None
    for res in resources:
        rtype = str(res.get("resourceType"))
        if rtype in BILLING:
            left_out[f"{rtype} (billing)"] += 1
            continue
        if rtype == "Patient":
            # The heavy record's patient has a death date; a deceased patient gets no cards (catalog V2.4):
            # left in, every case would time a short-circuit instead of the full rule path.
            res = {k: v for k, v in res.items() if not k.startswith("deceased")}
            patient = res
        keys = by_type.get(rtype)
        if not keys:
            left_out[f"{rtype} (no key)"] += 1
            continue
        if rtype != "Observation":
            by_key[keys[0].key].append(res)
            continue
        matched = next((by_code[c] for c in _loinc_codes(res) if c in by_code), None)
        if matched is None:
            cats = sorted(_categories(res) & set(obs_keys_by_cat))
            if not cats:
                left_out[f"Observation ({'/'.join(sorted(_categories(res))) or 'no category'})"] += 1
                continue
            candidates = obs_keys_by_cat[cats[0]]
            matched = candidates[rr[cats[0]] % len(candidates)]  # code filter not applied: spread evenly
            rr[cats[0]] += 1
        by_key[matched].append(res)
    if patient is None:
        raise ValueError("record has no Patient")
    return Routed(patient, by_key, left_out)


def searchset(resources: list[dict[str, Any]], base: str = "https://ehr.example.org/fhir") -> dict[str, Any]:
    """A searchset Bundle as a FHIR server returns it."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/{r.get('resourceType')}/{r.get('id')}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


def prefetch_values(routed: Routed, specs: list[KeySpec]) -> dict[str, Any]:
    """Prefetch object: the Patient for the read key, one searchset Bundle per search key."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.is_read:
            out[spec.key] = routed.patient if spec.resource_type == "Patient" else None
        else:
            out[spec.key] = searchset(routed.by_key[spec.key])
    return out


def va_draft_order(patient_id: str) -> dict[str, Any]:
    """The order being signed: percutaneous vertebral augmentation (CPT 22513), draft."""
    return {
        "resourceType": "ServiceRequest",
        "id": "bench-va-draft-1",
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": CPT,
                    "code": "22513",
                    "display": "Percutaneous vertebral augmentation, thoracic",
                }
            ],
            "text": "Kyphoplasty T12",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": datetime.now().date().isoformat(),
    }


def order_sign(
    patient_id: str,
    prefetch: Mapping[str, Any] | None,
    *,
    fhir_server: str | None = None,
    hook_instance: str | None = None,
) -> dict[str, Any]:
    """An order-sign request with the VA draft order."""
    req: dict[str, Any] = {
        "hook": "order-sign",
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/bench-practitioner",
            "patientId": patient_id,
            "draftOrders": {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": va_draft_order(patient_id)}],
            },
        },
    }
    if fhir_server:
        req["fhirServer"] = fhir_server
    if prefetch is not None:
        req["prefetch"] = dict(prefetch)
    return req


# --- synthetic sizes -------------------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, days) for v in value]
    if isinstance(value, str) and _DATE.match(value) and len(value) >= 10:
        try:
            day = datetime.strptime(value[:10], "%Y-%m-%d") - timedelta(days=days)
        except ValueError:
            return value
        return day.strftime("%Y-%m-%d") + value[10:]
    return value


def _copy(res: dict[str, Any], n: int) -> dict[str, Any]:
    if n == 0:
        return res
    out = _shift(copy.deepcopy(res), 400 * n)  # older history: each copy 400 days further back
    out["id"] = f"{res.get('id')}-c{n}"
    return out


def _sample(pool: list[tuple[str, dict[str, Any]]], n: int) -> list[tuple[str, dict[str, Any]]]:
    """n items spread evenly over the pool, so the type mix is the record's."""
    if n <= 0:
        return []
    return [pool[(i * len(pool)) // n] for i in range(n)]


def resized(routed: Routed, size: int) -> Routed:
    """A patient of `size` resources (Patient included): a spread slice, or copies with new ids/dates."""
    pool = routed.pool()
    want = max(size - 1, 0)
    chosen: list[tuple[str, dict[str, Any]]] = []
    full, rest = divmod(want, len(pool))
    for n in range(full):
        chosen.extend((k, _copy(r, n)) for k, r in pool)
    chosen.extend((k, _copy(r, full)) for k, r in _sample(pool, rest))
    by_key: dict[str, list[dict[str, Any]]] = {k: [] for k in routed.by_key}
    for k, r in chosen:
        by_key[k].append(r)
    patient_key = next((k for k, v in routed.by_key.items() if routed.patient in v), None)
    if patient_key is not None:
        by_key[patient_key].insert(0, routed.patient)
    return Routed(routed.patient, by_key, routed.left_out)


@dataclass(slots=True)
class Workload:
    """Everything a case needs about one request body."""

    body: bytes
    request: dict[str, Any]
    specs: list[KeySpec]
    routed: Routed

    @property
    def resources(self) -> int:
        return self.routed.count()


def build_workload(size: int | None = None, pattern: str = HEAVY_PATTERN) -> Workload:
    """The heavy order-sign (size None: the whole record) or a resized patient of `size` resources."""
    specs = parse_templates(service_prefetch())
    routed = route(load_record(fixture_path(pattern)), specs)
    if size is not None:
        routed = resized(routed, size)
    req = order_sign(str(routed.patient["id"]), prefetch_values(routed, specs))
    return Workload(orjson.dumps(req), req, specs, routed)
