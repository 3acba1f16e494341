"""Typed clinical facts: what rules see instead of raw FHIR JSON.

Every fact is immutable and carries `Evidence` (the resource reference and a one-line human summary)
so any card built from it can show where it came from. Times are timezone-aware UTC datetimes or None
when the source did not say (a missing time is never guessed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime
from typing import Literal

# The oldest time a sort key may need: timezone-aware, so it compares with every fact time (all UTC-aware).
# Never use naive `datetime.min` next to fact times: that comparison raises TypeError (V2.9).
OLDEST = datetime.min.replace(tzinfo=UTC)
ANTITHROMBOTIC_CLASSES = frozenset({"anticoagulant", "antiplatelet"})

DrugClass = Literal["anticoagulant", "antiplatelet", "osteoporosis", "immunosuppressant", "supplement"]

# Canonical measurement kinds and their single canonical unit (UCUM).
CANONICAL_UNITS: dict[str, str] = {
    "inr": "{INR}",
    "platelets": "10*9/L",
    "wbc": "10*9/L",
    "hemoglobin": "g/dL",
    "crp": "mg/L",
    "esr": "mm/h",
    "temperature": "Cel",
    "heart_rate": "/min",
    "resp_rate": "/min",
    "spo2": "%",
    "systolic_bp": "mm[Hg]",
    "diastolic_bp": "mm[Hg]",
    "hba1c": "%",
    "glucose": "mg/dL",
    "creatinine": "mg/dL",
    "egfr": "mL/min/{1.73_m2}",
    "crcl": "mL/min",
    "pain": "{score}",
    "tryptase": "ug/L",
    "weight": "kg",
    "blood_culture": "",  # coded result: see Measurement.positive
}
MeasurementKind = str  # one of CANONICAL_UNITS' keys


class Evidence:
    """Where a fact came from: `Observation/123` and "INR 2.4 on 2026-11-19". Immutable.

    `summary` may be given as a function that composes it: extraction makes a Measurement for every lab and
    vital on the record, and only the few a card cites are ever read, so their text (number and date
    formatting, a third of a measurement's cost) is composed on first read, then kept. Equality, hash and
    repr are by (reference, summary), as for the dataclass this was.
    """

    __slots__ = ("_summary", "reference")
    reference: str
    _summary: str | Callable[[], str]

    def __init__(self, reference: str, summary: str | Callable[[], str]) -> None:
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "_summary", summary)

    @property
    def summary(self) -> str:
        text = self._summary
        if not isinstance(text, str):
            text = text()
            object.__setattr__(self, "_summary", text)
        return text

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Evidence):
            return NotImplemented
        return self.reference == other.reference and self.summary == other.summary

    def __hash__(self) -> int:
        return hash((self.reference, self.summary))

    def __repr__(self) -> str:
        return f"Evidence(reference={self.reference!r}, summary={self.summary!r})"

    def __reduce__(self) -> tuple[type[Evidence], tuple[str, str]]:
        # copy, deepcopy and pickle rebuild it through __init__ (attribute assignment is refused).
        return (Evidence, (self.reference, self.summary))


@dataclass(frozen=True, slots=True)
class PatientFact:
    evidence: Evidence
    birth_date: datetime | None
    sex: Literal["male", "female", "other", "unknown"]
    deceased: bool = False  # deceasedBoolean true, or a deceasedDateTime (V2.4: no cards)
    deceased_on: datetime | None = None  # deceasedDateTime, for "the record says this patient died on …"

    def age_years(self, at: datetime) -> float | None:
        if self.birth_date is None:
            return None
        return (at - self.birth_date).days / 365.25


@dataclass(frozen=True, slots=True)
class MedicationFact:
    """A medication on the record (or a draft order): matched to an ingredient and a class."""

    evidence: Evidence
    ingredient: str  # canonical ingredient name, e.g. "warfarin", "clopidogrel", "alendronate"
    drug_class: DrugClass
    resource_type: str  # MedicationRequest | MedicationStatement
    status: str
    active: bool  # per the catalog: MR active/on-hold (intent order/plan/original-order); MS active/intended
    draft: bool  # came from context.draftOrders
    authored: datetime | None  # authoredOn / effective / dateAsserted, whichever the resource has
    display: str  # what the record calls it, for the card
    daily_dose: float | None = None  # from the dosage, `dose_unit` per day (LMWH prophylactic or not)
    dose_unit: str | None = None  # "mg" or "[iU]"
    dose_form_local: bool = False  # topical/ophthalmic/otic/nasal product: never an antithrombotic (V2.10)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A lab or vital sign normalised to the kind's canonical unit (CANONICAL_UNITS)."""

    evidence: Evidence
    kind: MeasurementKind
    value: float | None  # None when not numeric (blood culture) or unusable
    unit: str  # canonical unit of the kind
    time: datetime | None  # effective[x] (start of a period) or issued
    positive: bool | None = None  # blood culture: organism named / interpretation positive
    status: str = "final"  # final/amended/corrected/preliminary (others are dropped at extraction, V2.4)
    unusable: str | None = None  # why the value cannot be used ("unknown unit 'mg'"); value is then None


@dataclass(frozen=True, slots=True)
class ConditionFact:
    """A Condition, or a symptom recorded as a coded Observation (dyspnea, chest pain...)."""

    evidence: Evidence
    concepts: frozenset[str]  # ids of the value sets it matched, e.g. {"vertebral-fracture"}
    active: bool  # clinicalStatus active/recurrence/relapse and no abatement
    onset: datetime | None  # onset[x], else recordedDate / effective
    abatement: datetime | None
    display: str
    followup_encounter: bool = False  # ICD-10-CM 7th character D/G/K/P/S: an old fracture, not a new one
    recorded: datetime | None = None  # recordedDate, apart from onset (V2.12: used when onset is absent)
    chronic: bool = False  # coded or worded as chronic, old, long-standing or a sequela (V2.5 neuro)


@dataclass(frozen=True, slots=True)
class AllergyFact:
    evidence: Evidence
    concepts: frozenset[str]  # e.g. {"contrast-iodinated"}, {"bone-cement"}, {"contrast-class"}
    active: bool
    display: str


@dataclass(frozen=True, slots=True)
class ProcedureFact:
    evidence: Evidence
    is_va: bool
    concepts: frozenset[str]  # e.g. {"vertebral-augmentation"} or {"neuro-exam"}
    status: str
    start: datetime | None
    end: datetime | None
    level: str | None  # "T12", "L1"...; first level named
    region: Literal["cervical", "thoracic", "lumbar", "sacral"] | None
    encounter: str | None  # "Encounter/abc" when the Procedure names one
    has_level: bool = False
    has_approach: bool = False
    has_cement_details: bool = False
    has_complications: bool = False  # complication recorded, or a note stating none
    display: str = ""


@dataclass(frozen=True, slots=True)
class OrderFact:
    """A ServiceRequest (on the record or drafted) or an Appointment."""

    evidence: Evidence
    resource_type: str  # ServiceRequest | Appointment
    is_va: bool
    concepts: frozenset[str]  # what it orders, e.g. {"inr"}, {"cbc"}, {"mri-spine"}
    codes: frozenset[tuple[str, str]]  # (system, code) pairs as sent, for duplicate-order checks
    status: str
    draft: bool
    planned: datetime | None  # occurrence[x] / Appointment.start
    level: str | None
    region: Literal["cervical", "thoracic", "lumbar", "sacral"] | None
    display: str
    priority: str | None = None  # routine/urgent/asap/stat: an undated urgent VA order is imminent (V2.12)


@dataclass(frozen=True, slots=True)
class ImagingFact:
    """A spine MRI/CT/bone scan (DiagnosticReport or ImagingStudy) with what its conclusion says."""

    evidence: Evidence
    modality: Literal["mri", "ct", "bone-scan", "xray", "other"]
    region: str | None  # "spine", "thoracic spine", "lumbar spine"...
    time: datetime | None
    # subset of {"edema", "no-edema", "chronic", "acute", "posterior-wall"}; "posterior-wall": the text
    # documents retropulsion, posterior wall involvement or canal compromise (value set `retropulsion`)
    findings: frozenset[str]
    levels: frozenset[str]  # levels named in the conclusion, e.g. {"T12"}
    display: str


@dataclass(frozen=True, slots=True)
class EncounterFact:
    evidence: Evidence
    id: str
    status: str
    start: datetime | None
    end: datetime | None
    class_code: str | None = None  # v3 ActCode, e.g. IMP (inpatient), EMER (emergency), AMB


@dataclass(slots=True)
class ClinicalFacts:
    """Everything the rules may read about one patient, plus problems met while reading."""

    patient: PatientFact | None = None
    medications: list[MedicationFact] = field(default_factory=list)  # on the record, not drafts
    draft_medications: list[MedicationFact] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    conditions: list[ConditionFact] = field(default_factory=list)
    allergies: list[AllergyFact] = field(default_factory=list)
    procedures: list[ProcedureFact] = field(default_factory=list)
    orders: list[OrderFact] = field(default_factory=list)  # on the record, incl. Appointments
    draft_orders: list[OrderFact] = field(default_factory=list)
    imaging: list[ImagingFact] = field(default_factory=list)
    encounters: list[EncounterFact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "Observation/9: unknown unit 'mg'"
    # V2.4: medications whose medicationReference could not be resolved (never reassure: "could not be
    # identified — review"), and resources left out because they name another patient or a future time.
    unidentified_medications: list[Evidence] = field(default_factory=list)
    wrong_patient: int = 0
    future_dated: int = 0

    def measurements_of(
        self, kind: str, since: datetime | None = None, until: datetime | None = None
    ) -> list[Measurement]:
        """Usable measurements of one kind, newest first, optionally inside [since, until]."""
        found = [
            m
            for m in self.measurements
            if m.kind == kind
            and m.unusable is None
            and m.time is not None
            and (since is None or m.time >= since)
            and (until is None or m.time <= until)
        ]
        found.sort(key=lambda m: m.time or OLDEST, reverse=True)
        return found

    def latest(
        self, kind: str, since: datetime | None = None, until: datetime | None = None
    ) -> Measurement | None:
        """The newest usable measurement. Prefer `latest_any` to judge: the latest result governs (V2.4)."""
        found = self.measurements_of(kind, since, until)
        return found[0] if found else None

    def latest_any(
        self, kind: str, since: datetime | None = None, until: datetime | None = None
    ) -> Measurement | None:
        """The newest dated measurement of a kind inside [since, until], usable or not (V2.4).

        The latest result governs: when it is unusable (`unusable` set, `value` None) the item is "latest INR
        on 27 Nov could not be read" and counts as missing; older results neither reassure nor alarm. Ties on
        time prefer a usable one (two results of one draw, one unreadable).
        """
        best: Measurement | None = None
        for m in self.measurements:
            if m.kind != kind or m.time is None:
                continue
            if (since is not None and m.time < since) or (until is not None and m.time > until):
                continue
            if best is None or best.time is None or m.time > best.time:
                best = m
            elif m.time == best.time and best.unusable is not None and m.unusable is None:
                best = m
        return best

    def conditions_with(self, concepts: Iterable[str]) -> list[ConditionFact]:
        wanted = frozenset(concepts)
        return [c for c in self.conditions if c.concepts & wanted]

    def active_medications(self, classes: Iterable[str]) -> list[MedicationFact]:
        """Active medications of the classes; a local-form product (eye drops, topical gel) is never an
        antithrombotic (V2.10), so it is left out of those two classes."""
        wanted = frozenset(classes)
        return [
            m
            for m in self.medications
            if m.active
            and m.drug_class in wanted
            and not (m.dose_form_local and m.drug_class in ANTITHROMBOTIC_CLASSES)
        ]
