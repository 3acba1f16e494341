"""Alert burden on real-format charts: `python -m benchmarks.burden` (or `make burden`).

Every Synthea fixture record (tests/fixtures/synthea) goes through the real app in-process (TestClient,
auth off, a throw-away SQLite file) as the EHR would call it:

- a VA **order-sign** (`va-preprocedure-order-sign`): a draft kyphoplasty ServiceRequest with no
  occurrence date, as most orders are placed;
- **patient-view** on both the pre- and the post-procedure service;
- **encounter-start** (post-procedure) and **encounter-discharge** on the record's last encounter.

Each record is evaluated "as of" its own last clinical date (the records end 2019–2021; tests/pre/synthea.py
picks the same date), so windows such as "INR within 30 days" mean what they would have meant that day.
Prefetch is filled the way an EHR applies each template: resources by type, Observations by the template's
LOINC codes or category.

Printed and written to `benchmarks/results/burden.md`: cards per call, interruptive (warning + critical)
cards per VA order (min / median / max), every critical card with the age of its newest evidence, the top
rules, and whether the targets are met:
- median interruptive cards per VA order <= 1 on ordinary charts (catalog V2.2);
- no critical card whose newest evidence is older than the rule's window (a decades-old paralysis read as
  a new deficit was the only critical card v1 raised on real charts).
The figures are reported, not asserted: tests pin behaviour, this report shows the burden.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "synthea"
RESULTS = Path(__file__).resolve().parent / "results" / "burden.md"
BILLING = frozenset({"Claim", "ExplanationOfBenefit"})
INTERRUPTIVE = frozenset({"warning", "critical"})
CPT = "http://www.ama-assn.org/go/cpt"

# (label, service id, hook): the calls made for every record, in this order.
CALLS: tuple[tuple[str, str, str], ...] = (
    ("VA order-sign", "va-preprocedure-order-sign", "order-sign"),
    ("patient-view (pre)", "va-preprocedure-patient-view", "patient-view"),
    ("patient-view (post)", "va-postprocedure-patient-view", "patient-view"),
    ("encounter-start", "va-postprocedure-encounter-start", "encounter-start"),
    ("encounter-discharge", "va-discharge", "encounter-discharge"),
)
ORDER_CALL = CALLS[0][0]

# How old the newest evidence of a critical card may be (days before the as-of date): the longest window the
# catalog gives the rule (V2.5, V2.6, V2.12). Rules without a time window (allergies) are not checked.
CRITICAL_WINDOW_DAYS: dict[str, int] = {
    "pre.infection.active": 30,  # fever 72 h, culture 14 d, systemic infection onset 30 d
    "pre.coag.labs-out-of-range": 30,
    "pre.indication.neuro-red-flags": 90,  # neuro_new_days
    "post.pce.suspected": 30,
    "post.neuro.deficit": 90,
    "post.infection.suspected": 90,
    "post.hemorrhage.suspected": 30,
    "post.pleural.suspected": 7,
    "post.hypersensitivity": 2,
}
_TIME_FIELDS = (
    "effectiveDateTime",
    "effectiveInstant",
    "onsetDateTime",
    "performedDateTime",
    "occurrenceDateTime",
    "authoredOn",
    "recordedDate",
    "issued",
    "started",
)
_PERIOD_FIELDS = ("effectivePeriod", "onsetPeriod", "performedPeriod", "period")


# ------------------------------------------------------------------------------------------- the records
@dataclass(slots=True)
class Record:
    name: str
    patient_id: str
    resources: list[dict[str, Any]]
    as_of: datetime
    encounter_id: str | None
    by_ref: dict[str, dict[str, Any]] = field(default_factory=dict)


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def clinical_time(resource: Mapping[str, Any]) -> datetime | None:
    """The resource's clinical time (effective / onset / performed / authored / recorded / period start)."""
    for name in _TIME_FIELDS:
        t = _parse(resource.get(name))
        if t is not None:
            return t
    for name in _PERIOD_FIELDS:
        period = resource.get(name)
        if isinstance(period, dict):
            t = _parse(period.get("start")) or _parse(period.get("end"))
            if t is not None:
                return t
    return None


def load_record(path: Path) -> Record:
    """A Synthea record, its as-of date (the last clinical time on it) and its last encounter."""
    bundle = orjson.loads(path.read_bytes())
    resources = [
        e["resource"]
        for e in bundle.get("entry", [])
        if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") not in BILLING
    ]
    patient = next(r for r in resources if r.get("resourceType") == "Patient")
    times = [t for t in (clinical_time(r) for r in resources) if t is not None]
    encounters = [r for r in resources if r.get("resourceType") == "Encounter" and clinical_time(r)]
    last = max(encounters, key=lambda r: clinical_time(r) or datetime.min.replace(tzinfo=UTC), default=None)
    name = "_".join(path.stem.split("_")[:-1]) or path.stem
    rec = Record(name, str(patient["id"]), resources, max(times), str(last["id"]) if last else None)
    rec.by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}
    return rec


# ------------------------------------------------------------------------------------------- the calls
@dataclass(frozen=True, slots=True)
class Template:
    key: str
    resource_type: str
    read: bool
    codes: frozenset[str]
    categories: frozenset[str]


