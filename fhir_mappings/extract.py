"""FHIR R4 JSON → ClinicalFacts.

Reads parsed dicts directly (no fhir.resources validation: ~0.3 ms per resource is too slow for a prefetch),
selects resources by code first and builds facts only for matches. Anything malformed is reported in
`ClinicalFacts.problems`; `extract_facts` never raises.

What counts (catalog v2, V2.4/V2.10/V2.11): a resource naming another patient than the context's is left out
and counted (`wrong_patient`), as is one whose clinical time lies after the request time (`future_dated`);
preliminary results count and say so; a numeric valueString is a value; a medication named by a reference
nothing resolves is recorded as unidentified, never as "no such drug". Every time is timezone-aware UTC.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .dates import parse_fhir_datetime
from .facts import (
    CANONICAL_UNITS,
    AllergyFact,
    ClinicalFacts,
    ConditionFact,
    EncounterFact,
    Evidence,
    ImagingFact,
    Measurement,
    MedicationFact,
    OrderFact,
    PatientFact,
    ProcedureFact,
)
from .library import (
    ICD10CM,
    Hit,
    ValueSetLibrary,
    clean_text,
    codeable_texts,
    default_library,
    is_negated,
    normalize_code,
    normalize_system,
)
from .units import UnitError, normalize_quantity

Region = Literal["cervical", "thoracic", "lumbar", "sacral"]
Modality = Literal["mri", "ct", "bone-scan", "xray", "other"]

MAX_BUNDLE_DEPTH = 8
MAX_TEXT = 20_000  # characters of report text read per resource

VA = "vertebral-augmentation"
POSTERIOR_WALL = "retropulsion"  # value set id: retropulsion / posterior wall / canal compromise
NON_SPINAL_DEFICIT = "hemiplegia-stroke"
# V2.12: hemiplegia and stroke sequelae are never a spinal-pattern deficit, whatever words they share with one
# ("paralytic syndrome as late effect of stroke" is not "paralysis" of the legs).
_SPINAL_PATTERN = frozenset({"new-motor-deficit"})


def _condition_concepts(hits: Iterable[Hit]) -> frozenset[str]:
    concepts = frozenset(h.concept for h in hits)
    return concepts - _SPINAL_PATTERN if NON_SPINAL_DEFICIT in concepts else concepts


NEURO_EXAM = "neuro-exam"

_MED_CATS = frozenset({"medication"})
_COND_CATS = frozenset({"condition"})
_ALLERGY_CATS = frozenset({"allergy"})
_MEAS_CATS = frozenset({"measurement"})
_PROC_CATS = frozenset({"procedure", "order"})
_ORDER_CATS = frozenset({"procedure", "order", "measurement"})

# V2.4: preliminary counts (shown as such); registered/cancelled/entered-in-error/unknown never do.
_RESULT_OK = frozenset({"final", "amended", "corrected", "preliminary"})
_REPORT_OK = frozenset({"final", "amended", "corrected", "appended"})
_MR_ACTIVE = frozenset({"active", "on-hold"})
_MR_INTENTS = frozenset({"order", "plan", "original-order", "reflex-order", "filler-order", "instance-order"})
_MS_ACTIVE = frozenset({"active", "intended"})
_COND_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_IGNORED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_APPT_OK = frozenset({"booked", "arrived", "pending", "proposed", "checked-in"})
_FOLLOWUP_7TH = frozenset("DGKPS")
# A clinical time later than now is a data error (V2.10), but EHR and service clocks drift: a vital signed a
# minute "in the future" by a fast EHR clock is still real evidence, so only times beyond this are dropped.
FUTURE_TOLERANCE = timedelta(minutes=10)
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([^/?#]+)(?:/_history/[^/]*)?/?$")
_NUMERIC_STRING = re.compile(r"^\s*(<=|>=|<|>)?\s*([-+]?\d+(?:[.,]\d+)?)\s*$")
# Dose forms and routes that never act systemically (V2.10): on an antithrombotic they are not antithrombotic.
_LOCAL_FORM = re.compile(
    r"\b(?:topical\w*|ophthalmic|ocular|otic|auricular|nasal|intranasal|nasally|cutaneous|(?<!trans)dermal"
    r"|cream|ointment|gel|lotion|eye|eyes|ear|ears|conjunctival)\b",
    re.IGNORECASE,
)
# Worded as long-standing (ConditionFact.chronic): never a new deficit (V2.5/V2.12).
_CHRONIC_CONDITION = re.compile(
    r"\b(?:chronic|long[\s-]?standing|longstanding|sequela[e]?|late\s+effects?|residual|history\s+of|remote"
    r"|congenital|since\s+(?:childhood|birth|\d{4}))\b|(?<!year )(?<!years )\bold\b(?!-)",
    re.IGNORECASE,
)
_MG = {"mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "g": 1000.0, "gram": 1000.0, "mcg": 0.001, "ug": 0.001}
_IU = frozenset(
    {"[iu]", "iu", "[iu]/dose", "u", "unit", "units", "[u]", "international unit", "international units"}
)
_PER_DAY = {"s": 86400.0, "min": 1440.0, "h": 24.0, "d": 1.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}
_TIMING_CODES = {
    "QD": 1.0,
    "BID": 2.0,
    "TID": 3.0,
    "QID": 4.0,
    "Q4H": 6.0,
    "Q6H": 4.0,
    "Q8H": 3.0,
    "Q12H": 2.0,
    "Q24H": 1.0,
    "QOD": 0.5,
    "AM": 1.0,
    "PM": 1.0,
}
_NON_SYMPTOM_OBS_CATEGORIES = frozenset(
    {"laboratory", "vital-signs", "social-history", "imaging", "procedure"}
)

_FLUSH_LOCK = re.compile(r"\b(?:flush\w*|lock|locks|lock\s+solution|catheter\s+lock)\b", re.IGNORECASE)
_NON_SYSTEMIC = re.compile(
    r"\b(?:topical|ophthalmic|otic|nasal|inhal\w*|inhaler|cream|ointment|lotion|drops?|gel|eye|ear|actuat|"
    r"metered|rectal\s+foam|enema|shampoo|spray)\b",
    re.IGNORECASE,
)
_LEVEL = re.compile(
    r"(?<![A-Za-z0-9])([CTLS])\s?-?(\d{1,2})(?![0-9A-Za-z])"
    r"(?![\s-]*(?:weighted|wi\b|w\b|hyper|hypo|signal|fat|flair|sequence|image|map|score|stage|lesion))",
    re.IGNORECASE,
)
_LEVEL_MAX = {"C": 7, "T": 12, "L": 5, "S": 5}
_REGION_OF = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}
_REGION_WORDS = (
    (re.compile(r"\bcervical\b", re.I), "cervical"),
    (re.compile(r"\bthoracic\b|\bdorsal\b", re.I), "thoracic"),
    (re.compile(r"\blumbar\b", re.I), "lumbar"),
    (re.compile(r"\bsacr(?:al|um)\b|\bsacroplasty\b", re.I), "sacral"),
)
_APPROACH = re.compile(
    r"\b(?:uni|bi|trans|extra|para)[\s-]?pedicular(?:ly)?\b|\bpedicular\s+approach\b|\b(?:unilateral|bilateral)\s+approach\b",
    re.IGNORECASE,
)
_CEMENT = re.compile(
    r"\bcement\b|\bpmma\b|\bpolymethyl\s*methacrylate\b|\blot\b|\b\d+(?:\.\d+)?\s*(?:ml|cc)\b", re.IGNORECASE
)
_COMPLICATIONS = re.compile(r"\bcomplications?\b|\buncomplicated\b|\buneventful\b", re.IGNORECASE)
_SPINE_WORDS = re.compile(
    r"\bspine\b|\bspinal\b|\bvertebra\w*\b|\blumbar\b|\bsacr(?:um|al)\b|\b[CTLS]-spine\b|\bthoracolumbar\b|\blumbosacral\b"
    r"|\bcervical\s+spine\b|\bthoracic\s+spine\b",
    re.IGNORECASE,
)
_MOD_TEXT: tuple[tuple[re.Pattern[str], Modality], ...] = (
    (re.compile(r"\bmri\b|\bmr\b|magnetic\s+resonance", re.I), "mri"),
    (re.compile(r"\bct\b|computed\s+tomograph\w*|\bcat\s+scan\b", re.I), "ct"),
    (re.compile(r"\bbone\s+scan\b|scintigra\w*|\bspect\b", re.I), "bone-scan"),
    (re.compile(r"\bx-?ray\b|\bxr\b|radiograph\w*", re.I), "xray"),
)
_DICOM_MODALITY: dict[str, Modality] = {
    "MR": "mri",
    "CT": "ct",
    "NM": "bone-scan",
    "DX": "xray",
    "CR": "xray",
    "RF": "xray",
}
_EDEMA = re.compile(
    r"\b(?:stir|t2)[\s-]*(?:fat[\s-]*sat\w*\s+)?(?:hyperintens\w*|bright|high\s+signal)\b|\b(?:marrow\s+)?o?edema\b"
    r"|\bhyperintens\w*\s+(?:on\s+)?stir\b",
    re.IGNORECASE,
)
_ACUTE = re.compile(r"\b(?:acute|subacute|fresh)\b", re.IGNORECASE)
_CHRONIC = re.compile(
    r"\b(?:chronic|healed|remote|sclerotic|longstanding)\b"
    r"|(?<!year )(?<!year-)(?<!years )(?<!yr )\bold\b(?!-)",
    re.IGNORECASE,
)
_NEG_CULTURE = re.compile(
    r"\bno\s+growth\b|\bnegative\b|\bnot\s+detected\b|\bno\s+(?:organisms?|bacteria)\b|\bsterile\b|\bno\s+isolate",
    re.IGNORECASE,
)
# A culture still running names no organism: never positive (V2.5), whatever else the text says.
_PENDING_CULTURE = re.compile(
    r"\bpending\b|\bin\s+progress\b|\bincubating\b|\bto\s+follow\b|\bnot\s+yet\b|\bno\s+growth\s+to\s+date\b"
    r"|\bpreliminary\b|\bawaiting\b|\bsee\s+(?:note|report|comment)\b",
    re.IGNORECASE,
)
_POS_INTERP = frozenset({"POS", "A", "AA", "H", "HH", "DET", "HU"})
_NEG_INTERP = frozenset({"NEG", "N", "ND", "NR"})
_ABSENT_VALUE = re.compile(r"^\s*(?:no|absent|negative|none|not\s+present|denies|false)\b", re.IGNORECASE)

_LABELS = {
    "inr": ("INR", ""),
    "platelets": ("Platelets", "×10⁹/L"),
    "wbc": ("WBC", "×10⁹/L"),
    "hemoglobin": ("Hemoglobin", "g/dL"),
    "crp": ("CRP", "mg/L"),
    "esr": ("ESR", "mm/h"),
    "temperature": ("Temperature", "°C"),
    "heart_rate": ("Heart rate", "/min"),
    "resp_rate": ("Respiratory rate", "/min"),
    "spo2": ("SpO2", "%"),
    "systolic_bp": ("Systolic BP", "mmHg"),
    "diastolic_bp": ("Diastolic BP", "mmHg"),
    "hba1c": ("HbA1c", "%"),
    "glucose": ("Glucose", "mg/dL"),
    "creatinine": ("Creatinine", "mg/dL"),
    "egfr": ("eGFR", "mL/min/1.73m²"),
    "crcl": ("CrCl", "mL/min"),
    "pain": ("Pain score", "/10"),
    "tryptase": ("Tryptase", "µg/L"),
    "weight": ("Weight", "kg"),
    "blood_culture": ("Blood culture", ""),
}


_UCUM = "http://unitsofmeasure.org"


# ---------------------------------------------------------------------- small typed readers
def _d(x: Any) -> dict[str, Any] | None:
    return x if isinstance(x, dict) else None


def _get(x: Any, key: str) -> Any:
    return x.get(key) if isinstance(x, dict) else None


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _only_non_symptom_categories(categories: Any) -> bool:
    """True when an Observation has category codes and all are lab/vital/social-history kinds.

    Runs for most Observations of a record (every one that is not a measurement), so it stops at the first
    other code instead of collecting them all.
    """
    if not isinstance(categories, list):
        return False
    seen = False
    for cat in categories:
        codings = cat.get("coding") if isinstance(cat, dict) else None
        if not isinstance(codings, list):
            continue
        for coding in codings:
            c = coding.get("code") if isinstance(coding, dict) else None
            if isinstance(c, str):
                c = c.strip().lower()
                if c:
                    if c not in _NON_SYMPTOM_OBS_CATEGORIES:
                        return False
                    seen = True
    return seen


def _s(x: Any) -> str | None:
    return x if isinstance(x, str) and x.strip() else None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    v = float(x)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def _status_code(cc: Any) -> str | None:
    """First coding.code of a status CodeableConcept (clinicalStatus / verificationStatus)."""
    c = _d(cc)
    if c is None:
        return None
    for coding in _l(c.get("coding")):
        code = _s(_get(coding, "code"))
        if code:
            return code.lower()
    t = _s(c.get("text"))
    return t.lower() if t else None


def _date_str(dt: datetime | None) -> str:
    return dt.date().isoformat() if dt else "unknown date"


def _fmt(v: float) -> str:
    return f"{round(v, 2):g}"


def _measured(
    label: str,
    comparator: str | None,
    value: float,
    show_unit: str,
    time: datetime | None,
    raw: float,
    reported: str,
) -> str:
    """A measurement's evidence line: "INR 2.4 on 2026-11-19", with the reported value when converted."""
    shown = f"{comparator or ''}{_fmt(value)}{(' ' + show_unit) if show_unit else ''}"
    tail = f" (reported {_fmt(raw)} {reported})" if abs(value - raw) > 1e-9 else ""
    return f"{label} {shown} on {_date_str(time)}{tail}"


