"""Value sets as data: load the packaged YAML files (plus local extensions) into O(1) lookup tables.

Matching order (see `ValueSetLibrary.match_codeable`): system+code (normalised system URI, ICD-10 compared
undotted and uppercase, ICD prefixes for code families), product → ingredient roll-up (product codes are
listed under their ingredient in the medication value sets), ATC prefixes, and only when no code matched,
text on `code.text` / `coding.display` (word boundaries, brand names, negation guard).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGED_DIR = Path(__file__).parent / "valuesets"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

CATEGORIES = frozenset({"procedure", "medication", "condition", "allergy", "measurement", "order"})
DRUG_CLASSES = frozenset({"anticoagulant", "antiplatelet", "osteoporosis", "immunosuppressant", "supplement"})

# Aliases and OIDs that mean the same code system (compared after _norm_system_key).
_SYSTEM_ALIASES: dict[str, str] = {
    "loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "www.cms.gov/medicare/coding/icd10": ICD10PCS,
    "hl7.org/fhir/sid/icd-10-pcs": ICD10PCS,
    "urn:oid:2.16.840.1.113883.6.4": ICD10PCS,
    "www.ama-assn.org/go/cpt": CPT,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
    "www.whocc.no/atc": ATC,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    "unitsofmeasure.org": UCUM,
}


def _norm_system_key(system: str) -> str:
    s = system.strip()
    low = s.lower()
    if low.startswith("urn:oid:"):
        return low
    for prefix in ("https://", "http://"):
        if low.startswith(prefix):
            low = low[len(prefix) :]
            break
    return low.rstrip("/")


@functools.lru_cache(maxsize=256)
def normalize_system(system: str) -> str:
    """Canonical code-system URI: http/https, trailing slash, case and known OIDs folded."""
    key = _norm_system_key(system)
    return _SYSTEM_ALIASES.get(key, system.strip().rstrip("/"))


def normalize_code(system: str, code: str) -> str:
    """ICD-10 codes are compared undotted and uppercase; everything else as sent (stripped)."""
    code = code.strip()
    if system in (ICD10CM, ICD10PCS):
        return code.replace(".", "").upper()
    return code


@dataclass(frozen=True, slots=True)
class Hit:
    """One value-set match: the concept id, its category, and for medications the ingredient/class."""

    concept: str
    category: str
    ingredient: str | None = None
    drug_class: str | None = None
    region: str | None = None  # e.g. "thoracic" (procedure codes) or "lumbar spine" (imaging codes)
    via: str = "code"  # code | prefix | atc | text


@dataclass(frozen=True, slots=True)
class TextTerm:
    term: str
    pattern: re.Pattern[str]
    hits: tuple[Hit, ...]
    needs_spine_context: bool = False


@dataclass(slots=True)
class ValueSet:
    """A value set as loaded (packaged file plus any local extension)."""

    id: str
    category: str
    description: str
    sources: list[str]
    drug_class: str | None = None
    measurement: str | None = None
    modality: str | None = None
    codes: list[dict[str, Any]] = field(default_factory=list)  # each: system, code|prefix, ingredient?, ...
    atc_prefixes: list[dict[str, Any]] = field(default_factory=list)
    text: list[dict[str, Any]] = field(default_factory=list)  # each: term, ingredient?, needs_spine_context?
    excluded: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|never|denies|denied|deny|negative\s+for|neg\s+for|ruled\s+out|rules\s+out|no\s+evidence\s+of"
    r"|no\s+history\s+of|no\s+hx\s+of|without|free\s+of|absence\s+of|absent|nkda|nka)\b",
    re.IGNORECASE,
)
_NEGATION_AFTER = re.compile(
    r"^[^.;\n]{0,40}?\b(?:ruled\s+out|was\s+excluded|excluded|not\s+(?:seen|present|identified|found|detected)|absent"
    r"|negative)\b",
    re.IGNORECASE,
)
_NEGATION_WINDOW_WORDS = 6
_CLAUSE_BREAK = re.compile(r"[.;:\n!?]|\bbut\b|\bhowever\b", re.IGNORECASE)
_SPINE_CONTEXT = re.compile(
    r"\b(?:spine|spinal|vertebra|vertebrae|vertebral|lumbar|thoracic|sacral|sacrum|cervical|vcf|compression\s+fracture"
    r"|[TL]\d{1,2}|L[1-5]|[CTLS]-?spine)\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[a-z0-9]+")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\ufeff"), None)


def clean_text(text: str) -> str:
    """Remove zero-width characters (Synthea displays contain U+200B) and collapse whitespace."""
    return " ".join(text.translate(_ZERO_WIDTH).split())


def is_negated(text: str, start: int, end: int) -> bool:
    """True when a negation cue precedes the match in its clause, or "ruled out"-style follows it."""
    clause_start = 0
    for m in _CLAUSE_BREAK.finditer(text, 0, start):
        clause_start = m.end()
    # NegEx-style window: the cue must sit within the last few words before the match, in the same clause
    # ("denies chest pain, dyspnea" negates both; "no prior surgery, has COPD" does not negate COPD).
    window = text[clause_start:start].split()[-_NEGATION_WINDOW_WORDS:]
    if window and _NEGATION_BEFORE.search(" ".join(window)):
        return True
    return bool(_NEGATION_AFTER.match(text[end : end + 60]))


def _term_pattern(term: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in re.split(r"[\s\-]+", term.strip()) if p]
    body = r"[\s\-]*".join(parts)
    flags = 0 if (term.isupper() and len(term) <= 6) else re.IGNORECASE
    return re.compile(r"(?<![A-Za-z0-9])" + body + r"(?![A-Za-z0-9])", flags)


def _first_token(term: str) -> str | None:
    toks = _TOKEN.findall(term.lower())
    return toks[0] if toks else None


class ValueSetLibrary:
    """All value sets, precompiled: {(system, code) → hits}, ICD/ATC prefix tables, token-indexed text."""

    def __init__(self, valuesets: Mapping[str, ValueSet]) -> None:
        self.valuesets: dict[str, ValueSet] = dict(valuesets)
        self._exact: dict[tuple[str, str], list[Hit]] = {}
        self._prefix: dict[tuple[str, str], list[Hit]] = {}  # (system, undotted prefix) → hits
        self._prefix_lengths: dict[str, set[int]] = {}
        self._atc: dict[str, list[Hit]] = {}
        self._text_index: dict[str, list[TextTerm]] = {}
        self._memo: dict[tuple[str | None, str], tuple[Hit, ...]] = {}
        self._build()

    # ------------------------------------------------------------------ building
    def _add(self, table: dict[Any, list[Hit]], key: Any, hit: Hit) -> None:
        bucket = table.setdefault(key, [])
        if hit not in bucket:
            bucket.append(hit)

    def _build(self) -> None:
        text_entries: dict[str, list[Hit]] = {}
        spine_ctx: set[str] = set()
        for vs in self.valuesets.values():
            for entry in vs.codes:
                system = normalize_system(str(entry["system"]))
                hit = Hit(
                    concept=vs.id,
                    category=vs.category,
                    ingredient=entry.get("ingredient"),
                    drug_class=vs.drug_class,
                    region=entry.get("region"),
                    via="code",
                )
                if "code" in entry:
                    self._add(self._exact, (system, normalize_code(system, str(entry["code"]))), hit)
                else:
                    prefix = normalize_code(system, str(entry["prefix"]))
                    if system not in (ICD10CM, ICD10PCS):
                        prefix = prefix.upper()
                    self._add(self._prefix, (system, prefix), _replace(hit, via="prefix"))
                    self._prefix_lengths.setdefault(system, set()).add(len(prefix))
            for entry in vs.atc_prefixes:
                hit = Hit(vs.id, vs.category, entry.get("ingredient"), vs.drug_class, None, "atc")
                self._add(self._atc, str(entry["prefix"]).upper(), hit)
            for entry in vs.text:
                term = str(entry["term"])
                key = term if (term.isupper() and len(term) <= 6) else term.lower()
                self._add(
                    text_entries,
                    key,
                    Hit(vs.id, vs.category, entry.get("ingredient"), vs.drug_class, None, "text"),
                )
                if entry.get("needs_spine_context"):
                    spine_ctx.add(key)
        for key, hits in text_entries.items():
            first = _first_token(key)
            if first is None:
                continue
            tt = TextTerm(key, _term_pattern(key), tuple(hits), key in spine_ctx)
            self._text_index.setdefault(first, []).append(tt)
        for terms in self._text_index.values():
            terms.sort(key=lambda t: -len(t.term))
        self._atc_lengths = sorted({len(k) for k in self._atc}, reverse=True)

    # ------------------------------------------------------------------ matching
    def match_coding(self, system: str | None, code: str | None) -> list[Hit]:
        """Hits for one coding: exact code, then (ICD and other) prefixes, then ATC prefixes."""
        if not isinstance(code, str):
            return []
        return list(self._coding_hits(system, code))

    def _coding_hits(self, system: str | None, code: str) -> tuple[Hit, ...]:
        # Memoised per (system, code) as seen on the wire: a patient's records repeat the same few codes.
        memo_key = (system, code)
        cached = self._memo.get(memo_key)
        if cached is not None:
            return cached
        if len(self._memo) > 50_000:
            self._memo.clear()
        found = tuple(self._match_coding_uncached(system, code))
        self._memo[memo_key] = found
        return found

    def _match_coding_uncached(self, system: str | None, code: str) -> list[Hit]:
        if not code.strip():
            return []
        sys_norm = normalize_system(system) if isinstance(system, str) and system.strip() else ""
        ncode = normalize_code(sys_norm, code)
        found = list(self._exact.get((sys_norm, ncode), ()))
        lengths = self._prefix_lengths.get(sys_norm)
        if lengths:
            up = ncode.upper()
            for n in lengths:
                if n <= len(up):
                    for h in self._prefix.get((sys_norm, up[:n]), ()):
                        if h not in found:
                            found.append(h)
        if sys_norm == ATC:
            up = ncode.upper()
            for n in self._atc_lengths:
                if n <= len(up):
                    for h in self._atc.get(up[:n], ()):
                        if h not in found:
                            found.append(h)
        return found

    def match_codings(self, codings: Iterable[Any], categories: frozenset[str] | None = None) -> list[Hit]:
        """Hits for a list of Coding dicts (non-dicts ignored), filtered by category."""
        # The hottest loop of fact extraction (every Observation passes here): the memo is read inline.
        out: list[Hit] = []
        memo = self._memo
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            system = coding.get("system")
            if not isinstance(system, str):
                system = None
            found = memo.get((system, code))
            if found is None:
                found = self._coding_hits(system, code)
            for h in found:
                if (categories is None or h.category in categories) and h not in out:
                    out.append(h)
        return out

    def match_text(self, text: str, categories: frozenset[str] | None = None) -> list[Hit]:
        """Text fallback: word-bounded terms, token-indexed (cost grows with the text, not the term list)."""
        if not text:
            return []
        text = clean_text(text)
        out: list[Hit] = []
        seen_terms: set[str] = set()
        spine: bool | None = None
        for tok in set(_TOKEN.findall(text.lower())):
            for tt in self._text_index.get(tok, ()):
                if tt.term in seen_terms:
                    continue
                if categories is not None and not any(h.category in categories for h in tt.hits):
                    continue
                seen_terms.add(tt.term)
                for m in tt.pattern.finditer(text):
                    if is_negated(text, m.start(), m.end()):
                        continue
                    if tt.needs_spine_context:
                        if spine is None:
                            spine = bool(_SPINE_CONTEXT.search(text))
                        if not spine:
                            continue
                    for h in tt.hits:
                        if (categories is None or h.category in categories) and h not in out:
                            out.append(h)
                    break
        return out

    def match_codeable(
        self, cc: Any, categories: frozenset[str] | None = None, *, text_fallback: bool = True
    ) -> list[Hit]:
        """Hits for a CodeableConcept dict: codes first; text (`text`, displays) only if no code matched."""
        if not isinstance(cc, dict):
            return []
        codings = cc.get("coding")
        hits = self.match_codings(codings if isinstance(codings, list) else (), categories)
        if hits or not text_fallback:
            return hits
        return self.match_text(" ; ".join(codeable_texts(cc)), categories)

    def ids(self, category: str | None = None) -> list[str]:
        return sorted(v.id for v in self.valuesets.values() if category is None or v.category == category)


def codeable_texts(cc: Any) -> list[str]:
    """`text` and every `coding.display` of a CodeableConcept (strings only)."""
    out: list[str] = []
    if not isinstance(cc, dict):
        return out
    t = cc.get("text")
    if isinstance(t, str) and t.strip():
        out.append(t)
    codings = cc.get("coding")
    if isinstance(codings, list):
        for c in codings:
            if isinstance(c, dict):
                d = c.get("display")
                if isinstance(d, str) and d.strip() and d not in out:
                    out.append(d)
    return out


def _replace(hit: Hit, via: str) -> Hit:
    return Hit(hit.concept, hit.category, hit.ingredient, hit.drug_class, hit.region, via)


# ---------------------------------------------------------------------- loading
def _fail(path: Path, why: str) -> ValueError:
    return ValueError(f"value set file {path}: {why}")


def _as_str_list(value: Any, path: Path, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"'{what}' must be a list of strings")
    return list(value)


def _code_entries(raw: Any, path: Path, ingredient: str | None) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(path, "'codes' must be a list")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise _fail(path, f"codes[{i}] must be a mapping")
        system = entry.get("system")
        if not isinstance(system, str) or not system.strip():
            raise _fail(path, f"codes[{i}] needs a 'system' URI")
        code, prefix = entry.get("code"), entry.get("prefix")
        if isinstance(code, int):
            code = str(code)
        if (code is None) == (prefix is None):
            raise _fail(path, f"codes[{i}] needs exactly one of 'code' or 'prefix'")
        if code is not None and (not isinstance(code, str) or not code.strip()):
            raise _fail(path, f"codes[{i}].code must be a non-empty string")
        if prefix is not None and (not isinstance(prefix, str) or not prefix.strip()):
            raise _fail(path, f"codes[{i}].prefix must be a non-empty string")
        status = entry.get("status", "local")
        if status not in ("verified", "partial", "local"):
            raise _fail(
                path, f"codes[{i}].status must be verified|partial|local (UNVERIFIED codes do not ship)"
            )
        e = dict(entry)
        if code is not None:
            e["code"] = code
        e["status"] = status
        if ingredient is not None:
            e["ingredient"] = ingredient
        out.append(e)
    return out


def _text_entries(raw: Any, path: Path, ingredient: str | None) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(path, "'text' must be a list")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"term": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("term"), str) or not entry["term"].strip():
            raise _fail(path, f"text[{i}] must be a string or a mapping with a 'term'")
        e = dict(entry)
        if ingredient is not None:
            e["ingredient"] = ingredient
        out.append(e)
    return out


# libyaml's C safe loader when present (10x faster start-up); the pure-Python safe loader otherwise.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 (safe loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _fail(path, f"cannot read YAML ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise _fail(path, "top level must be a mapping")
    return data


def _content(
    data: Mapping[str, Any], path: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """codes, atc prefixes and text terms of one file (ingredient sections flattened)."""
    codes = _code_entries(data.get("codes"), path, None)
    texts = _text_entries(data.get("text"), path, None)
    atcs: list[dict[str, Any]] = []
    raw_atc = data.get("atc_prefixes")
    if raw_atc is not None:
        if not isinstance(raw_atc, list):
            raise _fail(path, "'atc_prefixes' must be a list")
        for i, a in enumerate(raw_atc):
            if isinstance(a, str):
                a = {"prefix": a}
            if not isinstance(a, dict) or not isinstance(a.get("prefix"), str):
                raise _fail(path, f"atc_prefixes[{i}] needs a 'prefix'")
            atcs.append(dict(a))
    ingredients = data.get("ingredients")
    if ingredients is not None:
        if not isinstance(ingredients, list):
            raise _fail(path, "'ingredients' must be a list")
        for i, ing in enumerate(ingredients):
            if not isinstance(ing, dict) or not isinstance(ing.get("name"), str) or not ing["name"].strip():
                raise _fail(path, f"ingredients[{i}] needs a 'name'")
            name = ing["name"].strip().lower()
            codes.extend(_code_entries(ing.get("codes"), path, name))
            texts.extend(_text_entries(ing.get("text"), path, name))
            texts.append({"term": name, "ingredient": name})
            for a in _as_str_list(ing.get("atc"), path, f"ingredients[{i}].atc"):
                atcs.append({"prefix": a, "ingredient": name})
    return codes, atcs, texts


def _load_packaged(directory: Path) -> dict[str, ValueSet]:
    out: dict[str, ValueSet] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = _parse_file(path)
        vid = data.get("id")
        if not isinstance(vid, str) or vid != path.stem:
            raise _fail(path, f"'id' must equal the file name ({path.stem!r})")
        category = data.get("category")
        if category not in CATEGORIES:
            raise _fail(path, f"'category' must be one of {sorted(CATEGORIES)}")
        drug_class = data.get("drug_class")
        if category == "medication" and drug_class not in DRUG_CLASSES:
            raise _fail(path, f"medication value sets need a drug_class in {sorted(DRUG_CLASSES)}")
        codes, atcs, texts = _content(data, path)
        excluded = data.get("excluded") or []
        out[vid] = ValueSet(
            id=vid,
            category=str(category),
            description=str(data.get("description", "")),
            sources=_as_str_list(data.get("sources"), path, "sources"),
            drug_class=drug_class if isinstance(drug_class, str) else None,
            measurement=data.get("measurement") if isinstance(data.get("measurement"), str) else None,
            modality=data.get("modality") if isinstance(data.get("modality"), str) else None,
            codes=codes,
            atc_prefixes=atcs,
            text=texts,
            excluded=list(excluded) if isinstance(excluded, list) else [],
            files=[str(path)],
        )
    return out


def _apply_extension(valuesets: dict[str, ValueSet], path: Path) -> None:
    """A local `<valueset-id>.yaml` only ADDS codes / ATC prefixes / text terms to a packaged value set."""
    vid = path.stem
    if vid not in valuesets:
        raise _fail(path, f"unknown value set id {vid!r} (local files may only extend packaged value sets)")
    data = _parse_file(path)
    if "id" in data and data["id"] != vid:
        raise _fail(path, f"'id' {data['id']!r} does not match the file name")
    allowed = {"id", "description", "sources", "codes", "text", "atc_prefixes", "ingredients", "note"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(
            path, f"unsupported keys {unknown} (extensions may add codes, text, atc_prefixes, ingredients)"
        )
    vs = valuesets[vid]
    if "ingredients" in data and vs.category != "medication":
        raise _fail(path, "'ingredients' only applies to medication value sets")
    codes, atcs, texts = _content(data, path)
    for c in codes:
        c.setdefault("source", f"local: {path.name}")
    vs.codes.extend(codes)
    vs.atc_prefixes.extend(atcs)
    vs.text.extend(texts)
    vs.sources.extend(_as_str_list(data.get("sources"), path, "sources"))
    vs.files.append(str(path))


def load_library(extra_dir: Path | None = None, packaged_dir: Path = PACKAGED_DIR) -> ValueSetLibrary:
    """Load the packaged value sets, then every `<valueset-id>.yaml` in `extra_dir` (additions only).

    Raises ValueError naming the file for an unknown id or a malformed file.
    """
    valuesets = _load_packaged(packaged_dir)
    if extra_dir is not None:
        extra = Path(extra_dir)
        if not extra.is_dir():
            raise ValueError(f"value set extension directory {extra} does not exist")
        for path in sorted([*extra.glob("*.yaml"), *extra.glob("*.yml")]):
            _apply_extension(valuesets, path)
    return ValueSetLibrary(valuesets)


@functools.lru_cache(maxsize=8)
def _cached_library(extra_dir: str | None) -> ValueSetLibrary:
    return load_library(Path(extra_dir) if extra_dir is not None else None)


def default_library(extra_dir: Path | str | None = None) -> ValueSetLibrary:
    """The process-wide library (cached: value sets are loaded once, never per request)."""
    return _cached_library(str(extra_dir) if extra_dir is not None else None)


def concepts_of(hits: Sequence[Hit]) -> frozenset[str]:
    return frozenset(h.concept for h in hits)