def parse_template(key: str, template: str) -> Template:
    path, _, query = template.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    codes = {t.rpartition("|")[2] for v in params.get("code", []) for t in v.split(",") if t}
    cats = {t.rpartition("|")[2] for v in params.get("category", []) for t in v.split(",") if t}
    return Template(key, path.split("/")[0], "/" in path, frozenset(codes), frozenset(cats))


def _codes(resource: Mapping[str, Any]) -> set[str]:
    cc = resource.get("code")
    codings = cc.get("coding") if isinstance(cc, dict) else None
    return {str(c.get("code")) for c in codings or () if isinstance(c, dict) and c.get("code")}


def _categories(resource: Mapping[str, Any]) -> set[str]:
    return {
        str(c.get("code"))
        for cat in resource.get("category") or ()
        if isinstance(cat, dict)
        for c in cat.get("coding") or ()
        if isinstance(c, dict) and c.get("code")
    }


def _matches(t: Template, resource: Mapping[str, Any]) -> bool:
    if resource.get("resourceType") != t.resource_type:
        return False
    if t.codes and not (_codes(resource) & t.codes):
        return False
    return not (t.categories and not (_categories(resource) & t.categories))


def prefetch_for(templates: Mapping[str, str], rec: Record, context: Mapping[str, Any]) -> dict[str, Any]:
    """What an EHR that applies each template's type, code and category filters would prefetch."""
    from cds_service.prefetch import render

    out: dict[str, Any] = {}
    for key, template in templates.items():
        query = render(template, context)
        if query is None:
            continue  # the app skips keys whose tokens are not in this context
        t = parse_template(key, template)
        if t.read:
            out[key] = rec.by_ref.get(query.split("?")[0])
            continue
        found = [r for r in rec.resources if _matches(t, r)]
        out[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in found],
        }
    return out


def va_draft(patient_id: str) -> dict[str, Any]:
    """The order being signed: a kyphoplasty with no occurrence date (most orders are placed undated)."""
    return {
        "resourceType": "ServiceRequest",
        "id": "burden-va-draft",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {
            "coding": [{"system": CPT, "code": "22513", "display": "Percutaneous vertebral augmentation"}],
            "text": "Kyphoplasty T12",
        },
    }


def request_for(hook: str, templates: Mapping[str, str], rec: Record) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/burden", "patientId": rec.patient_id}
    if hook.startswith("encounter-") and rec.encounter_id:
        context["encounterId"] = rec.encounter_id
    if hook == "order-sign":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": va_draft(rec.patient_id)}],
        }
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch_for(templates, rec, context),
    }


# ------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class Card:
    record: str
    call: str
    rule: str
    indicator: str
    summary: str
    newest_evidence_days: float | None  # age of the newest dated evidence at the as-of date


@dataclass(slots=True)
class Burden:
    records: list[Record]
    cards: list[Card]
    calls: int
    errors: list[str]

    def per_call(self, call: str) -> list[list[Card]]:
        return [[c for c in self.cards if c.record == r.name and c.call == call] for r in self.records]


def _evidence_age(card: Mapping[str, Any], rec: Record) -> float | None:
    ages = []
    for ev in (card.get("extension") or {}).get("org.va-cds.evidence") or ():
        resource = rec.by_ref.get(str(ev.get("reference")))
        t = clinical_time(resource) if resource is not None else None
        if t is not None:
            ages.append((rec.as_of - t) / timedelta(days=1))
    return min(ages) if ages else None


def run(paths: Iterable[Path], post: Callable[[str, dict[str, Any]], tuple[int, Any]]) -> Burden:
    """Every call for every record through `post(service_id, body) -> (status, json)`."""
    from hooks import build_services
    from hooks.policy import load_policy

    templates = {s.id: dict(s.prefetch) for s in build_services(load_policy())}
    records = [load_record(p) for p in paths]
    cards: list[Card] = []
    errors: list[str] = []
    calls = 0
    for rec in records:
        for label, service_id, hook in CALLS:
            if hook.startswith("encounter-") and rec.encounter_id is None:
                errors.append(f"{rec.name}: no encounter for {label}")
                continue
            calls += 1
            status, payload = post(service_id, request_for(hook, templates[service_id], rec))
            if status != 200:
                errors.append(f"{rec.name} {label}: HTTP {status}")
                continue
            for c in payload.get("cards") or ():
                ext = c.get("extension") or {}
                cards.append(
                    Card(
                        rec.name,
                        label,
                        str(ext.get("org.va-cds.rule")),
                        str(c.get("indicator")),
                        str(c.get("summary")),
                        _evidence_age(c, rec),
                    )
                )
    return Burden(records, cards, calls, errors)