def _display(*ccs: Any, fallback: str = "") -> str:
    for cc in ccs:
        texts = codeable_texts(cc)
        if texts:
            return clean_text(texts[0])
    return fallback


def _note_texts(r: Mapping[str, Any]) -> list[str]:
    out = []
    for n in _l(r.get("note")):
        t = _s(_get(n, "text"))
        if t:
            out.append(t)
    return out


def find_level(*texts: str | None) -> str | None:
    """First valid vertebral level (C1-C7, T1-T12, L1-L5, S1-S5) named in the texts."""
    for text in texts:
        if not text:
            continue
        for m in _LEVEL.finditer(text):
            letter, n = m.group(1).upper(), int(m.group(2))
            if 1 <= n <= _LEVEL_MAX[letter]:
                return f"{letter}{n}"
    return None


def find_levels(text: str) -> frozenset[str]:
    out = set()
    for m in _LEVEL.finditer(text):
        letter, n = m.group(1).upper(), int(m.group(2))
        if 1 <= n <= _LEVEL_MAX[letter]:
            out.add(f"{letter}{n}")
    return frozenset(out)


def _region(level: str | None, hits: Iterable[Hit], *texts: str | None) -> Region | None:
    if level:
        return _REGION_OF[level[0]]  # type: ignore[return-value]
    for h in hits:
        if h.region in ("cervical", "thoracic", "lumbar", "sacral"):
            return h.region  # type: ignore[return-value]
    for text in texts:
        if text:
            for pat, name in _REGION_WORDS:
                if pat.search(text):
                    return name  # type: ignore[return-value]
    return None


