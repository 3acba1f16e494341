"""Alert memory (issue 19): never ask the same question twice about the same data.

Every card carries an evidence fingerprint (`fingerprint`). On a later call for the same patient, issuer
and tenant, the cards already shown and the feedback they received (stored by the audit trail) decide
whether a card comes back in full, demoted to info, without an order already accepted, or not at all
(`apply`, pure; the rules are in its docstring). `recall` is the one database lookup per call and the
degradation to "no memory" when the database is slow or down. Windows and switches are policy
(`policy`, the `memory:` block of policy.yaml).
"""
