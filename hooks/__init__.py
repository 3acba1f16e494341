"""The clinical CDS services of va-cds: one module per service (facts it needs, its rules, its cards)."""