def imaging_findings(text: str) -> frozenset[str]:
    """{"edema", "no-edema", "chronic", "acute"} as stated (negation-aware) in report text."""
    found: set[str] = set()
    for m in _EDEMA.finditer(text):
        found.add("no-edema" if is_negated(text, m.start(), m.end()) else "edema")
    for m in _ACUTE.finditer(text):
        if not is_negated(text, m.start(), m.end()):
            found.add("acute")
            break
    for m in _CHRONIC.finditer(text):
        if not is_negated(text, m.start(), m.end()):
            found.add("chronic")
            break
    return frozenset(found)


def _encounter_class(value: Any) -> str | None:
    """Encounter.class code, uppercase: a Coding (R4), or a CodeableConcept / list of them (R5 senders)."""
    candidates = _l(value) if isinstance(value, list) else [value]
    for item in candidates:
        d = _d(item)
        if d is None:
            continue
        code = _s(d.get("code"))
        if code:
            return code.strip().upper()
        for coding in _l(d.get("coding")):
            code = _s(_get(coding, "code"))
            if code:
                return code.strip().upper()
    return None


def _says_chronic(texts: Iterable[str]) -> bool:
    """Worded as chronic, old, long-standing or a sequela (and not negated: "not chronic")."""
    for text in texts:
        for m in _CHRONIC_CONDITION.finditer(text):
            if not is_negated(text, m.start(), m.end()):
                return True
    return False


def _number_string(value: Any) -> float | None:
    """A numeric valueString ("2.8", "< 0.5") as a number (V2.11); None for words ("see note")."""
    text = _s(value)
    if text is None:
        return None
    m = _NUMERIC_STRING.match(text)
    if m is None:
        return None
    try:
        return _num(float(m.group(2).replace(",", ".")))
    except ValueError:
        return None


def _per_day(timing: Any) -> float | None:
    """Administrations per day from a Timing (repeat.frequency/period/periodUnit, or a timing code)."""
    t = _d(timing)
    if t is None:
        return None
    repeat = _d(t.get("repeat"))
    if repeat is not None:
        freq = _num(repeat.get("frequencyMax")) or _num(repeat.get("frequency"))
        period = _num(repeat.get("period"))
        unit = _s(repeat.get("periodUnit"))
        if freq is None and (period is not None or unit is not None):
            freq = 1.0
        if freq is not None and period is None and unit is None:
            return None  # "twice" but per what: unreadable
        if freq is not None:
            per = _PER_DAY.get(unit or "d")
            if per is None or period is None or period <= 0:
                return None
            return freq * per / period
    code_cc = _d(t.get("code"))
    if code_cc is not None:
        for coding in _l(code_cc.get("coding")):
            code = _s(_get(coding, "code"))
            if code and code.upper() in _TIMING_CODES:
                return _TIMING_CODES[code.upper()]
    return None


def _daily_dose(dosages: list[Any]) -> tuple[float | None, str | None]:
    """Total dose per day over the dosage instructions, in mg or [iU]; (None, None) if any part is unreadable.

    Only structured dosage is read (doseQuantity × administrations per day); a dose range, a weight-based
    unit (mg/kg), an as-needed dose or a missing frequency makes the whole dose unreadable (V2.12: the
    therapeutic hold then applies).
    """
    total = 0.0
    unit_out: str | None = None
    found = False
    for dosage in dosages:
        d = _d(dosage)
        if d is None:
            continue
        if d.get("asNeededBoolean") is True or d.get("asNeededCodeableConcept") is not None:
            return None, None
        dose_q: dict[str, Any] | None = None
        for dr in _l(d.get("doseAndRate")):
            dose_q = _d(_get(dr, "doseQuantity"))
            if dose_q is not None:
                break
        if dose_q is None:
            if d.get("doseAndRate") or _s(d.get("text")):
                return None, None  # a dose is given, but not as a single quantity
            continue
        value = _num(dose_q.get("value"))
        raw_unit = (_s(dose_q.get("code")) or _s(dose_q.get("unit")) or "").strip().lower()
        if raw_unit in _MG:
            unit, factor = "mg", _MG[raw_unit]
        elif raw_unit in _IU:
            unit, factor = "[iU]", 1.0
        else:
            return None, None
        per_day = _per_day(d.get("timing"))
        if value is None or per_day is None or (unit_out is not None and unit != unit_out):
            return None, None
        total += value * factor * per_day
        unit_out = unit
        found = True
    return (round(total, 3), unit_out) if found else (None, None)


# ---------------------------------------------------------------------- the extractor
# Where an input item sits, for problem messages: "resources[3]" / "resources[3].entry[7]". Kept as nested
# tuples and spelled out only when a message needs it (collection visits every resource of the request).
_Where = str | tuple[Any, ...]


def _label(where: _Where) -> str:
    if isinstance(where, str):
        return where
    if len(where) == 3:  # (parent, i, "entry"): an entry of a Bundle
        return f"{_label(where[0])}.entry[{where[1]}]"
    return f"{where[0]}[{where[1]}]"  # (label, n): an item of the top-level list


