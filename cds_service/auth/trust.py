"""Trusted JWT issuers: the trust file (YAML), the packaged sandbox preset, and their validation.

Trust file format::

    issuers:
      - iss: https://ehr.example.org            # exact `iss` claim value
        jku:                                     # JWKS URLs this issuer may name (https only)
          - https://ehr.example.org/.well-known/jwks.json
        jwks_file: ehr-jwks.json                 # or `jwks: {keys: [...]}` inline; relative to this file
        algorithms: [ES384, RS384]               # default; ES256/RS256/ES512/RS512/PS* if listed
        tenant: hospital-a                       # optional: string or list; then the claim is required
        fhir_servers:                            # FHIR bases this issuer's calls may name as fhirServer
          - https://ehr.example.org/fhir/r4      # exact scheme, host, port and path; http only for loopback

Each issuer needs at least one key source (`jku` or a static JWKS). Anything malformed raises
`ValueError` naming the file, the issuer and the problem, so a typo fails at start-up rather than
silently trusting less (or more) than intended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from .fhir_servers import FhirServerRefused, is_loopback, normalise_base, parse_base
from .keys import ASYMMETRIC_ALGORITHMS, DEFAULT_ALGORITHMS, JwkError, PublicJwk, parse_jwks

if TYPE_CHECKING:
    from cds_service.settings import Settings

__all__ = [
    "SANDBOX_ISSUER",
    "SANDBOX_JKU",
    "IssuerTrust",
    "TrustConfig",
    "is_loopback_url",
    "load_trust",
    "normalise_fhir_base",
]

SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"

_ISSUER_KEYS = frozenset({"iss", "jku", "jwks", "jwks_file", "algorithms", "tenant", "fhir_servers"})


@dataclass(frozen=True)
class IssuerTrust:
    """What we trust about one issuer."""

    iss: str
    jku: tuple[str, ...] = ()
    static_keys: Mapping[str, PublicJwk] = field(default_factory=dict)
    algorithms: frozenset[str] = frozenset(DEFAULT_ALGORITHMS)
    tenants: frozenset[str] | None = None  # None: tenant not checked
    # Canonical FHIR base URLs (`fhir_servers.normalise_base`) this issuer's calls may name; empty: none.
    fhir_servers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TrustConfig:
    """All trusted issuers, by exact `iss` value. Empty means nobody is trusted."""

    issuers: Mapping[str, IssuerTrust] = field(default_factory=dict)

    def issuer(self, iss: str) -> IssuerTrust | None:
        """The trust entry for `iss`, or None if it is not allowlisted."""
        return self.issuers.get(iss)

    @property
    def fhir_servers(self) -> frozenset[str]:
        """Every FHIR base URL any trusted issuer lists, normalised."""
        return frozenset(url for entry in self.issuers.values() for url in entry.fhir_servers)

    @property
    def is_empty(self) -> bool:
        """True when no issuer is trusted (every token will be refused)."""
        return not self.issuers

    @classmethod
    def from_mapping(
        cls,
        data: object,
        *,
        source: str = "trust config",
        read_relative: Callable[[str], str] | None = None,
    ) -> TrustConfig:
        """Build from already-parsed YAML/JSON; `read_relative` loads `jwks_file` entries."""
        return cls(_parse_document(data, source, read_relative))

    def merged(self, other: TrustConfig) -> TrustConfig:
        """Both configs' issuers; an issuer defined twice is an error rather than a silent override."""
        clash = sorted(set(self.issuers) & set(other.issuers))
        if clash:
            raise ValueError(f"issuer {clash[0]!r} is defined both in the trust file and in the preset")
        return TrustConfig({**self.issuers, **other.issuers})


def _fail(source: str, where: str, problem: str) -> ValueError:
    return ValueError(f"{source}: {where}: {problem}")


def _https_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.netloc) and not parts.username and not parts.password


def normalise_fhir_base(url: str) -> str | None:
    """`scheme://host[:port]/path` with scheme and host lower-cased, the default port and a trailing
    slash dropped; None for anything that is not a plain http(s) base URL (credentials, query, fragment).

    Two bases match only when these strings are equal: same scheme, host, port and base path. (The SMART
    launch's `iss` check; the hook path uses `fhir_servers.check_fhir_server`, the same canonical form.)
    """
    try:
        return str(parse_base(url))
    except FhirServerRefused:
        return None


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    try:
        return is_loopback(parse_base(url).host)
    except FhirServerRefused:
        return False