def in_process(paths: Iterable[Path]) -> Burden:
    """Through the real app (TestClient, auth off, temporary SQLite), each record at its own as-of date."""
    from fastapi.testclient import TestClient

    from cds_service.app import create_app
    from cds_service.settings import Settings

    paths = list(paths)
    as_of: list[datetime] = [datetime.now(UTC)]
    with tempfile.TemporaryDirectory(prefix="va-cds-burden-") as tmp:
        settings = Settings(  # type: ignore[call-arg]
            auth_mode="off", database_url=f"sqlite:///{tmp}/burden.db", log_level="WARNING"
        )
        app = create_app(settings, clock=lambda: as_of[0])
        with TestClient(app) as client:

            def post(service_id: str, body: dict[str, Any]) -> tuple[int, Any]:
                resp = client.post(f"/cds-services/{service_id}", json=body)
                return resp.status_code, resp.json()

            burden = Burden([], [], 0, [])
            for path in paths:
                as_of[0] = load_record(path).as_of
                one = run([path], post)
                burden.records += one.records
                burden.cards += one.cards
                burden.calls += one.calls
                burden.errors += one.errors
    return burden


# ------------------------------------------------------------------------------------------- the report
def _mmm(values: list[int]) -> str:
    if not values:
        return "– / – / –"
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def report(b: Burden) -> tuple[str, bool]:
    """The Markdown report, and whether every target is met."""
    lines = [
        "# Alert burden on the Synthea fixture records",
        "",
        f"{len(b.records)} records, {b.calls} calls, {len(b.cards)} cards. "
        "Command: `python -m benchmarks.burden` (or `make burden`).",
        "",
        "## Records",
        "",
        "| record | as of | resources |",
        "|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.as_of.date().isoformat()} | {len(r.resources)} |" for r in b.records]
    lines += ["", "## Cards per call (min / median / max over records)", ""]
    lines += ["| call | cards | interruptive (warning+critical) | critical |", "|---|---|---|---|"]
    for label, _, _ in CALLS:
        per = b.per_call(label)
        lines.append(
            f"| {label} | {_mmm([len(p) for p in per])} | "
            f"{_mmm([sum(c.indicator in INTERRUPTIVE for c in p) for p in per])} | "
            f"{_mmm([sum(c.indicator == 'critical' for c in p) for p in per])} |"
        )
    order = [sum(c.indicator in INTERRUPTIVE for c in p) for p in b.per_call(ORDER_CALL)]
    median_order = statistics.median(order) if order else 0
    lines += ["", "## Interruptive cards per VA order", ""]
    lines += ["| record | interruptive | rules |", "|---|---|---|"]
    for rec, p in zip(b.records, b.per_call(ORDER_CALL), strict=True):
        loud = [f"{c.rule} ({c.indicator})" for c in p if c.indicator in INTERRUPTIVE]
        lines.append(f"| {rec.name} | {len(loud)} | {', '.join(loud) or '—'} |")
    lines += ["", f"min / median / max: **{_mmm(order)}**"]
    critical = [c for c in b.cards if c.indicator == "critical"]
    stale = []
    lines += ["", "## Critical cards", ""]
    if critical:
        lines += [
            "| record | call | rule | newest evidence (days old) | window (days) | |",
            "|---|---|---|---|---|---|",
        ]
        for c in critical:
            window = CRITICAL_WINDOW_DAYS.get(c.rule)
            age = c.newest_evidence_days
            too_old = window is not None and age is not None and age > window
            if too_old:
                stale.append(c)
            shown = "undated" if age is None else f"{age:.0f}"
            verdict = "OLDER THAN WINDOW" if too_old else "ok"
            lines.append(f"| {c.record} | {c.call} | {c.rule} | {shown} | {window or '—'} | {verdict} |")
    else:
        lines.append("None.")
    lines += ["", "## Top rules", "", "| rule | cards | of which interruptive |", "|---|---|---|"]
    counts = Counter(c.rule for c in b.cards)
    loud_counts = Counter(c.rule for c in b.cards if c.indicator in INTERRUPTIVE)
    lines += [f"| {rule} | {n} | {loud_counts[rule]} |" for rule, n in counts.most_common(12)]
    if b.errors:
        lines += ["", "## Calls that did not answer 200", ""] + [f"- {e}" for e in b.errors]
    met_median = median_order <= 1
    met_stale = not stale
    met = met_median and met_stale and not b.errors
    lines += [
        "",
        "## Targets",
        "",
        f"- median interruptive cards per VA order <= 1: {median_order:g} — "
        f"**{'met' if met_median else 'NOT met'}**",
        f"- no critical card from data older than its window: {len(stale)} such card(s) — "
        f"**{'met' if met_stale else 'NOT met'}**",
        f"- every call answered 200: **{'yes' if not b.errors else 'NO'}**",
        "",
    ]
    return "\n".join(lines), met


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.burden", description=__doc__.splitlines()[0])
    p.add_argument("--records", default="*.json", help="glob of Synthea files in tests/fixtures/synthea")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the Markdown report goes ('-': nowhere)")
    args = p.parse_args(argv)
    paths = sorted(FIXTURES.glob(args.records))
    if not paths:
        print(f"no Synthea records match {args.records!r} in {FIXTURES}", file=sys.stderr)
        return 2
    burden = in_process(paths)
    text, _met = report(burden)
    print(text)
    if str(args.out) != "-":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    # As the other benchmarks: targets are reported, not asserted; a call that did not answer is a failure.
    return 1 if burden.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
