"""va-cds benchmarks: ratios and percentiles measured in one run (`python -m benchmarks`).

Every figure compares va-cds with a floor measured in the same run on the same input (orjson parse,
a minimal FastAPI app, the slowest single FHIR query) or with a slower alternative (validating the
prefetch with fhir.resources, HealthChain), so a regression shows up as a worse ratio, never as an
absolute time asserted in a test. See benchmarks/README.md.
"""
