"""Packaged trust presets (data only): `sandbox.yaml` trusts the public CDS Hooks Sandbox.

A preset is used only when `VA_CDS_TRUST_PRESET` names it; the sandbox's private key is public, so
trusting it proves nothing about the caller and is for development and demos only.
"""
