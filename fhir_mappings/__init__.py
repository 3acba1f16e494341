"""FHIR R4 → typed clinical facts: value sets as data, unit normalisation, provenance."""