class _Extractor:
    def __init__(
        self, lib: ValueSetLibrary, patient_id: str | None = None, now: datetime | None = None
    ) -> None:
        self.lib = lib
        self.facts = ClinicalFacts()
        self.patient_id = patient_id or None
        self.now = now if now is not None else datetime.now(UTC)
        self.latest_allowed = self.now + FUTURE_TOLERANCE
        self.patient_urls: set[str] = (
            set()
        )  # fullUrls of the context patient's Patient entries (urn:uuid refs)
        self.other_patients: set[str] = set()  # ids / fullUrls of Patient resources of other patients
        self._verdicts: dict[str, bool | None] = {}  # subject reference → names another patient?
        # A record repeats its timestamps (an encounter's vitals share one): each string is parsed once.
        self._times: dict[str, datetime] = {}
        self.by_ref: dict[str, dict[str, Any]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], str, bool], None]] = {
            "Patient": self.patient,
            "MedicationRequest": self.medication,
            "MedicationStatement": self.medication,
            "Observation": self.observation,
            "Condition": self.condition,
            "AllergyIntolerance": self.allergy,
            "Procedure": self.procedure,
            "ServiceRequest": self.service_request,
            "Appointment": self.appointment,
            "DiagnosticReport": self.diagnostic_report,
            "ImagingStudy": self.imaging_study,
            "Encounter": self.encounter,
        }

        self._wanted = frozenset({*self.handlers, "Medication", "Bundle"})

    def problem(self, msg: str) -> None:
        self.facts.problems.append(msg[:300])

    # -- input collection ---------------------------------------------------------------
    def collect(self, source: Any, label: str) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        if source is None:
            return out
        if isinstance(source, dict):
            items: Iterable[Any] = [source]
        elif isinstance(source, str | bytes | int | float | bool):
            self.problem(f"{label}: expected a list of FHIR resources, got {type(source).__name__}")
            return out
        else:
            try:
                items = list(source)
            except TypeError:
                self.problem(f"{label}: expected a list of FHIR resources, got {type(source).__name__}")
                return out
        seen: set[tuple[str, str]] = set()
        for n, item in enumerate(items):
            self._collect_one(item, None, out, 0, (label, n), seen)
        return out

    def _collect_one(
        self,
        item: Any,
        full_url: str | None,
        out: list[tuple[str, dict[str, Any]]],
        depth: int,
        where: _Where,
        seen: set[tuple[str, str]],
    ) -> None:
        if not isinstance(item, dict):
            self.problem(f"{_label(where)}: not a JSON object ({type(item).__name__})")
            return
        rt = item.get("resourceType")
        if not isinstance(rt, str) or not rt:
            self.problem(f"{_label(where)}: no resourceType")
            return
        if rt == "Bundle":
            if depth >= MAX_BUNDLE_DEPTH:
                self.problem(f"{_label(where)}: Bundle nested deeper than {MAX_BUNDLE_DEPTH}; ignored")
                return
            entries = item.get("entry")
            if entries is not None and not isinstance(entries, list):
                self.problem(f"{_label(where)}: Bundle.entry is not a list")
                return
            for i, entry in enumerate(_l(entries)):
                e = _d(entry)
                if e is None:
                    self.problem(f"{_label((where, i, 'entry'))}: not a JSON object")
                    continue
                res = e.get("resource")
                if res is None:
                    continue
                if isinstance(res, dict) and res.get("resourceType") not in self._wanted:
                    continue
                self._collect_one(
                    e["resource"], _s(e.get("fullUrl")), out, depth + 1, (where, i, "entry"), seen
                )
            return
        if rt not in self.handlers and rt != "Medication":
            return  # billing, immunizations...: never read, so never indexed or deduplicated
        rid = _s(item.get("id"))
        if rid is not None:
            key = (rt, rid)
            if key in seen:
                return
            seen.add(key)
            ref = f"{rt}/{rid}"
        elif full_url is not None:
            key = (rt, full_url)
            if key in seen:
                return
            seen.add(key)
            ref = full_url
        else:
            ref = f"{rt}/(no id: {_label(where)})"
        if rt == "Medication":
            self.by_ref[ref] = item
            if full_url:
                self.by_ref[full_url] = item
            return
        if rt == "Patient" and self.patient_id is not None:
            mine = rid == self.patient_id
            for name in (rid, full_url):
                if name:
                    (self.patient_urls if mine else self.other_patients).add(name)
        out.append((ref, item))

    def run(self, items: list[tuple[str, dict[str, Any]]], draft: bool) -> None:
        for ref, r in items:
            handler = self.handlers.get(r["resourceType"])  # a str: `collect` keeps only those
            if handler is None:
                continue
            if self.other_patient(r):
                # V2.4: another patient's resource is neither evidence nor reassurance; counted for the audit.
                self.facts.wrong_patient += 1
                self.problem(f"{ref}: names another patient than the one in context; ignored")
                continue
            try:
                handler(r, ref, draft)
            except Exception as exc:  # a malformed resource must never break the request
                self.problem(f"{ref}: could not read ({exc.__class__.__name__}: {exc})")

    def other_patient(self, r: Mapping[str, Any]) -> bool:
        """True when the resource is, or is about, another patient than context.patientId (V2.4).

        Only a reference that clearly names a patient is judged (`Patient/<id>`, an absolute URL ending so,
        or a bundle-internal urn naming another Patient entry); identifier-only or unknown references stay.
        """
        if self.patient_id is None:
            return False
        if r.get("resourceType") == "Patient":
            rid = _s(r.get("id"))
            return rid is not None and rid != self.patient_id
        for key in ("subject", "patient"):
            holder = r.get(key)
            target = holder.get("reference") if isinstance(holder, dict) else None
            if not isinstance(target, str):
                continue
            verdicts = self._verdicts
            if target in verdicts:  # a record names its patient the same way thousands of times: judge once
                verdict = verdicts[target]
            else:
                verdict = verdicts[target] = self._names_other_patient(target)
            if verdict is not None:
                return verdict
        return False

    def _names_other_patient(self, target: str) -> bool | None:
        """True/False when the reference names another / this patient; None when it names no patient."""
        m = _PATIENT_REF.search(target.strip())
        if m is not None:
            return m.group(1) != self.patient_id
        if target.startswith("urn:"):
            if target in self.patient_urls or target.rsplit(":", 1)[-1] == self.patient_id:
                return False
            return target in self.other_patients
        return None

    def future(self, t: datetime | None, ref: str, what: str) -> bool:
        """True (counted, reported) when a clinical time is after now: a data error, not evidence (V2.10)."""
        if t is None or t <= self.latest_allowed:
            return False
        self.facts.future_dated += 1
        self.problem(f"{ref}: {what} {t.isoformat()} is after the request time; ignored")
        return True

    def when(self, value: Any, ref: str, what: str) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            known = self._times.get(value)
            if known is not None:
                return known
        try:
            parsed = parse_fhir_datetime(value)
        except (ValueError, OverflowError):
            # Never memoised: every resource carrying an unreadable time is named in the problems.
            self.problem(f"{ref}: unreadable {what} {value!r}"[:300])
            return None
        self._times[value] = parsed  # parse_fhir_datetime accepts strings only, so `value` is one here
        return parsed

    # -- Patient / Encounter ------------------------------------------------------------------
    def patient(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        if self.facts.patient is not None:
            return
        birth = self.when(r.get("birthDate"), ref, "birthDate")
        g = r.get("gender")
        sex: Literal["male", "female", "other", "unknown"] = (
            g if g in ("male", "female", "other", "unknown") else "unknown"
        )
        summary = f"{sex}, born {_date_str(birth)}" if birth else f"{sex}, birth date unknown"
        deceased_on = self.when(r.get("deceasedDateTime"), ref, "deceasedDateTime")
        # V2.4: deceasedBoolean true, or a death date not after now (a future death date is a data error).
        deceased = r.get("deceasedBoolean") is True or (deceased_on is not None and deceased_on <= self.now)
        if deceased:
            summary += f", died {_date_str(deceased_on)}" if deceased_on else ", recorded as deceased"
        self.facts.patient = PatientFact(
            Evidence(ref, summary),
            birth,
            sex,
            deceased=deceased,
            deceased_on=deceased_on if deceased else None,
        )

    def encounter(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status")) or "unknown"
        if status in ("entered-in-error", "cancelled"):
            return
        period = _d(r.get("period")) or {}
        start = self.when(period.get("start"), ref, "period.start")
        end = self.when(period.get("end"), ref, "period.end")
        types = [t for t in _l(r.get("type"))]
        label = _display(*types, fallback="Encounter")
        class_code = _encounter_class(r.get("class"))
        shown = f" [{class_code}]" if class_code else ""
        self.facts.encounters.append(
            EncounterFact(
                Evidence(ref, f"{label} ({status}){shown} {_date_str(start)}"),
                id=_s(r.get("id")) or ref,
                status=status,
                start=start,
                end=end,
                class_code=class_code,
            )
        )

    # -- Medications -------------------------------------------------------------------
    def _resolve(self, reference: Any, container: Mapping[str, Any]) -> dict[str, Any] | None:
        ref = _s(_get(reference, "reference"))
        if ref is None:
            return None
        if ref.startswith("#"):
            for c in _l(container.get("contained")):
                cd = _d(c)
                if cd is not None and cd.get("id") == ref[1:]:
                    return cd
            return None
        found = self.by_ref.get(ref)
        if found is None and "/" in ref:
            parts = ref.rstrip("/").split("/")
            if len(parts) >= 2:
                found = self.by_ref.get(f"{parts[-2]}/{parts[-1]}")
        return found

    def unidentified(
        self,
        r: Mapping[str, Any],
        ref: str,
        med_ref: Any,
        status: str,
        authored: datetime | None,
        named: str | None,
    ) -> None:
        """An active medication whose medicationReference could not be resolved (V2.4): never reassuring.

        Not recorded when the reference's display names a drug the value sets know (it is then read as that
        drug); a display that matches nothing must not read as "no antithrombotic".
        """
        if named and self.lib.match_text(named, _MED_CATS):
            return  # the display names a known drug: identified by text, read as that drug
        target = _s(_get(med_ref, "reference")) or "no reference"
        label = f"'{named}'" if named else target
        since = f", since {_date_str(authored)}" if authored else ""
        self.facts.unidentified_medications.append(
            Evidence(
                ref, f"{r.get('resourceType')}: medication {label} could not be identified ({status}{since})"
            )
        )

    def medication(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        rt = str(r.get("resourceType"))
        status = _s(r.get("status")) or "unknown"
        if status in ("entered-in-error", "cancelled", "not-taken"):
            return
        if rt == "MedicationRequest":
            intent = r.get("intent")
            active = (not draft) and status in _MR_ACTIVE and (intent is None or intent in _MR_INTENTS)
            authored = self.when(r.get("authoredOn"), ref, "authoredOn")
        else:
            active = (not draft) and status in _MS_ACTIVE
            period = _d(r.get("effectivePeriod")) or {}
            effective = r.get("effectiveDateTime") or period.get("start")
            authored = self.when(effective or r.get("dateAsserted"), ref, "effective")
            if effective is not None and status != "intended" and self.future(authored, ref, "effective"):
                return
        ccs: list[Any] = []
        forms: list[Any] = []  # Medication.form, dosage routes: a local product is never an antithrombotic
        med_cc = _d(r.get("medicationCodeableConcept"))
        if med_cc is not None and not (codeable_texts(med_cc) or _l(med_cc.get("coding"))):
            med_cc = None  # an empty concept names nothing: the reference (if any) decides
        if med_cc is not None:
            ccs.append(med_cc)
        med_ref = r.get("medicationReference")
        if med_ref is not None:
            med = self._resolve(med_ref, r)
            if med is None:
                if med_cc is None:
                    ref_text = _s(_get(med_ref, "display"))
                    if ref_text:
                        ccs.append({"text": ref_text})
                    else:
                        self.problem(f"{ref}: medicationReference not found in the inputs")
                    if active:
                        self.unidentified(r, ref, med_ref, status, authored, named=ref_text)
            else:
                ccs.append(med.get("code"))
                forms.append(med.get("form"))
                for ing in _l(med.get("ingredient")):
                    ingd = _d(ing)
                    if ingd is not None and ingd.get("itemCodeableConcept") is not None:
                        ccs.append(ingd.get("itemCodeableConcept"))
                if active and not any(codeable_texts(cc) or _l(_get(cc, "coding")) for cc in ccs):
                    # A Medication that says nothing about what it is identifies nothing.
                    self.unidentified(r, ref, med_ref, status, authored, named=None)
        if not ccs:
            return
        hits: list[Hit] = []
        for cc in ccs:
            for h in self.lib.match_codeable(cc, _MED_CATS):
                if h not in hits:
                    hits.append(h)
        if not hits:
            return
        dosages = _l(r.get("dosageInstruction")) + _l(r.get("dosage"))
        texts = [t for cc in ccs for t in codeable_texts(cc)]
        for dose in dosages:
            t = _s(_get(dose, "text"))
            if t:
                texts.append(t)
            forms.append(_get(dose, "route"))
            forms.append(_get(dose, "site"))
        all_text = " ; ".join(texts)
        form_text = " ; ".join([all_text, *(t for f in forms for t in codeable_texts(f))])
        dose_form_local = bool(_LOCAL_FORM.search(form_text))
        daily_dose, dose_unit = _daily_dose(dosages)
        display = clean_text(texts[0]) if texts else "medication"
        done: set[tuple[str, str]] = set()
        for h in hits:
            if h.drug_class is None:
                continue
            if h.drug_class == "anticoagulant" and _FLUSH_LOCK.search(all_text):
                continue  # catheter flush / lock solution: never systemic anticoagulation
            if h.drug_class == "immunosuppressant" and _NON_SYSTEMIC.search(all_text):
                continue
            ingredient = h.ingredient or (display.split(" ")[0].lower() if display else h.concept)
            key = (ingredient, h.drug_class)
            if key in done:
                continue
            done.add(key)
            when = f", since {_date_str(authored)}" if authored else ""
            summary = f"{display} (draft order)" if draft else f"{display} ({status}{when})"
            fact = MedicationFact(
                evidence=Evidence(ref, summary),
                ingredient=ingredient,
                drug_class=h.drug_class,  # type: ignore[arg-type]
                resource_type=rt,
                status=status,
                active=active,
                draft=draft,
                authored=authored,
                display=display,
                daily_dose=daily_dose,
                dose_unit=dose_unit,
                dose_form_local=dose_form_local,
            )
            (self.facts.draft_medications if draft else self.facts.medications).append(fact)

    # -- Observations --------------------------------------------------------------------
    def _time(self, r: Mapping[str, Any], ref: str) -> datetime | None:
        value = r.get("effectiveDateTime")  # what nearly every Observation carries: read it first
        if value is not None:
            t = self.when(value, ref, "effectiveDateTime")
            if t is not None:
                return t
        period = _d(r.get("effectivePeriod")) or {}
        for key, value in (
            ("effectiveInstant", r.get("effectiveInstant")),
            ("effectivePeriod.start", period.get("start")),
            ("issued", r.get("issued")),
        ):
            if value is not None:
                t = self.when(value, ref, key)
                if t is not None:
                    return t
        return None

    def _measure(
        self,
        kind: str,
        holder: Mapping[str, Any],
        ref: str,
        time: datetime | None,
        interp: Any,
        status: str = "final",
    ) -> Measurement:
        m = self._measure_value(kind, holder, ref, time, interp)
        if status == "final":
            return m
        # Kept on the fact, and shown: a preliminary INR reads "INR 2.1 on … (preliminary)" (V2.4).
        return Measurement(
            Evidence(m.evidence.reference, lambda: f"{m.evidence.summary} ({status})"),
            m.kind,
            m.value,
            m.unit,
            m.time,
            m.positive,
            status=status,
            unusable=m.unusable,
        )

    def _measure_value(
        self, kind: str, holder: Mapping[str, Any], ref: str, time: datetime | None, interp: Any
    ) -> Measurement:
        unit = CANONICAL_UNITS.get(kind, "")
        label, show_unit = _LABELS.get(kind, (kind, unit))
        if kind == "blood_culture":
            positive = self._culture_positive(holder, interp)
            word = {True: "positive", False: "negative", None: "result unclear"}[positive]
            organism = _display(
                holder.get("valueCodeableConcept"), fallback=_s(holder.get("valueString")) or ""
            )
            detail = f" ({organism})" if organism and positive else ""
            return Measurement(
                Evidence(ref, f"Blood culture {word}{detail} on {_date_str(time)}"),
                kind,
                None,
                unit,
                time,
                positive,
            )
        q = _d(holder.get("valueQuantity"))
        raw: float | None = None
        code = unit_text = None
        if q is not None:
            raw = _num(q.get("value"))
            code = _s(q.get("code"))
            unit_text = _s(q.get("unit"))
            system = _s(q.get("system"))
            if (
                code is not None
                and system is not None
                and system != _UCUM  # the usual spelling: no need to normalise it
                and normalize_system(system) != _UCUM
            ):
                code = None  # a non-UCUM code: fall back to the unit text
        elif _num(holder.get("valueInteger")) is not None:
            raw = _num(holder.get("valueInteger"))
        elif holder.get("valueString") is not None:
            raw = _number_string(holder.get("valueString"))  # "2.8" is readable, "see note" is not (V2.11)
        if raw is None:
            why = "no numeric value"
            text_value = _s(holder.get("valueString"))
            if text_value:
                why = f"value '{clean_text(text_value)[:40]}' is not a number"
            dar = _display(holder.get("dataAbsentReason"))
            if dar:
                why += f" ({dar})"
            self.problem(f"{ref}: {label} {why}")
            return Measurement(
                Evidence(ref, f"{label}: {why} on {_date_str(time)}"), kind, None, unit, time, unusable=why
            )
        try:
            value = normalize_quantity(kind, raw, code, unit_text)
        except UnitError as exc:
            why = str(exc)
            self.problem(f"{ref}: {why}")
            return Measurement(
                Evidence(
                    ref,
                    f"{label} {_fmt(raw)} {unit_text or code or ''} on {_date_str(time)} (unusable: {why})",
                ),
                kind,
                None,
                unit,
                time,
                unusable=why,
            )
        comparator = _s(q.get("comparator")) if q is not None else None
        reported = unit_text or code or ""
        # The summary is composed only if a card cites it (see Evidence): most measurements are never shown.
        summary = lambda: _measured(label, comparator, value, show_unit, time, raw, reported)  # noqa: E731
        return Measurement(Evidence(ref, summary), kind, value, unit, time)

    def _culture_positive(self, holder: Mapping[str, Any], interp: Any) -> bool | None:
        for cc in _l(interp):
            for coding in _l(_get(cc, "coding")):
                code = _s(_get(coding, "code"))
                if code:
                    if code.upper() in _POS_INTERP:
                        return True
                    if code.upper() in _NEG_INTERP:
                        return False
        vcc = _d(holder.get("valueCodeableConcept"))
        texts = codeable_texts(vcc) if vcc is not None else []
        vs = _s(holder.get("valueString"))
        if vs:
            texts.append(vs)
        if texts:
            if any(_PENDING_CULTURE.search(t) for t in texts):
                return None
            return not any(_NEG_CULTURE.search(t) for t in texts)
        if vcc is not None and _l(vcc.get("coding")):
            return True  # a coded value with no display: an organism code
        return None

    def observation(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = r.get("status")
        if status not in _RESULT_OK:
            return
        status = str(status)
        hits = self.lib.match_codeable(r.get("code"), _MEAS_CATS, text_fallback=False)
        comp_hits: list[tuple[dict[str, Any], list[Hit]]] = []
        components = r.get("component")
        if components:  # most Observations have none: skip the loop set-up (this path runs per resource)
            for comp in _l(components):
                cd = _d(comp)
                if cd is not None:
                    ch = self.lib.match_codeable(cd.get("code"), _MEAS_CATS, text_fallback=False)
                    if ch:
                        comp_hits.append((cd, ch))
        if not hits and not comp_hits:
            if _only_non_symptom_categories(r.get("category")):
                return  # a lab, vital or social-history item no measurement names: never a symptom or exam
            self._observation_finding(r, ref)
            return
        time = self._time(r, ref)
        if self.future(time, ref, "effective time"):
            return
        interp = r.get("interpretation")
        # `_measure_value` directly for a final result (nearly all of them): `_measure` only adds the status.
        measure: Callable[[str, Mapping[str, Any], str, datetime | None, Any], Measurement] = (
            self._measure_value if status == "final" else functools.partial(self._measure, status=status)
        )
        for h in hits:
            if h.concept in CANONICAL_UNITS:
                self.facts.measurements.append(measure(h.concept, r, ref, time, interp))
        for cd, ch in comp_hits:
            for h in ch:
                if h.concept in CANONICAL_UNITS:
                    self.facts.measurements.append(
                        measure(h.concept, cd, ref, time, cd.get("interpretation") or interp)
                    )

    def _observation_finding(self, r: dict[str, Any], ref: str) -> None:
        """Symptom Observations → ConditionFact; neurological exam Observations → ProcedureFact.

        Only for Observations whose categories are not all lab / vital / social history (see `observation`).
        """
        code = r.get("code")
        allow_text = r.get("valueQuantity") is None
        hits = self.lib.match_codeable(code, _COND_CATS | _PROC_CATS, text_fallback=allow_text)
        vcc = r.get("valueCodeableConcept")
        if r.get("valueBoolean") is False:
            return
        value_text = " ".join(codeable_texts(vcc)) + " " + (_s(r.get("valueString")) or "")
        if hits and _ABSENT_VALUE.match(value_text):
            return  # e.g. code "Dyspnea", value "No" / "Absent"
        if not hits and vcc is not None:
            hits = self.lib.match_codeable(vcc, _COND_CATS, text_fallback=allow_text)
        if not hits and allow_text and _s(r.get("valueString")):
            hits = self.lib.match_text(str(r.get("valueString")), _COND_CATS)
        if not hits:
            return
        time = self._time(r, ref)
        if self.future(time, ref, "effective time"):
            return
        display = _display(code, vcc, fallback="Observation")
        cond = _condition_concepts(h for h in hits if h.category == "condition")
        proc = frozenset(h.concept for h in hits if h.category != "condition")
        if cond:
            self.facts.conditions.append(
                ConditionFact(
                    Evidence(ref, f"{display} (observed {_date_str(time)})"),
                    concepts=cond,
                    active=True,
                    onset=time,
                    abatement=None,
                    display=display,
                )
            )
        if NEURO_EXAM in proc:
            self.facts.procedures.append(
                ProcedureFact(
                    Evidence(ref, f"{display} on {_date_str(time)}"),
                    is_va=False,
                    concepts=frozenset({NEURO_EXAM}),
                    status=str(r.get("status")),
                    start=time,
                    end=time,
                    level=None,
                    region=None,
                    encounter=_s(_get(r.get("encounter"), "reference")),
                    display=display,
                )
            )

    # -- Conditions / allergies -----------------------------------------------------------
    def condition(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        if _status_code(r.get("verificationStatus")) in _IGNORED_VERIFICATION:
            return
        code = r.get("code")
        hits = self.lib.match_codeable(code, _COND_CATS)
        if not hits:
            return
        clinical = _status_code(r.get("clinicalStatus"))
        abatement_keys = [k for k in r if k.startswith("abatement") and r[k] not in (None, False, "", {})]
        active = clinical in _COND_ACTIVE and not abatement_keys
        onset_period = _d(r.get("onsetPeriod")) or {}
        onset = self.when(r.get("onsetDateTime") or onset_period.get("start"), ref, "onset")
        if self.future(onset, ref, "onset"):
            return
        recorded = self.when(r.get("recordedDate"), ref, "recordedDate")
        if onset is None and recorded is not None:
            onset = recorded
        ab_period = _d(r.get("abatementPeriod")) or {}
        abatement = self.when(r.get("abatementDateTime") or ab_period.get("start"), ref, "abatement")
        followup = sequela = False
        for coding in _l(_get(code, "coding")):
            cd = _d(coding)
            if cd is None or not _s(cd.get("code")) or not _s(cd.get("system")):
                continue
            if normalize_system(str(cd["system"])) == ICD10CM:
                c = normalize_code(ICD10CM, str(cd["code"]))
                if len(c) == 7 and c[-1] in _FOLLOWUP_7TH:
                    followup = True
                if len(c) == 7 and c[-1] == "S":
                    sequela = True  # ICD-10-CM 7th character S: a sequela, never a new problem
        display = _display(code, fallback="Condition")
        chronic = sequela or _says_chronic(
            [*codeable_texts(code), *_note_texts(r), _s(r.get("onsetString")) or ""]
        )
        parts = [clinical or "status unknown"]
        if onset:
            parts.append(f"onset {_date_str(onset)}")
        if abatement:
            parts.append(f"resolved {_date_str(abatement)}")
        if followup:
            parts.append("follow-up encounter code")
        if onset is None and recorded is None:
            parts.append("undated")
        self.facts.conditions.append(
            ConditionFact(
                Evidence(ref, f"{display} ({', '.join(parts)})"),
                concepts=_condition_concepts(hits),
                active=active,
                onset=onset,
                abatement=abatement,
                display=display,
                followup_encounter=followup,
                recorded=recorded,
                chronic=chronic,
            )
        )

    def allergy(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        if _status_code(r.get("verificationStatus")) in _IGNORED_VERIFICATION:
            return
        ccs = [r.get("code")]
        for reaction in _l(r.get("reaction")):
            rd = _d(reaction)
            if rd is not None and rd.get("substance") is not None:
                ccs.append(rd.get("substance"))
        hits: list[Hit] = []
        for cc in ccs:
            for h in self.lib.match_codeable(cc, _ALLERGY_CATS, text_fallback=False):
                if h not in hits:
                    hits.append(h)
        if not hits:
            texts = [t for cc in ccs for t in codeable_texts(cc)] + _note_texts(r)
            for reaction in _l(r.get("reaction")):
                t = _s(_get(reaction, "description"))
                if t:
                    texts.append(t)
            hits = self.lib.match_text(" ; ".join(texts), _ALLERGY_CATS)
        if not hits:
            return
        clinical = _status_code(r.get("clinicalStatus"))
        active = clinical is None or clinical == "active"
        display = _display(*ccs, fallback=(_note_texts(r) or ["allergy"])[0])
        self.facts.allergies.append(
            AllergyFact(
                Evidence(ref, f"Allergy: {display} ({clinical or 'status not stated'})"),
                concepts=frozenset(h.concept for h in hits),
                active=active,
                display=display,
            )
        )

    # -- Procedures / orders -----------------------------------------------------------------
    def procedure(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status")) or "unknown"
        if status in ("entered-in-error", "not-done"):
            return
        code = r.get("code")
        hits = self.lib.match_codeable(code, _PROC_CATS)
        if not hits:
            return
        concepts = frozenset(h.concept for h in hits)
        is_va = VA in concepts
        notes = " ; ".join(_note_texts(r))
        body_sites = _l(r.get("bodySite"))
        body_text = " ; ".join(t for bs in body_sites for t in codeable_texts(bs))
        code_text = " ; ".join(codeable_texts(code))
        level = find_level(body_text, code_text, notes)
        region = _region(level, hits, body_text, code_text, notes)
        period = _d(r.get("performedPeriod")) or {}
        if r.get("performedDateTime") is not None:
            start = self.when(r.get("performedDateTime"), ref, "performedDateTime")
            end = start
        else:
            start = self.when(period.get("start"), ref, "performedPeriod.start")
            end = self.when(period.get("end"), ref, "performedPeriod.end")
        if status != "preparation" and self.future(start, ref, "performed time"):
            return
        has_level = bool(body_sites) or find_level(code_text, notes) is not None
        has_cement = bool(_l(r.get("usedCode")) or _l(r.get("usedReference"))) or bool(_CEMENT.search(notes))
        has_complications = bool(_l(r.get("complication")) or _l(r.get("complicationDetail"))) or bool(
            _COMPLICATIONS.search(notes)
        )
        display = _display(code, fallback="Procedure")
        at = f" at {level}" if level else ""
        enc = _d(r.get("encounter"))
        self.facts.procedures.append(
            ProcedureFact(
                Evidence(ref, f"{display}{at} on {_date_str(start)} ({status})"),
                is_va=is_va,
                concepts=concepts,
                status=status,
                start=start,
                end=end,
                level=level,
                region=region,
                encounter=_s(enc.get("reference")) if enc else None,
                has_level=has_level,
                has_approach=bool(_APPROACH.search(notes) or _APPROACH.search(code_text)),
                has_cement_details=has_cement,
                has_complications=has_complications,
                display=display,
            )
        )

    def service_request(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status")) or "unknown"
        if status in ("entered-in-error", "revoked", "cancelled"):
            return
        code = r.get("code")
        hits = self.lib.match_codeable(code, _ORDER_CATS)
        if not hits:
            return
        concepts = frozenset(h.concept for h in hits)
        codes = frozenset(
            (str(_d(c).get("system") or ""), str(_d(c).get("code")))  # type: ignore[union-attr]
            for c in _l(_get(code, "coding"))
            if _d(c) is not None and _s(_d(c).get("code"))  # type: ignore[union-attr]
        )
        period = _d(r.get("occurrencePeriod")) or {}
        events = _l(_get(r.get("occurrenceTiming"), "event"))
        planned = self.when(
            r.get("occurrenceDateTime") or period.get("start") or (events[0] if events else None),
            ref,
            "occurrence",
        )
        priority = _s(r.get("priority"))
        body_text = " ; ".join(t for bs in _l(r.get("bodySite")) for t in codeable_texts(bs))
        code_text = " ; ".join(codeable_texts(code))
        reason_text = " ; ".join(t for rc in _l(r.get("reasonCode")) for t in codeable_texts(rc))
        notes = " ; ".join(_note_texts(r))
        level = find_level(body_text, code_text, notes, reason_text)
        region = _region(level, hits, body_text, code_text)
        display = _display(code, fallback="ServiceRequest")
        when = f"planned {_date_str(planned)}" if planned else "no date"
        fact = OrderFact(
            Evidence(ref, f"{display} ({'draft order' if draft else status}, {when})"),
            resource_type="ServiceRequest",
            is_va=VA in concepts,
            concepts=concepts,
            codes=codes,
            status=status,
            draft=draft,
            planned=planned,
            level=level,
            region=region,
            display=display,
            priority=priority.strip().lower() if priority else None,
        )
        (self.facts.draft_orders if draft else self.facts.orders).append(fact)

    def appointment(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status")) or "unknown"
        if status not in _APPT_OK:
            return
        ccs = [
            *_l(r.get("serviceType")),
            *_l(r.get("reasonCode")),
            r.get("appointmentType"),
            *_l(r.get("serviceCategory")),
        ]
        hits: list[Hit] = []
        for cc in ccs:
            for h in self.lib.match_codeable(cc, _PROC_CATS, text_fallback=False):
                if h not in hits:
                    hits.append(h)
        texts = [t for cc in ccs for t in codeable_texts(cc)]
        for key in ("description", "comment"):
            t = _s(r.get(key))
            if t:
                texts.append(t)
        if not hits:
            hits = self.lib.match_text(" ; ".join(texts), _PROC_CATS)
        if not hits:
            return
        concepts = frozenset(h.concept for h in hits)
        planned = self.when(r.get("start"), ref, "start")
        joined = " ; ".join(texts)
        level = find_level(joined)
        display = clean_text(texts[0]) if texts else "Appointment"
        codes = frozenset(
            (str(_d(c).get("system") or ""), str(_d(c).get("code")))  # type: ignore[union-attr]
            for cc in ccs
            for c in _l(_get(cc, "coding"))
            if _d(c) is not None and _s(_d(c).get("code"))  # type: ignore[union-attr]
        )
        self.facts.orders.append(
            OrderFact(
                Evidence(ref, f"Appointment: {display} ({status}, {_date_str(planned)})"),
                resource_type="Appointment",
                is_va=VA in concepts,
                concepts=concepts,
                codes=codes,
                status=status,
                draft=False,
                planned=planned,
                level=level,
                region=_region(level, hits, joined),
                display=display,
            )
        )

    # -- Imaging ---------------------------------------------------------------------------
    def _modality(self, hits: Iterable[Hit], text: str) -> Modality | None:
        for h in hits:
            vs = self.lib.valuesets.get(h.concept)
            if vs is not None and vs.modality in ("mri", "ct", "bone-scan", "xray", "other"):
                return vs.modality  # type: ignore[return-value]
        for pat, name in _MOD_TEXT:
            if pat.search(text):
                return name
        return None

    @staticmethod
    def _spine_region(hits: Iterable[Hit], text: str) -> str | None:
        for h in hits:
            if h.region and "spine" in h.region:
                return h.region
        if not _SPINE_WORDS.search(text) and find_level(text) is None:
            return None
        low = text.lower()
        for word in ("cervical", "thoracic", "lumbar"):
            if f"{word} spine" in low:
                return f"{word} spine"
        if "sacr" in low:
            return "sacrum"
        return "spine"

    def _presented_text(self, r: Mapping[str, Any]) -> list[str]:
        out = []
        for att in _l(r.get("presentedForm")):
            a = _d(att)
            if a is None:
                continue
            ctype = _s(a.get("contentType")) or ""
            data = _s(a.get("data"))
            if data and ctype.startswith("text/"):
                try:
                    out.append(
                        base64.b64decode(data[: MAX_TEXT * 2], validate=False).decode("utf-8", "replace")[
                            :MAX_TEXT
                        ]
                    )
                except (binascii.Error, ValueError):
                    self.problem("presentedForm: undecodable base64 text")
        return out

    def _findings(self, text: str) -> frozenset[str]:
        """imaging_findings, plus "posterior-wall" when the text documents retropulsion, posterior wall
        involvement or canal compromise (value set `retropulsion`, negation-aware; V2.5 posterior-wall)."""
        if not text:
            return frozenset()
        found = imaging_findings(text)
        if any(h.concept == POSTERIOR_WALL for h in self.lib.match_text(text, _COND_CATS)):
            found = found | {"posterior-wall"}
        return found

    def diagnostic_report(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status"))
        if status not in _REPORT_OK:
            return
        code = r.get("code")
        hits = self.lib.match_codeable(code, _PROC_CATS, text_fallback=False)
        code_text = " ; ".join(codeable_texts(code))
        if not hits:
            hits = self.lib.match_text(code_text, _PROC_CATS)
        if not hits and not _SPINE_WORDS.search(code_text):
            return
        time = self._time(r, ref)
        if self.future(time, ref, "effective time"):
            return
        findings_parts = [_s(r.get("conclusion")) or ""]
        for cc in _l(r.get("conclusionCode")):
            findings_parts.extend(codeable_texts(cc))
        findings_parts.extend(self._presented_text(r))
        text = clean_text(" . ".join(p for p in findings_parts if p))[:MAX_TEXT]
        concepts = frozenset(h.concept for h in hits)
        if VA in concepts:  # a guidance study for the procedure: evidence the VA was performed
            level = find_level(code_text, text)
            self.facts.procedures.append(
                ProcedureFact(
                    Evidence(ref, f"{_display(code)} on {_date_str(time)} (report {status})"),
                    is_va=True,
                    concepts=frozenset({VA}),
                    status="completed",
                    start=time,
                    end=time,
                    level=level,
                    region=_region(level, hits, code_text),
                    encounter=_s(_get(r.get("encounter"), "reference")),
                    has_level=level is not None,
                    display=_display(code),
                )
            )
            return
        region = self._spine_region(hits, code_text)
        if region is None:
            return
        modality = self._modality(hits, code_text) or "other"
        display = _display(code, fallback="Imaging report")
        findings = self._findings(text)
        self.facts.imaging.append(
            ImagingFact(
                Evidence(ref, f"{display} on {_date_str(time)}" + (f": {text[:120]}" if text else "")),
                modality=modality,
                region=region,
                time=time,
                findings=findings,
                levels=find_levels(text) if text else frozenset(),
                display=display,
            )
        )

    def imaging_study(self, r: dict[str, Any], ref: str, draft: bool) -> None:
        status = _s(r.get("status")) or "unknown"
        if status in ("entered-in-error", "cancelled"):
            return
        texts: list[str] = []
        hits: list[Hit] = []
        for cc in _l(r.get("procedureCode")):
            hits.extend(self.lib.match_codeable(cc, _PROC_CATS, text_fallback=False))
            texts.extend(codeable_texts(cc))
        modalities: list[str] = []
        for coding in _l(r.get("modality")):
            c = _s(_get(coding, "code"))
            if c:
                modalities.append(c.upper())
        for series in _l(r.get("series")):
            sd = _d(series)
            if sd is None:
                continue
            m = _s(_get(sd.get("modality"), "code"))
            if m:
                modalities.append(m.upper())
            bs = _d(sd.get("bodySite"))
            if bs is not None and _s(bs.get("display")):
                texts.append(str(bs["display"]))
            if _s(sd.get("description")):
                texts.append(str(sd["description"]))
        if _s(r.get("description")):
            texts.append(str(r["description"]))
        joined = clean_text(" ; ".join(texts))
        region = self._spine_region(hits, joined)
        if region is None:
            return
        modality: Modality | None = None
        for m in modalities:
            if m in _DICOM_MODALITY:
                modality = _DICOM_MODALITY[m]
                break
        modality = modality or self._modality(hits, joined) or "other"
        time = self.when(r.get("started"), ref, "started")
        if self.future(time, ref, "started"):
            return
        notes = " . ".join(_note_texts(r))
        findings_text = clean_text(f"{notes} . {_s(r.get('description')) or ''}")
        display = clean_text(texts[0]) if texts else "Imaging study"
        self.facts.imaging.append(
            ImagingFact(
                Evidence(ref, f"{display} ({modality}) on {_date_str(time)}"),
                modality=modality,
                region=region,
                time=time,
                findings=self._findings(findings_text),
                levels=find_levels(findings_text),
                display=display,
            )
        )


def extract_facts(
    resources: Iterable[Mapping[str, Any]],
    draft_orders: Iterable[Mapping[str, Any]] = (),
    library: ValueSetLibrary | None = None,
    *,
    patient_id: str | None = None,
    now: datetime | None = None,
) -> ClinicalFacts:
    """Typed clinical facts from FHIR R4 resources (Bundles are unwrapped; duplicates by type+id dropped).

    `draft_orders` are the CDS Hooks `context.draftOrders` entries: MedicationRequests become
    `draft_medications` (never active), ServiceRequests become `draft_orders`. Never raises: anything
    unreadable is reported in `ClinicalFacts.problems`.

    `patient_id` (context.patientId): resources naming another patient are left out and counted in
    `wrong_patient` (V2.4); None judges nothing. `now` (the request time, default the wall clock): clinical
    times after it are data errors, left out and counted in `future_dated` (V2.10).
    """
    try:
        ex = _Extractor(library if library is not None else default_library(), patient_id, now)
    except Exception as exc:  # the packaged value sets failed to load: report, do not crash the hook
        facts = ClinicalFacts()
        facts.problems.append(f"value sets could not be loaded ({exc.__class__.__name__}: {exc})"[:300])
        return facts
    try:
        items = ex.collect(resources, "resources")
        drafts = ex.collect(draft_orders, "draftOrders")
        ex.run(items, draft=False)
        ex.run(
            [
                (ref, r)
                for ref, r in drafts
                if r.get("resourceType") in ("MedicationRequest", "ServiceRequest")
            ],
            True,
        )
    except Exception as exc:  # defensive: never let one odd input break the hook
        ex.problem(f"extraction stopped early ({exc.__class__.__name__}: {exc})")
    return ex.facts
