"""FHIR R4 → typed clinical facts: value sets as data, unit normalisation, provenance.

Public API: `extract_facts` (fhir_mappings.extract), `load_library` / `default_library` / `ValueSetLibrary`
(fhir_mappings.library), unit helpers in fhir_mappings.units, and the fact dataclasses in fhir_mappings.facts.
"""

from .extract import extract_facts
from .library import ValueSetLibrary, default_library, load_library

__all__ = ["ValueSetLibrary", "default_library", "extract_facts", "load_library"]
