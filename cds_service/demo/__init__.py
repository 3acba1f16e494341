"""Demo data source: a few synthetic patients served read-only at `/demo/fhir` (off unless `VA_CDS_DEMO=1`).

It exists so the CDS Hooks Sandbox walkthrough has patients with a planned or performed vertebral
augmentation: point the sandbox's FHIR server at `http://127.0.0.1:8080/demo/fhir`. It is a demo data
source, not a FHIR server: it answers exactly what the sandbox and our prefetch templates ask (metadata,
reads, searches by patient, code, category and status, sorted and counted, by GET and by `POST _search`)
and nothing else. Every resource is written by us, tagged as test data (`HTEST`) and dated relative to the
moment it is served, so the demo stays current.
"""

from __future__ import annotations

from cds_service.demo.router import demo_router

__all__ = ["demo_router"]