def _parse_issuer(
    raw: object, index: int, source: str, read_relative: Callable[[str], str] | None
) -> IssuerTrust:
    where = f"issuers[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(source, where, "must be a mapping")
    unknown = sorted(set(raw) - _ISSUER_KEYS)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {', '.join(map(str, unknown))}")
    iss = raw.get("iss")
    if not isinstance(iss, str) or not iss.strip() or iss != iss.strip():
        raise _fail(source, where, "'iss' must be a non-empty string without surrounding spaces")
    where = f"issuer {iss!r}"

    jku_raw = raw.get("jku", [])
    if isinstance(jku_raw, str):
        jku_raw = [jku_raw]
    if not isinstance(jku_raw, list):
        raise _fail(source, where, "'jku' must be a URL or a list of URLs")
    for url in jku_raw:
        # https only: a JWKS fetched over plain http could be swapped by anyone on the path.
        if not _https_url(url):
            raise _fail(source, where, f"jku {url!r} is not an https URL")
    jku = tuple(dict.fromkeys(jku_raw))

    if "jwks" in raw and "jwks_file" in raw:
        raise _fail(source, where, "give either 'jwks' or 'jwks_file', not both")
    doc: Any = None
    if "jwks" in raw:
        doc = raw["jwks"]
    elif "jwks_file" in raw:
        name = raw["jwks_file"]
        if not isinstance(name, str) or not name:
            raise _fail(source, where, "'jwks_file' must be a path")
        if read_relative is None:
            raise _fail(source, where, "'jwks_file' is not supported here")
        try:
            doc = json.loads(read_relative(name))
        except OSError as exc:
            raise _fail(source, where, f"cannot read jwks_file {name!r}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise _fail(source, where, f"jwks_file {name!r} is not JSON: {exc.msg}") from exc
    static: dict[str, PublicJwk] = {}
    if doc is not None:
        try:
            static, _ = parse_jwks(doc, strict=True)
        except JwkError as exc:
            raise _fail(source, where, str(exc)) from exc
        if not static:
            raise _fail(source, where, "JWKS has no keys")
    if not jku and not static:
        raise _fail(source, where, "needs 'jku' or a static JWKS ('jwks'/'jwks_file')")

    algs_raw = raw.get("algorithms", list(DEFAULT_ALGORITHMS))
    if not isinstance(algs_raw, list) or not algs_raw or not all(isinstance(a, str) for a in algs_raw):
        raise _fail(source, where, "'algorithms' must be a non-empty list")
    bad = [a for a in algs_raw if a not in ASYMMETRIC_ALGORITHMS]
    if bad:
        # none and HMAC are forbidden by the spec (§JWT Signing Algorithm); refuse them loudly.
        allowed = ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
        raise _fail(source, where, f"algorithm(s) {', '.join(bad)} not allowed; choose from {allowed}")
    # A pasted JWKS may hold keys for algorithms not enabled here (they are simply never used), but one
    # with no usable key at all is certainly a configuration mistake.
    if static and not any(key.accepts(a) for key in static.values() for a in algs_raw):
        raise _fail(source, where, "no key in the JWKS can verify any of the configured algorithms")

    tenants: frozenset[str] | None = None
    if "tenant" in raw:
        t = raw["tenant"]
        t_list = [t] if isinstance(t, str) else t
        if not isinstance(t_list, list) or not t_list or not all(isinstance(x, str) and x for x in t_list):
            raise _fail(source, where, "'tenant' must be a non-empty string or list of strings")
        tenants = frozenset(t_list)

    servers_raw = raw.get("fhir_servers", [])
    if isinstance(servers_raw, str):
        servers_raw = [servers_raw]
    if not isinstance(servers_raw, list) or not all(isinstance(u, str) for u in servers_raw):
        raise _fail(source, where, "'fhir_servers' must be a list of base URLs")
    servers: set[str] = set()
    for url in servers_raw:
        try:
            servers.add(str(normalise_base(url)))
        except ValueError as exc:
            raise _fail(source, where, f"fhir_servers: {exc}") from None

    return IssuerTrust(
        iss=iss,
        jku=jku,
        static_keys=static,
        algorithms=frozenset(algs_raw),
        tenants=tenants,
        fhir_servers=frozenset(servers),
    )


def _parse_document(
    data: object, source: str, read_relative: Callable[[str], str] | None
) -> dict[str, IssuerTrust]:
    if not isinstance(data, Mapping) or set(data) != {"issuers"}:
        raise ValueError(f"{source}: top level must be a mapping with exactly one key, 'issuers'")
    raw_issuers = data["issuers"]
    if raw_issuers is None:
        raw_issuers = []
    if not isinstance(raw_issuers, list):
        raise ValueError(f"{source}: 'issuers' must be a list")
    issuers: dict[str, IssuerTrust] = {}
    for i, raw in enumerate(raw_issuers):
        entry = _parse_issuer(raw, i, source, read_relative)
        if entry.iss in issuers:
            raise ValueError(f"{source}: issuer {entry.iss!r} is listed twice")
        issuers[entry.iss] = entry
    return issuers


def _load_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc


def load_trust_file(path: Path) -> TrustConfig:
    """Load a trust file; `jwks_file` paths are relative to the file's directory."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{source}: cannot read trust file: {exc.strerror or exc}") from exc
    base = path.parent

    def read_relative(name: str) -> str:
        return (base / name).read_text(encoding="utf-8")

    return TrustConfig.from_mapping(_load_yaml(text, source), source=source, read_relative=read_relative)


def load_preset(name: str) -> TrustConfig:
    """A packaged preset by name ('sandbox'); 'none' is the empty config."""
    if name == "none":
        return TrustConfig()
    if name != "sandbox":
        raise ValueError(f"unknown trust preset {name!r}")
    pkg = resources.files("cds_service.trust_presets")
    source = f"trust preset {name!r}"

    def read_relative(file: str) -> str:
        return pkg.joinpath(file).read_text(encoding="utf-8")

    text = pkg.joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return TrustConfig.from_mapping(_load_yaml(text, source), source=source, read_relative=read_relative)


def load_trust(settings: Settings) -> TrustConfig:
    """The trust configured by `settings.trust_file` and/or `settings.trust_preset`.

    Nothing is trusted by default: the preset applies only when chosen, and never together with a trust
    file. Raises `ValueError` for a malformed file (or both set) so start-up fails naming the problem.
    """
    if settings.trust_file is not None and settings.trust_preset != "none":
        # A development preset (whose signing key is public) silently merged into a production trust file
        # would let anyone in; one or the other, never both.
        raise ValueError(
            f"VA_CDS_TRUST_FILE ({settings.trust_file}) and VA_CDS_TRUST_PRESET={settings.trust_preset} are "
            "both set: use the trust file alone in production, or the preset alone for development"
        )
    if settings.trust_file is not None:
        return load_trust_file(Path(settings.trust_file))
    if settings.trust_preset != "none":
        return load_preset(settings.trust_preset)
    return TrustConfig()
